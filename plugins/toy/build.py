"""Rebuild the toy world's committed weights: ``python -m flashbench_plugins.toy.build --all``.

Recipes (2 CPU cores, measured on the project's CI machine kind):

* ``features``: :class:`~flashbench_plugins.toy.nets.DigitFeatures`, cross-entropy on digit and colour,
  Adam 1e-3, batch 128, 1,500 steps, random 1-px shifts; about 1 minute.
* ``clip``: open_clip ``toy-digits-clip`` (ViT 16 px / patch 4, 2 layers; text 2 layers, 64 wide), the
  CLIP contrastive loss on batches holding each of the 60 prompts once; Adam 1e-3, 1,500 steps.
* ``teacher``: ``UNet2DConditionModel`` + ``CLIPTextModel`` trained jointly for epsilon-prediction on
  SD's scaled-linear schedule (1000 steps), 10% of prompts replaced by "" for classifier-free guidance,
  AdamW 1e-3 with cosine decay, batch 32, 5,000 steps, EMA 0.999 (the EMA weights are kept); ~10 min.
* ``flow-teacher``: the same two classes and sizes, trained jointly with the rectified-flow objective of SD3:
  x_t = (1 - sigma) x0 + sigma eps, target the velocity u = eps - x0, timestep sigma * 1000 (float), sigma
  drawn logit-normal (sigmoid of N(0, 1), SD3's default ``logit_normal`` weighting, no loss weighting), 10%
  null prompts, the same AdamW / warm-up / cosine / EMA 0.999 as the teacher, batch 32, 2,000 steps; 14 minutes
  on one thread of the busy 2-core machine (853 s while two other runs shared it). toy-fd at 600 samples, 25
  flow-euler steps with CFG: 50.5 at omega 2 (46.0 at 1.5, 66.3 at 3), the epsilon teacher's 42.4 (dpm-solver,
  omega 2) on the same prompts and noise; its samples follow the colour always, the digit 68% of the time (epsilon
  teacher 98%). ``sigmas="uniform"`` (the other SD3 option) measured worse: toy-fd 59.5, digits 55%. Its scheduler is
  ``FlowMatchEulerDiscreteScheduler`` with shift 1.0 (no time shift: 16 px is far below the resolutions SD3's
  shift 3.0 was chosen for). Trained on one thread (``torch.set_num_threads(1)``).

Everything is seeded; weights are stored as float16 safetensors (a few MB each).
"""

from __future__ import annotations

import argparse
import copy
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import data, models, nets

WEIGHTS = Path(__file__).resolve().parent.parent / "weights"
TEACHER_DIR = WEIGHTS / "toy-digits-teacher"
FEATURES_FILE = WEIGHTS / "toy-digits-features.safetensors"
CLIP_FILE = WEIGHTS / "toy-digits-clip.safetensors"
FLOW_TEACHER_DIR = WEIGHTS / "toy-digits-flow-teacher"
FLOW_SHIFT = 1.0


def _save_half(state: dict, path: Path) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().to(torch.float16).contiguous() for k, v in state.items()}, str(path))


def build_features(steps: int = 1500, seed: int = 0) -> None:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    ds = data.ColouredDigits("train")
    net = nets.DigitFeatures()
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    for step in range(steps):
        images, _, digits, colours = ds.batch(rng, 128)
        logits_d, logits_c = net(torch.from_numpy(images))
        loss = F.cross_entropy(logits_d, torch.from_numpy(digits)) + F.cross_entropy(logits_c, torch.from_numpy(colours))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 500 == 0:
            print(f"features step {step} loss {loss.item():.4f}", flush=True)
    net.eval()
    held = data.ColouredDigits("heldout", shift=0)
    images, _, digits, colours = held.batch(np.random.default_rng(1), 720)
    with torch.no_grad():
        ld, lc = net(torch.from_numpy(images))
    acc_d = (ld.argmax(1).numpy() == digits).mean()
    acc_c = (lc.argmax(1).numpy() == colours).mean()
    print(f"features held-out accuracy: digit {acc_d:.3f} colour {acc_c:.3f}")
    _save_half(net.state_dict(), FEATURES_FILE)


def build_clip(steps: int = 1500, seed: int = 0) -> None:
    import open_clip

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = nets.build_clip()
    tokenizer = open_clip.get_tokenizer(nets.CLIP_MODEL_NAME)
    ds = data.ColouredDigits("train")
    prompts = data.all_prompts()
    text = tokenizer(prompts)
    digits = np.repeat(np.arange(10), len(data.COLOURS))
    colours = np.tile(np.arange(len(data.COLOURS)), 10)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    for step in range(steps):
        images, batch_prompts, _, _ = ds.batch(rng, len(prompts), digits=digits, colours=colours)
        assert batch_prompts == prompts
        img = F.normalize(model.encode_image(torch.from_numpy(images)), dim=-1)
        txt = F.normalize(model.encode_text(text), dim=-1)
        logits = model.logit_scale.exp() * img @ txt.T
        target = torch.arange(len(prompts))
        loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if step % 500 == 0:
            print(f"clip step {step} loss {loss.item():.4f}", flush=True)
    model.eval()
    held = data.ColouredDigits("heldout", shift=0)
    images, held_prompts, _, _ = held.batch(np.random.default_rng(1), 600)
    with torch.no_grad():
        img = F.normalize(model.encode_image(torch.from_numpy(images)), dim=-1)
        txt = F.normalize(model.encode_text(text), dim=-1)
    pred = (img @ txt.T).argmax(1).numpy()
    acc = np.mean([prompts[p] == q for p, q in zip(pred, held_prompts)])
    print(f"clip held-out zero-shot accuracy over 60 prompts: {acc:.3f}")
    _save_half(model.state_dict(), CLIP_FILE)


def _train_denoiser(out: Path, scheduler, objective, *, steps: int, batch: int, seed: int, name: str) -> None:
    """The toy teachers' shared recipe (module docstring): UNet + CLIP text encoder trained jointly on the toy
    digits with 10% null prompts, AdamW 1e-3 (200 warm-up steps, cosine decay), gradient clipping at 1 and an
    EMA of 0.999 whose weights are written to ``out`` with the tokenizer and ``scheduler``.
    ``objective(unet, x0, noise, states)`` draws the timesteps and returns the loss."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    tok_dir = out / "tokenizer"
    tokenizer = models.build_tokenizer(tok_dir)
    unet, text_encoder = models.build_unet(seed), models.build_text_encoder(seed)
    ema_unet, ema_text = copy.deepcopy(unet).requires_grad_(False), copy.deepcopy(text_encoder).requires_grad_(False)
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, 1e-3, weight_decay=0.0)
    warmup = 200
    lr_at = lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * s / steps))  # noqa: E731
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    ds = data.ColouredDigits("train")
    t0 = time.time()
    for step in range(steps):
        images, prompts, _, _ = ds.batch(rng, batch)
        prompts = ["" if rng.random() < 0.1 else p for p in prompts]
        ids = tokenizer(prompts, padding="max_length", max_length=models.TEXT_MAX_LENGTH, truncation=True, return_tensors="pt").input_ids
        x0 = torch.from_numpy(images)
        noise = torch.randn_like(x0)
        loss = objective(unet, x0, noise, text_encoder(ids)[0])
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        decay = min(0.999, (1 + step) / (10 + step))
        with torch.no_grad():
            for ema, live in ((ema_unet, unet), (ema_text, text_encoder)):
                for pe, pl in zip(ema.parameters(), live.parameters()):
                    pe.lerp_(pl, 1 - decay)
        if step % 250 == 0:
            print(f"{name} step {step} loss {loss.item():.4f} ({time.time() - t0:.0f}s)", flush=True)
    ema_unet.half().save_pretrained(out / "unet")
    ema_text.half().save_pretrained(out / "text_encoder")
    tokenizer.save_pretrained(tok_dir)
    scheduler.save_pretrained(out / "scheduler")
    print(f"{name} written to {out} in {time.time() - t0:.0f}s")


def build_teacher(steps: int = 5000, batch: int = 32, seed: int = 0) -> None:
    """The epsilon toy teacher on SD's scaled-linear schedule (t uniform over the 1,000 training steps)."""
    from diffusers import DDPMScheduler

    scheduler = models.build_scheduler()
    noise_sched = DDPMScheduler.from_config(scheduler.config)

    def epsilon(unet, x0, noise, states):
        t = torch.randint(0, 1000, (x0.shape[0],))
        return F.mse_loss(unet(noise_sched.add_noise(x0, noise, t), t, states).sample, noise)

    _train_denoiser(TEACHER_DIR, scheduler, epsilon, steps=steps, batch=batch, seed=seed, name="teacher")


def build_flow_teacher(steps: int = 2000, batch: int = 32, seed: int = 0, out: Path = FLOW_TEACHER_DIR, sigmas: str = "logit-normal") -> None:
    """The rectified-flow toy teacher (recipe in the module docstring); the EMA weights are kept. The caller sets the
    threads (``main`` sets one)."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    def velocity(unet, x0, noise, states):
        # SD3's logit-normal sigma (m = 0, s = 1): most of the draws in the middle of the path, none at 0 or 1
        sigma = torch.sigmoid(torch.randn(x0.shape[0])) if sigmas == "logit-normal" else torch.rand(x0.shape[0])
        s = sigma.view(-1, 1, 1, 1)
        return F.mse_loss(unet((1 - s) * x0 + s * noise, sigma * 1000, states).sample, noise - x0)

    _train_denoiser(
        Path(out),
        FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=FLOW_SHIFT),
        velocity,
        steps=steps,
        batch=batch,
        seed=seed,
        name="flow teacher",
    )


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--all", action="store_true", help="rebuild every network")
    parser.add_argument("--features", action="store_true")
    parser.add_argument("--clip", action="store_true")
    parser.add_argument("--teacher", action="store_true")
    parser.add_argument("--teacher-steps", type=int, default=5000)
    parser.add_argument("--flow-teacher", action="store_true", help="the rectified-flow toy teacher (one thread)")
    parser.add_argument("--flow-teacher-steps", type=int, default=2000)
    args = parser.parse_args(argv)
    WEIGHTS.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    if args.all or args.features:
        build_features()
    if args.all or args.clip:
        build_clip()
    if args.all or args.teacher:
        build_teacher(args.teacher_steps)
    if args.all or args.flow_teacher:
        torch.set_num_threads(1)  # its recipe: one thread (measured time in the module docstring)
        build_flow_teacher(args.flow_teacher_steps)


if __name__ == "__main__":
    main()
