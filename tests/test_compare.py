"""``flashbench compare RUN_A RUN_B``: shared rows side by side with B - A and intervals, counts of the rows only
one run has, an escaped HTML page; missing or empty runs are one-line errors (exit 2). Fabricated runs."""

from __future__ import annotations

import re

import pytest

from flashbench.cli import main
from flashbench.compare import compare_runs

from _fake_run import row, write_run  # noqa: E402

HOSTILE = "<b onmouseover=alert(1)>&x"  # a variant name (no slash: it names a folder)


@pytest.fixture
def runs(tmp_path):
    a = write_run(
        tmp_path / "a",
        None,
        [
            row("s", "distil-s0", "distil", "fd", 4, 10.0, ci=(9.0, 11.0)),
            row("s", "distil-s0", "distil", "clip_score", 4, 0.25),
            row("s", "distil-s0", "distil", "fd", 2, 30.0, ci=(29.0, 31.0)),
            row("s", f"{HOSTILE}-s0", HOSTILE, "fd", 4, 1.0),
            row("s", "teacher-s0", "teacher", "fd", 8, 5.0, role="teacher"),
        ],
    )
    b = write_run(
        tmp_path / "b",
        None,
        [
            row("s", "distil-s0", "distil", "fd", 4, 12.5, ci=(12.0, 13.0), git_hash="fedcba9876543210"),
            row("s", "distil-s0", "distil", "clip_score", 4, 0.25, git_hash="fedcba9876543210"),
            row("s", "distil-s0", "distil", "fd", 2, 30.5, ci=(29.5, 31.5), git_hash="fedcba9876543210"),
            row("s", f"{HOSTILE}-s0", HOSTILE, "fd", 4, 2.0, git_hash="fedcba9876543210"),
            row("s", "full-s0", "full", "fd", 4, 8.0, git_hash="fedcba9876543210"),
            row("s", "full-s0", "full", "clip_score", 4, 0.3, git_hash="fedcba9876543210"),
            row("s", "teacher-s1", "teacher", "fd", 8, 5.0, role="teacher", seed=1, git_hash="fedcba9876543210"),
        ],
    )
    return a, b


def test_shared_rows_differences_and_counts(runs):
    c = compare_runs(*runs)
    assert len(c.shared) == 4 and len(c.only_a) == 1 and len(c.only_b) == 3
    by = {(r.key[0], r.key[3], r.key[5]): r for r in c.shared}
    assert by[("distil", 4, "fd")].diff == pytest.approx(2.5)
    assert by[("distil", 4, "fd")].intervals_overlap is False  # [9, 11] vs [12, 13]
    assert by[("distil", 2, "fd")].intervals_overlap is True
    assert by[("distil", 4, "clip_score")].diff == 0 and by[("distil", 4, "clip_score")].intervals_overlap is None


def test_cli_prints_the_table_and_writes_escaped_html(runs, tmp_path, capsys):
    out = tmp_path / "html" / "compare.html"
    assert main(["compare", str(runs[0]), str(runs[1]), "--html", str(out)]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert lines[0].startswith(f"A: {runs[0]} (study s, scale toy, 0123456789; 5 rows)")
    assert lines[1].startswith(f"B: {runs[1]} (study s, scale toy, fedcba9876; 7 rows)")
    assert lines[2].split() == ["VARIANT", "SEED", "ROLE", "NFE", "STEPS", "METRIC", "A", "B", "B-A", "A", "95%", "CI", "B", "95%", "CI", "OVERLAP"]
    fd4 = next(line for line in lines if re.match(r"distil\s+0\s+student\s+4\s+4\s+fd\s", line))
    assert fd4.split()[6:] == ["10", "12.5", "+2.5", "(+25.0%)", "[9,", "11]", "[12,", "13]", "NO"]
    assert lines[-2] == "4 shared rows; 1 only in A; 3 only in B"
    html = out.read_text(encoding="utf-8")
    assert HOSTILE not in html and "&lt;b onmouseover=alert(1)&gt;&amp;x" in html
    assert 'class="apart"' in html and "Only in B (3)" in html and "+2.5" in html


def test_runs_without_intervals_have_no_interval_columns(tmp_path, capsys):
    a = write_run(tmp_path / "a", None, [row("s", "x-s0", "x", "fd", 4, 1.0)])
    b = write_run(tmp_path / "b", None, [row("s", "x-s0", "x", "fd", 4, 1.5)])
    assert main(["compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "CI" not in out and "+0.5 (+50.0%)" in out and "1 shared rows; 0 only in A; 0 only in B" in out


def test_no_shared_rows(tmp_path, capsys):
    a = write_run(tmp_path / "a", None, [row("s", "x-s0", "x", "fd", 4, 1.0)])
    b = write_run(tmp_path / "b", None, [row("s", "y-s0", "y", "fd", 4, 1.0)])
    assert main(["compare", str(a), str(b), "--html", str(tmp_path / "c.html")]) == 0
    assert "no shared rows" in capsys.readouterr().out
    assert "share no rows" in (tmp_path / "c.html").read_text()


@pytest.mark.parametrize("case", ["missing", "file", "empty-dir", "empty-results", "unfinished"])
def test_a_run_without_results_is_a_one_line_error(runs, tmp_path, capsys, case):
    bad = tmp_path / "bad"
    if case == "file":
        bad.write_text("x")
    elif case == "empty-dir":
        bad.mkdir()
    elif case == "empty-results":
        bad.mkdir()
        (bad / "results.jsonl").write_text("")
    elif case == "unfinished":  # rows written, the variant never marked done
        from flashbench.results import ResultStore

        ResultStore(bad).add_rows([row("s", "x-s0", "x", "fd", 4, 1.0)])
    assert main(["compare", str(runs[0]), str(bad)]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"flashbench: error: RUN_B {bad}") and "Traceback" not in captured.err, err
    assert captured.out == ""


def test_html_to_a_directory_is_a_one_line_error(runs, tmp_path, capsys):
    assert main(["compare", str(runs[0]), str(runs[1]), "--html", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--html" in err[0]
