"""The cost of the intervals (issue "verdicts you can trust"): the paired bootstrap adds at most 5% to a toy
study's wall time.

Measured in one run on the embedded world (``studies/ablation_losses.toml``, toy scale: toy-fd, toy-kid,
toy-clip-score and toy-lpips on 600 samples, 1,000 resamples each):

- ``bootstrap/eval-set-without``: sampling one evaluation set at 2 NFE and streaming it through the four
  evaluators, intervals off (``bootstrap_resamples = 0``);
- ``bootstrap/eval-set-with``: the same with the intervals (every metric's 1,000 replicates);
- ``bootstrap/train-step``: one training step of the study's full variant (distil + adv + DMD, batch 16).

A whole study is then its training steps plus its evaluation sets, counted from the study file itself
(every variant's iterations; per seed, the teacher's sets and each variant's NFEs): ``study_seconds`` in
each of the two "eval-set" benchmarks is that study's time with and without the intervals, built from
the pieces measured here, and the ratio ``bootstrap-study`` is the share the intervals add (goal <= 1.05).
The per-set ratio, with training left out, is shown too (no goal: a set samples in seconds).
"""

from __future__ import annotations

import dataclasses
import statistics
import time

import pytest
import torch

from flashbench.run.baselines import teacher_steps

from . import _bench

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.benchmark(group="bootstrap", timer=time.perf_counter)]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from flashbench.plugins import collect_components
    from flashbench.results import ResultStore
    from flashbench.runner import StudyRunner
    from flashbench.study import load_study

    components = collect_components()
    study = load_study(_bench.ROOT / "studies" / "ablation_losses.toml", scale="toy", components=components)
    runner = StudyRunner(study, ResultStore(tmp_path_factory.mktemp("bootstrap")), components, device=str(_bench.DEVICE), progress=False)
    teacher = runner.resources.teacher(study.variants[0].train.teacher)
    torch.manual_seed(0)
    for p in teacher.add_lora("bench-bootstrap", teacher.default_lora_rank):  # a student that is not the teacher
        p.data = torch.randn_like(p) * 0.02
    yield study, runner, teacher
    teacher.remove_lora("bench-bootstrap")


def _study_shape(study, runner) -> tuple[int, int]:
    """(training steps, evaluation sets) of the whole study, from its resolved variants."""
    steps = sum(v.train.iterations for v in study.variants)
    sets = sum(len(v.eval.nfe) for v in study.variants)
    for seed in study.seeds:
        ev = next(v for v in study.variants if v.seed == seed).eval
        sets += len(teacher_steps(ev)) + (len(ev.nfe) if ev.teacher_at_student_nfe else 0)
    return steps, sets


@pytest.mark.parametrize("case", ["without", "with"])
def test_bootstrap_share_of_a_toy_study(benchmark, world, tmp_path, case):
    study, runner, teacher = world
    variant = study.variants[-1]
    n = _bench.size(benchmark, 100, variant.eval.num_samples)
    ev = dataclasses.replace(
        variant.eval,
        num_samples=n,
        batch_size=min(n, variant.eval.batch_size),
        grid_size=0,
        bootstrap_resamples=variant.eval.bootstrap_resamples if case == "with" else 0,
    )
    ref = runner.names.reference_dir(variant.train, ev, variant.seed)
    if not (ref / "complete").exists():  # the teacher's many-step reference LPIPS-to-teacher reads
        ref.mkdir(parents=True, exist_ok=True)
        runner.evaluation.sample_and_evaluate(
            runner.evaluation.teacher_sampler(variant.train, ev, max(ev.teacher_steps)),
            variant.train,
            ev,
            variant.seed,
            tmp_path / "ref.png",
            reference=ref,
            save_reference=True,
        )
    sampler = runner.evaluation.student_sampler(variant.train, 2, variant.seed)

    def one_set():
        return runner.evaluation.sample_and_evaluate(sampler, variant.train, ev, variant.seed, tmp_path / "grid.png", reference=ref)

    values, _, _ = _bench.measure(benchmark, one_set, rounds=_bench.size(benchmark, 1, 3), warmup_rounds=0)
    assert set(values) == {"fd", "kid", "clip_score", "lpips_to_teacher"}
    if case == "with":
        assert all(v.low <= v.value <= v.high for v in values.values())
    else:
        assert all(v.replicates is None for v in values.values())

    # one training step of the study's full variant, to put the evaluation sets in a whole study's proportion
    train_world = _bench.build_train_world(teacher, batch_size=variant.train.batch_size)
    try:
        times = []
        for it, seed, batch in train_world.steps[-_bench.size(benchmark, 1, 3) :]:
            t0 = time.perf_counter()
            train_world.trainer.step(batch, it)
            times.append(time.perf_counter() - t0)
    finally:
        train_world.trainer.close()
    step_seconds = statistics.median(times)
    set_seconds = benchmark.stats.stats.min if not benchmark.disabled else None
    steps, sets = _study_shape(study, runner)
    info = {"train_step_seconds": step_seconds, "study_steps": steps, "study_eval_sets": sets, "samples": n}
    if set_seconds is not None:
        info["study_seconds"] = steps * step_seconds + sets * set_seconds
    _bench.tag(benchmark, f"bootstrap/eval-set-{case}", **info)
