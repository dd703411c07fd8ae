"""Markdown summary of a benchmark JSON (the README's cost tables are this script's output).

python tests/benchmarks/summarise.py .benchmarks/flashbench.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _bench  # noqa: E402


def _fmt(v: float) -> str:
    return f"{v:.3g}" if v < 100 else f"{v:.0f}"


def summarise(data: dict) -> str:
    benchmarks = data.get("benchmarks", [])
    by_key = {b["extra_info"]["key"]: b for b in benchmarks if (b.get("extra_info") or {}).get("key")}
    machine = data.get("machine_info", {})
    commit = data.get("commit_info", {})
    device = next((b["extra_info"].get("device") for b in benchmarks if b.get("extra_info")), "?")
    out = [
        f"Measured on {device}, timer `{(data.get('flashbench') or {}).get('timer', '?')}`, "
        f"Python {machine.get('python_version', '?')}, commit {str(commit.get('id', '?'))[:8]}"
        f"{' (dirty)' if commit.get('dirty') else ''}, {data.get('datetime', '?')[:10]}.",
        "",
    ]

    out += ["| cost | measured | goal | ideal | |", "| --- | ---: | ---: | ---: | --- |"]
    for row in _bench.compute_ratios(benchmarks):
        status = {True: "met", False: "**missed**", None: ""}[row["met"]]
        ideal = _fmt(row["ideal"]) if row["ideal"] is not None else ""
        out.append(f"| {row['what']} | {_fmt(row['value'])}x | {row['goal']} | {ideal} | {status} |")

    rates = _bench.throughputs(benchmarks)
    if rates:
        out += ["", "| benchmark | images | images/s (best round) |", "| --- | ---: | ---: |"]
        out += [f"| `{k}` | {by_key[k]['extra_info']['images']} | {_fmt(v)} |" for k, v in rates.items()]

    step, bare = by_key.get("train-step/flash-step"), by_key.get("train-step/bare-passes")
    if step:
        info = step["extra_info"]
        nfe = info.get("nfe_per_step", {})
        out += [
            "",
            f"Training step breakdown (median of {info.get('probed_rounds')} probed rounds of {info.get('steps_per_round')} steps, one per phase; batch "  # noqa: E501
            f"{info.get('batch_size')}, K = {info.get('K')}; NFE per sample per step: teacher {nfe.get('teacher', 0):.2f}, "
            f"student {nfe.get('student', 0):.2f}):",
            "",
            "| part of `FlashTrainer.step` | ms per step |",
            "| --- | ---: |",
        ]
        out += [f"| {part.strip()} | {ms:.1f} |" for part, ms in info["breakdown_ms"].items()]
        if bare:
            out += ["", "| bare passes (replay) | ms per step |", "| --- | ---: |"]
            out += [f"| {part} | {ms:.1f} |" for part, ms in bare["extra_info"]["breakdown_ms"].items()]

    mem = [by_key.get(k) for k in ("memory/shared", "memory/separate")]
    if all(mem):
        out += [
            "",
            "| layout | UNet params | weights MB | peak MB | pre-model baseline MB | peak above baseline MB | weight copies |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for m in mem:
            i = m["extra_info"]
            out.append(
                f"| {i['layout']} | {i['unet_parameters_M']:.0f}M | {i['weights_mb']:.0f} | {i['peak_mb']:.0f} | {i['baseline_mb']:.0f} | "
                f"{i['peak_above_baseline_mb']:.0f} | {i['weight_copies']:g} |"
            )

    study = by_key.get("study/teacher-load")
    if study:
        i = study["extra_info"]
        out += ["", f"Study loads ({i['variants']} variants): {i['loads']}; one teacher load {study['stats']['min']:.2f} s."]
    return "\n".join(out)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    print(summarise(json.loads(Path(argv[0]).read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
