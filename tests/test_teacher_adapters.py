"""The ``adapter-canny`` and ``adapter-depth`` teacher plugins (SDXL + a frozen T2I-Adapter) on one tiny
SDXL-shaped folder and one tiny XL adapter folder (real classes, random weights, written from config) loaded
through the plugins' own ``from_pretrained`` path: the adapter's residuals in the cond dict, the published
teacher contract, several steps of the full method, few-step sampling, the LoRA export reloaded into the stock
``StableDiffusionXLAdapterPipeline``, the offline error, bf16 on a GPU, and the LoRA size on the real-size
UNet (meta device), where the real adapter's residuals must fit the real UNet.
"""

from __future__ import annotations

import math

import pluggy
import pytest
import torch

import flashbench
import flashbench.plugins
from flashbench.errors import UserError
from flashbench.method.data import Batch
from flashbench.method.sampling import student_sample
from flashbench.testing import MissingWeights, TeacherContract, flash_training_smoke, tiny_text_prompts
from flashbench_plugins.teachers import adapter_canny, adapter_depth
from flashbench_plugins.teachers._sdxl_configs import write_tiny_sdxl, write_tiny_t2i_adapter

pytestmark = pytest.mark.usefixtures("one_thread")

PLUGINS = {"adapter-canny": adapter_canny, "adapter-depth": adapter_depth}
PROMPTS = tiny_text_prompts(2)
TIMESTEPS = [999, 749, 499, 249]


def component(name):
    pm = pluggy.PluginManager("flashbench")
    pm.add_hookspecs(flashbench.hookspecs)
    pm.register(PLUGINS[name])
    return flashbench.plugins.collect_components(pm).get("teacher", name)


def control(n: int = 2, seed: int = 0) -> torch.Tensor:
    """(n, 3, 16, 16) control images in [0, 1]: sparse white edges on black, like a canny map."""
    g = torch.Generator().manual_seed(seed)
    return (torch.rand((n, 1, 16, 16), generator=g) > 0.8).float().expand(-1, 3, -1, -1).contiguous()


def up_block_input(teacher, x, t, cond):
    """What the UNet's own forward feeds its first up block: the encoder's output, adapter residuals included."""
    seen = {}

    def grab(module, args, kwargs):
        seen["h"] = kwargs["hidden_states"].clone()

    handle = teacher.unet.up_blocks[0].register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with torch.no_grad():
            teacher.eps(x, t, cond, student=False)
    finally:
        handle.remove()
    return seen["h"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-sdxl-adapter")
    return write_tiny_sdxl(root / "sdxl"), write_tiny_t2i_adapter(root / "adapter")


def build(name, folders, device="cpu", **options):
    sdxl, adapter = folders
    return component(name).build({"path": str(sdxl), "adapter_path": str(adapter), **options}, device=device)


@pytest.fixture(scope="module", params=sorted(PLUGINS))
def teacher(request, folders):
    return build(request.param, folders)


def pipeline_sample(pipe, image, conditioning_scale, steps: int = 4):
    return pipe(
        PROMPTS,
        image=image,
        adapter_conditioning_scale=conditioning_scale,
        timesteps=TIMESTEPS[:steps],
        guidance_scale=0.0,
        output_type="pt",
        generator=torch.Generator().manual_seed(0),
    ).images


# --- (1) loading and the adapter's conditioning --------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(PLUGINS))
def test_defaults_are_the_public_adapters(name):
    config = component(name).make_config({})
    assert config.path == "stabilityai/stable-diffusion-xl-base-1.0"
    assert (
        config.adapter_path == {"adapter-canny": "TencentARC/t2i-adapter-canny-sdxl-1.0", "adapter-depth": "TencentARC/t2i-adapter-depth-midas-sdxl-1.0"}[name]
    )
    assert config.conditioning_scale == 0.8 and config.default_lora_rank == 64


def test_plugin_loads_the_tiny_folders(teacher, folders):
    from diffusers import T2IAdapter, UNet2DConditionModel

    assert isinstance(teacher.adapter, T2IAdapter) and isinstance(teacher.unet, UNet2DConditionModel)
    assert teacher.adapter_source == str(folders[1]) and teacher.latent_shape == (4, 8, 8)
    assert not any(p.requires_grad for p in teacher.adapter.parameters())


def test_residuals_are_scaled_in_the_cond_and_kept_by_the_null_condition(teacher):
    ctrl = control()
    calls = []
    handle = teacher.adapter.register_forward_hook(lambda *a: calls.append(1))
    try:
        cond = teacher.encode_prompts(PROMPTS, {"control": ctrl})
        null = teacher.null_condition(PROMPTS, {"control": ctrl})
    finally:
        handle.remove()
    assert len(calls) == 1, "the adapter must run once per batch"
    with torch.no_grad():
        expected = [r * teacher.conditioning_scale for r in teacher.adapter(ctrl)]
    keys = [f"adapter_{i}" for i in range(len(expected))]
    assert set(cond) == {"encoder_hidden_states", "text_embeds", "time_ids", *keys}
    for key, want in zip(keys, expected):
        torch.testing.assert_close(cond[key], want)
        torch.testing.assert_close(null[key], want)  # CFG's null keeps the control, nulls the text
    assert cond[keys[0]].shape == (2, 32, 4, 4) and cond[keys[-1]].shape == (2, 64, 2, 2)
    assert not null["encoder_hidden_states"].any() and not null["text_embeds"].any()
    # a new batch of control images (even the same tensor changed in place) runs the adapter again
    ctrl.mul_(0.5)
    assert not torch.equal(teacher.encode_prompts(PROMPTS, {"control": ctrl})["adapter_0"], cond["adapter_0"])


def test_the_adapter_steers_the_unet_and_the_discriminator_features(teacher):
    g = torch.Generator().manual_seed(3)
    x = torch.randn((2, *teacher.latent_shape), generator=g)
    t = torch.tensor([999, 499])
    cond = teacher.encode_prompts(PROMPTS, {"control": control()})
    text_only = {k: v for k, v in cond.items() if not k.startswith("adapter_")}
    with torch.no_grad():
        gap = (teacher.eps(x, t, cond, student=False) - teacher.eps(x, t, text_only, student=False)).abs().max()
    assert gap > 1e-3
    feats = teacher.encoder_features(x, t, cond)
    torch.testing.assert_close(feats, up_block_input(teacher, x, t, cond))  # residuals added where the UNet adds them
    assert (feats - teacher.encoder_features(x, t, text_only)).abs().max() > 1e-3


def test_control_is_required_and_adapted(teacher):
    with pytest.raises(UserError, match=r"extras\['control'\]") as info:
        teacher.encode_prompts(PROMPTS)
    assert "\n" not in str(info.value)
    gray = control()[:, :1]
    torch.testing.assert_close(
        teacher.encode_prompts(PROMPTS, {"control": gray})["adapter_0"], teacher.encode_prompts(PROMPTS, {"control": control()})["adapter_0"]
    )
    big = torch.nn.functional.interpolate(control(), scale_factor=2, mode="nearest")  # resized to the resolution
    assert teacher.encode_prompts(PROMPTS, {"control": big})["adapter_0"].shape == (2, 32, 4, 4)


# --- (2) the published contract, for each plugin --------------------------------------------------------------
class _AdapterContract(TeacherContract):
    lora_rank = 4
    name = ""
    # the contract's opt-in checks: the offline errors (adapter, then base model), the student in a fresh stock
    # pipeline, bf16 on CUDA
    missing_weights = (
        MissingWeights({"adapter_path": "nonexistent-org/nonexistent-adapter"}, "nonexistent-org/nonexistent-adapter", "adapter_path"),
        MissingWeights({"path": "nonexistent-org/nonexistent-sdxl"}, "nonexistent-org/nonexistent-sdxl", None),
    )
    stock_pipeline = "StableDiffusionXLAdapterPipeline"
    stock_min_change = 1e-3
    bf16 = True
    bf16_modules = ("denoiser", "adapter")

    @pytest.fixture(scope="class", autouse=True)
    @classmethod
    def _folders(cls, request, folders):
        request.cls.folders = folders

    def make_teacher(self):
        return build(self.name, self.folders)

    def build_teacher(self, options, *, device="cpu"):
        """The tiny folders, for whichever of ``path`` and ``adapter_path`` the options leave out."""
        sdxl, adapter = self.folders
        return component(self.name).build({"path": str(sdxl), "adapter_path": str(adapter), **options}, device=device)

    def extras(self):
        return {"control": control()}

    def batch_extras(self, images, seed):
        return {"control": control(seed=seed)}

    def smoke_options(self):
        return {"lr": 1e-2}

    def stock_pipeline_kwargs(self, teacher):
        from diffusers import T2IAdapter

        return {"adapter": T2IAdapter.from_pretrained(str(self.folders[1]))}

    def stock_sample(self, pipe, teacher):
        return pipeline_sample(pipe, control(), teacher.conditioning_scale)


class TestAdapterCannyContract(_AdapterContract):
    name = "adapter-canny"


class TestAdapterDepthContract(_AdapterContract):
    name = "adapter-depth"


# --- (3) the full method, (4) sampling, (5) export -------------------------------------------------------------
@pytest.fixture(scope="module", params=sorted(PLUGINS))
def trained(request, folders):
    teacher = build(request.param, folders)
    g = torch.Generator().manual_seed(0)
    batches = [Batch(torch.rand((2, 3, 16, 16), generator=g) * 2 - 1, PROMPTS, {"control": control(seed=i)}) for i in range(4)]
    trainer, stats = flash_training_smoke(teacher, batches, lr=1e-2)
    yield teacher, stats
    trainer.close()


def test_full_method_steps_have_every_loss_term(trained):
    _, stats = trained
    assert len(stats) == 4 and stats[-1].phase == 3
    for term in ("distil", "adv", "dmd", "disc", "total"):
        assert term in stats[-1].losses and math.isfinite(stats[-1].losses[term]), stats[-1].losses
    assert all(math.isfinite(v) for s in stats for v in s.losses.values())


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_student_samples_at_1_2_4_nfe(trained, steps):
    teacher, _ = trained
    g = torch.Generator().manual_seed(steps)
    noise = torch.randn((2, *teacher.latent_shape), generator=g)
    images = student_sample(teacher, teacher.encode_prompts(PROMPTS, {"control": control()}), noise, steps, g)
    assert images.shape == (2, 3, 16, 16) and torch.isfinite(images).all()


def test_student_sample_agrees_with_the_stock_adapter_pipeline(trained):
    # the method's own sampler conditions the UNet as the stock adapter pipeline does
    teacher, _ = trained
    image = control()
    in_memory = pipeline_sample(teacher.pipeline(), image, teacher.conditioning_scale)
    g = torch.Generator().manual_seed(0)
    noise = torch.randn((2, *teacher.latent_shape), generator=g)
    ours = student_sample(teacher, teacher.encode_prompts(PROMPTS, {"control": image}), noise, 4, g)
    torch.testing.assert_close((ours / 2 + 0.5).clamp(0, 1), in_memory, rtol=0, atol=1e-5)


# --- (8) the LoRA size, and the real adapter fitting the real UNet, on the meta device --------------------------
@pytest.mark.parametrize("name", sorted(PLUGINS))
def test_paper_lora_parameter_count_on_meta(name):
    from flashbench_plugins.teachers._sdxl_configs import meta_sdxl_unet
    from flashbench_plugins.teachers._sdxl_family import SDXLAdapterTeacher

    config = component(name).make_config({})
    shell = SDXLAdapterTeacher.__new__(SDXLAdapterTeacher)  # the teacher's own add_lora, nothing loaded
    shell.unet, shell.lora_targets = meta_sdxl_unet(), config.lora_targets
    assert sum(p.numel() for p in shell.add_lora("count", config.default_lora_rank)) == 92_897_280  # as sdxl: the UNet's LoRA only


def test_real_adapter_residuals_fit_the_real_unet_on_meta():
    from flashbench_plugins.teachers._sdxl_configs import meta_sdxl_unet, meta_t2i_adapter

    unet, adapter = meta_sdxl_unet(), meta_t2i_adapter()
    with torch.device("meta"):
        residuals = adapter(torch.empty(1, 3, 1024, 1024))
        assert [tuple(r.shape[1:]) for r in residuals] == [(320, 64, 64), (640, 64, 64), (1280, 32, 32), (1280, 32, 32)]
        pending = list(residuals)
        out = unet(
            torch.empty(1, 4, 128, 128),
            torch.tensor([999]),
            encoder_hidden_states=torch.empty(1, 77, 2048),
            added_cond_kwargs={"text_embeds": torch.empty(1, 1280), "time_ids": torch.empty(1, 6)},
            down_intrablock_additional_residuals=pending,
        ).sample
    assert out.shape == (1, 4, 128, 128) and not pending  # every residual was consumed
