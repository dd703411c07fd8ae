"""Shared machinery of the cost benchmarks (issue #6).

- **Timing.** On the CPU the benchmarks time the process's CPU time (``time.process_time``) rather than wall
  time: every benchmark runs single-threaded, and this machine's two cores are shared with other jobs,
  whose load would otherwise land in our numbers. On CUDA: wall time, synchronised.
- **Ratios.** Each cost goal of the issue is a ratio of two benchmarks of the same run (:data:`RATIOS`), computed
  from pytest-benchmark's statistics (minimum over rounds: the least disturbed measurement of each side),
  written into the JSON (``flashbench`` key) and printed at the end of the run. Nothing here asserts a goal.
- **The training step's floor.** :class:`StepProbe` wraps the networks one ``FlashTrainer.step`` calls, times
  each part and records each network call with its inputs; :class:`BareReplay` replays exactly those calls
  (same networks, shapes, count and grad mode, with the backward passes) and nothing else.
- **Sizes.** With ``--benchmark-disable`` (the normal test run) each benchmarked function runs once, as a
  correctness check, at the small size of :func:`size`.
"""

from __future__ import annotations

import contextlib
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

ROOT = Path(__file__).resolve().parents[2]
DEVICE = torch.device(os.environ.get("FLASHBENCH_BENCH_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu"))
CUDA = DEVICE.type == "cuda"
TIMER = time.perf_counter if CUDA else time.process_time


def sync() -> None:
    if CUDA:
        torch.cuda.synchronize()


def clock() -> float:
    sync()
    return TIMER()


def device_name() -> str:
    if CUDA:
        return torch.cuda.get_device_name(DEVICE)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores, {torch.get_num_threads()} torch thread(s))"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


def size(benchmark, small, full):
    """``full`` when the benchmarks measure, ``small`` when they only run once (``--benchmark-disable``)."""
    return small if benchmark.disabled else full


def measure(benchmark, fn: Callable, *, rounds: int, warmup_rounds: int = 1, setup: Callable | None = None):
    """``benchmark.pedantic`` with the device synchronised inside the timed call."""

    def timed(*args, **kwargs):
        out = fn(*args, **kwargs)
        sync()
        return out

    rounds = int(os.environ.get("FLASHBENCH_BENCH_ROUNDS", rounds))
    return benchmark.pedantic(timed, setup=setup, rounds=rounds, warmup_rounds=warmup_rounds, iterations=1)


def tag(benchmark, key: str, **info) -> None:
    """Name a benchmark for :data:`RATIOS` and attach what it measured."""
    benchmark.extra_info.update({"key": key, "device": device_name(), **info})


# --- ratios ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ratio:
    name: str
    what: str
    numerator: str  # benchmark keys (see :func:`tag`)
    denominator: str
    field: str = ""  # an extra_info field instead of the time statistic
    goal: str = ""  # "<=" or ">="
    target: float | None = None
    ideal: float | None = None

    def value(self, by_key: dict, stat: str = "min") -> float | None:
        num, den = by_key.get(self.numerator), by_key.get(self.denominator)
        if num is None or den is None:
            return None
        if self.field:
            a, b = num["extra_info"].get(self.field), den["extra_info"].get(self.field)
        else:
            a, b = (num.get("stats") or {}).get(stat), (den.get("stats") or {}).get(stat)
        return a / b if a is not None and b else None

    def met(self, value: float | None) -> bool | None:
        if value is None or self.target is None:
            return None
        return value <= self.target if self.goal == "<=" else value >= self.target


RATIOS = (
    Ratio(
        "train-step",
        "Flash training step / its bare network passes (same shapes and count)",
        "train-step/flash-step",
        "train-step/bare-passes",
        goal="<=",
        target=1.15,
        ideal=1.0,
    ),
    Ratio(
        "train-step-diffusers-switch",
        "the same step with diffusers' disable_adapters()/enable_adapters() as the switch (for comparison)",
        "train-step/flash-step-diffusers-switch",
        "train-step/bare-passes",
        ideal=1.0,
    ),
    Ratio(
        "one-weight-copy",
        "peak memory of a step, one weight copy / a separate frozen teacher copy (above the process's pre-model baseline)",
        "memory/shared",
        "memory/separate",
        field="peak_above_baseline_mb",
        goal="<=",
        target=0.6,
        ideal=0.5,
    ),
    Ratio(
        "one-weight-copy-process",
        "the same, whole-process peak (imports and runtime included)",
        "memory/shared",
        "memory/separate",
        field="peak_mb",
        goal="<=",
        target=0.6,
    ),
    Ratio(
        "sampling-1nfe",
        "speed-up: teacher 50 steps with CFG (100 NFE) / student 1 NFE, same batch",
        "sampling/teacher-50steps-cfg",
        "sampling/student-1nfe",
        ideal=100.0,
    ),
    Ratio("sampling-2nfe", "speed-up: teacher 50 steps with CFG / student 2 NFE", "sampling/teacher-50steps-cfg", "sampling/student-2nfe", ideal=50.0),
    Ratio(
        "sampling-4nfe",
        "speed-up: teacher 50 steps with CFG / student 4 NFE",
        "sampling/teacher-50steps-cfg",
        "sampling/student-4nfe",
        goal=">=",
        target=20.0,
        ideal=25.0,
    ),
    Ratio(
        "sampling-4nfe-unmerged",
        "the same with the LoRA branches run beside the base layers, unmerged (for comparison)",
        "sampling/teacher-50steps-cfg",
        "sampling/student-4nfe-unmerged",
        ideal=25.0,
    ),
    Ratio("gpu-bf16", "GPU, SD1.5 student pass at batch 4: bf16 autocast / float32 time", "gpu/sd15-student-bf16", "gpu/sd15-student-fp32"),
    Ratio("gpu-compile", "GPU, the same: bf16 + torch.compile / bf16 eager time", "gpu/sd15-student-bf16-compile", "gpu/sd15-student-bf16"),
    Ratio(
        "gpu-checkpointing-memory",
        "GPU, the same: bf16 + gradient checkpointing / bf16 peak memory",
        "gpu/sd15-student-bf16-checkpointing",
        "gpu/sd15-student-bf16",
        field="peak_mb",
    ),
    Ratio("gpu-checkpointing-time", "GPU, the same: bf16 + gradient checkpointing / bf16 time", "gpu/sd15-student-bf16-checkpointing", "gpu/sd15-student-bf16"),
    Ratio(
        "fid-features",
        "fid evaluator feature extraction (8-bit, clean-fid resize, Inception) / the bare Inception forward",
        "evaluation/fid-features",
        "evaluation/fid-bare-extractor",
        ideal=1.0,
    ),
    Ratio(
        "toy-fd-features",
        "toy-fd evaluator feature extraction / the bare classifier forward",
        "evaluation/toy-fd-features",
        "evaluation/toy-fd-bare-extractor",
        ideal=1.0,
    ),
    Ratio(
        "bootstrap-study",
        "a toy study (ablation_losses) with 95% intervals / without: training steps + evaluation sets, from this run's pieces",
        "bootstrap/eval-set-with",
        "bootstrap/eval-set-without",
        field="study_seconds",
        goal="<=",
        target=1.05,
        ideal=1.0,
    ),
    Ratio(
        "bootstrap-eval-set",
        "one evaluation set (600 samples, 4 metrics) sampled and evaluated with intervals / without",
        "bootstrap/eval-set-with",
        "bootstrap/eval-set-without",
        ideal=1.0,
    ),
    Ratio(
        "main-job-jobs",
        "a shortened main job (two variants, two seeds): wall time with --jobs 2 / one process, on two cores",
        "main-job/jobs-2",
        "main-job/jobs-1",
        goal="<=",
        target=0.6,
        ideal=0.5,
    ),
    Ratio(
        "fid-reference-cache",
        "fid reference statistics: first prepare (computed) / second (a new evaluator, cached on disk)",
        "evaluation/fid-reference-computed",
        "evaluation/fid-reference-cached",
        goal=">=",
        target=50.0,
    ),
)


def compute_ratios(benchmarks: list[dict]) -> list[dict]:
    """One row per ratio whose two benchmarks ran: value (min over rounds), value from medians, goal, met."""
    by_key = {b["extra_info"]["key"]: b for b in benchmarks if (b.get("extra_info") or {}).get("key")}
    rows = []
    for r in RATIOS:
        value = r.value(by_key)
        if value is None:
            continue
        rows.append(
            {
                "name": r.name,
                "what": r.what,
                "value": value,
                "value_median": None if r.field else r.value(by_key, "median"),
                "goal": f"{r.goal} {r.target:g}" if r.target is not None else "",
                "ideal": r.ideal,
                "met": r.met(value),
            }
        )
    return rows


def throughputs(benchmarks: list[dict]) -> dict[str, float]:
    """Images per second (minimum time over rounds) of the benchmarks that produce or read images."""
    out = {}
    for b in benchmarks:
        info, stats = b.get("extra_info") or {}, b.get("stats") or {}
        if info.get("images") and stats.get("min"):
            out[info["key"]] = info["images"] / stats["min"]
    return out


def breakdowns(benchmarks: list[dict]) -> dict[str, dict]:
    return {b["extra_info"]["key"]: b["extra_info"]["breakdown_ms"] for b in benchmarks if "breakdown_ms" in (b.get("extra_info") or {})}


def format_summary(benchmarks: list[dict]) -> list[str]:
    lines = [f"flashbench cost ratios (device: {next((b['extra_info'].get('device') for b in benchmarks if b.get('extra_info')), '?')})"]
    for row in compute_ratios(benchmarks):
        status = {True: "meets goal", False: "MISSES goal", None: ""}[row["met"]]
        goal = f"goal {row['goal']}" if row["goal"] else "no goal"
        ideal = f", ideal {row['ideal']:g}" if row["ideal"] is not None else ""
        lines.append(f"  {row['name']:<24} {row['value']:8.3f}  ({goal}{ideal}) {status}")
    for key, rate in throughputs(benchmarks).items():
        lines.append(f"  {key:<40} {rate:10.1f} images/s")
    for key, parts in breakdowns(benchmarks).items():
        lines.append(f"  breakdown of {key} (ms per step):")
        lines += [f"    {part:<58} {ms:9.2f}" for part, ms in parts.items()]
    for b in benchmarks:
        info = b.get("extra_info") or {}
        if "nfe_per_step" in info:
            lines.append(f"  {info['key']}: NFE per step (per sample) {info['nfe_per_step']}")
    return lines


def median_breakdown(rounds: list[dict[str, float]]) -> dict[str, float]:
    """Per-part median over probed rounds (one round can hold a garbage-collector pause or a neighbour's burst)."""
    import statistics

    return {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}


# --- the training step: probe and bare replay --------------------------------------------------------------------


@dataclass
class Call:
    kind: str  # "teacher", "student", "encoder", "head", "backward"
    grad: bool  # gradients on during the call
    args: tuple = ()
    requires_grad: bool = False  # the encoder's / head's input carried a gradient
    module: Any = None  # the student's module (DDP- or compile-wrapped denoiser)

    @property
    def batch(self) -> int:
        return int(self.args[0].shape[0]) if self.args else 0


def _detached(v):
    if isinstance(v, torch.Tensor):
        return v.detach().clone()
    if isinstance(v, dict):
        return {k: _detached(x) for k, x in v.items()}
    return v


PARTS = {
    "ode": "teacher ODE: network passes (CFG batch)",
    "ode_glue": "teacher ODE: solver, indexing, autocast (outside the passes)",
    "student": "student forward (grad)",
    "dmd": "DMD scores: teacher with CFG + student (no grad)",
    "encoder": "discriminator: teacher-encoder passes",
    "head": "discriminator: head forwards",
    "backward": "backward passes (student + head)",
    "adam": "Adam steps (LoRA + head)",
    "rest": "rest of step (batch, noise, schedule, losses, .item())",
    "toggles": "  of which adapter on/off switches (inside the passes)",
}


class StepProbe:
    """Times the parts of ``FlashTrainer.step`` and records its network calls, by wrapping (instance attributes,
    removed on exit) ``teacher.output`` (the raw network pass the trainer makes), ``teacher.encoder_features``, ``teacher.adapters_disabled``,
    ``trainer.teacher_target``, ``accelerator.backward``, the optimisers' ``step`` and the head's forward."""

    def __init__(self, trainer):
        self.trainer = trainer
        self.times: dict[str, float] = {k: 0.0 for k in ("ode", "teacher_target", "student", "dmd", "encoder", "head", "backward", "adam", "toggles", "step")}
        self.calls: list[list[Call]] = []
        self.toggle_count = 0
        self.steps = 0
        self._in_ode = 0
        self._undo: list[Callable] = []

    # -- installing the wrappers --
    def _patch(self, obj, name, wrapper):
        setattr(obj, name, wrapper)
        self._undo.append(lambda: delattr(obj, name))

    def _add(self, key, t0):
        self.times[key] += clock() - t0

    def __enter__(self):
        tr, teacher = self.trainer, self.trainer.teacher
        eps, enc, disabled, target = teacher.output, teacher.encoder_features, teacher.adapters_disabled, tr.teacher_target
        backward = tr.accelerator.backward

        def eps_probe(x, t, cond, *, student, module=None):
            grad = torch.is_grad_enabled()
            key = ("student" if grad else "dmd") if student else ("ode" if self._in_ode else "dmd")
            self._record(Call("student" if student else "teacher", grad, (_detached(x), _detached(t), _detached(cond)), module=module if student else None))
            t0 = clock()
            try:
                return eps(x, t, cond, student=student, module=module)
            finally:
                self._add(key, t0)

        def encoder_probe(x, t, cond):
            self._record(Call("encoder", torch.is_grad_enabled(), (_detached(x), _detached(t), _detached(cond)), requires_grad=x.requires_grad))
            t0 = clock()
            try:
                return enc(x, t, cond)
            finally:
                self._add("encoder", t0)

        @contextlib.contextmanager
        def disabled_probe():
            self.toggle_count += 1
            t0 = clock()
            cm = disabled()
            cm.__enter__()
            self._add("toggles", t0)
            try:
                yield
            finally:
                t0 = clock()
                cm.__exit__(None, None, None)
                self._add("toggles", t0)

        def target_probe(*a, **kw):
            self._in_ode += 1
            t0 = clock()
            try:
                return target(*a, **kw)
            finally:
                self._add("teacher_target", t0)
                self._in_ode -= 1

        def backward_probe(loss, **kw):
            self._record(Call("backward", True))
            t0 = clock()
            try:
                return backward(loss, **kw)
            finally:
                self._add("backward", t0)

        self._patch(teacher, "output", eps_probe)
        self._patch(teacher, "encoder_features", encoder_probe)
        self._patch(teacher, "adapters_disabled", disabled_probe)
        self._patch(tr, "teacher_target", target_probe)
        self._patch(tr.accelerator, "backward", backward_probe)
        for opt in [tr.opt] + ([tr.head_opt] if tr.head is not None else []):
            self._patch(opt, "step", self._timed(opt.step, "adam"))
        if tr.head is not None:
            starts = []

            def pre(module, args):
                self._record(Call("head", torch.is_grad_enabled(), (_detached(args[0]),), requires_grad=args[0].requires_grad))
                starts.append(clock())

            def post(module, args, out):
                self._add("head", starts.pop())

            handles = [tr.head.register_forward_pre_hook(pre), tr.head.register_forward_hook(post)]
            self._undo.append(lambda: [h.remove() for h in handles])
        return self

    def __exit__(self, *exc):
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()

    def _timed(self, fn, key):
        def wrapper(*a, **kw):
            t0 = clock()
            try:
                return fn(*a, **kw)
            finally:
                self._add(key, t0)

        return wrapper

    def _record(self, call: Call):
        self.calls[-1].append(call)

    # -- running steps under the probe --
    def step(self, batch, iteration: int):
        self.calls.append([])
        t0 = clock()
        stats = self.trainer.step(batch, iteration)
        self._add("step", t0)
        self.steps += 1
        return stats

    def breakdown_ms(self) -> dict[str, float]:
        t, n = self.times, max(1, self.steps)
        parts = {
            "ode": t["ode"],
            "ode_glue": t["teacher_target"] - t["ode"],
            "student": t["student"],
            "dmd": t["dmd"],
            "encoder": t["encoder"],
            "head": t["head"],
            "backward": t["backward"],
            "adam": t["adam"],
        }
        parts["rest"] = t["step"] - sum(parts.values())
        parts["toggles"] = t["toggles"]
        out = {PARTS[k]: 1000 * v / n for k, v in parts.items()}
        out["total step"] = 1000 * t["step"] / n
        out["adapter on/off switches per step"] = self.toggle_count / n
        return out


@contextlib.contextmanager
def diffusers_switch(teacher):
    """For comparison only: the teacher's ``adapters_disabled`` replaced by diffusers' ``disable_adapters()`` /
    ``enable_adapters()`` (what flashbench used before ``flashbench.method.adapters``), which walk every module
    and reset the adapters' ``requires_grad`` on each switch, instead of flipping peft's per-layer flag."""
    model = teacher.denoiser

    @contextlib.contextmanager
    def disabled():
        model.disable_adapters()
        try:
            yield
        finally:
            model.enable_adapters()

    teacher.adapters_disabled = disabled
    try:
        yield
    finally:
        del teacher.adapters_disabled


class BareReplay:
    """The network passes of recorded steps and nothing else: the same networks on the same inputs in the same
    grad mode, the backward passes over what they produced, the adapters switched by setting peft's flag on
    every layer before each pass (no save and restore, as the teacher's ``adapters_disabled`` does)."""

    def __init__(self, teacher, head):
        from flashbench.method.adapters import tuner_layers

        self.teacher, self.head = teacher, head
        self.layers = tuner_layers(teacher.denoiser)
        self.times: dict[str, float] = {}
        self.timing = False

    def _adapters(self, enabled: bool):
        for layer in self.layers:
            layer._disable_adapters = not enabled

    @contextlib.contextmanager
    def _part(self, key):
        if not self.timing:
            yield
            return
        t0 = clock()
        yield
        self.times[key] = self.times.get(key, 0.0) + clock() - t0

    def run(self, steps: list[list[Call]], *, timing: bool = False) -> int:
        """Replay ``steps``; returns the number of network passes. ``timing``: also time each kind of pass
        (into ``times``; on CUDA that synchronises after each pass, so the timed rounds leave it off)."""
        self.timing = timing
        teacher = self.teacher
        teacher.adapters_disabled = contextlib.nullcontext  # encoder_features would switch the adapters again
        passes = 0
        try:
            for calls in steps:
                pending, encoded = [], None
                for c in calls:
                    passes += c.kind != "backward"
                    if c.kind in ("teacher", "student"):
                        self._adapters(c.kind == "student")
                        with self._part(c.kind), torch.set_grad_enabled(c.grad):
                            out = teacher._forward(teacher.denoiser if c.module is None else c.module, *c.args)
                        if c.grad:
                            pending.append(out)
                    elif c.kind == "encoder":
                        self._adapters(False)
                        x, t, cond = c.args
                        with self._part("encoder"), torch.set_grad_enabled(c.grad):
                            encoded = teacher.encoder_features(x.detach().requires_grad_(c.requires_grad), t, cond)
                    elif c.kind == "head":
                        feats = encoded if c.requires_grad and encoded is not None and encoded.requires_grad else c.args[0]
                        with self._part("head"), torch.set_grad_enabled(c.grad):
                            pending.append(self.head(feats))
                    elif c.kind == "backward":
                        with self._part("backward"):
                            torch.stack([o.float().mean() for o in pending]).sum().backward()
                        pending = []
                self._adapters(True)
        finally:
            del teacher.adapters_disabled
            self._adapters(True)
        return passes

    def breakdown_ms(self, steps: int) -> dict[str, float]:
        names = {
            "teacher": "teacher passes (ODE + DMD, CFG batch)",
            "student": "student passes",
            "encoder": "teacher-encoder passes",
            "head": "head forwards",
            "backward": "backward passes",
        }
        return {names[k]: 1000 * v / steps for k, v in self.times.items()}


@dataclass
class TrainWorld:
    """The embedded world's full Flash variant as the runner builds it, and one batch per phase of pi."""

    trainer: Any
    teacher: Any
    steps: list  # [(iteration, generator seed, batch)]
    calls: list = field(default_factory=list)  # recorded by :meth:`probe`
    stats: list = field(default_factory=list)

    def run(self, probe: StepProbe | None = None):
        """One step per phase; the trainer's generator is reseeded so that every round draws the same grid
        indices (and so the same shapes) as the recorded one."""
        out = []
        for iteration, seed, batch in self.steps:
            self.trainer.generator.manual_seed(seed)
            out.append((probe or self.trainer).step(batch, iteration))
        return out


def build_train_world(
    teacher,
    *,
    study: str = "ablation_losses.toml",
    variant: str = "distil+adv+dmd",
    batch_size: int | None = None,
    mixed_precision: str | None = None,
    seed: int = 0,
) -> TrainWorld:
    import dataclasses

    import numpy as np

    from flashbench.plugins import collect_components
    from flashbench.study import load_study
    from flashbench.training import build_trainer

    components = collect_components()
    spec = next(v for v in load_study(ROOT / "studies" / study, scale="toy", components=components).variants if v.name == variant)
    train = spec.train
    changes = {k: v for k, v in {"batch_size": batch_size, "mixed_precision": mixed_precision}.items() if v is not None}
    train = dataclasses.replace(train, **changes)
    dataset = components.get("dataset", train.dataset.name).build(train.dataset.options)
    # the teacher is the caller's (one per benchmark session)
    trainer = build_trainer(train, components, teacher=teacher, seed=seed, adapter_name="bench")
    phases = len(train.lambda_adv)
    steps = [
        (p * train.phase_length + train.phase_length // 2, 1000 + p, dataset.train_batch(np.random.default_rng(p), train.batch_size)) for p in range(phases)
    ]
    return TrainWorld(trainer, teacher, steps)
