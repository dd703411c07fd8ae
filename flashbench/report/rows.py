"""Reading a run's stored rows: the rows that carry a value, each metric's direction (and the metric standing
for a paper's metric), the study's variant order and primary NFE, one table cell over seeds; the column names
the other parts of the report share."""

from __future__ import annotations

import json
import math
from typing import Any

TABLE_COST_COLUMNS = ("trainable_params", "seconds_per_step", "teacher_nfe_per_step", "student_nfe_per_step", "train_hours")
PAPER, THIS_RUN = "paper.", "this_run."
# The paper's metric -> this run's metrics that stand for it, first found wins (the toy world's
# Fréchet distance "fd" stands in for FID).
METRIC_ALIASES = {"fid": ("fid", "fd"), "kid": ("kid",), "clip": ("clip_score",), "clip_score": ("clip_score",)}
KNOWN_DIRECTIONS = {"fid": False, "fd": False, "kid": False, "clip": True, "clip_score": True, "lpips": False, "lpips_to_teacher": False}
CI_LOW, CI_HIGH = "_ci_low", "_ci_high"  # column suffixes of a metric's 95% interval
TEACHER, TEACHER_FEWSTEP = "teacher", "teacher-fewstep"  # the teacher baselines' variant names in the rows


def _ok_rows(df):
    """Rows that carry a measured value."""
    import pandas as pd

    if df.empty:
        return df
    value = pd.to_numeric(df["value"], errors="coerce")
    ok = df[(df["status"].fillna("ok") == "ok") & value.notna()].copy()
    ok["value"] = pd.to_numeric(ok["value"], errors="coerce")
    ok["nfe"] = pd.to_numeric(ok["nfe"], errors="coerce")
    return ok


def _unique_in_order(values) -> list:
    seen, out = set(), []
    for v in values:
        if v is None or (isinstance(v, float) and math.isnan(v)) or v in seen:
            continue
        seen.add(v)
        out.append(v)
    return out


def metric_directions(df) -> dict[str, bool | None]:
    """Each metric (in order of first appearance) and whether higher is better (None: unknown)."""
    out: dict[str, bool | None] = {}
    if df.empty:
        return out
    for metric in _unique_in_order(df["metric"].tolist()):
        flags = df.loc[df["metric"] == metric, "higher_is_better"] if "higher_is_better" in df else []
        flags = [bool(f) for f in flags if f is not None and not (isinstance(f, float) and math.isnan(f))]
        out[metric] = flags[0] if flags else None
    return out


def _variant_order(study: dict, df) -> list[str]:
    names = [v.get("name") for v in study.get("variants", []) if isinstance(v, dict)]
    if not df.empty:
        names += df.loc[df["role"] != "teacher", "variant"].tolist()
    return _unique_in_order(names)


def _primary_nfe(study: dict, ok) -> int | None:
    nfe = study.get("primary_nfe")
    if nfe is not None:
        return int(nfe)
    students = ok[ok["role"] == "student"] if not ok.empty else ok
    return int(students["nfe"].min()) if not students.empty and students["nfe"].notna().any() else None


def _per_seed(sub, column: str = "value"):
    """Per-seed values of one cell (duplicate rows of a seed are averaged first)."""
    import pandas as pd

    values = pd.to_numeric(sub[column], errors="coerce")
    return values.groupby(sub["seed"].fillna(-1), sort=True).mean().dropna()


def _cell(sub) -> dict[str, Any]:
    """One table cell from the rows of one (role, variant, NFE, metric) over seeds: the mean, the
    standard deviation over seeds, and the 95% interval -- the row's stored bootstrap interval with
    one seed, the t-interval over the per-seed values with several (see :mod:`flashbench.stats`)."""
    from ..stats import t_interval

    values = _per_seed(sub)
    mean, std = _mean_std(values)
    if len(values) >= 2:
        lo, hi = t_interval(values.tolist())
    elif len(values) == 1 and "ci_low" in sub and "ci_high" in sub:
        lo, hi = float(_per_seed(sub, "ci_low").mean()), float(_per_seed(sub, "ci_high").mean())
    else:
        lo = hi = math.nan
    return {"mean": mean, "std": std, "low": lo, "high": hi, "seeds": len(values)}


def _mean_std(values) -> tuple[float, float]:
    if len(values) == 0:
        return math.nan, math.nan
    mean = float(values.mean())
    std = float(values.std(ddof=1)) if len(values) > 1 else math.nan
    return mean, std


def _scalar(v: Any) -> Any:
    """A cell value for a table: component tables and lists become compact JSON."""
    if isinstance(v, (dict, list, tuple)):
        return json.dumps(v, sort_keys=True, ensure_ascii=False)
    return v


def _measured_metric(metric: str, measured: dict[str, bool | None]) -> str | None:
    for candidate in METRIC_ALIASES.get(metric, (metric,)):
        if candidate in measured:
            return candidate
    return None
