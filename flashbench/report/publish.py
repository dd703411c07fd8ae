"""Many reports at once: the index over a folder of reports (``render_index``), publishing runs into such a folder
(``publish_reports``) and one Markdown table over several runs (``summary_markdown``)."""

from __future__ import annotations

import html
import json
import math
import re
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from ..errors import UserError
from ..results import ResultStore, atomic_write_text
from .claims import _claims_summary, _summary_text, evaluate_claims
from ..formatting import DASH
from .formats import _display_table, _md_cell, _metric_part
from .render import _environment, render_report
from .rows import CI_HIGH, CI_LOW, _ok_rows, _primary_nfe, metric_directions
from .tables import main_table

INDEX_FILE = "index.html"
META_PREFIX = "flashbench:"
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
        entries.append(
            {
                **meta,
                "href": path.relative_to(directory).as_posix(),
                "claims": label if total else DASH,
                "claims_class": "none" if not total else "zero" if contradicted else "all" if reproduced == total else "some",
                "variants": f"{meta.get('variants_done', '?')} of {meta.get('variants_total', '?')}",
                "claim_list": [{"verdict": str(c.get("verdict", "")), "text": str(c.get("text", ""))} for c in claims],
            }
        )
    entries.sort(key=lambda e: (_reproduces_key(e.get("reproduces", "")), e.get("study", ""), e.get("scale", ""), e["href"]))
    text = (
        _environment()
        .get_template("index.html.j2")
        .render(entries=entries, directory=directory.name or str(directory), generated=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    )
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
            rec = {"study": label if i == 0 else "", "claims": outcome if i == 0 else "", "row": str(r["variant"]), "NFE": r["nfe"]}
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
    cols = ["study", "claims", "row", "NFE", *[c for c in table.columns if c in metric_dirs or _metric_part(c, metric_dirs)], "s/step", "teacher NFE/step"]
    table = table[[c for c in cols if c in table.columns]]
    headers, rows, _ = _display_table(table, metric_dirs)
    rows = [[DASH if c in ("nan", "<NA>") else c for c in row] for row in rows]
    rows = [[f"{float(c):.3g}" if h in ("s/step", "teacher NFE/step") and c != DASH else c for h, c in zip(headers, row)] for row in rows]
    lines = [
        "| " + " | ".join(_md_cell(h) for h in headers) + " |",
        "| " + " | ".join("---:" if h not in ("study", "claims", "row") else "---" for h in headers) + " |",
    ]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"
