"""Tables and the HTML report of one study run, built from stored results only (never recomputed).

``render_report(run_dir)`` reads ``study.json``, ``provenance.json`` and the rows of complete
variants (see ``flashbench.results`` for the row schema) and writes:

- ``tables/main.{csv,md,tex}``: one row per (role, variant, NFE); per metric the mean over seeds
  and, with several seeds, the sample standard deviation (ddof=1); cost columns (trainable
  parameters, seconds per training step, teacher and student NFEs per training step, training
  hours); samples ``n``. Teacher baselines first (NFE descending), then students in the study's
  variant order.
- ``tables/panel.{csv,md,tex}``: the students at the study's ``primary_nfe``, one row per variant,
  with its axis values and metrics: the figure panel the study reproduces.
- ``tables/paper.{csv,md,tex}`` (studies with ``paper.reference``): every row of the paper's table
  beside the measured row it corresponds to (same role and NFE), then this run's rows the paper
  does not have.
- ``report.md``: the same tables and verdicts as Markdown (no images), readable on a code host.
- ``report.html``: one self-contained file (inline CSS and SVG, images and table exports as data
  URIs, no scripts): the paper's direction beside this run's verdicts on the paper's claims, the
  paper's numbers beside the measured ones, the figure panel as plots (bars per metric; a study
  with a ``guidance_fixed`` axis also gets the FID-vs-CLIP curve of Figure 5d, the sampled range
  marked), the tables, sample grids (teacher at many steps, teacher at the student's NFE, each
  student; same prompts and initial noise), failed and unfinished variants, provenance.

Tables, in every format, mark each metric ↑ (higher is better) or ↓, show "mean ± std" where
there are several seeds, and put the best non-teacher value of each metric in bold.

``render_index(directory)`` writes ``directory/index.html`` over every report found there (one
level of sub-folders too); ``publish_reports(run_dirs, dest)`` re-renders runs, copies each
report into ``dest`` and rewrites its index. ``python -m flashbench.report --help``.

Optional study keys the report understands: ``paper.direction`` (text), ``paper.claims`` (list of
``{text, metric, better: "lower"|"higher", variant, than}``), ``paper.reference`` (list of flat
dicts, e.g. ``{"method": "Flash", "nfe": 4, "fid": 22.5}``: the paper's values; an optional
``variant`` key names the measured variant it corresponds to, ``"teacher"`` for the teacher
baselines, ``"none"`` for none; without it, a method starting with "teacher" is the teacher and a
method whose name starts with (or ends) a variant's name is that variant).
Optional runner files: ``variants/<key>/<stem>.json`` beside a grid ``<stem>.png`` with
``{"prompts": [...], "caption": "..."}`` is shown with that grid.
"""
from __future__ import annotations

import argparse
import base64
import html
import json
import math
import numbers
import re
import shutil
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from .errors import UserError
from .stats import CONTRADICTED, INCONCLUSIVE, NOT_MEASURED, REPRODUCED, Difference, paired_difference, verdict
from .results import (
    AXIS_PREFIX,
    DONE_FILE,
    PROVENANCE_FILE,
    STUDY_FILE,
    VARIANTS_DIR,
    ResultStore,
    atomic_write_text,
)

TABLE_COST_COLUMNS = ("trainable_params", "seconds_per_step", "teacher_nfe_per_step", "student_nfe_per_step", "train_hours")
COUNT_COLUMNS = ("nfe", "steps", "seeds", "n", "teacher_nfe_per_step", "student_nfe_per_step")
UP, DOWN = "↑", "↓"
DASH = "–"
PAPER, THIS_RUN = "paper.", "this_run."
# Display names of the cost columns (CSV keeps the column names).
PRETTY = {
    "trainable_params": "trainable params",
    "seconds_per_step": "s/step",
    "teacher_nfe_per_step": "teacher NFE/step",
    "student_nfe_per_step": "student NFE/step",
    "train_hours": "train hours",
    "variant_group": "variant group",
}
# The paper's metric -> this run's metrics that stand for it, first found wins (the toy world's
# Fréchet distance "fd" stands in for FID).
METRIC_ALIASES = {"fid": ("fid", "fd"), "kid": ("kid",), "clip": ("clip_score",), "clip_score": ("clip_score",)}
KNOWN_DIRECTIONS = {"fid": False, "fd": False, "kid": False, "clip": True, "clip_score": True, "lpips": False, "lpips_to_teacher": False}
GUIDANCE_AXIS = "guidance_fixed"
CI_LOW, CI_HIGH = "_ci_low", "_ci_high"  # column suffixes of a metric's 95% interval
FD_UNBIASED_N = 5000  # below this many samples a Fréchet distance is visibly biased upwards (Chong & Forsyth 2020)
FRECHET_METRICS = ("fid", "fd")
INDEX_FILE = "index.html"
META_PREFIX = "flashbench:"


# --------------------------------------------------------------------------------------------
# Reading the rows
# --------------------------------------------------------------------------------------------
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
    from .stats import t_interval

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


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------
def main_table(study: dict, df):
    """One row per (role, variant, nfe): metric means (and stds with several seeds), costs, n."""
    import pandas as pd

    ok = _ok_rows(df)
    metrics = list(metric_directions(df))
    several_seeds = False
    records = []
    if not ok.empty:
        for (role, variant, nfe), sub in ok.groupby(["role", "variant", "nfe"], sort=False, dropna=False):
            n = pd.to_numeric(sub["n"], errors="coerce").dropna()
            steps = pd.to_numeric(sub["steps"], errors="coerce").dropna()
            rec: dict[str, Any] = {
                "role": role, "variant": variant,
                "nfe": None if pd.isna(nfe) else int(nfe),
                "steps": int(steps.iloc[0]) if len(steps) else None,
                "seeds": int(sub["seed"].nunique()),
                # Samples behind each value; the smallest when metrics used different subsets.
                "n": int(n.min()) if len(n) else None,
            }
            several_seeds |= rec["seeds"] > 1
            for metric in metrics:
                c = _cell(sub[sub["metric"] == metric])
                rec[metric], rec[f"{metric}_std"] = c["mean"], c["std"]
                rec[f"{metric}{CI_LOW}"], rec[f"{metric}{CI_HIGH}"] = c["low"], c["high"]
            for col in TABLE_COST_COLUMNS:
                if col == "train_hours":
                    seconds = _mean_std(_per_seed(sub, "train_seconds"))[0] if "train_seconds" in sub else math.nan
                    rec[col] = seconds / 3600
                else:
                    rec[col] = _mean_std(_per_seed(sub, col))[0] if col in sub else math.nan
            records.append(rec)
    columns = ["role", "variant", "nfe", "steps", "seeds", "n"]
    for metric in metrics:
        columns += [metric] + ([f"{metric}_std"] if several_seeds else []) + [f"{metric}{CI_LOW}", f"{metric}{CI_HIGH}"]
    columns += list(TABLE_COST_COLUMNS)
    table = pd.DataFrame(records, columns=columns) if records else pd.DataFrame(columns=columns)
    if table.empty:
        return table
    order = {name: i for i, name in enumerate(_variant_order(study, df))}

    def sort_key(rec) -> tuple:
        nfe = rec["nfe"] if rec["nfe"] is not None and not pd.isna(rec["nfe"]) else 0
        if rec["role"] == "teacher":
            return (0, 0, -nfe)
        if rec["role"] == "student":
            return (1, order.get(rec["variant"], len(order)), nfe)
        return (2, 0, nfe)

    ranked = sorted(range(len(table)), key=lambda i: sort_key(table.iloc[i]))
    table = table.iloc[ranked].reset_index(drop=True)
    for col in ("nfe", "steps", "seeds", "n"):
        table[col] = pd.array(table[col], dtype="Int64")
    for col in ("trainable_params", "teacher_nfe_per_step", "student_nfe_per_step"):
        values = pd.to_numeric(table[col], errors="coerce").dropna()
        if len(values) and (values == values.round()).all():  # counts: keep them integers in the CSV
            table[col] = pd.array(pd.to_numeric(table[col], errors="coerce").round(), dtype="Int64")
    return table


def _axis_values(study: dict, df) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """Axis names (study order first) and each variant's axis values."""
    names: list[str] = []
    values: dict[str, dict[str, Any]] = {}
    for v in study.get("variants", []):
        if isinstance(v, dict) and isinstance(v.get("axes"), dict):
            for axis, val in v["axes"].items():
                names.append(axis)
                values.setdefault(v.get("name"), {}).setdefault(axis, val)
    if not df.empty:
        cols = [c for c in df.columns if isinstance(c, str) and c.startswith(AXIS_PREFIX)]
        students = df[df["role"] != "teacher"]
        for col in cols:
            axis = col[len(AXIS_PREFIX):]
            names.append(axis)
            for variant, val in zip(students["variant"], students[col]):
                if val is None or (isinstance(val, float) and math.isnan(val)):
                    continue
                values.setdefault(variant, {}).setdefault(axis, val)
    return _unique_in_order(names), values


def panel_table(study: dict, df):
    """The students at ``primary_nfe``: one row per variant with its axis values and metrics."""
    import pandas as pd

    main = main_table(study, df)
    nfe = _primary_nfe(study, _ok_rows(df))
    metrics = list(metric_directions(df))
    axes, axis_values = _axis_values(study, df)
    if "variant" in axes:
        # the explicit variant's name: the row's own name when there is no matrix (drop the duplicate),
        # the group a matrix cell belongs to otherwise
        axes = [a for a in axes if a != "variant"]
        if axes:
            axes.insert(0, "variant_group")
            for values in axis_values.values():
                if "variant" in values:
                    values["variant_group"] = values["variant"]
    students = main[(main["role"] == "student") & (main["nfe"] == nfe)] if not main.empty and nfe is not None \
        else main.iloc[0:0]
    several_seeds = any(f"{m}_std" in main.columns for m in metrics)
    columns = ["variant", *axes, "nfe", "seeds", "n"]
    for metric in metrics:
        columns += [metric] + ([f"{metric}_std"] if several_seeds else []) + [f"{metric}{CI_LOW}", f"{metric}{CI_HIGH}"]
    # K changes the teacher's cost per step (Fig. 5e): show it when it differs between variants.
    if not students.empty and students["teacher_nfe_per_step"].dropna().nunique() > 1:
        columns.append("teacher_nfe_per_step")
    records = []
    for _, row in students.iterrows():
        rec = {col: row[col] for col in columns if col in row.index}
        for axis in axes:
            rec[axis] = _scalar(axis_values.get(row["variant"], {}).get(axis))
        records.append(rec)
    table = pd.DataFrame(records, columns=columns) if records else pd.DataFrame(columns=columns)
    for col in ("nfe", "seeds", "n"):
        table[col] = pd.array(table[col], dtype="Int64")
    return table


def _norm(text: Any) -> str:
    return re.sub(r"[^a-z0-9]", "", str(text).lower())


def _reference_target(ref: dict, students: list[str]) -> tuple[str, str | None]:
    """(role, variant) of this run's rows that a row of the paper's table corresponds to; role "" = none."""
    explicit = ref.get("variant")
    if isinstance(explicit, str) and explicit:
        if explicit == "none":
            return "", None
        return ("teacher", "teacher") if explicit == "teacher" else ("student", explicit)
    method = _norm(ref.get("method", ""))
    if not method:
        return "", None
    if method.startswith("teacher"):
        return "teacher", "teacher"
    for name in students:  # "flash" ~ "Flash SD1.5"; "sdxl-turbo" ~ "Turbo"; "lcm-lora" ~ "LCM-LoRA" but not "LCM"
        n = _norm(name)
        if n and (n == method or method.startswith(n) or n.endswith(method)):
            return "student", name
    return "", None


def _measured_metric(metric: str, measured: dict[str, bool | None]) -> str | None:
    for candidate in METRIC_ALIASES.get(metric, (metric,)):
        if candidate in measured:
            return candidate
    return None


def paper_directions(study: dict, df) -> dict[str, bool | None]:
    """Directions of the paper table's metric columns (``paper.<m>`` and ``this_run.<m>``)."""
    measured = metric_directions(df)
    out: dict[str, bool | None] = {}
    for metric in _reference_metrics(study):
        mine = _measured_metric(metric, measured)
        d = measured.get(mine) if mine else None
        out[PAPER + metric] = d if d is not None else KNOWN_DIRECTIONS.get(metric)
        if mine:
            out[THIS_RUN + mine] = d if d is not None else KNOWN_DIRECTIONS.get(mine)
    return out


def _references(study: dict) -> list[dict]:
    refs = (study.get("paper") or {}).get("reference")
    return [r for r in refs if isinstance(r, dict)] if isinstance(refs, list) else []


def _reference_metrics(study: dict) -> list[str]:
    """The numeric keys of the paper's rows (besides ``nfe``), in order of first appearance."""
    keys = []
    for ref in _references(study):
        for k, v in ref.items():
            if k not in ("method", "nfe", "variant") and isinstance(v, (int, float)) and not isinstance(v, bool):
                keys.append(k)
    return _unique_in_order(keys)


def paper_table(study: dict, df):
    """The paper's table beside this run: one row per row of ``paper.reference`` with the measured
    mean (± std) of the row it corresponds to (same role, variant and NFE), then this run's rows that
    the paper does not have. Columns: method, nfe, ``paper.<m>``, ``this_run.<m>`` (and ``_std``),
    role, variant (this run's row). Empty when the study has no reference values."""
    import pandas as pd

    refs = _references(study)
    metrics = _reference_metrics(study)
    main = main_table(study, df)
    measured = metric_directions(df)
    pairs = [(m, _measured_metric(m, measured)) for m in metrics]
    several_seeds = any(c.endswith("_std") for c in main.columns)
    columns = ["method", "nfe"]
    for metric, mine in pairs:
        columns.append(PAPER + metric)
        if mine and THIS_RUN + mine not in columns:
            columns += [THIS_RUN + mine] + ([THIS_RUN + mine + "_std"] if several_seeds else []) \
                + [THIS_RUN + mine + CI_LOW, THIS_RUN + mine + CI_HIGH]
    columns += ["role", "variant"]
    if not refs:
        return pd.DataFrame(columns=columns)
    students = _unique_in_order(main.loc[main["role"] != "teacher", "variant"].tolist()) if not main.empty else []
    used: set[int] = set()

    def measured_row(role: str, variant: str | None, nfe) -> int | None:
        if main.empty or not role or _isnan(nfe):
            return None
        hit = main[(main["role"] == role) & (main["nfe"] == int(nfe)) & (main["variant"] == variant)]
        return int(hit.index[0]) if len(hit) else None

    records = []
    for ref in refs:
        role, variant = _reference_target(ref, students)
        idx = measured_row(role, variant, ref.get("nfe"))
        # the role decides which rows compete for "best" (never the teacher's), measured or not
        rec: dict[str, Any] = {"method": str(ref.get("method", "")), "nfe": ref.get("nfe"), "role": role or "paper only",
                               "variant": variant if idx is not None else None}
        for metric, mine in pairs:
            rec[PAPER + metric] = ref.get(metric)
            if mine:
                for suffix in ("", *(("_std",) if several_seeds else ()), CI_LOW, CI_HIGH):
                    col = mine + suffix
                    rec[THIS_RUN + col] = main.at[idx, col] if idx is not None and col in main else math.nan
        if idx is not None:
            used.add(idx)
        records.append(rec)
    for idx, row in (main.iterrows() if not main.empty else iter(())):
        if idx in used:
            continue
        rec = {"method": "(not in the paper)", "nfe": row["nfe"], "role": row["role"], "variant": row["variant"]}
        for metric, mine in pairs:
            rec[PAPER + metric] = math.nan
            if mine:
                for suffix in ("", *(("_std",) if several_seeds else ()), CI_LOW, CI_HIGH):
                    rec[THIS_RUN + mine + suffix] = row.get(mine + suffix, math.nan)
        records.append(rec)
    table = pd.DataFrame(records, columns=columns)
    table["nfe"] = pd.array(pd.to_numeric(table["nfe"], errors="coerce").round(), dtype="Int64")
    return table


# --------------------------------------------------------------------------------------------
# Claims
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClaimResult:
    text: str
    metric: str
    better: str | None
    variant: str
    than: str  # the baseline actually compared with ("teacher" may resolve to "teacher-fewstep")
    nfe: int | None
    than_nfe: int | None
    value: float | None
    other: float | None
    difference: Difference | None  # variant - than, with its 95% interval
    verdict: str  # "reproduced" | "contradicted" | "inconclusive" | "not measured"
    sentence: str

    @property
    def seeds(self) -> int:
        return self.difference.seeds if self.difference else 0


TEACHER, TEACHER_FEWSTEP = "teacher", "teacher-fewstep"


def _claim_side(ok, name: str, metric: str, nfe: int | None, replicates) -> dict[int, tuple[float, Any]]:
    """Per seed: (value, bootstrap replicates or None) of ``name`` at ``nfe`` (a student of that name
    first; teacher names are teacher rows)."""
    if ok.empty or nfe is None:
        return {}
    sub = ok[(ok["variant"] == name) & (ok["metric"] == metric) & (ok["nfe"] == nfe)]
    if (sub["role"] == "student").any():
        sub = sub[sub["role"] == "student"]
    out: dict[int, tuple[float, Any]] = {}
    for seed, rows in sub.groupby(sub["seed"].fillna(-1), sort=True):
        row = rows.iloc[-1]
        out[int(seed)] = (float(row["value"]), replicates(row.get("bootstrap_file")) if "bootstrap_file" in row else None)
    return out


def _side_mean(side: dict) -> float:
    return float(sum(v for v, _ in side.values()) / len(side)) if side else math.nan


def _baseline(ok, than: str, metric: str, nfe: int | None, better: str | None, replicates) -> tuple[str, dict]:
    """The baseline side of a claim. ``than = "teacher"`` at an NFE where the teacher was also sampled the
    student's way is the *stronger* of the two teacher baselines (its own sampler with CFG, or the
    student's sampler without), by the mean over seeds."""
    side = _claim_side(ok, than, metric, nfe, replicates)
    if than != TEACHER:
        return than, side
    other = _claim_side(ok, TEACHER_FEWSTEP, metric, nfe, replicates)
    if other and (not side or (better in ("lower", "higher")
                                and (_side_mean(other) < _side_mean(side)) == (better == "lower")
                                and _side_mean(other) != _side_mean(side))):
        return TEACHER_FEWSTEP, other
    return than, side


ONE_SEED_NOTE = ("One seed: the interval covers the sampling noise of the evaluated samples only, not training "
                 "noise (seed to seed), which on the toy world is larger; run several seeds to include it.")


def evaluate_claims(study: dict, df, store: ResultStore | None = None) -> list[ClaimResult]:
    """Verdicts on the paper's claims: ``variant`` minus ``than`` on the claim's metric at the claim's NFE
    (default: the study's primary NFE, the paper's protocol), with the 95% interval of that *paired*
    difference (:func:`flashbench.stats.paired_difference`); *reproduced* / *contradicted* /
    *inconclusive* by where the interval lies (:func:`flashbench.stats.verdict`). ``store`` gives the
    rows' bootstrap replicates; without it (or for rows written before intervals) a one-seed verdict is
    inconclusive and says why."""
    ok = _ok_rows(df)
    primary = _primary_nfe(study, ok)
    directions = metric_directions(df)
    load = store.load_replicates if store is not None else (lambda _: None)
    out = []
    scale = str(study.get("scale") or "")
    for claim in (study.get("paper") or {}).get("claims") or []:
        if scale and isinstance(claim.get("scales"), list) and scale not in claim["scales"]:
            continue  # stated for another scale (e.g. in terms of the paper's guidance values)
        variant, than = str(claim.get("variant", "")), str(claim.get("than", ""))
        # the paper's metric, or what stands for it in this run (FID -> the toy world's fd)
        metric = _measured_metric(str(claim.get("metric", "")), directions) or str(claim.get("metric", ""))
        nfe = int(claim["nfe"]) if claim.get("nfe") is not None else primary
        than_nfe = int(claim["than_nfe"]) if claim.get("than_nfe") is not None else nfe
        better = claim.get("better")
        if better not in ("lower", "higher") and directions.get(metric) is not None:
            better = "higher" if directions[metric] else "lower"
        a = _claim_side(ok, variant, metric, nfe, load)
        than_used, b = _baseline(ok, than, metric, than_nfe, better, load)
        text = str(claim.get("text", f"{variant} beats {than} on {metric}"))
        at = f"at {nfe} NFE" if nfe is not None else "(no primary NFE)"
        at_than = at if than_nfe == nfe else f"at {than_nfe} NFE"
        common = sorted(set(a) & set(b))
        if not common or better not in ("lower", "higher"):
            missing = [name for name, side in ((variant, a), (than, b)) if not side]
            why = (f"no {metric} result for {' and '.join(missing)} {at}" if missing
                   else f"no seed in common between {variant} and {than}" if not common
                   else f"the direction of {metric} is unknown")
            out.append(ClaimResult(text, metric, better, variant, than_used, nfe, than_nfe,
                                   _side_mean(a) if a else None, _side_mean(b) if b else None, None,
                                   NOT_MEASURED, f"Not measured: {why}."))
            continue
        per_seed = {s_: (a[s_][0], b[s_][0], a[s_][1], b[s_][1]) for s_ in common}
        diff = paired_difference(per_seed)
        result = verdict(diff, better)
        va, vb = _side_mean({s_: a[s_] for s_ in common}), _side_mean({s_: b[s_] for s_ in common})
        d = _decimals(diff.value) if diff.value else 3
        interval = (f"[{_fmt(diff.low, d)}, {_fmt(diff.high, d)}]" if diff.has_interval else "no interval")
        baseline = than_used if than_used == than else f"{than} ({than_used}: the stronger teacher baseline)"
        sentence = (f"{result.capitalize()}: {metric} {_fmt(va)} for {variant} {at} vs {_fmt(vb)} for {baseline} {at_than}"
                    f"{' (mean over ' + str(len(common)) + ' seeds)' if len(common) > 1 else ''}; "
                    f"difference {_fmt(diff.value, d)}, 95% interval {interval} ({diff.method}); {better} is better.")
        if not diff.has_interval:
            sentence += " Without an interval the data cannot decide (rows written before intervals were recorded)."
        elif len(common) == 1:
            sentence += " " + ONE_SEED_NOTE
        out.append(ClaimResult(text, metric, better, variant, than_used, nfe, than_nfe, va, vb, diff, result, sentence))
    return out


def measured_effects(study: dict, df, store: ResultStore | None = None) -> list[dict]:
    """``[[paper.effects]]`` (``variant``, ``than``, optional ``metrics`` and ``nfe``): what a choice changes,
    with no direction to judge (e.g. where the paper and the authors' code differ). Per metric, the paired
    difference ``variant - than`` and its 95% interval, as for a claim, and whether the interval excludes 0."""
    ok = _ok_rows(df)
    primary = _primary_nfe(study, ok)
    directions = metric_directions(df)
    load = store.load_replicates if store is not None else (lambda _: None)
    out = []
    for effect in (study.get("paper") or {}).get("effects") or []:
        if not isinstance(effect, dict):
            continue
        variant, than = str(effect.get("variant", "")), str(effect.get("than", ""))
        nfe = int(effect["nfe"]) if effect.get("nfe") is not None else primary
        wanted = effect.get("metrics") or list(directions)
        for name in wanted:
            metric = _measured_metric(str(name), directions) or str(name)
            a, b = _claim_side(ok, variant, metric, nfe, load), _claim_side(ok, than, metric, nfe, load)
            common = sorted(set(a) & set(b))
            diff = paired_difference({s_: (a[s_][0], b[s_][0], a[s_][1], b[s_][1]) for s_ in common}) if common else None
            resolved = diff is not None and diff.has_interval and (diff.low > 0 or diff.high < 0)
            out.append({"text": str(effect.get("text", f"{variant} vs {than}")), "variant": variant, "than": than, "metric": metric,
                        "nfe": nfe, "higher_is_better": directions.get(metric), "difference": diff,
                        "verdict": "not measured" if diff is None else "resolved" if resolved else "within noise"})
    return out


def _effects_table(effects: list[dict]):
    import pandas as pd

    rows = []
    for e in effects:
        d = e["difference"]
        digits = _decimals(d.value) if d is not None and d.value else 3
        rows.append({"effect": e["text"], "metric": e["metric"], "nfe": e["nfe"],
                     "difference": DASH if d is None else _fmt(d.value, digits),
                     "95% interval": DASH if d is None or not d.has_interval else f"[{_fmt(d.low, digits)}, {_fmt(d.high, digits)}]",
                     "seeds": 0 if d is None else d.seeds, "the data": e["verdict"]})
    return pd.DataFrame(rows, columns=["effect", "metric", "nfe", "difference", "95% interval", "seeds", "the data"])


# --------------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------------
def _isnan(x: Any) -> bool:
    """Missing: None, NaN, pandas' NA/NaT (scalars only)."""
    if x is None:
        return True
    import pandas as pd

    try:
        return bool(pd.api.types.is_scalar(x) and pd.isna(x))
    except (TypeError, ValueError):
        return False


def _decimals(x: float) -> int:
    ax = abs(x)
    return 3 if ax < 1 else 2 if ax < 100 else 1


def _fmt(x: Any, decimals: int | None = None) -> str:
    """A number for people: integers as such, floats with 3/2/1 decimals below 1/100/above."""
    if _isnan(x):
        return DASH
    if isinstance(x, (bool, str)):
        return str(x)
    if isinstance(x, numbers.Integral) and decimals is None:
        return f"{int(x):d}"
    try:
        x = float(x)
    except (TypeError, ValueError):
        return str(x)
    return f"{x:.{_decimals(x) if decimals is None else decimals}f}"


def _fmt_pm(mean: float, std: float) -> str:
    if _isnan(std):
        return _fmt(mean)
    d = _decimals(mean)
    return f"{_fmt(mean, d)} ± {_fmt(std, d)}"


def _fmt_ci(mean: float, std: float, low: float, high: float) -> str:
    """"45.47 [43.90, 47.21]" (one seed), "45.5 ± 2.1 [40.3, 50.7]" (several); without an interval the
    value alone (or with its std)."""
    text = _fmt_pm(mean, std)
    if _isnan(low) or _isnan(high):
        return text
    d = _decimals(mean)
    return f"{text} [{_fmt(low, d)}, {_fmt(high, d)}]"


def _fmt_params(x: Any) -> str:
    if _isnan(x):
        return DASH
    x = float(x)
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.1f}{unit}"
    return f"{x:.0f}"


def _fmt_int(x: Any) -> str:
    if _isnan(x):
        return DASH
    try:
        return f"{int(float(x)):d}"
    except (TypeError, ValueError):
        return str(x)


def _header(col: str, directions: dict[str, bool | None]) -> str:
    """``fd ↓``; ``fid ↓ (paper)`` / ``fd ↓ (this run)`` in the paper table; readable cost names."""
    base, suffix = col, ""
    if col.startswith(PAPER):
        base, suffix = col[len(PAPER):], " (paper)"
    elif col.startswith(THIS_RUN):
        base, suffix = col[len(THIS_RUN):], " (this run)"
    d = directions.get(col)
    arrow = "" if d is None else f" {UP if d else DOWN}"
    return f"{PRETTY.get(base, base)}{arrow}{suffix}"


def _base_column(col: str) -> str:
    for prefix in (PAPER, THIS_RUN):
        if col.startswith(prefix):
            return col[len(prefix):]
    return col


def _display_table(table, directions: dict[str, bool | None]) -> tuple[list[str], list[list[str]], list[str]]:
    """Headers, formatted cells and the source column of each shown column (std and the 95% interval
    folded into the mean as "mean ± std [low, high]")."""
    shown = [c for c in table.columns if _metric_part(c, directions) is None]
    headers = [_header(c, directions) for c in shown]
    rows = []
    for _, rec in table.iterrows():
        cells = []
        for col in shown:
            v = rec[col]
            base = _base_column(col)
            if col in directions:
                std = rec.get(f"{col}_std", math.nan)
                lo, hi = rec.get(f"{col}{CI_LOW}", math.nan), rec.get(f"{col}{CI_HIGH}", math.nan)
                cells.append(_fmt_ci(v, std, lo, hi) if not _isnan(v) else DASH)
            elif base == "trainable_params":
                cells.append(_fmt_params(v))
            elif base in COUNT_COLUMNS:
                cells.append(_fmt_int(v) if not _isnan(v) and float(v).is_integer() else _fmt(v))
            elif base == "seconds_per_step":
                cells.append(DASH if _isnan(v) else f"{float(v):.3g}")
            elif base == "train_hours":
                cells.append(DASH if _isnan(v) else f"{float(v):.2g}")
            else:
                cells.append(DASH if _isnan(v) else str(_scalar(v)))
        rows.append(cells)
    return headers, rows, shown


def _metric_part(col: str, directions) -> str | None:
    """For ``fd_std`` / ``fd_ci_low`` / ``fd_ci_high`` of a metric column ``fd``: the metric; else None."""
    for suffix in ("_std", CI_LOW, CI_HIGH):
        if col.endswith(suffix) and col[: -len(suffix)] in directions:
            return col[: -len(suffix)]
    return None


def _best_cells(table, shown: list[str], directions: dict[str, bool | None]) -> set[tuple[int, int]]:
    """(row, column) positions of the best value of each metric column among the rows that are not
    the teacher's (ties all bold)."""
    best = set()
    if table.empty:
        return best
    competes = (table["role"] != "teacher").tolist() if "role" in table else [True] * len(table)
    for j, col in enumerate(shown):
        if directions.get(col) is None:
            continue
        values = [(i, float(v)) for i, (v, c) in enumerate(zip(table[col], competes)) if c and not _isnan(v)]
        if not values:
            continue
        target = (max if directions[col] else min)(v for _, v in values)
        best |= {(i, j) for i, v in values if v == target}
    return best


def _is_numeric_column(col: str, directions) -> bool:
    return col in directions or _base_column(col) in (*COUNT_COLUMNS, *TABLE_COST_COLUMNS)


def _html_table(table, directions, caption: str = "") -> dict:
    headers, rows, shown = _display_table(table, directions)
    best = _best_cells(table, shown, directions)
    numeric = [_is_numeric_column(c, directions) for c in shown]
    roles = table["role"].tolist() if "role" in table else [""] * len(rows)
    return {
        "caption": caption,
        "headers": [{"text": h, "numeric": num, "paper": c.startswith(PAPER)} for h, num, c in zip(headers, numeric, shown)],
        "rows": [
            {"role": re.sub(r"[^a-z-]", "-", str(roles[i])) if not _isnan(roles[i]) else "",
             "cells": [{"text": t, "best": (i, j) in best, "numeric": numeric[j], "paper": shown[j].startswith(PAPER)}
                       for j, t in enumerate(cells)]}
            for i, cells in enumerate(rows)
        ],
    }


def _markdown(table, directions) -> str:
    import pandas as pd

    headers, rows, shown = _display_table(table, directions)
    if not rows:
        return "(no results)\n"
    best = _best_cells(table, shown, directions)
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731 - a pipe would split the cell
    cells = [[f"**{esc(c)}**" if (i, j) in best else esc(c) for j, c in enumerate(r)] for i, r in enumerate(rows)]
    disp = pd.DataFrame(cells, columns=[esc(h) for h in headers])
    align = ["right" if _is_numeric_column(c, directions) else "left" for c in shown]
    return disp.to_markdown(index=False, colalign=align, disable_numparse=True) + "\n"


_TEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_TEX_SYMBOLS = {UP: r"$\uparrow$", DOWN: r"$\downarrow$", "±": r"$\pm$", DASH: "--", "ω": r"$\omega$"}


def _tex(text: str) -> str:
    out = "".join(_TEX_SPECIALS.get(ch, ch) for ch in str(text))
    for sym, tex in _TEX_SYMBOLS.items():
        out = out.replace(sym, tex)
    return out


def _latex(table, directions) -> str:
    """A ``booktabs`` tabular (needs ``\\usepackage{booktabs}``): numbers right-aligned, best in bold."""
    headers, rows, shown = _display_table(table, directions)
    best = _best_cells(table, shown, directions)
    spec = "".join("r" if _is_numeric_column(c, directions) else "l" for c in shown) or "l"
    lines = ["% flashbench table; needs \\usepackage{booktabs}", f"\\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(_tex(h) for h in headers) + r" \\", r"\midrule"]
    for i, r in enumerate(rows):
        lines.append(" & ".join(rf"\textbf{{{_tex(c)}}}" if (i, j) in best else _tex(c) for j, c in enumerate(r)) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def _data_uri(text: str, mime: str) -> str:
    return f"data:{mime};charset=utf-8;base64,{base64.b64encode(text.encode('utf-8')).decode('ascii')}"


# --------------------------------------------------------------------------------------------
# Plots (inline SVG, built here so every label is escaped by hand)
# --------------------------------------------------------------------------------------------
def _e(s: Any) -> str:
    return html.escape(str(s), quote=True)


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round tick values covering [lo, hi] (the first and last enclose the data)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0, 1.0]
    if hi <= lo:
        pad = abs(hi) * 0.05 or 1.0
        lo, hi = lo - pad, hi + pad
    raw = (hi - lo) / max(1, n - 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step + 1e-9) * step
    ticks = []
    v = start
    while v < hi + step * 0.999 and len(ticks) < 50:
        ticks.append(round(v, 12))
        v += step
    if ticks[-1] < hi:
        ticks.append(round(ticks[-1] + step, 12))
    return ticks


def _tick_label(v: float, ticks: list[float]) -> str:
    step = abs(ticks[1] - ticks[0]) if len(ticks) > 1 else 1.0
    decimals = max(0, -math.floor(math.log10(step) + 1e-9)) if step < 1 else (1 if step % 1 else 0)
    return f"{v:.{decimals}f}"


def _direction_text(higher: bool | None) -> str:
    return "" if higher is None else (f" {UP} higher is better" if higher else f" {DOWN} lower is better")


def _svg_bars(metric: str, higher: bool | None, points: list[tuple[str, float, float, float]],
              reference: tuple[str, float] | None) -> str:
    """Horizontal bars, one per ``(label, mean, low, high)``, whiskers over the 95% interval [low, high]
    (NaN: none), the best bar highlighted, an optional reference line (the teacher at the same NFE).

    Bars start at zero unless every value sits in a band narrower than 30% of its magnitude (CLIP scores
    of 0.90-0.92): then the axis starts near the smallest value, and the title says so, or every bar would
    look the same."""
    label_w, plot_w, value_w, row_h, top, bottom = 210, 360, 170, 24, 44, 34
    width, height = label_w + plot_w + value_w, top + row_h * len(points) + bottom
    lows = [m if _isnan(lo) else min(m, lo) for _, m, lo, _ in points]
    highs = [m if _isnan(hi) else max(m, hi) for _, m, _, hi in points]
    if reference is not None:
        lows.append(reference[1])
        highs.append(reference[1])
    d_lo, d_hi = min(lows), max(highs)
    narrow = (d_lo > 0 and d_hi - d_lo < 0.3 * d_hi) or (d_hi < 0 and d_hi - d_lo < 0.3 * -d_lo)
    if narrow:
        pad = (d_hi - d_lo) * 0.15 or abs(d_hi) * 0.02
        ticks = _ticks(d_lo - pad, d_hi + pad)
    else:
        ticks = _ticks(min(0.0, d_lo), max(0.0, d_hi))
    lo, hi = ticks[0], ticks[-1]
    x = lambda v: label_w + (v - lo) / (hi - lo) * plot_w  # noqa: E731
    best = (max if higher else min)(p[1] for p in points) if higher is not None and points else None
    note = f" (axis from {_tick_label(lo, ticks)}, not zero)" if narrow and lo > 0 else ""
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{_e(metric)} per variant" class="chart bars">',
        f'<text x="4" y="16" class="t">{_e(metric)}<tspan class="v">{_e(_direction_text(higher))}{_e(note)}</tspan></text>',
    ]
    for t in ticks:
        tx = x(t)
        parts.append(f'<line x1="{tx:.1f}" y1="{top - 8}" x2="{tx:.1f}" y2="{height - bottom + 2}" class="grid"/>')
        parts.append(f'<text x="{tx:.1f}" y="{height - bottom + 16}" text-anchor="middle" class="v">{_e(_tick_label(t, ticks))}</text>')
    zero = x(min(max(0.0, lo), hi))  # bars grow from zero, or from the axis' edge when it excludes zero
    for i, (label, mean, low, high) in enumerate(points):
        shown = _fmt_ci(mean, math.nan, low, high)
        y = top + row_h * i
        cy = y + row_h / 2
        short = label if len(label) <= 30 else label[:29] + "…"
        parts.append(f'<text x="{label_w - 8}" y="{cy + 4:.1f}" text-anchor="end"><title>{_e(label)}</title>{_e(short)}</text>')
        x0, x1 = sorted((zero, x(mean)))
        cls = "bar best" if best is not None and mean == best else "bar"
        parts.append(f'<rect x="{x0:.1f}" y="{y + 5:.1f}" width="{max(x1 - x0, 1):.1f}" height="{row_h - 10}" class="{cls}">'
                     f'<title>{_e(label)}: {_e(shown)}</title></rect>')
        if not (_isnan(low) or _isnan(high)):
            a, b = x(low), x(high)
            parts.append(f'<path d="M{a:.1f},{cy - 4:.1f}v8M{a:.1f},{cy:.1f}H{b:.1f}M{b:.1f},{cy - 4:.1f}v8" class="err"/>')
        parts.append(f'<text x="{label_w + plot_w + 8}" y="{cy + 4:.1f}" class="v{" bestv" if cls.endswith("best") else ""}">'
                     f'{_e(shown)}</text>')
    parts.append(f'<line x1="{zero:.1f}" y1="{top - 4}" x2="{zero:.1f}" y2="{height - bottom + 2}" class="ax"/>')
    if reference is not None:
        rx = x(reference[1])
        parts.append(f'<line x1="{rx:.1f}" y1="{top - 8}" x2="{rx:.1f}" y2="{height - bottom + 2}" class="ref"/>')
        parts.append(f'<text x="{min(rx, label_w + plot_w):.1f}" y="{top - 12}" text-anchor="{"start" if rx < label_w + 90 else "end"}" class="refl">'
                     f'{_e(reference[0])}: {_e(_fmt(reference[1]))}</text>')
    parts.append("</svg>")
    return "".join(parts)


class _LabelPlacer:
    """Puts point labels where they overlap neither the markers nor the labels placed before them (the
    first of a few candidate positions that is free; the first candidate when none is)."""

    CANDIDATES = ((8, -8, "start"), (8, 15, "start"), (-8, -8, "end"), (-8, 15, "end"), (0, -13, "middle"), (0, 22, "middle"))

    def __init__(self, markers: list[tuple[float, float]], char_w: float = 6.0, height: float = 11.0):
        self.boxes = [(x - 6, y - 6, x + 6, y + 6) for x, y in markers]
        self.char_w, self.height = char_w, height

    def place(self, x: float, y: float, text: str) -> tuple[float, float, str]:
        width = self.char_w * len(text)
        chosen = None
        for dx, dy, anchor in self.CANDIDATES:
            left = x + dx - (width if anchor == "end" else width / 2 if anchor == "middle" else 0)
            box = (left, y + dy - self.height + 2, left + width, y + dy + 2)
            if not any(box[0] < b[2] and b[0] < box[2] and box[1] < b[3] and b[1] < box[3] for b in self.boxes):
                chosen = (x + dx, y + dy, anchor, box)
                break
        if chosen is None:
            dx, dy, anchor = self.CANDIDATES[0]
            chosen = (x + dx, y + dy, anchor, (x + dx, y + dy - self.height, x + dx + width, y + dy))
        self.boxes.append(chosen[3])
        return chosen[0], chosen[1], chosen[2]


def _svg_tradeoff(x_metric: str, x_higher: bool | None, y_metric: str, y_higher: bool | None,
                  fixed: list[tuple[str, float, float, float, float, float, float]],
                  sampled: list[tuple[str, float, float, float, float, float, float]],
                  teacher: tuple[str, float, float] | None) -> str:
    """Figure 5(d): y (FID) against x (CLIP) for each fixed guidance (a curve in order of omega), the
    sampled-range variants as marked points, the teacher as a grey square. Points:
    (label, x, x_low, x_high, y, y_low, y_high), whiskers over the 95% intervals."""
    left, right, top, bottom = 64, 200, 40, 50
    plot_w, plot_h = 420, 280
    width, height = left + plot_w + right, top + plot_h + bottom
    pts = fixed + sampled
    xs = [v for p in pts for v in p[1:4] if not _isnan(v)] + ([teacher[1]] if teacher else [])
    ys = [v for p in pts for v in p[4:7] if not _isnan(v)] + ([teacher[2]] if teacher else [])
    xt, yt = _ticks(min(xs), max(xs)), _ticks(min(ys), max(ys))
    X = lambda v: left + (v - xt[0]) / (xt[-1] - xt[0]) * plot_w  # noqa: E731
    Y = lambda v: top + plot_h - (v - yt[0]) / (yt[-1] - yt[0]) * plot_h  # noqa: E731
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{_e(y_metric)} against {_e(x_metric)}" class="chart tradeoff">',
        f'<text x="4" y="16" class="t">{_e(y_metric)} against {_e(x_metric)}, one point per guidance setting</text>',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" class="frame"/>',
    ]
    for t in xt:
        parts.append(f'<line x1="{X(t):.1f}" y1="{top}" x2="{X(t):.1f}" y2="{top + plot_h}" class="grid"/>')
        parts.append(f'<text x="{X(t):.1f}" y="{top + plot_h + 16}" text-anchor="middle" class="v">{_e(_tick_label(t, xt))}</text>')
    for t in yt:
        parts.append(f'<line x1="{left}" y1="{Y(t):.1f}" x2="{left + plot_w}" y2="{Y(t):.1f}" class="grid"/>')
        parts.append(f'<text x="{left - 6}" y="{Y(t) + 4:.1f}" text-anchor="end" class="v">{_e(_tick_label(t, yt))}</text>')
    parts.append(f'<text x="{left + plot_w / 2:.0f}" y="{height - 10}" text-anchor="middle">{_e(x_metric)}{_e(_direction_text(x_higher))}</text>')
    parts.append(f'<text transform="translate(14 {top + plot_h / 2:.0f}) rotate(-90)" text-anchor="middle">'
                 f'{_e(y_metric)}{_e(_direction_text(y_higher))}</text>')

    def whiskers(px, xlo, xhi, py, ylo, yhi):
        out = []
        if not (_isnan(xlo) or _isnan(xhi)):
            out.append(f'<line x1="{X(xlo):.1f}" y1="{Y(py):.1f}" x2="{X(xhi):.1f}" y2="{Y(py):.1f}" class="err"/>')
        if not (_isnan(ylo) or _isnan(yhi)):
            out.append(f'<line x1="{X(px):.1f}" y1="{Y(ylo):.1f}" x2="{X(px):.1f}" y2="{Y(yhi):.1f}" class="err"/>')
        return out

    if len(fixed) > 1:
        path = " ".join(f"{X(p[1]):.1f},{Y(p[4]):.1f}" for p in fixed)
        parts.append(f'<polyline points="{path}" class="curve"/>')
    markers = [(X(p[1]), Y(p[4])) for p in pts] + ([(X(teacher[1]), Y(teacher[2]))] if teacher else [])
    placer = _LabelPlacer(markers)
    labels = []  # the sampled range's label is placed first: it is the point the figure is about
    for label, px, xlo, xhi, py, ylo, yhi in sampled:
        parts += whiskers(px, xlo, xhi, py, ylo, yhi)
        cx, cy = X(px), Y(py)
        parts.append(f'<path d="M{cx:.1f},{cy - 8:.1f}L{cx + 8:.1f},{cy:.1f}L{cx:.1f},{cy + 8:.1f}L{cx - 8:.1f},{cy:.1f}Z" '
                     f'class="sampled"><title>{_e(label)}: {_e(x_metric)} {_e(_fmt_ci(px, math.nan, xlo, xhi))}, {_e(y_metric)} '
                     f'{_e(_fmt_ci(py, math.nan, ylo, yhi))}</title></path>')
        labels.append((*placer.place(cx, cy, label), "pl sl", label))
    for label, px, xlo, xhi, py, ylo, yhi in fixed:
        parts += whiskers(px, xlo, xhi, py, ylo, yhi)
        parts.append(f'<circle cx="{X(px):.1f}" cy="{Y(py):.1f}" r="5" class="dot"><title>{_e(label)}: {_e(x_metric)} '
                     f'{_e(_fmt_ci(px, math.nan, xlo, xhi))}, {_e(y_metric)} {_e(_fmt_ci(py, math.nan, ylo, yhi))}</title></circle>')
        labels.append((*placer.place(X(px), Y(py), label), "pl", label))
    if teacher is not None:
        label, tx, ty = teacher
        parts.append(f'<rect x="{X(tx) - 5:.1f}" y="{Y(ty) - 5:.1f}" width="10" height="10" class="teacher">'
                     f'<title>{_e(label)}: {_e(x_metric)} {_e(_fmt(tx))}, {_e(y_metric)} {_e(_fmt(ty))}</title></rect>')
        labels.append((*placer.place(X(tx), Y(ty), label), "pl v", label))
    for lx_, ly_, anchor, cls, label in labels:
        parts.append(f'<text x="{lx_:.1f}" y="{ly_:.1f}" text-anchor="{anchor}" class="{cls}">{_e(label)}</text>')
    lx, ly = left + plot_w + 14, top + 8
    parts.append(f'<circle cx="{lx + 5}" cy="{ly}" r="5" class="dot"/><text x="{lx + 16}" y="{ly + 4}" class="v">fixed ω (line: ω rising)</text>')
    parts.append(f'<path d="M{lx + 5},{ly + 14}l7,7l-7,7l-7,-7Z" class="sampled"/><text x="{lx + 16}" y="{ly + 25}" class="v">ω sampled from its range</text>')
    if teacher is not None:
        parts.append(f'<rect x="{lx}" y="{ly + 37}" width="10" height="10" class="teacher"/><text x="{lx + 16}" y="{ly + 46}" class="v">teacher, same NFE</text>')
    parts.append("</svg>")
    return "".join(parts)


def _variant_train(study: dict) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for v in study.get("variants", []):
        if isinstance(v, dict) and isinstance(v.get("train"), dict):
            out.setdefault(str(v.get("name")), v["train"])
    return out


def _guidance_label(value: Any, train: dict | None) -> tuple[str, bool]:
    """("ω = 5", False) for a fixed guidance; ("ω ~ U[3, 13]", True) for the sampled range (value 0)."""
    try:
        g = float(value)
    except (TypeError, ValueError):
        return str(value), False
    if g > 0:
        return f"ω = {g:g}", False
    lo, hi = (train or {}).get("guidance_min"), (train or {}).get("guidance_max")
    if lo is None or hi is None:
        return "ω sampled", True
    return f"ω ~ U[{float(lo):g}, {float(hi):g}]", True


def _tradeoff_metrics(directions: dict[str, bool | None]) -> tuple[str, str] | None:
    """(CLIP-like x, FID-like y): clip_score and fid/fd by name, else the first higher- and lower-is-better metric."""
    lower = [m for m, d in directions.items() if d is False]
    higher = [m for m, d in directions.items() if d is True]
    y = next((m for m in ("fid", "fd") if m in lower), lower[0] if lower else None)
    x = next((m for m in ("clip_score",) if m in higher), higher[0] if higher else None)
    return (x, y) if x and y else None


def _figure_plots(study: dict, panel, main, directions, nfe) -> list[dict]:
    """The panel as plots: for a guidance axis the FID-vs-CLIP curve, then bars per metric."""
    from markupsafe import Markup

    plots: list[dict] = []
    if panel.empty:
        return plots
    # the reference line: the teacher with its own sampler and CFG at the same NFE
    teacher = main[(main["role"] == "teacher") & (main["variant"] == TEACHER) & (main["nfe"] == nfe)] \
        if not main.empty and nfe is not None else main.iloc[0:0]
    trains = _variant_train(study)

    def cell(row, metric) -> tuple[float, float, float]:
        """(mean, low, high): the 95% interval, NaN where the row has none."""
        lo, hi = row.get(f"{metric}{CI_LOW}", math.nan), row.get(f"{metric}{CI_HIGH}", math.nan)
        return float(row[metric]), (math.nan if _isnan(lo) else float(lo)), (math.nan if _isnan(hi) else float(hi))

    pair = _tradeoff_metrics(directions)
    if GUIDANCE_AXIS in panel.columns and pair and all(m in panel for m in pair):
        xm, ym = pair
        fixed, sampled = [], []
        for _, r in panel.iterrows():
            if _isnan(r[xm]) or _isnan(r[ym]):
                continue
            label, is_sampled = _guidance_label(r[GUIDANCE_AXIS], trains.get(str(r["variant"])))
            point = (label, *cell(r, xm), *cell(r, ym))
            try:
                order = float(r[GUIDANCE_AXIS])
            except (TypeError, ValueError):
                order = math.inf
            (sampled if is_sampled else fixed).append((order, point))
        fixed_pts = [p for _, p in sorted(fixed, key=lambda t: t[0])]
        sampled_pts = [p for _, p in sampled]
        tpoint = None
        if not teacher.empty and not _isnan(teacher[xm].iloc[0]) and not _isnan(teacher[ym].iloc[0]):
            tpoint = (f"teacher, {nfe} NFE", float(teacher[xm].iloc[0]), float(teacher[ym].iloc[0]))
        if fixed_pts or sampled_pts:
            plots.append({
                "title": f"{ym} against {xm} at {nfe} NFE",
                "caption": "As Figure 5(d) of the paper: each fixed guidance scale ω is a point on the curve (in order "
                           "of ω); the marked point samples ω uniformly from its range during training, as Flash does.",
                "svg": Markup(_svg_tradeoff(xm, directions.get(xm), ym, directions.get(ym), fixed_pts, sampled_pts, tpoint)),
            })
    if len(panel) < 2:
        return plots
    for metric, higher in directions.items():
        if metric not in panel:
            continue
        points = []
        for _, r in panel.iterrows():
            if _isnan(r[metric]):
                continue
            label = str(r["variant"])
            if GUIDANCE_AXIS in panel.columns:
                label = _guidance_label(r[GUIDANCE_AXIS], trains.get(label))[0]
            points.append((label, *cell(r, metric)))
        if not points:
            continue
        reference = None
        if not teacher.empty and metric in teacher and not _isnan(teacher[metric].iloc[0]):
            reference = (f"teacher {nfe} NFE", float(teacher[metric].iloc[0]))
        plots.append({
            "title": f"{metric} at {nfe} NFE",
            "caption": "",
            # Built from escaped pieces only (see _svg_bars), so it is safe to mark as markup.
            "svg": Markup(_svg_bars(metric, higher, points, reference)),
        })
    if "teacher_nfe_per_step" in panel and panel["teacher_nfe_per_step"].notna().any():
        # the panel varies the teacher's cost per training step (K, Fig. 5e): plot it as well
        points = [(str(r["variant"]), float(r["teacher_nfe_per_step"]), math.nan, math.nan) for _, r in panel.iterrows()
                  if not _isnan(r["teacher_nfe_per_step"])]
        plots.append({"title": "teacher NFE per training step", "caption": "",
                      "svg": Markup(_svg_bars(PRETTY["teacher_nfe_per_step"], None, points, None))})
    return plots


# --------------------------------------------------------------------------------------------
# Failures, sample grids, provenance
# --------------------------------------------------------------------------------------------
def _failures(study: dict, df, store: ResultStore) -> tuple[list[dict], list[dict]]:
    failed = []
    if not df.empty:
        bad = df[df["status"].fillna("ok") != "ok"]
        for key, sub in bad.groupby("variant_key", sort=False):
            reasons = _unique_in_order(sub["reason"].tolist()) if "reason" in sub else []
            first = sub.iloc[0]
            failed.append({
                "key": str(key), "variant": str(first["variant"]), "seed": _fmt_int(first["seed"]),
                "role": str(first["role"]),
                "metrics": ", ".join(str(m) for m in _unique_in_order(sub["metric"].tolist())) or DASH,
                "reason": "; ".join(str(r) for r in reasons) or "no reason recorded",
            })
    unfinished = []
    for v in study.get("variants", []):
        key = v.get("key") if isinstance(v, dict) else None
        if not key:
            continue
        try:
            done = store.is_done(str(key))
        except ValueError:
            done = False
        if not done:
            unfinished.append({"key": str(key), "variant": str(v.get("name", key)), "seed": _fmt_int(v.get("seed"))})
    return failed, unfinished


STUDENT_GRID = re.compile(r"grid_nfe(\d+)\Z")
TEACHER_GRID = re.compile(r"grid_steps(\d+)_nfe(\d+)\Z")


def _natural_key(path: Path) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.stem)]


class _Images:
    """Grid images as data URIs (each file read once) with their optional JSON sidecar."""

    def __init__(self):
        self._cache: dict[Path, dict] = {}
        self.used: set[Path] = set()

    def get(self, png: Path) -> dict:
        self.used.add(png)
        if png not in self._cache:
            meta: dict = {}
            side = png.with_suffix(".json")
            if side.is_file():
                try:
                    loaded = json.loads(side.read_text(encoding="utf-8"))
                    meta = loaded if isinstance(loaded, dict) else {}
                except (OSError, ValueError):
                    meta = {}
            prompts = meta.get("prompts") if isinstance(meta.get("prompts"), list) else []
            self._cache[png] = {
                "name": png.stem,
                "uri": "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii"),
                "caption": str(meta.get("caption", "")),
                "prompts": [str(p) for p in prompts],
            }
        return self._cache[png]


def _variant_labels(study: dict, df) -> dict[str, tuple[str, Any]]:
    labels: dict[str, tuple[str, Any]] = {}
    for v in study.get("variants", []):
        if isinstance(v, dict) and v.get("key"):
            labels[str(v["key"])] = (str(v.get("name", v["key"])), v.get("seed"))
    if not df.empty:
        for key, variant, seed in zip(df["variant_key"], df["variant"], df["seed"]):
            labels.setdefault(str(key), (str(variant), seed))
    return labels


def _sample_comparisons(study: dict, df, run_dir: Path, primary_nfe: int | None, images: _Images) -> list[dict]:
    """Per seed and student NFE: the teacher at many steps, the teacher at the student's NFE, then every
    variant's student; all rows of a seed share prompts and initial noise, column by column."""
    root = run_dir / VARIANTS_DIR
    if not root.is_dir():
        return []
    labels = _variant_labels(study, df)
    order = {str(v["key"]): i for i, v in enumerate(study.get("variants", [])) if isinstance(v, dict) and v.get("key")}
    seeds: dict[Any, dict] = {}
    for d in sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: (order.get(p.name, len(order)), p.name)):
        teacher_seed = re.fullmatch(r"teacher-s(-?\d+)", d.name)
        for png in sorted(d.glob("*.png"), key=_natural_key):
            if teacher_seed:
                m = TEACHER_GRID.match(png.stem)
                if m:
                    entry = seeds.setdefault(int(teacher_seed.group(1)), {"teacher": {}, "students": []})
                    entry["teacher"][int(m.group(1))] = png
            else:
                m = STUDENT_GRID.match(png.stem)
                if m and d.name in labels:
                    name, seed = labels[d.name]
                    if _isnan(seed):
                        continue
                    entry = seeds.setdefault(int(float(seed)), {"teacher": {}, "students": []})
                    entry["students"].append((name, int(m.group(1)), png, (d / DONE_FILE).is_file()))
    # the many-step teacher: the largest teacher_steps a variant of that seed asked for
    asked: dict[int, int] = {}
    for v in study.get("variants", []):
        if isinstance(v, dict) and isinstance(v.get("eval"), dict) and v["eval"].get("teacher_steps"):
            try:
                seed = int(v.get("seed"))
                asked[seed] = max(asked.get(seed, 0), max(int(s) for s in v["eval"]["teacher_steps"]))
            except (TypeError, ValueError):
                continue
    out = []
    for seed in sorted(seeds):
        entry = seeds[seed]
        teacher = entry["teacher"]
        many = asked.get(seed) if asked.get(seed) in teacher else (max(teacher) if teacher else None)
        nfes = sorted({n for _, n, _, _ in entry["students"]})
        if primary_nfe in nfes:
            nfes.remove(primary_nfe)
            nfes.insert(0, primary_nfe)
        sections = []
        for nfe in nfes:
            rows = []
            if many is not None:
                rows.append({"label": "teacher", "note": f"{many} steps ({2 * many} NFE with CFG): the reference",
                             "kind": "teacher", **images.get(teacher[many])})
            same = nfe // 2 if nfe % 2 == 0 and nfe // 2 in teacher else None
            if same is not None and same != many:
                rows.append({"label": "teacher", "note": f"{same} step{'s' * (same != 1)} ({nfe} NFE): the student's NFE",
                             "kind": "teacher", **images.get(teacher[same])})
            if nfe in teacher and nfe != many:  # CFG doubles the teacher's NFE: also show it at the student's steps
                rows.append({"label": "teacher", "note": f"{nfe} step{'s' * (nfe != 1)} ({2 * nfe} NFE): the student's steps",
                             "kind": "teacher", **images.get(teacher[nfe])})
            for name, n, png, done in entry["students"]:
                if n == nfe:
                    rows.append({"label": name, "note": f"student, {nfe} NFE" + ("" if done else " (unfinished)"),
                                 "kind": "student", **images.get(png)})
            sections.append({"nfe": nfe, "open": nfe == nfes[0], "rows": rows})
        if sections:
            out.append({"seed": seed, "sections": sections})
    return out


def _other_grids(study: dict, df, run_dir: Path, images: _Images) -> list[dict]:
    """Grid images the comparisons do not show (other teacher step counts, files of other names)."""
    root = run_dir / VARIANTS_DIR
    if not root.is_dir():
        return []
    labels = _variant_labels(study, df)
    study_keys = [str(v["key"]) for v in study.get("variants", []) if isinstance(v, dict) and v.get("key")]
    rank = {k: i for i, k in enumerate(study_keys)}
    dirs = sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: (0 if p.name.startswith("teacher") else 1, rank.get(p.name, len(rank)), p.name))
    out = []
    for d in dirs:
        pngs = [p for p in sorted(d.glob("*.png"), key=_natural_key) if p not in images.used]
        if not pngs:
            continue
        name, seed = labels.get(d.name, (d.name, None))
        out.append({"key": d.name, "variant": name, "seed": _fmt_int(seed) if not _isnan(seed) else "",
                    "done": (d / DONE_FILE).is_file(), "images": [images.get(p) for p in pngs]})
    return out


def _compute_hours(df) -> str:
    """Hardware time the stored rows cost: training once per variant, sampling once per (variant, NFE)."""
    if df.empty:
        return DASH
    train = 0.0
    if "train_seconds" in df:
        train = float(df.drop_duplicates("variant_key")["train_seconds"].fillna(0).sum())
    sample = 0.0
    if "sample_seconds" in df:
        sample = float(df.drop_duplicates(["variant_key", "nfe"])["sample_seconds"].fillna(0).sum())
    return f"{(train + sample) / 3600:.3g} h ({train / 3600:.3g} h training, {sample / 3600:.3g} h sampling)"


def _provenance_view(provenance: dict, study: dict, df) -> dict:
    packages = provenance.get("packages") or {}
    gpus = provenance.get("gpus")
    if gpus:
        gpu = ", ".join(f"{g.get('name', '?')} ({g.get('memory_gib', '?')} GiB)" if isinstance(g, dict) else str(g)
                        for g in gpus)
    else:
        gpu = "none" if gpus == [] else "not recorded"
    row_hashes = _unique_in_order(df["git_hash"].tolist()) if not df.empty and "git_hash" in df else []
    n_values = _unique_in_order(df["n"].tolist()) if not df.empty else []
    seeds = study.get("seeds")
    if seeds is None and not df.empty:
        seeds = _unique_in_order(df["seed"].tolist())
    # The global batch: processes x the per-process batch_size, beside the one the recipe states.
    processes, global_batch = provenance.get("processes"), provenance.get("global_batch")
    if isinstance(processes, int) and processes > 0 and isinstance(global_batch, list) and global_batch \
            and all(isinstance(g, int) for g in global_batch):
        per_process = ", ".join(str(g // processes) for g in global_batch)
        batch = f"{', '.join(map(str, global_batch))} ({processes} process{'es' * (processes != 1)} x {per_process})"
    else:  # a run from before the global batch was recorded, or one where no variant trained
        batch = "not recorded" if global_batch is None else DASH
    trains = [v.get("train") for v in study.get("variants") or () if isinstance(v, dict)]
    stated = sorted({t.get("global_batch") for t in trains if isinstance(t, dict) and isinstance(t.get("global_batch"), int)} - {0})
    if stated:
        batch += f"; the recipe states {', '.join(map(str, stated))}"
    return {
        "items": [
            ("git commit", str(provenance.get("git_hash", "unknown"))),
            ("scale", str(provenance.get("scale", study.get("scale", "unknown")))),
            ("seeds", ", ".join(str(s) for s in (seeds or [])) or DASH),
            ("global batch", batch),
            ("samples per evaluation (n)", ", ".join(_fmt_int(n) for n in sorted(n_values)) or DASH),
            ("python", str(provenance.get("python", "unknown"))),
            ("platform", str(provenance.get("platform", "unknown"))),
            ("CPU", f"{provenance.get('cpu', 'unknown')} ({provenance.get('cpu_count', '?')} cores)"),
            ("GPU", gpu),
            ("CUDA", str(provenance.get("cuda") or DASH)),
            ("host", str(provenance.get("hostname", "unknown"))),
            ("run started (UTC)", str(provenance.get("timestamp", "unknown"))),
            ("compute (training + sampling)", _compute_hours(df)),
        ],
        "packages": [(str(k), str(v) if v else "not installed") for k, v in packages.items()],
        # Rows from several commits: a resumed run crossed a code change; say so.
        "row_hashes": [str(h) for h in row_hashes] if len(row_hashes) > 1 else [],
    }


# --------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------
def _environment():
    from jinja2 import Environment, PackageLoader, StrictUndefined

    return Environment(loader=PackageLoader("flashbench", "templates"), autoescape=True,
                       undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def _claims_summary(claims: list[ClaimResult]) -> dict[str, int]:
    """How many claims got each verdict: reproduced, contradicted, inconclusive, not measured."""
    return {v.replace(" ", "_"): sum(c.verdict == v for c in claims) for v in (REPRODUCED, CONTRADICTED, INCONCLUSIVE, NOT_MEASURED)}


def _summary_text(counts: dict[str, int], total: int) -> str:
    """"2 reproduced, 1 contradicted, 3 inconclusive of 6" (zero counts left out)."""
    parts = [f"{n} {k.replace('_', ' ')}" for k, n in counts.items() if n]
    return f"{', '.join(parts)} of {total}" if total else DASH


def _uncertainty_notes(ok, study: dict, seeds: list[int]) -> list[str]:
    """What a reader must know to weigh the numbers: one seed or several, rows without intervals, a
    Fréchet distance at a sample count where it is biased, the two teacher baselines."""
    notes = []
    if len(seeds) <= 1:
        notes.append("One seed: each interval is a bootstrap over the evaluated samples and covers sampling noise only, "
                     "not the seed-to-seed spread of training.")
    else:
        notes.append(f"{len(seeds)} seeds: each interval is a t-interval over the per-seed values, so the seed-to-seed "
                     "spread of training and the sampling noise are both in it.")
    if not ok.empty and ("ci_low" not in ok or ok["ci_low"].isna().any()):
        missing = int(ok["ci_low"].isna().sum()) if "ci_low" in ok else len(ok)
        notes.append(f"{missing} of {len(ok)} result rows carry no interval (written before intervals were recorded, "
                     "or by an evaluator without a bootstrap); a verdict resting on them is inconclusive.")
    if not ok.empty:
        fd = ok[ok["metric"].isin(FRECHET_METRICS)]
        n = pd_numeric(fd["n"]).dropna() if not fd.empty else []
        if len(n) and float(n.min()) < FD_UNBIASED_N:
            notes.append(f"Fréchet distances ({', '.join(sorted(set(fd['metric'])))}) here use {int(n.min()):,} samples, fewer "
                         f"than {FD_UNBIASED_N:,}: at that n they are biased upwards (the bias shrinks roughly as 1/n), so compare "
                         "them only at equal n; KID, where shown, is unbiased.")
    if not ok.empty and (ok["variant"] == TEACHER_FEWSTEP).any():
        notes.append(f"Two teacher baselines at each student NFE: \"{TEACHER}\" is the teacher's own sampler with CFG "
                     f"(2 NFE a step), \"{TEACHER_FEWSTEP}\" the teacher through the student's few-step sampler without CFG. "
                     "A claim against the teacher is judged against the stronger of the two.")
    return notes


def _departures(study: dict) -> list[str]:
    """The study's stated departures from the paper's protocol at the run's scale (``[paper.departures]``,
    one list per scale), and the circular measurements the run itself holds: a variant distilled with the
    toy LPIPS loss, measured by toy-lpips / toy-fd on the same network."""
    scale = str(study.get("scale") or "")
    stated = ((study.get("paper") or {}).get("departures") or {})
    out = [str(x) for x in stated.get(scale, [])] if isinstance(stated, dict) and isinstance(stated.get(scale), list) else []
    circular = []
    for v in study.get("variants", []):
        train, ev = (v.get("train") or {}), (v.get("eval") or {})
        loss = train.get("distil_loss") or {}
        loss = loss if isinstance(loss, dict) else {"name": loss}  # a component without options is stored by name
        evaluators = {e.get("name") if isinstance(e, dict) else e for e in ev.get("evaluators", [])}
        net = loss.get("net", (loss.get("options") or {}).get("net", "auto"))
        if loss.get("name") == "lpips" and "toy-lpips" in evaluators and net in ("auto", "toy-digits") \
                and v.get("name") not in circular:
            circular.append(str(v.get("name")))
    if circular:
        out.append(f"circular: {', '.join(circular)} distil with the toy LPIPS loss, whose network also computes toy-lpips and "
                   "toy-fd; their lpips_to_teacher (and fd) measure the quantity they were trained on")
    return out


# Where the paper and the authors' code differ (docs/studies.md): training field -> component -> option ->
# (default when the study leaves it out, {value: what it means}). The defaults mirror the plugins' configs.
PAPER_OR_CODE = {
    "timesteps": {"flash": {"spread": ("paper", {"paper": "the paper's Eq. 7 spread, exp(-d^2)", "code": "the authors' code's spread, exp(-2 d^2)"})},
                  "gaussian": {"std": (0, {0: "the authors' width 1/sqrt(2K) (the paper gives none)"})}},
    "adv_loss": {"lsgan": {"scores": ("raw", {"raw": "LSGAN on raw scores with the 1/2 (Eq. 8)", "sigmoid": "LSGAN on sigmoid scores (the authors' code)"}),
                           "head": ("paper", {"paper": "the paper's discriminator head", "code": "the authors' small discriminator head"})},
                 "hinge": {"head": ("paper", {"paper": "the paper's discriminator head", "code": "the authors' small discriminator head"})},
                 "wgan": {"clip": (0.01, {0.01: "WGAN critic clipped to +-0.01 (Arjovsky et al., the authors' code)", 0: "WGAN without a Lipschitz constraint"}),
                          "head": ("paper", {"paper": "the paper's discriminator head", "code": "the authors' small discriminator head"})}},
    "distil_loss": {"lpips": {"crop": (64, {64: "LPIPS distillation on the centre 64x64-latent crop (the authors' code)", 0: "LPIPS distillation on the full image"})}},
}


def _method_choices(study: dict) -> list[str]:
    """Which side ran wherever the paper and the authors' code differ, with the variants it applies to when
    not all of them (e.g. "pi: the paper's Eq. 7 spread, exp(-d^2)")."""
    seen: dict[str, list[str]] = {}
    variants = [v for v in study.get("variants", []) if isinstance(v, dict)]
    for v in variants:
        train = v.get("train") or {}
        lines = []
        for field, components in PAPER_OR_CODE.items():
            spec = train.get(field)
            spec = spec if isinstance(spec, dict) else {"name": spec}
            for option, (default, meanings) in components.get(spec.get("name"), {}).items():
                value = spec.get(option, default)
                label = meanings.get(value, f"{spec.get('name')} {option} = {value}")
                lines.append(f"{field} {spec.get('name')}: {label}")
        if train.get("lcm_boundary"):
            lines.append("the authors' LCM boundary condition on the student (lcm_boundary = true)")
        if train.get("draws") == "per_batch":
            lines.append("one start index and one omega per batch, DMD its own omega (the authors' code; draws = per_batch)")
        if train.get("phase_counting") == "optimizer_calls":
            lines.append("the authors' phase counter, two optimizer calls per batch (phase_counting = optimizer_calls)")
        for line in lines:
            names = seen.setdefault(line, [])
            if v.get("name") not in names:
                names.append(str(v.get("name")))
    all_names = _unique_in_order(str(v.get("name")) for v in variants)
    return [line if len(names) == len(all_names) else f"{line} ({', '.join(names)})" for line, names in seen.items()]


def pd_numeric(series):
    import pandas as pd

    return pd.to_numeric(series, errors="coerce")


def _markdown_report(context: dict, tables: dict[str, tuple[Any, dict]]) -> str:
    """The report without images, as Markdown."""
    lines = [f"# {context['title']}", ""]
    sub = []
    if context["reproduces"]:
        sub.append(f"Reproduces {context['reproduces']}.")
    sub.append(f"Study `{context['name']}`" + (f", scale `{context['scale']}`" if context["scale"] else "")
               + (f", primary NFE {context['primary_nfe']}" if context["primary_nfe"] is not None else "") + ".")
    lines += [" ".join(sub), ""]
    if context["direction"]:
        lines += ["**The paper:** " + context["direction"], ""]
    if context["claims"]:
        lines.append("**This run:**")
        lines += [f"- **{c.verdict}**: {c.text}. {c.sentence}" for c in context["claims"]]
        lines += ["", f"Claims: {context['claims_summary_text']}.", ""]
    for note in context.get("uncertainty_notes", []):
        lines += [f"> {note}", ""]
    if context.get("method_choices"):
        lines += ["**Where the paper and the authors' code differ, this run used:**"]
        lines += [f"- {c}" for c in context["method_choices"]] + [""]
    if context.get("departures"):
        lines += [f"**Departures from the paper's protocol (scale {context['scale']}):**"]
        lines += [f"- {d}" for d in context["departures"]] + [""]
    for name, heading in (("paper", "The paper's numbers beside this run's"), ("effects", "Measured effects (variant - baseline, paired, 95% interval)"),
                          ("main", "Results"), ("panel", "Panel")):
        if name in tables:
            table, directions = tables[name]
            lines += [f"## {heading}", "", _markdown(table, directions).rstrip(), ""]
    lines += [f"Compute: {context['compute']}. Generated by flashbench from stored results only.", ""]
    return "\n".join(lines)


def render_report(run_dir: Path | str) -> Path:
    """Write the tables under ``RUN_DIR/tables``, ``RUN_DIR/report.md`` and ``RUN_DIR/report.html``;
    return the HTML report's path."""
    run_dir = Path(run_dir)
    if not (run_dir / STUDY_FILE).is_file():
        raise UserError(f"{run_dir}: not a flashbench run directory (no {STUDY_FILE})")
    store = ResultStore(run_dir)
    study = store.read_study()
    provenance = store.read_provenance() if (run_dir / PROVENANCE_FILE).is_file() else {}
    df = store.dataframe()
    directions = metric_directions(df)
    ok = _ok_rows(df)
    nfe = _primary_nfe(study, ok)

    main = main_table(study, df)
    panel = panel_table(study, df)
    tables: dict[str, tuple[Any, dict]] = {"main": (main, directions), "panel": (panel, directions)}
    if _references(study):
        tables = {"paper": (paper_table(study, df), paper_directions(study, df)), **tables}
    name = str(study.get("name") or run_dir.name)
    tables_dir = run_dir / "tables"
    exports: dict[str, list[dict]] = {}
    for key, (table, dirs) in tables.items():
        texts = {"csv": table.to_csv(index=False), "md": _markdown(table, dirs), "tex": _latex(table, dirs)}
        exports[key] = []
        for ext, text in texts.items():
            atomic_write_text(tables_dir / f"{key}.{ext}", text)
            mime = {"csv": "text/csv", "md": "text/markdown", "tex": "application/x-tex"}[ext]
            label = {"csv": "CSV", "md": "Markdown", "tex": "LaTeX (booktabs)"}[ext]
            exports[key].append({"label": label, "file": f"{name}-{key}.{ext}", "uri": _data_uri(text, mime)})

    claims = evaluate_claims(study, df, store)
    effects = measured_effects(study, df, store)
    if effects:
        tables["effects"] = (_effects_table(effects), {})
        texts = {"csv": tables["effects"][0].to_csv(index=False), "md": _markdown(tables["effects"][0], {}),
                 "tex": _latex(tables["effects"][0], {})}
        exports["effects"] = []
        for ext, text in texts.items():
            atomic_write_text(tables_dir / f"effects.{ext}", text)
            exports["effects"].append({"label": ext.upper(), "file": f"{name}-effects.{ext}",
                                       "uri": _data_uri(text, {"csv": "text/csv", "md": "text/markdown", "tex": "application/x-tex"}[ext])})
    failed, unfinished = _failures(study, df, store)
    paper = study.get("paper") or {}
    several_seeds = any(c.endswith("_std") for c in main.columns)
    images = _Images()
    samples = _sample_comparisons(study, df, run_dir, nfe, images)
    keys = [str(v.get("key")) for v in study.get("variants", []) if isinstance(v, dict) and v.get("key")]
    done = sum(1 for k in keys if not any(u["key"] == k for u in unfinished))
    counts = _claims_summary(claims)
    seeds_ran = sorted({int(x) for x in ok["seed"].dropna()}) if not ok.empty else []
    context = {
        "title": str(study.get("title") or study.get("name") or run_dir.name),
        "name": str(study.get("name", "")),
        "reproduces": str(study.get("reproduces") or ""),
        "panel_name": str(study.get("panel") or ""),
        "scale": str(study.get("scale") or provenance.get("scale") or ""),
        "primary_nfe": nfe,
        "direction": str(paper.get("direction") or ""),
        "claims": claims,
        "effects": _html_table(tables["effects"][0], {}) if effects else None,
        "claims_summary": counts,
        "claims_summary_text": _summary_text(counts, len(claims)),
        "uncertainty_notes": _uncertainty_notes(ok, study, seeds_ran),
        "departures": _departures(study),
        "method_choices": _method_choices(study),
        "paper_table": _html_table(*tables["paper"]) if "paper" in tables else None,
        "main": _html_table(main, directions),
        "panel": _html_table(panel, directions),
        "exports": exports,
        "seeds_note": ("mean ± sample standard deviation over seeds [95% t-interval over the seeds]" if several_seeds
                       else "one seed per variant: value [95% bootstrap interval over the samples]"),
        "plots": _figure_plots(study, panel, main, directions, nfe),
        "failed": failed,
        "unfinished": unfinished,
        "skipped_lines": store.skipped_lines,
        "samples": samples,
        "grids": _other_grids(study, df, run_dir, images),
        "provenance": _provenance_view(provenance, study, df),
        "compute": _compute_hours(df),
        "study_json": json.dumps(study, indent=2, ensure_ascii=False, sort_keys=False),
        "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    context["meta"] = {
        "study": context["name"], "title": context["title"], "reproduces": context["reproduces"],
        "scale": context["scale"], "claims_reproduced": str(counts["reproduced"]),
        "claims_contradicted": str(counts["contradicted"]), "claims_inconclusive": str(counts["inconclusive"]),
        "claims_not_measured": str(counts["not_measured"]), "claims_total": str(len(claims)),
        "variants_done": str(done), "variants_total": str(len(keys)), "seeds": str(len(seeds_ran)),
        "seed_list": ", ".join(str(s) for s in seeds_ran),
        "compute": context["compute"], "generated": context["generated"], "git_hash": str(provenance.get("git_hash", "")),
        "direction": context["direction"],
        "claims_json": json.dumps([{"verdict": c.verdict, "text": c.text} for c in claims], ensure_ascii=False),
    }
    atomic_write_text(run_dir / "report.md", _markdown_report(context, tables))
    html_text = _environment().get_template("report.html.j2").render(**context)
    out = run_dir / "report.html"
    atomic_write_text(out, html_text)
    return out


# --------------------------------------------------------------------------------------------
# The index over many reports, and publishing runs into a reports folder
# --------------------------------------------------------------------------------------------
_META_RE = re.compile(r'<meta name="flashbench:([a-z_]+)" content="([^"]*)">')


def read_report_meta(path: Path | str) -> dict[str, str] | None:
    """The ``flashbench:*`` metadata of a report written by :func:`render_report`; None for other files."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            head = f.read(16384)  # the metadata is in <head>
    except OSError:
        return None
    meta = {k: html.unescape(v) for k, v in _META_RE.findall(head.split("</head>", 1)[0])}
    return meta if "study" in meta else None


def _reproduces_key(text: str) -> list:
    """Natural order: Figure 5a .. 5f, then Table 1 .. 4 (figures first as in the paper's ablations)."""
    t = text.lower()
    group = 0 if t.startswith("fig") else 1 if t.startswith("table") else 2
    return [group] + [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", t)]


def render_index(directory: Path | str) -> Path:
    """Write ``DIRECTORY/index.html``: one row per report found in the folder or one level below it
    (published ``<run>.html`` files and run folders' ``report.html``), with what it reproduces, its
    scale, variants finished, claims reproduced and compute; returns its path."""
    directory = Path(directory)
    if not directory.is_dir():
        raise UserError(f"{directory}: no such directory")
    entries = []
    for path in sorted([*directory.glob("*.html"), *directory.glob("*/*.html")]):
        if path.name == INDEX_FILE and path.parent == directory:
            continue
        meta = read_report_meta(path)
        if meta is None:
            continue
        try:
            claims = [c for c in json.loads(meta.get("claims_json") or "[]") if isinstance(c, dict)]
        except ValueError:
            claims = []
        total = int(meta.get("claims_total") or 0)
        reproduced = int(meta.get("claims_reproduced") or 0)
        contradicted = int(meta.get("claims_contradicted") or 0)
        if "claims_contradicted" in meta:
            inconclusive = int(meta.get("claims_inconclusive") or 0)
            label = f"{reproduced} / {contradicted} / {inconclusive} of {total}"
        else:  # a report rendered before three-way verdicts: its counts cannot be split
            label = f"{reproduced} of {total} (sign only, re-render)"
        if "seed_list" not in meta and meta.get("seeds"):  # rendered before the count: "seeds" held the list
            meta["seeds"] = str(len([x for x in meta["seeds"].split(",") if x.strip()]))
        entries.append({
            **meta,
            "href": path.relative_to(directory).as_posix(),
            "claims": label if total else DASH,
            "claims_class": "none" if not total else "zero" if contradicted else "all" if reproduced == total else "some",
            "variants": f"{meta.get('variants_done', '?')} of {meta.get('variants_total', '?')}",
            "claim_list": [{"verdict": str(c.get("verdict", "")), "text": str(c.get("text", ""))} for c in claims],
        })
    entries.sort(key=lambda e: (_reproduces_key(e.get("reproduces", "")), e.get("study", ""), e.get("scale", ""), e["href"]))
    text = _environment().get_template("index.html.j2").render(
        entries=entries, directory=directory.name or str(directory),
        generated=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    out = directory / INDEX_FILE
    atomic_write_text(out, text)
    return out


def publish_reports(run_dirs: Sequence[Path | str], dest: Path | str) -> list[Path]:
    """Re-render each run's report from its stored results, copy it into ``dest`` as
    ``<run folder name>.html`` (self-contained) with ``<run folder name>.md`` beside it, and rewrite
    ``dest/index.html``; returns the copied HTML files."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for run_dir in map(Path, run_dirs):
        render_report(run_dir)
        target = dest / f"{run_dir.resolve().name}.html"
        shutil.copyfile(run_dir / "report.html", target)
        shutil.copyfile(run_dir / "report.md", target.with_suffix(".md"))
        out.append(target)
    render_index(dest)
    return out


def summary_markdown(run_dirs: Sequence[Path | str]) -> str:
    """One Markdown table over several runs (for a README): per study, the teacher and every variant at
    the study's primary NFE with its metrics (mean ± std), and how many of the paper's claims it reproduces."""
    import pandas as pd

    records, metric_dirs = [], {}
    for run_dir in map(Path, run_dirs):
        store = ResultStore(run_dir)
        study = store.read_study()
        df = store.dataframe()
        directions = metric_directions(df)
        metric_dirs.update({m: d for m, d in directions.items() if m not in metric_dirs})
        main = main_table(study, df)
        nfe = _primary_nfe(study, _ok_rows(df))
        claims = evaluate_claims(study, df, store)
        label = str(study.get("reproduces") or study.get("name"))
        outcome = _summary_text(_claims_summary(claims), len(claims))
        rows = main[main["nfe"] == nfe] if not main.empty and nfe is not None else main.iloc[0:0]
        for i, (_, r) in enumerate(rows.iterrows()):
            rec = {"study": label if i == 0 else "", "claims": outcome if i == 0 else "",
                   "row": str(r["variant"]), "NFE": r["nfe"]}
            for m in directions:
                for suffix in ("", "_std", CI_LOW, CI_HIGH):
                    if f"{m}{suffix}" in r:
                        rec[f"{m}{suffix}"] = r[f"{m}{suffix}"]
            rec["s/step"] = r.get("seconds_per_step", math.nan)
            rec["teacher NFE/step"] = r.get("teacher_nfe_per_step", math.nan)
            records.append(rec)
    if not records:
        return "(no results)\n"
    table = pd.DataFrame(records)
    cols = ["study", "claims", "row", "NFE", *[c for c in table.columns if c in metric_dirs or _metric_part(c, metric_dirs)],
            "s/step", "teacher NFE/step"]
    table = table[[c for c in cols if c in table.columns]]
    headers, rows, _ = _display_table(table, metric_dirs)
    rows = [[DASH if c in ("nan", "<NA>") else c for c in row] for row in rows]
    rows = [[f"{float(c):.3g}" if h in ("s/step", "teacher NFE/step") and c != DASH else c for h, c in zip(headers, row)]
            for row in rows]
    esc = lambda x: str(x).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(esc(h) for h in headers) + " |",
             "| " + " | ".join("---:" if h not in ("study", "claims", "row") else "---" for h in headers) + " |"]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m flashbench.report``: re-render reports, publish them into a folder, write its index."""
    parser = argparse.ArgumentParser(
        prog="python -m flashbench.report",
        description="Render study reports from stored results (nothing is recomputed).",
        epilog="examples:\n"
               "  python -m flashbench.report runs/ablation_losses-toy                  # re-render one run\n"
               "  python -m flashbench.report runs/*-toy --publish reports/example      # copy reports + write the index\n"
               "  python -m flashbench.report --index reports/example                   # only the index",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dirs", nargs="*", type=Path, metavar="RUN_DIR", help="folders written by `flashbench run`")
    parser.add_argument("--publish", type=Path, metavar="DIR", help="copy each report into DIR and rewrite DIR/index.html")
    parser.add_argument("--index", type=Path, metavar="DIR", help="write DIR/index.html over the reports in DIR")
    parser.add_argument("--summary", action="store_true", help="print one Markdown table over the runs (primary NFE) and stop")
    args = parser.parse_args(argv)
    if not args.run_dirs and not args.index:
        parser.error("give RUN_DIR(s), --index DIR, or both")
    try:
        if args.summary:
            print(summary_markdown(args.run_dirs), end="")
            return 0
        if args.publish:
            for path in publish_reports(args.run_dirs, args.publish):
                print(f"report: {path}")
            print(f"index: {args.publish / INDEX_FILE}")
        else:
            for run_dir in args.run_dirs:
                print(f"report: {render_report(run_dir)}")
        if args.index:
            print(f"index: {render_index(args.index)}")
    except UserError as e:
        print(f"flashbench: error: {e}", file=sys.stderr)
        return 2
    return 0


__all__ = [
    "render_report", "render_index", "publish_reports", "read_report_meta", "summary_markdown", "main_table", "panel_table",
    "paper_table", "evaluate_claims", "ClaimResult", "metric_directions",
]

if __name__ == "__main__":
    sys.exit(main())
