"""``adapter-canny``: SDXL base + the public canny-edge T2I-Adapter (``TencentARC/t2i-adapter-canny-sdxl-1.0``)
as a Flash teacher (Sec. 5.3.2, Fig. 10; Appendix A: K = 16, omega in [3, 7], distillation loss as SDXL).

The adapter is frozen: it runs once per batch on ``extras["control"]`` ((B, 3, H, W) canny edge maps in
[0, 1] at the training resolution, as the stock pipeline's ``image`` tensor), and its residuals
(``down_intrablock_additional_residuals``), times ``conditioning_scale``, enter the cond dict as
``adapter_0`` .. ``adapter_3``. CFG's null conditioning keeps the residuals and nulls the text (SDXL's
zeros), as ``StableDiffusionXLAdapterPipeline`` does. The LoRA trains the UNet only (rank 64 on the
attention projections, as ``sdxl``); the student exports as an SDXL LoRA that
``StableDiffusionXLAdapterPipeline.load_lora_weights`` loads.

Config: the ``sdxl`` fields (``path`` is the SDXL base), ``adapter_path`` (hub id or local folder),
``conditioning_scale`` (0.8: the paper samples with 0.8, and its training code distils with the same
scale, so the student learns the adapter strength it is sampled with; pass it to the stock pipeline as
``adapter_conditioning_scale``).
"""

from __future__ import annotations

from dataclasses import dataclass

from flashbench import hookimpl

from .sdxl import SDXLTeacherConfig


@dataclass(frozen=True)
class AdapterCannyTeacherConfig(SDXLTeacherConfig):
    adapter_path: str = "TencentARC/t2i-adapter-canny-sdxl-1.0"
    conditioning_scale: float = 0.8

    def __post_init__(self):
        super().__post_init__()
        if self.conditioning_scale < 0:
            raise ValueError(f"conditioning_scale must be >= 0, got {self.conditioning_scale}")


def build(config: AdapterCannyTeacherConfig, *, device="cpu", dtype=None):
    from ._sdxl_family import build_adapter

    return build_adapter(config, device=device, dtype=dtype)


@hookimpl
def register_teachers(register):
    register("adapter-canny", build, config=AdapterCannyTeacherConfig, description="SDXL + canny T2I-Adapter (control image in extras['control'])")
