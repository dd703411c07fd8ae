"""The ``pixart-sigma`` teacher on a tiny random PixArt-Sigma folder written from config (the real classes:
``PixArtTransformer2DModel`` without micro-conditioning, ``T5EncoderModel`` with a ``T5Tokenizer`` of 300 tokens,
an ``AutoencoderKL`` with SDXL's latent scaling, PixArt's ``DPMSolverMultistepScheduler`` config), saved by
``PixArtSigmaPipeline.save_pretrained`` and loaded through the plugin: the published teacher contract (its
export check loading the peft adapter the way ``PixArtSigmaPipeline`` can), training steps of the full method,
samples at 1, 2 and 4 NFEs, the exported adapter reloaded into a fresh stock ``PixArtSigmaPipeline``, the
offline error, a PixArt-alpha 1024-MS transformer refused, and the LoRA count of the real transformer.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from flashbench.testing import MissingWeights, TeacherContract, flash_training_smoke, tiny_text_prompts
from flashbench_plugins.teachers import pixart_sigma

from _builders import plugin_components  # noqa: E402
from test_teacher_pixart import tiny_tokenizer  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

TIMESTEPS = [999, 749, 499, 249]
PROMPTS = ["A photo of a cat sitting on a sofa", "an astronaut riding a horse"]
SDXL_VAE_SCALING = 0.13025


def build(**options):
    return plugin_components(pixart_sigma).get("teacher", "pixart-sigma").build(options, device="cpu")


def write_tiny_sigma(root: Path, *, micro_conditioning: bool = False):
    """A PixArt-Sigma-shaped diffusers folder (random seeded weights): 8x8x4 latents, 2 blocks of width 24,
    learned sigma, no micro-conditioning (``micro_conditioning``: a PixArt-alpha-1024-like transformer), a
    300-token T5 tokenizer, 16x16 images. Returns (folder, the in-memory pipeline)."""
    from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, PixArtSigmaPipeline, PixArtTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(0)
    tokenizer = tiny_tokenizer()
    tokenizer.model_max_length = 300
    transformer = PixArtTransformer2DModel(
        sample_size=8,
        num_layers=2,
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=4,
        out_channels=8,
        patch_size=2,
        cross_attention_dim=24,
        caption_channels=32,
        use_additional_conditions=micro_conditioning,
    )
    text_encoder = T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer),
            d_model=32,
            d_kv=8,
            d_ff=37,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            feed_forward_proj="gated-gelu",
            dropout_rate=0.0,
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
        )
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
        scaling_factor=SDXL_VAE_SCALING,
    )
    # PixArt-Sigma's scheduler config, as PixArt-alpha's: linear betas 1e-4 .. 2e-2 on 1000 steps, epsilon
    scheduler = DPMSolverMultistepScheduler(beta_start=0.0001, beta_end=0.02, beta_schedule="linear", num_train_timesteps=1000)
    pipe = PixArtSigmaPipeline(tokenizer=tokenizer, text_encoder=text_encoder.eval(), vae=vae.eval(), transformer=transformer.eval(), scheduler=scheduler)
    pipe.save_pretrained(root)
    return root, pipe


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_sigma(tmp_path_factory.mktemp("tiny-pixart-sigma"))


def draw(pipe, teacher, prompts=PROMPTS, timesteps=TIMESTEPS):
    pipe.set_progress_bar_config(disable=True)
    return pipe(
        prompts,
        timesteps=timesteps,
        num_inference_steps=len(timesteps),
        guidance_scale=1.0,
        height=teacher.image_size,
        width=teacher.image_size,
        use_resolution_binning=False,
        max_sequence_length=teacher.max_sequence_length,
        clean_caption=False,
        generator=torch.Generator().manual_seed(0),
        output_type="pt",
    ).images


# --- loading and conditioning ----------------------------------------------------------------------------------
def test_tiny_folder_loads_through_the_plugin(tiny):
    from diffusers import PixArtSigmaPipeline

    from flashbench_plugins.teachers._pixart import PixartSigmaTeacher

    folder, original = tiny
    teacher = build(path=str(folder))
    assert isinstance(teacher, PixartSigmaTeacher) and teacher.source == str(folder)
    assert teacher.max_sequence_length == 300 and not teacher.micro_conditioning
    assert teacher.latent_shape == (4, 8, 8) and teacher.image_size == 16 and teacher.discriminator_input() == (24, 4)
    assert teacher.vae.config.scaling_factor == SDXL_VAE_SCALING
    assert teacher.noise_process.name == "vp-epsilon"
    assert isinstance(teacher.pipeline(), PixArtSigmaPipeline)
    ours = teacher.transformer.state_dict()
    assert all(torch.equal(ours[k], v) for k, v in original.transformer.state_dict().items())


def test_conditioning_is_the_sigma_pipelines(tiny):
    """Prompt and null embeddings/masks equal ``PixArtSigmaPipeline.encode_prompt`` (300 tokens, negative_prompt="")."""
    folder, pipe = tiny
    teacher = build(path=str(folder))
    cond, null = teacher.encode_prompts(PROMPTS), teacher.null_condition(PROMPTS)
    assert set(cond) == {"encoder_hidden_states", "encoder_attention_mask"}  # no resolution / aspect ratio
    assert cond["encoder_hidden_states"].shape == (2, 300, 32)
    pe, pm, ne, nm = pipe.encode_prompt(PROMPTS, True, negative_prompt="", device="cpu", clean_caption=False, max_sequence_length=300)
    torch.testing.assert_close(cond["encoder_hidden_states"], pe)
    torch.testing.assert_close(null["encoder_hidden_states"], ne)
    assert torch.equal(cond["encoder_attention_mask"], pm) and torch.equal(null["encoder_attention_mask"], nm)


def test_a_micro_conditioned_transformer_is_refused(tmp_path):
    from flashbench.errors import UserError

    folder, _ = write_tiny_sigma(tmp_path / "alpha-like", micro_conditioning=True)
    with pytest.raises(UserError, match="micro-conditioning.*pixart-alpha"):
        build(path=str(folder))


# --- the published contract ---------------------------------------------------------------------------------------
class TestPixartSigmaContract(TeacherContract):
    lora_rank = 4
    # the contract's opt-in checks: the offline errors, the student in a fresh stock pipeline
    missing_weights = ("nonexistent-org/nonexistent-pixart-sigma", MissingWeights({}, "PixArt-alpha/PixArt-Sigma-XL-2-1024-MS"))
    stock_pipeline = "PixArtSigmaPipeline"
    stock_min_change = 1e-3

    @pytest.fixture(scope="class", autouse=True)
    @classmethod
    def _folder(cls, request, tiny):
        request.cls.folder = tiny[0]

    def make_teacher(self):
        return build(path=str(self.folder), max_sequence_length=24)

    def build_teacher(self, options, *, device="cpu"):
        return plugin_components(pixart_sigma).get("teacher", "pixart-sigma").build(options, device=device)

    def stock_sample(self, pipe, teacher):
        out = draw(pipe, teacher, prompts=PROMPTS)
        assert out.shape == (2, 3, 16, 16)
        return out

    def prompts(self):
        return tiny_text_prompts(3)

    def load_lora_into(self, pipe, folder):
        """``PixArtSigmaPipeline`` has no ``load_lora_weights``: the adapter goes into its transformer with
        ``PeftModel.from_pretrained``, PixArt's documented way."""
        from flashbench_plugins.teachers._pixart import load_peft_adapter

        assert not hasattr(pipe, "load_lora_weights"), "PixArtSigmaPipeline gained load_lora_weights: export in its format"
        load_peft_adapter(self.pipeline_denoiser(pipe), folder)


# --- training, sampling, export ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tiny, tmp_path_factory):
    """(teacher with the smoke adapter active, per-step stats, exported folder)."""
    from flashbench.method.data import Batch

    teacher = build(path=str(tiny[0]))
    g = torch.Generator().manual_seed(0)
    batches = [Batch(torch.rand((2, 3, 16, 16), generator=g) * 2 - 1, PROMPTS, {}) for _ in range(3)]
    trainer, stats = flash_training_smoke(teacher, batches, lr=1e-2)
    folder = teacher.save_lora("smoke", tmp_path_factory.mktemp("export-sigma") / "lora")
    yield teacher, stats, folder
    trainer.close()


def test_training_steps_have_every_loss_term(trained):
    _, stats, _ = trained
    for term in ("distil", "adv", "dmd", "disc", "total"):
        assert term in stats[-1].losses, f"{term} missing from {stats[-1].losses}"
    assert all(math.isfinite(v) for s in stats for v in s.losses.values())


@pytest.mark.parametrize("nfe", [1, 2, 4])
def test_student_samples(trained, nfe):
    from flashbench.method.sampling import student_sample

    teacher, _, _ = trained
    g = torch.Generator().manual_seed(nfe)
    noise = torch.randn((2, *teacher.latent_shape), generator=g)
    images = student_sample(teacher, teacher.encode_prompts(PROMPTS), noise, nfe, g)
    assert images.shape == (2, 3, 16, 16) and torch.isfinite(images).all()


def test_exported_adapter_is_a_peft_folder_and_the_pipeline_samples_the_student(trained):
    # and flashbench's own few-step sampler is the pipeline's (same noise, same re-noising order)
    from flashbench.method.sampling import student_sample

    teacher, _, folder = trained
    assert (folder / "adapter_config.json").is_file() and (folder / "adapter_model.safetensors").is_file()
    in_memory = draw(teacher.pipeline(), teacher)
    g = torch.Generator().manual_seed(0)
    noise = torch.randn((2, *teacher.latent_shape), generator=g)
    ours = student_sample(teacher, teacher.encode_prompts(PROMPTS), noise, len(TIMESTEPS), g)
    torch.testing.assert_close((ours / 2 + 0.5).clamp(0, 1), in_memory, rtol=0, atol=1e-5)


# --- config, parameter count ------------------------------------------------------------------------------------------
def test_config_shares_pixart_alphas_rules():
    component = plugin_components(pixart_sigma).get("teacher", "pixart-sigma")
    config = component.make_config({"lora_targets": ["to_q", "to_v"]})
    assert config.lora_targets == ("to_q", "to_v") and config.source == "PixArt-alpha/PixArt-Sigma-XL-2-1024-MS"
    assert config.max_sequence_length == 300
    for bad, match in (({"dtype": "float64"}, "dtype"), ({"disc_features": "pixels"}, "disc_features"), ({"max_sequence_length": 0}, "max_sequence_length")):
        with pytest.raises(ValueError, match=match):
            pixart_sigma.PixartSigmaTeacherConfig(**bad)


def test_lora_parameter_count_of_the_real_transformer():
    """Rank 64 on PixArt-alpha's targets of the real Sigma transformer (meta device): alpha-512's 55.06M, since
    Sigma has no micro-conditioning embeddings (alpha-1024-MS adapts those too: 55.24M)."""
    from flashbench_plugins.teachers._pixart import lora_parameter_count
    from flashbench_plugins.teachers._pixart_configs import SIGMA_TRANSFORMER_CONFIG

    config = pixart_sigma.PixartSigmaTeacherConfig()
    count = lora_parameter_count(SIGMA_TRANSFORMER_CONFIG, config.default_lora_rank, alpha=config.lora_alpha, targets=config.lora_targets)
    assert count == 55_061_504
