"""What a run's measured step time means for the paper's recipe: the GPU-hours its iterations would take.

A study states the paper's training cost in ``[paper.compute]`` (``iterations``, ``gpu_hours``, optionally the
paper's ``global_batch`` and ``gpu``; validated by :mod:`flashbench.study`). At the end of ``flashbench run``
each trained student prints its iterations per second, NFEs per step and peak GPU memory, and the projection
of its step time onto the paper's iterations beside the paper's figure (:func:`projection_lines`).

The projection counts every process as one GPU busy for the whole step, and scales the work of a step
linearly with the global batch when the paper's differs from the run's (a run on one GPU at the paper's
per-GPU batch of 4 does half the paper's step of 4 x 2 GPUs). It ignores what data parallelism adds (the
gradient all-reduce) and what a longer run amortises (the first step's warm-up, counted in the measured
step time), so read it as the order of magnitude it is.

Nothing here imports torch.
"""

from __future__ import annotations

from .formatting import finite

__all__ = ["project_gpu_hours", "projection_lines"]


def project_gpu_hours(seconds_per_step: float, *, processes: int, global_batch: int, iterations: int, paper_global_batch: int | None = None) -> float:
    """GPU-hours of ``iterations`` steps at ``seconds_per_step`` wall time per step on ``processes`` GPUs
    training ``global_batch`` samples a step; ``paper_global_batch``: the paper's samples per step (None: the
    run's), the step's work scaled by ``paper_global_batch / global_batch``."""
    if seconds_per_step < 0 or processes < 1 or global_batch < 1 or iterations < 0:
        raise ValueError(f"cannot project seconds_per_step={seconds_per_step}, processes={processes}, global_batch={global_batch}, iterations={iterations}")
    per_step = seconds_per_step * processes * (paper_global_batch or global_batch) / global_batch
    return per_step * iterations / 3600.0


def _number(row: dict, key: str) -> float | None:
    v = row.get(key)
    return float(v) if finite(v) else None


def projection_lines(paper: dict, rows, provenance: dict | None = None) -> list[str]:
    """Two lines per trained student of a run (its first stored row; variants evaluated with another's student
    are skipped): the measured costs, then the projection beside ``paper["compute"]``. [] without
    ``[paper.compute]``. ``provenance``: the run's (its ``gpus`` name the device)."""
    compute = paper.get("compute") if isinstance(paper, dict) else None
    if not isinstance(compute, dict):
        return []
    gpus = (provenance or {}).get("gpus") or []
    device = gpus[0].get("name") if gpus and isinstance(gpus[0], dict) else None
    paper_gpu = compute.get("gpu") or "GPU"
    lines, seen = [], set()
    for r in rows:
        key = r.get("variant_key")
        if r.get("role") != "student" or r.get("status") != "ok" or r.get("trained_with") or key in seen:
            continue
        seen.add(key)
        sps, processes, batch = _number(r, "seconds_per_step"), _number(r, "processes"), _number(r, "global_batch")
        if not sps or not processes or not batch:  # an evaluation-only baseline, or rows of an older run
            continue
        peak = _number(r, "peak_memory_gb")
        memory = f"peak GPU memory {peak:.1f} GiB" if peak is not None else "peak GPU memory n/a (CPU)"
        lines.append(
            f"{r.get('variant')} (seed {r.get('seed')}): {1 / sps:.3g} it/s ({sps:.3g} s/step, {int(processes)} process"
            f"{'es' * (processes != 1)} x batch {int(batch // processes)}), teacher NFE/step {_number(r, 'teacher_nfe_per_step') or 0:.1f}, "
            f"student NFE/step {_number(r, 'student_nfe_per_step') or 0:.1f}, {memory}"
        )
        paper_batch = compute.get("global_batch")
        hours = project_gpu_hours(sps, processes=int(processes), global_batch=int(batch), iterations=int(compute["iterations"]), paper_global_batch=paper_batch)
        where = f"{device} GPU" if device and peak is not None else ("GPU" if peak is not None else "CPU")
        lines.append(
            f"  projected: the paper's {int(compute['iterations']):,} iterations (global batch {paper_batch or int(batch)}) at this "
            f"step time = {hours:.3g} {where}-hours, beside the paper's {float(compute['gpu_hours']):g} {paper_gpu}-hours "
            f"({hours / float(compute['gpu_hours']):.2f}x)"
        )
    return lines
