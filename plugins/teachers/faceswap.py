"""``faceswap``: the user's own SD2-like face-swap model (the paper's is in-house: Sec. 5.3.4, Appendix A.4).

No public weights: ``path`` must name a local diffusers folder laid out like a Stable Diffusion 2 pipeline
(``unet``, ``vae``, ``text_encoder``, ``tokenizer``, ``scheduler``; what ``StableDiffusionPipeline.
save_pretrained`` writes). The UNet conditions on the source face by **channel concatenation**: its input
is ``cat([z_t, source-face latents, ...])``, the source face crop resized to the model's image size and
encoded by the VAE; the default ``inputs = ["source_face"]`` is an 8-channel UNet (4 noisy + 4 face).
Models that also see the target's context take ``inputs = ["source_face", "masked_target", "face_mask"]``
(4 + 4 + 4 + 1 = 13 channels: the target with its face region blanked, encoded, and the face region's
mask). Face identity given as an image-encoder embedding (cross-attention tokens) is not supported: a
model built that way needs its own teacher plugin. The prompt conditions through cross-attention as in
SD2 (datasets may give empty prompts).

Training data: a dataset with ``task = "faceswap"`` (``image-captions``, ``webdataset``) gives the batch's
images as targets and ``extras["source_face"]`` (B, 3, h, w), plus ``face_mask`` / ``masked_image``; the
face crop comes from each sample's box or a face detector (a component of kind ``face_detector``, see
:mod:`flashbench_plugins.datasets.face_detectors`). CFG's null conditioning: the empty prompt and the
source-face latents zeroed.

The scheduler's ``prediction_type`` may be ``epsilon`` or ``v_prediction`` (common for SD2); the teacher's
noise process is then ``vp-v`` (x0 = sqrt(acp) z_t - sqrt(1 - acp) v).

Recipe (Appendix A.4): 512 px, K = 16, phases of 5000 iterations, 15k iterations, batch 8 x 2 GPUs,
omega ~ U[2, 7], MSE + LSGAN, lambda_adv [0, .1, .2, .3], lambda_DMD [0, .3, .5, .7]. The paper gives no
LoRA size for this model; the default LoRA (rank 64 on the transformer blocks' attention, projection and
feed-forward layers) is SD1.5's budget (26.4M in the paper): 27,656,192 parameters on an SD2-base-sized
8-channel UNet.

Export: ``save_lora`` writes diffusers' ``pytorch_lora_weights.safetensors`` (``unet.`` keys) that any
Stable Diffusion pipeline class loads with ``load_lora_weights``, including ``StableDiffusionPipeline``
over the user's folder and this plugin's ``FaceSwapPipeline`` (which knows how to feed the face).

Config: ``path`` (required), ``inputs`` (["source_face"]), ``default_lora_rank`` (64), ``lora_targets``.
"""

from __future__ import annotations

from dataclasses import dataclass

from flashbench import hookimpl
from flashbench.errors import MissingWeightsError

from ._faceswap_configs import LORA_TARGETS


@dataclass(frozen=True)
class FaceSwapTeacherConfig:
    path: str = ""
    inputs: tuple[str, ...] = ("source_face",)
    default_lora_rank: int = 64
    lora_targets: tuple[str, ...] = LORA_TARGETS


def build(config: FaceSwapTeacherConfig, *, device="cpu", dtype=None):
    if not config.path:
        raise MissingWeightsError(
            "teacher 'faceswap' has no public weights: set its path option to a local diffusers folder of your "
            "face-swap model (unet with the face's extra input channels, vae, text_encoder, tokenizer, scheduler)"
        )
    import torch

    from ._faceswap import FaceSwapTeacher

    return FaceSwapTeacher(
        config.path,
        inputs=config.inputs,
        device=device,
        dtype=dtype or torch.float32,
        lora_targets=config.lora_targets,
        default_lora_rank=config.default_lora_rank,
    )


@hookimpl
def register_teachers(register):
    register(
        "faceswap", build, config=FaceSwapTeacherConfig, description="your SD2-like face-swap UNet (local folder); source face VAE latents channel-concatenated"
    )
