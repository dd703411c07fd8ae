"""Values as text for people: the one home of each formatting rule the commands, the report, the model card and
the study's error messages share.

Measured numbers at the report's precision (tables, plots, claim sentences)
    :func:`number` (integers as such, floats with 3 / 2 / 1 decimals below 1 / 100 / above: :func:`decimals`),
    :func:`mean_std` ("45.5 ± 2.1"), :func:`interval` ("[40.3, 50.7]" at a given precision),
    :func:`mean_interval` ("45.5 ± 2.1 [40.3, 50.7]"), :func:`count`, :func:`params` ("26.4M"); missing values
    (:func:`is_missing`: None, NaN, pandas' NA) are :data:`DASH`.
Measured numbers at four significant digits (``flashbench compare``, the model card)
    :func:`significant` ("0.8681", "n/a" for what is not a finite number), :func:`significant_interval`
    ("[0.8631, 0.8733]"); :func:`finite` says whether a stored value is a measurement (a finite number, not a bool).
Configured values
    :func:`echo_text` (as TOML spells it, strings as Python reprs: how a study's error line echoes what was
    written), :func:`toml_text` (the same with JSON strings, which TOML reads: an option's default in
    ``flashbench plugins -v``), :func:`compact_text` (a cell of ``flashbench validate``'s variant listing:
    components as ``name(k=v)``, arrays space-separated), :func:`short_repr` (a string's repr, cut) and
    :func:`describe` (a value's TOML type and the value: "a float (4.0)").

The two TOML spellings differ only in how they quote strings ('lsgan' against "lsgan"); each keeps what its
readers have always seen, so both stay. Nothing here imports torch; pandas only to recognise its missing values.
"""

from __future__ import annotations

import datetime
import json
import math
import numbers
from typing import Any, Callable

DASH = "–"  # a missing value in a table or a report

__all__ = [
    "DASH",
    "is_missing",
    "finite",
    "decimals",
    "number",
    "mean_std",
    "interval",
    "mean_interval",
    "count",
    "params",
    "significant",
    "significant_interval",
    "echo_text",
    "toml_text",
    "compact_text",
    "short_repr",
    "describe",
]


# --- measured numbers at the report's precision ----------------------------------------------------------


def is_missing(x: Any) -> bool:
    """Missing: None, NaN, pandas' NA/NaT (scalars only)."""
    if x is None:
        return True
    import pandas as pd

    try:
        return bool(pd.api.types.is_scalar(x) and pd.isna(x))
    except (TypeError, ValueError):
        return False


def decimals(x: float) -> int:
    """The report's decimals for ``x``: 3 below 1, 2 below 100, 1 above."""
    ax = abs(x)
    return 3 if ax < 1 else 2 if ax < 100 else 1


def number(x: Any, places: int | None = None) -> str:
    """A number for people: integers as such, floats with :func:`decimals` places (or ``places``)."""
    if is_missing(x):
        return DASH
    if isinstance(x, (bool, str)):
        return str(x)
    if isinstance(x, numbers.Integral) and places is None:
        return f"{int(x):d}"
    try:
        x = float(x)
    except (TypeError, ValueError):
        return str(x)
    return f"{x:.{decimals(x) if places is None else places}f}"


def mean_std(mean: float, std: float) -> str:
    """ "45.5 ± 2.1", both at the mean's precision; the mean alone without a std."""
    if is_missing(std):
        return number(mean)
    d = decimals(mean)
    return f"{number(mean, d)} ± {number(std, d)}"


def interval(low: float, high: float, places: int) -> str:
    """ "[40.3, 50.7]": an interval at ``places`` decimals (those of the value it surrounds)."""
    return f"[{number(low, places)}, {number(high, places)}]"


def mean_interval(mean: float, std: float, low: float, high: float) -> str:
    """ "45.47 [43.90, 47.21]" (one seed), "45.5 ± 2.1 [40.3, 50.7]" (several); without an interval the
    value alone (or with its std)."""
    text = mean_std(mean, std)
    if is_missing(low) or is_missing(high):
        return text
    return f"{text} {interval(low, high, decimals(mean))}"


def params(x: Any) -> str:
    """A parameter count: "325.0k", "26.4M", "3.0B"."""
    if is_missing(x):
        return DASH
    x = float(x)
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.1f}{unit}"
    return f"{x:.0f}"


def count(x: Any) -> str:
    """A count (a seed, n, an NFE) as an integer; what is not a number as it is."""
    if is_missing(x):
        return DASH
    try:
        return f"{int(float(x)):d}"
    except (TypeError, ValueError):
        return str(x)


# --- measured numbers at significant digits ----------------------------------------------------------------


def finite(v: Any) -> bool:
    """Whether ``v`` is a finite int or float (a bool is not a measurement)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def significant(v: Any, digits: int = 4) -> str:
    """``v`` to ``digits`` significant digits ("0.8681", "1.235e+04"); "n/a" unless it is a finite int or float
    (callers that must not show a bool as a number check :func:`finite` first, as ``flashbench compare`` does)."""
    return f"{v:.{digits}g}" if isinstance(v, (int, float)) and math.isfinite(v) else "n/a"


def significant_interval(low: Any, high: Any, digits: int = 4) -> str:
    """ "[0.8631, 0.8733]": an interval at ``digits`` significant digits."""
    return f"[{significant(low, digits)}, {significant(high, digits)}]"


# --- configured values ----------------------------------------------------------------------------------


def _toml(v: Any, quote: Callable[[str], str]) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):  # TOML spells the non-finite floats nan, inf and -inf
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return quote(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml(x, quote) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml(x, quote)}" for k, x in v.items()) + " }"
    return str(v)


def echo_text(v: Any) -> str:
    """A value as TOML would spell it, strings as Python reprs ('lsgan'): how an error line echoes a value."""
    return _toml(v, repr)


def toml_text(v: Any) -> str:
    """A value as a study file would write it, strings in double quotes ("lsgan")."""
    return _toml(v, json.dumps)


def compact_text(v: Any) -> str:
    """A setting in one short cell: a component as ``name(k=v k2=v2)``, arrays ``[a b]``, booleans true/false."""
    from .config import ComponentSpec

    if isinstance(v, ComponentSpec):
        if not v.options:
            return v.name
        return f"{v.name}(" + " ".join(f"{k}={compact_text(x)}" for k, x in v.options.items()) + ")"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, tuple)):
        return "[" + " ".join(compact_text(x) for x in v) + "]"
    return str(v)


def short_repr(s: str, limit: int = 60) -> str:
    """A string's repr, cut: error lines echo what the user wrote, not a megabyte of it."""
    r = repr(s)
    return r if len(r) <= limit else r[: limit - 4] + "'..."


def describe(v: Any) -> str:
    """A value's TOML type and the value, for "must be ..., got <this>": "a float (4.0)", "an array"."""
    if isinstance(v, bool):
        return f"a boolean ({echo_text(v)})"
    if isinstance(v, int):
        return f"an integer ({v})"
    if isinstance(v, float):
        return f"a float ({echo_text(v)})"
    if isinstance(v, str):
        return f"a string ({short_repr(v)})"
    if isinstance(v, list):
        return "an array"
    if isinstance(v, dict):
        return "a table"
    if isinstance(v, (datetime.date, datetime.time)):
        return f"a date/time ({v.isoformat()})"
    return f"a {type(v).__name__}"
