"""Fixtures of the cost benchmarks, and the hooks that turn their results into the issue's ratios (written
into the JSON under ``flashbench`` and printed at the end of a measuring run)."""

from __future__ import annotations

import pytest

from . import _bench


@pytest.fixture(scope="session")
def toy_teacher():
    """The embedded teacher, loaded once for every benchmark (each adds and removes its own adapter)."""
    from flashbench.plugins import collect_components

    return collect_components().get("teacher", "toy-digits").build({}, device=_bench.DEVICE)


def pytest_configure(config):
    path = getattr(config.option, "benchmark_json", None)
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)  # pytest-benchmark writes the file, not its folder


def _session_benchmarks(config) -> list[dict]:
    session = getattr(config, "_benchmarksession", None)
    if session is None or session.disabled:
        return []
    out = []
    for b in getattr(session, "benchmarks", []):
        try:
            out.append(b.as_dict(include_data=False))
        except Exception:  # a benchmark that did not run (skipped, failed) has no statistics
            continue
    return out


def pytest_benchmark_update_json(config, benchmarks, output_json):
    output_json["flashbench"] = {
        "device": _bench.device_name(),
        "timer": _bench.TIMER.__name__,
        "ratios": _bench.compute_ratios(output_json.get("benchmarks", [])),
        "images_per_second": _bench.throughputs(output_json.get("benchmarks", [])),
        "breakdowns_ms": _bench.breakdowns(output_json.get("benchmarks", [])),
    }


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    benchmarks = [b for b in _session_benchmarks(config) if (b.get("extra_info") or {}).get("key")]
    if benchmarks:
        terminalreporter.section("flashbench cost (issue #6)")
        for line in _bench.format_summary(benchmarks):
            terminalreporter.write_line(line)
