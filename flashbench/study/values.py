"""Values: each field's type (from the config dataclasses) as a pydantic schema, the range checks on typed
values, and the translation of pydantic's errors into the study's one-line problems.

pydantic validates; this module says what it validates and how a failure reads. Types are strict (TOML
has no ``"3"`` for 3, and ``true`` is not 1): an integer field takes integers, a number field integers
and floats (as floats, finite only), arrays become tuples so that configs stay hashable. A check runs on
the typed value and stops at its first failure (``num_timesteps = -3`` is not a positive integer; that it
is not a multiple of 4 would be noise); :func:`_each` checks every item of an array, each at its index.
Every error is reported with the study's own wording (:func:`_message`) at its key path, in the order the
keys were written (:func:`_report`).
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Callable, Iterable

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError, create_model
from pydantic_core import InitErrorDetails, PydanticCustomError, core_schema as cs

from ..config import STUDENT_PREDICTIONS, ComponentSpec, EvalConfig, TrainConfig
from ..registry import closest
from .problems import _BAD, _desc, _fmt, _Problems, _short
from .reading import MAX_SEED

NUM_PHASES = 4  # phases of pi and of the lambda schedules (Sec. 4.2)
MIXED_PRECISION = ("no", "bf16", "fp16")
TRACKERS = ("tensorboard", "wandb")
DRAWS = ("per_sample", "per_batch")  # where the paper and the authors' code draw i and omega
PHASE_COUNTING = ("batches", "optimizer_calls")


def _annotation(tp: Any) -> str:
    """A field's annotation as written (``from __future__ import annotations`` keeps them strings): the key
    of :data:`CONVERTERS`. Only the spellings listed there are converted; any other type is passed through
    unconverted (a plugin's ``str | None`` or ``dict`` option is its own business)."""
    return tp if isinstance(tp, str) else getattr(tp, "__name__", str(tp))


TRAIN_TYPES = {f.name: _annotation(f.type) for f in dataclasses.fields(TrainConfig)}
EVAL_TYPES = {f.name: _annotation(f.type) for f in dataclasses.fields(EvalConfig)}


def _problem(message: str) -> PydanticCustomError:
    """A problem in the study's own words (its ``ctx`` carries the message as is)."""
    return PydanticCustomError("study", "{message}", {"message": message})


# --- types: pydantic core schemas for raw TOML values -------------------------------------------------

#: a core schema that validates one field's raw TOML value into its typed value
Converter = cs.CoreSchema


def _no_nul(v: str) -> str:
    if "\x00" in v:  # a path with a NUL fails deep inside a run; no setting needs one
        raise _problem(f"must not contain a NUL character, got {_short(v)}")
    return v


def _component(v: Any, table: Callable[[Any], dict]) -> ComponentSpec:
    """A component: a registry name, or a table ``{ name = "...", <options> }`` (``table`` validates it)."""
    if isinstance(v, str):
        if v:
            return ComponentSpec(v)
        raise _problem("must be a component name, got an empty string")
    if isinstance(v, dict):
        if "name" not in v:
            raise _problem('a component table needs a name, e.g. { name = "lsgan", <options> }')
        options = table(v)
        return ComponentSpec(options.pop("name"), options)
    raise _problem(f'must be a component name or a table {{ name = "...", <options> }}, got {_desc(v)}')


def _component_name(v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise _problem(f"must be a component name (a string), got {_desc(v)}")
    return v


_COMPONENT_TABLE = cs.typed_dict_schema({"name": cs.typed_dict_field(cs.no_info_plain_validator_function(_component_name))}, extra_behavior="allow")


def _tuple_of(item: cs.CoreSchema) -> cs.CoreSchema:
    """A TOML array (a list, strictly) of ``item``, as a tuple."""
    return cs.no_info_after_validator_function(tuple, cs.list_schema(item, strict=True))


_INT = cs.int_schema(strict=True)
_FLOAT = cs.no_info_after_validator_function(float, cs.float_schema(strict=True, allow_inf_nan=False))
_STR = cs.no_info_after_validator_function(_no_nul, cs.str_schema(strict=True))
_BOOL = cs.bool_schema(strict=True)
_COMPONENT = cs.no_info_wrap_validator_function(_component, _COMPONENT_TABLE)

CONVERTERS: dict[str, Converter] = {
    "int": _INT,
    "float": _FLOAT,
    "str": _STR,
    "bool": _BOOL,
    "ComponentSpec": _COMPONENT,
    "tuple[int, ...]": _tuple_of(_INT),
    "tuple[float, ...]": _tuple_of(_FLOAT),
    "tuple[str, ...]": _tuple_of(_STR),
    "tuple[bool, ...]": _tuple_of(_BOOL),
    "tuple[ComponentSpec, ...]": _tuple_of(_COMPONENT),
}


def _passthrough(v: Any) -> Any:
    """An option of a type this loader does not convert (e.g. nested weights), and the free-form
    ``[paper]``: checked for what no setting may hold, NaN/inf and NUL characters (every one, at its key),
    and frozen (arrays as tuples)."""
    if isinstance(v, list):
        return _FROZEN_ARRAY.validate_python(v)
    if isinstance(v, dict):
        return _FROZEN_TABLE.validate_python(v)
    if isinstance(v, float):
        return _FINITE.validate_python(v)
    if isinstance(v, str):
        return _NO_NUL.validate_python(v)
    return v


PASSTHROUGH: Converter = cs.no_info_plain_validator_function(_passthrough)


class _Schema:
    """``Annotated[Any, _Schema(core_schema)]``: a value validated by a core schema of this module."""

    def __init__(self, schema: cs.CoreSchema):
        self.schema = schema

    def __get_pydantic_core_schema__(self, source, handler) -> cs.CoreSchema:
        return self.schema


def _typed(schema: cs.CoreSchema) -> Any:
    """The annotation of a model field (or the type of a TypeAdapter) that ``schema`` validates."""
    return Annotated[Any, _Schema(schema)]


def _adapter(schema: cs.CoreSchema) -> TypeAdapter:
    return TypeAdapter(_typed(schema))


_FINITE = _adapter(cs.float_schema(strict=True, allow_inf_nan=False))
_NO_NUL = _adapter(_STR)
_FROZEN_ARRAY = _adapter(_tuple_of(PASSTHROUGH))
_FROZEN_TABLE = _adapter(cs.dict_schema(cs.any_schema(), PASSTHROUGH))


# --- range checks: typed value -> a problem, raised as a pydantic error -----------------------------------

#: a check on a typed value: a core schema that raises the problem (see :func:`_rule`, :func:`_each`)
Check = cs.CoreSchema


def _rule(test: Callable[[Any], str | None]) -> Check:
    """A check from a function that returns the problem with a value (None: the value is fine)."""

    def check(v):
        message = test(v)
        if message:
            raise _problem(message)
        return v

    return cs.no_info_plain_validator_function(check)


def _each(check: Check) -> Check:
    """``check`` on every item of an array (each problem at the item's index)."""
    return cs.no_info_after_validator_function(tuple, cs.list_schema(check))


_positive = _rule(lambda v: f"must be a positive {'integer' if isinstance(v, int) else 'number'}, got {_fmt(v)}" if v <= 0 else None)
_non_negative = _rule(lambda v: f"must be >= 0, got {_fmt(v)}" if v < 0 else None)
_multiple_of_4 = _rule(lambda v: f"must be a multiple of 4 (the 4 inference timesteps lie on the K-grid), got {v}" if v % 4 else None)
_per_phase = _rule(lambda v: f"must have one value per phase ({NUM_PHASES} values), got {len(v)}" if len(v) != NUM_PHASES else None)
_non_empty = _rule(lambda v: "must not be empty" if not v else None)
_seed = _rule(lambda v: f"must be in [0, 2**32 - 1] (a seed of numpy's and torch's generators), got {v}" if not 0 <= v <= MAX_SEED else None)
_unit_interval = _rule(lambda v: f"must be in [0, 1], got {_fmt(v)}" if not 0.0 <= v <= 1.0 else None)


def _at_most(n: int, what: str) -> Check:
    return _rule(lambda v: f"{len(v)} {what} exceed the limit of {n}" if len(v) > n else None)


def _one_of(choices) -> Check:
    def test(v):
        if v not in choices:
            got = _short(v) if isinstance(v, str) else repr(v)
            return f"must be one of {', '.join(map(repr, choices))}, got {got};{closest(v, choices)}".rstrip(";")
        return None

    return _rule(test)


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
    "student_prediction": (_one_of(STUDENT_PREDICTIONS),),
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


def _field(annotation: str, checks: Iterable[Check] = ()) -> cs.CoreSchema:
    """A field's schema: its type, then its checks in order, the first failure ending the chain. A type this
    loader does not know is passed through as written (unchecked, as the config dataclass takes it)."""
    convert = CONVERTERS.get(annotation)
    if convert is None:
        return cs.any_schema()
    checks = tuple(checks)
    return cs.chain_schema([convert, *checks]) if checks else convert


def _model(name: str, fields: dict[str, Any], *, required: Iterable[str] = ()) -> type[BaseModel]:
    """A pydantic model of a study table: the given fields (annotations; optional unless ``required``), no
    other key."""
    required = set(required)
    config = ConfigDict(extra="forbid", protected_namespaces=())
    model = create_model(name, __config__=config, **{k: (t, ... if k in required else None) for k, t in fields.items()})
    # the same table with every field optional: the values of a table that misses a required key
    _OPTIONAL[model] = create_model(f"{name}Values", __config__=config, **{k: (t, None) for k, t in fields.items()}) if required else model
    return model


_OPTIONAL: dict[type, type[BaseModel]] = {}


# --- errors: pydantic's, as the study's one-line problems ---------------------------------------------------

_TYPE_MESSAGES = {
    "int_type": "must be an integer, got {}",
    "float_type": "must be a number, got {}",
    "string_type": "must be a string, got {}",
    "bool_type": "must be true or false, got {}",
    "list_type": "must be an array, got {}",
}


def _key(key: str | None, loc: tuple) -> str:
    out = key or ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _message(error: dict) -> str | None:
    """The study's wording of a pydantic error (None: one the caller words, e.g. an unknown key)."""
    kind = error["type"]
    if kind == "study":
        return error["ctx"]["message"]
    if kind == "finite_number" or (kind == "float_type" and type(error["input"]) is int):  # an integer beyond any float
        return f"must be a finite number, got {_fmt(error['input'])}"
    if kind in _TYPE_MESSAGES:
        return _TYPE_MESSAGES[kind].format(_desc(error["input"]))
    return None


def _written_order(data: Any, loc: tuple) -> tuple:
    """Where ``loc`` was written in ``data``: problems are listed in the order of the file, not of the
    model's fields (a key that is missing comes after every key written)."""
    order = []
    for part in loc:
        if isinstance(data, dict):
            keys = list(data)
            order.append(keys.index(part) if part in data else len(keys))
            data = data.get(part)
        elif isinstance(data, (list, tuple)) and isinstance(part, int):
            order.append(part)
            data = data[part] if 0 <= part < len(data) else None
        else:
            break
    return tuple(order)


def _report(e: ValidationError, data: Any, key: str | None, p: _Problems, word: Callable[[dict], str] | None = None) -> list[dict]:
    """Record each error of ``e`` (from validating ``data``) at ``key`` + its location, in written order;
    ``word`` words the errors :func:`_message` leaves (unknown keys, missing ones, tables of the wrong
    type). Returns the errors, in that order."""
    errors = sorted(e.errors(), key=lambda err: _written_order(data, err["loc"]))
    for err in errors:
        message = _message(err)
        if message is None:
            if word is None:
                raise AssertionError(f"unworded pydantic error: {err}")
            message = word(err)
        p.add(_key(key, err["loc"]), message)
    return errors


def _parse_value(schema: TypeAdapter, raw: Any, key: str, p: _Problems) -> Any:
    """One value through its schema (an adapter of :func:`_field`): the typed value, or _BAD with its
    problems recorded."""
    try:
        return schema.validate_python(raw)
    except ValidationError as e:
        _report(e, raw, key, p)
        return _BAD


def _parse_table(
    schema: type[BaseModel] | TypeAdapter,
    table: dict,
    key: str,
    p: _Problems,
    word: Callable[[dict], str],
    *,
    nested: tuple[str, ...] = (),
    context: dict | None = None,
) -> dict[str, Any]:
    """A table through its model (or a TypeAdapter of a typed dict): every value written, in written order,
    typed, or _BAD where it has a problem (recorded; ``word`` words the unknown and missing keys). Unknown keys
    are left out. Only the values with a problem fail: the others are validated again without them.
    ``nested``: fields that are tables of their own model, returned as dicts the same way."""
    try:
        return _values(schema, table, nested, context)
    except ValidationError as e:
        errors = _report(e, table, key, p, word)
    bad: dict[str, Any] = {}  # key -> True (its value) or the set of its nested keys with a problem
    for loc in (err["loc"] for err in errors):  # an unknown key's value is left out like a bad one
        if loc and loc[0] in table:
            if loc[0] in nested and len(loc) > 1 and isinstance(table[loc[0]], dict):
                if bad.get(loc[0]) is not True:
                    bad.setdefault(loc[0], set()).add(loc[1])
            else:
                bad[loc[0]] = True
    cleaned = {k: v for k, v in table.items() if bad.get(k) is not True}
    for k, sub in bad.items():
        if sub is not True:
            cleaned[k] = {sk: sv for sk, sv in table[k].items() if sk not in sub}
    schema = _OPTIONAL.get(schema, schema)  # type: ignore[call-overload]
    out = _values(schema, cleaned, nested, context)
    unknown = {err["loc"] for err in errors if err["type"] == "extra_forbidden"}
    for k, sub in bad.items():
        if sub is True and (k,) not in unknown:
            out[k] = _BAD
        elif sub is not True and k in out:
            out[k].update((sk, _BAD) for sk in table[k] if sk in sub and (k, sk) not in unknown)
            out[k] = {sk: out[k][sk] for sk in table[k] if sk in out[k]}
    return {k: out[k] for k in table if k in out}


def _values(schema: type[BaseModel] | TypeAdapter, table: dict, nested: tuple[str, ...], context: dict | None) -> dict[str, Any]:
    """The values ``schema`` validates ``table`` into, by the keys written (raises ValidationError)."""
    if isinstance(schema, TypeAdapter):
        out = schema.validate_python(table, context=context)
        return {k: out[k] for k in table if k in out}
    instance = schema.model_validate(table, context=context)
    out = {}
    for k in table:
        if k in instance.model_fields_set:
            value = getattr(instance, k)
            out[k] = {sk: getattr(value, sk) for sk in table[k] if sk in value.model_fields_set} if k in nested else value
    return out


def _problems_at(messages: list[str], value: Any) -> ValidationError:
    """Several problems with one value, raised from a validator (each a line of its own)."""
    return ValidationError.from_exception_data("study", [InitErrorDetails(type=_problem(m), loc=(), input=value) for m in messages])
