"""The ``flashbench`` command: run, validate and report studies, list plugins.

Every :class:`flashbench.errors.UserError` is printed as ``flashbench: error: <message>`` (one line per
problem, a study's problems all at once) with exit status 2 and no traceback. ``validate`` and
``plugins`` never import torch: plugins import their heavy libraries only when a component is built.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from . import ENTRY_POINT_GROUP, __version__
from .errors import UserError, one_line
from .formatting import compact_text, toml_text
from .jobs import JOBS_ENV
from .kinds import KINDS

PROG = "flashbench"

DESCRIPTION = """\
Flash Diffusion distillation (arXiv 2406.02347) as a benchmark and ablation harness.

A study is a TOML file (see studies/) that reproduces one table or figure panel of the paper:
a paper-faithful recipe, named scales (e.g. "toy": CPU, minutes; "paper": the published recipe),
and the variants to compare. Components (teachers, losses, timestep distributions, solvers,
evaluators, datasets) are named by their registry name; `flashbench plugins` lists them."""

MAIN_EPILOG = """\
typical session:
  flashbench plugins                              # what components are installed
  flashbench validate studies/ablation_losses.toml   # check a study before spending compute
  flashbench run studies/ablation_losses.toml        # train + evaluate every variant, write the report
  flashbench report runs/ablation_losses-toy      # re-render a report from stored results
  flashbench export runs/ablation_losses-toy distil --format comfyui   # a student LoRA + model card
  flashbench compare runs/a runs/b                # the rows two runs share, with differences

`flashbench COMMAND --help` describes each command."""

RUN_EPILOG = """\
The study is resolved and validated first: if anything is wrong, every problem is printed and
nothing is written. Results, the resolved study, each student's LoRA, sample grids and the HTML
report go to --output (default: runs/<study name>-<scale>). Run the same command again after an
interruption: variants already finished are skipped (a variant cut off mid-training restarts).

examples:
  flashbench run studies/ablation_losses.toml                  # the study's default scale
  flashbench run studies/ablation_losses.toml --scale paper    # the paper's recipe (GPUs, hours)
  flashbench run studies/ablation_losses.toml --output /scratch/fig5a
  flashbench run studies/ablation_losses.toml --jobs 1         # one process (default: one per core on a CPU)

On a CPU, --jobs N starts N worker processes (one per core by default) that take the teacher baselines and
the variants one at a time; which worker runs a variant does not change its rows. The run ends with where
the time went: teacher baselines, training, student sampling, evaluation and bootstrap."""

VALIDATE_EPILOG = """\
Checks the file's syntax, every key and value in every section, and resolves every variant at every
scale the file defines: component names, tags and options are checked against the installed plugins
(no weights are needed), and each claim's metric against the metrics the study's evaluators produce.
--scale S checks one scale only. The listing (and --json) shows the default scale first (the study's
default_scale, else "paper"); --all-scales prints every scale's resolved study as a JSON list.
Exit status: 0 valid, 2 problems.

examples:
  flashbench validate studies/ablation_losses.toml
  flashbench validate studies/ablation_losses.toml --scale paper
  flashbench validate studies/ablation_losses.toml --json > resolved.json"""

PLUGINS_EPILOG = f"""\
Built-in components come with flashbench; third-party packages add more through the entry-point
group "{ENTRY_POINT_GROUP}" (set FLASHBENCH_DISABLE_PLUGIN_AUTOLOAD=1 to load only the built-ins).
A study names a component by NAME, e.g. adv_loss = "lsgan", or with options:
adv_loss = {{ name = "lsgan", <option> = ... }} (-v lists each component's options).

examples:
  flashbench plugins
  flashbench plugins --kind loss -v
  flashbench plugins --json"""

REPORT_EPILOG = """\
Reads the results stored in each RUN_DIR (written by `flashbench run`) and writes its HTML report and
tables again; nothing is recomputed. Every RUN_DIR is checked before any report is written.
--publish DIR also copies each report into DIR (<run folder>.html, with its .md) and rewrites
DIR/index.html; --index DIR writes DIR/index.html over the reports already in DIR (no RUN_DIR needed);
--summary prints one Markdown table over the runs (each study's rows at its primary NFE, with its
claims' verdicts) and writes nothing.

examples:
  flashbench report runs/ablation_losses-toy                 # re-render one report
  flashbench report runs/*-toy --publish reports/example     # copy the reports into a folder, write its index
  flashbench report --index reports/example                  # only the index
  flashbench report --summary runs/*-toy                     # one Markdown table over the runs"""


EXPORT_EPILOG = """\
Writes the student LoRA of one variant of RUN_DIR (written by `flashbench run`) in the format a tool
reads, a model card (README.md: base model, licence, tags, recipe, metrics with their 95% intervals) and
the variant's sample grids, so that the folder can be published as it is. VARIANT is a variant's name
(when it ran with one seed) or its key, e.g. distil-s0.

formats:
  diffusers  pytorch_lora_weights.safetensors, for pipe.load_lora_weights(DIR)
  comfyui    one kohya-format .safetensors for ComfyUI and A1111 (models/loras)
  peft       adapter_model.safetensors + adapter_config.json, for PeftModel.from_pretrained(unet, DIR)

examples:
  flashbench export runs/ablation_losses-toy distil+adv+dmd --format comfyui --output exports/flash-toy
  flashbench export runs/ablation_losses-toy distil-s0 --format peft --output exports/distil-peft"""

COMPARE_EPILOG = """\
Prints the result rows two run directories share (same variant, seed, role, NFE, steps and metric) with
the value in each, B - A, and the 95% intervals where the rows store them; then how many rows only one
run has. Reads stored results only.

examples:
  flashbench compare runs/ablation_losses-toy /scratch/other-commit/ablation_losses-toy
  flashbench compare runs/a runs/b --html compare.html"""


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one line like every other error (argparse prints the usage
    block first: a wall of text in a SLURM log, and the one line that matters last)."""

    def error(self, message: str):
        if message.endswith("expected one argument"):  # e.g. --shard -1/2: argparse took the value for an option
            message += " (a value starting with '-' is written --option=VALUE)"
        self.exit(2, f"{PROG}: error: {one_line(message)}; see '{self.prog} --help'\n")


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = _Parser(prog=PROG, description=DESCRIPTION, epilog=MAIN_EPILOG, formatter_class=fmt)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "run",
        help="train and evaluate every variant of a study, then write its report",
        description="Train and evaluate every variant of a study, then write its report.",
        epilog=RUN_EPILOG,
        formatter_class=fmt,
    )
    p.add_argument("file", metavar="FILE", help="the study file (.toml)")
    p.add_argument("--scale", metavar="SCALE", help="a scale the study defines (default: its default_scale, else 'paper')")
    p.add_argument("--output", "-o", metavar="DIR", help="run directory (default: runs/<study name>-<scale>)")
    p.add_argument(
        "--shard",
        metavar="I/N",
        help="run only every N-th variant starting at I (0-based), e.g. 0/4 ... 3/4 as four jobs of a SLURM array sharing one --output",
    )
    p.add_argument(
        "--jobs",
        "-j",
        metavar="N",
        default=os.environ.get(JOBS_ENV),
        help="worker processes sharing the teacher baselines and variants on this machine (default: "
        "$FLASHBENCH_JOBS, else 'auto': one per core on a CPU, one on a GPU)",
    )
    p.add_argument("--worker", metavar="DIR", type=Path, help=argparse.SUPPRESS)  # a worker of another process's --jobs run
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser(
        "validate",
        help="check a study file and list its variants, without running anything",
        description="Check a study file and list its variants, without running anything.",
        epilog=VALIDATE_EPILOG,
        formatter_class=fmt,
    )
    p.add_argument("file", metavar="FILE", help="the study file (.toml)")
    scales = p.add_mutually_exclusive_group()
    scales.add_argument("--scale", metavar="SCALE", help="check this scale only (default: every scale the study defines)")
    scales.add_argument("--all-scales", action="store_true", help="every scale (the default), and --json prints each one's resolved study")
    p.add_argument("--json", action="store_true", help="print the resolved study (every variant's full configuration) as JSON")
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser(
        "plugins",
        help="list every installed component and the distribution providing it",
        description="List every installed component: kind, name, distribution, tags, description.",
        epilog=PLUGINS_EPILOG,
        formatter_class=fmt,
    )
    p.add_argument("--kind", metavar="KIND", help=f"only this kind ({', '.join(KINDS)})")
    p.add_argument("--json", action="store_true", help="machine-readable output, options included")
    p.add_argument("-v", "--verbose", action="store_true", help="also list each component's options and defaults")
    p.set_defaults(func=_cmd_plugins)

    p = sub.add_parser(
        "report",
        help="render the reports of run directories from their stored results",
        description="Render the reports of run directories from their stored results; publish them into a folder with its index.",
        epilog=REPORT_EPILOG,
        formatter_class=fmt,
    )
    p.add_argument("run_dirs", metavar="RUN_DIR", type=Path, nargs="*", help="directories written by `flashbench run`")
    p.add_argument("--publish", metavar="DIR", type=Path, help="copy each report into DIR and rewrite DIR/index.html")
    p.add_argument("--index", metavar="DIR", type=Path, help="write DIR/index.html over the reports in DIR")
    p.add_argument("--summary", action="store_true", help="print one Markdown table over the runs (primary NFE) and stop; writes nothing")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser(
        "export",
        help="write a variant's student LoRA (diffusers, ComfyUI or peft) with a model card",
        description="Write a variant's student LoRA in diffusers, ComfyUI (kohya) or peft format, with a model card.",
        epilog=EXPORT_EPILOG,
        formatter_class=fmt,
    )
    p.add_argument("run_dir", metavar="RUN_DIR", type=Path, help="a directory written by `flashbench run`")
    p.add_argument("variant", metavar="VARIANT", help="a variant's name or key (e.g. distil or distil-s0)")
    p.add_argument("--format", default="diffusers", choices=("diffusers", "comfyui", "peft"), help="diffusers (default), comfyui (kohya, also A1111) or peft")
    p.add_argument("--output", "-o", metavar="DIR", type=Path, help="folder to write (default: RUN_DIR/exports/<variant key>-<format>)")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser(
        "compare",
        help="the result rows two runs share, side by side, with differences",
        description="Print the result rows two runs share, side by side, with their differences.",
        epilog=COMPARE_EPILOG,
        formatter_class=fmt,
    )
    p.add_argument("run_a", metavar="RUN_A", type=Path, help="a directory written by `flashbench run`")
    p.add_argument("run_b", metavar="RUN_B", type=Path, help="another one")
    p.add_argument("--html", metavar="OUT", type=Path, help="also write the comparison as an HTML page to this file")
    p.set_defaults(func=_cmd_compare)
    return parser


def main(argv: Sequence[str] | None = None, *, components=None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit status.

    ``components``: a :class:`flashbench.plugins.Components` to use instead of the installed plugins
    (tests, embedding applications).
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, usage errors: argparse has printed what it had to
        return e.code if isinstance(e.code, int) else 2
    if not args.command:
        parser.print_help(sys.stderr)
        return 2
    try:
        return args.func(args, _Lazy(components))
    except UserError as e:
        _print_problems(e)
        return e.exit_code
    except BrokenPipeError:  # `flashbench plugins | head`: the reader left, nothing to report
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        except (OSError, ValueError, AttributeError):
            pass
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted" + ("; run the same command again to resume" if args.command == "run" else ""), file=sys.stderr)
        return 130


def _print_problems(error: UserError) -> None:
    for problem in getattr(error, "problems", None) or [error]:
        print(f"{PROG}: error: {one_line(str(problem))}", file=sys.stderr)


class _Lazy:
    """The components, collected on first use (a failing third-party plugin becomes one clear line)."""

    def __init__(self, components=None):
        self._components = components
        self.supplied = components is not None  # given by the caller: worker processes could not rebuild them

    def get(self):
        if self._components is None:
            from .plugins import collect_components

            try:
                self._components = collect_components()
            except Exception as e:  # an import error in a plugin module, a name registered twice
                hint = (
                    ""
                    if os.environ.get("FLASHBENCH_DISABLE_PLUGIN_AUTOLOAD")
                    else (" (set FLASHBENCH_DISABLE_PLUGIN_AUTOLOAD=1 to load only the built-in plugins)")
                )
                raise UserError(f"could not load the plugins: {type(e).__name__}: {e}{hint}") from e
        return self._components


# --- commands ----------------------------------------------------------------------------------------


def _parse_shard(text: str) -> tuple[int, int]:
    try:
        i, n = (int(part) for part in text.split("/"))
    except ValueError:
        raise UserError(f"--shard: expected I/N with integers, e.g. 0/4, got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise UserError(f"--shard: need 0 <= I < N, got {text!r}")
    return i, n


def _study_file(text: str) -> Path:
    if not text:
        raise UserError("FILE: an empty path; give the study file (.toml)")
    return Path(text)


NAME_MAX = 255  # bytes per path component on the usual file systems


def _check_output(output: Path, study, *, given: bool) -> None:
    """Everything about the run directory that would fail only once the runner writes into it: a file
    where the directory (or one of its parents) should be, an unwritable parent, a name too long, or a
    directory holding another study's results (which the run would mix with its own). Raises
    UserError; creates nothing."""
    what = f"--output {output}" if given else f"{output} (the default run directory; choose another with --output)"
    if "\x00" in str(output):
        raise UserError(f"--output: not a valid path (it contains a NUL character): {str(output)!r}")
    for part in output.parts:
        if len(os.fsencode(part)) > NAME_MAX:
            raise UserError(f"{what}: a path component is longer than {NAME_MAX} bytes")
    if output.exists() or output.is_symlink():
        if not output.is_dir():
            kind = "a dangling link" if output.is_symlink() and not output.exists() else "a file, not a directory"
            raise UserError(f"{what}: exists and is {kind}")
        if not os.access(output, os.W_OK | os.X_OK):
            raise UserError(f"{what}: directory is not writable")
        _check_same_study(output, study, what)
        return
    parent = output.absolute().parent
    while not parent.exists() and not parent.is_symlink() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"{what}: cannot be created: {parent} is a file, not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"{what}: cannot be created: {parent} is not writable")


def _check_same_study(output: Path, study, what: str) -> None:
    from .results import STUDY_FILE

    path = output / STUDY_FILE
    if not path.exists():
        return
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise UserError(
            f"{path}: unreadable ({type(e).__name__}); {what} does not look like a run directory of {study.name!r}; give another --output"
        ) from None
    stored = (data.get("name"), data.get("scale")) if isinstance(data, dict) else (None, None)
    if stored != (study.name, study.scale):
        raise UserError(
            f"{what}: holds the results of study {stored[0]!r} at scale {stored[1]!r}, not {study.name!r} "
            f"at scale {study.scale!r}; give another --output (nothing was changed)"
        )


def _cmd_run(args, components: _Lazy) -> int:
    from .study import load_study

    from .jobs import parse_jobs

    shard = _parse_shard(args.shard) if args.shard is not None else None
    jobs = parse_jobs(args.jobs)
    if jobs is None and components.supplied:
        jobs = 1  # components handed in by the caller (tests, an embedding application) live in this process only
    if shard is not None and jobs is not None and jobs > 1:
        raise UserError(f"--jobs {jobs} with --shard {args.shard}: a shard runs its variants in one process; give one of the two")
    if args.output is not None and not args.output:
        raise UserError("--output: an empty path; give a directory (default: runs/<study name>-<scale>)")
    file = _study_file(args.file)
    comps = components.get()
    study = load_study(file, scale=args.scale, components=comps)
    # Everything the study file and the arguments can get wrong fails here, before run_study writes.
    output = Path(args.output) if args.output else Path("runs") / f"{study.name}-{study.scale}"
    _check_output(output, study, given=bool(args.output))
    n = len(study.variant_names)
    main_process = os.environ.get("RANK", "0") == "0" and args.worker is None  # one process speaks
    if main_process:
        print(f"{study.name} (scale {study.scale}): {n} variant{'s' * (n != 1)} x {len(study.seeds)} seed{'s' * (len(study.seeds) != 1)} -> {output}")
    from .runner import run_study  # imports torch: only once the study is known to be valid

    report = run_study(study, output_dir=Path(output), components=comps, jobs=jobs, worker=args.worker, **({"shard": shard} if shard else {}))
    if report is not None:
        print(f"results and tables: {output}")
        print(f"report: {report}")
    return 0


def _cmd_validate(args, components: _Lazy) -> int:
    from .errors import StudyError
    from .study import load_study, study_scales

    args.file = _study_file(args.file)
    # Every scale unless --scale picks one: component names and options are registered whatever weights
    # this machine has, so a typo in the paper scale is found here, not on the cluster after the queue.
    # The default scale comes first (None: the study's default_scale).
    scales = [args.scale] if args.scale else [None, *study_scales(args.file)]
    problems: list[StudyError] = []
    studies = []
    for scale in scales:
        try:
            study = load_study(args.file, scale=scale, components=components.get())
        except StudyError as e:
            # A problem of [base] (or of a variant) shows up at every scale: one line per key written, the
            # first scale's (the values it meets may differ from scale to scale; the place to fix does not).
            seen = {str(q) for q in problems}
            seen_keys = {q.key for q in problems if q.key is not None}
            problems.extend(q for q in e.problems if str(q) not in seen and q.key not in seen_keys)
            continue
        if all(s.scale != study.scale for s in studies):
            studies.append(study)
    if problems:
        error = problems[0]
        error.problems = problems
        raise error
    if args.json:  # the resolved study at the default scale (or --scale); every scale with --all-scales
        data: Any = [s.to_data() for s in studies] if args.all_scales else studies[0].to_data()
        print(json.dumps(data, indent=2))
        return 0
    for study in studies:
        for line in parametrisation_warnings(study, components.get()):
            print(f"warning: {args.file}: {line}", file=sys.stderr)
        for axis in idle_axes(study):
            print(
                f"warning: {args.file}: axis {axis!r} changes neither the training nor the evaluation of any variant "
                f"at scale {study.scale}; its variants would give identical rows",
                file=sys.stderr,
            )
    for i, study in enumerate(studies):
        if i:
            print()
        n = len(study.variant_names)
        print(f"OK: {n} variant{'s' * (n != 1)} (scale {study.scale})")
        seeds = ", ".join(map(str, study.seeds))
        print(f"{study.name}: {study.title}; seeds {seeds}; {len(study.variants)} runs; primary NFE {study.primary_nfe}")
        print(_table(*_variant_rows(study)))
        line = baselines_line(study)
        if line:
            print(line)
    return 0


def baselines_line(study) -> str | None:
    """With variants on several teachers (sides: teacher, conditioning, dataset, solver), which teacher
    baselines each is compared with; None for one teacher side."""
    from .runner import TEACHER, _teacher_side, baseline_suffixes

    suffixes = baseline_suffixes(study.variants)
    if len(suffixes) < 2:
        return None
    names = {}
    for v in study.variants:
        names.setdefault(TEACHER + suffixes.get(_teacher_side(v.train), ""), v.train.teacher.name)
    listed = "; ".join(f"{name!r} ({teacher})" for name, teacher in names.items())
    return f"teacher baselines: one set per seed for each of {len(suffixes)} teacher sides: {listed}"


def parametrisation_warnings(study, components) -> list[str]:
    """For teachers whose config declares its noise process (``noise_process()``, no weights needed): one line
    per teacher and ``student_prediction`` that would amplify the student's error at full noise. Teachers that
    declare none are checked when ``flashbench run`` loads them."""
    out, seen = [], set()
    for v in study.variants:
        key = (v.train.teacher, v.train.student_prediction)
        if v.train.evaluate_only or key in seen:
            continue
        seen.add(key)
        declared = getattr(components.get("teacher", v.train.teacher.name).make_config(v.train.teacher.options), "noise_process", None)
        if callable(declared):
            from .method.noise import parametrisation_warning  # imports torch: only for a teacher that declares its process

            line = parametrisation_warning(declared(), v.train.student_prediction)
            if line:
                out.append(f"variant {v.name!r} at scale {study.scale} (teacher {v.train.teacher.name}): {line}")
    return out


def idle_axes(study) -> list[str]:
    """Axes whose values change no variant's recipe (training and evaluation): variants that differ only in
    such an axis would train and evaluate the same thing."""
    from .runner import StudyRunner

    idle = []
    for axis in sorted({a for v in study.variants for a in v.axes if a != "variant"}):
        groups: dict = {}  # variants alike but for this axis -> (its values, their recipes)
        for v in study.variants:
            rest = (v.seed, tuple(sorted((k, repr(x)) for k, x in v.axes.items() if k != axis)))
            values, recipes = groups.setdefault(rest, (set(), set()))
            values.add(repr(v.axes.get(axis)))
            recipes.add(StudyRunner.recipe(v))
        varied = [recipes for values, recipes in groups.values() if len(values) > 1]
        if varied and all(len(recipes) == 1 for recipes in varied):
            idle.append(axis)
    return idle


def _cmd_plugins(args, components: _Lazy) -> int:
    from .registry import KINDS

    if args.kind and args.kind not in KINDS:
        from .registry import closest

        raise UserError(f"unknown kind {args.kind!r};{closest(args.kind, KINDS)} kinds: {', '.join(KINDS)}")
    items = [c for c in components.get().all() if not args.kind or c.kind == args.kind]
    if args.json:
        print(json.dumps([_component_data(c) for c in items], indent=2))
        return 0
    if not items:
        print("no components installed" + (f" of kind {args.kind}" if args.kind else ""))
        return 0
    rows = [[c.kind, c.name, c.distribution, ",".join(c.tags), c.description] for c in items]
    if not args.verbose:
        print(_table(["KIND", "NAME", "DISTRIBUTION", "TAGS", "DESCRIPTION"], rows))
        return 0
    lines = _table(["KIND", "NAME", "DISTRIBUTION", "TAGS", "DESCRIPTION"], rows).splitlines()
    print(lines[0])
    for line, c in zip(lines[1:], items):
        print(line)
        for name, default in _options(c).items():
            print(f"    {name} = {toml_text(default)}")
    return 0


def _cmd_report(args, components: _Lazy) -> int:
    if not args.run_dirs and not args.index:
        raise UserError("give RUN_DIR(s), --index DIR, or both; see 'flashbench report --help'")
    from .results import RESULTS_FILE, ResultStore

    for run_dir in args.run_dirs:  # all of them before any report is written
        if not run_dir.is_dir():
            raise UserError(f"{run_dir}: no such run directory" if not run_dir.exists() else f"{run_dir}: not a directory")
        ResultStore(run_dir).read_study()  # refuses a folder without study.json, naming what is missing
        results = run_dir / RESULTS_FILE
        if not _has_rows(results):
            raise UserError(
                f"{run_dir}: no results yet ({RESULTS_FILE} {'is empty' if results.exists() else 'is missing'}); "
                f"run the study into it first (flashbench run FILE --output {run_dir})"
            )
    from .report import INDEX_FILE, publish_reports, render_index, render_report, summary_markdown

    if args.summary:
        print(summary_markdown(args.run_dirs), end="")
        return 0
    if args.publish:
        for path in publish_reports(args.run_dirs, args.publish):
            print(f"report: {path}")
        print(f"index: {args.publish / INDEX_FILE}")
    else:
        for run_dir in args.run_dirs:
            print(f"report: {render_report(run_dir)}")
    if args.index:
        print(f"index: {render_index(args.index)}")
    return 0


def _cmd_export(args, components: _Lazy) -> int:
    from .export import export_variant

    try:
        comps = components.get()  # for the teacher's default weights (the model card's base model)
    except UserError:
        comps = None
    files = export_variant(args.run_dir, args.variant, args.format, args.output, components=comps)
    print(f"exported {args.variant} ({args.format}) to {files[0].parent}: " + ", ".join(f.name for f in files))
    return 0


def _cmd_compare(args, components: _Lazy) -> int:
    from .compare import compare_runs, side_text, table, write_html

    c = compare_runs(args.run_a, args.run_b)
    print(f"A: {side_text(c.a)}")
    print(f"B: {side_text(c.b)}")
    if c.shared:
        print(_table(*table(c)))
    else:
        print("no shared rows")
    print(f"{len(c.shared)} shared rows; {len(c.only_a)} only in A; {len(c.only_b)} only in B")
    if args.html is not None:
        print(f"html: {write_html(c, args.html)}")
    return 0


def _has_rows(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return any(line.strip() for line in f)
    except OSError:
        return False


# --- text helpers ------------------------------------------------------------------------------------


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain left-aligned text table (no dependency, copy-paste friendly)."""
    cells = [[str(x) for x in headers]] + [[str(x) for x in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join("  ".join(x.ljust(w) for x, w in zip(row, widths)).rstrip() for row in cells)


def _variant_rows(study) -> tuple[list[str], list[list[str]]]:
    """One row per variant: its name and the settings that differ between variants."""
    firsts = {}
    for v in study.variants:
        firsts.setdefault(v.name, v)
    configs = {
        name: {
            **{f.name: getattr(v.train, f.name) for f in dataclasses.fields(v.train)},
            **{f"eval.{f.name}": getattr(v.eval, f.name) for f in dataclasses.fields(v.eval)},
        }
        for name, v in firsts.items()
    }
    keys = list(next(iter(configs.values()))) if configs else []
    varying = [k for k in keys if len({compact_text(c[k]) for c in configs.values()}) > 1]
    rows = [[name, *(compact_text(c[k]) for k in varying)] for name, c in configs.items()]
    return ["VARIANT", *varying], rows


def _options(component) -> dict[str, Any]:
    if component.config is None:
        return {}
    out = {}
    for f in dataclasses.fields(component.config):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            out[f.name] = f.default_factory()  # type: ignore[misc]
        else:
            out[f.name] = "(required)"
    return out


def _component_data(c) -> dict:
    def jsonable(v):
        if isinstance(v, (list, tuple)):
            return [jsonable(x) for x in v]
        if isinstance(v, dict):
            return {str(k): jsonable(x) for k, x in v.items()}
        return v if isinstance(v, (str, int, float, bool)) or v is None else repr(v)

    return {
        "kind": c.kind,
        "name": c.name,
        "distribution": c.distribution,
        "plugin": c.plugin,
        "tags": list(c.tags),
        "description": c.description,
        "options": {k: jsonable(v) for k, v in _options(c).items()},
    }


if __name__ == "__main__":  # python -m flashbench.cli (e.g. under accelerate launch)
    sys.exit(main())
