"""Item 2's measurement, run in a fresh process per layout: the peak memory of Flash training steps with the
teacher as the student's own module with its adapters disabled (``shared``, flashbench's design) or with a
separate frozen copy of the teacher beside the student (``separate``, the two-copy layout).

The teacher is the SD-family teacher code with a UNet built from SD1.5's published configuration (859.5M
parameters; the cross-attention width reduced to the toy text encoder's 32; 8x8 latents so that activations
stay small beside the weights) -- ``--scale small`` shrinks the channels for a quick correctness run. Weights
are initialised in place (nothing loaded, so no loading peak). Two full steps (the second phase onwards: all
loss terms) at batch 2, K = 4.

Peak: on the CPU the peak resident set of this process (:func:`rss_peak_mb`), and the same above the process's peak before any model
was built (imports, runtime: the part a CUDA ``max_memory_allocated`` would not see); on CUDA
``torch.cuda.max_memory_allocated``. Prints one JSON object.

    python tests/benchmarks/_memory_child.py --layout shared --scale full --device cpu
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import sys

SCALES = {  # block_out_channels of the UNet (SD1.5: 320, 640, 1280, 1280)
    "full": [320, 640, 1280, 1280],
    "small": [32, 64, 128, 128],
}


def rss_peak_mb() -> float:
    """This process's peak resident set: Linux's ``VmHWM`` (the high-water mark of this program's memory map,
    which starts afresh at exec) -- not ``ru_maxrss``, which Linux carries across exec, so that a child of a
    2 GB pytest process would start at 2 GB. Elsewhere ``ru_maxrss``."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux (bytes on macOS)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layout", choices=["shared", "separate"], required=True)
    parser.add_argument("--scale", choices=list(SCALES), default="full")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from diffusers import UNet2DConditionModel

    from flashbench.config import TrainConfig
    from flashbench.method.data import Batch
    from flashbench.plugins import collect_components
    from flashbench.training import build_trainer
    from flashbench_plugins.teachers import _sd_configs
    from flashbench_plugins.teachers._sd_family import SDFamilyTeacher

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    components = collect_components()
    teacher = components.get("teacher", "toy-digits").build({}, device=device)  # tokenizer, text encoder, schedule
    baseline_mb = rss_peak_mb()
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
        baseline_mb = torch.cuda.max_memory_allocated(device) / 2**20

    config = {
        **_sd_configs.SD15_UNET,
        "cross_attention_dim": teacher.text_encoder.config.hidden_size,
        "sample_size": 8,
        "block_out_channels": SCALES[args.scale],
    }
    torch.manual_seed(0)
    unet = UNet2DConditionModel(**config).eval().requires_grad_(False).to(device)
    teacher.unet = teacher.denoiser = unet
    teacher.latent_shape = (config["out_channels"], 8, 8)
    weights_mb = sum(p.numel() * p.element_size() for p in unet.parameters()) / 2**20

    frozen = None
    if args.layout == "separate":
        frozen = copy.deepcopy(unet)  # before the LoRA: a plain frozen teacher

        def eps(x, t, cond, *, student, module=None):
            if student:
                return teacher._forward(teacher.denoiser if module is None else module, x, t, cond)
            return teacher._forward(frozen, x, t, cond)

        def encoder_features(x, t, cond):
            student_unet = teacher.unet
            teacher.unet = frozen  # SDFamilyTeacher.encoder_features reads self.unet
            try:
                return SDFamilyTeacher.encoder_features(teacher, x, t, cond)
            finally:
                teacher.unet = student_unet

        teacher.eps, teacher.encoder_features = eps, encoder_features

    cfg = TrainConfig(
        num_timesteps=4,
        phase_length=1,
        iterations=3,
        batch_size=2,
        learning_rate=1e-5,
        disc_learning_rate=1e-5,
        guidance_min=3.0,
        guidance_max=13.0,
        lora_rank=4,
    )
    trainer = build_trainer(cfg, components, teacher=teacher, seed=0, adapter_name="memory")  # dpm-solver, mse + lsgan + dmd
    g = torch.Generator().manual_seed(0)
    prompts = ["a red digit three", "a blue digit seven"]
    losses = {}
    for iteration in (1, 2):
        batch = Batch(torch.randn((2, *teacher.latent_shape), generator=g).clamp(-1, 1), prompts)
        losses = trainer.step(batch, iteration).losses
    if cuda:
        torch.cuda.synchronize(device)
        peak_mb = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak_mb = rss_peak_mb()

    teacher_module = frozen if frozen is not None else unet
    # distinct storages behind the weights the teacher's passes and the student's read: 1 copy or 2
    storages = {p.untyped_storage().data_ptr() for module in (teacher_module, unet) for n, p in module.named_parameters() if "lora_" not in n}
    base_params = sum(1 for n, _ in unet.named_parameters() if "lora_" not in n)
    return {
        "layout": args.layout,
        "scale": args.scale,
        "device": str(device),
        "unet_parameters_M": sum(p.numel() for n, p in unet.named_parameters() if "lora_" not in n) / 1e6,
        "weights_mb": weights_mb,
        "lora_parameters": trainer.trainable_params,
        "baseline_mb": baseline_mb,
        "peak_mb": peak_mb,
        "peak_above_baseline_mb": peak_mb - baseline_mb,
        "weight_copies": len(storages) / base_params,
        "losses": losses,
        "measure": "torch.cuda.max_memory_allocated" if cuda else "peak resident set (VmHWM)",
    }


if __name__ == "__main__":
    sys.stdout.write(json.dumps(main()) + "\n")
