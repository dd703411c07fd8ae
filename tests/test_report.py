"""The report: tables from stored rows, claim verdicts, one self-contained and escaped HTML file."""
from __future__ import annotations

import base64
import io
import json
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
        {"name": name, "key": f"{stem}-s{seed}", "seed": seed, "axes": {"adv_loss": name},
         "train": {"iterations": 10}, "eval": {"nfe": list(NFES), "prompts": {"name": "list", "prompts": [EVIL + " a cat"]}}}
        for name, stem in VARIANTS for seed in SEEDS
    ]
    variants.append({"name": "wgan", "key": "wgan-s0", "seed": 0, "axes": {"adv_loss": "wgan"}, "train": {}, "eval": {}})
    variants.append({"name": "hinge", "key": "hinge-s0", "seed": 0, "axes": {"adv_loss": "hinge"}, "train": {}, "eval": {}})
    store.write_study({
        "name": "fig5b", "title": f"GAN losses {EVIL}", "reproduces": "Figure 5 (b)", "panel": "b",
        "scale": "toy", "primary_nfe": 2, "seeds": list(SEEDS),
        "paper": {
            "direction": "LSGAN gives the best FID of hinge, WGAN and LSGAN.",
            "claims": [
                {"text": "LSGAN has a lower FD", "metric": "fd", "better": "lower", "variant": "lsgan", "than": EVIL},
                {"text": "LSGAN has a higher CLIP score", "metric": "clip_score", "better": "higher",
                 "variant": "lsgan", "than": EVIL},
                {"text": "LSGAN beats WGAN", "metric": "fd", "better": "lower", "variant": "lsgan", "than": "wgan"},
            ],
        },
        "variants": variants,
    })
    store.write_provenance({"git_hash": "abc1234", "scale": "toy", "python": "3.12", "packages": {"pandas": "3"},
                            "cpu": "test cpu", "cpu_count": 2, "gpus": None, "hostname": "h", "timestamp": "t"})
    common = {"study": "fig5b", "scale": "toy", "n": 16, "status": "ok", "git_hash": "abc1234"}
    for seed in SEEDS:  # teacher baselines: 25 steps (50 NFE with CFG) and 2 steps (4 NFE)
        key = f"teacher-s{seed}"
        store.add_rows([{**common, "variant": "teacher", "variant_key": key, "seed": seed, "role": "teacher",
                         "nfe": steps * 2, "steps": steps, "metric": m, "value": 10.0 + steps + seed if m == "fd" else 0.33,
                         "higher_is_better": hib} for steps in (25, 2) for m, hib in METRICS.items()])
        store.mark_done(key, {})
    for name, stem in VARIANTS:
        for seed in SEEDS:
            key = f"{stem}-s{seed}"
            store.add_rows([{**common, "variant": name, "variant_key": key, "seed": seed, "role": "student",
                             "nfe": nfe, "steps": nfe, "metric": m, "value": _value(name, seed, nfe, m),
                             "higher_is_better": hib, "axis.adv_loss": name, "trainable_params": 1_500_000,
                             "iterations": 10, "seconds_per_step": 0.5 + seed, "teacher_nfe_per_step": 8,
                             "student_nfe_per_step": 2, "train_seconds": 5.0}
                            for nfe in NFES for m, hib in METRICS.items()])
            store.mark_done(key, {})
    store.add_rows([{**common, "variant": "wgan", "variant_key": "wgan-s0", "seed": 0, "role": "student", "nfe": 2,
                     "steps": 2, "metric": "fd", "value": None, "status": "failed", "reason": "loss diverged",
                     "higher_is_better": False}])
    store.mark_done("wgan-s0", {})
    store.add_rows([{**common, "variant": "hinge", "variant_key": "hinge-s0", "seed": 0, "role": "student", "nfe": 2,
                     "steps": 2, "metric": "fd", "value": 1.0, "higher_is_better": False}])  # killed: no marker
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
    assert main.shape == (6, 6 + 2 * len(METRICS) + 4)
    assert list(main.columns[:6]) == ["role", "variant", "nfe", "steps", "seeds", "n"]
    assert list(zip(main["role"], main["variant"], main["nfe"])) == [
        ("teacher", "teacher", 50), ("teacher", "teacher", 4),
        ("student", "lsgan", 2), ("student", "lsgan", 4), ("student", EVIL, 2), ("student", EVIL, 4),
    ]
    assert (main["seeds"] == 2).all() and (main["n"] == 16).all()
    for name, _ in VARIANTS:
        for nfe in NFES:
            row = main[(main["variant"] == name) & (main["nfe"] == nfe)].iloc[0]
            for metric in METRICS:
                values = np.array([_value(name, s, nfe, metric) for s in SEEDS])
                assert row[metric] == pytest.approx(values.mean())
                assert row[f"{metric}_std"] == pytest.approx(values.std(ddof=1))
            assert row["seconds_per_step"] == pytest.approx(1.0)
            assert row["trainable_params"] == 1_500_000
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
    assert [c.verdict for c in claims] == ["reproduced", "not reproduced", "not measured"]
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
    assert re.search(rf"<strong>{best_fd:.2f} ± [0-9.]+</strong>", text)
    assert "reproduced" in text and "not reproduced" in text and "not measured" in text
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
    store.write_study({"name": "one", "title": "One seed", "primary_nfe": 2,
                       "variants": [{"name": "flash", "key": "flash-s0", "seed": 0, "axes": {}}]})
    store.add_rows([{"variant": "flash", "variant_key": "flash-s0", "seed": 0, "role": "student", "nfe": 2,
                     "steps": 2, "metric": "fd", "value": 22.6, "n": 8, "higher_is_better": False,
                     "trainable_params": 26_400_000}])
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
    store.write_study({"name": "losses", "title": "Loss terms", "primary_nfe": 2,
                       "variants": [{"name": n, "key": f"{n}-s0", "seed": 0, "axes": {"variant": n}} for n in names]})
    for i, n in enumerate(names):
        store.add_rows([{"variant": n, "variant_key": f"{n}-s0", "seed": 0, "role": "student", "nfe": 2, "steps": 2,
                         "metric": "fd", "value": 20.0 + i, "n": 8, "higher_is_better": False, "axis.variant": n}])
        store.mark_done(f"{n}-s0", {})
    render_report(tmp_path)
    panel = pd.read_csv(tmp_path / "tables" / "panel.csv")
    assert list(panel.columns) == ["variant", "nfe", "seeds", "n", "fd"]
    assert list(panel["variant"]) == names and list(panel["fd"]) == [20.0, 21.0]


def test_report_states_the_compute_the_run_took(tmp_path):
    store = ResultStore(tmp_path)
    store.write_study({"name": "cost", "title": "Cost", "primary_nfe": 2,
                       "variants": [{"name": "flash", "key": "flash-s0", "seed": 0, "axes": {}}]})
    # one variant trained 1800 s; sampling 360 s at each of two NFEs; two metrics per NFE (counted once)
    store.add_rows([{"variant": "flash", "variant_key": "flash-s0", "seed": 0, "role": "student", "nfe": nfe,
                     "steps": nfe, "metric": m, "value": 1.0, "n": 8, "higher_is_better": False,
                     "train_seconds": 1800.0, "sample_seconds": 360.0} for nfe in (2, 4) for m in ("fid", "clip_score")])
    store.mark_done("flash-s0", {})
    html = render_report(tmp_path).read_text()
    assert "0.7 h (0.5 h training, 0.2 h sampling)" in html
