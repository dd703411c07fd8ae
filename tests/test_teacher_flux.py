"""``flux``: tiny Flux-shaped folders (the real classes: ``FluxTransformer2DModel`` with and without a guidance
embedding, ``CLIPTextModel``, ``T5EncoderModel``, a 4-channel ``AutoencoderKL`` with Flux's shift and scaling
factors, the dynamic-shifting ``FlowMatchEulerDiscreteScheduler``; random seeded weights) saved with
``FluxPipeline.save_pretrained`` and loaded through the plugin: the published contract, the pipeline's own
prompt encoding and latent packing, the guidance mapping (omega into the guidance embedding, one forward, the
null condition unread), full-method training steps, student samples at 1/2/4 NFE, the exported LoRA reloaded
into a fresh stock ``FluxPipeline``, the offline error and the default LoRA's size on the real Flux.1-dev
transformer (meta device).
"""

from __future__ import annotations

import math

import pytest
import torch

from flashbench.method.data import Batch
from flashbench.method.guidance import GUIDANCE_KEY, cfg_combine, guided_output
from flashbench.method.noise import RectifiedFlow, flux_mu
from flashbench.method.sampling import student_sample
from flashbench.testing import TeacherContract, flash_training_smoke, tiny_text_prompts
from flashbench_plugins.teachers import flux

from _builders import plugin_components, random_images  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = ["a red car on a beach", "a cat with a bow tie"]
IMAGE_SIZE = 16  # tiny VAE (2 blocks, scale 2): 8x8 latents, 4x4 packed tokens
T5_TOKENS = 8


def write_tiny_flux(root, *, guidance_embeds: bool = True):
    """A ``FluxPipeline`` of tiny seeded components, saved as a diffusers folder."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer, T5Config, T5EncoderModel

    from flashbench_plugins.teachers import _sd_configs as cfg
    from flashbench_plugins.toy.models import write_clip_tokenizer
    from test_teacher_pixart import tiny_tokenizer

    torch.manual_seed(0)
    tokenizer_2 = tiny_tokenizer()
    pipe = FluxPipeline(
        transformer=FluxTransformer2DModel(
            patch_size=1,
            in_channels=16,
            num_layers=2,
            num_single_layers=1,
            attention_head_dim=8,
            num_attention_heads=2,
            joint_attention_dim=32,
            pooled_projection_dim=32,
            guidance_embeds=guidance_embeds,
            axes_dims_rope=(2, 2, 4),
        ).eval(),
        text_encoder=CLIPTextModel(CLIPTextConfig(**cfg.TINY_CLIP_TEXT)).eval(),
        tokenizer=CLIPTokenizer.from_pretrained(str(write_clip_tokenizer(root / "_tokenizer", model_max_length=77))),
        text_encoder_2=T5EncoderModel(
            T5Config(
                vocab_size=len(tokenizer_2),
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
        ).eval(),
        tokenizer_2=tokenizer_2,
        vae=AutoencoderKL(
            in_channels=3,
            out_channels=3,
            block_out_channels=(32, 64),
            latent_channels=4,
            sample_size=16,
            norm_num_groups=32,
            down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2,
            scaling_factor=0.3611,
            shift_factor=0.1159,
            use_quant_conv=False,
            use_post_quant_conv=False,
        ).eval(),
        # Flux.1-dev's scheduler config: shift by resolution (mu), exponential time shift
        scheduler=FlowMatchEulerDiscreteScheduler(
            shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15, base_image_seq_len=256, max_image_seq_len=4096
        ),
    )
    pipe.save_pretrained(root / "model")
    return root / "model"


def components():
    return plugin_components(flux)


def build(folder, **options):
    opts = {"path": str(folder), "max_sequence_length": T5_TOKENS, "resolution": IMAGE_SIZE, **options}
    return components().get("teacher", "flux").build(opts, device="cpu")


def draw(pipe, steps=4, prompts=PROMPTS, guidance=3.5, renoise_seed=7):
    """The pipeline's few-step sample (initial noise from the generator; the scheduler's re-noising from torch's
    global generator, which ``FluxPipeline`` uses, seeded inside a forked RNG state)."""
    from flashbench_plugins.teachers._flow_family import few_step_sigmas

    pipe.set_progress_bar_config(disable=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(renoise_seed)
        return pipe(
            prompts,
            sigmas=few_step_sigmas(steps),
            num_inference_steps=steps,
            guidance_scale=guidance,
            height=IMAGE_SIZE,
            width=IMAGE_SIZE,
            max_sequence_length=T5_TOKENS,
            generator=torch.Generator().manual_seed(0),
            output_type="pt",
        ).images


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return write_tiny_flux(tmp_path_factory.mktemp("tiny-flux"))


@pytest.fixture(scope="module")
def tiny_schnell_folder(tmp_path_factory):
    return write_tiny_flux(tmp_path_factory.mktemp("tiny-flux-schnell"), guidance_embeds=False)


# --- (1) loading, conditioning, packing, the process --------------------------------------------------------------
def test_tiny_folder_loads_through_the_plugin(tiny_folder):
    from diffusers import FluxTransformer2DModel

    teacher = build(tiny_folder)
    assert isinstance(teacher.transformer, FluxTransformer2DModel) and teacher.denoiser is teacher.transformer
    assert teacher.latent_shape == (4, 8, 8) and teacher.discriminator_input() == (16, 4) and teacher.disc_blocks == 1
    assert teacher.guidance_embedded and teacher.student_guidance == 3.5 and teacher.lora_alpha == 0.0
    process = teacher.noise_process
    assert isinstance(process, RectifiedFlow) and process.prediction == "flow"
    assert process.mu == pytest.approx(flux_mu(16)) and process.time_shift == "exponential"  # 4x4 tokens


def test_the_process_is_the_pipelines_schedule(tiny_folder):
    """The student's sigmas are the ones ``FluxPipeline`` sets for its default sigmas at this resolution."""
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    from flashbench_plugins.teachers._flow_family import few_step_sigmas

    teacher = build(tiny_folder)
    sched = teacher.few_step_scheduler()
    mu = calculate_shift(16, 256, 4096, 0.5, 1.15)
    for n in (1, 2, 4):
        sched.set_timesteps(sigmas=few_step_sigmas(n), mu=mu)
        assert sched.timesteps.tolist() == pytest.approx(teacher.noise_process.sampling_timesteps(n), abs=1e-3)


def test_conditioning_is_the_pipelines(tiny_folder):
    teacher = build(tiny_folder)
    cond = teacher.encode_prompts(PROMPTS)
    assert set(cond) == {"encoder_hidden_states", "pooled_projections", GUIDANCE_KEY}
    assert cond[GUIDANCE_KEY].tolist() == [3.5, 3.5]
    embeds, pooled, _ = teacher.pipeline().encode_prompt(PROMPTS, PROMPTS, device="cpu", max_sequence_length=T5_TOKENS)
    torch.testing.assert_close(cond["encoder_hidden_states"], embeds)
    torch.testing.assert_close(cond["pooled_projections"], pooled)


def test_packing_is_the_pipelines():
    from diffusers import FluxPipeline

    from flashbench_plugins.teachers._flow_family import image_ids, pack, unpack

    z = torch.randn((2, 4, 8, 6), generator=torch.Generator().manual_seed(0))
    packed = pack(z)
    assert torch.equal(packed, FluxPipeline._pack_latents(z, 2, 4, 8, 6))
    assert torch.equal(unpack(packed, 8, 6), z)
    assert torch.equal(image_ids(8, 6, "cpu", torch.float32), FluxPipeline._prepare_latent_image_ids(2, 4, 3, "cpu", torch.float32))


# --- (2) the guidance mapping -------------------------------------------------------------------------------------------
@torch.no_grad()
def test_guided_output_is_one_forward_with_omega_as_guidance(tiny_folder):
    """Flux.1-dev: the teacher's guided output is u(x, t, c, guidance = omega); the null condition is not read
    (NaNs in it change nothing), and omega reaches the guidance embedding (another omega, another output)."""
    teacher = build(tiny_folder)
    x = torch.randn((2, *teacher.latent_shape), generator=torch.Generator().manual_seed(0))
    t = torch.tensor([1000.0, 600.0])
    cond = teacher.encode_prompts(PROMPTS)
    null = {k: torch.full_like(v, float("nan")) for k, v in teacher.null_condition(PROMPTS).items()}
    calls = []

    def out_fn(xx, tt, cc):
        calls.append(xx.shape[0])
        return teacher.output(xx, tt, cc, student=False)

    omega = torch.tensor([4.0, 7.0])
    guided = guided_output(out_fn, x, t, cond, null, omega)
    assert calls == [2], "one forward on the conditional batch, not a doubled CFG batch"
    direct = teacher.output(x, t, {**cond, GUIDANCE_KEY: omega}, student=False)
    assert torch.equal(guided, direct) and torch.isfinite(guided).all()
    assert (guided_output(out_fn, x, t, cond, null, 2.0) - guided).abs().max() > 1e-6
    assert torch.equal(guided_output(out_fn, x, t, cond, null, 4.0)[0], guided[0])  # a scalar omega: every sample
    assert cond[GUIDANCE_KEY].tolist() == [3.5, 3.5], "the student's cond is left as encoded"


@torch.no_grad()
def test_a_model_without_guidance_embedding_gets_true_cfg(tiny_schnell_folder):
    teacher = build(tiny_schnell_folder)
    assert not teacher.guidance_embedded
    x = torch.randn((2, *teacher.latent_shape), generator=torch.Generator().manual_seed(0))
    t = torch.tensor([1000.0, 600.0])
    cond, null = teacher.encode_prompts(PROMPTS), teacher.null_condition(PROMPTS)
    assert GUIDANCE_KEY not in cond and set(cond) == set(null)
    fn = lambda xx, tt, cc: teacher.output(xx, tt, cc, student=False)  # noqa: E731
    expected = cfg_combine(fn(x, t, cond), fn(x, t, null), 3.0)
    torch.testing.assert_close(guided_output(fn, x, t, cond, null, 3.0), expected)


# --- (3) the published contract ------------------------------------------------------------------------------------------
class TestFluxContract(TeacherContract):
    # the contract's opt-in checks: the offline errors, the student in a fresh stock pipeline
    missing_weights = ("nonexistent-org/nonexistent-flux", flux.DEFAULT_PATH)
    stock_pipeline = "FluxPipeline"

    @pytest.fixture(scope="class", autouse=True)
    @classmethod
    def _folder(cls, request, tiny_folder):
        request.cls.folder = tiny_folder

    def make_teacher(self):
        return build(self.folder)

    def build_teacher(self, options, *, device="cpu"):
        return components().get("teacher", "flux").build(options, device=device)

    def prompts(self):
        return tiny_text_prompts(2)

    def stock_sample(self, pipe, teacher):
        return draw(pipe)


class TestFluxSchnellLikeContract(TestFluxContract):
    """No guidance embedding (Flux.1-schnell's shape), features = the teacher's output."""

    missing_weights, stock_pipeline = (), None  # checked once, on the dev-shaped teacher

    @pytest.fixture(scope="class", autouse=True)
    @classmethod
    def _folder(cls, request, tiny_schnell_folder):
        request.cls.folder = tiny_schnell_folder

    def make_teacher(self):
        return build(self.folder, disc_features="output")


@torch.no_grad()
def test_encoder_features_are_the_forwards_tokens(tiny_folder):
    """With every double-stream block, encoder_features is what the last one hands on (a forward hook)."""
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


# --- (4)-(6) training, sampling, export ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(tiny_folder):
    teacher = build(tiny_folder)
    batches = [Batch(random_images(2, IMAGE_SIZE, seed=i), PROMPTS) for i in range(3)]
    trainer, stats = flash_training_smoke(teacher, batches, lr=1e-2, guidance=(2.0, 5.0))
    yield teacher, stats
    trainer.close()


def test_flash_training_steps_have_every_loss_term(trained):
    _, stats = trained
    last = stats[-1].losses
    for term in ("distil", "adv", "dmd", "disc", "total"):
        assert term in last and math.isfinite(last[term]), f"{term}: {last}"
    assert all(math.isfinite(v) for s in stats for v in s.losses.values())


def test_the_step_counts_one_teacher_evaluation_per_guided_output(tiny_folder):
    """Flux-dev's guidance is an input, not a CFG pair: the trainer's teacher NFE per step is the number of
    samples the teacher's network saw, divided by the batch (a CFG teacher would count 2 per guided output)."""
    teacher = build(tiny_folder)
    batches = [Batch(random_images(2, IMAGE_SIZE, seed=i), PROMPTS) for i in range(3)]
    seen = []
    real = teacher.output

    def counting(x, t, cond, *, student, module=None):
        if not student:
            seen.append(x.shape[0])
        return real(x, t, cond, student=student, module=module)

    teacher.output = counting
    try:
        trainer, stats = flash_training_smoke(teacher, batches, lr=1e-2, guidance=(2.0, 5.0))
        trainer.close()
    finally:
        del teacher.output
    # encoder features (the discriminator's) go through their own forward, not through output()
    assert sum(s.teacher_nfe for s in stats) * len(PROMPTS) == pytest.approx(sum(seen))


@pytest.mark.parametrize("nfe", [1, 2, 4])
def test_student_samples(trained, nfe):
    teacher, _ = trained
    cond = teacher.encode_prompts(PROMPTS)
    noise = torch.randn((2, *teacher.latent_shape), generator=torch.Generator().manual_seed(0))
    out = student_sample(teacher, cond, noise, nfe, torch.Generator().manual_seed(1))
    assert out.shape == (2, 3, IMAGE_SIZE, IMAGE_SIZE) and torch.isfinite(out).all()


def test_one_step_student_sample_agrees_with_the_stock_pipeline(trained):
    """At 1 NFE (no re-noising) the student's sample is ``FluxPipeline``'s with guidance_scale = student_guidance.
    (With more steps the pipeline draws its fresh noise in the packed layout, so the draws differ in order.)"""
    teacher, _ = trained
    noise = torch.randn((2, *teacher.latent_shape), generator=torch.Generator().manual_seed(0))
    ours = student_sample(teacher, teacher.encode_prompts(PROMPTS), noise, 1, torch.Generator().manual_seed(7))
    theirs = draw(teacher.pipeline(), steps=1, guidance=teacher.student_guidance)
    torch.testing.assert_close((ours / 2 + 0.5).clamp(0, 1), theirs, rtol=0, atol=1e-4)


# --- (7) the config ----------------------------------------------------------------------------------------------------
def test_config_validation():
    make = components().get("teacher", "flux").make_config
    assert make({}).path == "black-forest-labs/FLUX.1-dev" and make({}).student_guidance == 3.5
    for bad in ({"dtype": "float64"}, {"student_guidance": -1.0}, {"lora_targets": []}, {"resolution": -8}):
        with pytest.raises(ValueError):
            make(bad)


# --- (8) the default LoRA's size ---------------------------------------------------------------------------------------------
def test_lora_parameter_count_of_the_real_flux_dev_transformer():
    from diffusers import FluxTransformer2DModel

    from flashbench_plugins.teachers._flow_family import lora_parameter_count

    config = flux.FluxTeacherConfig()
    count = lora_parameter_count(
        FluxTransformer2DModel, flux.FLUX_DEV_TRANSFORMER, config.default_lora_rank, alpha=config.lora_alpha, targets=config.lora_targets
    )
    # 19 double blocks x 8 projections + 38 single blocks x q/k/v, each 3072 -> 3072: 266 x 64 x 6144
    assert count == 104_595_456 == (19 * 8 + 38 * 3) * 64 * 6144
