"""The contract every teacher plugin must meet, as tests a teacher's author inherits.

``TeacherContract`` is a pytest base class (its name does not start with ``Test``, so pytest does not
collect it by itself). Subclass it in a class whose name starts with ``Test`` and implement
:meth:`TeacherContract.make_teacher`; every ``test_*`` method below then runs against your teacher.
What the contract checks is what :mod:`flashbench.method` relies on:

* shapes and dtypes: ``latent_shape``, ``eps``, ``encode``/``decode``, ``encode_prompts`` and
  ``null_condition`` (dicts of tensors with the batch first, the same keys and shapes, so CFG can batch
  them), ``encoder_features`` against ``discriminator_input``;
* determinism of ``eps``;
* the student is the teacher plus LoRA: equal to the teacher before training (LoRA B starts at zero);
  ``add_lora`` returns the only trainable parameters; a backward pass of a loss on the student's eps and
  on a :class:`~flashbench.method.discriminator.DiscriminatorHead` over ``encoder_features`` reaches the
  LoRA and the head and no base weight; Adam steps on the LoRA leave every teacher weight untouched,
  ``eps(student=False)`` unchanged and ``eps(student=True)`` changed; ``remove_lora`` restores the pure
  teacher;
* export: ``save_lora`` writes a folder that the family's stock pipeline (``teacher.pipeline()``)
  loads with ``load_lora_weights`` and that reproduces the trained student exactly.

The teacher from :meth:`~TeacherContract.make_teacher` is built once per test class and shared by its
tests; each test leaves it as it found it (its adapters are removed, even when the test fails). Use a
tiny model: the whole contract takes a few seconds on a CPU with a teacher of a few MB.

Example (``tests/test_my_teacher.py`` of a plugin)::

    from flashbench.testing import TeacherContract, tiny_text_prompts

    from my_flashbench_plugin.teacher import MyTeacherConfig, build


    class TestMyTeacher(TeacherContract):
        lora_rank = 4  # small adapters keep the contract fast

        def make_teacher(self):
            return build(MyTeacherConfig(path="tests/data/tiny-model"), device="cpu")

        def prompts(self):
            return tiny_text_prompts(2)

Override :meth:`~TeacherContract.extras` for families with extra inputs (masks, low-res images),
:meth:`~TeacherContract.timesteps` to choose the probed timesteps, and
:meth:`~TeacherContract.pipeline_denoiser` when the family's pipeline keeps its denoiser under a name
other than ``unet`` or ``transformer``.
"""
from __future__ import annotations

import contextlib
import itertools
from pathlib import Path
from typing import Iterator, Mapping

import pytest
import torch
from torch import nn

from .method.discriminator import DiscriminatorHead
from .method.teacher import Teacher

__all__ = ["TeacherContract", "tiny_text_prompts", "flash_training_smoke", "adapter_names"]

_TINY_PROMPTS = (
    "a red digit one",
    "a photo of a cat sitting on a sofa",
    "a blue digit seven",
    "an astronaut riding a horse",
)
_adapter_ids = itertools.count()


def tiny_text_prompts(n: int = 2) -> list[str]:
    """``n`` short, distinct-looking prompts (cycled past four) for probing a text-conditioned teacher."""
    return [_TINY_PROMPTS[i % len(_TINY_PROMPTS)] for i in range(n)]


def _teacher_modules(teacher: Teacher) -> dict[str, nn.Module]:
    """The denoiser and every other network the teacher holds as an attribute (text encoder, VAE, ...)."""
    found: dict[str, nn.Module] = {"denoiser": teacher.denoiser}
    seen = {id(teacher.denoiser)}
    for name, value in sorted(vars(teacher).items()):
        if isinstance(value, nn.Module) and id(value) not in seen:
            found[name] = value
            seen.add(id(value))
    return found


def _base_parameters(teacher: Teacher, lora: list[nn.Parameter]) -> dict[str, nn.Parameter]:
    lora_ids = {id(p) for p in lora}
    return {
        f"{mname}.{pname}": p
        for mname, module in _teacher_modules(teacher).items()
        for pname, p in module.named_parameters()
        if id(p) not in lora_ids
    }


def _snapshot(teacher: Teacher, lora: list[nn.Parameter]) -> dict[str, torch.Tensor]:
    """Copies of every non-LoRA weight and buffer of the teacher's networks."""
    state = {name: p.detach().clone() for name, p in _base_parameters(teacher, lora).items()}
    for mname, module in _teacher_modules(teacher).items():
        for bname, b in module.named_buffers():
            state[f"{mname}.{bname}"] = b.detach().clone()
    return state


def adapter_names(module: nn.Module) -> set[str]:
    """Names of the peft adapters attached to ``module``."""
    return set(getattr(module, "peft_config", None) or {})


class TeacherContract:
    """Base class of a teacher plugin's contract tests; see the module docstring for how to use it."""

    #: rank of the adapters the contract adds (small: the contract is about behaviour, not capacity)
    lora_rank: int = 4
    #: Adam learning rate of the contract's training steps; large so one step visibly moves the student
    learning_rate: float = 1e-2
    #: tolerances of "equal" comparisons of network outputs
    rtol: float = 1e-5
    atol: float = 1e-5

    # --- hooks for the subclass -----------------------------------------------------------------------
    def make_teacher(self) -> Teacher:
        """Build the teacher under test (called once per test class)."""
        raise NotImplementedError("subclasses of TeacherContract implement make_teacher()")

    def prompts(self) -> list[str]:
        """A few prompts; their number is the batch size of the probes."""
        return tiny_text_prompts(2)

    def extras(self) -> Mapping | None:
        """The family's extra conditioning inputs for :meth:`prompts` (masks, low-res images), if any."""
        return None

    def timesteps(self, teacher: Teacher, n: int) -> torch.Tensor:
        """(n,) timesteps of the teacher's training grid (its noise process's), spread from full noise to low noise."""
        process = teacher.noise_process
        top = process.num_train_timesteps - 1
        index = torch.linspace(top, top // 10, n).round().long()
        return process.training_timestep(index).to(teacher.device)

    def pipeline_denoiser(self, pipe) -> nn.Module:
        """The denoiser of the family's pipeline (where ``load_lora_weights`` puts the adapter)."""
        for attr in ("unet", "transformer", "prior"):
            module = getattr(pipe, attr, None)
            if isinstance(module, nn.Module):
                return module
        raise AssertionError(f"{type(pipe).__name__} has no unet/transformer; override pipeline_denoiser()")

    def load_lora_into(self, pipe, folder: Path) -> None:
        """Load the exported student into the family's pipeline (default: diffusers' ``load_lora_weights``;
        a family whose pipeline has none, e.g. PixArt-alpha, loads its peft adapter here)."""
        pipe.load_lora_weights(str(folder))

    # --- fixtures and helpers ---------------------------------------------------------------------------
    @pytest.fixture(scope="class")
    @classmethod
    def teacher(cls, request) -> Teacher:
        # request.cls: the concrete Test... subclass (a classmethod fixture may be bound to the base class)
        teacher = request.cls().make_teacher()
        assert isinstance(teacher, Teacher), f"make_teacher() returned {type(teacher).__name__}, not a flashbench Teacher"
        return teacher

    @pytest.fixture
    def inputs(self, teacher):
        """(x, t, cond): seeded latents, timesteps and the conditioning of :meth:`prompts`."""
        prompts = self.prompts()
        g = torch.Generator("cpu").manual_seed(0)
        x = torch.randn((len(prompts), *teacher.latent_shape), generator=g).to(teacher.device, teacher.dtype)
        t = self.timesteps(teacher, len(prompts))
        cond = teacher.encode_prompts(prompts, self.extras())
        return x, t, cond

    @contextlib.contextmanager
    def lora(self, teacher: Teacher) -> Iterator[tuple[str, list[nn.Parameter]]]:
        """A fresh adapter, removed on exit; yields (name, trainable parameters)."""
        name = f"contract{next(_adapter_ids)}"
        params = teacher.add_lora(name, self.lora_rank)
        try:
            yield name, params
        finally:
            teacher.remove_lora(name)

    def train_lora(self, teacher: Teacher, params, x, t, cond, steps: int = 1) -> None:
        """``steps`` Adam steps of the student's eps towards a fixed random target."""
        target = torch.randn(x.shape, generator=torch.Generator("cpu").manual_seed(1)).to(x.device, x.dtype)
        opt = torch.optim.Adam(params, lr=self.learning_rate)
        for _ in range(steps):
            loss = (teacher.eps(x, t, cond, student=True).float() - target.float()).square().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        opt.zero_grad(set_to_none=True)

    def assert_same(self, actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
        torch.testing.assert_close(actual, expected, rtol=self.rtol, atol=self.atol, msg=lambda m: f"{what}: {m}")

    def assert_differs(self, actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
        gap = (actual.float() - expected.float()).abs().max().item()
        assert gap > 10 * self.atol, f"{what}: outputs are equal (max difference {gap:.3g})"

    # --- shapes and dtypes ---------------------------------------------------------------------------------
    def test_latent_shape(self, teacher):
        shape = teacher.latent_shape
        assert isinstance(shape, tuple) and len(shape) == 3, f"latent_shape must be (C, H, W), got {shape!r}"
        assert all(isinstance(s, int) and s > 0 for s in shape), f"latent_shape must hold positive ints, got {shape!r}"

    @torch.no_grad()
    def test_eps_shape_and_dtype(self, teacher, inputs):
        x, t, cond = inputs
        for student in (False, True):
            eps = teacher.eps(x, t, cond, student=student)
            assert eps.shape == x.shape, f"eps(student={student}) has shape {tuple(eps.shape)}, latents {tuple(x.shape)}"
            assert eps.dtype == x.dtype, f"eps(student={student}) is {eps.dtype}, latents {x.dtype}"
            assert torch.isfinite(eps).all(), f"eps(student={student}) is not finite"

    def test_conditioning_dicts(self, teacher):
        prompts = self.prompts()
        cond = teacher.encode_prompts(prompts, self.extras())
        null = teacher.null_condition(prompts, self.extras())
        for what, c in (("encode_prompts", cond), ("null_condition", null)):
            assert isinstance(c, Mapping) and c, f"{what} must return a non-empty dict of tensors"
            for key, value in c.items():
                assert isinstance(value, torch.Tensor), f"{what}[{key!r}] is a {type(value).__name__}, not a tensor"
                assert value.shape[0] == len(prompts), f"{what}[{key!r}] has batch {value.shape[0]}, expected {len(prompts)}"
                assert not value.requires_grad, f"{what}[{key!r}] carries a graph; conditioning is computed without grad"
        # CFG concatenates cond and null along the batch: same keys, same per-sample shapes
        assert set(cond) == set(null), f"encode_prompts keys {sorted(cond)} != null_condition keys {sorted(null)}"
        for key in cond:
            assert cond[key].shape == null[key].shape, f"{key!r}: cond {tuple(cond[key].shape)} vs null {tuple(null[key].shape)}"

    @torch.no_grad()
    def test_encode_decode_round_trip_shapes(self, teacher, inputs):
        x, _, _ = inputs
        images = teacher.decode(x)
        assert images.ndim == 4 and images.shape[:2] == (x.shape[0], 3), f"decode gave {tuple(images.shape)}, expected (B, 3, H, W)"
        latents = teacher.encode(images.clamp(-1, 1))
        assert latents.shape == x.shape, f"encode(decode(z)) has shape {tuple(latents.shape)}, z {tuple(x.shape)}"
        assert teacher.decode(latents).shape == images.shape

    # --- determinism -----------------------------------------------------------------------------------
    @torch.no_grad()
    def test_eps_is_deterministic(self, teacher, inputs):
        x, t, cond = inputs
        self.assert_same(teacher.eps(x, t, cond, student=False), teacher.eps(x, t, cond, student=False), "eps twice")
        again = teacher.encode_prompts(self.prompts(), self.extras())
        for key in cond:
            self.assert_same(again[key], cond[key], f"encode_prompts twice, {key!r}")

    # --- the discriminator's input ---------------------------------------------------------------------
    @torch.no_grad()
    def test_discriminator_input_matches_encoder_features(self, teacher, inputs):
        x, t, cond = inputs
        channels, size = teacher.discriminator_input()
        feats = teacher.encoder_features(x, t, cond)
        assert feats.shape == (x.shape[0], channels, size, size), (
            f"encoder_features has shape {tuple(feats.shape)}; discriminator_input() says ({channels}, {size}, {size})"
        )
        scores = DiscriminatorHead(channels, size).to(teacher.device)(feats)
        assert scores.shape == (x.shape[0],)

    def test_encoder_features_differentiable_in_input(self, teacher, inputs):
        x, t, cond = inputs
        x = x.detach().clone().requires_grad_(True)
        feats = teacher.encoder_features(x, t, cond)
        assert feats.requires_grad, "encoder_features does not depend differentiably on its input"
        feats.float().square().mean().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
        touched = [n for n, p in _base_parameters(teacher, []).items() if p.grad is not None]
        assert not touched, f"encoder_features left gradients on teacher weights: {touched[:5]}"

    # --- the student: teacher + LoRA ---------------------------------------------------------------------
    def test_add_lora_returns_trainable_parameters(self, teacher):
        before = teacher.trainable_parameters()
        with self.lora(teacher) as (_, params):
            assert params, "add_lora returned no parameters"
            assert all(isinstance(p, nn.Parameter) and p.requires_grad for p in params), "add_lora returned frozen parameters"
            owned = {id(p) for p in teacher.denoiser.parameters()}
            assert all(id(p) in owned for p in params), "add_lora returned parameters that are not the denoiser's"
            assert teacher.trainable_parameters() == before + sum(p.numel() for p in params), (
                "the denoiser has trainable parameters besides the adapter's"
            )
            frozen = [n for n, p in _base_parameters(teacher, params).items() if p.requires_grad]
            assert not frozen, f"base weights require grad: {frozen[:5]}"

    @torch.no_grad()
    def test_student_equals_teacher_before_training(self, teacher, inputs):
        x, t, cond = inputs
        pure = teacher.eps(x, t, cond, student=True)
        with self.lora(teacher):
            self.assert_same(teacher.eps(x, t, cond, student=True), pure, "student at init vs teacher")
            self.assert_same(teacher.eps(x, t, cond, student=False), pure, "eps(student=False) with an adapter")

    def test_gradients_reach_only_lora_and_head(self, teacher, inputs):
        x, t, cond = inputs
        channels, size = teacher.discriminator_input()
        head = DiscriminatorHead(channels, size).to(teacher.device)
        process = teacher.noise_process
        noise = torch.randn(x.shape, generator=torch.Generator("cpu").manual_seed(2)).to(x.device, x.dtype)
        with self.lora(teacher) as (_, params):
            # as in a training step: the student's x0 (through the noise process), re-noised, through the frozen
            # encoder into the head
            out = teacher.output(x, t, cond, student=True)
            x0 = process.to_x0(x, out, t)
            t_adv = torch.full_like(t, process.continuous_timestep(0.5))
            feats = teacher.encoder_features(process.add_noise(x0, noise, t_adv), t_adv, cond)
            loss = out.float().square().mean() + head(feats).square().mean()
            loss.backward()
            missing = [i for i, p in enumerate(params) if p.grad is None]
            assert not missing, f"{len(missing)} of {len(params)} LoRA parameters got no gradient"
            assert any(p.grad.abs().sum() > 0 for p in params), "all LoRA gradients are zero"
            assert all(p.grad is not None for p in head.parameters()), "the discriminator head got no gradient"
            leaked = [n for n, p in _base_parameters(teacher, params).items() if p.grad is not None or p.requires_grad]
            assert not leaked, f"teacher weights have gradients or require grad: {leaked[:5]}"

    def test_lora_training_leaves_teacher_unchanged(self, teacher, inputs):
        x, t, cond = inputs
        with torch.no_grad():
            pure = teacher.eps(x, t, cond, student=False)
        with self.lora(teacher) as (_, params):
            before = _snapshot(teacher, params)
            self.train_lora(teacher, params, x, t, cond, steps=2)
            after = _snapshot(teacher, params)
            assert before.keys() == after.keys()
            changed = [k for k in before if not torch.equal(before[k], after[k])]
            assert not changed, f"Adam on the LoRA changed teacher weights: {changed[:5]}"
            with torch.no_grad():
                self.assert_same(teacher.eps(x, t, cond, student=False), pure, "eps(student=False) after LoRA training")
                self.assert_differs(teacher.eps(x, t, cond, student=True), pure, "eps(student=True) after LoRA training")

    def test_remove_lora_restores_teacher(self, teacher, inputs):
        x, t, cond = inputs
        with torch.no_grad():
            pure = teacher.eps(x, t, cond, student=True)
        trainable = teacher.trainable_parameters()
        with self.lora(teacher) as (name, params):
            self.train_lora(teacher, params, x, t, cond)
        owned = {id(p) for p in teacher.denoiser.parameters()}
        assert not any(id(p) in owned for p in params), f"remove_lora({name!r}) left the adapter's parameters in the denoiser"
        assert teacher.trainable_parameters() == trainable
        with torch.no_grad():
            self.assert_same(teacher.eps(x, t, cond, student=True), pure, "eps(student=True) after remove_lora")
            self.assert_same(teacher.eps(x, t, cond, student=False), pure, "eps(student=False) after remove_lora")

    # --- export --------------------------------------------------------------------------------------------
    def test_save_lora_loads_into_family_pipeline(self, teacher, inputs, tmp_path):
        x, t, cond = inputs
        with self.lora(teacher) as (name, params):
            self.train_lora(teacher, params, x, t, cond)
            with torch.no_grad():
                student = teacher.eps(x, t, cond, student=True)
            folder = Path(teacher.save_lora(name, tmp_path / "lora"))
            assert folder.is_dir() and any(folder.iterdir()), f"save_lora wrote nothing to {folder}"
            pipe = teacher.pipeline()
            denoiser = self.pipeline_denoiser(pipe)
            existing = adapter_names(denoiser)
            self.load_lora_into(pipe, folder)
            loaded = adapter_names(denoiser) - existing
            try:
                with torch.no_grad():
                    reloaded = teacher.eps(x, t, cond, student=True, module=denoiser)
                self.assert_same(reloaded, student, "pipeline with the saved LoRA vs the in-memory student")
            finally:
                if denoiser is teacher.denoiser:  # the pipeline shares the teacher's weights: take its adapter off
                    for adapter in loaded:
                        teacher.remove_lora(adapter)


def flash_training_smoke(teacher: Teacher, batches, *, num_timesteps: int = 8, lora_rank: int = 4, lr: float = 1e-3,
                         guidance: tuple[float, float] = (1.5, 3.0), adapter_name: str = "smoke", seed: int = 0,
                         train_options: dict | None = None):
    """Run ``len(batches)`` steps of the full method (MSE + LSGAN + DMD, flash pi with one-iteration phases,
    so every loss term is active from the second step) on ``teacher``; returns ``(trainer, stats)``.
    ``train_options``: other :class:`flashbench.config.TrainConfig` fields (``gradient_checkpointing``, ...).

    ``batches`` are :class:`flashbench.method.data.Batch` objects (images in [-1, 1], prompts, extras).
    The adapter stays active so the caller can sample and export; call ``trainer.close()`` afterwards.
    """
    from .config import TrainConfig
    from .method.losses import LSGAN, DMDLoss, MSEDistillation
    from .method.solvers import DPMSolverPP2M
    from .method.timesteps import FlashMixture
    from .method.trainer import FlashTrainer

    class _Text:
        def prepare(self, t, prompts, extras=None):
            return t.encode_prompts(list(prompts), extras), t.null_condition(list(prompts), extras)

    steps = len(batches)
    cfg = TrainConfig(num_timesteps=num_timesteps, phase_length=1, iterations=steps, batch_size=len(batches[0].prompts),
                      learning_rate=lr, disc_learning_rate=lr, guidance_min=guidance[0], guidance_max=guidance[1],
                      lora_rank=lora_rank, **(train_options or {}))
    torch.manual_seed(seed)
    trainer = FlashTrainer(teacher, _Text(), DPMSolverPP2M(), FlashMixture(num_timesteps, 1, 4), cfg,
                           distil=MSEDistillation(), gan=LSGAN(), dmd=DMDLoss(), adapter_name=adapter_name, seed=seed)
    stats = [trainer.step(batch, i) for i, batch in enumerate(batches)]
    return trainer, stats
