"""The model card written with every export: ``README.md`` with the Hugging Face Hub's YAML metadata
(base model, library, tags, licence), the recipe, the variant's stored metrics with their 95% intervals,
and the sample grids, so that the export folder can be published as it is.

Only stored results are read (``results.jsonl``, ``study.json``); rows from runs older than the intervals
have no ``ci_low`` / ``ci_high`` and are shown with "no interval stored".
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from .formatting import significant, significant_interval
from .results import ResultStore

PAPER = "Flash Diffusion (Chadebec et al., [arXiv 2406.02347](https://arxiv.org/abs/2406.02347))"

#: licences of the teachers' default weights on the Hub (their model cards' ``license``)
KNOWN_LICENSES = {
    "stable-diffusion-v1-5/stable-diffusion-v1-5": "creativeml-openrail-m",
    "runwayml/stable-diffusion-v1-5": "creativeml-openrail-m",
    "stable-diffusion-v1-5/stable-diffusion-inpainting": "creativeml-openrail-m",
    "runwayml/stable-diffusion-inpainting": "creativeml-openrail-m",
    "stabilityai/stable-diffusion-xl-base-1.0": "openrail++",
    "stabilityai/stable-diffusion-x4-upscaler": "openrail++",
    "PixArt-alpha/PixArt-XL-2-512x512": "openrail++",
    "PixArt-alpha/PixArt-XL-2-1024-MS": "openrail++",
    "PixArt-alpha/PixArt-Sigma-XL-2-1024-MS": "openrail++",
    "stabilityai/stable-diffusion-2-1": "openrail++",
    # their cards say "other" and name their own licences (Stability AI Community; FLUX.1 [dev] Non-Commercial)
    "stabilityai/stable-diffusion-3-medium-diffusers": "other",
    "black-forest-labs/FLUX.1-dev": "other",
}

#: the model family of each built-in teacher, as a Hub tag
FAMILY_TAGS = {
    "sd15": "stable-diffusion",
    "inpaint": "stable-diffusion",
    "superres": "stable-diffusion",
    "faceswap": "stable-diffusion",
    "toy-digits": "stable-diffusion",
    "toy-digits-flow": "stable-diffusion",  # SD1.5 classes and loader, trained with rectified flow
    "sdxl": "stable-diffusion-xl",
    "adapter-canny": "stable-diffusion-xl",
    "adapter-depth": "stable-diffusion-xl",
    "pixart-alpha": "pixart-alpha",
    "pixart-sigma": "pixart-sigma",
    "sd21-v": "stable-diffusion",
    "sd3": "stable-diffusion-3",
    "flux": "flux",
}

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_HUB_CACHE = re.compile(r"models--([^/\\]+)--([^/\\]+)")


def hub_id(path: str) -> str | None:
    """The Hub id of a teacher ``path``: the id itself, or the id a Hub cache snapshot folder was fetched from."""
    if not path:
        return None
    m = _HUB_CACHE.search(path)
    if m:
        return f"{m.group(1)}/{m.group(2)}"
    if _HUB_ID.match(path) and not Path(path).exists():
        return path
    return None


def teacher_license(path: str) -> str | None:
    """The teacher's licence: its folder's own model card (``license:`` in README.md's front matter), else
    the Hub licence of a known id; None when unknown."""
    folder = Path(path) if path else None
    if folder is not None and folder.is_dir():
        readme = folder / "README.md"
        if readme.is_file():
            front = _front_matter(readme.read_text(encoding="utf-8", errors="replace"))
            m = re.search(r"^license:\s*['\"]?([^'\"\n#]+?)['\"]?\s*$", front, re.M)
            if m:
                return m.group(1)
    return KNOWN_LICENSES.get(hub_id(path) or "")


def _front_matter(text: str) -> str:
    if not text.startswith("---"):
        return ""
    end = text.find("\n---", 3)
    return text[3:end] if end > 0 else ""


def _yaml(value) -> str:
    return json.dumps(value, ensure_ascii=False)  # a JSON string is a YAML scalar, quotes and all


def _cell(value) -> str:
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def interval_text(row: dict) -> str:
    """A row's 95% interval, e.g. ``[0.41, 0.52] (bootstrap)``, or "no interval stored"."""
    lo, hi = row.get("ci_low"), row.get("ci_high")
    if not (isinstance(lo, (int, float)) and isinstance(hi, (int, float))):
        return "no interval stored"
    level = row.get("ci_level")
    notes = [str(row["ci_method"])] if row.get("ci_method") else []
    if isinstance(level, (int, float)) and abs(level - 0.95) > 1e-9:  # the column says 95%: say when it is not
        notes.append(f"{level:.0%} level")
    return significant_interval(lo, hi) + (f" ({', '.join(notes)})" if notes else "")


def metric_rows(run_dir: Path, key: str) -> list[dict]:
    """The student rows of variant ``key`` in ``run_dir``'s results, by metric then NFE."""
    rows = [r for r in ResultStore(run_dir).rows() if r.get("variant_key") == key and r.get("role", "student") == "student"]
    return sorted(rows, key=lambda r: (str(r.get("metric")), r.get("nfe") or 0, r.get("steps") or 0))


def render_model_card(variant, fmt: str, *, files: list[str], grids: list[str], teacher: str, base_model: str) -> str:
    study = variant.study
    hub = hub_id(base_model)
    license_ = teacher_license(base_model)
    tags = list(dict.fromkeys(["flashbench", "flash-diffusion", "lora", "diffusers", *([FAMILY_TAGS[teacher]] if teacher in FAMILY_TAGS else []), teacher]))
    front = ["---"]
    if hub:
        front += [f"base_model: {_yaml(hub)}", "base_model_relation: adapter"]
    front.append(f"library_name: {_yaml('peft' if fmt == 'peft' else 'diffusers')}")
    if license_:
        front.append(f"license: {_yaml(license_)}")
    else:  # the Hub's way of saying "not one of the listed licences"
        front += ["license: other", "license_name: unknown"]
    front += ["tags:", *(f"- {_yaml(t)}" for t in tags), "---"]

    where = f"`{hub}`" if hub else (f"the local folder `{base_model}`" if base_model else "its bundled weights")
    title = f"{study.get('name', '?')} / {variant.key}"
    lines = [
        *front,
        "",
        f"# Flash Diffusion student: {title}",
        "",
        f"A few-step LoRA student of the `{teacher}` teacher ({where}), distilled with {PAPER} by "
        f"flashbench, variant `{variant.name}` (seed {variant.data.get('seed')}) of study "
        f"`{study.get('name')}` at scale `{study.get('scale')}`" + (f": {study.get('title')}" if study.get("title") else "") + ".",
        "",
        f"**Licence**: {license_} (the teacher's)."
        if license_
        else "**Licence**: unknown: the teacher's licence could not be determined here; check it before publishing.",
        "",
        "## Files",
        "",
        *(f"- `{name}`" for name in files + ["README.md"]),
        "",
        "## Use",
        "",
        *_usage(fmt, files, hub or base_model),
        "",
        "## Recipe",
        "",
        "The variant's resolved training and evaluation configuration (`study.json` of the run):",
        "",
        "```json",
        json.dumps({"train": variant.data.get("train"), "eval": variant.data.get("eval")}, indent=2),
        "```",
        "",
        "## Metrics",
        "",
        *_metrics(variant),
        "",
    ]
    if grids:
        lines += ["## Samples", ""]
        for grid in grids:
            nfe = re.search(r"nfe(\d+)", grid)
            lines += [f"![samples at {nfe.group(1) if nfe else '?'} NFE]({grid})", ""]
    return "\n".join(lines)


def _usage(fmt: str, files: list[str], base: str) -> list[str]:
    base = base or "<the teacher's diffusers folder>"
    if fmt == "comfyui":
        return [
            f"Copy `{files[0]}` into `ComfyUI/models/loras/` (or A1111's `models/Lora/`) and apply it to the teacher "
            "model with strength 1; sample with an LCM sampler in 1-4 steps, CFG 1."
        ]
    if fmt == "peft":
        return [
            "```python",
            "from peft import PeftModel",
            "",
            f"unet = PeftModel.from_pretrained(pipe.unet, \"path/to/this/folder\")  # pipe: the teacher's pipeline ({base})",
            "```",
        ]
    return [
        "```python",
        "from diffusers import AutoPipelineForText2Image, LCMScheduler",
        "",
        f"pipe = AutoPipelineForText2Image.from_pretrained({_yaml(base)})",
        "pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config, timestep_spacing=\"trailing\")",
        "pipe.load_lora_weights(\"path/to/this/folder\")",
        "image = pipe(\"a prompt\", num_inference_steps=4, guidance_scale=0).images[0]",
        "```",
    ]


def _metrics(variant) -> list[str]:
    rows = metric_rows(variant.run_dir, variant.key)
    if not rows:
        return ["No results stored for this variant."]
    out = ["| metric | NFE | steps | value | 95% interval | n |", "| --- | ---: | ---: | ---: | --- | ---: |"]
    for r in rows:
        arrow = {True: " ↑", False: " ↓"}.get(r.get("higher_is_better"), "")
        if r.get("status", "ok") != "ok" or r.get("value") is None:
            value, interval = "failed", _cell(r.get("reason") or "")
        else:
            value, interval = significant(r["value"]), interval_text(r)
        out.append(
            f"| {_cell(r.get('metric'))}{arrow} | {_cell(r.get('nfe'))} | {_cell(r.get('steps'))} | {value} | "
            f"{_cell(interval)} | {_cell(r.get('n') if r.get('n') is not None else '')} |"
        )
    return out


def write_model_card(variant, fmt: str, output: Path, **kwargs) -> Path:
    path = Path(output) / "README.md"
    path.write_text(render_model_card(variant, fmt, **kwargs), encoding="utf-8")
    return path
