"""Item 3: images per second of the student at 1, 2 and 4 NFEs vs the teacher at 50 steps with CFG (100 NFE),
same batch, same noise, on the embedded world (``studies/ablation_losses.toml`` toy scale: DPM-Solver++ for
the teacher, guidance 2). Ideal speed-ups: 100x, 50x, 25x (NFE ratios); goal (issue #6): >= 20x at 4 NFE.

The student samples with its LoRA merged into the base weights (``Teacher.merged_student``, the default of
``student_sample``). ``student-4nfe-unmerged``: the same student with the adapter branches run beside the base
layers in every pass (``merge_lora=False``), what merging saves; both give the same images.
"""

from __future__ import annotations

import pytest
import torch

from . import _bench

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.benchmark(group="sampling", timer=_bench.TIMER)]

CASES = {"student-1nfe": 1, "student-2nfe": 2, "student-4nfe": 4, "student-4nfe-unmerged": 4, "teacher-50steps-cfg": 50}


@pytest.fixture(scope="module")
def world(toy_teacher):
    from flashbench.plugins import collect_components
    from flashbench.study import load_study

    components = collect_components()
    variant = load_study(_bench.ROOT / "studies" / "ablation_losses.toml", scale="toy", components=components).variants[-1]
    torch.manual_seed(0)
    params = toy_teacher.add_lora("bench-sampling", toy_teacher.default_lora_rank)
    g = torch.Generator().manual_seed(0)
    for p in params:  # lora_B starts at zero; a trained student's does not (it matters to the merged check)
        p.data = (torch.randn(p.shape, generator=g) * 0.02).to(p.device)
    world = {
        "teacher": toy_teacher,
        "solver": components.get("solver", variant.train.solver.name).build(variant.train.solver.options),
        "conditioning": components.get("conditioning", variant.train.conditioning.name).build(variant.train.conditioning.options),
        "prompts": components.get("dataset", variant.eval.prompts.name).build(variant.eval.prompts.options),
        "guidance": variant.eval.guidance,
    }
    yield world
    toy_teacher.remove_lora("bench-sampling")


@pytest.mark.parametrize("case", list(CASES))
def test_sampling(benchmark, world, case):
    from flashbench.method.sampling import student_sample, teacher_sample

    teacher, steps = world["teacher"], CASES[case]
    batch = _bench.size(benchmark, 4, 64)
    prompts = world["prompts"].eval_prompts(batch)
    cond, uncond = world["conditioning"].prepare(teacher, prompts, {})
    noise = torch.randn((batch, *teacher.latent_shape), generator=torch.Generator().manual_seed(0)).to(teacher.device)
    if case.startswith("student"):
        merge = not case.endswith("unmerged")

        def fn():
            return student_sample(teacher, cond, noise, steps, torch.Generator().manual_seed(1), merge_lora=merge)

        nfe = steps
    else:

        def fn():
            return teacher_sample(teacher, world["solver"], cond, uncond, noise, steps, world["guidance"])

        nfe = 2 * steps
    images = _bench.measure(benchmark, fn, rounds=_bench.size(benchmark, 1, 3 if nfe > 10 else 9))
    assert images.shape == (batch, *teacher.latent_shape) and torch.isfinite(images).all()
    if case.endswith("unmerged"):  # merging changes the cost, not the sample
        merged = student_sample(teacher, cond, noise, steps, torch.Generator().manual_seed(1))
        torch.testing.assert_close(images, merged, rtol=1e-4, atol=1e-4)
    _bench.tag(benchmark, f"sampling/{case}", images=batch, nfe=nfe, batch_size=batch)
