"""The report's tables as pandas DataFrames (the CSV files are these frames): the main table (one row per role,
variant and NFE), the figure panel (the students at the primary NFE) and the paper's table beside this run's."""

from __future__ import annotations

import math
import re
from typing import Any

from ..formatting import is_missing
from ..results import AXIS_PREFIX
from .rows import (
    CI_HIGH,
    CI_LOW,
    KNOWN_DIRECTIONS,
    PAPER,
    TABLE_COST_COLUMNS,
    THIS_RUN,
    _cell,
    _mean_std,
    _measured_metric,
    _ok_rows,
    _per_seed,
    _primary_nfe,
    _scalar,
    _unique_in_order,
    _variant_order,
    metric_directions,
)


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
                "role": role,
                "variant": variant,
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
            axis = col[len(AXIS_PREFIX) :]
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
    students = main[(main["role"] == "student") & (main["nfe"] == nfe)] if not main.empty and nfe is not None else main.iloc[0:0]
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
            columns += [THIS_RUN + mine] + ([THIS_RUN + mine + "_std"] if several_seeds else []) + [THIS_RUN + mine + CI_LOW, THIS_RUN + mine + CI_HIGH]
    columns += ["role", "variant"]
    if not refs:
        return pd.DataFrame(columns=columns)
    students = _unique_in_order(main.loc[main["role"] != "teacher", "variant"].tolist()) if not main.empty else []
    used: set[int] = set()

    def measured_row(role: str, variant: str | None, nfe) -> int | None:
        if main.empty or not role or is_missing(nfe):
            return None
        hit = main[(main["role"] == role) & (main["nfe"] == int(nfe)) & (main["variant"] == variant)]
        return int(hit.index[0]) if len(hit) else None

    records = []
    for ref in refs:
        role, variant = _reference_target(ref, students)
        idx = measured_row(role, variant, ref.get("nfe"))
        # the role decides which rows compete for "best" (never the teacher's), measured or not
        rec: dict[str, Any] = {
            "method": str(ref.get("method", "")),
            "nfe": ref.get("nfe"),
            "role": role or "paper only",
            "variant": variant if idx is not None else None,
        }
        for metric, mine in pairs:
            rec[PAPER + metric] = ref.get(metric)
            if mine:
                for suffix in ("", *(("_std",) if several_seeds else ()), CI_LOW, CI_HIGH):
                    col = mine + suffix
                    rec[THIS_RUN + col] = main.at[idx, col] if idx is not None and col in main else math.nan
        if idx is not None:
            used.add(idx)
        records.append(rec)
    for idx, row in main.iterrows() if not main.empty else iter(()):
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
