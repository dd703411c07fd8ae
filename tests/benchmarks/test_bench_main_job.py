"""Where the main job's time goes, and what ``--jobs`` buys (issue "faster where users wait").

The main job is ``flashbench run studies/ablation_losses.toml``: per seed, the teacher baselines (its own
sampler with CFG at 25, 4, 2 and 1 steps, and the student's few-step sampler at 1, 2 and 4 NFE) and four
variants, each trained then sampled at 1, 2 and 4 NFE and evaluated by four metrics with their bootstrap.

Measured here on a shortened copy (its first two variants, two seeds, fewer iterations and samples: the
phases' shares shift with those sizes, the split between workers does not), run through the real CLI
twice in one session:

- ``main-job/jobs-1``: one process;
- ``main-job/jobs-2``: ``--jobs 2``, two single-threaded worker processes taking the teacher baselines and
  the variants.

Each records its time by phase (:func:`flashbench.runner.phase_seconds`, process seconds summed over the
workers) as ``breakdown_ms``; the ratio ``main-job-jobs`` is the wall time of two workers over one (goal
<= 0.6 on two cores, ideal 0.5). The rows of the two runs are compared: equal, bit for bit.
"""

from __future__ import annotations

import json
import time
import tomllib

import pytest
import tomli_w

from . import _bench

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.benchmark(group="main-job", timer=time.perf_counter)]


def _shortened(tmp_path, benchmark):
    data = tomllib.loads((_bench.ROOT / "studies" / "ablation_losses.toml").read_text())
    toy = data["scale"]["toy"]
    toy.update({"iterations": _bench.size(benchmark, 4, 40), "phase_length": _bench.size(benchmark, 1, 10), "seeds": [0, 1], "log_every": 1000})
    n = _bench.size(benchmark, 32, 200)
    toy["eval"].update(
        {
            "num_samples": n,
            "batch_size": n,
            "teacher_steps": [_bench.size(benchmark, 3, 25)],
            "grid_size": 4,
            "bootstrap_resamples": _bench.size(benchmark, 50, 1000),
        }
    )
    data["variants"] = data["variants"][:2]
    data["paper"]["claims"] = [c for c in data["paper"]["claims"] if {c["variant"], c["than"]} <= {v["name"] for v in data["variants"]}]
    path = tmp_path / "main_job.toml"
    path.write_text(tomli_w.dumps(data))
    return path


def _values(run) -> dict:
    rows = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
    return {(r["variant_key"], r["role"], r["nfe"], r["steps"], r["metric"]): (r["value"], r["ci_low"], r["ci_high"]) for r in rows}


@pytest.fixture(scope="module")
def outputs():
    return {}


@pytest.mark.parametrize("jobs", [1, 2])
def test_main_job_phases(benchmark, tmp_path, monkeypatch, outputs, jobs):
    from flashbench import jobs as jobs_module
    from flashbench.cli import main
    from flashbench.results import ResultStore
    from flashbench.runner import phase_seconds

    monkeypatch.setattr(jobs_module, "available_cores", lambda: 2)  # one thread per worker, as the one-process run here
    monkeypatch.setenv("FLASHBENCH_CACHE", "off")  # every run computes its own teacher baselines
    study = _shortened(tmp_path, benchmark)
    runs = iter(range(100))

    def run():
        out = tmp_path / f"run{next(runs)}"
        assert main(["run", str(study), "--jobs", str(jobs), "--output", str(out)]) == 0
        return out

    out = _bench.measure(benchmark, run, rounds=1, warmup_rounds=0)
    phases = phase_seconds(ResultStore(out).rows())
    outputs[jobs] = _values(out)
    if len(outputs) == 2:
        assert outputs[1] == outputs[2]  # which worker ran a task does not change its rows
    _bench.tag(benchmark, f"main-job/jobs-{jobs}", breakdown_ms={k: 1000 * v for k, v in phases.items()}, workers=jobs)
