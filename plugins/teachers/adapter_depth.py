"""``adapter-depth``: SDXL base + the public depth T2I-Adapter (``TencentARC/t2i-adapter-depth-midas-sdxl-1.0``)
as a Flash teacher (Sec. 5.3.2, Fig. 10; Appendix A: K = 16, omega in [3, 7], distillation loss as SDXL).

The same teacher as ``adapter-canny`` with a depth adapter: ``extras["control"]`` holds (B, 3, H, W) MiDaS
depth maps in [0, 1] (near = bright) at the training resolution. The frozen adapter's residuals, times
``conditioning_scale``, enter the cond dict as ``adapter_0`` .. ``adapter_3``; the null conditioning keeps
them and nulls the text. LoRA, export and the other fields as ``adapter-canny``.

Config: the ``sdxl`` fields (``path`` is the SDXL base), ``adapter_path`` (hub id or local folder),
``conditioning_scale`` (0.8, used for training and to pass to the stock pipeline as
``adapter_conditioning_scale``).
"""

from __future__ import annotations

from dataclasses import dataclass

from flashbench import hookimpl

from .sdxl import SDXLTeacherConfig


@dataclass(frozen=True)
class AdapterDepthTeacherConfig(SDXLTeacherConfig):
    adapter_path: str = "TencentARC/t2i-adapter-depth-midas-sdxl-1.0"
    conditioning_scale: float = 0.8

    def __post_init__(self):
        super().__post_init__()
        if self.conditioning_scale < 0:
            raise ValueError(f"conditioning_scale must be >= 0, got {self.conditioning_scale}")


def build(config: AdapterDepthTeacherConfig, *, device="cpu", dtype=None):
    from ._sdxl_family import build_adapter

    return build_adapter(config, device=device, dtype=dtype)


@hookimpl
def register_teachers(register):
    register("adapter-depth", build, config=AdapterDepthTeacherConfig, description="SDXL + depth (MiDaS) T2I-Adapter (control image in extras['control'])")
