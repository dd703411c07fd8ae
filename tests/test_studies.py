"""Every study file that ships validates at every scale it defines, with the installed plugins, and
the paper scales carry the paper's recipe."""

from __future__ import annotations

from pathlib import Path

import pytest

from flashbench.study import load_study, study_scales

STUDIES = sorted((Path(__file__).resolve().parent.parent / "studies").glob("*.toml"))
CASES = [(p, s) for p in STUDIES for s in study_scales(p)]


def test_the_six_figure5_panels_ship():
    names = {p.stem for p in STUDIES}
    assert {"ablation_losses", "ablation_gan", "ablation_distil", "ablation_guidance", "ablation_k", "ablation_timesteps"} <= names


@pytest.mark.parametrize("path,scale", CASES, ids=[f"{p.stem}-{s}" for p, s in CASES])
def test_study_validates(path, scale, components):
    study = load_study(path, scale=scale, components=components)
    assert study.variants


@pytest.mark.parametrize("path", [p for p in STUDIES if p.stem.startswith("ablation_")], ids=lambda p: p.stem)
def test_figure5_paper_scale_is_the_sd15_recipe(path, components):
    base = load_study(path, scale="paper", components=components).variants[-1].train
    assert base.teacher.name == "sd15" and base.iterations == 20000 and base.batch_size == 4
    assert base.learning_rate == 1e-5 and base.phase_length == 5000
    assert tuple(base.lambda_dmd) == (0.0, 0.3, 0.5, 0.7)
