"""Sampling: the student in 1, 2 or 4 steps on the trained timesteps, the teacher with CFG and a solver.

The student samples on the trailing grid (4 steps: 999, 749, 499, 249), passed explicitly rather than
recomputed by a scheduler, and without CFG (one network evaluation per step). Between steps its x0
prediction is re-noised with fresh noise at the next timestep (multistep consistency sampling), which is
how the student was trained: from z_t = alpha z0 + sigma eps with fresh eps. Everything goes through the
teacher's noise process: on rectified flow the student predicts x0 = x - sigma u and is re-noised to the next
sigma with fresh noise, as the authors' flash flow-matching scheduler (SD3) does. The student's LoRA is merged
into the base weights for the run (``Teacher.merged_student``): the same network, without the adapter
branches' extra matmuls in every layer (the teacher's weights come back bit for bit afterwards).
"""

from __future__ import annotations

import contextlib

import torch

from .guidance import Cond, guided_output
from .noise import student_process
from .samplers import FewStepSampler, FlashSampler, TrailingEulerSampler
from .solvers import Solver
from .teacher import Teacher, network, process_of


@torch.no_grad()
def student_sample(
    teacher: Teacher,
    cond: Cond,
    noise: torch.Tensor,
    steps: int,
    generator: torch.Generator,
    *,
    fresh_noise: bool = True,
    merge_lora: bool = True,
    student: bool = True,
    sampler: FewStepSampler | None = None,
    prediction: str = "teacher",
) -> torch.Tensor:
    """``steps`` steps of ``sampler`` (default: ``flash``, :mod:`flashbench.method.samplers`) without CFG.
    ``fresh_noise=False`` (without a sampler) re-noises deterministically with the student's own epsilon (a
    DDIM step: the ``trailing-euler`` sampler); ``merge_lora=False`` runs the adapter branches beside the base
    layers instead of merging them; ``student=False`` runs the *teacher* through the student's sampler (same
    timesteps and re-noising, no CFG): the fair few-step baseline, which isolates what distillation buys from
    the sampler. ``prediction``: how the student's output is read (its training's ``student_prediction``,
    :func:`~flashbench.method.noise.student_process`); the teacher's own network is read as the teacher's."""
    process, net = process_of(teacher), network(teacher)
    if student:
        process = student_process(process, prediction)
    sampler = sampler or (FlashSampler() if fresh_noise else TrailingEulerSampler())
    ts = sampler.timesteps(process, steps)
    x = noise
    estimate = noise
    with teacher.merged_student() if merge_lora and student else contextlib.nullcontext():
        for k, t in enumerate(ts):
            out = net(x, process.timesteps(t, x.shape[0], x.device), cond, student=student)
            x, estimate = sampler.step(process, x, out, t, ts[k + 1] if k + 1 < len(ts) else None, generator)
    return teacher.decode(estimate)


@torch.no_grad()
def teacher_sample(teacher: Teacher, solver: Solver, cond: Cond, uncond: Cond, noise: torch.Tensor, steps: int, omega: float) -> torch.Tensor:
    """The teacher's own ``steps``-step sample with CFG (2 network evaluations a step)."""
    process, net = process_of(teacher), network(teacher)
    ts = process.sampling_timesteps(steps) + [process.clean]
    x, x0_prev, t_prev = noise, None, None
    out_fn = lambda xx, tt, cc: net(xx, tt, cc, student=False)  # noqa: E731
    for t, t_next in zip(ts[:-1], ts[1:]):
        tt = process.timesteps(t, x.shape[0], x.device)
        x0 = process.to_x0(x, guided_output(out_fn, x, tt, cond, uncond, omega), t)
        x = solver.step(process, x, x0, t, t_next, x0_prev=x0_prev, t_prev=t_prev)
        x0_prev, t_prev = x0, t
    return teacher.decode(x)
