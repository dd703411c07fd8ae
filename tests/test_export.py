"""``flashbench export``: a variant's student LoRA as diffusers, ComfyUI (kohya) and peft files, and the model
card beside it. The student is an ``sd15`` teacher's LoRA on a tiny SD1.5-shaped pipeline built from config
(random weights, random LoRA up-weights so that it changes the samples), saved with the teacher's own
``save_lora``, in a fabricated run directory (no training). The round trip goes through diffusers' own kohya
reader and a stock ``StableDiffusionPipeline``."""

from __future__ import annotations

import json
import re

import pytest
import torch

from flashbench.cli import main
from flashbench.results import ResultStore
from flashbench_plugins.teachers import sd15

from _builders import build_teacher, write_tiny_pipeline  # noqa: E402
from _fake_run import add_grids, add_lora, resolved_study, row, write_run  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

RANK = 4
TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2", "conv1", "conv2")
PROMPTS = ["a red car on a beach", "a cat with a bow tie"]


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    """(diffusers folder of a tiny SD1.5 pipeline, folder of a student LoRA saved by the sd15 teacher)."""
    from diffusers import StableDiffusionPipeline

    from flashbench_plugins.teachers import _sd_configs as cfg

    root = tmp_path_factory.mktemp("tiny-sd")
    folder = write_tiny_pipeline(
        root,
        StableDiffusionPipeline,
        vae=cfg.TINY_VAE,
        unet=cfg.TINY_UNET,
        scheduler=cfg.SD15_SCHEDULER,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    teacher = build_teacher(sd15, "sd15", folder, lora_targets=TARGETS, default_lora_rank=RANK)
    teacher.add_lora("student", RANK)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in teacher.unet.named_parameters():
            if "lora_B" in name:  # peft's init leaves B = 0 (no effect): give the student something to say
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return folder, teacher.save_lora("student", root / "lora")


@pytest.fixture(scope="module")
def run_dir(tiny_sd, components, tmp_path_factory):
    """A run of the two-variant study with an sd15 teacher: distil-s0 has intervals, full-s0 (older rows) none."""
    _, lora = tiny_sd
    tmp = tmp_path_factory.mktemp("run")
    study = resolved_study(tmp, components, teacher="sd15")
    rows = [
        row("tiny", "distil-s0", "distil", "fd", 4, 12.5, ci=(11.0, 14.25)),
        row("tiny", "distil-s0", "distil", "clip_score", 4, 0.3125, ci=(0.30, 0.33)),
        row("tiny", "distil-s0", "distil", "fd", 2, 20.0, ci=(18.0, 22.0)),
        row("tiny", "full-s0", "full", "fd", 4, 9.75),
        row("tiny", "teacher-s0", "teacher", "fd", 8, 5.0, role="teacher"),
    ]
    run = write_run(tmp / "run", study, rows)
    for key in ("distil-s0", "full-s0"):
        add_lora(run, key, lora)
    add_grids(run, "distil-s0", nfes=(2, 4))
    return run


def export(run, variant, fmt, out) -> int:
    return main(["export", str(run), variant, "--format", fmt, "--output", str(out)])


def sample(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe(PROMPTS, num_inference_steps=2, guidance_scale=1.0, output_type="pt", generator=torch.Generator().manual_seed(0)).images


def fresh_pipeline(folder):
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline.from_pretrained(str(folder))


# --- formats ---------------------------------------------------------------------------------------------
def test_diffusers_export_is_the_stored_file(run_dir, tiny_sd, tmp_path):
    _, lora = tiny_sd
    assert export(run_dir, "distil", "diffusers", tmp_path / "out") == 0
    assert (tmp_path / "out" / "pytorch_lora_weights.safetensors").read_bytes() == (lora / "pytorch_lora_weights.safetensors").read_bytes()


def test_comfyui_file_is_kohya_and_diffusers_converts_it_back_to_the_same_weights(run_dir, tiny_sd, tmp_path):
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_unet_state_dict_to_peft
    from safetensors.torch import load_file

    _, lora = tiny_sd
    assert export(run_dir, "distil-s0", "comfyui", tmp_path / "out") == 0
    files = list((tmp_path / "out").glob("*.safetensors"))
    assert [f.name for f in files] == ["tiny-distil-s0.safetensors"]
    kohya = load_file(str(files[0]))
    assert all(re.fullmatch(r"lora_unet_[a-z0-9_]+\.(lora_down\.weight|lora_up\.weight|alpha)", k) for k in kohya), list(kohya)[:5]
    assert "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q.lora_down.weight" in kohya
    assert "lora_unet_down_blocks_0_resnets_0_conv1.lora_up.weight" in kohya  # conv LoRA too
    assert {float(v) for k, v in kohya.items() if k.endswith(".alpha")} == {float(RANK)}

    original = load_file(str(lora / "pytorch_lora_weights.safetensors"))
    back, alphas = StableDiffusionPipeline.lora_state_dict(str(files[0]))  # diffusers' own kohya reader
    back = convert_unet_state_dict_to_peft(back)  # its legacy names (attn1.processor.to_q_lora.down) -> PEFT's
    assert set(back) == set(original)
    for key, tensor in original.items():
        torch.testing.assert_close(back[key].float(), tensor.float(), rtol=0, atol=1e-6)
    assert len(alphas) == len(original) // 2 and set(alphas.values()) == {RANK}


def test_comfyui_lora_in_a_stock_pipeline_samples_as_the_diffusers_lora(run_dir, tiny_sd, tmp_path):
    folder, lora = tiny_sd
    assert export(run_dir, "distil", "comfyui", tmp_path / "comfy") == 0
    plain = sample(fresh_pipeline(folder))
    pipe = fresh_pipeline(folder)
    pipe.load_lora_weights(str(lora))
    reference = sample(pipe)
    pipe = fresh_pipeline(folder)
    pipe.load_lora_weights(str(next((tmp_path / "comfy").glob("*.safetensors"))))
    comfy = sample(pipe)
    assert (reference - plain).abs().max() > 1e-2  # the LoRA matters, so agreeing below means something
    torch.testing.assert_close(comfy, reference, rtol=0, atol=1e-5)


def test_peft_adapter_loads_with_peft_and_samples_as_the_diffusers_lora(run_dir, tiny_sd, tmp_path):
    from peft import PeftModel

    folder, lora = tiny_sd
    out = tmp_path / "peft"
    assert export(run_dir, "distil-s0", "peft", out) == 0
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == RANK and config["lora_alpha"] == RANK and config["peft_type"] == "LORA"
    assert config["base_model_name_or_path"] == "stable-diffusion-v1-5/stable-diffusion-v1-5"  # sd15's default weights
    pipe = fresh_pipeline(folder)
    pipe.load_lora_weights(str(lora))
    reference = sample(pipe)
    pipe = fresh_pipeline(folder)
    model = PeftModel.from_pretrained(pipe.unet, str(out))  # injects the adapter into pipe.unet in place
    assert model.peft_config["default"].r == RANK
    torch.testing.assert_close(sample(pipe), reference, rtol=0, atol=1e-5)


def test_a_peft_folder_in_the_run_exports_as_peft_only(run_dir, tmp_path, capsys):
    import shutil

    from flashbench.export import export_variant

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    lora = run / "variants" / "full-s0" / "lora"
    shutil.rmtree(lora)
    export_variant(run_dir, "distil-s0", "peft", lora)  # a peft adapter folder where pixart-alpha writes one
    (lora / "README.md").unlink()
    assert export(run, "full", "comfyui", tmp_path / "x") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "peft adapter" in err[0] and "--format peft" in err[0]
    assert export(run, "full", "peft", tmp_path / "y") == 0
    assert (tmp_path / "y" / "adapter_config.json").read_bytes() == (lora / "adapter_config.json").read_bytes()


# --- model card ------------------------------------------------------------------------------------------
def _card(folder):
    text = (folder / "README.md").read_text(encoding="utf-8")
    from huggingface_hub import ModelCard

    return text, ModelCard(text).data.to_dict()  # the Hub's own parser of the metadata block


def test_model_card_metadata_recipe_metrics_and_grids(run_dir, tmp_path):
    out = tmp_path / "card"
    assert export(run_dir, "distil", "comfyui", out) == 0
    text, meta = _card(out)
    assert meta["base_model"] == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert meta["library_name"] == "diffusers" and meta["license"] == "creativeml-openrail-m"
    assert {"flashbench", "flash-diffusion", "lora", "stable-diffusion", "sd15"} <= set(meta["tags"])
    # the recipe: the variant's resolved configuration from study.json
    recipe = json.loads(re.search(r"```json\n(.*?)\n```", text, re.S).group(1))
    stored = next(v for v in ResultStore(run_dir).read_study()["variants"] if v["key"] == "distil-s0")
    assert recipe == {"train": stored["train"], "eval": stored["eval"]}
    # the metrics with their intervals; not the other variant's, not the teacher's
    lines = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    assert any("fd" in line and "| 4 |" in line and "12.5" in line and "[11, 14.25] (bootstrap)" in line for line in lines), lines
    assert any("clip_score ↑" in line and "0.3125" in line and "[0.3, 0.33]" in line for line in lines), lines
    assert len(lines) == 4 and "9.75" not in text and "| 5 |" not in text
    # the sample grids, copied and linked
    for nfe in (2, 4):
        assert (out / f"grid_nfe{nfe}.png").read_bytes() == (run_dir / "variants" / "distil-s0" / f"grid_nfe{nfe}.png").read_bytes()
        assert f"](grid_nfe{nfe}.png)" in text
    assert "tiny-distil-s0.safetensors" in text


def test_model_card_of_rows_without_intervals_says_so(run_dir, tmp_path):
    out = tmp_path / "card"
    assert export(run_dir, "full-s0", "peft", out) == 0
    text, meta = _card(out)
    assert meta["library_name"] == "peft"
    line = next(line for line in text.splitlines() if line.startswith("| fd"))
    assert "9.75" in line and "no interval stored" in line
    assert "## Samples" not in text  # full-s0 has no grids


def test_model_card_licence_of_a_local_teacher_folder(tiny_sd, components, tmp_path):
    from flashbench.model_card import hub_id, teacher_license

    folder, lora = tiny_sd
    study = resolved_study(tmp_path, components, teacher={"name": "sd15", "path": str(folder)})
    run = write_run(tmp_path / "run", study, [row("tiny", "distil-s0", "distil", "fd", 4, 1.0)])
    add_lora(run, "distil-s0", lora)
    assert export(run, "distil", "diffusers", tmp_path / "a") == 0
    text, meta = _card(tmp_path / "a")
    assert "base_model" not in meta and meta["license"] == "other" and meta["license_name"] == "unknown"
    assert "**Licence**: unknown" in text and str(folder) in text
    # a teacher folder with its own model card: its licence
    (folder / "README.md").write_text("---\nlicense: apache-2.0\ntags:\n- x\n---\n# a model\n")
    try:
        assert teacher_license(str(folder)) == "apache-2.0"
    finally:
        (folder / "README.md").unlink()
    assert hub_id("/cache/hub/models--stabilityai--stable-diffusion-xl-base-1.0/snapshots/abc") == "stabilityai/stable-diffusion-xl-base-1.0"
    assert teacher_license("stabilityai/stable-diffusion-xl-base-1.0") == "openrail++"
    assert teacher_license("someone/unknown-model") is None


# --- bad input -------------------------------------------------------------------------------------------
def _one_line_error(capsys) -> str:
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("flashbench: error: ") and "Traceback" not in captured.err, captured.err
    return err[0]


def test_unknown_variant_names_the_run_and_the_variants(run_dir, tmp_path, capsys):
    assert export(run_dir, "dstil", "diffusers", tmp_path / "x") == 2
    line = _one_line_error(capsys)
    assert str(run_dir) in line and "'dstil'" in line and "distil, full" in line and "distil-s0" in line
    assert not (tmp_path / "x").exists()


def test_a_name_with_several_seeds_asks_for_a_key(run_dir, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    store = ResultStore(run)
    study = store.read_study()
    study["variants"].append({**study["variants"][0], "seed": 1, "key": "distil-s1"})
    store.write_study(study)
    assert export(run, "distil", "diffusers", tmp_path / "x") == 2
    assert "distil-s0, distil-s1" in _one_line_error(capsys)


@pytest.mark.parametrize("case", ["missing", "file", "no-study"])
def test_not_a_run_directory(tmp_path, capsys, case):
    target = tmp_path / "nope"
    if case == "file":
        target.write_text("x")
    elif case == "no-study":
        target.mkdir()
    assert export(target, "distil", "diffusers", tmp_path / "x") == 2
    assert str(target) in _one_line_error(capsys)


def test_a_variant_without_lora_says_why(run_dir, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    shutil.rmtree(run / "variants" / "full-s0" / "lora")
    assert export(run, "full", "comfyui", tmp_path / "x") == 2
    line = _one_line_error(capsys)
    assert "'full-s0' has no LoRA" in line and "pytorch_lora_weights.safetensors" in line


def test_unknown_format_lists_the_formats(run_dir, tmp_path, capsys):
    assert export(run_dir, "distil", "a1111", tmp_path / "x") == 2
    line = _one_line_error(capsys)
    assert "--format" in line and "diffusers" in line and "comfyui" in line and "peft" in line


def test_output_that_is_a_file(run_dir, tmp_path, capsys):
    (tmp_path / "x").write_text("")
    assert export(run_dir, "distil", "diffusers", tmp_path / "x") == 2
    assert "--output" in _one_line_error(capsys)


def test_default_output_folder_and_summary_line(run_dir, capsys):
    assert main(["export", str(run_dir), "full-s0"]) == 0
    out = capsys.readouterr().out
    assert (run_dir / "exports" / "full-s0-diffusers" / "README.md").is_file(), out
    assert "pytorch_lora_weights.safetensors" in out and "README.md" in out
