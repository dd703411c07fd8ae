"""Contract tests a plugin's author inherits: what the host relies on, for teachers, datasets, evaluators and
timestep distributions.

Each contract is a pytest base class (its name does not start with ``Test``, so pytest does not collect it by
itself). Subclass it in a class whose name starts with ``Test`` and implement its factory hook; every
``test_*`` method then runs against your component. pytest is needed: install flashbench's ``test`` extra
(``pip install "flashbench[test]"``) or add pytest to your plugin's test dependencies.

* :class:`TeacherContract` -- ``make_teacher()`` (or ``build_teacher(options)`` and ``teacher_options()``);
* :class:`DatasetContract` -- ``make_dataset()``;
* :class:`EvaluatorContract` -- ``make_evaluator()`` (and ``make_dataset()`` for its reference data);
* :class:`TimestepDistributionContract` -- ``make_distribution(num_timesteps, phase_length, num_phases)``.

What :class:`TeacherContract` checks is what :mod:`flashbench.method` relies on:

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
  loads with ``load_lora_weights`` and that reproduces the trained student exactly;
* opt-in, by class attribute (skipped, saying how to opt in, until set): ``missing_weights`` (offline builds
  fail with a one-line :class:`~flashbench.errors.MissingWeightsError`), ``stock_pipeline`` (the saved student,
  loaded from disk into a fresh stock pipeline, samples as the in-memory one does) and ``bf16`` (the full
  method trains on a bfloat16 teacher; marked ``gpu``).

The teacher from :meth:`~TeacherContract.make_teacher` is built once per test class and shared by its
tests; each test leaves it as it found it (its adapters are removed, even when the test fails). Use a
tiny model: the whole contract takes a few seconds on a CPU with a teacher of a few MB.

Example (``tests/test_my_teacher.py`` of a plugin)::

    from flashbench.testing import MissingWeights, TeacherContract, tiny_text_prompts

    from my_flashbench_plugin.teacher import MyTeacherConfig, build


    class TestMyTeacher(TeacherContract):
        lora_rank = 4  # small adapters keep the contract fast
        missing_weights = ("my-org/not-here", MissingWeights({}, "my-org/my-default-model"))
        stock_pipeline = "StableDiffusionPipeline"

        def build_teacher(self, options, *, device="cpu"):
            return build(MyTeacherConfig(**options), device=device)

        def teacher_options(self):
            return {"path": "tests/data/tiny-model"}

        def prompts(self):
            return tiny_text_prompts(2)

Override :meth:`~TeacherContract.extras` for families with extra inputs (masks, low-res images),
:meth:`~TeacherContract.timesteps` to choose the probed timesteps,
:meth:`~TeacherContract.pipeline_denoiser` when the family's pipeline keeps its denoiser under a name
other than ``unet`` or ``transformer``, and :meth:`~TeacherContract.load_lora_into` when the stock pipeline
has no ``load_lora_weights``. ``docs/plugins.md`` lists every hook.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np
import pytest
import torch
from torch import nn

from .method.data import Batch, Dataset
from .method.discriminator import DiscriminatorHead
from .method.evaluation import Evaluator
from .method.teacher import Teacher
from .method.timesteps import TimestepDistribution

__all__ = [
    "TeacherContract",
    "DatasetContract",
    "EvaluatorContract",
    "TimestepDistributionContract",
    "RandomImages",
    "MissingWeights",
    "tiny_text_prompts",
    "flash_training_smoke",
    "adapter_names",
]

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
    return {f"{mname}.{pname}": p for mname, module in _teacher_modules(teacher).items() for pname, p in module.named_parameters() if id(p) not in lora_ids}


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


@dataclass(frozen=True)
class MissingWeights:
    """A build :class:`TeacherContract` checks is refused offline: the teacher built with ``options`` (study
    options) while the Hugging Face Hub is unreachable must raise a one-line
    :class:`~flashbench.errors.MissingWeightsError` naming ``source`` and, unless None, the ``option`` to set."""

    options: Mapping
    source: str
    option: str | None = "path"


class TeacherContract:
    """Base class of a teacher plugin's contract tests; see the module docstring for how to use it."""

    #: rank of the adapters the contract adds (small: the contract is about behaviour, not capacity)
    lora_rank: int = 4
    #: Adam learning rate of the contract's training steps; large so one step visibly moves the student
    learning_rate: float = 1e-2
    #: tolerances of "equal" comparisons of network outputs
    rtol: float = 1e-5
    atol: float = 1e-5

    # --- opt-in checks (each needs the hook named; a check not opted into is skipped, saying how to opt in) ---
    #: builds refused offline (:meth:`build_teacher`): :class:`MissingWeights`, or a hub id ``s`` meaning
    #: ``MissingWeights({source_option: s}, s, source_option)``; each is a test of its own
    missing_weights: tuple = ()
    #: the teacher option naming its weights (the ``str`` shorthand of :attr:`missing_weights`)
    source_option: str = "path"
    #: the family's stock diffusers pipeline class, or its name in ``diffusers``: the exported student, loaded
    #: from disk into a fresh one (:meth:`load_stock_pipeline`), must sample as the in-memory student does
    stock_pipeline: type | str | None = None
    #: the largest difference allowed between those samples, and the least the LoRA must change them by
    stock_atol: float = 1e-5
    stock_min_change: float = 1e-4
    #: train the full method on a bfloat16 teacher (:meth:`build_teacher` with ``dtype = "bfloat16"``) on
    #: :attr:`bf16_device`; marked ``gpu``, skipped where that device is CUDA and there is none
    bf16: bool = False
    bf16_device: str = "cuda"
    #: the networks that must hold bfloat16 weights there ("denoiser", or the teacher's attribute names)
    bf16_modules: tuple[str, ...] = ("denoiser",)

    # --- hooks for the subclass -----------------------------------------------------------------------
    def make_teacher(self) -> Teacher:
        """Build the teacher under test (called once per test class); default:
        ``build_teacher(teacher_options())``."""
        return self.build_teacher(self.teacher_options())

    def build_teacher(self, options: Mapping, *, device: str = "cpu") -> Teacher:
        """Build the teacher from exactly these study options, as a study would (the offline check passes each
        :attr:`missing_weights` entry's, the bf16 check ``{**teacher_options(), "dtype": "bfloat16"}``)."""
        raise NotImplementedError("subclasses of TeacherContract implement make_teacher(), or build_teacher() and teacher_options()")

    def teacher_options(self) -> dict:
        """The study options of the tiny model under test (e.g. ``{"path": str(folder)}``)."""
        return {}

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

    def stock_pipeline_kwargs(self, teacher: Teacher) -> dict:
        """Extra ``from_pretrained`` arguments of the stock pipeline (components it cannot load by itself)."""
        return {}

    def load_stock_pipeline(self, teacher: Teacher):
        """A fresh stock pipeline from the teacher's folder (``teacher.source``) with the few-step scheduler of
        ``teacher.pipeline()`` (the same class and config)."""
        cls = self.stock_pipeline
        if isinstance(cls, str):
            import diffusers

            cls = getattr(diffusers, cls)
        pipe = cls.from_pretrained(str(teacher.source), **self.stock_pipeline_kwargs(teacher))
        few_step = teacher.pipeline().scheduler
        pipe.scheduler = type(few_step).from_config(few_step.config)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def stock_sample(self, pipe, teacher: Teacher) -> torch.Tensor:
        """The pipeline's 4-step sample of :meth:`prompts` without CFG, images in [0, 1], from seed 0 (override
        for pipelines that take other arguments: extra inputs, sigmas, sizes)."""
        timesteps = teacher.noise_process.sampling_timesteps(4)
        out = pipe(self.prompts(), timesteps=timesteps, guidance_scale=0.0, generator=torch.Generator().manual_seed(0), output_type="pt").images
        assert pipe.scheduler.timesteps.tolist() == timesteps, f"the pipeline ran {pipe.scheduler.timesteps.tolist()}, not {timesteps}"
        return out

    def batch_extras(self, images: torch.Tensor, seed: int) -> dict:
        """The extras of a training batch of ``images`` (default: :meth:`extras`)."""
        return dict(self.extras() or {})

    def smoke_options(self) -> dict:
        """Keyword arguments of :func:`flash_training_smoke` in the bf16 check (``lr``, ``guidance``)."""
        return {}

    def check_bf16_teacher(self, teacher: Teacher) -> None:
        """Family-specific checks of the bf16 teacher, before training (default: none)."""

    # --- fixtures and helpers ---------------------------------------------------------------------------
    def pytest_generate_tests(self, metafunc):
        """One test per :attr:`missing_weights` entry (one skipped test when there is none)."""
        if "missing" in metafunc.fixturenames:
            cases = [m if isinstance(m, MissingWeights) else MissingWeights({self.source_option: m}, m, self.source_option) for m in self.missing_weights]
            if not cases:
                cases = [pytest.param(None, marks=pytest.mark.skip(reason="opt-in: list missing hub ids in missing_weights"))]
            metafunc.parametrize("missing", cases, ids=lambda m: m.source if isinstance(m, MissingWeights) else "none")

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
            assert teacher.trainable_parameters() == before + sum(p.numel() for p in params), "the denoiser has trainable parameters besides the adapter's"
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

    # --- opt-in: the stock pipeline, offline, bf16 ---------------------------------------------------------
    def test_exported_student_in_a_fresh_stock_pipeline(self, teacher, inputs, tmp_path):
        """Set :attr:`stock_pipeline`: the saved student, loaded from disk into a fresh stock pipeline, samples as the
        in-memory student does, and differs from the plain teacher's samples."""
        if self.stock_pipeline is None:
            pytest.skip("opt-in: set stock_pipeline to the family's diffusers pipeline class")
        x, t, cond = inputs
        with self.lora(teacher) as (name, params):
            self.train_lora(teacher, params, x, t, cond, steps=2)
            folder = Path(teacher.save_lora(name, tmp_path / "lora"))
            in_memory = self.stock_sample(teacher.pipeline(), teacher)
        fresh = self.load_stock_pipeline(teacher)
        plain = self.stock_sample(fresh, teacher)
        self.load_lora_into(fresh, folder)
        reloaded = self.stock_sample(fresh, teacher)
        assert reloaded.shape == in_memory.shape and torch.isfinite(reloaded).all()
        torch.testing.assert_close(
            reloaded, in_memory, rtol=0, atol=self.stock_atol, msg=lambda m: f"the stock pipeline with the saved student vs the in-memory student: {m}"
        )
        change = (reloaded - plain).abs().max().item()
        assert change > self.stock_min_change, f"the student changes the samples by only {change:.3g}: the check would be vacuous"

    def test_missing_weights_offline_are_one_line_errors(self, missing, monkeypatch):
        """Set :attr:`missing_weights`: with the Hub unreachable, a build from weights that are not here fails at once
        with a one-line error naming them (and the option to set), never a traceback from deep in a download."""
        import huggingface_hub.constants

        from .errors import MissingWeightsError

        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read from the variable at import
        with pytest.raises(MissingWeightsError) as info:
            self.build_teacher(dict(missing.options))
        message = str(info.value)
        assert "\n" not in message, f"the error takes several lines: {message!r}"
        assert missing.source in message, f"the error does not name {missing.source!r}: {message}"
        if missing.option is not None:
            assert missing.option in message, f"the error does not name the option {missing.option!r}: {message}"

    @pytest.mark.gpu
    def test_bf16_training_steps(self):
        """Set :attr:`bf16`: the full method trains on a bfloat16 teacher: finite losses with every term, float32
        adapters, base weights untouched, finite x0 at full noise and finite few-step samples."""
        from .method.data import Batch
        from .method.sampling import student_sample

        if not self.bf16:
            pytest.skip("opt-in: set bf16 = True (and implement build_teacher and teacher_options)")
        device = torch.device(self.bf16_device)
        if device.type == "cuda" and not torch.cuda.is_available():
            pytest.skip("needs CUDA")
        teacher = self.build_teacher({**self.teacher_options(), "dtype": "bfloat16"}, device=self.bf16_device)
        for name in self.bf16_modules:
            module = teacher.denoiser if name == "denoiser" else getattr(teacher, name)
            dtype = getattr(module, "dtype", None) or next(module.parameters()).dtype
            assert dtype == torch.bfloat16, f"{name} holds {dtype} weights, expected bfloat16"
        self.check_bf16_teacher(teacher)
        base = {n: p.detach().clone() for n, p in teacher.denoiser.named_parameters()}
        prompts, extras = self.prompts(), _on(self.extras() or {}, device)
        cond = teacher.encode_prompts(prompts, extras)
        x = torch.randn((len(prompts), *teacher.latent_shape), generator=torch.Generator().manual_seed(0)).to(device, torch.bfloat16)
        t = self.timesteps(teacher, len(prompts))
        with torch.no_grad():
            eps = teacher.eps(x, t, cond, student=False)
        assert eps.dtype == torch.bfloat16 and torch.isfinite(eps).all(), f"the bf16 teacher's eps is {eps.dtype}, finite: {bool(torch.isfinite(eps).all())}"
        size = teacher.decode(x[:1]).shape[-1]
        batches = []
        for i in range(3):
            images = (torch.rand((len(prompts), 3, size, size), generator=torch.Generator().manual_seed(i)) * 2 - 1).to(device)
            batches.append(Batch(images, list(prompts), _on(self.batch_extras(images, i), device)))
        trainer, stats = flash_training_smoke(teacher, batches, **self.smoke_options())
        try:
            assert {"distil", "adv", "dmd", "disc"} <= set(stats[-1].losses), f"loss terms: {sorted(stats[-1].losses)}"
            assert all(math.isfinite(v) for s in stats for v in s.losses.values()), [s.losses for s in stats]
            assert all(p.dtype == torch.float32 for p in trainer.lora_params), "the adapter must train in float32 on a bf16 base"
            changed = [n for n, p in teacher.denoiser.named_parameters() if n in base and not torch.equal(p, base[n])]
            assert not changed, f"training changed base weights: {changed[:5]}"
            with torch.no_grad():
                x0 = teacher.noise_process.to_x0(x, teacher.output(x, t, cond, student=True), t)
            assert torch.isfinite(x0).all(), "the bf16 student's x0 is not finite"
            g = torch.Generator().manual_seed(0)
            noise = torch.randn((len(prompts), *teacher.latent_shape), generator=g).to(device, torch.bfloat16)
            images = student_sample(teacher, cond, noise, 4, g)
            assert images.shape == (len(prompts), 3, size, size) and torch.isfinite(images.float()).all()
        finally:
            trainer.close()


def _on(extras: Mapping, device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in extras.items()}


# === datasets ===========================================================================================
class DatasetContract:
    """Base class of a dataset plugin's contract tests (see the module docstring).

    Implement :meth:`make_dataset`; it is called more than once (determinism is checked on fresh instances,
    as two processes or a resumed run would build them), so keep it cheap: a tiny folder or shard.
    """

    #: training batch size of the probes (the trainer asks for ``batch_size * world`` at once)
    batch_size: int = 3
    #: evaluation-set size of the probes (prompts, reference images, extras)
    num_eval: int = 4
    #: (3, H, W) every image must have; None: any, as long as training and reference images agree
    image_shape: tuple[int, int, int] | None = None
    #: the extras keys a batch must carry (``{"mask", "masked_image"}`` for an inpainting task); None: not checked
    extras_keys: frozenset[str] | None = None

    def make_dataset(self) -> Dataset:
        """Build a fresh dataset under test."""
        raise NotImplementedError("subclasses of DatasetContract implement make_dataset()")

    @pytest.fixture(scope="class")
    @classmethod
    def dataset(cls, request) -> Dataset:
        dataset = request.cls().make_dataset()
        assert isinstance(dataset, Dataset), f"make_dataset() returned {type(dataset).__name__}, not a flashbench Dataset"
        return dataset

    def draw(self, dataset: Dataset, seed: int, steps: int = 2) -> list[Batch]:
        """``steps`` successive training batches from one generator seeded with ``seed``."""
        rng = np.random.default_rng(seed)
        return [dataset.train_batch(rng, self.batch_size) for _ in range(steps)]

    def check_images(self, images, n: int, what: str, *, at_most: bool = False) -> None:
        """(n, 3, H, W) finite images in [-1, 1] (``at_most``: 1 to n of them)."""
        assert isinstance(images, torch.Tensor), f"{what} is a {type(images).__name__}, not a tensor"
        count = f"1..{n}" if at_most else f"{n}"
        assert images.ndim == 4 and images.shape[1] == 3, f"{what} has shape {tuple(images.shape)}, expected ({count}, 3, H, W)"
        assert (1 <= images.shape[0] <= n) if at_most else images.shape[0] == n, f"{what} has shape {tuple(images.shape)}, expected ({count}, 3, H, W)"
        if self.image_shape is not None:
            assert tuple(images.shape[1:]) == tuple(self.image_shape), f"{what} is {tuple(images.shape[1:])} per image, expected {self.image_shape}"
        assert images.is_floating_point() and torch.isfinite(images).all(), f"{what} must be finite floats"
        assert images.min() >= -1 and images.max() <= 1, f"{what} spans [{images.min():.3g}, {images.max():.3g}], not [-1, 1]"

    def check_extras(self, extras, n: int, what: str) -> None:
        assert isinstance(extras, Mapping), f"{what} is a {type(extras).__name__}, not a dict"
        if self.extras_keys is not None:
            assert set(extras) == set(self.extras_keys), f"{what} has keys {sorted(extras)}, expected {sorted(self.extras_keys)}"
        for key, value in extras.items():
            assert isinstance(value, torch.Tensor), f"{what}[{key!r}] is a {type(value).__name__}, not a tensor"
            assert value.shape[0] == n, f"{what}[{key!r}] has batch {value.shape[0]}, expected {n} (batch first)"

    def test_train_batch_shapes(self, dataset):
        batch = dataset.train_batch(np.random.default_rng(0), self.batch_size)
        assert isinstance(batch, Batch), f"train_batch returned {type(batch).__name__}, not a flashbench.method.data.Batch"
        self.check_images(batch.images, self.batch_size, "train_batch().images")
        assert isinstance(batch.prompts, list) and len(batch.prompts) == self.batch_size, (
            f"train_batch().prompts must be a list of {self.batch_size} strings, got {batch.prompts!r}"
        )
        assert all(isinstance(p, str) for p in batch.prompts), f"train_batch().prompts holds non-strings: {batch.prompts!r}"
        self.check_extras(batch.extras, self.batch_size, "train_batch().extras")

    def test_train_batches_are_determined_by_the_seed(self):
        a, b = self.draw(self.make_dataset(), 0), self.draw(self.make_dataset(), 0)
        for i, (x, y) in enumerate(zip(a, b)):
            assert _same_batch(x, y), f"batch {i} from a fresh dataset and np.random.default_rng(0) differs between two builds"
        other = self.draw(self.make_dataset(), 1)
        assert not all(_same_batch(x, y) for x, y in zip(a, other)), "seeds 0 and 1 give the same training batches"

    def test_train_batches_ignore_the_global_rngs(self):
        torch.manual_seed(0)
        np.random.seed(0)
        a = self.draw(self.make_dataset(), 0)
        torch.manual_seed(1)
        np.random.seed(1)
        b = self.draw(self.make_dataset(), 0)
        assert all(_same_batch(x, y) for x, y in zip(a, b)), "training batches depend on torch's or numpy's global RNG, not only on rng"

    def test_streaming_batches(self, dataset):
        """The optional ``train_batches(rng, batch_size, rank, world, start)`` of a streaming dataset."""
        if not hasattr(dataset, "train_batches"):
            pytest.skip("no train_batches: the trainer slices train_batch() (nothing to check)")
        rng = np.random.default_rng(3)
        state = rng.bit_generator.state
        first = list(itertools.islice(dataset.train_batches(rng, self.batch_size, rank=0, world=1, start=0), 3))
        assert rng.bit_generator.state == state, "train_batches advanced the rng it was given (it must derive its stream without)"
        for batch in first:
            assert isinstance(batch, Batch)
            self.check_images(batch.images, self.batch_size, "train_batches() images")
            self.check_extras(batch.extras, self.batch_size, "train_batches() extras")
        again = list(itertools.islice(self.make_dataset().train_batches(np.random.default_rng(3), self.batch_size), 3))
        assert all(_same_batch(x, y) for x, y in zip(first, again)), "train_batches from the same seed differs between two builds"
        resumed = next(iter(self.make_dataset().train_batches(np.random.default_rng(3), self.batch_size, start=2)))
        assert _same_batch(resumed, first[2]), "train_batches(start=2) does not resume at the third batch"

    def test_eval_prompts(self, dataset):
        for n in (1, self.num_eval):
            prompts = dataset.eval_prompts(n, seed=0)
            assert isinstance(prompts, list) and len(prompts) == n and all(isinstance(p, str) for p in prompts), (
                f"eval_prompts({n}) must be a list of {n} strings, got {prompts!r}"
            )
        assert dataset.eval_prompts(self.num_eval, seed=0) == self.make_dataset().eval_prompts(self.num_eval, seed=0), (
            "eval_prompts differs between two builds with the same seed"
        )

    def test_reference_images(self, dataset):
        # up to n: a small held-out split may hold fewer distinct images than asked for
        images = dataset.reference_images(self.num_eval, seed=0)
        self.check_images(images, self.num_eval, "reference_images()", at_most=True)
        train = dataset.train_batch(np.random.default_rng(0), 1).images
        assert images.shape[1:] == train.shape[1:], f"reference images are {tuple(images.shape[1:])}, training images {tuple(train.shape[1:])}"
        assert torch.equal(images, self.make_dataset().reference_images(self.num_eval, seed=0)), "reference_images differs between two builds"

    def test_eval_extras(self, dataset):
        extras = dataset.eval_extras(self.num_eval, seed=0)
        self.check_extras(extras, self.num_eval, "eval_extras()")
        again = self.make_dataset().eval_extras(self.num_eval, seed=0)
        assert set(again) == set(extras) and all(torch.equal(again[k], extras[k]) for k in extras), "eval_extras differs between two builds"

    def test_reference_id(self, dataset):
        ref = dataset.reference_id()
        assert isinstance(ref, str) and ref, f"reference_id() must be a non-empty string (it keys cached statistics), got {ref!r}"
        assert ref == self.make_dataset().reference_id(), "reference_id() differs between two builds of the same dataset"


def _same_batch(a: Batch, b: Batch) -> bool:
    return (
        torch.equal(a.images, b.images)
        and list(a.prompts) == list(b.prompts)
        and set(a.extras) == set(b.extras)
        and all(torch.equal(a.extras[k], b.extras[k]) for k in a.extras)
    )


# === evaluators =========================================================================================
class RandomImages(Dataset):
    """A dataset of seeded uniform-noise images and numbered prompts: what an evaluator contract prepares on
    when the evaluator needs no particular data (its ``reference_images`` are the reference set)."""

    name = "random-images"

    def __init__(self, size: int = 16):
        self.size = size

    def _images(self, n: int, seed: int) -> torch.Tensor:
        return torch.rand((n, 3, self.size, self.size), generator=torch.Generator().manual_seed(seed)) * 2 - 1

    def train_batch(self, rng, batch_size):
        return Batch(self._images(batch_size, int(rng.integers(2**31))), [f"image {i}" for i in range(batch_size)])

    def eval_prompts(self, n, seed=0):
        return tiny_text_prompts(n)

    def reference_images(self, n, seed=0):
        return self._images(n, 10_000 + seed)


class EvaluatorContract:
    """Base class of an evaluator plugin's contract tests (see the module docstring).

    Implement :meth:`make_evaluator`; override :meth:`make_dataset` when the evaluator needs particular
    reference data (default: :class:`RandomImages` of :attr:`image_size`) and :meth:`images` for particular
    generated images. The evaluator is built once per test class and ``reset()`` before each use.
    """

    #: the metric name the evaluator's rows carry (``register(..., metric=...)``); None: not checked
    metric: str | None = None
    #: its direction; None: not checked (it must still declare one)
    higher_is_better: bool | None = None
    #: generated images per probe, as ``batches`` batches
    num_samples: int = 8
    batches: int = 2
    image_size: int = 16
    #: False for an evaluator that gives no bootstrap replicates (its rows then carry no interval)
    intervals: bool = True
    #: tolerances of "the same value" (streamed vs in one batch, resampled with all-ones counts)
    rtol: float = 1e-6
    atol: float = 1e-9

    def make_evaluator(self) -> Evaluator:
        raise NotImplementedError("subclasses of EvaluatorContract implement make_evaluator()")

    def make_dataset(self) -> Dataset:
        """The dataset ``prepare()`` is given (its reference images and prompts)."""
        return RandomImages(self.image_size)

    def images(self, n: int, seed: int) -> torch.Tensor:
        """``n`` generated images (B, 3, H, W) in [-1, 1]; ``seed`` 1 gives the teacher's reference images."""
        return torch.rand((n, 3, self.image_size, self.image_size), generator=torch.Generator().manual_seed(seed)) * 2 - 1

    @pytest.fixture(scope="class")
    @classmethod
    def evaluator(cls, request) -> Evaluator:
        contract = request.cls()
        evaluator = contract.make_evaluator()
        assert isinstance(evaluator, Evaluator), f"make_evaluator() returned {type(evaluator).__name__}, not a flashbench Evaluator"
        evaluator.prepare(contract.make_dataset(), contract.num_samples, seed=0)
        return evaluator

    def run(self, evaluator: Evaluator, seed: int = 0, batches: int | None = None) -> float:
        """reset, then ``update`` with :attr:`num_samples` images in ``batches`` batches, then ``compute``."""
        images, reference = self.images(self.num_samples, seed), self.images(self.num_samples, seed + 1)
        prompts = self.make_dataset().eval_prompts(self.num_samples)
        evaluator.reset()
        for chunk in np.array_split(np.arange(self.num_samples), batches or self.batches):
            ref = reference[chunk] if evaluator.needs_teacher_reference else None
            evaluator.update(images[chunk], [prompts[i] for i in chunk], reference=ref)
        return evaluator.compute()

    def test_declares_metric_and_direction(self, evaluator):
        assert isinstance(evaluator.metric, str) and evaluator.metric and evaluator.metric != Evaluator.metric, (
            f"the evaluator must name its metric (class attribute metric), got {evaluator.metric!r}"
        )
        if self.metric is not None:
            assert evaluator.metric == self.metric, f"metric is {evaluator.metric!r}; its rows are registered as {self.metric!r}"
        declared = [c for c in type(evaluator).__mro__ if "higher_is_better" in vars(c) and c.__module__ != Evaluator.__module__]
        assert declared or "higher_is_better" in vars(evaluator), (
            "the evaluator does not declare higher_is_better (the base class's False would be read as 'lower is better')"
        )
        assert isinstance(evaluator.higher_is_better, bool) and isinstance(evaluator.needs_teacher_reference, bool)
        if self.higher_is_better is not None:
            assert evaluator.higher_is_better is self.higher_is_better, f"higher_is_better is {evaluator.higher_is_better}"

    def test_value_is_a_finite_float(self, evaluator):
        value = self.run(evaluator)
        assert isinstance(value, float), f"compute() returned {type(value).__name__}, not a float"
        assert math.isfinite(value), f"compute() returned {value}"

    def test_value_is_deterministic(self, evaluator):
        assert self.run(evaluator) == self.run(evaluator), "the same images give two values"

    def test_streamed_equals_one_batch(self, evaluator):
        one, streamed = self.run(evaluator, batches=1), self.run(evaluator, batches=max(2, self.batches))
        assert math.isclose(streamed, one, rel_tol=self.rtol, abs_tol=self.atol), f"batch by batch {streamed!r}, in one batch {one!r}"

    def test_reset_forgets_earlier_batches(self, evaluator):
        fresh = self.run(evaluator, seed=5)
        self.run(evaluator, seed=0)
        assert math.isclose(self.run(evaluator, seed=5), fresh, rel_tol=self.rtol, abs_tol=self.atol), "reset() kept earlier samples"
        assert self.run(evaluator, seed=0) != fresh, "different images give the same value: the check would be vacuous"

    def test_replicates_are_interval_ready(self, evaluator):
        from .stats import replicates

        value = self.run(evaluator)
        n = self.num_samples
        identity = evaluator.replicates(np.ones((1, n), dtype=np.int32))
        if identity is None:
            assert not self.intervals, "replicates() returned None: the rows get no interval (set intervals = False if meant)"
            return
        identity = np.asarray(identity)
        assert identity.shape == (1,), f"replicates((1, n) counts) has shape {identity.shape}, expected (1,)"
        assert math.isclose(float(identity[0]), value, rel_tol=1e-5, abs_tol=1e-8), (
            f"replicates with every sample drawn once gives {identity[0]!r}, compute() {value!r}"
        )
        reps = replicates(evaluator.replicates, n, 16, seed=0)
        assert reps.shape == (16,) and np.isfinite(reps).all(), f"bootstrap replicates: {reps!r}"
        assert np.array_equal(reps, replicates(evaluator.replicates, n, 16, seed=0)), "replicates() is not deterministic"
        assert np.ptp(reps) > 0, "every bootstrap resample gives the same value: the replicates ignore the counts"


# === timestep distributions =============================================================================
class TimestepDistributionContract:
    """Base class of a timestep distribution's contract tests (see the module docstring).

    Implement :meth:`make_distribution`; it is called with each ``(num_timesteps, phase_length, num_phases)``
    of :attr:`grids`, as the runner calls the factory with the study's values.
    """

    #: (K, phase_length, num_phases) combinations to check; K is a multiple of 4 (the paper's modes sit at K/4 ...)
    grids: tuple[tuple[int, int, int], ...] = ((16, 2, 4), (32, 3, 4), (8, 1, 1))
    #: draws of the "samples follow pmf" check, and the largest gap allowed between an index's frequency and its mass
    draws: int = 20_000
    max_gap: float = 0.02

    def make_distribution(self, num_timesteps: int, phase_length: int, num_phases: int) -> TimestepDistribution:
        raise NotImplementedError("subclasses of TimestepDistributionContract implement make_distribution()")

    def distributions(self):
        for grid in self.grids:
            dist = self.make_distribution(*grid)
            assert isinstance(dist, TimestepDistribution), f"make_distribution{grid} returned {type(dist).__name__}, not a TimestepDistribution"
            yield grid, dist

    def iterations(self, phase_length: int, num_phases: int) -> list[int]:
        """The first iteration of each phase, one inside it, and one far past the last."""
        starts = [p * phase_length for p in range(num_phases)]
        return sorted({*starts, *(s + phase_length - 1 for s in starts), 10 * phase_length * num_phases + 7})

    def test_pmf_is_a_distribution_over_the_grid(self):
        for (k, _, phases), dist in self.distributions():
            for phase in range(phases):
                p = dist.pmf(phase)
                assert isinstance(p, torch.Tensor) and p.shape == (k,), f"K={k}, phase {phase}: pmf has shape {tuple(getattr(p, 'shape', ()))}, expected ({k},)"
                assert p.dtype == torch.float64, f"K={k}, phase {phase}: pmf is {p.dtype}, expected float64"
                assert torch.isfinite(p).all() and (p >= 0).all(), f"K={k}, phase {phase}: pmf has negative or non-finite mass"
                total = float(p.sum())
                assert abs(total - 1) < 1e-9, f"K={k}, phase {phase}: pmf sums to {total!r}, not 1"
                assert torch.equal(p, dist.pmf(phase)), f"K={k}, phase {phase}: pmf changes between calls"

    def test_phases(self):
        for (k, length, phases), dist in self.distributions():
            seen = [dist.phase(i) for i in range(length * phases + 3 * length + 1)]
            assert all(0 <= s < phases for s in seen), f"K={k}: phase() left [0, {phases}): {sorted(set(seen))}"
            assert seen == sorted(seen), f"K={k}: phase() goes backwards as iterations grow"

    def test_samples_are_grid_indices(self):
        for (k, length, phases), dist in self.distributions():
            for it in self.iterations(length, phases):
                s = dist.sample(torch.Generator().manual_seed(0), 64, it)
                assert isinstance(s, torch.Tensor) and s.shape == (64,), f"K={k}, iteration {it}: sample gave shape {tuple(s.shape)}, expected (64,)"
                assert not s.is_floating_point(), f"K={k}: sample gave {s.dtype}; indices are integers"
                assert int(s.min()) >= 1 and int(s.max()) <= k, f"K={k}, iteration {it}: indices {int(s.min())}..{int(s.max())} outside 1..{k}"

    def test_sampling_is_reproducible_for_a_seed(self):
        for (k, length, phases), dist in self.distributions():
            it = self.iterations(length, phases)[-1]
            torch.manual_seed(0)
            a = dist.sample(torch.Generator().manual_seed(3), 256, it)
            torch.manual_seed(1)
            state = torch.get_rng_state()
            b = dist.sample(torch.Generator().manual_seed(3), 256, it)
            assert torch.equal(torch.get_rng_state(), state), f"K={k}: sample() drew from torch's global generator"
            assert torch.equal(a, b), f"K={k}: the same generator seed gives different indices"
            c = dist.sample(torch.Generator().manual_seed(4), 256, it)
            assert not torch.equal(a, c), f"K={k}: seeds 3 and 4 give the same indices"

    def test_samples_follow_the_pmf(self):
        for (k, length, phases), dist in self.distributions():
            for it in (0, (phases - 1) * length):
                p = dist.pmf(dist.phase(it))
                s = dist.sample(torch.Generator().manual_seed(0), self.draws, it)
                freq = torch.bincount(s - 1, minlength=k)[:k].double() / self.draws
                gap = float((freq - p).abs().max())
                assert gap < self.max_gap, f"K={k}, iteration {it}: sampled frequencies are up to {gap:.3f} from pmf (index i is pmf[i - 1])"
                assert not freq[p == 0].any(), f"K={k}, iteration {it}: indices of zero mass were drawn"


def flash_training_smoke(
    teacher: Teacher,
    batches,
    *,
    num_timesteps: int = 8,
    lora_rank: int = 4,
    lr: float = 1e-3,
    guidance: tuple[float, float] = (1.5, 3.0),
    adapter_name: str = "smoke",
    seed: int = 0,
    train_options: dict | None = None,
):
    """Run ``len(batches)`` steps of the full method (MSE + LSGAN + DMD, flash pi with one-iteration phases,
    so every loss term is active from the second step) on ``teacher``; returns ``(trainer, stats)``.
    ``train_options``: other :class:`flashbench.config.TrainConfig` fields (``gradient_checkpointing``, ...).

    ``batches`` are :class:`flashbench.method.data.Batch` objects (images in [-1, 1], prompts, extras).
    The adapter stays active so the caller can sample and export; call ``trainer.close()`` afterwards.
    """
    from .config import TrainConfig
    from .plugins import collect_components, get_plugin_manager
    from .training import build_trainer

    steps = len(batches)
    cfg = TrainConfig(
        num_timesteps=num_timesteps,
        phase_length=1,
        iterations=steps,
        batch_size=len(batches[0].prompts),
        learning_rate=lr,
        disc_learning_rate=lr,
        guidance_min=guidance[0],
        guidance_max=guidance[1],
        lora_rank=lora_rank,
        **(train_options or {}),
    )
    # the built-in components the defaults name: text conditioning, dpm-solver, flash pi, mse + lsgan + dmd
    builtins = collect_components(get_plugin_manager(load_entry_points=False))
    trainer = build_trainer(cfg, builtins, teacher=teacher, seed=seed, adapter_name=adapter_name)
    stats = [trainer.step(batch, i) for i, batch in enumerate(batches)]
    return trainer, stats
