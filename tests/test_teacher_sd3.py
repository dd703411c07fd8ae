"""``sd3``: tiny SD3-shaped folders (the real classes: ``SD3Transformer2DModel``, two
``CLIPTextModelWithProjection``, an optional ``T5EncoderModel``, a 4-channel ``AutoencoderKL`` with SD3's
shift and scaling factors, ``FlowMatchEulerDiscreteScheduler(shift=3)``; random seeded weights) saved with
``StableDiffusion3Pipeline.save_pretrained`` and loaded through the plugin: the published contract, the
pipeline's own prompt encoding (with and without T5), full-method training steps on the flow teacher, student
samples at 1/2/4 NFE, the exported LoRA reloaded into a fresh stock pipeline, the offline error, and the
authors' LoRA parameter count on the real SD3-medium transformer (meta device).
"""

from __future__ import annotations

import math

import pytest
import torch

from flashbench.method.data import Batch
from flashbench.method.noise import RectifiedFlow
from flashbench.method.sampling import student_sample
from flashbench.testing import TeacherContract, flash_training_smoke, tiny_text_prompts
from flashbench_plugins.teachers import sd3

from _builders import plugin_components, random_images  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = ["a red car on a beach", "a cat with a bow tie"]
IMAGE_SIZE = 16  # tiny VAE (2 blocks): 2x the 8x8 latents
T5_TOKENS = 8  # short T5 sequences keep the tiny forwards fast (the pipeline's default is 256)


def write_tiny_sd3(root, *, t5: bool = False):
    """A ``StableDiffusion3Pipeline`` of tiny seeded components, saved as a diffusers folder."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, CLIPTokenizer

    from flashbench_plugins.teachers import _sd_configs as cfg
    from flashbench_plugins.toy.models import write_clip_tokenizer

    torch.manual_seed(0)
    tokenizer = CLIPTokenizer.from_pretrained(str(write_clip_tokenizer(root / "_tokenizer", model_max_length=77)))
    clip = CLIPTextConfig(**cfg.TINY_CLIP_TEXT, projection_dim=32)
    parts = dict(
        # joint width 64 holds both CLIPs (32 + 32); pooled 64 = both projections
        transformer=SD3Transformer2DModel(
            sample_size=8,
            patch_size=2,
            in_channels=4,
            out_channels=4,
            num_layers=2,
            attention_head_dim=8,
            num_attention_heads=2,
            joint_attention_dim=64,
            caption_projection_dim=16,
            pooled_projection_dim=64,
            pos_embed_max_size=8,
        ).eval(),
        text_encoder=CLIPTextModelWithProjection(clip).eval(),
        text_encoder_2=CLIPTextModelWithProjection(clip).eval(),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        vae=AutoencoderKL(
            in_channels=3,
            out_channels=3,
            block_out_channels=(32, 64),
            latent_channels=4,
            sample_size=16,
            norm_num_groups=32,
            down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2,
            scaling_factor=1.5305,
            shift_factor=0.0609,
            use_quant_conv=False,
            use_post_quant_conv=False,
        ).eval(),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        text_encoder_3=None,
        tokenizer_3=None,
    )
    if t5:
        from transformers import T5Config, T5EncoderModel

        from test_teacher_pixart import tiny_tokenizer

        tok3 = tiny_tokenizer()
        parts["tokenizer_3"] = tok3
        parts["text_encoder_3"] = T5EncoderModel(
            T5Config(
                vocab_size=len(tok3),
                d_model=64,
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
        ).eval()
    pipe = StableDiffusion3Pipeline(**parts)
    pipe.save_pretrained(root / "model")
    return root / "model"


def components():
    return plugin_components(sd3)


def build(folder, **options):
    return components().get("teacher", "sd3").build({"path": str(folder), "max_sequence_length": T5_TOKENS, **options}, device="cpu")


def draw(pipe, steps=4, prompts=PROMPTS, renoise_seed=7):
    """The pipeline's few-step sample: initial noise from ``generator`` (seed 0); the scheduler's fresh noise
    comes from torch's global generator (``StableDiffusion3Pipeline`` does not pass its generator to
    ``scheduler.step``), seeded here with ``renoise_seed`` inside a forked RNG state."""
    from flashbench_plugins.teachers._flow_family import few_step_sigmas

    pipe.set_progress_bar_config(disable=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(renoise_seed)
        return pipe(
            prompts,
            sigmas=few_step_sigmas(steps),
            guidance_scale=1.0,
            height=IMAGE_SIZE,
            width=IMAGE_SIZE,
            max_sequence_length=T5_TOKENS,
            generator=torch.Generator().manual_seed(0),
            output_type="pt",
        ).images


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return write_tiny_sd3(tmp_path_factory.mktemp("tiny-sd3"))


@pytest.fixture(scope="module")
def tiny_t5_folder(tmp_path_factory):
    return write_tiny_sd3(tmp_path_factory.mktemp("tiny-sd3-t5"), t5=True)


# --- (1) loading, conditioning ----------------------------------------------------------------------------------
def test_tiny_folder_loads_through_the_plugin(tiny_folder):
    from diffusers import SD3Transformer2DModel

    teacher = build(tiny_folder)
    assert isinstance(teacher.transformer, SD3Transformer2DModel) and teacher.denoiser is teacher.transformer
    assert teacher.text_encoder_3 is None and not teacher.use_t5
    assert teacher.latent_shape == (4, 8, 8) and teacher.resolution == IMAGE_SIZE and teacher.discriminator_input() == (16, 4)
    assert teacher.disc_blocks == 1 and teacher.default_lora_rank == 64 and teacher.lora_alpha == 8.0
    process = teacher.noise_process
    assert isinstance(process, RectifiedFlow) and process.prediction == "flow" and process.shift == 3.0 and process.mu is None
    assert process.sampling_timesteps(4) == pytest.approx([1000.0, 900.0, 750.0, 500.0])


@pytest.mark.parametrize("t5", [False, True], ids=["no-t5", "t5"])
def test_conditioning_is_the_pipelines(request, t5):
    """cond and null equal ``StableDiffusion3Pipeline.encode_prompt`` (negative prompt ""); without T5 its
    tokens are the pipeline's zeros."""
    folder = request.getfixturevalue("tiny_t5_folder" if t5 else "tiny_folder")
    teacher = build(folder, use_t5=t5)
    cond, null = teacher.encode_prompts(PROMPTS), teacher.null_condition(PROMPTS)
    assert set(cond) == {"encoder_hidden_states", "pooled_projections"}
    assert cond["encoder_hidden_states"].shape == (2, 77 + T5_TOKENS, 64) and cond["pooled_projections"].shape == (2, 64)
    pe, ne, pp, npp = teacher.pipeline().encode_prompt(
        PROMPTS, PROMPTS, PROMPTS, device="cpu", do_classifier_free_guidance=True, negative_prompt="", max_sequence_length=T5_TOKENS
    )
    torch.testing.assert_close(cond["encoder_hidden_states"], pe)
    torch.testing.assert_close(cond["pooled_projections"], pp)
    torch.testing.assert_close(null["encoder_hidden_states"], ne)
    torch.testing.assert_close(null["pooled_projections"], npp)
    t5_part = cond["encoder_hidden_states"][:, 77:]
    assert (t5_part.abs().sum() > 0) == t5


# --- (2) the published contract -------------------------------------------------------------------------------------
class TestSD3Contract(TeacherContract):
    # the contract's opt-in checks: the offline errors, the student in a fresh stock pipeline, bf16 on CUDA
    missing_weights = ("nonexistent-org/nonexistent-sd3", sd3.DEFAULT_PATH)
    stock_pipeline = "StableDiffusion3Pipeline"
    bf16 = True

    @pytest.fixture(scope="class", autouse=True)
    @classmethod
    def _folder(cls, request, tiny_folder):
        request.cls.folder = tiny_folder

    def make_teacher(self):
        return build(self.folder)

    def build_teacher(self, options, *, device="cpu"):
        return components().get("teacher", "sd3").build(options, device=device)

    def teacher_options(self):
        return {"path": str(self.folder), "max_sequence_length": T5_TOKENS}

    def prompts(self):
        return tiny_text_prompts(2)

    def stock_pipeline_kwargs(self, teacher):
        return {"text_encoder_3": None, "tokenizer_3": None}

    def stock_sample(self, pipe, teacher):
        return draw(pipe)


class TestSD3OutputFeaturesContract(TestSD3Contract):
    """The discriminator on the frozen teacher's velocity (16 channels in SD3-medium: the authors' head input)."""

    missing_weights, stock_pipeline, bf16 = (), None, False  # checked once, on the default teacher

    def make_teacher(self):
        return build(self.folder, disc_features="output", use_t5=False)

    def test_features_are_the_teachers_output(self, teacher, inputs):
        x, t, cond = inputs
        assert teacher.discriminator_input() == (4, 8)
        with torch.no_grad():
            torch.testing.assert_close(teacher.encoder_features(x, t, cond), teacher.output(x, t, cond, student=False))


@torch.no_grad()
def test_encoder_features_are_the_forwards_tokens(tiny_folder):
    """With every block, encoder_features is what the last joint block hands the output layer (a forward hook)."""
    teacher = build(tiny_folder, disc_blocks=2)
    x = torch.randn((2, *teacher.latent_shape), generator=torch.Generator().manual_seed(0))
    t = torch.tensor([1000.0, 500.0])
    cond = teacher.encode_prompts(PROMPTS)
    seen = []
    hook = teacher.transformer.transformer_blocks[-1].register_forward_hook(lambda m, i, o: seen.append(o[1]))
    try:
        teacher.output(x, t, cond, student=False)
    finally:
        hook.remove()
    torch.testing.assert_close(teacher.encoder_features(x, t, cond), seen[0].transpose(1, 2).reshape(2, 16, 4, 4))


# --- (3)-(5) training, sampling, export -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tiny_folder):
    teacher = build(tiny_folder)
    batches = [Batch(random_images(2, IMAGE_SIZE, seed=i), PROMPTS) for i in range(3)]
    trainer, stats = flash_training_smoke(teacher, batches, lr=1e-2)
    yield teacher, stats
    trainer.close()


def test_flash_training_steps_have_every_loss_term(trained):
    _, stats = trained
    last = stats[-1].losses
    for term in ("distil", "adv", "dmd", "disc", "total"):
        assert term in last and math.isfinite(last[term]), f"{term}: {last}"
    assert all(math.isfinite(v) for s in stats for v in s.losses.values())


@pytest.mark.parametrize("nfe", [1, 2, 4])
def test_student_samples(trained, nfe):
    teacher, _ = trained
    cond = teacher.encode_prompts(PROMPTS)
    noise = torch.randn((2, *teacher.latent_shape), generator=torch.Generator().manual_seed(0))
    out = student_sample(teacher, cond, noise, nfe, torch.Generator().manual_seed(1))
    assert out.shape == (2, 3, IMAGE_SIZE, IMAGE_SIZE) and torch.isfinite(out).all()


def test_exported_lora_file_carries_the_lora_config(trained, tmp_path):
    import json

    from safetensors import safe_open

    teacher, _ = trained
    folder = teacher.save_lora("smoke", tmp_path / "lora")
    weights = folder / "pytorch_lora_weights.safetensors"
    with safe_open(str(weights), "pt") as f:
        meta = json.loads(f.metadata()["lora_adapter_metadata"])  # diffusers packs the LoraConfig as transformer.<field>
        keys = list(f.keys())
    assert meta["transformer.r"] == 4 and meta["transformer.lora_alpha"] == 8 and all(k.startswith("transformer.") for k in keys)


@pytest.mark.parametrize("nfe", [1, 2, 4])
def test_student_sample_agrees_with_the_stock_pipeline(trained, nfe):
    """The pipeline with the stochastic flow-Euler scheduler on the unshifted sigmas 1, .75, .5, .25 is the
    student's sampler: the same initial noise and the same fresh noise after each step (see :func:`draw`)."""
    teacher, _ = trained
    noise = torch.randn((2, *teacher.latent_shape), generator=torch.Generator().manual_seed(0))
    ours = student_sample(teacher, teacher.encode_prompts(PROMPTS), noise, nfe, torch.Generator().manual_seed(7))
    theirs = draw(teacher.pipeline(), steps=nfe, renoise_seed=7)
    torch.testing.assert_close((ours / 2 + 0.5).clamp(0, 1), theirs, rtol=0, atol=1e-4)


# --- (6) the config --------------------------------------------------------------------------------------------------
def test_config_validation():
    make = components().get("teacher", "sd3").make_config
    assert make({}).path == "stabilityai/stable-diffusion-3-medium-diffusers" and not make({}).use_t5
    assert make({"lora_targets": ["to_q", "to_v"]}).lora_targets == ("to_q", "to_v")
    for bad in ({"dtype": "float64"}, {"disc_features": "mid"}, {"default_lora_rank": 0}, {"max_sequence_length": 0}):
        with pytest.raises(ValueError):
            make(bad)


# --- (8) the authors' trainable-parameter count ---------------------------------------------------------------------------
def test_lora_parameter_count_of_the_real_sd3_medium_transformer():
    """The default LoRA (the authors' targets, rank 64) on the real SD3-medium transformer, meta device.

    The published "90.4M" of Flash SD3 is this LoRA plus the authors' discriminator head on 16-channel latents
    (conv4x4/2 16->64->128->256->512 without biases, GroupNorm(4) after all but the first, conv4x4 ->1)."""
    from diffusers import SD3Transformer2DModel

    from flashbench_plugins.teachers._flow_family import lora_parameter_count

    config = sd3.SD3TeacherConfig()
    count = lora_parameter_count(
        SD3Transformer2DModel, sd3.SD3_MEDIUM_TRANSFORMER, config.default_lora_rank, alpha=config.lora_alpha, targets=config.lora_targets
    )
    assert count == 87_646_208
    widths = [16, 64, 128, 256, 512]
    head = sum(16 * a * b for a, b in zip(widths, widths[1:])) + 2 * sum(widths[2:]) + 16 * widths[-1]
    assert head == 2_778_880
    assert round((count + head) / 1e6, 1) == 90.4
    attention = ("to_q", "to_k", "to_v", "to_out.0", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")
    assert lora_parameter_count(SD3Transformer2DModel, sd3.SD3_MEDIUM_TRANSFORMER, 64, targets=attention) == 37_552_128
