"""Values: each field's type (from the config dataclasses), the converters from raw TOML values to typed
ones, and the range checks on typed values. A converter or check that fails records a problem and
returns :data:`~flashbench.study.problems._BAD`.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Iterator

from ..config import ComponentSpec, EvalConfig, TrainConfig
from ..registry import closest
from .problems import _BAD, _desc, _fmt, _Problems, _short
from .reading import MAX_SEED

NUM_PHASES = 4  # phases of pi and of the lambda schedules (Sec. 4.2)
MIXED_PRECISION = ("no", "bf16", "fp16")
TRACKERS = ("tensorboard", "wandb")
DRAWS = ("per_sample", "per_batch")  # where the paper and the authors' code draw i and omega
PHASE_COUNTING = ("batches", "optimizer_calls")


def _annotation(tp: Any) -> str:
    return tp if isinstance(tp, str) else getattr(tp, "__name__", str(tp))


TRAIN_TYPES = {f.name: _annotation(f.type) for f in dataclasses.fields(TrainConfig)}
EVAL_TYPES = {f.name: _annotation(f.type) for f in dataclasses.fields(EvalConfig)}


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


def _frozen(v: Any) -> Any:
    """TOML arrays as tuples, so that frozen configs built from options stay hashable."""
    if isinstance(v, list):
        return tuple(_frozen(x) for x in v)
    if isinstance(v, dict):
        return {k: _frozen(x) for k, x in v.items()}
    return v


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
