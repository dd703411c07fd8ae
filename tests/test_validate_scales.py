"""``flashbench validate`` checks every scale (issue 13, item 10): a typo in the paper scale is found on the
machine that writes the study, not on the cluster after the queue; a claim on a metric no evaluator of the
study produces is refused with "did you mean"; two bad options of one component are two lines."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pluggy
import pytest

from flashbench import PROJECT_NAME, hookimpl, hookspecs
from flashbench.cli import main
from flashbench.plugins import collect_components, get_plugin_manager
from flashbench.registry import Component

ROOT = Path(__file__).resolve().parent.parent
LOSSES = ROOT / "studies" / "ablation_losses.toml"  # default scale toy; paper scale: sd15 on LAION shards


def _edited(tmp_path: Path, old: str, new: str, count: int = 1) -> Path:
    """studies/ablation_losses.toml with ``old`` replaced by ``new`` (its first ``count`` occurrences)."""
    text = LOSSES.read_text()
    assert old in text, old
    path = tmp_path / "study.toml"
    path.write_text(text.replace(old, new, count))
    return path


def _errors(argv, components, capsys) -> list[str]:
    assert main(argv, components=components) == 2
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err
    lines = err.splitlines()
    assert all(line.startswith("flashbench: error: ") for line in lines)
    return [line[len("flashbench: error: ") :] for line in lines]


# --- every scale by default --------------------------------------------------------------------------------


def test_a_typo_in_the_paper_scale_is_found_without_asking_for_it(tmp_path, capsys, components):
    path = _edited(tmp_path, 'teacher = "sd15"', 'teacher = "sd51"')
    (line,) = _errors(["validate", str(path)], components, capsys)
    assert line.startswith(f"{path}: base.teacher: unknown teacher 'sd51'; did you mean 'sd15'?")
    # --scale still checks one scale: the toy scale does not use the paper's teacher
    assert main(["validate", str(path), "--scale", "toy"], components=components) == 0
    assert capsys.readouterr().out.startswith("OK: 4 variants (scale toy)")
    assert _errors(["validate", str(path), "--scale", "paper"], components, capsys) == [line]


@pytest.mark.parametrize(
    "value,message",
    [
        ('"abc"', "must be a number, got a string ('abc')"),
        ("nan", "must be a finite number, got nan"),
    ],
)
def test_a_bad_option_of_a_paper_scale_component_is_found(value, message, tmp_path, capsys, components):
    path = _edited(tmp_path, "min_aesthetic = 6.0", f"min_aesthetic = {value}")
    assert _errors(["validate", str(path)], components, capsys) == [f"{path}: base.dataset.min_aesthetic: {message}"]


def test_valid_lists_every_scale_default_first(capsys, components):
    assert main(["validate", str(LOSSES)], components=components) == 0
    out = capsys.readouterr().out
    ok = [line for line in out.splitlines() if line.startswith("OK: ")]
    assert ok == ["OK: 4 variants (scale toy)", "OK: 4 variants (scale paper)"]


def test_a_problem_of_a_variant_is_one_line_though_every_scale_meets_it(tmp_path, capsys, components):
    path = _edited(tmp_path, '[[variants]]\nname = "distil"\n', '[[variants]]\nname = "distil"\niterations = 50\n')
    (line,) = _errors(["validate", str(path)], components, capsys)
    assert line.startswith(f"{path}: variants[0].iterations: phase_length must be <= iterations")


# --- claims name a metric some evaluator of the study produces ----------------------------------------------------


def test_a_claim_on_a_metric_no_evaluator_produces_is_refused_with_did_you_mean(tmp_path, capsys, components):
    path = _edited(tmp_path, 'metric = "clip_score"', 'metric = "clip_scroe"')
    (line,) = _errors(["validate", str(path)], components, capsys)
    assert line.startswith(f"{path}: paper.claims[1].metric: no evaluator of this study produces 'clip_scroe' at any scale; did you mean 'clip_score'?")
    # the metrics it may name: what the toy and the paper evaluators produce, and the paper's "fid" (toy "fd")
    assert line.endswith("metrics: clip, clip_score, fd, fid, kid, lpips_to_teacher")


def test_fdd_is_refused_and_fid_stands_for_the_toy_fd(tmp_path, capsys, components):
    path = _edited(tmp_path, 'metric = "fid"', 'metric = "fdd"')
    (line,) = _errors(["validate", str(path), "--scale", "toy"], components, capsys)
    assert "paper.claims[0].metric: no evaluator of this study produces 'fdd' at any scale; did you mean" in line
    # "fid" is accepted at every scale: the paper scale's fid produces it, the toy scale's toy-fd stands for it
    toy_only = _edited(tmp_path, 'evaluators = ["fid", "clip_score"]', 'evaluators = ["clip_score"]')
    assert main(["validate", str(toy_only)], components=components) == 0, capsys.readouterr().err


def test_a_claim_may_name_the_metric_of_an_evaluator_at_another_scale_only(tmp_path, capsys, components):
    """lpips_to_teacher: the toy scale's toy-lpips produces it, the paper scale's evaluators do not."""
    path = _edited(tmp_path, 'metric = "clip_score"', 'metric = "lpips_to_teacher"')
    assert main(["validate", str(path), "--scale", "paper"], components=components) == 0, capsys.readouterr().err


class UndeclaredEvaluator:
    @hookimpl
    def register_evaluators(self, register):
        register("mystery", lambda config, **context: None, description="an evaluator that declares no metric")


def test_an_evaluator_that_declares_no_metric_makes_any_claim_metric_acceptable(tmp_path, capsys):
    components = collect_components(get_plugin_manager(extra_plugins=[UndeclaredEvaluator()]))
    path = _edited(tmp_path, 'metric = "fid"', 'metric = "anything"')
    assert main(["validate", str(path)], components=components) == 2  # toy-fd, fid, ...: all declared
    assert "'anything'" in capsys.readouterr().err
    path.write_text(path.read_text().replace('evaluators = ["fid", "clip_score"]', 'evaluators = ["fid", "mystery"]'))
    assert main(["validate", str(path)], components=components) == 0, capsys.readouterr().err


def test_every_built_in_evaluator_declares_the_metric_of_its_rows(components):
    """Declared at registration (validation builds nothing); the toy ones built and compared, the others
    (their weights are not here) read from their evaluator classes."""
    evaluators = {c.name: c for c in components["evaluator"] if c.distribution == "flashbench"}
    assert {n: c.metric for n, c in evaluators.items()} == {
        "fid": "fid",
        "kid": "kid",
        "clip_score": "clip_score",
        "lpips": "lpips_to_teacher",
        "toy-fd": "fd",
        "toy-kid": "kid",
        "toy-clip-score": "clip_score",
        "toy-lpips": "lpips_to_teacher",
    }
    for name in ("toy-fd", "toy-kid", "toy-clip-score", "toy-lpips"):
        assert evaluators[name].build({}, device="cpu").metric == evaluators[name].metric, name
    from flashbench_plugins.evaluators._clip_score import ClipScore
    from flashbench_plugins.evaluators._fid import FID, KID
    from flashbench_plugins.evaluators._lpips import LPIPSToTeacher

    for cls, name in ((FID, "fid"), (KID, "kid"), (ClipScore, "clip_score"), (LPIPSToTeacher, "lpips")):
        assert cls.metric == evaluators[name].metric, name


def test_metric_is_declared_by_evaluators_only():
    class LossWithMetric:
        @hookimpl
        def register_losses(self, register):
            register("odd", lambda config, **context: None, tags=("distillation",), metric="fd")

    pm = pluggy.PluginManager(PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    pm.register(LossWithMetric())
    with pytest.raises(ValueError, match="metric= names an evaluator's result rows"):
        collect_components(pm)


# --- every problem of one component's options ------------------------------------------------------------------


def test_two_bad_options_of_one_component_are_two_lines(tmp_path, capsys, components):
    path = _edited(tmp_path, 'teacher = "sd15"', 'teacher = { name = "sd15", pth = "models/sd15", default_lora_rank = 0 }')
    lines = _errors(["validate", str(path)], components, capsys)
    assert lines == [
        f"{path}: base.teacher.pth: unknown option 'pth' for teacher 'sd15'; did you mean 'path'? "
        "options: path, default_lora_rank, lora_targets, dtype, random_weights",
        f"{path}: base.teacher: invalid options for teacher 'sd15': default_lora_rank must be positive, got 0; "
        "options: path, default_lora_rank, lora_targets, dtype, random_weights",
    ]


def test_two_values_the_config_refuses_are_two_lines(tmp_path, capsys, components):
    path = _edited(tmp_path, 'teacher = "sd15"', 'teacher = { name = "sd15", default_lora_rank = 0, dtype = "f32" }')
    lines = _errors(["validate", str(path)], components, capsys)
    assert [line.split(": ", 3)[2] for line in lines] == ["invalid options for teacher 'sd15'"] * 2
    assert "default_lora_rank must be positive, got 0" in lines[0] and "dtype must be float32, bfloat16 or float16" in lines[1]


def test_config_problems_lists_each_value_alone_then_the_combination(components):
    sd15 = components.get("teacher", "sd15")
    assert sd15.config_problems({}) == [] and sd15.config_problems({"default_lora_rank": 8}) == []
    assert sd15.config_problems({"default_lora_rank": 0, "dtype": "f32", "path": "x"}) == [
        "default_lora_rank must be positive, got 0",
        "dtype must be float32, bfloat16 or float16, got 'f32'",
    ]
    web = components.get("dataset", "webdataset")
    problems = web.config_problems({"shards": ("a.tar",), "num_workers": -1, "resolution": 0})
    assert len(problems) == 2 and "num_workers" in problems[0] and "resolution" in problems[1], problems


@dataclasses.dataclass(frozen=True)
class Needs:
    root: str  # required
    low: int = 0
    high: int = 1

    def __post_init__(self):
        if not self.root:
            raise ValueError("root must not be empty")
        if self.low < 0:
            raise ValueError("low must be >= 0")
        if self.high < 0:
            raise ValueError("high must be >= 0")
        if self.low > self.high:
            raise ValueError("low must be <= high")


def test_config_problems_with_a_required_option_and_a_rule_between_two():
    c = Component("dataset", "needs", lambda config: config, Needs)
    assert c.config_problems({"root": "r", "low": -1, "high": -1}) == ["low must be >= 0", "high must be >= 0"]
    assert c.config_problems({"root": "r", "low": 3, "high": 2}) == ["low must be <= high"]  # each fine alone
    assert c.config_problems({"root": "", "low": -1}) == ["root must not be empty"]  # the required one first
    (missing,) = c.config_problems({"low": -1, "high": -1})  # without it, the config's one error
    assert "root" in missing
