"""Option checks shared by the ``sd3`` and ``flux`` teacher configs (no torch here: a config is validated
before anything heavy is imported)."""
from __future__ import annotations

DTYPES = ("float32", "bfloat16", "float16")
DISC_FEATURES = ("tokens", "output")


def check_options(*, rank: int, alpha: float, targets, disc_blocks: int, disc_features: str, dtype: str, resolution: int) -> tuple[str, ...]:
    """Validate the options every flow teacher config shares; returns ``targets`` as a tuple."""
    if rank < 1:
        raise ValueError(f"default_lora_rank must be positive, got {rank}")
    if alpha < 0:
        raise ValueError(f"lora_alpha must be >= 0 (0: alpha = rank), got {alpha}")
    if isinstance(targets, str) or not targets:
        raise ValueError(f"lora_targets must be a non-empty list of module names, got {targets!r}")
    if disc_blocks < 0:
        raise ValueError(f"disc_blocks must be >= 0 (0: half the joint blocks), got {disc_blocks}")
    if disc_features not in DISC_FEATURES:
        raise ValueError(f"disc_features must be one of {', '.join(DISC_FEATURES)}, got {disc_features!r}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if resolution < 0:
        raise ValueError(f"resolution must be >= 0 (0: the model's native size), got {resolution}")
    return tuple(targets)
