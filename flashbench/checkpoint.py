"""Mid-variant training checkpoints: one safetensors file per variant, replaced atomically.
:func:`save_training` and :func:`load_training` write and restore a trainer's (the training loop,
:mod:`flashbench.training`, calls them); :func:`save` and :func:`load` any parameter groups and optimisers.

Tensors: the student's LoRA parameters, the discriminator head, both Adam states and the torch
generator's (and global RNGs') states. Metadata (JSON in the safetensors header): the step to run next,
the phase, the numpy data RNG's state, the optimisers' hyper-parameters, the NFE/time counters, the
loss history and a fingerprint of the training configuration. Loading unpickles nothing.

A SIGKILL during a write leaves the previous checkpoint intact (temporary file + rename); a stray
temporary file is ignored. A checkpoint whose fingerprint differs (the study changed the variant's
recipe) is ignored with a warning and the variant starts afresh.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import UserError
from .config import FINGERPRINT_SINCE, RESUME_NEUTRAL_FIELDS
from .results import atomic_write_with

FORMAT = 1
# Fields a checkpoint may be continued across (flashbench.config, the one list of neutral fields)
NEUTRAL_FIELDS = RESUME_NEUTRAL_FIELDS

log = logging.getLogger("flashbench")


def _plain(v: Any) -> Any:
    if hasattr(v, "to_data"):
        return v.to_data()
    if isinstance(v, (tuple, list)):
        return [_plain(x) for x in v]
    return v


_UNSET = object()


def fingerprint(cfg) -> str:
    data = {
        f.name: _plain(getattr(cfg, f.name))
        for f in dataclasses.fields(cfg)
        if f.name not in NEUTRAL_FIELDS and getattr(cfg, f.name) != FINGERPRINT_SINCE.get(f.name, _UNSET)
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def tracker_config(cfg) -> dict[str, Any]:
    """The configuration as the flat scalars trackers (TensorBoard hparams) accept."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        v = _plain(getattr(cfg, f.name))
        out[f.name] = v if isinstance(v, (int, float, str, bool)) else json.dumps(v, default=str)
    return out


def _training_state(trainer) -> tuple[dict[str, list], dict]:
    """A trainer's saved parameter groups and optimisers (the discriminator's empty without one)."""
    modules = {"lora": trainer.lora_params, "head": list(trainer.head.parameters()) if trainer.head else []}
    return modules, {"opt": trainer.opt, "head_opt": trainer.head_opt}


def save_training(path: Path, trainer, *, step: int, data_rng: np.random.Generator, counters: dict) -> None:
    """Write ``trainer``'s state before step ``step`` (:class:`~flashbench.method.trainer.FlashTrainer`: LoRA,
    head, optimisers, generator; ``data_rng``; ``counters``: the loop's NFE/time counters and loss history)."""
    modules, optimizers = _training_state(trainer)
    phase = trainer.timesteps.phase(trainer.counted(max(0, step - 1)))
    save(
        path,
        modules=modules,
        optimizers=optimizers,
        generator=trainer.generator,
        data_rng=data_rng,
        meta={"step": step, "phase": phase, "fingerprint": fingerprint(trainer.cfg), **counters},
    )


def load_training(path: Path, trainer, data_rng: np.random.Generator) -> dict | None:
    """Restore a checkpoint written for ``trainer``'s configuration into it and ``data_rng``; None (start
    afresh) when there is none or it belongs to another configuration of the variant."""
    modules, optimizers = _training_state(trainer)
    return load(path, modules=modules, optimizers=optimizers, generator=trainer.generator, data_rng=data_rng, fingerprint=fingerprint(trainer.cfg))


def save(path: Path, *, modules: dict[str, list], optimizers: dict, generator: torch.Generator, data_rng: np.random.Generator, meta: dict) -> None:
    from safetensors.torch import save as to_bytes

    tensors: dict[str, torch.Tensor] = {}
    for group, params in modules.items():
        for i, p in enumerate(params):
            tensors[f"{group}.{i}"] = p.detach().cpu().contiguous().clone()
    opt_meta = {}
    for name, opt in optimizers.items():
        if opt is None:
            continue
        sd = opt.state_dict()
        scalars = {}
        for idx, state in sd["state"].items():
            for k, v in state.items():
                if torch.is_tensor(v):
                    tensors[f"{name}.state.{idx}.{k}"] = v.detach().cpu().contiguous().clone()
                else:
                    scalars[f"{idx}.{k}"] = v
        opt_meta[name] = {"param_groups": sd["param_groups"], "scalars": scalars}
    tensors["rng.generator"] = generator.get_state()
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    header = {"format": FORMAT, **meta, "optimizers": opt_meta, "data_rng": data_rng.bit_generator.state, "groups": {g: len(p) for g, p in modules.items()}}
    blob = to_bytes(tensors, metadata={"flashbench": json.dumps(header, default=_json_default)})
    atomic_write_with(path, lambda f: f.write(blob), binary=True)


def _json_default(v: Any) -> Any:
    if isinstance(v, tuple):
        return list(v)
    if isinstance(v, (np.integer,)):
        return int(v)
    raise TypeError(f"not JSON-serialisable in a checkpoint: {type(v).__name__}")


def read_meta(path: Path) -> dict:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return json.loads((f.metadata() or {})["flashbench"])
    except Exception as exc:  # a damaged file: the user decides, nothing is deleted silently
        raise UserError(f"{path}: unreadable checkpoint ({type(exc).__name__}: {exc}); delete it to restart this variant") from exc


def load(path: Path, *, modules: dict[str, list], optimizers: dict, generator: torch.Generator, data_rng: np.random.Generator, fingerprint: str) -> dict | None:
    """Restore ``path`` into the given parameters, optimisers and RNGs; returns its metadata, or None
    when there is no checkpoint or it was written for another configuration."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        return None
    meta = read_meta(path)
    if meta.get("fingerprint") != fingerprint:
        log.warning(
            "%s: written for another configuration of this variant (fingerprint %s, now %s); starting afresh", path, meta.get("fingerprint"), fingerprint
        )
        return None
    groups = {g: len(p) for g, p in modules.items()}
    if meta.get("groups") != groups:
        raise UserError(f"{path}: holds parameter groups {meta.get('groups')}, the model has {groups}; delete it to restart this variant")
    tensors = load_file(str(path))
    with torch.no_grad():
        for group, params in modules.items():
            for i, p in enumerate(params):
                p.copy_(tensors[f"{group}.{i}"].to(p.device, p.dtype))
    for name, opt in optimizers.items():
        if opt is None:
            continue
        saved = meta["optimizers"][name]
        state: dict[int, dict] = {}
        prefix = f"{name}.state."
        for key, t in tensors.items():
            if key.startswith(prefix):
                idx, k = key[len(prefix) :].split(".", 1)
                state.setdefault(int(idx), {})[k] = t
        for key, v in saved["scalars"].items():
            idx, k = key.split(".", 1)
            state.setdefault(int(idx), {})[k] = v
        opt.load_state_dict({"state": state, "param_groups": saved["param_groups"]})
    generator.set_state(tensors["rng.generator"])
    torch.set_rng_state(tensors["rng.torch"])
    cuda = sorted((k for k in tensors if k.startswith("rng.cuda.")), key=lambda k: int(k.rsplit(".", 1)[1]))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda])
    data_rng.bit_generator.state = meta["data_rng"]
    return meta
