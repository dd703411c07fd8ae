"""Bad input (issue #5): a corpus of malformed and hostile study files and command lines, driven through
the real CLI. Each gets exit status 2 and one line on stderr per problem, naming the file and the key
(and the allowed values where there is a set of them), no traceback, nothing on stdout, and nothing
written: the whole working folder (the would-be ``runs/<name>-<scale>`` included, since the tests run
in it) is byte-for-byte and timestamp-for-timestamp the same afterwards."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pluggy
import pytest

from conftest import FakePlugin
from flashbench import PROJECT_NAME, hookimpl, hookspecs
from flashbench.cli import main
from flashbench.plugins import collect_components
from flashbench.study import MAX_DEPTH, MAX_FILE_BYTES, MAX_NAME_CHARS, MAX_SEEDS, MAX_VARIANTS

REPO = Path(__file__).resolve().parent.parent
F = "study.toml"  # relative: the tests run in their tmp folder, so the error names it as given


# --- the components: the shared fakes, plus two with options that become paths or pass unconverted -----


@dataclass(frozen=True)
class PathTeacherConfig:
    path: str = ""  # a folder the teacher would read


@dataclass(frozen=True)
class WeightedConfig:
    weights: tuple = ((0.5, 0.5),)  # nested arrays: not a type the loader converts, passed through


class HostilePlugin:
    @hookimpl
    def register_teachers(self, register):
        register("from-folder", lambda config, **context: config, config=PathTeacherConfig, description="reads a folder")

    @hookimpl
    def register_timestep_distributions(self, register):
        register("weighted", lambda config, **context: config, config=WeightedConfig, description="nested weights")


class PaperScalePlugin:
    """Stand-ins for the built-ins the paper scale names (registered on every machine, weights or not):
    ``flashbench validate`` resolves every scale, so the valid study's paper scale must resolve too."""

    @hookimpl
    def register_teachers(self, register):
        register("sd15", lambda config, **context: config, description="stand-in for the SD1.5 teacher")

    @hookimpl
    def register_datasets(self, register):
        for name in ("image-captions", "coco2017-val"):
            register(name, lambda config, **context: config, description=f"stand-in for {name}")

    @hookimpl
    def register_evaluators(self, register):
        for name in ("fid", "clip_score"):
            register(name, lambda config, **context: config, description=f"stand-in for {name}")


@pytest.fixture(scope="module")
def components():
    pm = pluggy.PluginManager(PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    pm.register(FakePlugin(), name="fake-plugin")
    pm.register(HostilePlugin(), name="hostile-plugin")
    pm.register(PaperScalePlugin(), name="paper-scale-plugin")
    return collect_components(pm)


# --- a valid toy study, and ways to break it ------------------------------------------------------------

TOY = {"teacher": '"toy-digits"', "dataset": '"toy-digits"', "iterations": "400", "phase_length": "100"}
TOY_EVAL = {"prompts": '"toy-prompts"', "evaluators": '["toy-fd"]'}


def study(
    *,
    header: str = "",
    base: str = "",
    toy: dict | None = None,
    toy_eval: dict | None = None,
    tail: str = "",
    name: str = '"demo"',
    default_scale: str = '"toy"',
) -> str:
    """A valid toy study of the shared fake components: extra lines per section, overridden keys."""
    toy_lines = "\n".join(f"{k} = {v}" for k, v in {**TOY, **(toy or {})}.items())
    eval_lines = "\n".join(f"{k} = {v}" for k, v in {**TOY_EVAL, **(toy_eval or {})}.items())
    return (
        f"[study]\nname = {name}\ndefault_scale = {default_scale}\n{header}\n"
        f'[base]\nteacher = "sd15"\n{base}\n'
        f"[scale.toy]\n{toy_lines}\n[scale.toy.eval]\n{eval_lines}\n{tail}\n"
    )


VALID = study()


def deep_array(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


# --- the corpus -------------------------------------------------------------------------------------------


@dataclass
class Case:
    id: str
    argv: list[str]  # without the command for study cases ("validate"/"run" go in front)
    key: str | None  # what the error line names after the file: a key, an option, or None
    fragments: tuple[str, ...] = ()  # more text the error must hold: allowed values, "did you mean"
    file: str | None = F  # the file the error names (None: a command-line problem)
    files: dict = field(default_factory=dict)  # relative path -> str or bytes, written before the snapshot
    setup: Callable[[Path], None] | None = None
    commands: tuple[str, ...] = ("validate", "run")
    category: str = ""


CASES: list[Case] = []


def bad(category: str, id: str, text: str | bytes, key: str | None, *fragments: str, name: str = F, argv: tuple = (), commands=("validate", "run")) -> None:
    """A study file that must be refused by both ``validate`` and ``run``."""
    CASES.append(Case(id, [name, *argv], key, fragments, file=name, files={name: text}, commands=commands, category=category))


def cli(
    category: str, id: str, argv: list[str], key: str | None, *fragments: str, file: str | None = None, files: dict | None = None, setup=None, commands=("",)
) -> None:
    """A command line that must be refused (``commands=("",)``: argv is complete)."""
    CASES.append(Case(id, argv, key, fragments, file=file, files=files or {}, setup=setup, commands=commands, category=category))


# syntax and encoding: the error names the file, and the line (tomllib does not name keys)
bad("syntax", "unclosed-table-header", study(tail="[broken"), None, "invalid TOML", "line 16")
bad("syntax", "key-without-value", study(base="iterations ="), None, "invalid TOML", "'iterations ='")
bad("syntax", "unterminated-string", study(header='title = "oops'), None, "invalid TOML", "line 4", "'title = \"oops'")
bad("syntax", "invalid-escape", study(header=r'title = "a\qb"'), None, "invalid TOML")
bad("syntax", "duplicate-key", study(toy={"iterations": "400\niterations = 500"}), None, "Cannot overwrite a value", "'iterations = 500'")
bad("syntax", "duplicate-table", study(tail="[base]\nlora_rank = 4"), None, "Cannot declare", "base")
bad("syntax", "nul-byte-in-text", study(header="title = 'x'\x00"), None, "invalid TOML", "line 4", "\\x00")
bad("syntax", "empty-file", "", "study", "missing [study] section")
bad("syntax", "only-comments", "# a study, one day\n", "study", "missing [study] section")
bad("syntax", "binary-file", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)), None, "not UTF-8 text (line 1, byte 0)")
bad("syntax", "latin-1-text", study(header='title = "caf\u00e9"').encode("latin-1"), None, "not UTF-8 text (line 4")
bad("syntax", "utf-16-text", VALID.encode("utf-16"), None, "not UTF-8 text (line 1")
bad("syntax", "json-file", json.dumps({"study": {"name": "demo"}}), None, "invalid TOML", "study files are TOML (.toml), not .json", name="study.json")
bad("syntax", "yaml-file", "study:\n  name: demo\n", None, "invalid TOML", "not .yaml", name="study.yaml")
bad("syntax", "10-MB-file", VALID + "# " + "x" * 10_000_000 + "\n", None, "is 10.0 MB", f"at most {MAX_FILE_BYTES // 1024} KiB")
bad("syntax", "deep-nesting-beyond-the-parser", study(tail=f"[paper]\nx = {deep_array(20_000)}"), None, "nested too deeply")
bad("syntax", "deep-nesting-of-tables", study(tail="[paper." + ".".join(["a"] * 1000) + "]"), "paper" + ".a" * MAX_DEPTH, f"nested more than {MAX_DEPTH}")
bad(
    "syntax",
    "deep-nesting-in-an-option",
    study(toy={"teacher": f'{{ name = "toy-digits", channels = {deep_array(40)} }}'}),
    "scale.toy.teacher.channels" + "[0]" * (MAX_DEPTH - 3),
    f"nested more than {MAX_DEPTH}",
)

# wrong types and shapes
bad(
    "type",
    "study-not-a-table",
    study().replace("[study]\nname = \"demo\"\ndefault_scale = \"toy\"\n", "study = 5\n"),
    "study",
    "must be a table, got an integer (5)",
)
bad("type", "base-array-of-tables", study().replace("[base]\nteacher = \"sd15\"\n", "[[base]]\nteacher = \"sd15\"\n"), "base", "must be a table, got an array")
bad("type", "matrix-array-of-tables", study(tail='[[matrix]]\nadv_loss = ["lsgan"]'), "matrix", "must be a table of axes")
bad("type", "variants-a-table", study(tail='[variants]\nname = "a"'), "variants", "must be an array of tables")
bad("type", "study-name-integer", study(name="5"), "study.name", "must be a string, got an integer (5)")
bad("type", "seeds-a-string", study(header='seeds = "0"'), "study.seeds", "must be an array, got a string")
bad("type", "date-for-integer", study(toy={"iterations": "1979-05-27"}), "scale.toy.iterations", "got a date/time (1979-05-27)")
bad("type", "string-for-float", study(toy={"learning_rate": '"1e-5"'}), "scale.toy.learning_rate", "must be a number, got a string")
bad("type", "float-for-integer", study(toy={"batch_size": "4.0"}), "scale.toy.batch_size", "must be an integer, got a float (4.0)")
bad("type", "lambda-not-an-array", study(toy={"lambda_adv": "0.1"}), "scale.toy.lambda_adv", "must be an array")
bad("type", "lambda-item-string", study(toy={"lambda_adv": '[0, 0.1, "x", 0.3]'}), "scale.toy.lambda_adv[2]", "must be a number")
bad("type", "integer-for-bool", study(toy={"evaluate_only": "1"}), "scale.toy.evaluate_only", "must be true or false")
bad("type", "eval-not-a-table", study(base="eval = 5"), "base.eval", "must be a table of evaluation settings")
bad("type", "component-integer", study(toy={"teacher": "5"}), "scale.toy.teacher", "must be a component name or a table")
bad("type", "component-table-without-name", study(toy={"solver": "{}"}), "scale.toy.solver", "needs a name")
bad("type", "component-empty-name", study(toy={"adv_loss": '""'}), "scale.toy.adv_loss", "empty string")
bad("type", "component-name-integer", study(toy={"adv_loss": "{ name = 5 }"}), "scale.toy.adv_loss.name", "must be a component name")
bad("type", "tracker-not-allowed", study(toy={"trackers": '["tensorboard", "mlflow"]'}), "scale.toy.trackers[1]", "must be one of 'tensorboard', 'wandb'")
bad("type", "precision-not-allowed", study(toy={"mixed_precision": '"fp32"'}), "scale.toy.mixed_precision", "'no', 'bf16', 'fp16'")
bad(
    "type",
    "claim-direction",
    study(tail="[[paper.claims]]\nmetric='fd'\nbetter='smaller'\nvariant='base'\nthan='base'"),
    "paper.claims[0].better",
    "'lower', 'higher'",
)
bad("type", "matrix-axis-twice", study(tail='[matrix]\n"eval.nfe" = [[1]]\neval.nfe = [[2]]'), "matrix.eval.nfe", "axis given twice")

# unknown keys and components: "did you mean" and the allowed names
bad("unknown", "section", study(tail="[bse]\nx = 1"), "bse", "did you mean 'base'", "allowed: study, paper, base, scale")
bad("unknown", "top-level-eval", study(tail="[eval]\nnfe = [2]"), "eval", "[base.eval]")
bad("unknown", "base-key", study(base="iteration = 5"), "base.iteration", "did you mean 'iterations'", "allowed:")
bad("unknown", "study-key", study(header="titel = 'x'"), "study.titel", "did you mean 'title'", "allowed: name, title")
bad("unknown", "eval-key", study(toy_eval={"num_sample": "5"}), "scale.toy.eval.num_sample", "did you mean 'num_samples'")
bad("unknown", "adv-loss", study(toy={"adv_loss": '"lsgn"'}), "scale.toy.adv_loss", "did you mean 'lsgan'", "available: ", "hinge")
bad("unknown", "teacher", study(toy={"teacher": '"toy-digit"'}), "scale.toy.teacher", "did you mean 'toy-digits'", "available:")
bad("unknown", "solver", study(toy={"solver": '"dpm_solver"'}), "scale.toy.solver", "did you mean 'dpm-solver'", "ddim")
bad("unknown", "timesteps", study(toy={"timesteps": '"flsh"'}), "scale.toy.timesteps", "did you mean 'flash'", "uniform")
bad("unknown", "evaluator", study(toy_eval={"evaluators": '["toy-fid"]'}), "scale.toy.eval.evaluators[0]", "did you mean 'toy-fd'")
bad("unknown", "prompt-set", study(toy_eval={"prompts": '"toy-prompt"'}), "scale.toy.eval.prompts", "did you mean 'toy-prompts'")
bad(
    "unknown",
    "option",
    study(toy={"adv_loss": '{ name = "lsgan", head_chanels = 3 }'}),
    "scale.toy.adv_loss.head_chanels",
    "did you mean 'head_channels'",
    "options: head_channels, label_smoothing",
)
bad(
    "unknown",
    "wrong-tag",
    study(toy={"distil_loss": '"lsgan"'}),
    "scale.toy.distil_loss",
    "not tagged 'distillation'",
    "distil_loss takes one of: ",
    "mse",
    "none",
)
bad("unknown", "matrix-axis", study(tail="[matrix]\nadv_los = ['lsgan']"), "matrix.adv_los", "did you mean 'adv_loss'")
bad(
    "unknown",
    "claim-key",
    study(tail="[[paper.claims]]\nmetrc='fd'\nmetric='fd'\nbetter='lower'\nvariant='base'\nthan='base'"),
    "paper.claims[0].metrc",
    "did you mean 'metric'",
)

# zero and negative sizes
for key, value, fragment in [
    ("iterations", "0", "must be a positive integer, got 0"),
    ("iterations", "-1", "must be a positive integer, got -1"),
    ("batch_size", "0", "positive integer"),
    ("phase_length", "0", "positive integer"),
    ("log_every", "0", "positive integer"),
    ("lora_rank", "-1", "must be >= 0, got -1"),
    ("checkpoint_every", "-1", ">= 0"),
    ("learning_rate", "-1e-5", "positive number"),
]:
    bad("size", f"{key}={value}", study(toy={key: value}), f"scale.toy.{key}", fragment)
for key, value, k, fragment in [
    ("batch_size", "-4", "batch_size", "positive integer"),
    ("num_samples", "0", "num_samples", "positive integer"),
    ("nfe", "[0]", "nfe[0]", "positive integer"),
    ("nfe", "[]", "nfe", "must not be empty"),
    ("teacher_steps", "[25, 0]", "teacher_steps[1]", "positive integer"),
    ("grid_size", "-1", "grid_size", ">= 0"),
]:
    bad("size", f"eval.{key}={value}", study(toy_eval={key: value}), f"scale.toy.eval.{k}", fragment)
bad("size", "version=0", study(header="version = 0"), "study.version", "positive integer")
bad("size", "primary_nfe=0", study(header="primary_nfe = 0"), "study.primary_nfe", "positive integer")
bad("size", "negative-seed", study(header="seeds = [0, -1]"), "study.seeds[1]", "must be in [0, 2**32 - 1]")
bad("size", "seed-too-big", study(header=f"seeds = [{2**32}]"), "study.seeds[0]", "must be in [0, 2**32 - 1]")
bad("size", "too-many-seeds", study(header=f"seeds = {list(range(MAX_SEEDS + 1))}"), "study.seeds", f"{MAX_SEEDS + 1} seeds exceed the limit of {MAX_SEEDS}")
bad("size", "variant-zero-batch", study(tail="[[variants]]\nname = 'a'\nbatch_size = 0"), "variants[0].batch_size", "positive")

# K, the teacher's grid: a multiple of 4
for value, fragment in [("30", "must be a multiple of 4"), ("2", "must be a multiple of 4"), ("0", "positive integer"), ("-4", "positive integer")]:
    bad("K", f"num_timesteps={value}", study(toy={"num_timesteps": value}), "scale.toy.num_timesteps", fragment)
bad("K", "in-the-matrix", study(tail="[matrix]\nnum_timesteps = [16, 18]"), "matrix.num_timesteps[1]", "multiple of 4", "got 18")
bad("K", "in-a-variant", study(tail="[[variants]]\nname = 'a'\nnum_timesteps = 10"), "variants[0].num_timesteps", "multiple of 4")

# phases that do not fit the iterations
bad(
    "phases",
    "phase-longer-than-the-run",
    study(toy={"phase_length": "1000"}),
    "scale.toy.phase_length",
    "phase_length must be <= iterations",
    "phase_length = 1000, iterations = 400",
)
bad(
    "phases",
    "variant-shorter-than-a-phase",
    study(tail="[[variants]]\nname = 'short'\niterations = 50"),
    "variants[0].iterations",
    "phase_length must be <= iterations",
    "from scale.toy.phase_length",
)
bad("phases", "matrix-phase-too-long", study(tail="[matrix]\nphase_length = [100, 800]"), "matrix.phase_length[1]", "<= iterations")
bad("phases", "three-lambdas-for-four-phases", study(toy={"lambda_adv": "[0, 0.1, 0.2]"}), "scale.toy.lambda_adv", "one value per phase (4 values), got 3")
bad("phases", "five-lambdas", study(toy={"lambda_dmd": "[0, 0.1, 0.2, 0.3, 0.4]"}), "scale.toy.lambda_dmd", "got 5")

# omega_min > omega_max, negative guidance
bad(
    "omega",
    "min-above-max",
    study(toy={"guidance_min": "14"}),
    "scale.toy.guidance_min",
    "guidance_min must be <= guidance_max",
    "guidance_min = 14.0, guidance_max = 13.0",
)
bad("omega", "max-below-min-in-the-matrix", study(tail="[matrix]\nguidance_max = [13, 2]"), "matrix.guidance_max[1]", "guidance_min must be <= guidance_max")
bad(
    "omega",
    "min-above-max-in-a-variant",
    study(tail="[[variants]]\nname = 'a'\nguidance_min = 20"),
    "variants[0].guidance_min",
    "guidance_min must be <= guidance_max",
)
bad("omega", "negative-min", study(toy={"guidance_min": "-1"}), "scale.toy.guidance_min", ">= 0")
bad("omega", "negative-fixed", study(toy={"guidance_fixed": "-7.5"}), "scale.toy.guidance_fixed", ">= 0")
bad("omega", "negative-teacher-cfg", study(toy_eval={"guidance": "-1"}), "scale.toy.eval.guidance", ">= 0")

# NaN and infinities, in every kind of float setting
NON_FINITE = ["nan", "inf", "-inf", "+nan", "-nan", "+inf"]
FLOAT_KEYS = ["guidance_min", "guidance_max", "guidance_fixed", "learning_rate", "disc_learning_rate"]
for i, key in enumerate(FLOAT_KEYS):
    v = NON_FINITE[i % len(NON_FINITE)]
    bad("nan/inf", f"{key}={v}", study(toy={key: v}), f"scale.toy.{key}", "must be a finite number")
for key, value, k in [
    ("lambda_adv", "[0, nan, 0.2, 0.3]", "lambda_adv[1]"),
    ("lambda_dmd", "[0, 0.3, 0.5, inf]", "lambda_dmd[3]"),
    ("adv_timesteps", "[-inf, 0.5]", "adv_timesteps[0]"),
]:
    bad("nan/inf", f"{k}", study(toy={key: value}), f"scale.toy.{k}", "must be a finite number")
bad("nan/inf", "eval.guidance=nan", study(toy_eval={"guidance": "nan"}), "scale.toy.eval.guidance", "must be a finite number, got nan")
bad("nan/inf", "in-the-matrix", study(tail="[matrix]\nguidance_max = [13.0, inf]"), "matrix.guidance_max[1]", "must be a finite number, got inf")
bad("nan/inf", "in-a-variant", study(tail="[[variants]]\nname = 'a'\nlearning_rate = nan"), "variants[0].learning_rate", "finite")
bad(
    "nan/inf",
    "component-option",
    study(toy={"adv_loss": '{ name = "lsgan", label_smoothing = nan }'}),
    "scale.toy.adv_loss.label_smoothing",
    "must be a finite number",
)
bad(
    "nan/inf",
    "component-option-inf",
    study(toy={"timesteps": '{ name = "flash", sigma_scale = inf }'}),
    "scale.toy.timesteps.sigma_scale",
    "must be a finite number, got inf",
)
bad(
    "nan/inf",
    "unconverted-nested-option",
    study(toy={"timesteps": '{ name = "weighted", weights = [[0.5, nan]] }'}),
    "scale.toy.timesteps.weights[0][1]",
    "must be a finite number, got nan",
)
bad("nan/inf", "paper-reference-value", study(tail="[paper]\nfd = nan"), "paper.fd", "must be a finite number")
bad("nan/inf", "paper-reference-row", study(tail="[[paper.reference]]\nmethod = 'x'\nfid = -inf"), "paper.reference[0].fid", "-inf")
bad("nan/inf", "nan-for-integer", study(toy={"iterations": "nan"}), "scale.toy.iterations", "must be an integer, got a float (nan)")

# huge matrices
SEVEN = ", ".join(str(4 * i + 4) for i in range(7))
bad(
    "huge",
    "matrix-7x7x7",
    study(tail=f"[matrix]\nnum_timesteps = [{SEVEN}]\nbatch_size = [1,2,3,4,5,6,7]\nlog_every = [1,2,3,4,5,6,7]"),
    "matrix",
    f"343 variants (7 num_timesteps x 7 batch_size x 7 log_every) exceed the limit of {MAX_VARIANTS}",
)
bad(
    "huge",
    "variants-times-matrix",
    study(tail="".join(f"[[variants]]\nname = 'v{i}'\n" for i in range(20)) + f"[matrix]\nbatch_size = {list(range(1, 14))}"),
    "matrix",
    "260 variants (20 variants x 13 batch_size)",
)
bad(
    "huge",
    "scale-matrix",
    study(tail=f"[scale.toy.matrix]\nbatch_size = {list(range(1, 18))}\nlog_every = {list(range(1, 18))}"),
    "scale.toy.matrix",
    "289 variants",
)
bad(
    "huge",
    "scale-variants",
    study(tail="".join(f"[[scale.toy.variants]]\nname = 'v{i}'\n" for i in range(MAX_VARIANTS + 1))),
    "scale.toy.variants",
    f"{MAX_VARIANTS + 1} variants",
)

# names and values that would become paths: they must never escape the run folder
for value, label in [
    ('"../evil"', "dotdot"),
    ('"/tmp/evil"', "absolute"),
    ('"C:"', "windows-drive"),
    (r'"..\\evil"', "backslash"),
    (r'"a\nb"', "newline"),
    ('"."', "dot"),
]:
    bad("path", f"study-name-{label}", study(name=value), "study.name", "must match [a-z0-9_-]+")
bad("path", "study-name-nul", study(name=r'"a\u0000b"'), "study.name", "must not contain a NUL character, got 'a\\x00b'")
bad("path", "study-name-too-long", study(name='"' + "a" * 300 + '"'), "study.name", f"at most {MAX_NAME_CHARS} characters")
bad("path", "scale-name-dotdot", study(tail='[scale."../x"]\niterations = 5'), "scale.../x", "scale names must match")
bad("path", "scale-name-newline", study(tail='[scale."a\\nb"]\niterations = 5'), "scale.a\\nb", "scale names must match")
bad("path", "default-scale-dotdot", study(default_scale='"../toy"'), "study.default_scale", "unknown scale '../toy'", "available: paper, toy")
for value, label in [
    ("'../x'", "dotdot"),
    ("'/etc/passwd'", "absolute"),
    ("'..'", "dotdot-only"),
    (r"'C:\evil'", "windows"),
    (r'"a\nb"', "newline"),
    ("'a/b'", "slash"),
]:
    bad("path", f"variant-name-{label}", study(tail=f"[[variants]]\nname = {value}"), "variants[0].name", "must match")
bad("path", "variant-name-nul", study(tail='[[variants]]\nname = "a\\u0000b"'), "variants[0].name", "must not contain a NUL character")
bad(
    "path",
    "teacher-path-with-nul",
    study(toy={"teacher": r'{ name = "from-folder", path = "weights\u0000/x" }'}),
    "scale.toy.teacher.path",
    "must not contain a NUL character",
    "'weights\\x00/x'",
)
bad("path", "key-with-a-newline", study(base=r'"iter\nations" = 5'), "base.iter\\nations", "unknown key 'iter\\nations'")
bad("path", "key-with-a-terminal-escape", study(base=r'"\u001b[2J" = 5'), "base.\\x1b[2J", "unknown key")

# the command line
cli("cli", "validate-missing-file", ["validate", "nope.toml"], None, "no such study file", file="nope.toml")
cli("cli", "run-missing-file", ["run", "nope.toml"], None, "no such study file", file="nope.toml")
cli("cli", "validate-a-directory", ["validate", "adir"], None, "is a directory, not a study file", file="adir", setup=lambda tmp: (tmp / "adir").mkdir())
cli("cli", "run-a-directory", ["run", "adir"], None, "is a directory", file="adir", setup=lambda tmp: (tmp / "adir").mkdir())
cli("cli", "a-fifo", ["run", "fifo.toml"], None, "not a regular file", file="fifo.toml", setup=lambda tmp: os.mkfifo(tmp / "fifo.toml"))
cli(
    "cli",
    "a-dangling-link",
    ["validate", "gone.toml"],
    None,
    "a symbolic link to nothing",
    file="gone.toml",
    setup=lambda tmp: os.symlink(tmp / "deleted.toml", tmp / "gone.toml"),
)
cli(
    "cli",
    "a-link-loop",
    ["run", "loop.toml"],
    None,
    "a symbolic link to nothing (or to itself)",
    file="loop.toml",
    setup=lambda tmp: os.symlink("loop.toml", tmp / "loop.toml"),
)
cli("cli", "dev-zero", ["validate", "/dev/zero"], None, "not a regular file", file="/dev/zero")
cli("cli", "empty-file-argument", ["run", ""], "FILE", "an empty path")
cli(
    "cli",
    "run-unknown-scale",
    ["run", F, "--scale", "toys"],
    "scale",
    "unknown scale 'toys'",
    "did you mean 'toy'",
    "available: paper, toy",
    file=F,
    files={F: VALID},
)
cli("cli", "validate-unknown-scale", ["validate", F, "--scale", "big"], "scale", "unknown scale 'big'", "available: paper, toy", file=F, files={F: VALID})
cli("cli", "empty-scale", ["run", F, "--scale", ""], "scale", "unknown scale ''", file=F, files={F: VALID})
cli("cli", "scale-and-all-scales", ["validate", F, "--scale", "toy", "--all-scales"], "argument --all-scales", "not allowed with", files={F: VALID})
for shard, fragment in [
    ("3/2", "need 0 <= I < N, got '3/2'"),
    ("2/2", "need 0 <= I < N"),
    ("0/0", "need 0 <= I < N, got '0/0'"),
    ("0/-4", "need 0 <= I < N"),
    ("a/b", "expected I/N with integers, e.g. 0/4, got 'a/b'"),
    ("1/2/3", "expected I/N"),
    ("1", "expected I/N"),
    ("", "expected I/N with integers, e.g. 0/4, got ''"),
    ("1.0/2", "expected I/N"),
]:
    cli("shard", f"shard={shard or 'empty'}", ["run", F, "--shard", shard], "--shard", fragment, files={F: VALID})
cli("shard", "shard=-1/2", ["run", F, "--shard", "-1/2"], "argument --shard", "expected one argument", "--option=VALUE", files={F: VALID})
cli("shard", "shard=-1/2-attached", ["run", F, "--shard=-1/2"], "--shard", "need 0 <= I < N, got '-1/2'", files={F: VALID})
cli(
    "output",
    "output-is-a-file",
    ["run", F, "--output", "taken"],
    "--output taken",
    "exists and is a file, not a directory",
    files={F: VALID, "taken": "not a directory"},
)
cli(
    "output",
    "output-under-a-file",
    ["run", F, "-o", "taken/run"],
    "--output taken/run",
    "cannot be created",
    "is a file",
    files={F: VALID, "taken": "not a directory"},
)
cli("output", "output-deep-under-a-file", ["run", F, "-o", "taken/a/b/c"], "--output taken/a/b/c", "is a file", files={F: VALID, "taken": "x"})
cli("output", "output-empty", ["run", F, "--output", ""], "--output", "an empty path", files={F: VALID})
cli(
    "output",
    "output-dangling-link",
    ["run", F, "-o", "link"],
    "--output link",
    "a dangling link",
    files={F: VALID},
    setup=lambda tmp: os.symlink(tmp / "nowhere", tmp / "link"),
)
cli("output", "output-name-too-long", ["run", F, "-o", "x" * 300], f"--output {'x' * 300}", "longer than 255 bytes", files={F: VALID})
cli(
    "output",
    "default-output-is-a-file",
    ["run", F],
    "runs/demo-toy (the default run directory; choose another with --output)",
    "exists and is a file",
    files={F: VALID, "runs/demo-toy": "x"},
)
cli(
    "output",
    "output-holds-another-study",
    ["run", F, "-o", "old"],
    "--output old",
    "holds the results of study 'other' at scale 'toy'",
    "not 'demo'",
    files={F: VALID, "old/study.json": json.dumps({"name": "other", "scale": "toy"}), "old/results.jsonl": "{}\n"},
)
cli(
    "output",
    "output-holds-another-scale",
    ["run", F, "-o", "old"],
    "--output old",
    "at scale 'paper', not 'demo' at scale 'toy'",
    files={F: VALID, "old/study.json": json.dumps({"name": "demo", "scale": "paper"})},
)
cli(
    "output",
    "output-holds-garbage-study-json",
    ["run", F, "-o", "old"],
    None,
    "unreadable",
    "does not look like a run directory",
    file="old/study.json",
    files={F: VALID, "old/study.json": "{not json"},
)
cli("usage", "unknown-command", ["frobnicate"], "argument COMMAND", "invalid choice: 'frobnicate'", "'run', 'validate', 'plugins', 'report'")
cli("usage", "unknown-option", ["run", F, "--sclae", "toy"], None, "unrecognized arguments: --sclae toy", files={F: VALID})
cli("usage", "missing-file-argument", ["validate"], None, "the following arguments are required: FILE", "see 'flashbench validate --help'")
cli(
    "usage", "plugins-unknown-kind", ["plugins", "--kind", "losses"], None, "unknown kind 'losses'", "did you mean 'loss'", "kinds: teacher, conditioning, loss"
)
cli("report", "report-missing-dir", ["report", "nope"], None, "no such run directory", file="nope")
cli("report", "report-a-file", ["report", "afile"], None, "not a directory", file="afile", files={"afile": "x"})
cli(
    "report",
    "report-no-results",
    ["report", "empty"],
    None,
    "not a flashbench run directory (no study.json)",
    file="empty",
    setup=lambda tmp: (tmp / "empty").mkdir(),
)
cli(
    "report",
    "report-study-without-results",
    ["report", "r"],
    None,
    "no results yet (results.jsonl is missing)",
    "flashbench run FILE --output r",
    file="r",
    files={"r/study.json": json.dumps({"name": "demo", "scale": "toy"})},
)
cli(
    "report",
    "report-empty-results",
    ["report", "r"],
    None,
    "no results yet (results.jsonl is empty)",
    file="r",
    files={"r/study.json": json.dumps({"name": "demo", "scale": "toy"}), "r/results.jsonl": "\n"},
)
ROW = json.dumps({"variant": "base", "metric": "fd", "value": 1.0}) + "\n"
cli("report", "report-garbage-study-json", ["report", "r"], None, "not valid JSON", file="r/study.json", files={"r/study.json": "{", "r/results.jsonl": ROW})
cli(
    "report",
    "report-study-json-not-an-object",
    ["report", "r"],
    None,
    "expected a JSON object",
    file="r/study.json",
    files={"r/study.json": "[]", "r/results.jsonl": ROW},
)


def _param_id(case: Case, command: str) -> str:
    return f"{case.category}:{case.id}" + (f"[{command}]" if command else "")


PARAMS = [pytest.param(case, command, id=_param_id(case, command)) for case in CASES for command in case.commands]


# --- the checks ---------------------------------------------------------------------------------------------


def snapshot(root: Path) -> dict:
    """Every entry under ``root`` (links not followed): type, size, mode, mtime, and content hash."""
    out = {}
    for path in [root, *sorted(root.rglob("*"))]:
        st = path.lstat()
        digest = None
        if stat.S_ISREG(st.st_mode):
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        elif stat.S_ISLNK(st.st_mode):
            digest = os.readlink(path)
        out[str(path.relative_to(root))] = (stat.S_IFMT(st.st_mode), st.st_mode, st.st_size, st.st_mtime_ns, digest)
    return out


def make_files(root: Path, files: dict) -> None:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8", newline="\n")


@pytest.fixture
def no_runner(monkeypatch):
    """The runner, replaced: a case that reaches it has passed validation, and fails loudly."""

    def run_study(*args, **kwargs):
        raise AssertionError("bad input reached the runner")

    monkeypatch.setitem(sys.modules, "flashbench.runner", types.SimpleNamespace(run_study=run_study))


def check_refused(err: str, out: str, case: Case) -> None:
    assert "Traceback" not in err, err
    assert out == "", out
    lines = err.splitlines()
    assert len(lines) == 1, f"expected one error line, got {len(lines)}:\n{err}"
    (line,) = lines
    assert line.startswith("flashbench: error: "), line
    prefix = "flashbench: error: " + (f"{case.file}: " if case.file else "") + (f"{case.key}: " if case.key else "")
    if case.key and case.key.startswith("argument "):  # argparse: the option, then its message
        prefix = f"flashbench: error: {case.key}"
    assert line.startswith(prefix), f"expected {prefix!r}..., got {line!r}"
    for fragment in case.fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    assert line.isprintable(), repr(line)  # no raw control characters from a hostile name


@pytest.mark.usefixtures("no_runner")
@pytest.mark.parametrize("case, command", PARAMS)
def test_bad_input_is_refused_with_one_line_and_nothing_written(case, command, tmp_path, monkeypatch, capsys, components):
    monkeypatch.chdir(tmp_path)
    make_files(tmp_path, case.files)
    if case.setup:
        case.setup(tmp_path)
    before = snapshot(tmp_path)
    argv = [command, *case.argv] if command else case.argv
    assert main(argv, components=components) == 2
    out, err = capsys.readouterr()
    check_refused(err, out, case)
    assert snapshot(tmp_path) == before


def test_the_corpus_covers_every_category():
    counts: dict[str, int] = {}
    for case in CASES:
        counts[case.category] = counts.get(case.category, 0) + 1
    assert len(CASES) >= 40 and len(PARAMS) >= 80
    for category in ("syntax", "type", "unknown", "size", "K", "phases", "omega", "nan/inf", "huge", "path", "cli", "shard", "output", "usage", "report"):
        assert counts.get(category, 0) >= 2, category


def test_the_valid_base_study_is_valid(tmp_path, monkeypatch, capsys, components):
    """The corpus breaks one thing at a time: without it, the study validates."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / F).write_text(VALID)
    assert main(["validate", F], components=components) == 0, capsys.readouterr().err
    (tmp_path / F).write_bytes(b"\xef\xbb\xbf" + VALID.encode())  # a byte-order mark is not a mistake
    assert main(["validate", F], components=components) == 0, capsys.readouterr().err


def test_hostile_matrix_values_stay_inside_the_run_folder(tmp_path, monkeypatch, capsys, components):
    """Values that become variant names (and so folder names) are slugged into one safe path component."""
    monkeypatch.chdir(tmp_path)
    values = ["../../etc", "/abs/path", "C:\\\\win", "a\\u0000b", "..", ".", "x" * 300, "a\\nb", "\\u2028"]
    text = study(
        toy={"teacher": '"from-folder"'},
        tail="[matrix]\nteacher = [" + ", ".join(f'{{ name = "from-folder", path = "{v}" }}' for v in values if "\\u0000" not in v) + "]",
    )
    (tmp_path / F).write_text(text)
    assert main(["validate", F, "--json"], components=components) == 0, capsys.readouterr().err
    data = json.loads(capsys.readouterr().out)
    keys = [v["key"] for v in data["variants"]]
    assert len(keys) == len(set(keys)) == len(values) - 1
    run_dir = (tmp_path / "runs" / "demo-toy" / "variants").resolve()
    for key in keys:
        assert key not in (".", "..") and "/" not in key and "\\" not in key and "\x00" not in key and key.isprintable()
        assert len(key.encode()) <= 255
        assert (run_dir / key).resolve().parent == run_dir


def _run_dir_with_results(root: Path) -> Path:
    """A run directory of the valid study as the runner leaves it, results and done markers included."""
    out = root / "runs" / "demo-toy"
    make_files(
        out,
        {
            "study.json": json.dumps({"name": "demo", "scale": "toy", "variants": []}),
            "provenance.json": json.dumps({"scale": "toy", "git_hash": "abc"}),
            "results.jsonl": json.dumps({"variant": "base", "metric": "fd", "value": 1.5}) + "\n",
            "variants/base-s0/done.json": json.dumps({"status": "ok", "rows": 1}),
            "variants/base-s0/lora/pytorch_lora_weights.safetensors": b"\x00weights\x01",
            "variants/base-s0/grid_nfe4.png": b"\x89PNG",
            "tables/main.csv": "variant,fd\nbase,1.5\n",
            "report.html": "<html>report</html>",
            "run.log": "2024-01-01 INFO study demo done\n",
        },
    )
    return out


@pytest.mark.usefixtures("no_runner")
def test_bad_runs_lose_nothing_already_computed(tmp_path, monkeypatch, capsys, components):
    monkeypatch.chdir(tmp_path)
    out = _run_dir_with_results(tmp_path)
    (tmp_path / F).write_text(VALID)
    (tmp_path / "edited.toml").write_text(study(toy={"iterations": "-1"}))  # the same study, broken by an edit
    (tmp_path / "other.toml").write_text(study(name='"other"'))  # another study, pointed at this folder
    before = snapshot(tmp_path)
    for argv in (
        ["run", "edited.toml"],
        ["run", "edited.toml", "-o", str(out)],
        ["run", F, "--shard", "5/4"],
        ["run", F, "--shard", "x"],
        ["run", F, "--scale", "paper-ish"],
        ["run", "other.toml", "-o", str(out)],
        ["run", F, "-o", str(out / "results.jsonl")],
        ["run", F, "-o", str(out / "run.log" / "x")],
        ["report", str(out / "variants")],
    ):
        assert main(argv, components=components) == 2, argv
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and "Traceback" not in err, (argv, err)
    assert snapshot(tmp_path) == before


# --- through a real process: the installed command and python -m ------------------------------------------

SUBPROCESS = [
    (["flashbench", "validate", "nope.toml"], "flashbench: error: nope.toml: no such study file"),
    (["flashbench", "run", "broken.toml"], "flashbench: error: broken.toml: invalid TOML"),
    (["flashbench", "run", "losses.toml", "--shard", "3/2"], "flashbench: error: --shard: need 0 <= I < N, got '3/2'"),
    ([sys.executable, "-m", "flashbench", "run", "losses.toml", "--shard", "-1/2"], "flashbench: error: argument --shard: expected one argument"),
    ([sys.executable, "-m", "flashbench", "run", "losses.toml", "-o", "taken"], "flashbench: error: --output taken: exists and is a file"),
    ([sys.executable, "-m", "flashbench", "validate", "newline-key.toml"], "flashbench: error: newline-key.toml: base.a\\nb: unknown key"),
    ([sys.executable, "-m", "flashbench.cli", "run", "losses.toml", "--scale", "../x"], "flashbench: error: losses.toml: scale: unknown scale '../x'"),
    (["flashbench", "report", "empty"], "flashbench: error: empty: not a flashbench run directory"),
    ([sys.executable, "-m", "flashbench", "plugins", "--kind", "nope"], "flashbench: error: unknown kind 'nope'"),
]


@pytest.fixture(scope="module")
def process_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("processes")
    shutil.copy(REPO / "studies" / "ablation_losses.toml", root / "losses.toml")
    (root / "broken.toml").write_text("[study\nname = 'x'\n")
    (root / "newline-key.toml").write_text('[study]\nname = "demo"\n[base]\n"a\\nb" = 1\n')
    (root / "taken").write_text("a file")
    (root / "empty").mkdir()
    return root


def _command(argv: list[str]) -> list[str]:
    if argv[0] == "flashbench":
        script = Path(sys.executable).parent / "flashbench"
        if not script.exists():
            pytest.skip("the flashbench script is not installed next to this Python")
        return [str(script), *argv[1:]]
    return argv


@pytest.mark.parametrize("argv, first", SUBPROCESS, ids=[" ".join(a[1:] if a[0] == "flashbench" else a[2:]) for a, _ in SUBPROCESS])
def test_a_real_process_prints_one_line_and_exits_2(argv, first, process_folder):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FLASHBENCH_DISABLE_PLUGIN_AUTOLOAD": "1"}
    before = snapshot(process_folder)
    result = subprocess.run(_command(argv), cwd=process_folder, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert result.stderr.endswith("\n") and result.stderr.count("\n") == 1, repr(result.stderr)
    assert result.stderr.startswith(first), result.stderr
    assert snapshot(process_folder) == before
