"""The ``pixart-alpha`` teacher on tiny random PixArt-alpha folders written from config (the real diffusers and
transformers classes: ``PixArtTransformer2DModel``, ``T5EncoderModel`` with a ``T5Tokenizer`` over a tiny
vocabulary, ``AutoencoderKL``, PixArt's ``DPMSolverMultistepScheduler`` config), loaded through the plugin:
the published teacher contract, training steps of the full method, few-step sampling, the exported peft
adapter reloaded into a stock ``PixArtAlphaPipeline``, the offline error, bf16 on CUDA, and the LoRA
parameter count of the real XL-2 transformers built on the meta device.
"""

from __future__ import annotations

import math
from pathlib import Path

import pluggy
import pytest
import torch

import flashbench
import flashbench.plugins
from flashbench.testing import MissingWeights, TeacherContract, adapter_names, flash_training_smoke, tiny_text_prompts
from flashbench_plugins.teachers import pixart_alpha


pytestmark = pytest.mark.usefixtures("one_thread")

TIMESTEPS = [999, 749, 499, 249]
PROMPTS = ["A photo of a cat sitting on a sofa", "an astronaut riding a horse"]
_WORDS = "a an the of on in with and photo cat dog red blue green digit one seven astronaut riding horse sitting sofa"


def components():
    pm = pluggy.PluginManager("flashbench")
    pm.add_hookspecs(flashbench.hookspecs)
    pm.register(pixart_alpha)
    return flashbench.plugins.collect_components(pm)


def build(**options):
    return components().get("teacher", "pixart-alpha").build(options, device="cpu")


def tiny_tokenizer():
    """A real ``T5Tokenizer`` (unigram, ``</s>`` appended, ``<pad>`` = 0) over a few words and single letters."""
    from transformers import T5Tokenizer

    letters = "abcdefghijklmnopqrstuvwxyz"
    words = sorted({w for w in _WORDS.split() if len(w) > 1})
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [("\u2581" + w, -1.0) for w in words] + [("\u2581" + c, -4.0) for c in letters] + [(c, -5.0) for c in letters]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=120)


def write_tiny_pixart(root: Path, *, micro_conditioning: bool = False):
    """A PixArt-alpha-shaped diffusers folder (``PixArtAlphaPipeline.save_pretrained``, random seeded weights):
    8x8x4 latents (2x2 patches, 2 blocks of width 24 = 3 x 8 as the micro-conditioning embeddings need, learned
    sigma), 16x16 images. ``micro_conditioning``: resolution /
    aspect-ratio embeddings as in the 1024-MS checkpoint. Returns (folder, the in-memory pipeline)."""
    from diffusers import AutoencoderKL, DPMSolverMultistepScheduler, PixArtAlphaPipeline, PixArtTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(0)
    tokenizer = tiny_tokenizer()
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
    )
    # PixArt-alpha's scheduler config: DDPM linear betas 1e-4 .. 2e-2 on 1000 steps, epsilon prediction
    scheduler = DPMSolverMultistepScheduler(beta_start=0.0001, beta_end=0.02, beta_schedule="linear", num_train_timesteps=1000)
    pipe = PixArtAlphaPipeline(tokenizer=tokenizer, text_encoder=text_encoder.eval(), vae=vae.eval(), transformer=transformer.eval(), scheduler=scheduler)
    pipe.save_pretrained(root)
    return root, pipe


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_pixart(tmp_path_factory.mktemp("tiny-pixart"))


@pytest.fixture(scope="module")
def tiny_1024(tmp_path_factory):
    return write_tiny_pixart(tmp_path_factory.mktemp("tiny-pixart-ms"), micro_conditioning=True)


def stock_pipeline(folder):
    """A fresh stock ``PixArtAlphaPipeline`` from the folder, with the few-step LCM scheduler (trailing)."""
    from diffusers import PixArtAlphaPipeline

    from flashbench_plugins.teachers._pixart import few_step_scheduler

    pipe = PixArtAlphaPipeline.from_pretrained(str(folder))
    pipe.scheduler = few_step_scheduler(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


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


# --- (1) the real loading path --------------------------------------------------------------------------------
def test_tiny_folder_loads_through_the_plugin(tiny):
    from diffusers import AutoencoderKL, PixArtTransformer2DModel
    from transformers import T5EncoderModel, T5Tokenizer

    folder, original = tiny
    teacher = build(path=str(folder))
    assert isinstance(teacher.transformer, PixArtTransformer2DModel) and isinstance(teacher.text_encoder, T5EncoderModel)
    assert isinstance(teacher.tokenizer, T5Tokenizer) and isinstance(teacher.vae, AutoencoderKL)
    assert teacher.denoiser is teacher.transformer and not teacher.transformer.training
    assert teacher.latent_shape == (4, 8, 8) and teacher.image_size == 16 and teacher.discriminator_input() == (24, 4)
    assert teacher.disc_blocks == 1 and not teacher.micro_conditioning and teacher.default_lora_rank == 64
    for mine, theirs in ((teacher.transformer, original.transformer), (teacher.text_encoder, original.text_encoder), (teacher.vae, original.vae)):
        ours = mine.state_dict()
        assert all(torch.equal(ours[k], v) for k, v in theirs.state_dict().items())
    assert torch.allclose(teacher.scheduler.alphas_cumprod, original.scheduler.alphas_cumprod)


def test_conditioning_is_the_pipelines(tiny):
    """Prompt and null embeddings/masks equal ``PixArtAlphaPipeline.encode_prompt`` with negative_prompt=""."""
    folder, pipe = tiny
    teacher = build(path=str(folder), max_sequence_length=24)
    cond, null = teacher.encode_prompts(PROMPTS), teacher.null_condition(PROMPTS)
    assert set(cond) == {"encoder_hidden_states", "encoder_attention_mask"}
    pe, pm, ne, nm = pipe.encode_prompt(PROMPTS, True, negative_prompt="", device="cpu", clean_caption=False, max_sequence_length=24)
    torch.testing.assert_close(cond["encoder_hidden_states"], pe)
    torch.testing.assert_close(null["encoder_hidden_states"], ne)
    assert torch.equal(cond["encoder_attention_mask"], pm) and torch.equal(null["encoder_attention_mask"], nm)
    assert null["encoder_attention_mask"].sum(1).tolist() == [1, 1]  # "" is T5's </s> alone


def test_prompt_cache_is_bounded(tiny, monkeypatch):
    from flashbench_plugins.teachers import _pixart

    teacher = build(path=str(tiny[0]), max_sequence_length=24)
    first = teacher.encode_prompts(PROMPTS)
    assert len(teacher._prompt_cache) == 2
    monkeypatch.setattr(_pixart, "_PROMPT_CACHE_BYTES", 0)  # full: new prompts are encoded, not kept
    mixed = teacher.encode_prompts(["a red dog", PROMPTS[1]])
    assert len(teacher._prompt_cache) == 2
    fresh = build(path=str(tiny[0]), max_sequence_length=24).encode_prompts(["a red dog"])
    torch.testing.assert_close(mixed["encoder_hidden_states"][0], fresh["encoder_hidden_states"][0])
    torch.testing.assert_close(mixed["encoder_hidden_states"][1], first["encoder_hidden_states"][1])


def test_micro_conditioning_for_the_1024_model(tiny_1024):
    teacher = build(path=str(tiny_1024[0]))
    assert teacher.micro_conditioning
    cond = teacher.encode_prompts(PROMPTS)
    assert cond["resolution"].tolist() == [[16.0, 16.0]] * 2 and cond["aspect_ratio"].tolist() == [[1.0]] * 2
    x = torch.randn((2, *teacher.latent_shape), generator=torch.Generator().manual_seed(0))
    t = torch.tensor([999, 499])
    with torch.no_grad():
        other = {**cond, "resolution": cond["resolution"] * 2}
        assert (teacher.eps(x, t, other, student=False) - teacher.eps(x, t, cond, student=False)).abs().max() > 1e-6


@torch.no_grad()
def test_encoder_features_are_the_forwards_tokens(tiny):
    """With every block, encoder_features is what the full forward feeds its output layer (a forward hook)."""
    teacher = build(path=str(tiny[0]), disc_blocks=2)
    x = torch.randn((2, *teacher.latent_shape), generator=torch.Generator().manual_seed(0))
    t = torch.tensor([999, 249])
    cond = teacher.encode_prompts(PROMPTS)
    seen = []
    hook = teacher.transformer.transformer_blocks[-1].register_forward_hook(lambda m, i, o: seen.append(o))
    try:
        teacher.eps(x, t, cond, student=False)
    finally:
        hook.remove()
    tokens = seen[0]
    expected = tokens.transpose(1, 2).reshape(2, 24, 4, 4)
    torch.testing.assert_close(teacher.encoder_features(x, t, cond), expected)


def test_discriminator_on_the_teachers_output(tiny):
    """``disc_features="output"``: the head reads the frozen teacher's epsilon (the official Pixart head's input)."""
    teacher = build(path=str(tiny[0]), disc_features="output")
    assert teacher.discriminator_input() == (4, 8)
    x = torch.randn((2, *teacher.latent_shape), generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    t = torch.tensor([999, 249])
    cond = teacher.encode_prompts(PROMPTS)
    params = teacher.add_lora("probe", 4)
    try:
        with torch.no_grad():
            for p in params:
                p.add_(0.1)  # a student that differs from the teacher
            pure = teacher.eps(x, t, cond, student=False)
            assert (teacher.eps(x, t, cond, student=True) - pure).abs().max() > 1e-4
        feats = teacher.encoder_features(x, t, cond)
        torch.testing.assert_close(feats.detach(), pure)
        feats.square().mean().backward()
        assert x.grad is not None and x.grad.abs().sum() > 0 and all(p.grad is None for p in params)
    finally:
        teacher.remove_lora("probe")


# --- (2) the published contract ----------------------------------------------------------------------------------
class _PixartContract(TeacherContract):
    lora_rank = 4

    def prompts(self):
        return tiny_text_prompts(3)

    def test_save_lora_loads_into_family_pipeline(self, teacher, inputs, tmp_path):
        """The contract's export check, loading the way the stock PixArt pipeline loads an adapter:
        ``PeftModel.from_pretrained(pipe.transformer, folder)`` into a fresh ``PixArtAlphaPipeline`` from the
        folder (the base test calls ``pipe.load_lora_weights``, which ``PixArtAlphaPipeline`` lacks)."""
        from flashbench_plugins.teachers._pixart import load_peft_adapter

        x, t, cond = inputs
        with self.lora(teacher) as (name, params):
            self.train_lora(teacher, params, x, t, cond)
            with torch.no_grad():
                student = teacher.eps(x, t, cond, student=True)
            folder = Path(teacher.save_lora(name, tmp_path / "lora"))
            assert (folder / "adapter_config.json").is_file() and (folder / "adapter_model.safetensors").is_file()
            pipe = stock_pipeline(self.folder)
            denoiser = self.pipeline_denoiser(pipe)
            assert denoiser is not teacher.denoiser and not adapter_names(denoiser)
            load_peft_adapter(denoiser, folder)
            assert adapter_names(denoiser) == {"default"}
            with torch.no_grad():
                reloaded = teacher.eps(x, t, cond, student=True, module=denoiser)
            self.assert_same(reloaded, student, "stock pipeline with the saved adapter vs the in-memory student")


class TestPixartAlphaContract(_PixartContract):
    # the contract's opt-in checks: the offline errors (the default checkpoints by resolution), the student in a
    # fresh stock pipeline, bf16 on CUDA
    missing_weights = (
        "nonexistent-org/nonexistent-pixart",
        MissingWeights({}, "PixArt-alpha/PixArt-XL-2-512x512"),
        MissingWeights({"resolution": 1024}, "PixArt-alpha/PixArt-XL-2-1024-MS"),
    )
    stock_pipeline = "PixArtAlphaPipeline"
    stock_min_change = 1e-3
    bf16 = True
    bf16_modules = ("denoiser", "text_encoder", "vae")

    @pytest.fixture(scope="class", autouse=True)
    @classmethod
    def _folder(cls, request, tiny):
        request.cls.folder = tiny[0]

    def build_teacher(self, options, *, device="cpu"):
        return components().get("teacher", "pixart-alpha").build(options, device=device)

    def teacher_options(self):
        return {"path": str(self.folder)}

    def load_lora_into(self, pipe, folder):
        """``PixArtAlphaPipeline`` has no ``load_lora_weights``: ``PeftModel.from_pretrained`` on its transformer."""
        from flashbench_plugins.teachers._pixart import load_peft_adapter

        load_peft_adapter(self.pipeline_denoiser(pipe), folder)

    def stock_sample(self, pipe, teacher):
        out = draw(pipe, teacher)
        assert out.shape == (2, 3, 16, 16)
        return out


class TestPixart1024MSContract(_PixartContract):
    """The micro-conditioned (1024-MS-like) variant, with a shorter T5 length."""

    @pytest.fixture(scope="class", autouse=True)
    @classmethod
    def _folder(cls, request, tiny_1024):
        request.cls.folder = tiny_1024[0]

    def make_teacher(self):
        return build(path=str(self.folder), max_sequence_length=24)


# --- (3)-(5) training, sampling, export ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tiny, tmp_path_factory):
    """(teacher with the smoke adapter active, per-step stats, exported folder)."""
    from flashbench.method.data import Batch

    teacher = build(path=str(tiny[0]))
    g = torch.Generator().manual_seed(0)
    batches = [Batch(torch.rand((2, 3, 16, 16), generator=g) * 2 - 1, PROMPTS, {}) for _ in range(3)]
    trainer, stats = flash_training_smoke(teacher, batches, lr=1e-2)
    folder = teacher.save_lora("smoke", tmp_path_factory.mktemp("export") / "lora")
    yield teacher, stats, folder
    trainer.close()


def test_training_steps_have_every_loss_term(trained):
    _, stats, _ = trained
    last = stats[-1].losses
    for term in ("distil", "adv", "dmd", "disc", "total"):
        assert term in last, f"{term} missing from {last}"
    for step in stats:
        assert all(math.isfinite(v) for v in step.losses.values()), step.losses


def test_student_samples_at_1_2_4_nfe(trained):
    from flashbench.method.sampling import student_sample

    teacher, _, _ = trained
    cond = teacher.encode_prompts(PROMPTS)
    for steps in (1, 2, 4):
        g = torch.Generator().manual_seed(steps)
        noise = torch.randn((2, *teacher.latent_shape), generator=g)
        images = student_sample(teacher, cond, noise, steps, g)
        assert images.shape == (2, 3, 16, 16) and torch.isfinite(images).all()


def test_saved_adapter_is_a_peft_folder(trained):
    import json

    from safetensors.torch import load_file

    teacher, _, folder = trained
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4 and config["lora_alpha"] == 8
    assert config["base_model_name_or_path"] == teacher.source
    state = load_file(str(folder / "adapter_model.safetensors"))
    assert state and all(k.startswith("base_model.model.") for k in state)
    assert any(".attn2.to_k.lora_A.weight" in k for k in state) and any("pos_embed.proj.lora_B.weight" in k for k in state)
    assert sum(v.numel() for v in state.values()) == teacher.trainable_parameters()


@pytest.fixture(scope="module")
def pipeline_samples(trained):
    teacher, _, _ = trained
    return {"in_memory": draw(teacher.pipeline(), teacher)}


def test_few_step_scheduler_is_the_trailing_grid(trained):
    from flashbench_plugins.teachers._pixart import few_step_scheduler

    teacher, _, _ = trained
    sched = few_step_scheduler(teacher.scheduler.config)
    for n in (1, 2, 4):
        sched.set_timesteps(n)
        assert sched.timesteps.tolist() == teacher.schedule.sampling_timesteps(n)
        sched.set_timesteps(timesteps=TIMESTEPS[:n])
        assert sched.timesteps.tolist() == TIMESTEPS[:n]


def test_student_sample_agrees_with_the_pipeline(trained, pipeline_samples):
    from flashbench.method.sampling import student_sample

    teacher, _, _ = trained
    g = torch.Generator().manual_seed(0)
    noise = torch.randn((2, *teacher.latent_shape), generator=g)
    ours = student_sample(teacher, teacher.encode_prompts(PROMPTS), noise, len(TIMESTEPS), g)
    assert teacher.schedule.sampling_timesteps(len(TIMESTEPS)) == TIMESTEPS
    # the pipeline returns (x / 2 + 0.5) clamped to [0, 1]; LCM's boundary scalings (c_skip ~ 1e-8) differ slightly
    torch.testing.assert_close((ours / 2 + 0.5).clamp(0, 1), pipeline_samples["in_memory"], rtol=0, atol=1e-5)


# --- (6) the config -------------------------------------------------------------------------------------------------
def test_config_validation():
    with pytest.raises(ValueError, match="resolution"):
        build(resolution=768)
    with pytest.raises(ValueError, match="dtype"):
        build(dtype="float64")
    config = components().get("teacher", "pixart-alpha").make_config({"lora_targets": ["to_q", "to_v"]})
    assert config.lora_targets == ("to_q", "to_v") and config.source == "PixArt-alpha/PixArt-XL-2-512x512"


# --- (8) the paper's trainable-parameter count -----------------------------------------------------------------------
def test_lora_parameter_count_of_the_real_transformers():
    """Rank 64 on the official targets of the real XL-2 transformers (meta device, nothing downloaded).

    The paper's 66.5M counts every trainable parameter of the official implementation: this LoRA plus its
    discriminator on 4-channel latents (64-128-256-512-1024 channels, kernel 4, GroupNorm 4, no biases):
    11,165,440 parameters. On XL-2-1024-MS, the checkpoint the official recipe distils, that is 66.41M."""
    from flashbench_plugins.teachers._pixart import lora_parameter_count
    from flashbench_plugins.teachers._pixart_configs import TRANSFORMER_CONFIGS

    config = pixart_alpha.PixartAlphaTeacherConfig()
    counts = {
        res: lora_parameter_count(TRANSFORMER_CONFIGS[res], config.default_lora_rank, alpha=config.lora_alpha, targets=config.lora_targets)
        for res in (512, 1024)
    }
    assert counts == {512: 55_061_504, 1024: 55_241_728}
    f = 64
    widths = [4, f, 2 * f, 4 * f, 8 * f, 16 * f]
    official_disc = sum(16 * a * b for a, b in zip(widths, widths[1:])) + 2 * sum(widths[2:]) + 16 * widths[-1]
    assert official_disc == 11_165_440
    assert abs(counts[1024] + official_disc - 66.5e6) < 0.1e6
