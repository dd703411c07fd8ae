"""Option checks shared by the ``sd3`` and ``flux`` teacher configs (no torch here: a config is validated
before anything heavy is imported)."""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass(frozen=True)
class FlowTeacherOptions:
    """The options the ``sd3`` and ``flux`` configs share, checked once (their configs subclass it and set their
    own defaults: a redeclared field keeps its place in the option list)."""

    path: str = ""
    max_sequence_length: int = 256
    resolution: int = 0
    default_lora_rank: int = 64
    lora_alpha: float = 0.0
    lora_targets: tuple[str, ...] = ()
    disc_blocks: int = 0
    disc_features: str = "tokens"
    dtype: str = "float32"

    def __post_init__(self):
        if self.max_sequence_length < 1:
            raise ValueError(f"max_sequence_length must be positive, got {self.max_sequence_length}")
        targets = check_options(
            rank=self.default_lora_rank,
            alpha=self.lora_alpha,
            targets=self.lora_targets,
            disc_blocks=self.disc_blocks,
            disc_features=self.disc_features,
            dtype=self.dtype,
            resolution=self.resolution,
        )
        object.__setattr__(self, "lora_targets", targets)  # a TOML list arrives as a list

    def teacher_kwargs(self) -> dict:
        """The shared keyword arguments of the family's teacher class."""
        return dict(
            max_sequence_length=self.max_sequence_length,
            resolution=self.resolution,
            default_lora_rank=self.default_lora_rank,
            lora_alpha=self.lora_alpha,
            lora_targets=self.lora_targets,
            disc_blocks=self.disc_blocks,
            disc_features=self.disc_features,
        )
