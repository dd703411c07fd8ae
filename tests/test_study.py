"""Study files: resolution of variants, and one clear located error for each kind of mistake."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flashbench.config import ComponentSpec, EvalConfig, TrainConfig
from flashbench.errors import StudyError, UserError
from flashbench.study import MAX_VARIANTS, Study, load_study, study_scales, validate_study

DATA = Path(__file__).parent / "data"
LOSSES = DATA / "studies" / "losses.toml"

TOY = {
    "teacher": '"toy-digits"',
    "dataset": '"toy-digits"',
    "iterations": "400",
    "phase_length": "100",
}
TOY_EVAL = {"prompts": '"toy-prompts"', "evaluators": '["toy-fd"]'}


def study_text(*, study: str = "", base: str = "", toy: dict | None = None, toy_eval: dict | None = None, tail: str = "", name: str = '"demo"') -> str:
    """A valid toy study, with extra lines and overridden keys."""
    toy_lines = "\n".join(f"{k} = {v}" for k, v in {**TOY, **(toy or {})}.items() if v is not None)
    eval_lines = "\n".join(f"{k} = {v}" for k, v in {**TOY_EVAL, **(toy_eval or {})}.items() if v is not None)
    name_line = f"name = {name}\n" if name is not None else ""
    return (
        f'[study]\n{name_line}default_scale = "toy"\n{study}\n'
        f'[base]\nteacher = "sd15"\n{base}\n'
        f"[scale.toy]\n{toy_lines}\n"
        f"[scale.toy.eval]\n{eval_lines}\n"
        f"{tail}\n"
    )


def problems_of(write_study, fake_components, text, **kwargs) -> list[StudyError]:
    return validate_study(write_study(text), components=fake_components, **kwargs)


# --- resolution ------------------------------------------------------------------------------------


def test_example_study_resolves_at_its_default_scale(fake_components):
    study = load_study(LOSSES, components=fake_components)
    assert study.scale == "toy"
    assert study.scales == ("paper", "toy")
    assert study.name == "ablation_losses" and study.panel == "fig5a" and study.reproduces == "Figure 5a"
    assert study.variant_names == ("distil", "distil+adv", "distil+dmd", "all")
    assert [(v.name, v.seed) for v in study.variants[:3]] == [("distil", 0), ("distil", 1), ("distil+adv", 0)]
    assert len(study.variants) == 8 and study.seeds == (0, 1) and study.primary_nfe == 2
    distil = study.variants[0]
    # defaults <- base <- scale <- variant
    assert distil.train.teacher == ComponentSpec("toy-digits", {"resolution": 16})  # scale over base
    assert distil.train.guidance_min == 3.0 and isinstance(distil.train.guidance_min, float)  # base, int -> float
    assert distil.train.iterations == 400 and distil.train.num_timesteps == 16  # scale
    assert distil.train.adv_loss == ComponentSpec("none") and not distil.train.adv_loss.enabled  # variant
    assert distil.train.learning_rate == TrainConfig().learning_rate  # default
    assert distil.eval.nfe == (2, 4) and distil.eval.num_samples == 500
    assert distil.eval.evaluators == (ComponentSpec("toy-fd"), ComponentSpec("toy-clip"))
    assert study.variants[4].eval.nfe == (2,)  # [variants.eval]
    assert distil.axes == {"variant": "distil"}
    assert study.claims[0]["variant"] == "distil+adv"


def test_paper_scale_checks_components_of_the_paper_recipe(fake_components):
    problems = validate_study(LOSSES, scale="paper", components=fake_components)
    keys = {p.key for p in problems}
    assert "base.teacher" in keys  # sd15 is not installed here
    assert "base.dataset" in keys  # the default, image-captions, neither
    assert all(str(p).startswith(f"{LOSSES}: ") for p in problems)


def test_unknown_scale_argument(fake_components):
    with pytest.raises(StudyError) as info:
        load_study(LOSSES, scale="toys", components=fake_components)
    assert info.value.key == "scale"
    assert "did you mean 'toy'" in info.value.message and "paper, toy" in info.value.message


def test_neither_variants_nor_matrix_gives_one_base_variant(write_study, fake_components):
    study = load_study(write_study(study_text()), components=fake_components)
    assert study.variant_names == ("base",)
    (v,) = study.variants
    assert v.seed == 0 and v.axes == {} and v.key == "base-s0"
    assert v.train.teacher == ComponentSpec("toy-digits")
    assert v.eval.prompts == ComponentSpec("toy-prompts")
    assert study.primary_nfe == EvalConfig().nfe[0]
    assert study.title == "demo"


def test_matrix_only_names_and_cartesian_product(write_study, fake_components):
    text = study_text(
        study="seeds = [3, 4]",
        tail="""
[matrix]
adv_loss = ["lsgan", { name = "lsgan", head_channels = 32 }, "hinge"]
num_timesteps = [16, 32]
eval.nfe = [[1], [2, 4]]
""",
    )
    study = load_study(write_study(text), components=fake_components)
    assert len(study.variant_names) == 3 * 2 * 2
    assert len(study.variants) == 3 * 2 * 2 * 2
    assert study.variant_names[0] == "adv_loss=lsgan,num_timesteps=16,eval.nfe=[1]"
    assert study.variant_names[4] == "adv_loss=lsgan(head_channels=32),num_timesteps=16,eval.nfe=[1]"
    v = study.variants[8]
    assert v.train.adv_loss == ComponentSpec("lsgan", {"head_channels": 32})
    assert v.axes == {"adv_loss": {"name": "lsgan", "head_channels": 32}, "num_timesteps": 16, "eval.nfe": [1]}
    assert study.variants[2].eval.nfe == (2, 4) and study.primary_nfe == 1  # the first variant's first NFE
    keys = [v.key for v in study.variants]
    assert len(set(keys)) == len(keys)
    assert all("/" not in k and " " not in k for k in keys)


def test_single_axis_name_and_quoted_eval_axis(write_study, fake_components):
    text = study_text(
        toy_eval={"nfe": "[1, 2, 4]"},
        study="primary_nfe = 4",
        tail="""
[matrix]
"eval.num_samples" = [10, 20]
""",
    )
    study = load_study(write_study(text), components=fake_components)
    assert study.variant_names == ("eval.num_samples=10", "eval.num_samples=20")
    assert [v.eval.num_samples for v in study.variants] == [10, 20]


def test_matrix_applies_to_each_variant_and_wins(write_study, fake_components):
    text = study_text(
        toy={"guidance_min": "3", "guidance_max": "13"},
        tail="""
[[variants]]
name = "fixed"
guidance_min = 7
guidance_max = 7
[[variants]]
name = "sampled"

[matrix]
num_timesteps = [16, 64]
guidance_max = [13, 15]
""",
    )
    study = load_study(write_study(text), components=fake_components)
    assert study.variant_names[:2] == ("fixed/num_timesteps=16,guidance_max=13", "fixed/num_timesteps=16,guidance_max=15")
    assert len(study.variant_names) == 2 * 2 * 2
    fixed = study.variants[1]
    assert fixed.train.guidance_min == 7.0 and fixed.train.guidance_max == 15.0  # variant, then matrix
    assert fixed.axes == {"variant": "fixed", "num_timesteps": 16, "guidance_max": 15}
    sampled = study.variants[4]
    assert sampled.train.guidance_min == 3.0 and sampled.train.guidance_max == 13.0


def test_keys_are_filesystem_safe_and_unique():
    from flashbench.study import _slug

    names = ["distil+adv", "distil_adv", "a/b=c,d", "a_b=c,d", "x y", "x_y", ".hidden", "é"]
    slugs = [_slug(n) for n in names]
    assert len(set(slugs)) == len(slugs)
    assert all("/" not in s and " " not in s and not s.startswith(".") for s in slugs)
    assert _slug("distil+adv") == "distil+adv"  # readable where possible


def test_to_data_is_json_and_round_trips(fake_components):
    study = load_study(LOSSES, components=fake_components)
    data = json.loads(json.dumps(study.to_data()))
    assert data["variants"][0]["train"]["teacher"] == {"name": "toy-digits", "resolution": 16}
    assert data["variants"][0]["train"]["lambda_adv"] == [0.0, 0.1, 0.2, 0.3]
    assert data["variants"][0]["eval"]["evaluators"] == ["toy-fd", "toy-clip"]
    assert data["variants"][0]["key"] == "distil-s0"
    assert Study.from_data(data) == study


def test_component_options_are_converted_and_frozen(write_study, fake_components):
    text = study_text(toy={"teacher": '{ name = "toy-digits", channels = [4, 8, 16] }', "timesteps": '{ name = "flash", sigma_scale = 2 }'})
    (v,) = load_study(write_study(text), components=fake_components).variants
    assert v.train.teacher.options == {"channels": (4, 8, 16)}
    assert v.train.timesteps.options == {"sigma_scale": 2.0}
    assert isinstance(v.train.timesteps.options["sigma_scale"], float)
    hash(v.train)  # a frozen config stays hashable


def test_study_scales():
    assert study_scales(LOSSES) == ("paper", "toy")
    assert study_scales(DATA / "no-such-file.toml") == ("paper",)


def test_loader_does_not_import_torch():
    import flashbench.study as package

    modules = sorted(Path(package.__file__).parent.glob("*.py"))
    assert len(modules) > 1  # the package's modules, not only its __init__
    for module in modules:
        assert "import torch" not in module.read_text(encoding="utf-8"), module.name


# --- malformed studies -------------------------------------------------------------------------------

BIG = ", ".join(str(4 * i + 4) for i in range(7))
BAD = {
    "toml-syntax": (study_text(tail="[broken"), None, "line"),
    "unknown-section": (study_text(tail="[variant]\nname = 'x'"), "variant", "did you mean 'variants'"),
    "top-level-eval": (study_text(tail="[eval]\nnfe = [2]"), "eval", "[base.eval]"),
    "unknown-key": (study_text(base="iteration = 5"), "base.iteration", "did you mean 'iterations'?"),
    "unknown-eval-key": (study_text(toy_eval={"num_sample": "5"}), "scale.toy.eval.num_sample", "did you mean 'num_samples'"),
    "unknown-study-key": (study_text(study="titel = 'x'"), "study.titel", "did you mean 'title'"),
    "unknown-component": (study_text(toy={"adv_loss": '"lsgn"'}), "scale.toy.adv_loss", "did you mean 'lsgan'"),
    "unknown-evaluator": (study_text(toy_eval={"evaluators": '["toy-fid"]'}), "scale.toy.eval.evaluators[0]", "did you mean 'toy-fd'"),
    "none-is-not-a-teacher": (study_text(toy={"teacher": '"none"'}), "scale.toy.teacher", "unknown teacher 'none'"),
    "wrong-tag": (study_text(toy={"adv_loss": '"mse"'}), "scale.toy.adv_loss", "not tagged 'adversarial'"),
    "unknown-option": (study_text(toy={"adv_loss": '{ name = "lsgan", head_chanels = 3 }'}), "scale.toy.adv_loss.head_chanels", "did you mean 'head_channels'"),
    "option-type": (study_text(toy={"adv_loss": '{ name = "lsgan", head_channels = "x" }'}), "scale.toy.adv_loss.head_channels", "must be an integer"),
    "option-value": (study_text(toy={"adv_loss": '{ name = "lsgan", label_smoothing = 2.0 }'}), "scale.toy.adv_loss", "label_smoothing must be in [0, 1)"),
    "option-without-config": (study_text(toy={"solver": '{ name = "ddim", eta = 0 }'}), "scale.toy.solver.eta", "takes no options"),
    "component-table-without-name": (study_text(toy={"solver": '{ eta = 0 }'}), "scale.toy.solver", "needs a name"),
    "string-for-int": (study_text(toy={"iterations": '"400"'}), "scale.toy.iterations", "must be an integer, got a string"),
    "bool-for-int": (study_text(toy={"batch_size": "true"}), "scale.toy.batch_size", "got a boolean"),
    "float-for-int": (study_text(toy={"iterations": "400.0"}), "scale.toy.iterations", "got a float"),
    "string-for-bool": (study_text(toy={"gradient_checkpointing": '"yes"'}), "scale.toy.gradient_checkpointing", "true or false"),
    "nan": (study_text(toy={"guidance_min": "nan"}), "scale.toy.guidance_min", "finite"),
    "inf": (study_text(toy={"learning_rate": "inf"}), "scale.toy.learning_rate", "finite"),
    "negative-iterations": (study_text(toy={"iterations": "-3"}), "scale.toy.iterations", "must be a positive integer, got -3"),
    "zero-batch": (study_text(toy={"batch_size": "0"}), "scale.toy.batch_size", "positive integer"),
    "zero-lr": (study_text(toy={"disc_learning_rate": "0.0"}), "scale.toy.disc_learning_rate", "positive number"),
    "negative-lora-rank": (study_text(toy={"lora_rank": "-1"}), "scale.toy.lora_rank", ">= 0"),
    "zero-samples": (study_text(toy_eval={"num_samples": "0"}), "scale.toy.eval.num_samples", "positive integer"),
    "k-not-multiple-of-4": (study_text(toy={"num_timesteps": "30"}), "scale.toy.num_timesteps", "multiple of 4"),
    "guidance-min-above-max": (study_text(toy={"guidance_min": "14"}), "scale.toy.guidance_min", "guidance_max"),
    "phase-longer-than-run": (study_text(toy={"phase_length": "1000"}), "scale.toy.phase_length", "iterations"),
    "lambda-length": (study_text(toy={"lambda_adv": "[0, 0.1]"}), "scale.toy.lambda_adv", "one value per phase"),
    "lambda-negative": (study_text(toy={"lambda_dmd": "[0, -0.1, 0.5, 0.7]"}), "scale.toy.lambda_dmd[1]", ">= 0"),
    "adv-timestep-range": (study_text(toy={"adv_timesteps": "[0.5, 1.5]"}), "scale.toy.adv_timesteps[1]", "[0, 1]"),
    "mixed-precision": (study_text(toy={"mixed_precision": '"fp32"'}), "scale.toy.mixed_precision", "'bf16'"),
    "nfe-zero": (study_text(toy_eval={"nfe": "[0, 2]"}), "scale.toy.eval.nfe[0]", "positive integer"),
    "nfe-not-array": (study_text(toy_eval={"nfe": "2"}), "scale.toy.eval.nfe", "must be an array"),
    "empty-matrix": (study_text(tail="[matrix]"), "matrix", "empty"),
    "empty-axis": (study_text(tail="[matrix]\nadv_loss = []"), "matrix.adv_loss", "empty axis"),
    "unknown-axis": (study_text(tail="[matrix]\nadv_los = ['lsgan']"), "matrix.adv_los", "did you mean 'adv_loss'"),
    "axis-not-array": (study_text(tail="[matrix]\nadv_loss = 'lsgan'"), "matrix.adv_loss", "must be an array"),
    "duplicate-axis-value": (study_text(tail="[matrix]\nadv_loss = ['lsgan', 'lsgan']"), "matrix.adv_loss[1]", "duplicate"),
    "axis-wrong-tag": (study_text(tail="[matrix]\nadv_loss = ['lsgan', 'mse']"), "matrix.adv_loss[1]", "not tagged"),
    "huge-matrix": (
        study_text(tail=f"[matrix]\nnum_timesteps = [{BIG}]\nbatch_size = [1,2,3,4,5,6,7]\nlog_every = [1,2,3,4,5,6,7]"),
        "matrix",
        f"343 variants (7 num_timesteps x 7 batch_size x 7 log_every) exceed the limit of {MAX_VARIANTS}",
    ),
    "duplicate-variant": (study_text(tail="[[variants]]\nname = 'a'\n[[variants]]\nname = 'a'"), "variants[1].name", "duplicate"),
    "variant-without-name": (study_text(tail="[[variants]]\niterations = 10"), "variants[0].name", "required"),
    "variant-bad-value": (study_text(tail="[[variants]]\nname = 'a'\niterations = -1"), "variants[0].iterations", "positive"),
    "variant-bad-name": (study_text(tail="[[variants]]\nname = 'a/b'"), "variants[0].name", "must match"),
    "unknown-default-scale": (study_text().replace('default_scale = "toy"', 'default_scale = "toys"'), "study.default_scale", "did you mean 'toy'"),
    "bad-scale-name": (study_text(tail='[scale."Big One"]\niterations = 5'), 'scale.Big One', "must match"),
    "other-scale-types-checked": (study_text(tail="[scale.big]\niterations = -5"), "scale.big.iterations", "positive"),
    "empty-seeds": (study_text(study="seeds = []"), "study.seeds", "must not be empty"),
    "seed-type": (study_text(study='seeds = [0, "1"]'), "study.seeds[1]", "must be an integer"),
    "duplicate-seeds": (study_text(study="seeds = [1, 1]"), "study.seeds", "duplicate"),
    "bad-study-name": (study_text(name='"Demo Study"'), "study.name", "[a-z0-9_-]+"),
    "missing-study-name": (study_text(name=None), "study.name", "required"),
    "missing-study-section": (study_text().replace("[study]", "[stud]"), "study", "missing [study]"),
    "primary-nfe-not-evaluated": (study_text(study="primary_nfe = 8"), "study.primary_nfe", "not among"),
    "claim-better": (
        study_text(tail="[[paper.claims]]\nmetric='fd'\nbetter='smaller'\nvariant='base'\nthan='base'"),
        "paper.claims[0].better",
        "'lower', 'higher'",
    ),
    "claim-unknown-variant": (
        study_text(tail="[[paper.claims]]\nmetric='fd'\nbetter='lower'\nvariant='base'\nthan='bse'"),
        "paper.claims[0].than",
        "did you mean 'base'",
    ),
    "claim-missing-key": (study_text(tail="[[paper.claims]]\nmetric='fd'\nbetter='lower'\nvariant='base'"), "paper.claims[0].than", "required"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_malformed_study_is_located(case, write_study, fake_components):
    text, key, fragment = BAD[case]
    path = write_study(text)
    problems = validate_study(path, components=fake_components)
    assert problems, f"{case}: no problem found"
    assert all(isinstance(p, StudyError) and isinstance(p, UserError) for p in problems)
    assert all(str(p).startswith(f"{path}: ") for p in problems)
    assert all("\n" not in str(p) for p in problems)
    matching = [p for p in problems if p.key == key and fragment in p.message]
    assert matching, f"{case}: expected {key}: ...{fragment}..., got:\n" + "\n".join(map(str, problems))
    expected = f"{path}: {key}: " if key else f"{path}: "
    assert str(matching[0]).startswith(expected)
    with pytest.raises(StudyError) as info:
        load_study(path, components=fake_components)
    assert [str(p) for p in info.value.problems] == [str(p) for p in problems]
    assert str(info.value) == str(problems[0])


def test_toml_syntax_error_has_line_and_column(write_study, fake_components):
    (problem,) = problems_of(write_study, fake_components, '[study]\nname = "demo"\ntitle = "x\n')
    assert "invalid TOML" in problem.message and "line 3" in problem.message and "column" in problem.message


def test_missing_file_and_directory(tmp_path, fake_components):
    (problem,) = validate_study(tmp_path / "nope.toml", components=fake_components)
    assert "no such study file" in str(problem)
    (problem,) = validate_study(tmp_path, components=fake_components)
    assert "is a directory" in str(problem)


def test_every_problem_is_reported(write_study, fake_components):
    text = study_text(
        study="seeds = []\ntitel = 'x'",
        base="iteration = 5",
        toy={"iterations": "-3", "num_timesteps": "30", "adv_loss": '"mse"', "guidance_min": "nan"},
        toy_eval={"nfe": "[0]"},
        tail="[matrix]\nadv_loss = []\n[[variants]]\nname = 'a'\n[[variants]]\nname = 'a'",
    )
    keys = [p.key for p in problems_of(write_study, fake_components, text)]
    for key in (
        "study.seeds",
        "study.titel",
        "base.iteration",
        "scale.toy.iterations",
        "scale.toy.num_timesteps",
        "scale.toy.guidance_min",
        "scale.toy.eval.nfe[0]",
        "matrix.adv_loss",
        "variants[1].name",
    ):
        assert key in keys, key
    assert len(keys) == len(set(keys))  # each problem once, though it touches every variant


def test_component_names_are_checked_only_at_the_resolved_scale(write_study, fake_components):
    text = study_text(tail='[scale.big]\nteacher = "sdxl"')
    assert problems_of(write_study, fake_components, text) == []
    (problem, *_) = problems_of(write_study, fake_components, text, scale="big")
    assert problem.key == "scale.big.teacher" and "unknown teacher 'sdxl'" in problem.message


def test_defaults_that_are_not_installed_point_at_base(write_study, fake_components):
    problems = problems_of(write_study, fake_components, study_text(toy={"dataset": None}))
    assert [(p.key, "the default" in p.message) for p in problems] == [("base.dataset", True)]


# --- hostile input at the loader's level (the CLI corpus is tests/test_bad_input.py) ------------------


def test_a_bad_value_does_not_fall_back_to_a_lower_layer(write_study, fake_components):
    """A broken value is reported where it is written, and nothing else: resolving with [base]'s value or
    the default instead would report problems the user did not make (an unknown sd15, a phase longer
    than a default run)."""
    for toy, base, key in (
        ({"teacher": "5"}, "", "scale.toy.teacher"),
        ({"phase_length": "0"}, "", "scale.toy.phase_length"),
        ({"guidance_max": "nan"}, "guidance_min = 14\nguidance_max = 15", "scale.toy.guidance_max"),
    ):
        problems = problems_of(write_study, fake_components, study_text(toy=toy, base=base))
        assert [p.key for p in problems] == [key], [str(p) for p in problems]


def test_error_text_is_one_line_but_keeps_the_raw_key(write_study, fake_components):
    (problem,) = problems_of(write_study, fake_components, study_text(base='"a\\nb\\u2028c" = 1'))
    assert problem.key == "base.a\nb\u2028c"
    assert len(str(problem).splitlines()) == 1
    assert ": base.a\\nb\\u2028c: unknown key 'a\\nb\\u2028c'" in str(problem)


def test_byte_order_mark_is_accepted(tmp_path, fake_components):
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf" + study_text().encode())
    assert load_study(path, components=fake_components).variant_names == ("base",)


def test_study_scales_of_hostile_files(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('[study]\nname = "x"\n[scale.toy]\n[scale."../x"]\n[scale."a\\nb"]\n')
    assert study_scales(path) == ("paper", "toy")  # invalid names are reported by validation, not resolved
    path.write_text("x = " + "[" * 20_000 + "]" * 20_000)
    assert study_scales(path) == ("paper",)
    assert study_scales(tmp_path) == ("paper",)


def test_limits_are_located(write_study, fake_components):
    from flashbench.study import MAX_DEPTH, MAX_SEEDS

    cases = {
        "seeds = [-1]": "study.seeds[0]",
        f"seeds = {list(range(MAX_SEEDS + 1))}": "study.seeds",
    }
    for header, key in cases.items():
        (problem,) = problems_of(write_study, fake_components, study_text(study=header))
        assert problem.key == key, str(problem)
    deep = "[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)
    (problem,) = problems_of(write_study, fake_components, study_text(tail=f"[paper]\nx = {deep}"))
    assert problem.key.startswith("paper.x[0]") and "nested more than" in problem.message
    ok = "[" * (MAX_DEPTH - 2) + "]" * (MAX_DEPTH - 2)
    assert problems_of(write_study, fake_components, study_text(tail=f"[paper]\nx = {ok}")) == []


def test_a_claim_is_judged_only_at_the_scales_it_names():
    from flashbench.study import load_study

    root = __import__("pathlib").Path(__file__).resolve().parent.parent
    toy = load_study(root / "studies" / "ablation_guidance.toml", scale="toy")
    paper = load_study(root / "studies" / "ablation_guidance.toml", scale="paper")
    assert all("toy" in c["text"] for c in toy.claims) and len(toy.claims) == 4
    assert not any("toy" in c["text"] for c in paper.claims) and len(paper.claims) == 5
    # a paper-scale claim naming guidance values the toy matrix lacks is not checked at toy scale
    assert {c["variant"] for c in paper.claims} - {v.name for v in toy.variants}
