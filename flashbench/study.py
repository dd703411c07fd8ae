"""Study files: one TOML file per table or figure panel, resolved into a list of runnable variants.

A study file has these sections (every one but ``[study]`` optional)::

    [study]            name (required, [a-z0-9_-]+), title, reproduces, panel, version,
                       default_scale, seeds (default [0]), primary_nfe (default: the first eval NFE)
    [paper]            free-form reference values for the report, kept as-is; ``[[paper.claims]]``
                       entries (text, metric, better = "lower"|"higher", variant, than, nfe) are checked, and
                       ``[paper.compute]`` (iterations, gpu_hours, global_batch, gpu: the paper's training cost)
    [base]             the paper recipe: any :class:`~flashbench.config.TrainConfig` field, and a
                       ``[base.eval]`` table of :class:`~flashbench.config.EvalConfig` fields
    [scale.<name>]     a named scale: overrides of ``[base]`` (same keys). ``paper`` always exists and
                       is ``[base]`` itself (plus ``[scale.paper]`` overrides if given)
    [[variants]]       explicit variants: ``name`` plus overrides (and an optional ``eval`` table)
    [matrix]           axes: a field (or ``"eval.<field>"``) and a non-empty array of values; the
                       cartesian product of all axes, applied to each explicit variant
    [scale.<s>.matrix] replaces ``[matrix]`` at scale ``<s>`` (e.g. guidance values or K that suit
                       the toy teacher)
    [[scale.<s>.variants]] explicit variants that exist at scale ``<s>`` only (e.g. evaluation-only
                       baselines that load a published checkpoint)

Resolution of one variant, last wins: TrainConfig/EvalConfig defaults <- ``[base]`` <-
``[scale.<s>]`` <- the explicit variant <- the matrix cell. Names: ``variant/k=v,k2=v2`` with both,
``k=v,k2=v2`` with a matrix only, the variant's name without a matrix, ``base`` with neither. Each
variant runs once per seed.

Validation collects every problem before reporting any; each is a :class:`StudyError` that names the
file and the key path (``studies/x.toml: scale.toy.iterations: must be a positive integer, got -3``).
Each problem prints as one line (control characters in keys, names and paths escaped). Hostile input
is bounded before anything recurses or runs: files over MAX_FILE_BYTES, nesting deeper than MAX_DEPTH,
more than MAX_VARIANTS variants or MAX_SEEDS seeds, NaN/inf and NUL characters in any value are refused.
Types, ranges and cross-field rules are checked in every section, whatever the scale; component names,
tags and options are checked for the resolved scale (``flashbench validate`` resolves every scale: built-in
components are registered whatever weights a machine has). A claim's ``metric`` must be produced by an
evaluator of the study at some scale, by the name the evaluator declared at registration (or stand for
one: the paper's ``fid`` for the toy ``fd``); an evaluator that declares none makes any metric acceptable.

Nothing here imports torch.
"""
from __future__ import annotations

import dataclasses
import datetime
import hashlib
import itertools
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10 with the tomli backport
    import tomli as tomllib  # type: ignore[no-redef]

from .config import OPTIONAL_COMPONENT_FIELDS, ComponentSpec, EvalConfig, TrainConfig
from .kinds import COMPONENT_FIELDS as KIND_FIELDS
from .errors import StudyError
from .registry import closest

__all__ = ["Variant", "Study", "load_study", "validate_study", "study_scales", "MAX_VARIANTS", "NUM_PHASES",
           "MAX_FILE_BYTES", "MAX_DEPTH", "MAX_SEEDS", "MAX_NAME_CHARS", "COMPUTE_KEYS"]

MAX_VARIANTS = 256  # explicit variants x matrix cells; beyond this a study is almost surely a typo
MAX_FILE_BYTES = 1 << 20  # the largest study here is ~10 kB: a bigger file is the wrong file (or hostile)
MAX_DEPTH = 32  # tables/arrays nested deeper than this: values are walked recursively (names, JSON)
MAX_SEEDS = 100  # seeds multiply the variants; MAX_VARIANTS x MAX_SEEDS runs at most
MAX_SEED = 2**32 - 1  # numpy's generators take 0 <= seed < 2**32
MAX_NAME_CHARS = 64  # study and scale names: the default run directory is runs/<name>-<scale>
NUM_PHASES = 4  # phases of pi and of the lambda schedules (Sec. 4.2)
MIXED_PRECISION = ("no", "bf16", "fp16")
TRACKERS = ("tensorboard", "wandb")
NAME_RE = re.compile(r"[a-z0-9_-]+\Z")
VARIANT_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*\Z")

SECTIONS = ("study", "paper", "base", "scale", "variants", "matrix")
DRAWS = ("per_sample", "per_batch")  # where the paper and the authors' code draw i and omega
PHASE_COUNTING = ("batches", "optimizer_calls")
STUDY_KEYS = ("name", "title", "reproduces", "panel", "version", "default_scale", "seeds", "primary_nfe")
CLAIM_KEYS = ("text", "metric", "better", "variant", "than", "nfe", "than_nfe", "scales")

_DEFAULT, _BASE, _SCALE, _VARIANT, _MATRIX = range(5)  # layer ranks, later wins


def _annotation(tp: Any) -> str:
    return tp if isinstance(tp, str) else getattr(tp, "__name__", str(tp))


TRAIN_TYPES = {f.name: _annotation(f.type) for f in dataclasses.fields(TrainConfig)}
EVAL_TYPES = {f.name: _annotation(f.type) for f in dataclasses.fields(EvalConfig)}


# --- public data ------------------------------------------------------------------------------------


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


# --- reading ----------------------------------------------------------------------------------------

_TOML_AT = re.compile(r"\(at line (\d+), column (\d+)\)")


def _read(path: Path, p: _Problems) -> dict | None:
    """The file's TOML data, or None with the reason recorded. Reads nothing that is not a regular file
    (a FIFO or /dev/zero would block or never end) and at most MAX_FILE_BYTES + 1 bytes."""
    try:
        if not path.is_file():
            if path.is_symlink() and not path.exists():
                p.add(None, "a symbolic link to nothing (or to itself); no study file there")
            elif not path.exists():
                p.add(None, "no such study file")
            elif path.is_dir():
                p.add(None, "is a directory, not a study file (.toml)")
            else:
                p.add(None, "not a regular file; a study file is a TOML text file (.toml)")
            return None
        with open(path, "rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except ValueError:  # a NUL in the path (only reachable in-process: argv cannot hold one)
        p.add(None, "not a valid file name (it contains a NUL character)")
        return None
    except OSError as e:
        p.add(None, f"cannot read: {e.strerror or e}")
        return None
    if len(raw) > MAX_FILE_BYTES:
        size = path.stat().st_size
        p.add(None, f"is {size / 1e6:.1f} MB; a study file is at most {MAX_FILE_BYTES // 1024} KiB of TOML (is this the right file?)")
        return None
    hint = _format_hint(path)
    try:
        text = raw.decode("utf-8-sig")  # a byte-order mark (Windows editors) is not a mistake
    except UnicodeDecodeError as e:
        bom = 3 if raw.startswith(b"\xef\xbb\xbf") else 0
        line = raw.count(b"\n", 0, e.start + bom) + 1
        p.add(None, f"not UTF-8 text (line {line}, byte {e.start + bom}); a study file is TOML{hint}")
        return None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        message = str(e)
        at = _TOML_AT.search(message)
        if at:  # show the line: for "Cannot overwrite a value" it is the only place the key is named
            lines = text.split("\n")  # as tomllib counts lines (splitlines() also breaks on \r, \f, U+2028...)
            n = int(at.group(1))
            if 0 < n <= len(lines) and lines[n - 1].strip():
                shown = lines[n - 1].strip()
                message += f": {shown[:80]!r}" + ("..." if len(shown) > 80 else "")
        p.add(None, f"invalid TOML: {message}{hint}")
        return None
    except RecursionError:  # tomllib recurses once per nested array or inline table
        p.add(None, f"invalid study file: values nested too deeply (more than {MAX_DEPTH} levels are never needed)")
        return None


def _format_hint(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix and suffix != ".toml":
        return f"; study files are TOML (.toml), not {suffix}"
    return ""


def _too_deep(data: dict) -> tuple[str, int] | None:
    """The first key path nested deeper than MAX_DEPTH, and its depth (iterative: the data may be
    nested far deeper than Python's recursion limit, e.g. a dotted table header of 100,000 parts)."""
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    while stack:
        value, key, depth = stack.pop()
        if depth > MAX_DEPTH:
            return key, depth
        if isinstance(value, dict):
            stack.extend((v, f"{key}.{k}" if key else str(k), depth + 1) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, f"{key}[{i}]", depth + 1) for i, v in enumerate(value))
    return None


# --- problems ---------------------------------------------------------------------------------------


class _Problems:
    def __init__(self, path: Path):
        self.path = path
        self.items: list[StudyError] = []
        self._seen: set[tuple[str | None, str]] = set()

    def add(self, key: str | None, message: str) -> None:
        if (key, message) not in self._seen:  # a base value shared by many variants is reported once
            self._seen.add((key, message))
            self.items.append(StudyError(self.path, key, message))


_BAD = object()  # a value that failed validation (its problem is already recorded)


def _fmt(v: Any) -> str:
    """A value as TOML would spell it."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_fmt(x)}" for k, x in v.items()) + " }"
    return str(v)


def _short(s: str, limit: int = 60) -> str:
    """A string's repr, cut: error lines echo what the user wrote, not a megabyte of it."""
    r = repr(s)
    return r if len(r) <= limit else r[: limit - 4] + "'..."


def _desc(v: Any) -> str:
    if isinstance(v, bool):
        return f"a boolean ({_fmt(v)})"
    if isinstance(v, int):
        return f"an integer ({v})"
    if isinstance(v, float):
        return f"a float ({_fmt(v)})"
    if isinstance(v, str):
        return f"a string ({_short(v)})"
    if isinstance(v, list):
        return "an array"
    if isinstance(v, dict):
        return "a table"
    if isinstance(v, (datetime.date, datetime.time)):
        return f"a date/time ({v.isoformat()})"
    return f"a {type(v).__name__}"


def _unknown(what: str, name: str, allowed) -> str:
    allowed = list(allowed)
    return f"unknown {what} {_short(name)};{closest(name, allowed)} allowed: {', '.join(allowed)}"


# --- converters: raw TOML value -> typed value, or _BAD with a problem recorded ------------------------

Converter = Callable[[Any, str, _Problems], Any]


def _as_int(v, key, p):
    if isinstance(v, bool) or not isinstance(v, int):
        p.add(key, f"must be an integer, got {_desc(v)}")
        return _BAD
    return v


def _as_float(v, key, p):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        p.add(key, f"must be a number, got {_desc(v)}")
        return _BAD
    if not math.isfinite(v):
        p.add(key, f"must be a finite number, got {_fmt(v)}")
        return _BAD
    return float(v)


def _as_str(v, key, p):
    if not isinstance(v, str):
        p.add(key, f"must be a string, got {_desc(v)}")
        return _BAD
    if "\x00" in v:  # a path with a NUL fails deep inside a run; no setting needs one
        p.add(key, f"must not contain a NUL character, got {_short(v)}")
        return _BAD
    return v


def _as_passthrough(v, key, p):
    """An option of a type this loader does not convert (e.g. nested weights): checked for what no
    setting may hold, NaN/inf and NUL characters, and frozen (arrays as tuples)."""
    ok = True
    stack = [(v, key)]
    while stack:
        x, k = stack.pop()
        if isinstance(x, float) and not math.isfinite(x):
            p.add(k, f"must be a finite number, got {_fmt(x)}")
            ok = False
        elif isinstance(x, str) and "\x00" in x:
            p.add(k, f"must not contain a NUL character, got {_short(x)}")
            ok = False
        elif isinstance(x, dict):
            stack.extend((y, f"{k}.{n}") for n, y in reversed(list(x.items())))
        elif isinstance(x, list):
            stack.extend((y, f"{k}[{i}]") for i, y in reversed(list(enumerate(x))))
    return _frozen(v) if ok else _BAD


def _as_bool(v, key, p):
    if not isinstance(v, bool):
        p.add(key, f"must be true or false, got {_desc(v)}")
        return _BAD
    return v


def _as_component(v, key, p):
    if isinstance(v, str):
        if v:
            return ComponentSpec(v)
        p.add(key, "must be a component name, got an empty string")
        return _BAD
    if isinstance(v, dict):
        name = v.get("name")
        if name is None:
            p.add(key, 'a component table needs a name, e.g. { name = "lsgan", <options> }')
        elif not isinstance(name, str) or not name:
            p.add(f"{key}.name", f"must be a component name (a string), got {_desc(name)}")
        else:
            return ComponentSpec(name, {k: x for k, x in v.items() if k != "name"})
        return _BAD
    p.add(key, f'must be a component name or a table {{ name = "...", <options> }}, got {_desc(v)}')
    return _BAD


def _tuple_of(item: Converter) -> Converter:
    def convert(v, key, p):
        if not isinstance(v, list):
            p.add(key, f"must be an array, got {_desc(v)}")
            return _BAD
        out = [item(x, f"{key}[{i}]", p) for i, x in enumerate(v)]
        return _BAD if any(x is _BAD for x in out) else tuple(out)

    return convert


CONVERTERS: dict[str, Converter] = {
    "int": _as_int,
    "float": _as_float,
    "str": _as_str,
    "bool": _as_bool,
    "ComponentSpec": _as_component,
    "tuple[int, ...]": _tuple_of(_as_int),
    "tuple[float, ...]": _tuple_of(_as_float),
    "tuple[str, ...]": _tuple_of(_as_str),
    "tuple[bool, ...]": _tuple_of(_as_bool),
    "tuple[ComponentSpec, ...]": _tuple_of(_as_component),
}


# --- range checks: typed value -> (key suffix, message) for each problem ------------------------------

Check = Callable[[Any], Iterator[tuple[str, str]]]


def _positive(v):
    if v <= 0:
        yield "", f"must be a positive {'integer' if isinstance(v, int) else 'number'}, got {_fmt(v)}"


def _non_negative(v):
    if v < 0:
        yield "", f"must be >= 0, got {_fmt(v)}"


def _multiple_of_4(v):
    if v % 4:
        yield "", f"must be a multiple of 4 (the 4 inference timesteps lie on the K-grid), got {v}"


def _per_phase(v):
    if len(v) != NUM_PHASES:
        yield "", f"must have one value per phase ({NUM_PHASES} values), got {len(v)}"


def _non_empty(v):
    if not v:
        yield "", "must not be empty"


def _at_most(n: int, what: str) -> Check:
    def check(v):
        if len(v) > n:
            yield "", f"{len(v)} {what} exceed the limit of {n}"

    return check


def _seed(v):
    if not 0 <= v <= MAX_SEED:
        yield "", f"must be in [0, 2**32 - 1] (a seed of numpy's and torch's generators), got {v}"


def _unit_interval(v):
    if not 0.0 <= v <= 1.0:
        yield "", f"must be in [0, 1], got {_fmt(v)}"


def _one_of(choices) -> Check:
    def check(v):
        if v not in choices:
            got = _short(v) if isinstance(v, str) else repr(v)
            yield "", f"must be one of {', '.join(map(repr, choices))}, got {got};{closest(v, choices)}".rstrip(";")

    return check


def _each(check: Check) -> Check:
    def each(v):
        for i, x in enumerate(v):
            for suffix, msg in check(x):
                yield f"[{i}]{suffix}", msg

    return each


TRAIN_CHECKS: dict[str, tuple[Check, ...]] = {
    "num_timesteps": (_positive, _multiple_of_4),
    "phase_length": (_positive,),
    "iterations": (_positive,),
    "batch_size": (_positive,),
    "global_batch": (_non_negative,),
    "log_every": (_positive,),
    "checkpoint_every": (_non_negative,),
    "trackers": (_each(_one_of(TRACKERS)),),
    "learning_rate": (_positive,),
    "disc_learning_rate": (_positive,),
    "lora_rank": (_non_negative,),
    "mixed_precision": (_one_of(MIXED_PRECISION),),
    "lambda_adv": (_per_phase, _each(_non_negative)),
    "lambda_dmd": (_per_phase, _each(_non_negative)),
    "guidance_min": (_non_negative,),
    "guidance_max": (_non_negative,),
    "guidance_fixed": (_non_negative,),
    "adv_timesteps": (_non_empty, _each(_unit_interval)),
    "draws": (_one_of(DRAWS),),
    "phase_counting": (_one_of(PHASE_COUNTING),),
}
EVAL_CHECKS: dict[str, tuple[Check, ...]] = {
    "nfe": (_non_empty, _each(_positive)),
    "num_samples": (_positive,),
    "batch_size": (_positive,),
    "guidance": (_non_negative,),
    "teacher_steps": (_each(_positive),),
    "grid_size": (_non_negative,),
    "bootstrap_resamples": (_non_negative,),
}


def _parse_value(annotation: str, checks, raw, key, p):
    convert = CONVERTERS.get(annotation)
    if convert is None:  # a field type this loader does not know: pass it through unchecked
        return raw
    value = convert(raw, key, p)
    if value is _BAD:
        return _BAD
    for check in checks or ():
        found = list(check(value))
        if found:
            for suffix, msg in found:
                p.add(key + suffix, msg)
            return _BAD
    return value


# --- sections ----------------------------------------------------------------------------------------


@dataclass
class _Set:
    """A field's value, as written, and where it was written."""

    value: Any
    raw: Any
    key: str | None  # None: the dataclass default
    rank: int


@dataclass
class _Layer:
    train: dict[str, _Set]
    eval: dict[str, _Set]


def _parse_layer(table, key: str, p: _Problems, rank: int, extra=()) -> _Layer:
    layer = _Layer({}, {})
    if not isinstance(table, dict):
        p.add(key, f"must be a table, got {_desc(table)}")
        return layer
    for k, v in table.items():
        kp = f"{key}.{k}"
        if k in extra:
            continue
        if k == "eval":
            if not isinstance(v, dict):
                p.add(kp, f"must be a table of evaluation settings ([{key}.eval]), got {_desc(v)}")
                continue
            for ek, ev in v.items():
                ekp = f"{kp}.{ek}"
                if ek not in EVAL_TYPES:
                    p.add(ekp, _unknown("evaluation setting", ek, EVAL_TYPES))
                    continue
                value = _parse_value(EVAL_TYPES[ek], EVAL_CHECKS.get(ek), ev, ekp, p)
                # a bad value stays _BAD (no fallback to a lower layer: that would add derived noise)
                layer.eval[ek] = _Set(value, ev, ekp, rank)
            continue
        if k not in TRAIN_TYPES:
            p.add(kp, _unknown("key", k, [*extra, *TRAIN_TYPES, "eval"]))
            continue
        value = _parse_value(TRAIN_TYPES[k], TRAIN_CHECKS.get(k), v, kp, p)
        layer.train[k] = _Set(value, v, kp, rank)
    return layer


def _parse_header(table, p: _Problems) -> dict:
    header: dict[str, Any] = {
        "name": None, "title": "", "reproduces": "", "panel": "", "version": 1,
        "default_scale": None, "seeds": (0,), "primary_nfe": None,
    }
    if table is None:
        p.add("study", 'missing [study] section; it needs at least name = "..."')
        return header
    if not isinstance(table, dict):
        p.add("study", f"must be a table, got {_desc(table)}")
        return header
    for k, v in table.items():
        kp = f"study.{k}"
        if k not in STUDY_KEYS:
            p.add(kp, _unknown("key", k, STUDY_KEYS))
        elif k == "name":
            value = _as_str(v, kp, p)
            if value is not _BAD and not NAME_RE.match(value):
                p.add(kp, f"must match [a-z0-9_-]+ (lower-case letters, digits, '_', '-'), got {_short(value)}")
            elif value is not _BAD and len(value) > MAX_NAME_CHARS:
                p.add(kp, f"must be at most {MAX_NAME_CHARS} characters (it names the run directory), got {len(value)}")
            elif value is not _BAD:
                header["name"] = value
        elif k in ("title", "reproduces", "panel", "default_scale"):
            value = _as_str(v, kp, p)
            if value is not _BAD:
                header[k] = value
        elif k in ("version", "primary_nfe"):
            value = _parse_value("int", (_positive,), v, kp, p)
            if value is not _BAD:
                header[k] = value
        elif k == "seeds":
            value = _parse_seeds(v, kp, p)
            if value is not _BAD:
                header["seeds"] = value
    if "name" not in table:
        p.add("study.name", 'required: a short id such as name = "ablation_losses" ([a-z0-9_-]+)')
    if not header["title"] and header["name"]:
        header["title"] = header["name"]
    return header


def _parse_variants(raw, p: _Problems, where: str = "variants") -> list[tuple[str, _Layer]]:
    if not isinstance(raw, list) or not all(isinstance(v, dict) for v in raw):
        p.add(where, f"must be an array of tables: one [[{where}]] section per variant")
        return []
    out: list[tuple[str, _Layer]] = []
    seen: dict[str, int] = {}
    for i, table in enumerate(raw):
        key = f"{where}[{i}]"
        layer = _parse_layer(table, key, p, _VARIANT, extra=("name",))
        name = table.get("name")
        if name is None:
            p.add(f"{key}.name", 'required: each [[variants]] needs a name, e.g. name = "distil+adv"')
            continue
        if _as_str(name, f"{key}.name", p) is _BAD:
            continue
        if not VARIANT_NAME_RE.match(name):
            p.add(f"{key}.name", f"must match {VARIANT_NAME_RE.pattern[:-2]} (letters, digits, '.', '_', '+', '-'), got {_short(name)}")
            continue
        if name in seen:
            p.add(f"{key}.name", f"duplicate variant name {name!r} (also {where}[{seen[name]}])")
            continue
        seen[name] = i
        out.append((name, layer))
    return out


@dataclass
class _Axis:
    name: str  # as written: "adv_loss" or "eval.nfe"
    section: str  # "train" | "eval"
    field: str
    size: int  # values as written (for the size check, valid or not)
    values: list[_Set]


def _parse_matrix(table, p: _Problems, where: str = "matrix") -> list[_Axis]:
    if not isinstance(table, dict):
        p.add(where, f"must be a table of axes, got {_desc(table)}")
        return []
    if not table:
        p.add(where, f'is empty: add an axis (e.g. adv_loss = ["lsgan", "hinge"]) or remove [{where}]')
        return []
    items = []
    for k, v in table.items():
        if k == "eval" and isinstance(v, dict):  # eval.nfe = [...] written as a dotted key
            items.extend((f"eval.{ek}", ev) for ek, ev in v.items())
        else:
            items.append((k, v))
    allowed = [*TRAIN_TYPES, *(f"eval.{f}" for f in EVAL_TYPES)]
    axes = []
    named: set[str] = set()
    for name, values in items:
        kp = f"{where}.{name}"
        if name in named:  # "eval.nfe" quoted and eval.nfe dotted: the same axis twice
            p.add(kp, "axis given twice (as a quoted and a dotted key); keep one")
            continue
        named.add(name)
        section, fname = ("eval", name[5:]) if name.startswith("eval.") else ("train", name)
        types, checks = (EVAL_TYPES, EVAL_CHECKS) if section == "eval" else (TRAIN_TYPES, TRAIN_CHECKS)
        if fname not in types:
            p.add(kp, _unknown("matrix axis", name, allowed))
            continue
        if not isinstance(values, list):
            p.add(kp, f"must be an array of the axis's values, got {_desc(values)}")
            continue
        if not values:
            p.add(kp, "empty axis: give at least one value, or remove the axis")
            continue
        sets: list[_Set] = []
        seen: dict[str, int] = {}
        for i, raw in enumerate(values):
            ikp = f"{kp}[{i}]"
            value = _parse_value(types[fname], checks.get(fname), raw, ikp, p)
            if value is _BAD:
                continue
            label = _render(raw)
            if label in seen:
                p.add(ikp, f"duplicate value {_fmt(raw)} (also {kp}[{seen[label]}])")
                continue
            seen[label] = i
            sets.append(_Set(value, raw, ikp, _MATRIX))
        axes.append(_Axis(name, section, fname, len(values), sets))
    return axes


def _parse_seeds(v, kp: str, p: _Problems):
    value = _parse_value("tuple[int, ...]", (_non_empty, _at_most(MAX_SEEDS, "seeds"), _each(_seed)), v, kp, p)
    if value is _BAD:
        return _BAD
    dupes = sorted({s for s in value if value.count(s) > 1})
    if dupes:
        p.add(kp, f"duplicate seeds: {', '.join(map(str, dupes))}")
        return _BAD
    return value


def _produced_metrics(evaluator_sets: list, components) -> set[str] | None:
    """The metric names the given evaluator settings produce (``_Set`` values; None: a layer that does not
    set them, i.e. the default evaluators), from what each evaluator declared at registration; None when
    one is not registered or declares none (its metric is unknown: any claim may be on it)."""
    produced: set[str] = set()
    for s in evaluator_sets:
        specs = EvalConfig().evaluators if s is None else s.value
        if specs is _BAD:  # already reported where it was written
            continue
        for spec in specs:
            if spec.name not in components["evaluator"]:
                return None
            metric = components["evaluator"].get(spec.name).metric
            if not metric:
                return None
            produced.add(metric)
    return produced


def _claim_metric_problem(metric: str, produced: set[str] | None) -> str | None:
    """Why a claim cannot be judged on ``metric``: no evaluator of the study produces it, nor (for a paper's
    metric name, e.g. "fid") the metric that stands for it in this run (the report's METRIC_ALIASES)."""
    if produced is None:
        return None
    from .report import METRIC_ALIASES

    if any(m in produced for m in (metric, *METRIC_ALIASES.get(metric, ()))):
        return None
    accepted = sorted(produced | {paper for paper, ours in METRIC_ALIASES.items() if produced & set(ours)})
    return (f"no evaluator of this study produces {_short(metric)} at any scale;{closest(metric, accepted)} "
            f"metrics: {', '.join(accepted) or '(none)'}")


#: ``[paper.compute]``: the paper's training cost, which ``flashbench run`` projects this run's step time onto
#: (:mod:`flashbench.projection`); ``iterations`` and ``gpu_hours`` are required
COMPUTE_KEYS: dict[str, tuple[str, tuple]] = {
    "iterations": ("int", (_positive,)), "gpu_hours": ("float", (_positive,)), "global_batch": ("int", (_positive,)), "gpu": ("str", ()),
}


def _parse_compute(paper: dict, p: _Problems) -> None:
    compute = paper.get("compute")
    if compute is None:
        return
    if not isinstance(compute, dict):
        p.add("paper.compute", f"must be a table ([paper.compute] with iterations and gpu_hours), got {_desc(compute)}")
        return
    for k, v in compute.items():
        if k not in COMPUTE_KEYS:
            p.add(f"paper.compute.{k}", _unknown("key", k, COMPUTE_KEYS))
        else:
            _parse_value(*COMPUTE_KEYS[k], v, f"paper.compute.{k}", p)
    for k in ("iterations", "gpu_hours"):
        if k not in compute:
            p.add(f"paper.compute.{k}", "required (the paper's iterations and GPU-hours, e.g. iterations = 20000, gpu_hours = 26)")


def claim_applies(claim: dict, scale: str) -> bool:
    """A claim with ``scales = [...]`` is judged at those scales only (e.g. the same statement in terms of
    the paper's guidance values at paper scale and of the toy teacher's range at toy scale)."""
    scales = claim.get("scales")
    return not isinstance(scales, list) or scale in scales


def _parse_claims(paper: dict, names, p: _Problems, produced: set[str] | None = None, scale: str | None = None,
                  scale_names: tuple = ()) -> None:
    """``produced``: the metrics the study's evaluators produce (None: unknown, any metric is accepted);
    variant names are checked for the claims that apply at ``scale``."""
    claims = paper.get("claims")
    if claims is None:
        return
    if not isinstance(claims, list) or not all(isinstance(c, dict) for c in claims):
        p.add("paper.claims", "must be an array of tables: one [[paper.claims]] section per claim")
        return
    for i, claim in enumerate(claims):
        key = f"paper.claims[{i}]"
        for k, v in claim.items():
            kp = f"{key}.{k}"
            if k not in CLAIM_KEYS:
                p.add(kp, _unknown("key", k, CLAIM_KEYS))
            elif k in ("nfe", "than_nfe"):
                _parse_value("int", (_positive,), v, kp, p)
            elif k == "better":
                _parse_value("str", (_one_of(("lower", "higher")),), v, kp, p)
            elif k == "metric":
                problem = _claim_metric_problem(v, produced) if _as_str(v, kp, p) is not _BAD else None
                if problem:
                    p.add(kp, problem)
            elif k == "scales":
                if not isinstance(v, list) or not v or not all(isinstance(x, str) for x in v):
                    p.add(kp, f"must be a non-empty array of scale names, got {_desc(v)}")
                else:
                    for x in v:
                        if scale_names and x not in scale_names:
                            p.add(kp, _unknown("scale", x, scale_names))
            elif _as_str(v, kp, p) is not _BAD and k in ("variant", "than") and names is not None \
                    and (scale is None or claim_applies(claim, scale)):
                # Teacher baselines are result rows of their own, named "teacher...".
                if v not in names and not v.startswith("teacher"):
                    p.add(kp, f"no variant named {v!r};{closest(v, names)} variants: {', '.join(names)}")
        for k in ("metric", "better", "variant", "than"):
            if k not in claim:
                p.add(f"{key}.{k}", "required (a claim needs metric, better, variant and than)")


# --- resolution --------------------------------------------------------------------------------------


def _render(raw: Any) -> str:
    """A matrix value in a variant name: components by name, arrays space-separated."""
    if isinstance(raw, dict):
        options = " ".join(f"{k}={_render(v)}" for k, v in raw.items() if k != "name")
        return f"{raw.get('name')}({options})" if options else str(raw.get("name"))
    if isinstance(raw, list):
        return "[" + " ".join(_render(x) for x in raw) + "]"
    if isinstance(raw, (bool, float)):
        return _fmt(raw)
    return str(raw)


def _defaults(cls) -> dict[str, _Set]:
    out = {}
    for f in dataclasses.fields(cls):
        value = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        out[f.name] = _Set(value, None, None, _DEFAULT)
    return out


class _ComponentChecker:
    """Checks component names, tags and options against the registries, once per place written."""

    def __init__(self, components, p: _Problems, scale: str):
        self.components, self.p, self.scale = components, p, scale
        self._cache: dict[tuple[int, str], Any] = {}

    def spec(self, s: _Set, field: str, kind: str, tag: str | None, section: str):
        cache_key = (id(s), field)
        if cache_key not in self._cache:
            key, note = s.key, ""
            if key is None:
                where = f"base.eval.{field}" if section == "eval" else f"base.{field}"
                key, note = where, f" (the default; set {field} in [base] or [scale.{self.scale}])"
            if isinstance(s.value, tuple):
                out = [self._one(spec, f"{key}[{i}]", field, kind, tag, note) for i, spec in enumerate(s.value)]
                result = _BAD if any(x is _BAD for x in out) else tuple(out)
            else:
                result = self._one(s.value, key, field, kind, tag, note)
            self._cache[cache_key] = result
        return self._cache[cache_key]

    def _one(self, spec: ComponentSpec, key: str, field: str, kind: str, tag, note: str):
        p = self.p
        if spec.name == "none" and field in OPTIONAL_COMPONENT_FIELDS:
            if spec.options:
                p.add(key, f"'none' switches the {field} term off and takes no options")
                return _BAD
            return spec
        registry = self.components[kind]
        if spec.name not in registry:
            extra = " (or 'none' to switch the term off)" if field in OPTIONAL_COMPONENT_FIELDS else ""
            p.add(key, registry.unknown_message(spec.name) + extra + note)
            return _BAD
        component = registry.get(spec.name)
        if tag and tag not in component.tags:
            fitting = [c.name for c in registry if tag in c.tags]
            p.add(key, f"{kind} {spec.name!r} is not tagged {tag!r} (its tags: {', '.join(component.tags) or 'none'}); "
                       f"{field} takes one of: {', '.join(fitting) or '(none installed)'}{', none' if field in OPTIONAL_COMPONENT_FIELDS else ''}")
            return _BAD
        options, ok, mistyped = {}, True, []
        allowed = component.option_names()
        types = {f.name: _annotation(f.type) for f in dataclasses.fields(component.config)} if component.config else {}
        for name, raw in spec.options.items():
            okey = f"{key}.{name}"
            if name not in types:
                if allowed:
                    p.add(okey, f"unknown option {name!r} for {kind} {spec.name!r};{closest(name, allowed)} options: {', '.join(allowed)}")
                else:
                    p.add(okey, f"{kind} {spec.name!r} takes no options")
                ok = False
                continue
            value = _parse_value(types[name], (), raw, okey, p) if types[name] in CONVERTERS else _as_passthrough(raw, okey, p)
            if value is _BAD:
                ok, mistyped = False, mistyped + [name]
                continue
            options[name] = value
        # The values the config itself refuses, every one of them, beside the unknown and mistyped above
        # (unless a mistyped one is required: its absence would only add a derived problem).
        required = [f.name for f in dataclasses.fields(component.config) if f.default is dataclasses.MISSING
                    and f.default_factory is dataclasses.MISSING] if component.config else []  # type: ignore[misc]
        for message in [] if set(mistyped) & set(required) else component.config_problems(options):
            p.add(key, f"invalid options for {kind} {spec.name!r}: {message}; options: {', '.join(allowed) or '(none)'}")
            ok = False
        if not ok:
            return _BAD
        return ComponentSpec(spec.name, options)


def _frozen(v: Any) -> Any:
    """TOML arrays as tuples, so that frozen configs built from options stay hashable."""
    if isinstance(v, list):
        return tuple(_frozen(x) for x in v)
    if isinstance(v, dict):
        return {k: _frozen(x) for k, x in v.items()}
    return v


def _resolve_one(
    layers: list[_Layer], cell: list[tuple[_Axis, _Set]], checker: _ComponentChecker, p: _Problems
) -> tuple[TrainConfig, EvalConfig] | None:
    train, ev = _defaults(TrainConfig), _defaults(EvalConfig)
    for layer in layers:
        train.update(layer.train)
        ev.update(layer.eval)
    for axis, s in cell:
        (ev if axis.section == "eval" else train)[axis.field] = s

    ok = True
    # Cross-field rules, reported where the more specific of the two values was written.
    for low, high, rule in (
        ("guidance_min", "guidance_max", "guidance_min must be <= guidance_max"),
        ("phase_length", "iterations", "phase_length must be <= iterations (a run must reach its first phase change)"),
    ):
        a, b = train[low], train[high]
        if a.value is _BAD or b.value is _BAD:  # already reported where it was written
            continue
        if a.value > b.value:
            at, other = (a, b) if a.rank >= b.rank else (b, a)
            where = other.key or "the default"
            p.add(at.key or f"base.{low}", f"{rule}: {low} = {_fmt(a.value)}, {high} = {_fmt(b.value)} (from {where})")
            ok = False

    values: dict[str, dict[str, Any]] = {"train": {}, "eval": {}}
    for section, merged in (("train", train), ("eval", ev)):
        for field, s in merged.items():
            kind_tag = KIND_FIELDS[section].get(field)  # a field naming a component: (kind, required tag)
            if s.value is _BAD:
                value = _BAD
            else:
                value = checker.spec(s, field, *kind_tag, section) if kind_tag else s.value
            if value is _BAD:
                ok = False
            values[section][field] = value
    if not ok:
        return None
    return TrainConfig(**values["train"]), EvalConfig(**values["eval"])


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
    _as_passthrough(paper, "paper", p)  # free-form, but stored as strict JSON beside the results
    _parse_compute(paper, p)

    # What the claims may name: the metrics of every evaluator the study runs, at any of its scales.
    written = [base, *scales.values(), *(layer for _, layer in explicit), *(layer for sv in scale_variants.values() for _, layer in sv)]
    evaluator_sets = [scales[s].eval.get("evaluators") or base.eval.get("evaluators") for s in scales]
    evaluator_sets += [layer.eval["evaluators"] for layer in written[1 + len(scales):] if "evaluators" in layer.eval]
    evaluator_sets += [value for axis in [*axes, *(a for sa in scale_axes.values() for a in sa)]
                       if axis.section == "eval" and axis.field == "evaluators" for value in axis.values]

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
            from .plugins import collect_components

            components = collect_components()
        checker = _ComponentChecker(components, p, chosen)
        named = explicit or [("base", _Layer({}, {}))]
        names = []
        for (vname, layer), cell in itertools.product(named, itertools.product(*[[(a, s) for s in a.values] for a in axes])):
            cell_name = ",".join(f"{a.name}={_render(s.raw)}" for a, s in cell)
            if cell and explicit:
                name = f"{vname}/{cell_name}"
            else:
                name = cell_name or vname
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
            from .plugins import collect_components

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


def _slug(name: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._+=,-]+", "_", name)
    if safe.startswith("."):
        safe = "_" + safe[1:]
    if safe != name or len(safe) > 96:
        # Replaced characters could make two names collide: a short hash of the name keeps keys unique.
        safe = f"{safe[:80]}-{hashlib.sha1(name.encode()).hexdigest()[:6]}"
    return safe


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
