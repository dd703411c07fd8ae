"""Item 1: the training step's overhead over the network passes it is made of.

The embedded world's full Flash variant (``studies/ablation_losses.toml``, toy scale: K = 8, batch 16, MSE +
LSGAN + DMD, DPM-Solver++ teacher ODE with CFG), one step in each of the four phases of pi per round. The
bare passes are those very calls replayed by :class:`_bench.BareReplay`: same inputs, networks, count, grad mode
and backward passes, without the trainer's glue (solver maths, indexing, RNG, losses, Adam, adapter switches).
Goal (issue #6): step <= 1.15 x bare passes; reported, never asserted. ``flash-step-diffusers-switch``: the same
step with the teacher's adapter switch (a flip of peft's per-layer flag) replaced by diffusers'
``disable_adapters()`` / ``enable_adapters()``, which walk the model: what that switch would cost.
"""

from __future__ import annotations

import pytest

from . import _bench

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.benchmark(group="train-step", timer=_bench.TIMER)]


@pytest.fixture(scope="module")
def world(toy_teacher):
    world = _bench.build_train_world(toy_teacher)
    world.run()  # warm-up: the prompt cache, Adam's state, first-call allocations
    probe = _bench.StepProbe(world.trainer)
    with probe:
        world.stats = world.run(probe)
    world.calls = probe.calls
    world.breakdowns = [probe.breakdown_ms()]
    yield world
    world.trainer.close()


def test_recorded_passes_are_the_steps_network_evaluations(world):
    """The recording is complete: its passes add up to the NFEs the trainer reports, and the last phase runs
    every part of Algorithm 1 (teacher ODE, student, discriminator features and head, DMD, two backwards)."""
    b = world.trainer.cfg.batch_size
    for calls, stats in zip(world.calls, world.stats):
        teacher = sum(c.batch for c in calls if c.kind == "teacher") / b
        student = sum(c.batch for c in calls if c.kind == "student") / b
        assert teacher == pytest.approx(stats.teacher_nfe) and student == pytest.approx(stats.student_nfe)
        assert all(c.batch % 2 == 0 for c in calls if c.kind == "teacher")  # CFG: cond and null in one batch
        assert sum(c.kind == "backward" for c in calls) == 2
    last = [c.kind for c in world.calls[-1]]
    assert {"teacher", "student", "encoder", "head", "backward"} <= set(last)
    assert sum(c.kind == "student" and c.grad for c in world.calls[-1]) == 1


@pytest.mark.parametrize("what", ["flash-step", "flash-step-diffusers-switch", "bare-passes"])
def test_train_step(benchmark, world, what):
    b = world.trainer.cfg.batch_size
    nfe = {"teacher": sum(s.teacher_nfe for s in world.stats) / len(world.stats), "student": sum(s.student_nfe for s in world.stats) / len(world.stats)}
    info = dict(
        batch_size=b, K=world.trainer.cfg.num_timesteps, steps_per_round=len(world.steps), nfe_per_step=nfe, iterations=[it for it, _, _ in world.steps]
    )
    probed_rounds = _bench.size(benchmark, 1, 5)  # the per-part breakdowns: medians over separately probed rounds
    if what == "flash-step":
        stats = _bench.measure(benchmark, world.run, rounds=_bench.size(benchmark, 1, 7))
        assert len(stats) == len(world.steps)
        for _ in range(probed_rounds - len(world.breakdowns)):
            with _bench.StepProbe(world.trainer) as probe:
                world.run(probe)
            world.breakdowns.append(probe.breakdown_ms())
        _bench.tag(benchmark, "train-step/flash-step", breakdown_ms=_bench.median_breakdown(world.breakdowns), probed_rounds=len(world.breakdowns), **info)
    elif what == "flash-step-diffusers-switch":
        with _bench.diffusers_switch(world.teacher):
            stats = _bench.measure(benchmark, world.run, rounds=_bench.size(benchmark, 1, 7))
            assert [s.losses.keys() for s in stats] == [s.losses.keys() for s in world.stats]
        _bench.tag(benchmark, "train-step/flash-step-diffusers-switch", **info)
    else:
        replay = _bench.BareReplay(world.teacher, world.trainer.head)
        passes = _bench.measure(benchmark, lambda: replay.run(world.calls), rounds=_bench.size(benchmark, 1, 7))
        assert passes == sum(c.kind != "backward" for calls in world.calls for c in calls)
        parts = []
        for _ in range(probed_rounds):
            replay.times.clear()
            replay.run(world.calls, timing=True)
            parts.append(replay.breakdown_ms(len(world.steps)))
        _bench.tag(
            benchmark,
            "train-step/bare-passes",
            breakdown_ms=_bench.median_breakdown(parts),
            probed_rounds=probed_rounds,
            network_calls_per_round=passes,
            **info,
        )
