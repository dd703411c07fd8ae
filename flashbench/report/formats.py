"""Tables for people: each column's cells (numbers as :mod:`flashbench.formatting` writes them, a metric as
"mean ± std [low, high]"), headers with ↑/↓, the best non-teacher value of each metric in bold, and a table as
HTML cells, Markdown or LaTeX (booktabs)."""

from __future__ import annotations

import base64
import math
import re

from ..formatting import DASH, count, is_missing, mean_interval, number, params
from .rows import CI_HIGH, CI_LOW, PAPER, TABLE_COST_COLUMNS, THIS_RUN, _scalar

COUNT_COLUMNS = ("nfe", "steps", "seeds", "n", "teacher_nfe_per_step", "student_nfe_per_step")
UP, DOWN = "↑", "↓"
# Display names of the cost columns (CSV keeps the column names).
PRETTY = {
    "trainable_params": "trainable params",
    "seconds_per_step": "s/step",
    "teacher_nfe_per_step": "teacher NFE/step",
    "student_nfe_per_step": "student NFE/step",
    "train_hours": "train hours",
    "variant_group": "variant group",
}


def _header(col: str, directions: dict[str, bool | None]) -> str:
    """``fd ↓``; ``fid ↓ (paper)`` / ``fd ↓ (this run)`` in the paper table; readable cost names."""
    base, suffix = col, ""
    if col.startswith(PAPER):
        base, suffix = col[len(PAPER) :], " (paper)"
    elif col.startswith(THIS_RUN):
        base, suffix = col[len(THIS_RUN) :], " (this run)"
    d = directions.get(col)
    arrow = "" if d is None else f" {UP if d else DOWN}"
    return f"{PRETTY.get(base, base)}{arrow}{suffix}"


def _base_column(col: str) -> str:
    for prefix in (PAPER, THIS_RUN):
        if col.startswith(prefix):
            return col[len(prefix) :]
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
                cells.append(mean_interval(v, std, lo, hi) if not is_missing(v) else DASH)
            elif base == "trainable_params":
                cells.append(params(v))
            elif base in COUNT_COLUMNS:
                cells.append(count(v) if not is_missing(v) and float(v).is_integer() else number(v))
            elif base == "seconds_per_step":
                cells.append(DASH if is_missing(v) else f"{float(v):.3g}")
            elif base == "train_hours":
                cells.append(DASH if is_missing(v) else f"{float(v):.2g}")
            else:
                cells.append(DASH if is_missing(v) else str(_scalar(v)))
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
        values = [(i, float(v)) for i, (v, c) in enumerate(zip(table[col], competes)) if c and not is_missing(v)]
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
            {
                "role": re.sub(r"[^a-z-]", "-", str(roles[i])) if not is_missing(roles[i]) else "",
                "cells": [{"text": t, "best": (i, j) in best, "numeric": numeric[j], "paper": shown[j].startswith(PAPER)} for j, t in enumerate(cells)],
            }
            for i, cells in enumerate(rows)
        ],
    }


def _md_cell(text) -> str:
    """A Markdown table cell: a pipe would split it."""
    return str(text).replace("|", "\\|")


def _markdown(table, directions) -> str:
    import pandas as pd

    headers, rows, shown = _display_table(table, directions)
    if not rows:
        return "(no results)\n"
    best = _best_cells(table, shown, directions)
    cells = [[f"**{_md_cell(c)}**" if (i, j) in best else _md_cell(c) for j, c in enumerate(r)] for i, r in enumerate(rows)]
    disp = pd.DataFrame(cells, columns=[_md_cell(h) for h in headers])
    align = ["right" if _is_numeric_column(c, directions) else "left" for c in shown]
    return disp.to_markdown(index=False, colalign=align, disable_numparse=True) + "\n"


_TEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}
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
    lines = [
        "% flashbench table; needs \\usepackage{booktabs}",
        f"\\begin{{tabular}}{{{spec}}}",
        r"\toprule",
        " & ".join(_tex(h) for h in headers) + r" \\",
        r"\midrule",
    ]
    for i, r in enumerate(rows):
        lines.append(" & ".join(rf"\textbf{{{_tex(c)}}}" if (i, j) in best else _tex(c) for j, c in enumerate(r)) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def _data_uri(text: str, mime: str) -> str:
    return f"data:{mime};charset=utf-8;base64,{base64.b64encode(text.encode('utf-8')).decode('ascii')}"
