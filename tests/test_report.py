"""The report: tables from stored rows, claim verdicts, one self-contained and escaped HTML file."""

from __future__ import annotations

import base64
import io
import json
import math
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from flashbench.errors import UserError
from flashbench.report import render_report
from flashbench.results import ResultStore

EVIL = "<script>alert(1)</script>"
SEEDS = (0, 1)
NFES = (2, 4)
METRICS = {"fd": False, "clip_score": True}  # metric -> higher is better
# (variant, key stem): the second variant's name is hostile text that must come out escaped.
VARIANTS = (("lsgan", "lsgan"), (EVIL, "evil"))


def _value(variant: str, seed: int, nfe: int, metric: str) -> float:
    """Deterministic fake results: lsgan has the lower FD *and* the lower CLIP score."""
    base = {"fd": 20.0, "clip_score": 0.30}[metric]
    offset = {"lsgan": 0.0, EVIL: 3.0 if metric == "fd" else 0.02}[variant]
    return base + offset + 0.5 * seed * (1 if metric == "fd" else 0.01) + (4 - nfe) * 0.1


def _png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture()
def run_dir(tmp_path):
    run = tmp_path / "run"
    store = ResultStore(run)
    variants = [
        {
            "name": name,
            "key": f"{stem}-s{seed}",
            "seed": seed,
            "axes": {"adv_loss": name},
            "train": {"iterations": 10},
            "eval": {"nfe": list(NFES), "prompts": {"name": "list", "prompts": [EVIL + " a cat"]}},
        }
        for name, stem in VARIANTS
        for seed in SEEDS
    ]
    variants.append({"name": "wgan", "key": "wgan-s0", "seed": 0, "axes": {"adv_loss": "wgan"}, "train": {}, "eval": {}})
    variants.append({"name": "hinge", "key": "hinge-s0", "seed": 0, "axes": {"adv_loss": "hinge"}, "train": {}, "eval": {}})
    store.write_study(
        {
            "name": "fig5b",
            "title": f"GAN losses {EVIL}",
            "reproduces": "Figure 5 (b)",
            "panel": "b",
            "scale": "toy",
            "primary_nfe": 2,
            "seeds": list(SEEDS),
            "paper": {
                "direction": "LSGAN gives the best FID of hinge, WGAN and LSGAN.",
                "claims": [
                    {"text": "LSGAN has a lower FD", "metric": "fd", "better": "lower", "variant": "lsgan", "than": EVIL},
                    {"text": "LSGAN has a higher CLIP score", "metric": "clip_score", "better": "higher", "variant": "lsgan", "than": EVIL},
                    {"text": "LSGAN beats WGAN", "metric": "fd", "better": "lower", "variant": "lsgan", "than": "wgan"},
                ],
            },
            "variants": variants,
        }
    )
    store.write_provenance(
        {
            "git_hash": "abc1234",
            "scale": "toy",
            "python": "3.12",
            "packages": {"pandas": "3"},
            "cpu": "test cpu",
            "cpu_count": 2,
            "gpus": None,
            "hostname": "h",
            "timestamp": "t",
        }
    )
    common = {"study": "fig5b", "scale": "toy", "n": 16, "status": "ok", "git_hash": "abc1234"}
    for seed in SEEDS:  # teacher baselines: 25 steps (50 NFE with CFG) and 2 steps (4 NFE)
        key = f"teacher-s{seed}"
        store.add_rows(
            [
                {
                    **common,
                    "variant": "teacher",
                    "variant_key": key,
                    "seed": seed,
                    "role": "teacher",
                    "nfe": steps * 2,
                    "steps": steps,
                    "metric": m,
                    "value": 10.0 + steps + seed if m == "fd" else 0.33,
                    "higher_is_better": hib,
                }
                for steps in (25, 2)
                for m, hib in METRICS.items()
            ]
        )
        store.mark_done(key, {})
    for name, stem in VARIANTS:
        for seed in SEEDS:
            key = f"{stem}-s{seed}"
            store.add_rows(
                [
                    {
                        **common,
                        "variant": name,
                        "variant_key": key,
                        "seed": seed,
                        "role": "student",
                        "nfe": nfe,
                        "steps": nfe,
                        "metric": m,
                        "value": _value(name, seed, nfe, m),
                        "higher_is_better": hib,
                        "axis.adv_loss": name,
                        "trainable_params": 1_500_000,
                        "iterations": 10,
                        "seconds_per_step": 0.5 + seed,
                        "teacher_nfe_per_step": 8,
                        "student_nfe_per_step": 2,
                        "train_seconds": 5.0,
                    }
                    for nfe in NFES
                    for m, hib in METRICS.items()
                ]
            )
            store.mark_done(key, {})
    store.add_rows(
        [
            {
                **common,
                "variant": "wgan",
                "variant_key": "wgan-s0",
                "seed": 0,
                "role": "student",
                "nfe": 2,
                "steps": 2,
                "metric": "fd",
                "value": None,
                "status": "failed",
                "reason": "loss diverged",
                "higher_is_better": False,
            }
        ]
    )
    store.mark_done("wgan-s0", {})
    store.add_rows(
        [
            {
                **common,
                "variant": "hinge",
                "variant_key": "hinge-s0",
                "seed": 0,
                "role": "student",
                "nfe": 2,
                "steps": 2,
                "metric": "fd",
                "value": 1.0,
                "higher_is_better": False,
            }
        ]
    )  # killed: no marker
    grid = store.variant_dir("lsgan-s0") / "grid_nfe2.png"
    grid.write_bytes(_png_bytes())
    grid.with_suffix(".json").write_text(json.dumps({"prompts": [EVIL + " a dog"]}))
    return run


def test_missing_study_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match=re.escape(str(tmp_path))):
        render_report(tmp_path)


def test_main_table(run_dir):
    render_report(run_dir)
    main = pd.read_csv(run_dir / "tables" / "main.csv")
    # per metric: mean, std over seeds, and the 95% interval's two ends
    assert main.shape == (6, 6 + 4 * len(METRICS) + 5)
    assert list(main.columns[:6]) == ["role", "variant", "nfe", "steps", "seeds", "n"]
    assert list(zip(main["role"], main["variant"], main["nfe"])) == [
        ("teacher", "teacher", 50),
        ("teacher", "teacher", 4),
        ("student", "lsgan", 2),
        ("student", "lsgan", 4),
        ("student", EVIL, 2),
        ("student", EVIL, 4),
    ]
    assert (main["seeds"] == 2).all() and (main["n"] == 16).all()
    for name, _ in VARIANTS:
        for nfe in NFES:
            row = main[(main["variant"] == name) & (main["nfe"] == nfe)].iloc[0]
            for metric in METRICS:
                values = np.array([_value(name, s, nfe, metric) for s in SEEDS])
                assert row[metric] == pytest.approx(values.mean())
                assert row[f"{metric}_std"] == pytest.approx(values.std(ddof=1))
                # two seeds: the t-interval over the per-seed values (t_{1, .975} = 12.706)
                half = 12.7062 * values.std(ddof=1) / np.sqrt(2)
                assert row[f"{metric}_ci_low"] == pytest.approx(values.mean() - half, rel=1e-4)
                assert row[f"{metric}_ci_high"] == pytest.approx(values.mean() + half, rel=1e-4)
            assert row["seconds_per_step"] == pytest.approx(1.0)
            assert row["trainable_params"] == 1_500_000
            assert row["train_hours"] == pytest.approx(5.0 / 3600)
    teacher = main[main["role"] == "teacher"]
    assert teacher["trainable_params"].isna().all()
    assert teacher.iloc[0]["fd"] == pytest.approx(np.mean([35.0, 36.0]))
    md = (run_dir / "tables" / "main.md").read_text()
    assert "±" in md and "fd ↓" in md and "clip_score ↑" in md
    assert (run_dir / "tables" / "main.tex").read_text().count(r"\pm") > 0


def test_panel_table(run_dir):
    render_report(run_dir)
    panel = pd.read_csv(run_dir / "tables" / "panel.csv")
    assert list(panel["variant"]) == ["lsgan", EVIL]
    assert list(panel["adv_loss"]) == ["lsgan", EVIL]
    assert (panel["nfe"] == 2).all()
    assert {"fd", "fd_std", "clip_score", "clip_score_std"} <= set(panel.columns)
    assert panel.iloc[0]["fd"] == pytest.approx(np.mean([_value("lsgan", s, 2, "fd") for s in SEEDS]))
    assert (run_dir / "tables" / "panel.md").is_file()


def test_claims(run_dir):
    from flashbench.report import evaluate_claims

    store = ResultStore(run_dir)
    claims = evaluate_claims(store.read_study(), store.dataframe())
    # the paired per-seed differences are exactly -3 (fd) and -0.02 (clip) at both seeds: a zero-width
    # t-interval, on the paper's side for fd and on the other side for the CLIP score
    assert [c.verdict for c in claims] == ["reproduced", "contradicted", "not measured"]
    assert claims[0].difference.value == pytest.approx(-3.0) and claims[0].difference.seeds == 2
    assert claims[0].value == pytest.approx(np.mean([_value("lsgan", s, 2, "fd") for s in SEEDS]))
    assert claims[0].other == pytest.approx(np.mean([_value(EVIL, s, 2, "fd") for s in SEEDS]))
    assert "wgan" in claims[2].sentence


def test_html_report(run_dir):
    path = render_report(run_dir)
    assert path == run_dir / "report.html"
    text = path.read_text(encoding="utf-8")
    # self-contained: no external resources, no scripts
    assert "<script" not in text.lower()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", text)
    assert "<link" not in text.lower()
    # the hostile name and prompts come out as text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert EVIL not in text
    # tables, verdicts, failures, grids, provenance
    assert text.count("<table") >= 2
    assert "fd ↓" in text and "clip_score ↑" in text
    best_fd = np.mean([_value("lsgan", s, 2, "fd") for s in SEEDS])
    assert re.search(rf"<strong>{best_fd:.2f} ± [0-9.]+ \[[0-9.]+, [0-9.]+\]</strong>", text)
    assert '<span class="verdict reproduced">' in text and '<span class="verdict contradicted">' in text
    assert '<span class="verdict not-measured">' in text
    assert "loss diverged" in text and "hinge-s0" in text
    assert "data:image/png;base64," + base64.b64encode(_png_bytes()).decode() in text
    assert "grid_nfe2" in text
    assert "abc1234" in text and "test cpu" in text
    assert "<svg" in text


def test_report_without_rows(tmp_path):
    store = ResultStore(tmp_path)
    store.write_study({"name": "empty", "title": "Empty", "primary_nfe": 2, "variants": []})
    text = render_report(tmp_path).read_text()
    assert "No results." in text


def test_single_seed_has_no_std(tmp_path):
    store = ResultStore(tmp_path)
    store.write_study({"name": "one", "title": "One seed", "primary_nfe": 2, "variants": [{"name": "flash", "key": "flash-s0", "seed": 0, "axes": {}}]})
    store.add_rows(
        [
            {
                "variant": "flash",
                "variant_key": "flash-s0",
                "seed": 0,
                "role": "student",
                "nfe": 2,
                "steps": 2,
                "metric": "fd",
                "value": 22.6,
                "n": 8,
                "higher_is_better": False,
                "trainable_params": 26_400_000,
            }
        ]
    )
    store.mark_done("flash-s0", {})
    render_report(tmp_path)
    main = pd.read_csv(tmp_path / "tables" / "main.csv")
    assert "fd_std" not in main.columns and main.loc[0, "fd"] == pytest.approx(22.6)
    assert main.loc[0, "trainable_params"] == 26_400_000
    md = (tmp_path / "tables" / "main.md").read_text()
    assert "±" not in md and "26.4M" in md


def test_explicit_variant_axis_is_not_a_second_variant_column(tmp_path):
    """The loader records explicit variants as axis "variant": the panel must not repeat the column."""
    store = ResultStore(tmp_path)
    names = ["distil", "distil+adv"]
    store.write_study(
        {
            "name": "losses",
            "title": "Loss terms",
            "primary_nfe": 2,
            "variants": [{"name": n, "key": f"{n}-s0", "seed": 0, "axes": {"variant": n}} for n in names],
        }
    )
    for i, n in enumerate(names):
        store.add_rows(
            [
                {
                    "variant": n,
                    "variant_key": f"{n}-s0",
                    "seed": 0,
                    "role": "student",
                    "nfe": 2,
                    "steps": 2,
                    "metric": "fd",
                    "value": 20.0 + i,
                    "n": 8,
                    "higher_is_better": False,
                    "axis.variant": n,
                }
            ]
        )
        store.mark_done(f"{n}-s0", {})
    render_report(tmp_path)
    panel = pd.read_csv(tmp_path / "tables" / "panel.csv")
    assert list(panel.columns) == ["variant", "nfe", "seeds", "n", "fd", "fd_ci_low", "fd_ci_high"]
    assert list(panel["variant"]) == names and list(panel["fd"]) == [20.0, 21.0]


def test_report_states_the_compute_the_run_took(tmp_path):
    store = ResultStore(tmp_path)
    store.write_study({"name": "cost", "title": "Cost", "primary_nfe": 2, "variants": [{"name": "flash", "key": "flash-s0", "seed": 0, "axes": {}}]})
    # one variant trained 1800 s; sampling 360 s at each of two NFEs; two metrics per NFE (counted once)
    store.add_rows(
        [
            {
                "variant": "flash",
                "variant_key": "flash-s0",
                "seed": 0,
                "role": "student",
                "nfe": nfe,
                "steps": nfe,
                "metric": m,
                "value": 1.0,
                "n": 8,
                "higher_is_better": False,
                "train_seconds": 1800.0,
                "sample_seconds": 360.0,
            }
            for nfe in (2, 4)
            for m in ("fid", "clip_score")
        ]
    )
    store.mark_done("flash-s0", {})
    html = render_report(tmp_path).read_text()
    assert "0.7 h (0.5 h training, 0.2 h sampling)" in html


# --- the paper's table beside this run's, exports --------------------------------------------------------------
def _row(variant, key, role, nfe, metric, value, hib, seed=0, **extra):
    return {
        "study": "s",
        "scale": "toy",
        "variant": variant,
        "variant_key": key,
        "seed": seed,
        "role": role,
        "nfe": nfe,
        "steps": nfe // 2 if role == "teacher" else nfe,
        "metric": metric,
        "value": value,
        "n": 8,
        "higher_is_better": hib,
        **extra,
    }


@pytest.fixture()
def table_run(tmp_path):
    """A Table-1-like run: the paper's rows (teacher 50 NFE, a baseline, Flash at 2 and 4 NFE) and this run's
    teacher at 50 and 4 NFE and the ``flash`` student at 2 and 4 NFE, measured with the toy ``fd``."""
    run = tmp_path / "table1"
    store = ResultStore(run)
    store.write_study(
        {
            "name": "table1",
            "title": "Table 1",
            "reproduces": "Table 1",
            "primary_nfe": 2,
            "seeds": [0],
            "paper": {
                "direction": "Flash is close to its teacher.",
                "reference": [
                    {"method": "teacher (SD1.5)", "nfe": 50, "fid": 20.1, "clip_score": 0.318},
                    {"method": "InstaFlow", "nfe": 1, "fid": 23.4, "clip_score": 0.304},
                    {"method": "Flash SD1.5", "nfe": 2, "fid": 22.6, "clip_score": 0.306},
                    {"method": "Flash SD1.5", "nfe": 4, "fid": 22.5, "clip_score": 0.311},
                ],
            },
            "variants": [{"name": "flash", "key": "flash-s0", "seed": 0, "axes": {}}],
        }
    )
    store.add_rows(
        [
            _row("teacher", "teacher-s0", "teacher", nfe, m, v, hib)
            for nfe, fd, clip in ((50, 40.0, 0.90), (4, 60.0, 0.91))
            for m, v, hib in (("fd", fd, False), ("clip_score", clip, True))
        ]
    )
    store.mark_done("teacher-s0", {})
    store.add_rows(
        [
            _row("flash", "flash-s0", "student", nfe, m, v, hib, trainable_params=1000, train_seconds=7200.0)
            for nfe, fd, clip in ((2, 45.0, 0.905), (4, 44.0, 0.915))
            for m, v, hib in (("fd", fd, False), ("clip_score", clip, True))
        ]
    )
    store.mark_done("flash-s0", {})
    return run


def test_paper_table_puts_the_papers_numbers_beside_the_measured_ones(table_run):
    render_report(table_run)
    paper = pd.read_csv(table_run / "tables" / "paper.csv")
    assert list(paper.columns) == [
        "method",
        "nfe",
        "paper.fid",
        "this_run.fd",
        "this_run.fd_ci_low",
        "this_run.fd_ci_high",
        "paper.clip_score",
        "this_run.clip_score",
        "this_run.clip_score_ci_low",
        "this_run.clip_score_ci_high",
        "role",
        "variant",
    ]
    rows = {(m, n): r for (m, n), r in zip(zip(paper["method"], paper["nfe"]), paper.to_dict("records"))}
    assert rows[("teacher (SD1.5)", 50)]["this_run.fd"] == 40.0 and rows[("teacher (SD1.5)", 50)]["paper.fid"] == 20.1
    assert rows[("Flash SD1.5", 2)]["this_run.fd"] == 45.0 and rows[("Flash SD1.5", 4)]["this_run.clip_score"] == 0.915
    assert rows[("InstaFlow", 1)]["role"] == "paper only" and math.isnan(rows[("InstaFlow", 1)]["this_run.fd"])
    # this run's rows the paper does not have come last
    assert list(paper["method"])[-1] == "(not in the paper)" and list(paper["nfe"])[-1] == 4
    md = (table_run / "tables" / "paper.md").read_text()
    assert "fid ↓ (paper)" in md and "fd ↓ (this run)" in md and "clip_score ↑ (paper)" in md
    # best of each column among the rows that are not the teacher's, in bold
    assert "**22.50**" in md and "**44.00**" in md and "**0.915**" in md and "**20.10**" not in md
    html = (table_run / "report.html").read_text()
    assert "The paper&#39;s numbers beside this run&#39;s" in html or "The paper's numbers beside this run's" in html
    assert "<strong>22.50</strong>" in html and "InstaFlow" in html


def test_explicit_reference_variant(tmp_path, table_run):
    store = ResultStore(table_run)
    study = store.read_study()
    study["paper"]["reference"][1]["variant"] = "flash"  # "InstaFlow" stands for this run's flash at 1 NFE: none
    study["paper"]["reference"][2]["variant"] = "none"
    store.write_study(study)
    render_report(table_run)
    paper = pd.read_csv(table_run / "tables" / "paper.csv")
    assert paper.loc[1, "role"] == "student" and math.isnan(paper.loc[1, "this_run.fd"])
    assert paper.loc[2, "role"] == "paper only" and math.isnan(paper.loc[2, "this_run.fd"])


def test_exports_mark_direction_and_best_in_every_format(table_run):
    render_report(table_run)
    tex = (table_run / "tables" / "main.tex").read_text()
    for rule in (r"\toprule", r"\midrule", r"\bottomrule", r"\begin{tabular}{llrrrrrrrrrrr}"):
        assert rule in tex
    assert r"fd $\downarrow$" in tex and r"clip\_score $\uparrow$" in tex and r"\textbf{44.00}" in tex
    assert r"\textbf{40.00}" not in tex  # the teacher is never "best"
    md = (table_run / "tables" / "main.md").read_text()
    assert "**44.00**" in md and "**0.915**" in md
    main = pd.read_csv(table_run / "tables" / "main.csv")
    assert main.loc[main["variant"] == "flash", "train_hours"].tolist() == [2.0, 2.0]
    assert (table_run / "report.md").read_text().startswith("# Table 1")
    html = (table_run / "report.html").read_text()
    # the exports travel inside the page, as downloads
    csv_uri = "data:text/csv;charset=utf-8;base64," + base64.b64encode((table_run / "tables" / "main.csv").read_bytes()).decode()
    assert csv_uri in html and 'download="table1-main.csv"' in html
    assert "train hours" in html and "teacher NFE/step" in html


def test_latex_escapes_text():
    from flashbench.report.formats import _tex

    assert _tex("a_b & 50% #1 {x} ~ ^ \\ ± ↑ ω") == (r"a\_b \& 50\% \#1 \{x\} \textasciitilde{} \textasciicircum{} \textbackslash{} $\pm$ $\uparrow$ $\omega$")


# --- Figure 5 panels as plots ------------------------------------------------------------------------------------
GUIDANCE = (0, 1, 3, 5)


@pytest.fixture()
def guidance_run(tmp_path):
    """A Figure-5(d)-like run: guidance_fixed 0 (omega sampled from [1.5, 3]) and fixed 1, 3, 5; two seeds."""
    run = tmp_path / "guidance"
    store = ResultStore(run)
    variants = [
        {
            "name": f"guidance_fixed={g}",
            "key": f"g{g}-s{s}",
            "seed": s,
            "axes": {"guidance_fixed": g},
            "train": {"guidance_min": 1.5, "guidance_max": 3.0, "guidance_fixed": float(g)},
            "eval": {"nfe": [4], "teacher_steps": [25]},
        }
        for g in GUIDANCE
        for s in (0, 1)
    ]
    store.write_study(
        {
            "name": "ablation_guidance",
            "title": "Figure 5(d): guidance",
            "reproduces": "Figure 5d",
            "primary_nfe": 4,
            "seeds": [0, 1],
            "paper": {"direction": "CLIP rises with omega."},
            "variants": variants,
        }
    )
    for s in (0, 1):
        store.add_rows([_row("teacher", f"teacher-s{s}", "teacher", 4, m, v, hib, seed=s) for m, v, hib in (("fd", 60.0, False), ("clip_score", 0.91, True))])
        store.mark_done(f"teacher-s{s}", {})
        for g in GUIDANCE:
            fd = 40.0 + (g - 2) ** 2 + s
            clip = 0.90 + 0.005 * (g or 2.5) + 0.001 * s
            store.add_rows(
                [
                    _row(f"guidance_fixed={g}", f"g{g}-s{s}", "student", 4, m, v, hib, seed=s, **{"axis.guidance_fixed": g})
                    for m, v, hib in (("fd", fd, False), ("clip_score", clip, True))
                ]
            )
            store.mark_done(f"g{g}-s{s}", {})
    return run


def test_guidance_panel_is_a_fid_vs_clip_curve_with_the_sampled_range_marked(guidance_run):
    html = render_report(guidance_run).read_text()
    svgs = re.findall(r"<svg[^>]*class=\"chart ([a-z]+)\"[^>]*>.*?</svg>", html, flags=re.S)
    assert svgs == ["tradeoff", "bars", "bars"]  # the curve, then one bar chart per metric
    curve = re.search(r'<svg[^>]*class="chart tradeoff".*?</svg>', html, flags=re.S).group(0)
    assert "fd against clip_score" in curve
    assert curve.count('class="dot"') == 3 + 1  # omega = 1, 3, 5 (and the legend)
    assert "<polyline" in curve and curve.count('class="sampled"') == 2  # the sampled point (and the legend)
    assert "ω ~ U[1.5, 3]" in curve and "ω = 1" in curve and "ω = 5" in curve
    assert 'class="teacher"' in curve and "teacher, 4 NFE" in curve
    # the fixed-omega points are joined in order of omega: x (CLIP) rises along the polyline here
    xs = [float(p.split(",")[0]) for p in re.search(r'<polyline points="([^"]+)"', curve).group(1).split()]
    assert xs == sorted(xs)
    # the bars: one per guidance setting, labelled by omega, the teacher at 4 NFE as the dashed line
    bars = re.findall(r'<svg[^>]*class="chart bars".*?</svg>', html, flags=re.S)
    assert all(b.count('class="bar') == len(GUIDANCE) and 'class="ref"' in b and "ω ~ U[1.5, 3]" in b for b in bars)
    assert 'class="err"' in bars[0] and re.search(r"\[[0-9.]+, [0-9.]+\]", bars[0])  # two seeds: 95% interval whiskers


def test_bars_per_metric_beside_the_papers_direction(run_dir):
    html = render_report(run_dir).read_text()
    assert html.count('class="chart bars"') == len(METRICS)
    # each bar chart: one bar per variant, the best one highlighted (no teacher ran at the primary NFE: no line)
    bars = re.findall(r'<svg[^>]*class="chart bars".*?</svg>', html, flags=re.S)
    assert all(b.count('class="bar') == len(VARIANTS) and b.count('class="bar best"') == 1 for b in bars)
    assert not any('class="ref"' in b for b in bars)
    # the plots share a row with the paper's direction and the verdicts
    cols = html[html.index('<div class="cols">') : html.index('<h2 id="results">')]
    assert 'class="chart bars"' in cols and "LSGAN gives the best FID" in cols and "contradicted" in cols


def test_narrow_values_do_not_start_bars_at_zero():
    from flashbench.report.plots import _svg_bars

    svg = _svg_bars("clip_score", True, [("a", 0.90, math.nan, math.nan), ("b", 0.92, math.nan, math.nan)], None)
    assert "not zero" in svg
    svg = _svg_bars("fd", False, [("a", 10.0, math.nan, math.nan), ("b", 40.0, math.nan, math.nan)], None)
    assert "not zero" not in svg


# --- sample grids ---------------------------------------------------------------------------------------------
def _grid(path, colour):
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    Image.new("RGB", (8, 4), colour).save(buf, format="PNG")
    path.write_bytes(buf.getvalue())
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def test_samples_compare_teacher_and_students_on_the_same_noise(guidance_run):
    v = guidance_run / "variants"
    uris = {
        "many": _grid(v / "teacher-s0" / "grid_steps025_nfe50.png", (1, 0, 0)),
        "same_nfe": _grid(v / "teacher-s0" / "grid_steps002_nfe4.png", (2, 0, 0)),
        "same_steps": _grid(v / "teacher-s0" / "grid_steps004_nfe8.png", (3, 0, 0)),
        "g0": _grid(v / "g0-s0" / "grid_nfe4.png", (4, 0, 0)),
        "g5": _grid(v / "g5-s0" / "grid_nfe4.png", (5, 0, 0)),
        "odd": _grid(v / "g5-s0" / "something_else.png", (6, 0, 0)),
    }
    html = render_report(guidance_run).read_text()
    section = html[html.index('<h2 id="samples">') : html.index('<h2 id="provenance">')]
    first = section[section.index("<details open>") : section.index("</details>", section.index("<table class=\"samples\">"))]
    order = [first.index(uris[k]) for k in ("many", "same_nfe", "same_steps", "g0", "g5")]
    assert order == sorted(order)
    assert "25 steps (50 NFE with CFG): the reference" in first and "2 steps (4 NFE): the student&#39;s NFE" in first
    assert "guidance_fixed=0" in first and "student, 4 NFE" in first
    # a file the comparison does not know is still shown, once
    assert section.count(uris["odd"]) == 1 and "Other stored grids" in section


# --- the index over reports -------------------------------------------------------------------------------------
def test_publish_and_index(tmp_path, run_dir, table_run, guidance_run, capsys):
    from flashbench.cli import main
    from flashbench.report import read_report_meta

    dest = tmp_path / "reports"
    assert main(["report", str(run_dir), str(table_run), str(guidance_run), "--publish", str(dest)]) == 0
    assert capsys.readouterr().out.splitlines() == [*(f"report: {dest / name}.html" for name in ("run", "table1", "guidance")), f"index: {dest / 'index.html'}"]
    assert sorted(p.name for p in dest.iterdir()) == sorted(["index.html", "run.html", "run.md", "table1.html", "table1.md", "guidance.html", "guidance.md"])
    meta = read_report_meta(dest / "run.html")
    assert meta["study"] == "fig5b" and meta["claims_reproduced"] == "1" and meta["claims_total"] == "3"
    assert meta["variants_done"] == "5" and meta["variants_total"] == "6"  # hinge was killed before its marker
    index = (dest / "index.html").read_text()
    hrefs = re.findall(r'<a href="([^"]+)"', index)
    assert hrefs == ["run.html", "guidance.html", "table1.html"]  # Figure 5b, 5d, then Table 1
    assert "1 / 1 / 0 of 3" in index and "5 of 6" in index and "&lt;script&gt;" in index and EVIL not in index
    # each study's claims, with their verdicts, under its row
    assert "LSGAN has a lower FD" in index and index.count('class="verdict contradicted"') == 1
    assert "The paper: LSGAN gives the best FID" in index
    # a run folder's own report.html is found one level down; other HTML files are ignored
    (tmp_path / "other.html").write_text("<html><head><title>x</title></head></html>")
    import shutil

    shutil.copytree(table_run, dest / "table1-run")
    assert re.findall(r'<a href="([^"]+)"', (dest / "index.html").read_text()) == hrefs
    assert main(["report", "--index", str(dest)]) == 0
    assert capsys.readouterr().out == f"index: {dest / 'index.html'}\n"
    assert "table1-run/report.html" in re.findall(r'<a href="([^"]+)"', (dest / "index.html").read_text())


def test_report_command_errors(tmp_path, run_dir, capsys):
    """`flashbench report` checks every RUN_DIR before it writes any report."""
    from flashbench.cli import main

    assert main(["report", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"flashbench: error: {tmp_path}: not a flashbench run directory (no study.json)\n"
    (run_dir / "report.html").unlink(missing_ok=True)
    assert main(["report", str(run_dir), str(tmp_path / "nope"), "--publish", str(tmp_path / "pub")]) == 2
    assert capsys.readouterr().err == f"flashbench: error: {tmp_path / 'nope'}: no such run directory\n"
    assert not (run_dir / "report.html").exists() and not (tmp_path / "pub").exists()
    assert main(["report"]) == 2
    assert capsys.readouterr().err == "flashbench: error: give RUN_DIR(s), --index DIR, or both; see 'flashbench report --help'\n"


def test_empty_index(tmp_path):
    from flashbench.report import render_index

    text = render_index(tmp_path).read_text()
    assert "No flashbench reports in this folder yet" in text


def test_reference_without_results_and_hostile_text(tmp_path):
    store = ResultStore(tmp_path)
    store.write_study(
        {
            "name": "t",
            "title": "T",
            "primary_nfe": 4,
            "variants": [],
            "paper": {"reference": [{"method": EVIL, "nfe": 4, "fid": 1.0}, {"method": "teacher", "nfe": 50, "fid": 2.0}]},
        }
    )
    html = render_report(tmp_path).read_text()
    paper = pd.read_csv(tmp_path / "tables" / "paper.csv")
    assert list(paper["role"]) == ["paper only", "teacher"] and list(paper["paper.fid"]) == [1.0, 2.0]
    assert EVIL not in html and "&lt;script&gt;" in html and "<strong>1.00</strong>" in html
    assert EVIL.replace("<", r"\textless{}") not in (tmp_path / "tables" / "paper.tex").read_text()


def test_teacher_cost_per_step_is_plotted_when_the_panel_varies_it(tmp_path):
    """Figure 5(e): K changes the teacher's NFEs per training step; the panel shows it beside the metrics."""
    store = ResultStore(tmp_path)
    store.write_study(
        {
            "name": "k",
            "title": "K",
            "primary_nfe": 4,
            "variants": [{"name": f"num_timesteps={k}", "key": f"k{k}-s0", "seed": 0, "axes": {"num_timesteps": k}} for k in (16, 32)],
        }
    )
    for k in (16, 32):
        store.add_rows(
            [_row(f"num_timesteps={k}", f"k{k}-s0", "student", 4, "fd", 40.0 + k / 16, False, teacher_nfe_per_step=k / 2, **{"axis.num_timesteps": k})]
        )
        store.mark_done(f"k{k}-s0", {})
    html = render_report(tmp_path).read_text()
    assert html.count('class="chart bars"') == 2 and "teacher NFE/step" in html


def test_summary_markdown_over_runs(run_dir, table_run, capsys):
    from flashbench.cli import main

    assert main(["report", str(run_dir), str(table_run), "--summary"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| study | claims | row | NFE | fd ↓ | clip_score ↑ | s/step | teacher NFE/step |"
    assert lines[2].startswith("| Figure 5 (b) | 1 reproduced, 1 contradicted, 1 not measured of 3 | lsgan | 2 | ")  # no teacher ran at the primary NFE 2
    assert "| Table 1 | – | flash | 2 | 45.00 | 0.905 | – | – |" in lines  # no claims; its teacher ran at 50 and 4 NFE
    assert not (run_dir / "index.html").exists()  # --summary writes nothing


# --- intervals and three-way verdicts from stored replicates --------------------------------------


def _one_seed_run(tmp_path, *, with_replicates: bool = True):
    """One seed, per-sample scores known: 'a' is 'b' shifted by +0.02 on the same 300 samples (paired),
    'c' equals 'b' plus independent noise; the teacher with CFG and the teacher through the student's
    sampler at 2 NFE. Rows carry intervals and replicates exactly as the runner writes them."""
    from flashbench import stats

    rng = np.random.default_rng(0)
    n = 300
    shared = rng.normal(0.9, 0.05, n)
    scores = {"a": shared + 0.02, "b": shared.copy(), "c": shared + rng.normal(0, 0.05, n), "teacher": shared - 0.05, "teacher-fewstep": shared + 0.01}
    store = ResultStore(tmp_path)
    claims = [
        {"text": "a beats b", "metric": "clip_score", "better": "higher", "variant": "a", "than": "b"},
        {"text": "b beats a", "metric": "clip_score", "better": "higher", "variant": "b", "than": "a"},
        {"text": "c beats b", "metric": "clip_score", "better": "higher", "variant": "c", "than": "b"},
        {"text": "a beats the teacher", "metric": "clip_score", "better": "higher", "variant": "a", "than": "teacher"},
    ]
    store.write_study(
        {
            "name": "ci",
            "title": "Intervals",
            "primary_nfe": 2,
            "paper": {"claims": claims},
            "variants": [{"name": v, "key": f"{v}-s0", "seed": 0, "axes": {}} for v in "abc"],
        }
    )
    for name, s in scores.items():
        role = "teacher" if name.startswith("teacher") else "student"
        key = "teacher-s0" if role == "teacher" else f"{name}-s0"
        value = float(s.mean())
        row = {
            "variant": name,
            "variant_key": key,
            "seed": 0,
            "role": role,
            "nfe": 2,
            "steps": 1 if name == "teacher" else 2,
            "metric": "clip_score",
            "value": value,
            "n": n,
            "higher_is_better": True,
        }
        if with_replicates:
            reps = stats.replicates(lambda c: c @ s / n, n, 1000, stats.SEED_OFFSET)
            lo, hi = stats.centred_interval(value, reps)
            row.update(ci_low=lo, ci_high=hi, ci_level=0.95, ci_method="test", bootstrap_file=store.save_replicates(key, f"clip-{name}", reps))
        store.add_rows([row])
        if role == "student" or name == "teacher-fewstep":
            store.mark_done(key, {})
    return store, scores


def test_one_seed_claims_use_the_paired_bootstrap_of_the_stored_replicates(tmp_path):
    from flashbench.report import evaluate_claims

    store, scores = _one_seed_run(tmp_path)
    claims = evaluate_claims(store.read_study(), store.dataframe(), store)
    assert [c.verdict for c in claims[:3]] == ["reproduced", "contradicted", "inconclusive"]
    a = claims[0]
    assert a.difference.value == pytest.approx(0.02) and a.difference.seeds == 1
    # paired on the same samples: the shared spread cancels and the interval is tight around +0.02
    assert a.difference.low == pytest.approx(0.02, abs=1e-9) and a.difference.high == pytest.approx(0.02, abs=1e-9)
    assert "One seed" in a.sentence and "sampling noise" in a.sentence
    # without the store (no replicates) the same data cannot decide
    blind = evaluate_claims(store.read_study(), store.dataframe())
    assert [c.verdict for c in blind[:3]] == ["inconclusive"] * 3 and "cannot decide" in blind[0].sentence


def test_a_claim_against_the_teacher_takes_the_stronger_teacher_baseline(tmp_path):
    from flashbench.report import evaluate_claims

    store, scores = _one_seed_run(tmp_path)
    claim = evaluate_claims(store.read_study(), store.dataframe(), store)[3]
    # the few-step teacher (0.91) is stronger than the CFG teacher at 2 NFE (0.85): the claim is judged against it
    assert claim.than == "teacher-fewstep" and claim.other == pytest.approx(scores["teacher-fewstep"].mean())
    assert claim.difference.value == pytest.approx(0.01) and claim.verdict == "reproduced"
    assert "stronger teacher baseline" in claim.sentence


def test_report_of_rows_without_intervals_says_so(tmp_path):
    store, _ = _one_seed_run(tmp_path, with_replicates=False)
    text = render_report(tmp_path).read_text()
    assert "carry no interval" in text and '<span class="verdict inconclusive">' in text
    main = pd.read_csv(tmp_path / "tables" / "main.csv")
    assert main["clip_score_ci_low"].isna().all()


def test_intervals_are_shown_in_every_table_format_and_the_index_counts_verdicts(tmp_path):
    from flashbench.report import publish_reports, read_report_meta

    store, scores = _one_seed_run(tmp_path / "run")
    render_report(tmp_path / "run")
    main = pd.read_csv(tmp_path / "run" / "tables" / "main.csv")
    row = main[main["variant"] == "a"].iloc[0]
    assert row["clip_score_ci_low"] < row["clip_score"] < row["clip_score_ci_high"]
    shown = f"{row['clip_score']:.3f} [{row['clip_score_ci_low']:.3f}, {row['clip_score_ci_high']:.3f}]"
    assert shown in (tmp_path / "run" / "tables" / "main.md").read_text()
    assert shown in (tmp_path / "run" / "tables" / "main.tex").read_text()
    assert shown in (tmp_path / "run" / "report.html").read_text()
    publish_reports([tmp_path / "run"], tmp_path / "pub")
    meta = read_report_meta(tmp_path / "pub" / "run.html")
    assert (meta["claims_reproduced"], meta["claims_contradicted"], meta["claims_inconclusive"]) == ("2", "1", "1")
    assert meta["seeds"] == "1"  # how many seeds ran, not the seed's number
    assert "2 / 1 / 1 of 4" in (tmp_path / "pub" / "index.html").read_text()


def test_frechet_distance_at_small_n_is_flagged_as_biased(tmp_path):
    store = ResultStore(tmp_path)
    store.write_study({"name": "fd", "title": "FD", "primary_nfe": 2, "variants": [{"name": "a", "key": "a-s0", "seed": 0, "axes": {}}]})
    store.add_rows(
        [
            {
                "variant": "a",
                "variant_key": "a-s0",
                "seed": 0,
                "role": "student",
                "nfe": 2,
                "steps": 2,
                "metric": "fd",
                "value": 40.0,
                "n": 600,
                "higher_is_better": False,
            }
        ]
    )
    store.mark_done("a-s0", {})
    text = render_report(tmp_path).read_text()
    assert "biased upwards" in text and "600 samples" in text


def test_departures_of_the_run_scale_and_circular_measurements_are_shown(tmp_path):
    store = ResultStore(tmp_path)
    toy_eval = {"evaluators": ["toy-fd", "toy-lpips"], "nfe": [2]}
    store.write_study(
        {
            "name": "distil",
            "title": "Distillation loss",
            "scale": "toy",
            "primary_nfe": 2,
            "paper": {"departures": {"toy": ["400 iterations (paper 20,000)"], "paper": ["only at paper scale"]}},
            "variants": [
                {"name": "distil_loss=mse", "key": "mse-s0", "seed": 0, "axes": {}, "train": {"distil_loss": "mse"}, "eval": toy_eval},
                {"name": "distil_loss=lpips", "key": "lpips-s0", "seed": 0, "axes": {}, "train": {"distil_loss": "lpips"}, "eval": toy_eval},
                {"name": "vgg", "key": "vgg-s0", "seed": 0, "axes": {}, "train": {"distil_loss": {"name": "lpips", "net": "vgg"}}, "eval": toy_eval},
            ],
        }
    )
    text = render_report(tmp_path).read_text()
    box = re.search(r'<div class="box departures">.*?</div>', text, flags=re.S).group(0)
    assert "400 iterations (paper 20,000)" in box and "only at paper scale" not in box  # the run's scale only
    assert "circular: distil_loss=lpips distil" in box and "vgg" not in box
    assert "400 iterations" in (tmp_path / "report.md").read_text()


def test_the_report_says_which_side_ran_where_paper_and_code_differ(tmp_path):
    store = ResultStore(tmp_path)
    store.write_study(
        {
            "name": "pi",
            "title": "pi",
            "primary_nfe": 2,
            "variants": [
                {"name": "paper", "key": "p-s0", "seed": 0, "axes": {}, "train": {"timesteps": "flash", "adv_loss": "lsgan"}},
                {
                    "name": "code",
                    "key": "c-s0",
                    "seed": 0,
                    "axes": {},
                    "train": {"timesteps": {"name": "flash", "spread": "code"}, "adv_loss": {"name": "wgan", "clip": 0}},
                },
            ],
        }
    )
    box = re.search(r'<div class="box choices">.*?</div>', render_report(tmp_path).read_text(), flags=re.S).group(0)
    assert "the paper&#39;s Eq. 7 spread, exp(-d^2) (paper)" in box and "the authors&#39; code&#39;s spread, exp(-2 d^2) (code)" in box
    assert "WGAN without a Lipschitz constraint (code)" in box and "LSGAN on raw scores with the 1/2 (Eq. 8) (paper)" in box


def test_the_lpips_crop_and_clamp_are_told_apart(tmp_path):
    """The toy world's 16x16 images are decoded whole (the crop does nothing there) but still clamped."""
    store = ResultStore(tmp_path)
    store.write_study(
        {
            "name": "d",
            "title": "d",
            "primary_nfe": 2,
            "variants": [
                {"name": "lpips", "key": "l-s0", "seed": 0, "axes": {}, "train": {"distil_loss": "lpips"}},
                {"name": "raw", "key": "r-s0", "seed": 0, "axes": {}, "train": {"distil_loss": {"name": "lpips", "crop": 0, "clamp": False}}},
            ],
        }
    )
    box = re.search(r'<div class="box choices">.*?</div>', render_report(tmp_path).read_text(), flags=re.S).group(0)
    assert "toy world&#39;s 16x16 pixels, is decoded whole) (lpips)" in box
    assert "clamped to [-1, 1] before LPIPS (the authors&#39; code) (lpips)" in box
    assert "LPIPS distillation on the full image (raw)" in box and "not clamped before LPIPS (raw)" in box


def test_index_counts_seeds_and_flags_reports_rendered_before_three_way_verdicts(tmp_path):
    from flashbench.report import render_index

    meta = {
        "study": "old",
        "title": "Old",
        "reproduces": "Figure 5a",
        "scale": "toy",
        "claims_reproduced": "1",
        "claims_total": "3",
        "variants_done": "4",
        "variants_total": "4",
        "seeds": "0, 1",
        "compute": "0.1 h",
        "generated": "2026-11-22T08:58:12+00:00",
        "git_hash": "abc",
        "direction": "d",
        "claims_json": "[]",
    }
    old = "<html><head>" + "".join(f'<meta name="flashbench:{k}" content="{v}">' for k, v in meta.items()) + "</head></html>"
    (tmp_path / "old.html").write_text(old)
    index = render_index(tmp_path).read_text()
    row = re.search(r"<tr>.*?old\.html.*?</tr>", index, flags=re.S).group(0)
    assert "1 of 3 (sign only, re-render)" in row and "<td>2</td>" in row


def test_measured_effects_are_paired_differences_without_a_verdict(tmp_path):
    store, scores = _one_seed_run(tmp_path)
    study = store.read_study()
    study["paper"]["effects"] = [
        {"text": "a instead of b", "variant": "a", "than": "b", "metrics": ["clip_score"]},
        {"text": "c instead of b", "variant": "c", "than": "b"},
        {"text": "x instead of b", "variant": "x", "than": "b"},
    ]
    store.write_study(study)
    render_report(tmp_path)
    effects = pd.read_csv(tmp_path / "tables" / "effects.csv")
    assert list(effects["the data"]) == ["resolved", "within noise", "not measured"]
    assert effects.loc[0, "difference"] == "0.020"
    text = (tmp_path / "report.html").read_text()
    assert "Measured effects" in text and "a instead of b" in text
