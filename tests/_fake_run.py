"""A fabricated run directory, as ``flashbench run`` writes one, without training: the resolved study of the
two-variant toy study, stored rows (with or without 95% intervals), sample grids and, when given, a LoRA."""

from __future__ import annotations

import shutil
from pathlib import Path

from flashbench.results import ResultStore

from _builders import two_variant_study


def resolved_study(tmp: Path, components, *, teacher=None, name: str = "tiny") -> dict:
    """study.json data of the two-variant study (variants distil-s0, full-s0); ``teacher`` replaces the
    teacher spec of every variant (e.g. ``{"name": "sd15", "path": "..."}``)."""
    from flashbench.study import load_study

    data = load_study(two_variant_study(tmp / f"{name}.toml", name=name), components=components).to_data()
    if teacher is not None:
        for v in data["variants"]:
            v["train"]["teacher"] = teacher
    return data


def row(study: str, key: str, variant: str, metric: str, nfe: int, value, *, role="student", seed=0, ci=None, **extra) -> dict:
    r = {
        "study": study,
        "scale": "toy",
        "variant": variant,
        "variant_key": key,
        "seed": seed,
        "role": role,
        "nfe": nfe,
        "steps": nfe,
        "metric": metric,
        "value": value,
        "n": 64,
        "higher_is_better": metric == "clip_score",
        "git_hash": "0123456789abcdef",
        **extra,
    }
    if ci is not None:
        r.update(ci_low=ci[0], ci_high=ci[1], ci_method="bootstrap")
    return r


def write_run(run_dir: Path, study: dict | None, rows: list[dict]) -> Path:
    """Store ``rows`` (marking each variant key done) and ``study`` as a run directory."""
    store = ResultStore(run_dir)
    if study is not None:
        store.write_study(study)
    for key in dict.fromkeys(r["variant_key"] for r in rows):
        mine = [r for r in rows if r["variant_key"] == key]
        store.add_rows(mine)
        store.mark_done(key, {"status": "ok", "rows": len(mine)})
    return Path(run_dir)


def add_grids(run_dir: Path, key: str, nfes=(2, 4)) -> None:
    from PIL import Image

    folder = ResultStore(run_dir).variant_dir(key)
    for nfe in nfes:
        Image.new("RGB", (32, 32), (nfe * 40, 0, 0)).save(folder / f"grid_nfe{nfe}.png")


def add_lora(run_dir: Path, key: str, lora_folder: Path) -> None:
    shutil.copytree(lora_folder, ResultStore(run_dir).variant_dir(key) / "lora")
