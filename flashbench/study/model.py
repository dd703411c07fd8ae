"""The model: :class:`Variant` and :class:`Study` (and their JSON form), and :func:`load_study`, which reads,
resolves and validates a study file at one scale.
"""

from __future__ import annotations

import dataclasses
import datetime
import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import ComponentSpec, EvalConfig, TrainConfig
from ..errors import StudyError
from .claims import _parse_claims, _parse_compute, _produced_metrics, claim_applies
from .components import _ComponentChecker
from .header import _parse_header, _parse_seeds
from .layers import _BASE, _SCALE, _Axis, _Layer, _parse_layer, _parse_matrix, _parse_variants, _resolve_one
from .naming import _slug, _variant_name
from .problems import _BAD, _desc, _Problems, _short, _unknown
from .reading import MAX_DEPTH, MAX_NAME_CHARS, MAX_VARIANTS, NAME_RE, _read, _too_deep
from .values import EVAL_TYPES, PASSTHROUGH, TRAIN_TYPES, _adapter, _parse_value

SECTIONS = ("study", "paper", "base", "scale", "variants", "matrix")
_PAPER = _adapter(PASSTHROUGH)  # [paper] is free-form, but stored as strict JSON beside the results


# --- the model ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """One run: a named configuration and a seed."""

    name: str
    seed: int
    axes: dict  # {"variant": explicit name, "<matrix axis>": value as written}; {} for "base"
    train: TrainConfig
    eval: EvalConfig

    @property
    def key(self) -> str:
        """A filesystem-safe id, unique within a study (folder and result-row id)."""
        return f"{_slug(self.name)}-s{self.seed}"

    def __hash__(self) -> int:  # axes is a dict
        return hash((self.name, self.seed))

    def to_data(self) -> dict:
        return {
            "name": self.name,
            "seed": self.seed,
            "key": self.key,
            "axes": _jsonable(self.axes),
            "train": _config_data(self.train),
            "eval": _config_data(self.eval),
        }

    @classmethod
    def from_data(cls, data: dict) -> "Variant":
        return cls(
            name=data["name"],
            seed=int(data["seed"]),
            axes=dict(data.get("axes", {})),
            train=_config_from_data(TrainConfig, TRAIN_TYPES, data["train"]),
            eval=_config_from_data(EvalConfig, EVAL_TYPES, data["eval"]),
        )


@dataclass(frozen=True)
class Study:
    """A study file resolved at one scale: every variant x seed, validated."""

    path: Path
    name: str
    title: str
    reproduces: str
    panel: str
    version: int
    scale: str
    primary_nfe: int
    seeds: tuple
    paper: dict
    variants: tuple  # tuple[Variant, ...], variant-major then seed
    scales: tuple  # every scale the file defines, "paper" first

    def __hash__(self) -> int:  # paper is a dict
        return hash((str(self.path), self.name, self.scale))

    @property
    def variant_names(self) -> tuple[str, ...]:
        """Distinct variant names, in study order."""
        return tuple(dict.fromkeys(v.name for v in self.variants))

    @property
    def claims(self) -> tuple[dict, ...]:
        """The claims judged at this study's scale."""
        return tuple(c for c in self.paper.get("claims", ()) if claim_applies(c, self.scale))

    def to_data(self) -> dict:
        """The fully resolved study as JSON-serialisable data (written beside the results)."""
        return {
            "path": str(self.path),
            "name": self.name,
            "title": self.title,
            "reproduces": self.reproduces,
            "panel": self.panel,
            "version": self.version,
            "scale": self.scale,
            "scales": list(self.scales),
            "primary_nfe": self.primary_nfe,
            "seeds": list(self.seeds),
            "paper": _jsonable(self.paper),
            "variants": [v.to_data() for v in self.variants],
        }

    @classmethod
    def from_data(cls, data: dict) -> "Study":
        """Inverse of :meth:`to_data` (no validation: the data was written by a validated study)."""
        return cls(
            path=Path(data["path"]),
            name=data["name"],
            title=data["title"],
            reproduces=data["reproduces"],
            panel=data["panel"],
            version=int(data["version"]),
            scale=data["scale"],
            primary_nfe=int(data["primary_nfe"]),
            seeds=tuple(data["seeds"]),
            paper=dict(data["paper"]),
            variants=tuple(Variant.from_data(v) for v in data["variants"]),
            scales=tuple(data["scales"]),
        )


def load_study(path, *, scale: str | None = None, components=None) -> Study:
    """Read, resolve and validate a study file.

    ``scale``: a scale name; default the file's ``study.default_scale``, else ``"paper"``.
    ``components``: a :class:`flashbench.plugins.Components`; default every installed plugin's.
    Raises the first :class:`StudyError`; its ``problems`` attribute lists every problem found.
    """
    study, problems = _load(path, scale, components)
    if problems:
        first = problems[0]
        first.problems = problems
        raise first
    assert study is not None
    return study


def validate_study(path, *, scale: str | None = None, components=None) -> list[StudyError]:
    """Every problem of a study file at one scale (see :func:`load_study`); an empty list means valid."""
    return _load(path, scale, components)[1]


def study_scales(path) -> tuple[str, ...]:
    """The scales a study file defines, "paper" first; just ``("paper",)`` where the file cannot be
    read or parsed (validating it then says why)."""
    data = _read(Path(path), _Problems(Path(path)))
    raw = data.get("scale", {}) if data is not None else {}
    names = [n for n in raw if n != "paper" and NAME_RE.match(n)] if isinstance(raw, dict) else []
    return ("paper", *names)


def _load(path, scale: str | None, components) -> tuple[Study | None, list[StudyError]]:
    path = Path(path)
    p = _Problems(path)
    data = _read(path, p)
    if data is None:
        return None, p.items
    deep = _too_deep(data)
    if deep is not None:
        p.add(deep[0], f"nested more than {MAX_DEPTH} tables/arrays deep; a study file never needs that")
        return None, p.items

    for k in data:
        if k == "eval":
            p.add("eval", "unknown section [eval]: evaluation settings go in [base.eval] (or [scale.<name>.eval])")
        elif k not in SECTIONS:
            p.add(k, _unknown("section", k, SECTIONS))

    header = _parse_header(data.get("study"), p)
    base = _parse_layer(data.get("base", {}), "base", p, _BASE)
    scales: dict[str, _Layer] = {"paper": _Layer({}, {})}
    scale_axes: dict[str, list[_Axis]] = {}  # [scale.<s>.matrix] replaces [matrix] at that scale
    scale_variants: dict[str, list[tuple[str, _Layer]]] = {}  # [[scale.<s>.variants]] are added at that scale
    scale_seeds: dict[str, tuple] = {}  # [scale.<s>] seeds = [...] replaces [study] seeds at that scale
    raw_scales = data.get("scale", {})
    if not isinstance(raw_scales, dict) or not all(isinstance(t, dict) for t in raw_scales.values()):
        p.add("scale", "must hold one table per scale: [scale.toy], [scale.paper], ...")
        raw_scales = {}
    for sname, table in raw_scales.items():
        if not NAME_RE.match(sname) or len(sname) > MAX_NAME_CHARS:
            p.add(f"scale.{sname}", f"scale names must match [a-z0-9_-]+ (at most {MAX_NAME_CHARS} characters), got {_short(sname)}")
            continue
        scales[sname] = _parse_layer(table, f"scale.{sname}", p, _SCALE, extra=("matrix", "variants", "seeds"))
        if "seeds" in table:  # e.g. three seeds at toy scale, where training noise is large and runs are cheap
            value = _parse_seeds(table["seeds"], f"scale.{sname}.seeds", p)
            if value is not _BAD:
                scale_seeds[sname] = value
        if "variants" in table:
            scale_variants[sname] = _parse_variants(table["variants"], p, f"scale.{sname}.variants")
        if "matrix" in table:
            scale_axes[sname] = _parse_matrix(table["matrix"], p, f"scale.{sname}.matrix")
    explicit = _parse_variants(data["variants"], p) if "variants" in data else []
    axes = _parse_matrix(data["matrix"], p) if "matrix" in data else []
    paper = data.get("paper", {})
    if not isinstance(paper, dict):
        p.add("paper", f"must be a table, got {_desc(paper)}")
        paper = {}
    _parse_value(_PAPER, paper, "paper", p)  # checked for NaN/inf and NUL; kept as written
    _parse_compute(paper, p)

    # What the claims may name: the metrics of every evaluator the study runs, at any of its scales.
    written = [base, *scales.values(), *(layer for _, layer in explicit), *(layer for sv in scale_variants.values() for _, layer in sv)]
    evaluator_sets = [scales[s].eval.get("evaluators") or base.eval.get("evaluators") for s in scales]
    evaluator_sets += [layer.eval["evaluators"] for layer in written[1 + len(scales) :] if "evaluators" in layer.eval]
    evaluator_sets += [
        value
        for axis in [*axes, *(a for sa in scale_axes.values() for a in sa)]
        if axis.section == "eval" and axis.field == "evaluators"
        for value in axis.values
    ]

    scale_names = tuple(scales)
    if header["default_scale"] is not None and header["default_scale"] not in scales:
        p.add("study.default_scale", _unknown("scale", header["default_scale"], scale_names).replace("allowed:", "available:"))
    chosen = scale or header["default_scale"] or "paper"
    if scale is not None and scale not in scales:
        p.add("scale", _unknown("scale", scale, scale_names).replace("allowed:", "available:"))

    if chosen in scale_axes:
        axes = scale_axes[chosen]
    if chosen in scale_seeds:
        header["seeds"] = scale_seeds[chosen]
    if chosen in scale_variants:
        clash = {n for n, _ in explicit} & {n for n, _ in scale_variants[chosen]}
        for name in sorted(clash):
            p.add(f"scale.{chosen}.variants", f"variant {name!r} is also in [[variants]]; give it another name")
        explicit = explicit + scale_variants[chosen]
    n_cells = math.prod(a.size for a in axes)
    total = n_cells * max(1, len(explicit))
    names: list[str] | None = None
    variants: list[Variant] = []
    if total > MAX_VARIANTS:
        sizes = " x ".join([*([f"{len(explicit)} variants"] if explicit else []), *(f"{a.size} {a.name}" for a in axes)])
        if axes:  # name the matrix that applies at this scale, else the variants
            where = f"scale.{chosen}.matrix" if chosen in scale_axes else "matrix"
        else:
            where = f"scale.{chosen}.variants" if chosen in scale_variants else "variants"
        p.add(where, f"{total} variants ({sizes}) exceed the limit of {MAX_VARIANTS}; split the study into several files")
    elif chosen in scales and (scale is not None or isinstance(data.get("study"), dict)):
        # (without [study] the intended default_scale is unknown: resolving "paper" would only add noise)
        if components is None:
            from ..plugins import collect_components

            components = collect_components()
        checker = _ComponentChecker(components, p, chosen)
        named = explicit or [("base", _Layer({}, {}))]
        names = []
        for (vname, layer), cell in itertools.product(named, itertools.product(*[[(a, s) for s in a.values] for a in axes])):
            name = _variant_name(vname, cell, bool(explicit))
            if name in names:
                # Two cells that render alike (e.g. 1 and 1.0): the results would be indistinguishable.
                p.add("matrix", f"two variants are both named {name!r}; make their values distinct")
                continue
            names.append(name)
            axes_data = {"variant": vname} if explicit else {}
            axes_data.update({a.name: _jsonable(s.raw) for a, s in cell})
            resolved = _resolve_one([base, scales[chosen], layer], list(cell), checker, p)
            if resolved is None:
                continue
            for seed in header["seeds"]:
                variants.append(Variant(name, seed, axes_data, *resolved))

    primary_nfe = header["primary_nfe"]
    if variants:
        if primary_nfe is None:
            primary_nfe = variants[0].eval.nfe[0]
        evaluated = sorted({n for v in variants for n in v.eval.nfe})
        if primary_nfe not in evaluated:  # the panel's table would be empty
            p.add("study.primary_nfe", f"{primary_nfe} is not among the NFEs any variant evaluates ({', '.join(map(str, evaluated))})")
    if names is not None:  # a claim may name a baseline that exists at another scale only (not measured here)
        names = names + [n for sv in scale_variants.values() for n, _ in sv if n not in names]
    produced = None
    if isinstance(paper.get("claims"), list) and paper["claims"]:
        if components is None:
            from ..plugins import collect_components

            components = collect_components()
        produced = _produced_metrics(evaluator_sets, components)
    _parse_claims(paper, names, p, produced, chosen, scale_names)

    if p.items:
        return None, p.items
    return (
        Study(
            path=path,
            name=header["name"],
            title=header["title"],
            reproduces=header["reproduces"],
            panel=header["panel"],
            version=header["version"],
            scale=chosen,
            primary_nfe=primary_nfe,
            seeds=tuple(header["seeds"]),
            paper=paper,
            variants=tuple(variants),
            scales=scale_names,
        ),
        [],
    )


# --- data conversion ---------------------------------------------------------------------------------


def _jsonable(v: Any) -> Any:
    if isinstance(v, ComponentSpec):
        return _jsonable(v.to_data())
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, (datetime.date, datetime.time)):
        return v.isoformat()
    return v


def _config_data(config) -> dict:
    return {f.name: _jsonable(getattr(config, f.name)) for f in dataclasses.fields(config)}


def _frozen(v: Any) -> Any:
    """TOML arrays as tuples, so that frozen configs built from options stay hashable."""
    if isinstance(v, list):
        return tuple(_frozen(x) for x in v)
    if isinstance(v, dict):
        return {k: _frozen(x) for k, x in v.items()}
    return v


def _spec_from_data(v: Any) -> ComponentSpec:
    if isinstance(v, str):
        return ComponentSpec(v)
    return ComponentSpec(v["name"], {k: _frozen(x) for k, x in v.items() if k != "name"})


def _config_from_data(cls, types: dict[str, str], data: dict):
    values = {}
    for name, v in data.items():
        ann = types.get(name)
        if ann == "ComponentSpec":
            v = _spec_from_data(v)
        elif ann == "tuple[ComponentSpec, ...]":
            v = tuple(_spec_from_data(x) for x in v)
        elif ann == "float":
            v = float(v)
        elif isinstance(v, list):
            v = tuple(float(x) if ann == "tuple[float, ...]" else x for x in v)
        values[name] = v
    return cls(**values)
