"""Every hook flashbench calls, in one place.

Component hooks receive a ``register`` callable bound to one registry kind::

    register(name, factory, *, config=None, description="", tags=(), metric="")

``factory(config, **context)`` builds the component when a study needs it (heavy imports belong
there, never at module import); ``config`` is a frozen dataclass whose fields are the options a study
may set for this component (unknown options are errors); ``tags`` qualify a component (a loss is
tagged ``distillation``, ``adversarial`` or ``distribution_matching``); ``metric`` (evaluators only) names
the metric of the evaluator's result rows, so that validation checks a study's claims without building it.
Built-in plugins are registered through these same hooks, before the entry points of group ``flashbench``.

Lifecycle hooks are called by the runner and receive plain data (no torch objects).
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence

import pluggy

from . import PROJECT_NAME

hookspec = pluggy.HookspecMarker(PROJECT_NAME)


class Register(Protocol):
    """The ``register`` callable a component hook receives, bound to its kind's registry."""

    def __call__(
        self, name: str, factory: Callable[..., Any], *, config: type | None = None, description: str = "", tags: Sequence[str] = (), metric: str = ""
    ) -> None: ...


# --- components -----------------------------------------------------------------------------------


@hookspec
def register_teachers(register: Register) -> None:
    """Register teacher backbones (diffusion model families).

    ``factory(config, *, device)`` returns a :class:`flashbench.method.teacher.Teacher` (its weights' dtype is an
    option of its config, e.g. ``dtype = "bfloat16"``; mixed precision is the study's ``mixed_precision``).
    """


@hookspec
def register_conditionings(register: Register) -> None:
    """Register conditionings: how a dataset batch becomes the teacher's conditional and null inputs.

    ``factory(config)`` returns an object with ``prepare(teacher, prompts, extras) -> (cond, uncond)``.
    """


@hookspec
def register_losses(register: Register) -> None:
    """Register losses, each tagged ``distillation``, ``adversarial`` or ``distribution_matching``.

    ``factory(config, *, device, teacher)`` returns the loss: ``teacher`` is the study's teacher for a
    distillation loss (LPIPS decodes with it), None for the others. By tag it returns a callable
    ``loss(student_x0, teacher_x0, decode)`` (distillation), a :class:`flashbench.method.losses.GANLoss`
    (adversarial) or a callable ``loss(student_x0, x0_real, x0_fake)`` (distribution_matching).
    """


@hookspec
def register_timestep_distributions(register: Register) -> None:
    """Register timestep distributions pi over the K-grid.

    ``factory(config, *, num_timesteps, phase_length, num_phases)`` returns a
    :class:`flashbench.method.timesteps.TimestepDistribution`.
    """


@hookspec
def register_solvers(register: Register) -> None:
    """Register the teacher's ODE solvers. ``factory(config)`` returns a :class:`flashbench.method.solvers.Solver`."""


@hookspec
def register_samplers(register: Register) -> None:
    """Register few-step samplers (a study's ``eval.sampler``). ``factory(config)`` returns a
    :class:`flashbench.method.samplers.FewStepSampler`."""


@hookspec
def register_evaluators(register: Register) -> None:
    """Register evaluators. ``factory(config, *, device)`` returns a :class:`flashbench.method.evaluation.Evaluator`;
    ``register(..., metric="fid")`` declares its ``metric`` (undeclared: a claim on any metric is accepted)."""


@hookspec
def register_datasets(register: Register) -> None:
    """Register datasets and prompt sets. ``factory(config)`` returns a :class:`flashbench.method.data.Dataset`."""


@hookspec
def register_face_detectors(register: Register) -> None:
    """Register face detectors (the ``face_detector`` option of a dataset with ``task = "faceswap"``).

    ``factory(config)`` returns a callable ``detector(image) -> (x0, y0, x1, y1) | None``: ``image`` is the
    sample's original image, (3, H, W) in [-1, 1]; the box is in its pixels (None: no face found). A dataset
    finds its detector in the registries it was built from (:func:`flashbench.registry.lookup`).
    """


# --- lifecycle ------------------------------------------------------------------------------------


@hookspec
def before_study(study, run_dir):
    """Called once before the first variant of a study trains.

    ``study`` is the resolved :class:`flashbench.study.Study`; ``run_dir`` the output folder (a Path).
    """


@hookspec
def after_variant(study, variant, rows, run_dir):
    """Called after a variant is trained and evaluated, with the result rows (list of dicts) it stored."""


@hookspec
def after_study(study, run_dir, report_path):
    """Called once after the last variant and the report; ``report_path`` is the HTML file written."""
