"""The component kinds, in one table: the hook that registers each, the study keys that name one, what its
factory is given, and the class the objects it builds must be.

Adding a kind is one :class:`Kind` entry here plus its hookspec in :mod:`flashbench.hookspecs` (and its
section of ``docs/plugins.md``): the registries, the plugin manager, the study's component checks, the
runner's component cache and ``flashbench plugins --kind`` all read this table.

Nothing here imports torch: the base classes are named by import path and imported when an object is
checked (at build time, when torch is loaded anyway).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field


@dataclass(frozen=True)
class StudyKey:
    """A key of a study's variant that names a component of a kind."""

    section: str  # "train" (a TrainConfig field) or "eval" (an EvalConfig field)
    field: str
    tag: str | None = None  # the tag the named component must carry
    optional: bool = False  # accepts "none" (the term is switched off)


#: a base "class" that only asks for a callable (the distillation and DMD losses: ``loss(a, b, c) -> scalar``)
CALLABLE = "callable"


@dataclass(frozen=True)
class Kind:
    name: str
    hook: str  # the hookspec that registers components of this kind
    description: str
    keys: tuple[StudyKey, ...] = ()
    context: tuple[str, ...] = ()  # the keyword arguments the runner passes to a factory, beside its config
    base: str | None = None  # "module:Class" every built object must be an instance of (None: not checked)
    bases_by_tag: dict[str, str] = field(default_factory=dict)  # a tag's own base class (losses)

    def base_for(self, tags: tuple[str, ...]) -> str | None:
        for tag in tags:
            if tag in self.bases_by_tag:
                return self.bases_by_tag[tag]
        return self.base


KIND_TABLE: tuple[Kind, ...] = (
    Kind(
        "teacher",
        "register_teachers",
        "diffusion model families the student is distilled from",
        keys=(StudyKey("train", "teacher"),),
        context=("device",),
        base="flashbench.method.teacher:Teacher",
    ),
    Kind("conditioning", "register_conditionings", "how a batch becomes the teacher's conditional and null inputs", keys=(StudyKey("train", "conditioning"),)),
    Kind(
        "loss",
        "register_losses",
        "the distillation, adversarial and distribution-matching terms",
        keys=(
            StudyKey("train", "distil_loss", "distillation", optional=True),
            StudyKey("train", "adv_loss", "adversarial", optional=True),
            StudyKey("train", "dmd_loss", "distribution_matching", optional=True),
        ),
        context=("device", "teacher"),
        bases_by_tag={"distillation": CALLABLE, "adversarial": "flashbench.method.losses:GANLoss", "distribution_matching": CALLABLE},
    ),
    Kind(
        "timesteps",
        "register_timestep_distributions",
        "distributions pi of the start index over the K-grid",
        keys=(StudyKey("train", "timesteps"),),
        context=("num_timesteps", "phase_length", "num_phases"),
        base="flashbench.method.timesteps:TimestepDistribution",
    ),
    Kind("solver", "register_solvers", "the teacher's ODE solvers", keys=(StudyKey("train", "solver"),), base="flashbench.method.solvers:Solver"),
    Kind(
        "sampler",
        "register_samplers",
        "few-step samplers of a student (and of published few-step baselines)",
        keys=(StudyKey("eval", "sampler"),),
        base="flashbench.method.samplers:FewStepSampler",
    ),
    Kind(
        "evaluator",
        "register_evaluators",
        "metrics computed on the generated samples",
        keys=(StudyKey("eval", "evaluators"),),
        context=("device",),
        base="flashbench.method.evaluation:Evaluator",
    ),
    Kind(
        "dataset",
        "register_datasets",
        "training data and prompt sets",
        keys=(StudyKey("train", "dataset"), StudyKey("eval", "prompts")),
        base="flashbench.method.data:Dataset",
    ),
    Kind("face_detector", "register_face_detectors", "find the face to swap in an image (a faceswap dataset's face_detector option)", base=CALLABLE),
)

KINDS: tuple[str, ...] = tuple(k.name for k in KIND_TABLE)
BY_NAME: dict[str, Kind] = {k.name: k for k in KIND_TABLE}
HOOK_FOR_KIND: dict[str, str] = {k.name: k.hook for k in KIND_TABLE}
#: a variant's fields naming a component, per section: field -> (kind, required tag)
COMPONENT_FIELDS: dict[str, dict[str, tuple[str, str | None]]] = {
    section: {key.field: (k.name, key.tag) for k in KIND_TABLE for key in k.keys if key.section == section} for section in ("train", "eval")
}
#: fields that accept "none" (the loss terms)
OPTIONAL_FIELDS: tuple[str, ...] = tuple(key.field for k in KIND_TABLE for key in k.keys if key.optional)
#: every tag a component may carry: the tags some study key requires
KNOWN_TAGS: frozenset[str] = frozenset(key.tag for k in KIND_TABLE for key in k.keys if key.tag)


def import_base(path: str) -> type:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def check_built(kind: str, obj, *, name: str, plugin: str, tags: tuple[str, ...] = ()) -> None:
    """Raise a one-line ``TypeError`` when a factory built something that is not its kind's base class."""
    path = BY_NAME[kind].base_for(tags)
    if path is None:
        return
    if path == CALLABLE:
        if not callable(obj):
            raise TypeError(
                f"{kind} {name!r} (plugin {plugin}): its factory returned {type(obj).__module__}.{type(obj).__qualname__}, "
                f"which is not callable; a {'/'.join(tags) + ' ' if tags else ''}{kind} factory must return a callable"
            )
        return
    base = import_base(path)
    if not isinstance(obj, base):
        raise TypeError(
            f"{kind} {name!r} (plugin {plugin}): its factory returned {type(obj).__module__}.{type(obj).__qualname__}, "
            f"which is not a {base.__module__}.{base.__qualname__}; a {kind} factory must return one"
        )
