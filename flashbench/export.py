"""``flashbench export``: one variant's student LoRA in the format the user's tool reads, with a model card.

A run directory (``flashbench run``) keeps each student as ``variants/<key>/lora/``: a diffusers LoRA file
(``pytorch_lora_weights.safetensors``, PEFT key names under ``unet.``, what the SD-family teachers write) or
a peft adapter folder (``adapter_model.safetensors`` + ``adapter_config.json``, what ``pixart-alpha`` writes).

Formats:

* ``diffusers``: the file as ``pipe.load_lora_weights(folder)`` reads it.
* ``comfyui``: one kohya-format file (``lora_unet_..._to_q.lora_down.weight`` + ``.alpha``), the format
  ComfyUI and A1111 load; written with diffusers' own ``convert_state_dict_to_kohya``, so that diffusers'
  own kohya reader (``lora_state_dict``, ``load_lora_weights``) gives the same weights back.
* ``peft``: ``adapter_model.safetensors`` + ``adapter_config.json`` for ``PeftModel.from_pretrained(unet,
  folder)`` / ``model.load_adapter(folder)``.

Alpha: flashbench's SD-family adapters have ``lora_alpha = rank`` (scale 1), and a diffusers file without
alphas is read with that same assumption; the kohya ``alpha`` and peft's ``lora_alpha`` say so explicitly.
Every export also writes ``README.md``, a model card (:mod:`flashbench.model_card`), and copies the
variant's sample grids next to it.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError
from .results import STUDY_FILE, VARIANTS_DIR, ResultStore

FORMATS = ("diffusers", "comfyui", "peft")
DIFFUSERS_WEIGHTS = "pytorch_lora_weights.safetensors"
PEFT_WEIGHTS = "adapter_model.safetensors"
PEFT_CONFIG = "adapter_config.json"
UNET_PREFIX = "unet."
PEFT_PREFIX = "base_model.model."  # how PeftModel.save_pretrained names a wrapped model's weights
_LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<part>[AB])\.weight$")


@dataclass(frozen=True)
class RunVariant:
    """One variant (at one seed) of a run directory, as its resolved study describes it."""

    run_dir: Path
    study: dict
    data: dict  # the variant's entry of study.json: name, seed, key, axes, train, eval

    @property
    def key(self) -> str:
        return self.data["key"]

    @property
    def name(self) -> str:
        return self.data["name"]

    @property
    def folder(self) -> Path:
        return self.run_dir / VARIANTS_DIR / self.key


def read_study(run_dir: Path) -> dict:
    """The resolved study of ``run_dir``; a UserError naming the folder when it is not a run directory."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: no such run directory" if not run_dir.exists() else f"{run_dir}: not a directory")
    study = ResultStore(run_dir).read_study()
    if not isinstance(study.get("variants"), list) or not all(isinstance(v, dict) and "key" in v for v in study["variants"]):
        raise UserError(f"{run_dir / STUDY_FILE}: no list of variants with keys; not written by `flashbench run`?")
    return study


def find_variant(run_dir: Path, text: str) -> RunVariant:
    """The variant named ``text`` (its key, e.g. ``distil-s0``, or its name when it ran with one seed)."""
    run_dir = Path(run_dir)
    study = read_study(run_dir)
    variants = study["variants"]
    by_key = [v for v in variants if v["key"] == text]
    by_name = [v for v in variants if v.get("name") == text]
    if by_key or len(by_name) == 1:
        return RunVariant(run_dir, study, (by_key or by_name)[0])
    if by_name:
        keys = ", ".join(v["key"] for v in by_name)
        raise UserError(f"{run_dir}: variant {text!r} ran with {len(by_name)} seeds; give one of its keys: {keys}")
    names = list(dict.fromkeys(v.get("name", v["key"]) for v in variants))
    keys = [v["key"] for v in variants]
    allowed = ", ".join(names) + ("" if keys == names else f" (or a key: {', '.join(keys)})")
    raise UserError(f"{run_dir}: no variant {text!r}; variants: {allowed}")


# --- reading the stored student ---------------------------------------------------------------------------
def _stored_lora(variant: RunVariant) -> tuple[str, Path]:
    """("diffusers" | "peft", path of the weights file)."""
    folder = variant.folder / "lora"
    if (folder / DIFFUSERS_WEIGHTS).is_file():
        return "diffusers", folder / DIFFUSERS_WEIGHTS
    if (folder / PEFT_WEIGHTS).is_file() and (folder / PEFT_CONFIG).is_file():
        return "peft", folder / PEFT_WEIGHTS
    why = "an evaluation-only variant has none" if variant.data.get("train", {}).get("evaluate_only") else "the variant has not finished training"
    raise UserError(f"{variant.run_dir}: variant {variant.key!r} has no LoRA ({folder / DIFFUSERS_WEIGHTS} is missing; {why})")


def _load_unet_lora(path: Path) -> dict:
    """The diffusers file's weights: PEFT key names under ``unet.`` (lora_A / lora_B), as tensors."""
    from safetensors.torch import load_file

    try:
        state = load_file(str(path))
    except Exception as e:  # a truncated or foreign file
        raise UserError(f"{path}: not a readable safetensors file ({type(e).__name__}: {e})") from None
    odd = [k for k in state if not k.startswith(UNET_PREFIX) or not _LORA_KEY.match(k)]
    if odd or not state:
        raise UserError(
            f"{path}: expected UNet LoRA weights named 'unet.<module>.lora_A|lora_B.weight' "
            f"(as flashbench's teachers save them), found {odd[0] if odd else 'no weights'!r}"
        )
    return state


# --- writers ----------------------------------------------------------------------------------------------
def _write_safetensors(state: dict, path: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata={"format": "pt"})


def to_kohya(state: dict) -> dict:
    """diffusers/PEFT-named UNet LoRA -> kohya names (ComfyUI, A1111), with ``alpha = rank`` per module."""
    from diffusers.utils import convert_state_dict_to_kohya

    return convert_state_dict_to_kohya(state)


def to_peft(state: dict) -> tuple[dict, dict]:
    """(weights named as ``PeftModel.save_pretrained`` names them, LoraConfig keyword arguments)."""
    weights, ranks = {}, {}
    for key, tensor in state.items():
        m = _LORA_KEY.match(key[len(UNET_PREFIX) :])
        module = m["module"]
        weights[f"{PEFT_PREFIX}{module}.lora_{m['part']}.weight"] = tensor
        if m["part"] == "A":
            ranks[module] = int(tensor.shape[0])
    modules = sorted(ranks)
    rank = max(set(ranks.values()), key=list(ranks.values()).count)  # the most common rank; others in rank_pattern
    pattern = {m: r for m, r in ranks.items() if r != rank}
    config = dict(
        r=rank,
        lora_alpha=rank,
        target_modules=modules,  # exact module paths: nothing else matches
        rank_pattern=pattern,
        alpha_pattern=dict(pattern),
        init_lora_weights=True,
        inference_mode=True,
    )
    return weights, config


def _output_dir(output: Path) -> Path:
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise UserError(f"--output {output}: exists and is a file, not a directory")
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--output {output}: cannot be created ({e.strerror or e})") from None
    return output


def teacher_source(variant: RunVariant, components=None) -> tuple[str, str]:
    """(teacher registry name, its ``path`` option: hub id or folder, the plugin's default when not set;
    "" when the plugin has no default path or is not installed here)."""
    spec = variant.data.get("train", {}).get("teacher", "")
    name, options = (spec, {}) if isinstance(spec, str) else (spec.get("name", ""), spec)
    path = options.get("path")
    if path is None and components is not None:
        try:
            config = components.get("teacher", name).config
        except Exception:  # not installed here: the card says the base model is unknown
            config = None
        path = getattr(config, "path", "") if config is not None else ""
    return name, str(path or "")


def export_variant(run_dir: Path, variant_text: str, fmt: str, output: Path | None = None, *, components=None) -> list[Path]:
    """Write ``variant_text``'s student of ``run_dir`` in format ``fmt`` into ``output`` (default
    ``RUN_DIR/exports/<key>-<fmt>``), with README.md and the sample grids; returns the files written."""
    if fmt not in FORMATS:
        raise UserError(f"--format: unknown format {fmt!r}; formats: {', '.join(FORMATS)}")
    variant = find_variant(Path(run_dir), variant_text)
    stored, weights_path = _stored_lora(variant)
    teacher, base = teacher_source(variant, components)
    if stored == "peft" and fmt != "peft":
        raise UserError(f"{variant.run_dir}: variant {variant.key!r} was saved as a peft adapter (teacher {teacher!r}); it exports with --format peft only")
    output = _output_dir(Path(output) if output else variant.run_dir / "exports" / f"{variant.key}-{fmt}")
    written: list[Path] = []
    if stored == "peft":
        for name in (PEFT_WEIGHTS, PEFT_CONFIG):
            written.append(Path(shutil.copyfile(weights_path.parent / name, output / name)))
    else:
        state = _load_unet_lora(weights_path)
        if fmt == "diffusers":
            written.append(Path(shutil.copyfile(weights_path, output / DIFFUSERS_WEIGHTS)))
        elif fmt == "comfyui":
            path = output / comfyui_file_name(variant)
            _write_safetensors(to_kohya(state), path)
            written.append(path)
        else:
            from peft import LoraConfig

            weights, kwargs = to_peft(state)
            _write_safetensors(weights, output / PEFT_WEIGHTS)
            LoraConfig(base_model_name_or_path=base or None, **kwargs).save_pretrained(str(output))
            written += [output / PEFT_WEIGHTS, output / PEFT_CONFIG]
    grids = []
    for grid in sorted(variant.folder.glob("grid_nfe*.png"), key=_nfe_of):
        grids.append(Path(shutil.copyfile(grid, output / grid.name)))
    from .model_card import write_model_card

    written.append(
        write_model_card(variant, fmt, output, files=[p.name for p in written + grids], grids=[g.name for g in grids], teacher=teacher, base_model=base)
    )
    return written + grids


def comfyui_file_name(variant: RunVariant) -> str:
    stem = re.sub(r"[^A-Za-z0-9._+-]+", "_", f"{variant.study.get('name', 'flashbench')}-{variant.key}")
    return f"{stem}.safetensors"


def _nfe_of(path: Path) -> int:
    m = re.search(r"grid_nfe(\d+)", path.name)
    return int(m.group(1)) if m else 0
