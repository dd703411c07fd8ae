"""Item 5: a study loads its teacher, datasets and evaluators once, not once per variant.

``tests/test_e2e.py::test_lifecycle_hooks_and_single_loads`` checks the run log of the shortened
``ablation_losses`` study for the teacher and ``toy-fd``. Here the runner's own counter
(``StudyResources.loads``) over every kind of component, for the four variants of the same study cut to one
training step each, and the cost of the load each variant would otherwise repeat (the benchmark: one
``toy-digits`` teacher load).
"""

from __future__ import annotations

import time
import tomllib

import pytest
import tomli_w

from . import _bench

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.benchmark(group="study", timer=time.perf_counter)]  # a load waits on the disk: wall time


def one_step_study(tmp_path):
    data = tomllib.loads((_bench.ROOT / "studies" / "ablation_losses.toml").read_text())
    data["study"]["primary_nfe"] = 1
    data["scale"]["toy"].update({"iterations": 1, "phase_length": 1, "batch_size": 2, "global_batch": 2, "num_timesteps": 4, "log_every": 1, "seeds": [0]})
    data["scale"]["toy"]["eval"].update(
        {"nfe": [1], "num_samples": 4, "batch_size": 4, "teacher_steps": [1], "teacher_at_student_nfe": False, "evaluators": ["toy-fd"], "grid_size": 0}
    )
    path = tmp_path / "ablation_losses.toml"
    path.write_text(tomli_w.dumps(data))
    return path


def test_study_loads_each_component_once(benchmark, tmp_path):
    from flashbench.plugins import collect_components
    from flashbench.results import ResultStore
    from flashbench.runner import StudyRunner
    from flashbench.study import load_study

    components = collect_components()
    study = load_study(one_step_study(tmp_path), components=components)
    runner = StudyRunner(study, ResultStore(tmp_path / "run"), components, device=str(_bench.DEVICE), progress=False)
    done = [variant.name for variant, rows in runner.run() if rows and all(r["status"] == "ok" for r in rows)]
    assert done == ["distil", "distil+dmd", "distil+adv", "distil+adv+dmd"]
    loads = runner.resources.loads
    # one teacher, one dataset (training images and evaluation prompts), one conditioning, one evaluator, one
    # few-step sampler; each distinct loss spec once (mse, lsgan, dmd), although the four variants use them 4 + 2 + 2 times
    assert loads == {"teacher": 1, "dataset": 1, "conditioning": 1, "evaluator": 1, "sampler": 1, "loss": 3}, loads

    teacher = _bench.measure(
        benchmark, lambda: components.get("teacher", "toy-digits").build({}, device=_bench.DEVICE), rounds=_bench.size(benchmark, 1, 5), warmup_rounds=0
    )
    assert teacher.denoiser is not None
    _bench.tag(
        benchmark,
        "study/teacher-load",
        loads=loads,
        variants=len(study.variants),
        loads_avoided={"teacher": len(study.variants) - 1, "evaluator": len(study.variants) - 1},
    )
