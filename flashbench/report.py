"""Tables and the HTML report of one study run, built from stored results only (never recomputed).

``render_report(run_dir)`` reads ``study.json``, ``provenance.json`` and the rows of complete
variants (see ``flashbench.results`` for the row schema) and writes:

- ``tables/main.{csv,md,tex}``: one row per (role, variant, NFE); per metric the mean over seeds
  and, with several seeds, the sample standard deviation (ddof=1); cost columns; samples ``n``.
  Teacher baselines first (NFE descending), then students in the study's variant order.
- ``tables/panel.{csv,md,tex}``: the students at the study's ``primary_nfe``, one row per variant,
  with its axis values and metrics: the figure panel the study reproduces.
- ``report.html``: one self-contained file (inline CSS and SVG, images as data URIs, no scripts):
  what the study reproduces, the paper's direction beside this run's verdicts on the paper's
  claims, both tables, the panel as plots, failed and unfinished variants, sample grids,
  provenance.

Optional study keys the report understands: ``paper.direction`` (text), ``paper.claims`` (list of
``{text, metric, better: "lower"|"higher", variant, than}``), ``paper.reference`` (list of flat
dicts, e.g. ``{"method": "Flash", "nfe": 4, "fd": 22.5}``, shown as the paper's values).
Optional runner files: ``variants/<key>/<stem>.json`` beside a grid ``<stem>.png`` with
``{"prompts": [...], "caption": "..."}`` is shown under that grid.
"""
from __future__ import annotations

import base64
import html
import json
import math
import numbers
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .errors import UserError
from .results import (
    AXIS_PREFIX,
    DONE_FILE,
    PROVENANCE_FILE,
    STUDY_FILE,
    VARIANTS_DIR,
    ResultStore,
    atomic_write_text,
)

TABLE_COST_COLUMNS = ("trainable_params", "seconds_per_step", "teacher_nfe_per_step", "student_nfe_per_step")
UP, DOWN = "↑", "↓"
DASH = "–"


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
                rec[metric], rec[f"{metric}_std"] = _mean_std(_per_seed(sub[sub["metric"] == metric]))
            for col in TABLE_COST_COLUMNS:
                rec[col] = _mean_std(_per_seed(sub, col))[0] if col in sub else math.nan
            records.append(rec)
    columns = ["role", "variant", "nfe", "steps", "seeds", "n"]
    for metric in metrics:
        columns += [metric] + ([f"{metric}_std"] if several_seeds else [])
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
        columns += [metric] + ([f"{metric}_std"] if several_seeds else [])
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


# --------------------------------------------------------------------------------------------
# Claims
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClaimResult:
    text: str
    metric: str
    better: str | None
    variant: str
    than: str
    nfe: int | None
    value: float | None
    value_std: float | None
    other: float | None
    other_std: float | None
    verdict: str  # "reproduced" | "not reproduced" | "not measured"
    sentence: str


def _claim_cell(ok, name: str, metric: str, nfe: int | None) -> tuple[float, float] | None:
    if ok.empty or nfe is None:
        return None
    sub = ok[(ok["variant"] == name) & (ok["metric"] == metric) & (ok["nfe"] == nfe)]
    if (sub["role"] == "student").any():
        sub = sub[sub["role"] == "student"]
    values = _per_seed(sub)
    if not len(values):
        return None
    return _mean_std(values)


def evaluate_claims(study: dict, df) -> list[ClaimResult]:
    """Verdicts on the paper's claims: the metric mean of ``variant`` against ``than`` at primary_nfe."""
    ok = _ok_rows(df)
    nfe = _primary_nfe(study, ok)
    directions = metric_directions(df)
    out = []
    for claim in (study.get("paper") or {}).get("claims") or []:
        metric, variant, than = str(claim.get("metric", "")), str(claim.get("variant", "")), str(claim.get("than", ""))
        better = claim.get("better")
        if better not in ("lower", "higher") and directions.get(metric) is not None:
            better = "higher" if directions[metric] else "lower"
        a, b = _claim_cell(ok, variant, metric, nfe), _claim_cell(ok, than, metric, nfe)
        text = str(claim.get("text", f"{variant} beats {than} on {metric}"))
        at = f"at {nfe} NFE" if nfe is not None else "(no primary NFE)"
        if a is None or b is None or better not in ("lower", "higher"):
            missing = [name for name, cell in ((variant, a), (than, b)) if cell is None]
            why = (f"no {metric} result for {' and '.join(missing)} {at}" if missing
                   else f"the direction of {metric} is unknown")
            out.append(ClaimResult(text, metric, better, variant, than, nfe,
                                   a[0] if a else None, a[1] if a else None,
                                   b[0] if b else None, b[1] if b else None,
                                   "not measured", f"Not measured: {why}."))
            continue
        holds = a[0] < b[0] if better == "lower" else a[0] > b[0]
        verdict = "reproduced" if holds else "not reproduced"
        sentence = (f"{verdict.capitalize()}: {metric} {_fmt_pm(*a)} for {variant} vs {_fmt_pm(*b)} "
                    f"for {than} {at} ({better} is better).")
        spread = max((s for s in (a[1], b[1]) if not math.isnan(s)), default=math.nan)
        if not math.isnan(spread) and abs(a[0] - b[0]) <= spread:
            sentence += " The gap is within the spread over seeds."
        out.append(ClaimResult(text, metric, better, variant, than, nfe, a[0], a[1], b[0], b[1], verdict, sentence))
    return out


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
    d = directions.get(col)
    return col if d is None else f"{col} {UP if d else DOWN}"


def _display_table(table, directions: dict[str, bool | None]) -> tuple[list[str], list[list[str]], list[str]]:
    """Headers, formatted cells and the source column of each shown column (std folded into the
    mean as "mean ± std")."""
    shown = [c for c in table.columns if not (c.endswith("_std") and c[:-4] in directions)]
    headers = [_header(c, directions) for c in shown]
    rows = []
    for _, rec in table.iterrows():
        cells = []
        for col in shown:
            v = rec[col]
            if col in directions:
                std = rec.get(f"{col}_std", math.nan)
                cells.append(_fmt_pm(v, std) if not _isnan(v) else DASH)
            elif col == "trainable_params":
                cells.append(_fmt_params(v))
            elif col in ("nfe", "steps", "seeds", "n", "teacher_nfe_per_step", "student_nfe_per_step"):
                cells.append(_fmt_int(v) if not _isnan(v) and float(v).is_integer() else _fmt(v))
            elif col == "seconds_per_step":
                cells.append(DASH if _isnan(v) else f"{float(v):.3g}")
            else:
                cells.append(DASH if _isnan(v) else str(_scalar(v)))
        rows.append(cells)
    return headers, rows, shown


def _best_cells(table, shown: list[str], directions: dict[str, bool | None]) -> set[tuple[int, int]]:
    """(row, column) positions of the best student value of each metric (ties all bold)."""
    best = set()
    if table.empty:
        return best
    is_student = (table["role"] == "student") if "role" in table else [True] * len(table)
    for j, col in enumerate(shown):
        if directions.get(col) is None:
            continue
        values = [(i, float(v)) for i, (v, s) in enumerate(zip(table[col], is_student)) if s and not _isnan(v)]
        if not values:
            continue
        target = (max if directions[col] else min)(v for _, v in values)
        best |= {(i, j) for i, v in values if v == target}
    return best


def _html_table(table, directions, caption: str = "") -> dict:
    headers, rows, shown = _display_table(table, directions)
    best = _best_cells(table, shown, directions)
    numeric = [c in directions or c in ("nfe", "steps", "seeds", "n", *TABLE_COST_COLUMNS) for c in shown]
    roles = table["role"].tolist() if "role" in table else [""] * len(rows)
    return {
        "caption": caption,
        "headers": [{"text": h, "numeric": num} for h, num in zip(headers, numeric)],
        "rows": [
            {"role": str(roles[i]) if not _isnan(roles[i]) else "",
             "cells": [{"text": t, "best": (i, j) in best, "numeric": numeric[j]} for j, t in enumerate(cells)]}
            for i, cells in enumerate(rows)
        ],
    }


def _plain_html_table(records: list[dict]) -> dict:
    """A table of arbitrary flat records (the paper's reference values)."""
    headers = _unique_in_order([k for rec in records for k in rec])
    return {
        "caption": "",
        "headers": [{"text": str(h), "numeric": False} for h in headers],
        "rows": [{"role": "", "cells": [{"text": DASH if _isnan(rec.get(h)) else str(_scalar(rec.get(h))),
                                         "best": False, "numeric": isinstance(rec.get(h), (int, float))}
                                        for h in headers]} for rec in records],
    }


def _markdown(table, directions) -> str:
    import pandas as pd

    headers, rows, _ = _display_table(table, directions)
    if not rows:
        return "(no results)\n"
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731 - a pipe would split the cell
    disp = pd.DataFrame([[esc(c) for c in r] for r in rows], columns=[esc(h) for h in headers])
    return disp.to_markdown(index=False) + "\n"


def _latex(table, directions) -> str:
    import pandas as pd

    headers, rows, _ = _display_table(table, directions)
    disp = pd.DataFrame(rows, columns=headers)
    tex = disp.to_latex(index=False, escape=True)
    return tex.replace(UP, r"$\uparrow$").replace(DOWN, r"$\downarrow$").replace("±", r"$\pm$").replace(DASH, "--")


# --------------------------------------------------------------------------------------------
# Plots (inline SVG, built here so every label is escaped by hand)
# --------------------------------------------------------------------------------------------
def _svg_dot_plot(metric: str, higher: bool | None, points: list[tuple[str, float, float]],
                  reference: tuple[str, float] | None) -> str:
    """A dot plot of ``points`` (label, mean, std) with error bars and an optional reference line."""
    e = lambda s: html.escape(str(s), quote=True)  # noqa: E731
    label_w, plot_w, row_h, top, bottom = 230, 360, 22, 28, 26
    width, height = label_w + plot_w + 70, top + row_h * len(points) + bottom
    lows = [m - (0 if math.isnan(s) else s) for _, m, s in points]
    highs = [m + (0 if math.isnan(s) else s) for _, m, s in points]
    if reference is not None:
        lows.append(reference[1])
        highs.append(reference[1])
    lo, hi = min(lows), max(highs)
    pad = (hi - lo) * 0.08 or abs(hi) * 0.05 or 1.0
    lo, hi = lo - pad, hi + pad
    x = lambda v: label_w + (v - lo) / (hi - lo) * plot_w  # noqa: E731
    arrow = "" if higher is None else (f" ({UP} higher is better)" if higher else f" ({DOWN} lower is better)")
    best = None
    if higher is not None and points:
        best = (max if higher else min)(m for _, m, _ in points)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{e(metric)}">',
        f'<text x="4" y="16" class="t">{e(metric)}{e(arrow)}</text>',
        f'<line x1="{label_w}" y1="{top - 6}" x2="{label_w}" y2="{height - bottom + 4}" class="ax"/>',
    ]
    for i, (label, mean, std) in enumerate(points):
        y = top + row_h * i + row_h / 2
        short = label if len(label) <= 32 else label[:31] + "…"
        parts.append(f'<text x="{label_w - 8}" y="{y + 4:.1f}" text-anchor="end"><title>{e(label)}</title>{e(short)}</text>')
        if not math.isnan(std):
            parts.append(f'<line x1="{x(mean - std):.1f}" y1="{y:.1f}" x2="{x(mean + std):.1f}" y2="{y:.1f}" class="err"/>')
        cls = "dot best" if best is not None and mean == best else "dot"
        parts.append(f'<circle cx="{x(mean):.1f}" cy="{y:.1f}" r="5" class="{cls}"><title>{e(label)}: '
                     f'{e(_fmt_pm(mean, std))}</title></circle>')
        parts.append(f'<text x="{label_w + plot_w + 8}" y="{y + 4:.1f}" class="v">{e(_fmt_pm(mean, std))}</text>')
    if reference is not None:
        rx = x(reference[1])
        parts.append(f'<line x1="{rx:.1f}" y1="{top - 6}" x2="{rx:.1f}" y2="{height - bottom + 4}" class="ref"/>')
        parts.append(f'<text x="{rx:.1f}" y="{height - 6}" text-anchor="middle" class="v">'
                     f'{e(reference[0])} {e(_fmt(reference[1]))}</text>')
    parts.append(f'<text x="{label_w}" y="{height - 6}" class="v">{e(_fmt(lo))}</text>')
    parts.append(f'<text x="{label_w + plot_w}" y="{height - 6}" text-anchor="end" class="v">{e(_fmt(hi))}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _panel_plots(panel, main, directions, nfe) -> list:
    from markupsafe import Markup

    plots = []
    if panel.empty:
        return plots
    for metric, higher in directions.items():
        if metric not in panel:
            continue
        std_col = f"{metric}_std"
        points = [(str(r["variant"]), float(r[metric]), float(r[std_col]) if std_col in panel and not _isnan(r[std_col])
                   else math.nan) for _, r in panel.iterrows() if not _isnan(r[metric])]
        if not points:
            continue
        reference = None
        teacher = main[(main["role"] == "teacher") & (main["nfe"] == nfe)] if not main.empty else main
        if not teacher.empty and metric in teacher and not _isnan(teacher[metric].iloc[0]):
            reference = (f"teacher {nfe} NFE", float(teacher[metric].iloc[0]))
        # Built from escaped pieces only (see _svg_dot_plot), so it is safe to mark as markup.
        plots.append(Markup(_svg_dot_plot(metric, higher, points, reference)))
    return plots


# --------------------------------------------------------------------------------------------
# Failures, grids, provenance
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


def _natural_key(path: Path) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.stem)]


def _grids(study: dict, df, run_dir: Path) -> list[dict]:
    root = run_dir / VARIANTS_DIR
    if not root.is_dir():
        return []
    labels: dict[str, tuple[str, Any]] = {}
    for v in study.get("variants", []):
        if isinstance(v, dict) and v.get("key"):
            labels[str(v["key"])] = (str(v.get("name", v["key"])), v.get("seed"))
    if not df.empty:
        for key, variant, seed in zip(df["variant_key"], df["variant"], df["seed"]):
            labels.setdefault(str(key), (str(variant), seed))
    study_keys = [str(v["key"]) for v in study.get("variants", []) if isinstance(v, dict) and v.get("key")]
    dirs = sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: p.name)
    rank = {k: i for i, k in enumerate(study_keys)}
    dirs.sort(key=lambda p: (0 if p.name.startswith("teacher") else 1, rank.get(p.name, len(rank)), p.name))
    out = []
    for d in dirs:
        images = []
        for png in sorted(d.glob("*.png"), key=_natural_key):
            data = base64.b64encode(png.read_bytes()).decode("ascii")
            meta: dict = {}
            side = png.with_suffix(".json")
            if side.is_file():
                try:
                    loaded = json.loads(side.read_text(encoding="utf-8"))
                    meta = loaded if isinstance(loaded, dict) else {}
                except (OSError, ValueError):
                    meta = {}
            prompts = meta.get("prompts") if isinstance(meta.get("prompts"), list) else []
            images.append({"name": png.stem, "uri": f"data:image/png;base64,{data}",
                           "caption": str(meta.get("caption", "")), "prompts": [str(p) for p in prompts]})
        if images:
            name, seed = labels.get(d.name, (d.name, None))
            out.append({"key": d.name, "variant": name, "seed": _fmt_int(seed) if not _isnan(seed) else "",
                        "done": (d / DONE_FILE).is_file(), "images": images})
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
    return {
        "items": [
            ("git commit", str(provenance.get("git_hash", "unknown"))),
            ("scale", str(provenance.get("scale", study.get("scale", "unknown")))),
            ("seeds", ", ".join(str(s) for s in (seeds or [])) or DASH),
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
# Entry point
# --------------------------------------------------------------------------------------------
def _environment():
    from jinja2 import Environment, PackageLoader, StrictUndefined

    return Environment(loader=PackageLoader("flashbench", "templates"), autoescape=True,
                       undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)


def render_report(run_dir: Path | str) -> Path:
    """Write the tables under ``RUN_DIR/tables`` and ``RUN_DIR/report.html``; return the report's path."""
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
    tables_dir = run_dir / "tables"
    for name, table in (("main", main), ("panel", panel)):
        atomic_write_text(tables_dir / f"{name}.csv", table.to_csv(index=False))
        atomic_write_text(tables_dir / f"{name}.md", _markdown(table, directions))
        atomic_write_text(tables_dir / f"{name}.tex", _latex(table, directions))

    claims = evaluate_claims(study, df)
    failed, unfinished = _failures(study, df, store)
    paper = study.get("paper") or {}
    reference = paper.get("reference") if isinstance(paper.get("reference"), list) else []
    seeds_note = ("mean ± sample standard deviation over seeds" if any(c.endswith("_std") for c in main.columns)
                  else "one seed per variant")
    context = {
        "title": str(study.get("title") or study.get("name") or run_dir.name),
        "name": str(study.get("name", "")),
        "reproduces": str(study.get("reproduces") or ""),
        "panel_name": str(study.get("panel") or ""),
        "scale": str(study.get("scale") or provenance.get("scale") or ""),
        "primary_nfe": nfe,
        "direction": str(paper.get("direction") or ""),
        "claims": claims,
        "main": _html_table(main, directions),
        "panel": _html_table(panel, directions),
        "seeds_note": seeds_note,
        "plots": _panel_plots(panel, main, directions, nfe),
        "reference": _plain_html_table([r for r in reference if isinstance(r, dict)]) if reference else None,
        "failed": failed,
        "unfinished": unfinished,
        "skipped_lines": store.skipped_lines,
        "grids": _grids(study, df, run_dir),
        "provenance": _provenance_view(provenance, study, df),
        "study_json": json.dumps(study, indent=2, ensure_ascii=False, sort_keys=False),
        "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    html_text = _environment().get_template("report.html.j2").render(**context)
    out = run_dir / "report.html"
    atomic_write_text(out, html_text)
    return out


__all__ = ["render_report", "main_table", "panel_table", "evaluate_claims", "ClaimResult", "metric_directions"]
