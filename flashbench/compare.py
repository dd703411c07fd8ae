"""``flashbench compare RUN_A RUN_B``: the result rows two runs share, side by side, with differences.

Rows are matched on (variant, seed, role, nfe, steps, metric): the same measurement, e.g. of one study run at
two commits or on two machines. For each shared row: A's value, B's, B - A, and each 95% interval where the
row stores one (``ci_low`` / ``ci_high``); rows only in one run are counted (and listed in the HTML page).
Only stored results are read (complete variants, as the report reads them); nothing is recomputed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .errors import UserError
from .formatting import finite, significant, significant_interval
from .results import RESULTS_FILE, ResultStore

KEY_COLUMNS = ("variant", "seed", "role", "nfe", "steps", "metric")


@dataclass(frozen=True)
class RunSide:
    path: Path
    study: str
    scale: str
    git_hashes: tuple[str, ...]
    rows: dict  # key tuple -> row


@dataclass(frozen=True)
class SharedRow:
    key: tuple
    a: dict
    b: dict

    @property
    def diff(self) -> float | None:
        va, vb = self.a.get("value"), self.b.get("value")
        if finite(va) and finite(vb):
            return vb - va
        return None

    @property
    def relative(self) -> float | None:
        va, d = self.a.get("value"), self.diff
        return d / abs(va) if d is not None and va else None

    @property
    def intervals_overlap(self) -> bool | None:
        """Whether the two 95% intervals overlap (None unless both rows store one)."""
        ia, ib = interval(self.a), interval(self.b)
        if ia is None or ib is None:
            return None
        return ia[0] <= ib[1] and ib[0] <= ia[1]


@dataclass(frozen=True)
class Comparison:
    a: RunSide
    b: RunSide
    shared: list = field(default_factory=list)  # list[SharedRow]
    only_a: list = field(default_factory=list)  # keys
    only_b: list = field(default_factory=list)


def interval(row: dict) -> tuple[float, float] | None:
    lo, hi = row.get("ci_low"), row.get("ci_high")
    return (lo, hi) if finite(lo) and finite(hi) else None


def row_key(row: dict) -> tuple:
    return tuple(row.get(c) for c in KEY_COLUMNS)


def _sort_key(key: tuple) -> tuple:
    return tuple((v is None, str(v) if not isinstance(v, (int, float)) else "", v if isinstance(v, (int, float)) else 0) for v in key)


def load_side(run_dir: Path, label: str) -> RunSide:
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise UserError(f"{label} {run_dir}: no such run directory")
    if not run_dir.is_dir():
        raise UserError(f"{label} {run_dir}: not a directory")
    store = ResultStore(run_dir)
    rows = store.rows()
    if not rows:
        what = "is missing" if not store.results_path.exists() else ("has no rows of a finished variant" if store.all_rows() else "is empty")
        raise UserError(f"{label} {run_dir}: no results ({RESULTS_FILE} {what}); give a directory written by `flashbench run`")
    by_key = {}
    for row in rows:
        by_key[row_key(row)] = row  # a key stored twice (an edited variant run again): the later row
    first = rows[0]
    hashes = tuple(dict.fromkeys(str(r["git_hash"]) for r in rows if r.get("git_hash")))
    return RunSide(run_dir, str(first.get("study") or "?"), str(first.get("scale") or "?"), hashes, by_key)


def compare_runs(run_a: Path, run_b: Path) -> Comparison:
    a, b = load_side(run_a, "RUN_A"), load_side(run_b, "RUN_B")
    shared = [SharedRow(k, a.rows[k], b.rows[k]) for k in sorted(set(a.rows) & set(b.rows), key=_sort_key)]
    only_a = sorted(set(a.rows) - set(b.rows), key=_sort_key)
    only_b = sorted(set(b.rows) - set(a.rows), key=_sort_key)
    return Comparison(a, b, shared, only_a, only_b)


# --- text -----------------------------------------------------------------------------------------------
def value_text(row: dict) -> str:
    if row.get("status", "ok") != "ok" or not finite(row.get("value")):
        return "failed"
    return significant(row["value"])


def interval_text(row: dict) -> str:
    ci = interval(row)
    return significant_interval(*ci) if ci else ""


def diff_text(r: SharedRow) -> str:
    if r.diff is None:
        return ""
    rel = f" ({r.relative:+.1%})" if r.relative is not None else ""
    return f"{r.diff:+.4g}{rel}"


def table(c: Comparison) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of the text table (interval columns only when some row stores intervals)."""
    with_ci = any(interval(r.a) or interval(r.b) for r in c.shared)
    headers = ["VARIANT", "SEED", "ROLE", "NFE", "STEPS", "METRIC", "A", "B", "B-A"]
    if with_ci:
        headers += ["A 95% CI", "B 95% CI", "OVERLAP"]
    rows = []
    for r in c.shared:
        line = ["" if v is None else str(v) for v in r.key] + [value_text(r.a), value_text(r.b), diff_text(r)]
        if with_ci:
            overlap = {True: "yes", False: "NO", None: ""}[r.intervals_overlap]
            line += [interval_text(r.a), interval_text(r.b), overlap]
        rows.append(line)
    return headers, rows


def side_text(side: RunSide) -> str:
    commits = ", ".join(h[:10] for h in side.git_hashes) or "unknown commit"
    return f"{side.path} (study {side.study}, scale {side.scale}, {commits}; {len(side.rows)} rows)"


# --- HTML -----------------------------------------------------------------------------------------------
def render_html(c: Comparison) -> str:
    from jinja2 import Environment, PackageLoader, StrictUndefined

    env = Environment(loader=PackageLoader("flashbench", "templates"), autoescape=True, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    headers, rows = table(c)
    overlap_col = headers.index("OVERLAP") if "OVERLAP" in headers else None
    return env.get_template("compare.html.j2").render(
        a=side_text(c.a),
        b=side_text(c.b),
        headers=headers,
        rows=rows,
        overlap_col=overlap_col,
        key_columns=KEY_COLUMNS,
        only_a=[["" if v is None else str(v) for v in k] for k in c.only_a],
        only_b=[["" if v is None else str(v) for v in k] for k in c.only_b],
    )


def write_html(c: Comparison, out: Path) -> Path:
    from .results import atomic_write_text

    out = Path(out)
    if out.is_dir():
        raise UserError(f"--html {out}: is a directory; give a file name, e.g. {out / 'compare.html'}")
    if not out.parent.exists():
        try:
            out.parent.mkdir(parents=True)
        except OSError as e:
            raise UserError(f"--html {out}: cannot create {out.parent} ({e.strerror or e})") from None
    try:
        atomic_write_text(out, render_html(c))
    except OSError as e:
        raise UserError(f"--html {out}: cannot be written ({e.strerror or e})") from None
    return out
