"""The sample grids a run stored: per seed and student NFE, the teacher at many steps, the teacher at the
student's NFE and every student, on the same prompts and initial noise; then the grids nothing compares."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

from ..formatting import count, is_missing
from ..results import DONE_FILE, VARIANTS_DIR

STUDENT_GRID = re.compile(r"grid_nfe(\d+)\Z")
TEACHER_GRID = re.compile(r"grid_steps(\d+)_nfe(\d+)\Z")


def _natural_key(path: Path) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.stem)]


class _Images:
    """Grid images as data URIs (each file read once) with their optional JSON sidecar."""

    def __init__(self):
        self._cache: dict[Path, dict] = {}
        self.used: set[Path] = set()

    def get(self, png: Path) -> dict:
        self.used.add(png)
        if png not in self._cache:
            meta: dict = {}
            side = png.with_suffix(".json")
            if side.is_file():
                try:
                    loaded = json.loads(side.read_text(encoding="utf-8"))
                    meta = loaded if isinstance(loaded, dict) else {}
                except (OSError, ValueError):
                    meta = {}
            prompts = meta.get("prompts") if isinstance(meta.get("prompts"), list) else []
            self._cache[png] = {
                "name": png.stem,
                "uri": "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii"),
                "caption": str(meta.get("caption", "")),
                "prompts": [str(p) for p in prompts],
            }
        return self._cache[png]


def _variant_labels(study: dict, df) -> dict[str, tuple[str, Any]]:
    labels: dict[str, tuple[str, Any]] = {}
    for v in study.get("variants", []):
        if isinstance(v, dict) and v.get("key"):
            labels[str(v["key"])] = (str(v.get("name", v["key"])), v.get("seed"))
    if not df.empty:
        for key, variant, seed in zip(df["variant_key"], df["variant"], df["seed"]):
            labels.setdefault(str(key), (str(variant), seed))
    return labels


def _sample_comparisons(study: dict, df, run_dir: Path, primary_nfe: int | None, images: _Images) -> list[dict]:
    """Per seed and student NFE: the teacher at many steps, the teacher at the student's NFE, then every
    variant's student; all rows of a seed share prompts and initial noise, column by column."""
    root = run_dir / VARIANTS_DIR
    if not root.is_dir():
        return []
    labels = _variant_labels(study, df)
    order = {str(v["key"]): i for i, v in enumerate(study.get("variants", [])) if isinstance(v, dict) and v.get("key")}
    seeds: dict[Any, dict] = {}
    for d in sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: (order.get(p.name, len(order)), p.name)):
        teacher_seed = re.fullmatch(r"teacher-s(-?\d+)", d.name)
        for png in sorted(d.glob("*.png"), key=_natural_key):
            if teacher_seed:
                m = TEACHER_GRID.match(png.stem)
                if m:
                    entry = seeds.setdefault(int(teacher_seed.group(1)), {"teacher": {}, "students": []})
                    entry["teacher"][int(m.group(1))] = png
            else:
                m = STUDENT_GRID.match(png.stem)
                if m and d.name in labels:
                    name, seed = labels[d.name]
                    if is_missing(seed):
                        continue
                    entry = seeds.setdefault(int(float(seed)), {"teacher": {}, "students": []})
                    entry["students"].append((name, int(m.group(1)), png, (d / DONE_FILE).is_file()))
    # the many-step teacher: the largest teacher_steps a variant of that seed asked for
    asked: dict[int, int] = {}
    for v in study.get("variants", []):
        if isinstance(v, dict) and isinstance(v.get("eval"), dict) and v["eval"].get("teacher_steps"):
            try:
                seed = int(v.get("seed"))
                asked[seed] = max(asked.get(seed, 0), max(int(s) for s in v["eval"]["teacher_steps"]))
            except (TypeError, ValueError):
                continue
    out = []
    for seed in sorted(seeds):
        entry = seeds[seed]
        teacher = entry["teacher"]
        many = asked.get(seed) if asked.get(seed) in teacher else (max(teacher) if teacher else None)
        nfes = sorted({n for _, n, _, _ in entry["students"]})
        if primary_nfe in nfes:
            nfes.remove(primary_nfe)
            nfes.insert(0, primary_nfe)
        sections = []
        for nfe in nfes:
            rows = []
            if many is not None:
                rows.append(
                    {"label": "teacher", "note": f"{many} steps ({2 * many} NFE with CFG): the reference", "kind": "teacher", **images.get(teacher[many])}
                )
            same = nfe // 2 if nfe % 2 == 0 and nfe // 2 in teacher else None
            if same is not None and same != many:
                rows.append(
                    {
                        "label": "teacher",
                        "note": f"{same} step{'s' * (same != 1)} ({nfe} NFE): the student's NFE",
                        "kind": "teacher",
                        **images.get(teacher[same]),
                    }
                )
            if nfe in teacher and nfe != many:  # CFG doubles the teacher's NFE: also show it at the student's steps
                rows.append(
                    {
                        "label": "teacher",
                        "note": f"{nfe} step{'s' * (nfe != 1)} ({2 * nfe} NFE): the student's steps",
                        "kind": "teacher",
                        **images.get(teacher[nfe]),
                    }
                )
            for name, n, png, done in entry["students"]:
                if n == nfe:
                    rows.append({"label": name, "note": f"student, {nfe} NFE" + ("" if done else " (unfinished)"), "kind": "student", **images.get(png)})
            sections.append({"nfe": nfe, "open": nfe == nfes[0], "rows": rows})
        if sections:
            out.append({"seed": seed, "sections": sections})
    return out


def _other_grids(study: dict, df, run_dir: Path, images: _Images) -> list[dict]:
    """Grid images the comparisons do not show (other teacher step counts, files of other names)."""
    root = run_dir / VARIANTS_DIR
    if not root.is_dir():
        return []
    labels = _variant_labels(study, df)
    study_keys = [str(v["key"]) for v in study.get("variants", []) if isinstance(v, dict) and v.get("key")]
    rank = {k: i for i, k in enumerate(study_keys)}
    dirs = sorted((p for p in root.iterdir() if p.is_dir()), key=lambda p: (0 if p.name.startswith("teacher") else 1, rank.get(p.name, len(rank)), p.name))
    out = []
    for d in dirs:
        pngs = [p for p in sorted(d.glob("*.png"), key=_natural_key) if p not in images.used]
        if not pngs:
            continue
        name, seed = labels.get(d.name, (d.name, None))
        out.append(
            {
                "key": d.name,
                "variant": name,
                "seed": count(seed) if not is_missing(seed) else "",
                "done": (d / DONE_FILE).is_file(),
                "images": [images.get(p) for p in pngs],
            }
        )
    return out
