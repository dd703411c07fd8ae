"""Item 2: one weight copy. Peak memory of Flash training steps with the teacher as the student's own module
(adapters disabled) vs a separate frozen teacher copy, each layout in a fresh process
(``_memory_child.py``: an SD1.5-sized UNet built from config, 841M parameters, when measuring; a small one
otherwise). Goal (issue #6): <= 0.6x; reported, never asserted. The benchmark's time is the child's wall time
(imports included); the memory is in ``extra_info``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from . import _bench

pytestmark = pytest.mark.benchmark(group="memory", timer=time.perf_counter)

CHILD = _bench.ROOT / "tests" / "benchmarks" / "_memory_child.py"


def run_child(layout: str, scale: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(CHILD), "--layout", layout, "--scale", scale, "--device", str(_bench.DEVICE)],
        capture_output=True,
        text=True,
        env=env,
        cwd=_bench.ROOT,
        timeout=1200,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def results():
    return {}


@pytest.mark.parametrize("layout", ["shared", "separate"])
def test_peak_memory(benchmark, results, layout):
    scale = _bench.size(benchmark, "small", "full")
    out = benchmark.pedantic(run_child, args=(layout, scale), rounds=1, iterations=1)
    results[layout] = out
    assert out["weight_copies"] == (1.0 if layout == "shared" else 2.0)
    assert {"distil", "adv", "dmd", "disc"} <= set(out["losses"])
    _bench.tag(benchmark, f"memory/{layout}", **{k: v for k, v in out.items() if k != "losses"})


def test_both_layouts_compute_the_same_step(results):
    """The two layouts differ in memory only: the same seeds give the same losses."""
    for layout in ("shared", "separate"):
        if layout not in results:
            results[layout] = run_child(layout, "small")
    assert results["shared"]["scale"] == results["separate"]["scale"]
    assert results["shared"]["losses"] == pytest.approx(results["separate"]["losses"], rel=1e-5, abs=1e-7)
