"""The published teacher contract (:mod:`flashbench.testing`) on the teachers this project ships or builds on:
the bundled pixel-space ``toy-digits`` teacher and a tiny *latent* SD-style model (UNet + VAE + CLIP text
encoder + SD's DDIM schedule) written to a folder from config and loaded through ``SDFamilyTeacher``.
"""

from __future__ import annotations

import pytest
import torch

from flashbench.testing import MissingWeights, TeacherContract, tiny_text_prompts

pytestmark = pytest.mark.usefixtures("one_thread")


def write_tiny_sd(root):
    """A tiny SD1.5-shaped diffusers folder (random weights, seeded): 8x8x4 latents, 16x16 images."""
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from flashbench_plugins.toy.models import write_clip_tokenizer

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        norm_num_groups=32,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(32, 64),
        latent_channels=4,
        sample_size=16,
        norm_num_groups=32,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
        )
    )
    scheduler = DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    for name, model in (("unet", unet), ("vae", vae), ("text_encoder", text_encoder)):
        model.eval().save_pretrained(root / name)
    scheduler.save_pretrained(root / "scheduler")
    write_clip_tokenizer(root / "tokenizer", model_max_length=77)  # SD's 77 tokens = the text encoder's positions
    return root


@pytest.fixture(scope="module")
def tiny_sd_folder(tmp_path_factory):
    return write_tiny_sd(tmp_path_factory.mktemp("tiny-sd"))


class TestToyDigitsTeacher(TeacherContract):
    def make_teacher(self):
        from flashbench.plugins import collect_components

        return collect_components().get("teacher", "toy-digits").build({}, device="cpu")

    def prompts(self):
        return ["a red digit one", "a cyan digit eight"]


class TestTinyLatentSDTeacher(TeacherContract):
    # the contract's opt-in offline check, on the family class itself (no option name to check)
    missing_weights = (MissingWeights({"path": "nonexistent-org/nonexistent-model"}, "nonexistent-org/nonexistent-model", None),)

    @pytest.fixture(scope="class", autouse=True)
    @classmethod
    def _folder(cls, request, tiny_sd_folder):
        request.cls.folder = tiny_sd_folder

    def make_teacher(self):
        return self.build_teacher({"path": str(self.folder)})

    def build_teacher(self, options, *, device="cpu"):
        from flashbench_plugins.teachers._sd_family import SDFamilyTeacher

        return SDFamilyTeacher(options["path"], device=device)

    def prompts(self):
        return tiny_text_prompts(3)

    def test_latent_model_has_a_vae(self, teacher):
        assert teacher.vae is not None and teacher.latent_shape == (4, 8, 8)
        assert teacher.decode(teacher.encode(torch.zeros(1, 3, 16, 16))).shape == (1, 3, 16, 16)
