"""Do two commits give the same result rows? Runs shortened copies of the toy studies at both and compares.

A refactor that must not change behaviour (issue 14) is checked here on every toy study at once, the way a
user would see a change: the rows of ``results.jsonl``. Each study is run at the ``toy`` scale, shortened so
that both commits finish in minutes: seed 0 only, 20 iterations in 4 phases of 5, 60 evaluation samples
(one per toy prompt). The code paths are the toy study's own (teachers, losses, timesteps, samplers,
evaluators, bootstrap); only the budget is smaller. Teacher baselines are computed by each commit
(``FLASHBENCH_CACHE=off``).

Each commit runs from a ``git worktree`` with its own entry points (a ``flashbench.dist-info`` made from the
commit's ``pyproject.toml`` shadows the installed one), so a commit with other plugins than the working
tree's loads its own. Rows are matched on (variant, seed, role, nfe, steps, metric), as ``flashbench compare``
does, and compared on every field both store except run time and provenance (``IGNORED``): values, intervals,
``n``, costs. A field only one commit stores (added to the rows in between) is listed, not compared. Exit status
0 when every study's rows are identical, 1 otherwise.

    python scripts/same_rows.py fa583e8 HEAD --jobs 2             # the ten toy studies, two at a time
    python scripts/same_rows.py a7c7d40 HEAD --studies ablation_gan --keep /tmp/same-rows
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import tomli_w

from flashbench.compare import row_key  # (variant, seed, role, nfe, steps, metric), as flashbench compare matches rows

ROOT = Path(__file__).resolve().parents[1]
TOY_STUDIES = (
    "ablation_losses",
    "ablation_gan",
    "ablation_distil",
    "ablation_guidance",
    "ablation_k",
    "ablation_timesteps",
    "table1_sd15_coco2017",
    "table2_sd15_coco2014",
    "table3_sdxl",
    "table4_pixart",
)
#: fields that say when, where and how fast a row was made, not what it measured
IGNORED = frozenset({"git_hash", "attempt", "sample_seconds", "train_seconds", "bootstrap_seconds", "eval_seconds", "seconds_per_step", "bootstrap_file"})
SHORT = {"iterations": 20, "phase_length": 5, "num_samples": 60}


def shorten(data: dict) -> dict:
    """The study with seed 0 only and :data:`SHORT`'s budget wherever a layer sets one of its keys."""

    def walk(node):
        if isinstance(node, dict):
            out = {}
            for key, value in node.items():
                if key == "seeds" and isinstance(value, list):
                    out[key] = [0]
                elif key in SHORT and isinstance(value, int):
                    out[key] = SHORT[key]
                elif key == "batch_size" and isinstance(value, int) and value > SHORT["num_samples"]:
                    out[key] = SHORT["num_samples"]  # an evaluation batch larger than the shortened sample count
                else:
                    out[key] = walk(value)
            return out
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(data)


def entry_points_text(pyproject: Path) -> str:
    project = tomllib.loads(pyproject.read_text())["project"]
    lines = []
    groups = dict(project.get("entry-points", {}))
    if project.get("scripts"):
        groups["console_scripts"] = project["scripts"]
    for group, entries in groups.items():
        lines.append(f"[{group}]")
        lines += [f"{name} = {target}" for name, target in entries.items()]
        lines.append("")
    return "\n".join(lines)


def checkout(rev: str, work: Path) -> tuple[Path, Path]:
    """A worktree of ``rev`` and a folder for PYTHONPATH holding its two packages and its entry points."""
    sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", rev], check=True, capture_output=True, text=True).stdout.strip()
    tree, path = work / f"tree-{sha[:10]}", work / f"path-{sha[:10]}"
    if not tree.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(tree), sha], check=True, capture_output=True)
    path.mkdir(parents=True, exist_ok=True)
    for name, target in (("flashbench", tree / "flashbench"), ("flashbench_plugins", tree / "plugins")):
        if not (path / name).exists():
            (path / name).symlink_to(target)
    info = path / "flashbench-0.0.0.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: flashbench\nVersion: 0.0.0\n")
    (info / "entry_points.txt").write_text(entry_points_text(tree / "pyproject.toml"))
    return tree, path


def run_study(name: str, tree: Path, path: Path, out: Path) -> tuple[int, Path]:
    study = tree / "studies" / f"{name}.same-rows.toml"  # beside the original: relative paths resolve alike
    study.write_text(tomli_w.dumps(shorten(tomllib.loads((tree / "studies" / f"{name}.toml").read_text()))))
    env = {**os.environ, "PYTHONPATH": str(path), "FLASHBENCH_CACHE": "off", "OMP_NUM_THREADS": "1", "FLASHBENCH_JOBS": "1"}
    log = out.with_suffix(".log")
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as handle:
        code = subprocess.run(
            [sys.executable, "-m", "flashbench.cli", "run", str(study), "--scale", "toy", "--output", str(out)],
            cwd=tree,
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
        ).returncode
    return code, log


def rows(run_dir: Path) -> dict[tuple, dict]:
    out = {}
    path = run_dir / "results.jsonl"
    for line in path.read_text().splitlines() if path.exists() else []:
        row = json.loads(line)
        out[row_key(row)] = {k: v for k, v in row.items() if k not in IGNORED}
    return out


def differences(a: dict[tuple, dict], b: dict[tuple, dict]) -> list[str]:
    """Rows only in one run, and every field both rows of a key store with different values. A field that only
    one side stores (one added to the rows between the commits) is not a difference: :func:`field_changes`."""
    lines = [f"only before: {k}" for k in sorted(set(a) - set(b), key=str)]
    lines += [f"only after: {k}" for k in sorted(set(b) - set(a), key=str)]
    for key in sorted(set(a) & set(b), key=str):
        ra, rb = a[key], b[key]
        for field in sorted(set(ra) & set(rb)):
            if ra[field] != rb[field]:
                lines.append(f"{key} {field}: {ra[field]!r} -> {rb[field]!r}")
    return lines


def field_changes(a: dict[tuple, dict], b: dict[tuple, dict]) -> tuple[list[str], list[str]]:
    """The fields stored only after (added) and only before (dropped), over the rows both runs hold."""
    shared = set(a) & set(b)
    added = sorted({f for k in shared for f in set(b[k]) - set(a[k])})
    dropped = sorted({f for k in shared for f in set(a[k]) - set(b[k])})
    return added, dropped


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--studies", nargs="+", default=list(TOY_STUDIES))
    parser.add_argument("--keep", type=Path, help="work folder (kept; a study already run there is not rerun)")
    parser.add_argument("--jobs", type=int, default=1, help="studies run at once (each on one thread)")
    parser.add_argument("--run-only", choices=("before", "after"), help="run one side's studies now and compare nothing")
    args = parser.parse_args(argv)
    work = args.keep or Path(tempfile.mkdtemp(prefix="same-rows-"))
    work.mkdir(parents=True, exist_ok=True)
    revs = {"before": args.before, "after": args.after}
    sides = {label: checkout(rev, work) for label, rev in revs.items()}

    def out_dir(label: str, name: str) -> Path:
        return work / f"{label}-{sides[label][0].name}" / name

    def task(label: str, name: str) -> None:
        out = out_dir(label, name)
        if (out / "results.jsonl").exists() and (out / "report.html").exists():
            return  # run before in this work folder
        code, log = run_study(name, *sides[label], out)
        if code != 0:
            print(f"{name}: {label} ({revs[label]}) exited {code}; see {log}", flush=True)

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        list(pool.map(lambda pair: task(*pair), [(label, name) for name in args.studies for label in sides if args.run_only in (None, label)]))
    if args.run_only:
        return 0
    same = True
    for name in args.studies:
        found = {label: rows(out_dir(label, name)) for label in sides}
        diff = differences(found["before"], found["after"])
        added, dropped = field_changes(found["before"], found["after"])
        n = len(found["after"])
        fields = "".join(f"; fields {what}: {', '.join(names)}" for what, names in (("added", added), ("dropped", dropped)) if names)
        if diff or not n:
            same = False
            print(f"{name}: {n} rows after, {len(found['before'])} before, {len(diff)} differences{fields}")
            for line in diff[:40]:
                print("   ", line)
            if len(diff) > 40:
                print(f"    ... and {len(diff) - 40} more")
        else:
            print(f"{name}: {n} rows, identical{fields}")
    print(f"work folder: {work}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
