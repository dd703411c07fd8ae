"""One Flash Diffusion training step (Algorithm 1).

Per step: draw (z0, c), omega ~ U[omega_min, omega_max] and a grid index i ~ pi per sample; z_{t_i} =
alpha z0 + sigma eps (pure noise at i = K, as at inference); the teacher solves the PF-ODE with CFG from
t_i down the K-grid to 0 (no grad); the student predicts z~0 in one step; L = L_distil +
lambda_adv L_adv + lambda_DMD L_DMD with the lambdas of the current phase; Adam on the LoRA; then the
discriminator head takes its own Adam step (it trains during warm-up too, when lambda_adv is 0).

Data-parallel (``accelerate launch``): every rank draws the randomness of the *global* batch (data,
omega, grid indices, noise) from the same seeded generators and keeps its own slice, so N ranks with
per-process batch b follow the single-process run with batch N*b up to float reassociation, and
gradients are averaged by DDP. A streaming dataset (one with ``train_batches``) instead gives each rank its
own share of the data, so no process reads or decodes another's samples.

No I/O here: :func:`flashbench.training.build_trainer` wires a trainer from a configuration, and
:class:`flashbench.training.TrainingLoop` drives its steps with the progress, trackers and checkpoints
(``checkpoint.py``) that make a run resumable bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..config import TrainConfig
from . import acceleration as acc
from .data import Batch
from .guidance import cond_index, guided_nfe, guided_output
from .losses import DistillationLoss, DMDLoss, GANLoss
from .noise import student_process
from .schedule import lcm_boundary_scalings
from .solvers import Solver
from .teacher import Teacher, network, process_of
from .timesteps import TimestepDistribution


def _allow_precision_change(mixed_precision: str) -> None:
    """accelerate keeps one process-wide state and refuses an Accelerator with another precision; variants
    of one study may differ in precision, so drop that state (the process group, in PartialState, stays)."""
    from accelerate.state import AcceleratorState

    current = AcceleratorState._shared_state.get("_mixed_precision")
    if current is not None and str(current) != mixed_precision:
        AcceleratorState._reset_state(reset_partial_state=False)


def new_accelerator(mixed_precision: str, device, *, log_with=None, project_dir: str | None = None):
    """A fresh Accelerator for one trainer (on the CPU when ``device`` is); ``log_with`` and ``project_dir``
    are the trackers the host configures (:func:`flashbench.training.make_accelerator`), none by default."""
    from accelerate import Accelerator

    _allow_precision_change(mixed_precision)
    return Accelerator(mixed_precision=mixed_precision, cpu=torch.device(device).type == "cpu", log_with=log_with, project_dir=project_dir)


class NonFiniteLoss(RuntimeError):
    def __init__(self, step: int, term: str, value: float):
        self.step, self.term, self.value = step, term, value
        super().__init__(f"non-finite {term} loss ({value}) at step {step}")


@dataclass
class StepStats:
    losses: dict[str, float]
    teacher_nfe: float  # teacher network evaluations per sample (CFG counts 2)
    student_nfe: float
    phase: int


class FlashTrainer:
    """Algorithm 1's step on a teacher with a LoRA student (and a discriminator head with an adversarial
    loss). :func:`flashbench.training.build_trainer` builds one from a configuration.

    ``accelerator``: the Accelerator to train with (default: a fresh one, ``cfg``'s mixed precision on the
    teacher's device, no trackers). ``tracking``: whether the training loop
    (:class:`flashbench.training.TrainingLoop`) logs to the accelerator's trackers."""

    def __init__(
        self,
        teacher: Teacher,
        conditioning,
        solver: Solver,
        timesteps: TimestepDistribution,
        cfg: TrainConfig,
        *,
        distil: DistillationLoss | None,
        gan: GANLoss | None,
        dmd: DMDLoss | None,
        adapter_name: str,
        seed: int,
        accelerator=None,
        tracking: bool = False,
    ):
        self.teacher, self.conditioning, self.solver, self.timesteps, self.cfg = teacher, conditioning, solver, timesteps, cfg
        supports = getattr(solver, "supports", None)
        if supports is not None and not supports(self.process):
            raise ValueError(f"solver {getattr(solver, 'name', type(solver).__name__)!r} cannot integrate the teacher's {self.process.describe()} process")
        self.distil, self.gan, self.dmd = distil, gan, dmd
        self.accelerator = accelerator or new_accelerator(cfg.mixed_precision, teacher.device)
        self.tracking = tracking and bool(self.accelerator.log_with)
        self.world, self.rank = self.accelerator.num_processes, self.accelerator.process_index
        self.device = teacher.device
        self.generator = torch.Generator("cpu").manual_seed(seed)
        self.adapter_name = adapter_name
        rank = cfg.lora_rank or teacher.default_lora_rank
        self.lora_params = teacher.add_lora(adapter_name, rank)
        self.trainable_params = sum(p.numel() for p in self.lora_params)
        # the GPU path (acceleration.py): the shared denoiser gets this variant's checkpointing state before DDP
        # wraps it; the student's training forward runs through the (DDP- and/or compile-) wrapped module
        acc.configure_denoiser(teacher.denoiser, gradient_checkpointing=cfg.gradient_checkpointing)
        module = self.accelerator.prepare_model(teacher.denoiser) if self.accelerator.num_processes > 1 else teacher.denoiser
        self.student_module = acc.maybe_compile(module, cfg.compile_student)
        self.acceleration = acc.describe(self.student_module)
        self.opt = self.accelerator.prepare_optimizer(torch.optim.Adam(self.lora_params, lr=cfg.learning_rate))
        self.head = self.head_opt = None
        if gan is not None:
            ch, size = teacher.discriminator_input()
            torch.manual_seed(seed)
            self.head = gan.make_head(ch, size).to(self.device)  # the paper's head, or the authors' (the loss's option)
            self.head = self.accelerator.prepare_model(self.head) if self.accelerator.num_processes > 1 else self.head
            self.head_opt = self.accelerator.prepare_optimizer(torch.optim.Adam(self.head.parameters(), lr=cfg.disc_learning_rate))
        self.adv_t = [self.process.continuous_timestep(u) for u in cfg.adv_timesteps]
        # how the student's output is read: the teacher's parametrisation unless the study says otherwise
        self.student_process = student_process(self.process, cfg.student_prediction)

    # -- helpers -----------------------------------------------------------------------------------
    def _mine(self, x):
        """This rank's slice of a tensor (or list) drawn for the global batch."""
        b = len(x) // self.world
        return x[self.rank * b : (self.rank + 1) * b]

    def _randn(self, like: torch.Tensor) -> torch.Tensor:
        z = torch.randn((like.shape[0] * self.world, *like.shape[1:]), generator=self.generator)
        return self._mine(z).to(like.device, like.dtype)

    def _uniform(self, n: int, lo: float, hi: float) -> torch.Tensor:
        return self._mine(lo + (hi - lo) * torch.rand(n * self.world, generator=self.generator))

    def _randint(self, high: int, n: int) -> torch.Tensor:
        return self._mine(torch.randint(high, (n * self.world,), generator=self.generator))

    def local_batch(self, batch: Batch) -> Batch:
        """This rank's share of a global batch (the whole batch on one process)."""
        if self.world == 1:
            return batch
        extras = {k: self._mine(v) for k, v in batch.extras.items()}
        return Batch(self._mine(batch.images), self._mine(list(batch.prompts)), extras)

    def local_batches(self, dataset, rng: np.random.Generator, start: int = 0):
        """This rank's batches from step ``start`` on: a streaming dataset's own share of the data
        (``train_batches(rng, batch_size, rank=, world=, start=)``), else this rank's slice of each global batch."""
        if hasattr(dataset, "train_batches"):
            return dataset.train_batches(rng, self.cfg.batch_size, rank=self.rank, world=self.world, start=start)

        def sliced():
            while True:
                yield self.local_batch(dataset.train_batch(rng, self.cfg.batch_size * self.world))

        return sliced()

    @property
    def process(self):
        """The teacher's noise process: grids, noising, x0 from the network's output (``noise.py``)."""
        return process_of(self.teacher)

    def _teacher_output(self, x, t, c):
        return network(self.teacher)(x, t, c, student=False)

    @torch.no_grad()
    def teacher_target(self, z_t, start, cond, uncond, omega) -> tuple[torch.Tensor, float]:
        """Solve the PF-ODE with CFG from each sample's grid index down to 0; returns (z~0, NFE per sample)."""
        process, k = self.process, self.cfg.num_timesteps
        x = z_t.clone()
        x0_prev = torch.zeros_like(x)
        has_prev = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        evaluations = 0
        for j in range(int(start.max()), 0, -1):
            active = (start >= j).to(x.device)
            idx = active.nonzero().squeeze(1)
            # Python numbers: ints on a VP grid, floats (sigma T) on a flow grid
            t, t_next = process.grid_timestep(j, k).item(), process.grid_timestep(j - 1, k).item()
            t_prev = process.grid_timestep(j + 1, k).item() if j < k else None
            xa = x[idx]
            tt = process.timesteps(t, len(idx), x.device)
            with self.accelerator.autocast():
                out = guided_output(self._teacher_output, xa, tt, cond_index(cond, idx), cond_index(uncond, idx), omega[idx])
            x0 = process.to_x0(xa, out.to(xa.dtype), t)
            x[idx] = self.solver.step(process, xa, x0, t, t_next, x0_prev=x0_prev[idx], t_prev=t_prev, has_prev=has_prev[idx])
            x0_prev[idx] = x0
            has_prev[idx] = True
            evaluations += guided_nfe(cond) * len(idx)
        return x, evaluations / x.shape[0]

    def _check_finite(self, iteration: int, losses: dict[str, float]) -> None:
        """Stop on a NaN/inf loss term before any update; every process stops together (a process that
        stopped alone would leave the others waiting in the gradient all-reduce)."""
        bad = next(((term, v) for term, v in losses.items() if not math.isfinite(v)), None)
        if self.world > 1:
            flag = torch.tensor([0.0 if bad is None else 1.0], device=self.device)
            if self.accelerator.reduce(flag, reduction="sum").item() > 0 and bad is None:
                bad = ("(on another process)", float("nan"))
        if bad is not None:
            raise NonFiniteLoss(iteration, *bad)

    # -- one step ------------------------------------------------------------------------------------
    def counted(self, iteration: int) -> int:
        """The iteration the phases (and pi's mode weights) read. ``phase_counting = "optimizer_calls"``: the
        authors' counter advances on the student's and on the discriminator's update, so with a discriminator
        the phases switch after phase_length / 2 batches."""
        if self.cfg.phase_counting == "optimizer_calls" and self.gan is not None:
            return 2 * iteration
        return iteration

    def step(self, batch, iteration: int) -> StepStats:
        cfg, process, teacher, net = self.cfg, self.process, self.teacher, network(self.teacher)
        counted = self.counted(iteration)
        phase = self.timesteps.phase(counted)
        lam_adv, lam_dmd = cfg.lambda_adv[phase], cfg.lambda_dmd[phase]
        with torch.no_grad():
            z0 = teacher.encode(batch.images.to(self.device))
            cond, uncond = self.conditioning.prepare(teacher, batch.prompts, batch.extras)
        b = z0.shape[0]
        lo, hi = (cfg.guidance_fixed, cfg.guidance_fixed) if cfg.guidance_fixed > 0 else (cfg.guidance_min, cfg.guidance_max)
        if cfg.draws == "per_batch":  # the authors' code: one omega and one start index for the whole batch
            omega = self._uniform(1, lo, hi).repeat(b).to(self.device)  # one per process: its batch, as theirs
            start = self._mine(self.timesteps.sample(self.generator, self.world, counted)).repeat(b)
        else:
            omega = self._uniform(b, lo, hi).to(self.device)
            start = self._mine(self.timesteps.sample(self.generator, b * self.world, counted))
        t_i = process.grid_timestep(start, cfg.num_timesteps).to(self.device)
        eps = self._randn(z0)
        z_t = process.add_noise(z0, eps, t_i)
        top = (start == cfg.num_timesteps).to(self.device).reshape(-1, *([1] * (z0.ndim - 1)))
        z_t = torch.where(top, eps, z_t)  # the top of the grid is pure noise, as at inference

        target, teacher_nfe = self.teacher_target(z_t, start, cond, uncond, omega)
        student_nfe = 1.0
        losses: dict[str, float] = {}
        with self.accelerator.autocast():
            out_s = net(z_t, t_i, cond, student=True, module=self.student_module)
        x0_s = self.student_process.to_x0(z_t, out_s.float().to(z_t.dtype), t_i)  # the x0-parametrisation of the student
        if cfg.lcm_boundary:  # the authors' code: c_skip z_t + c_out x0 (LCM); ~x0 on the K-grid, see lcm_boundary_scalings
            c_skip, c_out = lcm_boundary_scalings(t_i, x0_s)
            x0_s = c_skip * z_t + c_out * x0_s
        total = torch.zeros((), device=self.device)
        if self.distil is not None:
            l_distil = self.distil(x0_s, target, teacher.decode)
            total = total + l_distil
            losses["distil"] = l_distil.item()

        feats_fake = real_noisy = t_adv = None
        if self.gan is not None:
            t_adv = torch.tensor(self.adv_t)[self._randint(len(self.adv_t), b)].to(self.device)
            eps_adv = self._randn(z0)
            fake_noisy = process.add_noise(x0_s, eps_adv, t_adv)
            real_noisy = process.add_noise(z0, eps_adv, t_adv)  # the same noise for real and fake (Sec. 4.3)
            with self.accelerator.autocast():
                feats_fake = teacher.encoder_features(fake_noisy if lam_adv > 0 else fake_noisy.detach(), t_adv, cond)
            if lam_adv > 0:
                l_adv = self.gan.generator(self.head(feats_fake))
                total = total + lam_adv * l_adv
                losses["adv"] = l_adv.item()

        if self.dmd is not None and lam_dmd > 0:
            t_dmd = process.training_timestep(self._randint(process.num_train_timesteps, b)).to(self.device)
            with torch.no_grad():
                zz = process.add_noise(x0_s.detach(), self._randn(z0), t_dmd)
                omega_dmd = omega
                if cfg.draws == "per_batch":  # the authors' DMD draws its own guidance scale
                    omega_dmd = self._uniform(1, lo, hi).repeat(b).to(self.device)
                with self.accelerator.autocast():
                    out_real = guided_output(self._teacher_output, zz, t_dmd, cond, uncond, omega_dmd)
                    out_fake = net(zz, t_dmd, cond, student=True)
                x0_real = process.to_x0(zz, out_real.float().to(zz.dtype), t_dmd)
                x0_fake = self.student_process.to_x0(zz, out_fake.float().to(zz.dtype), t_dmd)
            l_dmd = self.dmd(x0_s, x0_real, x0_fake)
            total = total + lam_dmd * l_dmd
            losses["dmd"] = l_dmd.item()
            teacher_nfe += guided_nfe(cond)
            student_nfe += 1

        self._check_finite(iteration, losses)
        if total.requires_grad:
            self.opt.zero_grad(set_to_none=True)
            self.accelerator.backward(total)
            self.opt.step()

        if self.gan is not None:
            self.gan.before_critic_step(self.head)  # e.g. WGAN's weight clipping, before the critic's forward
            with torch.no_grad(), self.accelerator.autocast():
                feats_real = teacher.encoder_features(real_noisy, t_adv, cond)
            l_d = self.gan.discriminator(self.head(feats_real.detach()), self.head(feats_fake.detach()))
            self._check_finite(iteration, {"discriminator": l_d.item()})
            self.head_opt.zero_grad(set_to_none=True)
            self.accelerator.backward(l_d)
            self.head_opt.step()
            losses["disc"] = l_d.item()
        losses["total"] = float(total.item())
        return StepStats(losses, teacher_nfe, student_nfe, phase)

    def close(self) -> None:
        """Remove the student's adapter from the teacher."""
        self.teacher.remove_lora(self.adapter_name)
