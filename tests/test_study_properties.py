"""Property-based: whatever a study file holds, loading it either gives a study whose every variant is
fully typed, or raises StudyError(s) located by file (and key where there is one) — never another
exception, never a traceback for the user."""
from __future__ import annotations

import math
import tempfile
from pathlib import Path

import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import make_fake_components
from flashbench.config import TrainConfig
from flashbench.errors import StudyError
from flashbench.study import load_study

COMPONENTS = make_fake_components()
FIELDS = ["iterations", "batch_size", "num_timesteps", "phase_length", "learning_rate", "guidance_min", "guidance_max",
          "lambda_adv", "lambda_dmd", "adv_loss", "dmd_loss", "distil_loss", "timesteps", "mixed_precision", "lora_rank",
          "evaluate_only", "no_such_key"]
scalar = st.one_of(
    st.integers(-10, 100_000), st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
    st.sampled_from(["lsgan", "hinge", "mse", "dmd", "none", "flash", "uniform", "bf16", "no", "mystery", ""]),
)
value = st.one_of(scalar, st.lists(scalar, max_size=5))
layer = st.dictionaries(st.sampled_from(FIELDS), value, max_size=5)


@st.composite
def study_data(draw):
    data = {"study": {"name": draw(st.sampled_from(["demo", "Bad Name", "x"])), "default_scale": "toy",
                      "seeds": draw(st.one_of(st.just([0]), st.lists(st.integers(-2, 3), max_size=3)))},
            "base": draw(layer),
            "scale": {"toy": {"teacher": "toy-digits", "dataset": "toy-digits", "iterations": 400, "phase_length": 100,
                              "eval": {"prompts": "toy-prompts", "evaluators": ["toy-fd"]}, **draw(layer)}}}
    if draw(st.booleans()):
        data["matrix"] = draw(st.dictionaries(st.sampled_from(FIELDS), st.lists(scalar, max_size=4), max_size=2))
    if draw(st.booleans()):
        data["variants"] = [{"name": draw(st.sampled_from(["a", "b", "a", "bad name"])), **draw(layer)} for _ in range(draw(st.integers(1, 3)))]
    return data


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(study_data())
def test_any_study_loads_or_fails_with_located_errors(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gen.toml"
        try:
            path.write_text(tomli_w.dumps(data))
        except (TypeError, ValueError):  # tomli-w cannot write this (e.g. mixed arrays): not a study file
            return
        try:
            study = load_study(path, components=COMPONENTS)
        except StudyError as exc:
            problems = getattr(exc, "problems", [exc])
            assert problems
            for p in problems:
                text = str(p)
                assert text.startswith(str(path)) and "\n" not in text
            return
    for v in study.variants:
        assert isinstance(v.train, TrainConfig)
        assert v.train.iterations > 0 and v.train.num_timesteps % 4 == 0
        assert math.isfinite(v.train.learning_rate) and v.train.guidance_min <= v.train.guidance_max
