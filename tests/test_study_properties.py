"""Property-based: whatever a study file holds, loading it either gives a study whose every variant is
fully typed, or raises StudyError(s) located by file (and key where there is one), one line each —
never another exception, never a traceback for the user. The generated files include NaN and
infinities, hostile names (path separators, "..", NUL, newlines, terminal escapes), deep nesting and
raw text damage; through the CLI, a refused study writes nothing."""

from __future__ import annotations

import contextlib
import io
import math
import sys
import tempfile
import types
from pathlib import Path

import tomli_w
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import make_fake_components
from flashbench.cli import main
from flashbench.config import TrainConfig
from flashbench.errors import StudyError
from flashbench.study import MAX_DEPTH, load_study

COMPONENTS = make_fake_components()
HOSTILE_NAMES = ["../x", "/abs", "C:", "a\\b", "a\x00b", "a\nb", "\x1b[2J", "\u2028", ".", "..", "a" * 100, ""]
FIELDS = [
    "iterations",
    "batch_size",
    "num_timesteps",
    "phase_length",
    "learning_rate",
    "disc_learning_rate",
    "guidance_min",
    "guidance_max",
    "guidance_fixed",
    "lambda_adv",
    "lambda_dmd",
    "adv_timesteps",
    "adv_loss",
    "dmd_loss",
    "distil_loss",
    "timesteps",
    "mixed_precision",
    "lora_rank",
    "evaluate_only",
    "pretrained_lora",
    "no_such_key",
    "iter\nations",
    "\x1b[2J",
]
EVAL_FIELDS = ["nfe", "num_samples", "guidance", "teacher_steps", "grid_size", "evaluators", "no_such_eval_key"]
scalar = st.one_of(
    st.integers(-10, 100_000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.sampled_from(["lsgan", "hinge", "mse", "dmd", "none", "flash", "uniform", "bf16", "no", "mystery", "", *HOSTILE_NAMES]),
)
value = st.one_of(scalar, st.lists(scalar, max_size=5))
# half the time nothing (or a good name), so that valid studies are generated too
layer = st.one_of(st.just({}), st.dictionaries(st.sampled_from(FIELDS), value, max_size=5))
eval_layer = st.one_of(st.just({}), st.dictionaries(st.sampled_from(EVAL_FIELDS), value, max_size=3))
name = st.one_of(st.just("demo"), st.sampled_from(["Bad Name", "x", *HOSTILE_NAMES]))


sometimes = st.sampled_from([False, False, True])


def nested(depth: int, leaf):
    for _ in range(depth):
        leaf = [leaf]
    return leaf


@st.composite
def study_data(draw):
    data = {
        "study": {"name": draw(name), "default_scale": "toy", "seeds": draw(st.one_of(st.just([0]), st.lists(st.integers(-2, 3), max_size=3)))},
        "base": draw(layer),
        "scale": {
            "toy": {
                "teacher": "toy-digits",
                "dataset": "toy-digits",
                "iterations": 400,
                "phase_length": 100,
                "eval": {"prompts": "toy-prompts", "evaluators": ["toy-fd"], **draw(eval_layer)},
                **draw(layer),
            }
        },
    }
    if draw(sometimes):
        data["matrix"] = draw(st.dictionaries(st.sampled_from(FIELDS), st.lists(scalar, max_size=4), max_size=2))
    if draw(sometimes):
        data["variants"] = [{"name": draw(st.sampled_from(["a", "b", "a", "bad name", *HOSTILE_NAMES])), **draw(layer)} for _ in range(draw(st.integers(1, 3)))]
    if draw(sometimes):  # another scale, possibly with a hostile name
        data["scale"][draw(st.sampled_from(["big", *HOSTILE_NAMES]))] = draw(layer)
    if draw(sometimes):  # free-form reference values, possibly non-finite or nested deep
        data["paper"] = {"fd": draw(scalar), "deep": nested(draw(st.integers(0, MAX_DEPTH + 5)), 1.5)}
    if draw(sometimes):  # a component with options, possibly nested deep
        data["scale"]["toy"]["teacher"] = {"name": "toy-digits", "channels": nested(draw(st.integers(0, MAX_DEPTH + 5)), 8)}
    return data


def check_problems(exc: StudyError, path: Path) -> None:
    problems = getattr(exc, "problems", [exc])
    assert problems
    for p in problems:
        text = str(p)
        assert text.startswith(f"{path}: ")
        assert len(text.splitlines()) == 1 and "\n" not in text, repr(text)


def check_study(study) -> None:
    for v in study.variants:
        assert isinstance(v.train, TrainConfig)
        assert v.train.iterations > 0 and v.train.num_timesteps % 4 == 0
        assert v.train.phase_length <= v.train.iterations
        assert math.isfinite(v.train.learning_rate) and v.train.guidance_min <= v.train.guidance_max
        assert all(math.isfinite(x) for x in (*v.train.lambda_adv, *v.train.lambda_dmd, *v.train.adv_timesteps))
        # the variant's folder is one safe path component under the run directory
        assert v.key not in (".", "..") and "/" not in v.key and "\\" not in v.key and "\x00" not in v.key
        assert v.key.isprintable() and len(v.key.encode()) <= 255
    assert "/" not in study.name and ".." not in study.name and len(study.name) <= 64


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
            check_problems(exc, path)
            return
    check_study(study)


VALID = """\
[study]
name = "demo"
default_scale = "toy"
seeds = [0, 1]
[base]
teacher = "sd15"
[scale.toy]
teacher = "toy-digits"
dataset = "toy-digits"
iterations = 400
phase_length = 100
adv_loss = { name = "lsgan", label_smoothing = 0.1 }
[scale.toy.eval]
prompts = "toy-prompts"
evaluators = ["toy-fd"]
nfe = [2, 4]
[[variants]]
name = "a"
[matrix]
guidance_max = [13.0, 15.0]
"""
piece = st.sampled_from([*'[]{}=".\'\n#\\, \x00\t-1a', "nan", "inf", "-inf", "\ufeff", "\u2028", "\u00e9", '"""', "[[", "]]"])
damage = st.lists(st.tuples(st.integers(0, len(VALID)), st.integers(0, 12), st.lists(piece, max_size=4).map("".join)), min_size=1, max_size=4)


@settings(max_examples=200, deadline=None)
@given(damage, st.sampled_from(["utf-8", "utf-16", "latin-1"]))
def test_damaged_text_loads_or_fails_with_located_errors(edits, encoding):
    """A valid file with characters deleted and inserted at random (a bad edit, a bad merge): any syntax
    or encoding error, or whatever the damage makes of the values, is one located line."""
    text = VALID
    for at, cut, insert in edits:
        text = text[:at] + insert + text[at + cut :]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "damaged.toml"
        path.write_bytes(text.encode(encoding, errors="replace"))
        try:
            study = load_study(path, components=COMPONENTS)
        except StudyError as exc:
            check_problems(exc, path)
            return
    check_study(study)


def _tree(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.is_dir(), p.read_bytes() if p.is_file() else None) for p in root.rglob("*")}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(study_data())
def test_the_cli_refuses_a_bad_study_before_writing_anything(data):
    """Through ``flashbench run``: a study that loads reaches the runner; any other gets exit status 2,
    one ``flashbench: error:`` line per problem, and no file or folder is created."""
    calls = []
    runner = types.SimpleNamespace(run_study=lambda study, **kwargs: calls.append(study) or kwargs["output_dir"] / "report.html")
    saved = sys.modules.get("flashbench.runner")
    sys.modules["flashbench.runner"] = runner  # type: ignore[assignment]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            path = root / "gen.toml"
            try:
                path.write_text(tomli_w.dumps(data))
            except (TypeError, ValueError):
                return
            before = _tree(root)
            err, out = io.StringIO(), io.StringIO()
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
                rc = main(["run", str(path), "--output", str(root / "run")], components=COMPONENTS)
            if rc == 0:
                assert len(calls) == 1
                check_study(calls[0])
                return
            assert rc == 2 and not calls
            lines = err.getvalue().splitlines()
            assert lines and all(line.startswith(f"flashbench: error: {path}: ") for line in lines), err.getvalue()
            assert "Traceback" not in err.getvalue() and out.getvalue() == ""
            assert _tree(root) == before
    finally:
        if saved is None:
            sys.modules.pop("flashbench.runner", None)
        else:
            sys.modules["flashbench.runner"] = saved
