"""``sd21-v``: a tiny SD2.1-shaped pipeline (the real classes with SD2.1's UNet options -- linear projections,
per-block head dims, upcast attention -- a CLIP text model and a tokenizer padding with "!", SD2.1's v-prediction
DDIM config; random weights built from config) saved with ``save_pretrained`` and loaded through the plugin: the
published teacher contract, full-method training steps, student samples at 1, 2 and 4 NFEs, the exported LoRA
reloaded into a fresh ``StableDiffusionPipeline`` (LCM, v-prediction) reproducing the student, the offline error,
the LoRA count on the real UNet config, and the top of the schedule: a v student's x0 at t = 999 is finite and
not amplified, where an epsilon reading of the same output is multiplied by sigma/alpha = 14.6 (and is infinite
on a zero-terminal-SNR schedule).
"""

from __future__ import annotations

import math

import pytest
import torch

from flashbench.method.data import Batch
from flashbench.method.noise import VPV, VPEpsilon
from flashbench.method.sampling import student_sample
from flashbench.method.schedule import NoiseSchedule
from flashbench.testing import MissingWeights, TeacherContract, flash_training_smoke, tiny_text_prompts
from flashbench_plugins.teachers import sd21_v

from _builders import build_teacher, plugin_components, random_images, tiny_clip_text  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = ["a red car on a beach", "a cat with a bow tie"]
IMAGE_SIZE = 16  # tiny VAE: 2x the 8x8 latents
TOP = 999


def write_tiny_sd21(root):
    """A ``StableDiffusionPipeline`` of tiny seeded SD2.1-shaped components, saved as a diffusers folder."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    from flashbench_plugins.teachers import _sd_configs as cfg

    torch.manual_seed(0)
    text_encoder, tokenizer = tiny_clip_text(root)
    tokenizer.pad_token = "!"  # SD2's tokenizer pads with "!" (id 0), not with the end-of-text token
    pipe = StableDiffusionPipeline(
        vae=AutoencoderKL(**cfg.TINY_VAE).eval(),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=UNet2DConditionModel(**cfg.TINY_SD21_UNET).eval(),
        scheduler=DDIMScheduler(**cfg.SD21_SCHEDULER),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(root / "model")
    return root / "model"


def build(folder, **options):
    return build_teacher(sd21_v, "sd21-v", folder, **options)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return write_tiny_sd21(tmp_path_factory.mktemp("tiny-sd21-v"))


# --- loading, the contract -----------------------------------------------------------------------------------------
class TestSD21VContract(TeacherContract):
    # the contract's opt-in checks: the offline errors, the student in a fresh stock pipeline, bf16 on CUDA
    missing_weights = ("nonexistent-org/nonexistent-sd21", MissingWeights({}, "stabilityai/stable-diffusion-2-1"))
    stock_pipeline = "StableDiffusionPipeline"
    bf16 = True

    @pytest.fixture(scope="class", autouse=True)
    @classmethod
    def _folder(cls, request, tiny_folder):
        request.cls.folder = tiny_folder

    def build_teacher(self, options, *, device="cpu"):
        return plugin_components(sd21_v).get("teacher", "sd21-v").build(options, device=device)

    def teacher_options(self):
        return {"path": str(self.folder), "default_lora_rank": 4}

    def prompts(self):
        return tiny_text_prompts(2)

    def stock_sample(self, pipe, teacher):
        assert teacher.noise_process.sampling_timesteps(4) == [999, 749, 499, 249]
        assert pipe.scheduler.config.prediction_type == "v_prediction"  # LCM reads x0 = alpha x - sigma v
        return super().stock_sample(pipe, teacher)

    def check_bf16_teacher(self, teacher):
        assert isinstance(teacher.noise_process, VPV)

    def test_loaded_from_the_folder_as_a_v_teacher(self, teacher):
        from diffusers import UNet2DConditionModel

        assert isinstance(teacher.unet, UNet2DConditionModel) and teacher.source == str(self.folder)
        assert teacher.unet.config.use_linear_projection and teacher.unet.config.upcast_attention
        assert teacher.tokenizer.pad_token == "!"
        assert teacher.prediction_type == "v_prediction"
        assert isinstance(teacher.noise_process, VPV) and teacher.noise_process.prediction == "v_prediction"
        assert teacher.latent_shape == (4, 8, 8) and teacher.discriminator_input() == (64, 4)
        assert teacher.lora_targets == ("to_q", "to_k", "to_v", "to_out.0")

    @torch.no_grad()
    def test_eps_is_the_v_output_converted(self, teacher, inputs):
        x, t, cond = inputs
        v = teacher.output(x, t, cond, student=False)
        a, s = teacher.noise_process.alpha(t, x), teacher.noise_process.sigma(t, x)
        torch.testing.assert_close(teacher.eps(x, t, cond, student=False), a * v + s * x)

    @torch.no_grad()
    def test_conditioning_is_the_pipelines(self, teacher):
        from diffusers import StableDiffusionPipeline

        pipe = StableDiffusionPipeline.from_pretrained(str(self.folder))
        cond, null = teacher.encode_prompts(PROMPTS), teacher.null_condition(PROMPTS)
        pe, ne = pipe.encode_prompt(PROMPTS, "cpu", 1, True, negative_prompt=[""] * 2)
        torch.testing.assert_close(cond["encoder_hidden_states"], pe)
        torch.testing.assert_close(null["encoder_hidden_states"], ne)


# --- training, sampling, export ------------------------------------------------------------------------------------
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


def test_student_sample_agrees_with_the_stock_pipeline(trained):
    # flashbench's few-step sampler is the stock pipeline's (LCM reads x0 = alpha x - sigma v the same way)
    teacher, _ = trained
    in_memory = teacher.pipeline()(
        PROMPTS, timesteps=[999, 749, 499, 249], guidance_scale=0.0, generator=torch.Generator().manual_seed(0), output_type="pt"
    ).images
    g = torch.Generator().manual_seed(0)
    noise = torch.randn((2, *teacher.latent_shape), generator=g)
    ours = student_sample(teacher, teacher.encode_prompts(PROMPTS), noise, 4, g)
    torch.testing.assert_close((ours.clamp(-1, 1) + 1) / 2, in_memory, rtol=0, atol=1e-5)


# --- the top of the schedule -----------------------------------------------------------------------------------------
def _schedule(**options) -> NoiseSchedule:
    from diffusers import DDIMScheduler

    from flashbench_plugins.teachers._sd_configs import SD21_SCHEDULER

    return NoiseSchedule(DDIMScheduler(**{**SD21_SCHEDULER, **options}).alphas_cumprod)


def test_sd21_schedule_is_not_zero_snr_at_the_top():
    sched = _schedule()
    like = torch.zeros(())
    a, s = sched.alpha(TOP, like).item(), sched.sigma(TOP, like).item()
    assert a == pytest.approx(0.06826, abs=1e-4) and s == pytest.approx(0.99767, abs=1e-4)
    assert s / a == pytest.approx(14.61, abs=0.01)


def test_v_parametrisation_does_not_amplify_the_output_at_t_999():
    """Same x_T, same output magnitude: as v, x0 = alpha x - sigma v moves by sigma ~ 1 per unit of output; as
    epsilon, x0 = (x - sigma eps) / alpha moves by sigma / alpha = 14.6."""
    sched = _schedule()
    v_process, eps_process = VPV(sched), VPEpsilon(sched)
    g = torch.Generator().manual_seed(0)
    x = torch.randn((4, 4, 8, 8), generator=g)
    out = torch.randn((4, 4, 8, 8), generator=g)
    delta = 1e-2 * torch.randn((4, 4, 8, 8), generator=g)  # an error of the network's output
    x0_v, x0_eps = v_process.to_x0(x, out, TOP), eps_process.to_x0(x, out, TOP)
    assert torch.isfinite(x0_v).all() and torch.isfinite(x0_eps).all()
    bound = x.abs().max() + out.abs().max()  # alpha |x| + sigma |v| with alpha, sigma <= 1
    assert x0_v.abs().max() <= bound
    assert x0_v.std() == pytest.approx(1.0, abs=0.15)  # sqrt(alpha^2 + sigma^2) = 1 for independent unit inputs
    assert x0_eps.std() > 10 * x0_v.std()
    err_v = (v_process.to_x0(x, out + delta, TOP) - x0_v).abs().max() / delta.abs().max()
    err_eps = (eps_process.to_x0(x, out + delta, TOP) - x0_eps).abs().max() / delta.abs().max()
    assert err_v == pytest.approx(0.9977, abs=1e-3) and err_eps == pytest.approx(14.61, abs=0.05)


def test_v_stays_finite_on_a_zero_terminal_snr_schedule():
    """``rescale_betas_zero_snr``: alpha_T = 0; v gives x0 = -v, an epsilon reading divides by zero."""
    sched = _schedule(rescale_betas_zero_snr=True)
    x = torch.randn((2, 4, 8, 8), generator=torch.Generator().manual_seed(0))
    out = torch.randn((2, 4, 8, 8), generator=torch.Generator().manual_seed(1))
    assert sched.alpha(TOP, x).item() == 0.0
    x0_v = VPV(sched).to_x0(x, out, TOP)
    torch.testing.assert_close(x0_v, -out)
    assert not torch.isfinite(VPEpsilon(sched).to_x0(x, out, TOP)).all()


@torch.no_grad()
def test_trained_students_x0_at_the_top_timestep_is_finite_and_not_amplified(trained):
    teacher, _ = trained
    process = teacher.noise_process
    x = torch.randn((2, *teacher.latent_shape), generator=torch.Generator().manual_seed(3))
    t = process.timesteps(TOP, 2, x.device)
    v = teacher.output(x, t, teacher.encode_prompts(PROMPTS), student=True)
    x0 = process.to_x0(x, v, t)
    a, s = process.alpha(t, x), process.sigma(t, x)
    assert torch.isfinite(x0).all()
    assert (x0 - (a * x - s * v)).abs().max() < 1e-5  # the v reading, as the stock pipeline's
    assert x0.abs().max() <= x.abs().max() + v.abs().max()
    as_eps = VPEpsilon(process.schedule).to_x0(x, v, t)
    assert as_eps.abs().max() > 5 * x0.abs().max()


# --- the parameter count ------------------------------------------------------------------------------------------
def test_default_lora_on_the_real_unet():
    from flashbench_plugins.teachers import _sd_configs as cfg

    config = sd21_v.SD21VTeacherConfig()
    assert cfg.lora_parameter_count(cfg.SD21_UNET, config.default_lora_rank, config.lora_targets) == 26_558_464
