"""The noise process the method goes through: timestep grids, forward noising, and the network's parametrisation.

Every process here is a Gaussian path x_t = alpha(t) x0 + sigma(t) eps, read at the timesteps the teacher's
network takes. What differs between families:

=================  ===========================  ===========================  =========================
process            timestep the network gets     alpha(t), sigma(t)           network output
=================  ===========================  ===========================  =========================
``VPEpsilon``      integer index 0..T-1         sqrt(ac[t]), sqrt(1-ac[t])   eps (SD1.5, SDXL, PixArt-a)
``VPV``            integer index 0..T-1         sqrt(ac[t]), sqrt(1-ac[t])   v = alpha eps - sigma x0 (SD2.1-768)
``RectifiedFlow``  sigma * T (float)            1 - sigma, sigma             u = eps - x0 (SD3, Flux)
=================  ===========================  ===========================  =========================

Conversions go through the pair (x0, eps), which every parametrisation determines given x_t:
eps: x0 = (x - s eps) / a; v: x0 = (a x - s v) / (a^2 + s^2) (= a x - s v on VP, where a^2 + s^2 = 1);
flow velocity u = eps - x0: x0 = (x - s u) / (a + s) (= x - s u on rectified flow). Classifier-free guidance
combines raw outputs, which is the same as combining x0s: each conversion is affine in the output with
coefficients that depend on (x_t, t) only.

The K-grid: index i of K maps to the diffusion time u = i / K in [0, 1]; u = 0 is the clean state, where
solvers stop. VP maps u to the teacher's T-step grid with trailing spacing (``NoiseSchedule``); rectified
flow maps u to sigma through the family's time shift: SD3's fixed shift s (sigma = s u / (1 + (s - 1) u)),
Flux's resolution-dependent one (sigma = e^mu / (e^mu + 1/u - 1), mu linear in the image's token count), as
diffusers' ``FlowMatchEulerDiscreteScheduler`` applies them. The same map serves the K-grid, the student's
inference timesteps (1 / 0.75 / 0.5 / 0.25 of the time) and the re-noising times of the adversarial and
DMD terms, so a flow student is trained and sampled on one set of sigmas.

The VP processes wrap :class:`~flashbench.method.schedule.NoiseSchedule` and call its own methods, so the
epsilon path computes exactly what it computed before this module existed (``tests/test_vp_eps_bitwise.py``).
"""

from __future__ import annotations

import copy
import math
from abc import ABC, abstractmethod

import torch

from ..config import STUDENT_PREDICTIONS
from .schedule import CLEAN, NoiseSchedule, _expand

#: the parametrisations a network may output (``NoiseProcess.prediction``); "sample" is x0 itself (a student's
#: choice: no teacher here outputs it)
PREDICTIONS = ("epsilon", "v_prediction", "flow", "sample")
#: an epsilon-read student's x0 carries its output's error times sigma / alpha at full noise; above this the
#: first few-step sample is that error amplified (SD's scaled-linear schedule: 14.6 at t = 999; DDPM's linear
#: schedule: 157, where a toy student distilled to noise)
UNSTABLE_AMPLIFICATION = 50.0


class NoiseProcess(ABC):
    """x_t = alpha(t) x0 + sigma(t) eps on the teacher's timesteps, and what the network outputs."""

    name: str = "process"
    #: what the teacher's network outputs: "epsilon", "v_prediction" or "flow" (velocity eps - x0)
    prediction: str = "epsilon"
    #: the timestep standing for t = 0 (the clean state; a solver's last step lands there)
    clean: int | float = CLEAN
    #: size of the teacher's training grid (DMD draws its timesteps from it)
    num_train_timesteps: int = 1000
    #: dtype of the timesteps passed to the network
    timestep_dtype: torch.dtype = torch.long

    # --- coefficients -------------------------------------------------------------------------------
    @abstractmethod
    def alpha(self, t, like: torch.Tensor) -> torch.Tensor:
        """alpha(t) in ``like``'s dtype, shaped to broadcast against it (one value per sample for a (B,) t)."""

    @abstractmethod
    def sigma(self, t, like: torch.Tensor) -> torch.Tensor: ...

    @abstractmethod
    def lambda_(self, t) -> torch.Tensor:
        """log(alpha / sigma) in float64; +inf at the clean state (DPM-Solver's half log-SNR)."""

    def is_clean(self, t) -> bool:
        return t == self.clean

    # --- grids --------------------------------------------------------------------------------------
    @abstractmethod
    def grid_timestep(self, index, num_timesteps: int) -> torch.Tensor:
        """Timestep of K-grid index ``index`` (0..K, tensor or int); index 0 -> :attr:`clean`."""

    def sampling_timesteps(self, steps: int) -> list:
        """The student's (and the teacher baseline's) ``steps`` timesteps from full noise, as Python numbers:
        the K-grid with K = ``steps``, without its clean end."""
        return [self.grid_timestep(i, steps).item() for i in range(steps, 0, -1)]

    @abstractmethod
    def continuous_timestep(self, u: float):
        """The timestep at diffusion time u in [0, 1] (the adversarial term's t' in {0.01, .25, .5, .75})."""

    @abstractmethod
    def training_timestep(self, index: torch.Tensor) -> torch.Tensor:
        """Timesteps of the training grid's entries ``index`` in [0, T) (DMD's t'' ~ U[0, 1])."""

    def timesteps(self, t, n: int, device) -> torch.Tensor:
        """(n,) copies of the scalar timestep ``t``, in the network's timestep dtype."""
        return torch.full((n,), t, device=device, dtype=self.timestep_dtype)

    # --- forward noising ----------------------------------------------------------------------------
    def add_noise(self, x0: torch.Tensor, eps: torch.Tensor, t) -> torch.Tensor:
        return self.alpha(t, x0) * x0 + self.sigma(t, x0) * eps

    # --- parametrisations: (x0, eps) <-> eps / v / flow velocity -------------------------------------
    def x0_from_eps(self, xt: torch.Tensor, eps: torch.Tensor, t) -> torch.Tensor:
        return (xt - self.sigma(t, xt) * eps) / self.alpha(t, xt)

    def eps_from_x0(self, xt: torch.Tensor, x0: torch.Tensor, t) -> torch.Tensor:
        return (xt - self.alpha(t, xt) * x0) / self.sigma(t, xt)

    def v_from(self, x0: torch.Tensor, eps: torch.Tensor, t) -> torch.Tensor:
        """v = alpha eps - sigma x0 (Salimans & Ho 2022; diffusers' ``get_velocity``)."""
        return self.alpha(t, x0) * eps - self.sigma(t, x0) * x0

    def x0_from_v(self, xt: torch.Tensor, v: torch.Tensor, t) -> torch.Tensor:
        a, s = self.alpha(t, xt), self.sigma(t, xt)
        return (a * xt - s * v) / (a * a + s * s)

    def eps_from_v(self, xt: torch.Tensor, v: torch.Tensor, t) -> torch.Tensor:
        a, s = self.alpha(t, xt), self.sigma(t, xt)
        return (s * xt + a * v) / (a * a + s * s)

    def velocity_from(self, x0: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """The rectified-flow velocity u = d x_t / d sigma = eps - x0 (what SD3 and Flux output)."""
        return eps - x0

    def x0_from_velocity(self, xt: torch.Tensor, u: torch.Tensor, t) -> torch.Tensor:
        a, s = self.alpha(t, xt), self.sigma(t, xt)
        return (xt - s * u) / (a + s)

    def eps_from_velocity(self, xt: torch.Tensor, u: torch.Tensor, t) -> torch.Tensor:
        return u + self.x0_from_velocity(xt, u, t)

    # --- the network's output -----------------------------------------------------------------------
    def to_x0(self, xt: torch.Tensor, output: torch.Tensor, t) -> torch.Tensor:
        """x0 from the raw network output at (x_t, t): the x0-parametrisation of the student and the teacher."""
        if self.prediction == "epsilon":
            return self.x0_from_eps(xt, output, t)
        if self.prediction == "v_prediction":
            return self.x0_from_v(xt, output, t)
        if self.prediction == "sample":
            return output
        return self.x0_from_velocity(xt, output, t)

    def to_eps(self, xt: torch.Tensor, output: torch.Tensor, t) -> torch.Tensor:
        if self.prediction == "epsilon":
            return output
        if self.prediction == "v_prediction":
            return self.eps_from_v(xt, output, t)
        if self.prediction == "sample":
            return self.eps_from_x0(xt, output, t)
        return self.eps_from_velocity(xt, output, t)

    def output_from(self, x0: torch.Tensor, eps: torch.Tensor, t) -> torch.Tensor:
        """The network output that stands for (x0, eps) at t (inverse of :meth:`to_x0` / :meth:`to_eps`)."""
        if self.prediction == "epsilon":
            return eps
        if self.prediction == "v_prediction":
            return self.v_from(x0, eps, t)
        if self.prediction == "sample":
            return x0
        return self.velocity_from(x0, eps)

    def describe(self) -> str:
        return f"{self.name} ({self.prediction})"

    def reading(self, prediction: str) -> "NoiseProcess":
        """This process with the network's output read as ``prediction`` (the student's parametrisation; see
        :func:`student_process`): the same path and grids, another output."""
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction {prediction!r} is not one of {', '.join(PREDICTIONS)}")
        if prediction == self.prediction:
            return self
        other = copy.copy(self)
        other.prediction = prediction
        return other

    def amplification(self, prediction: str | None = None) -> float:
        """How much an error in the output becomes in x0 at full noise (the student's first step), for output
        ``prediction`` (default: this process's): sigma/alpha for epsilon, sigma/(alpha^2 + sigma^2) for v,
        sigma/(alpha + sigma) for flow velocity, 1 for x0 itself."""
        prediction = prediction or self.prediction
        t = self.sampling_timesteps(1)[0]
        like = torch.zeros((), dtype=torch.float64)
        a, s = float(self.alpha(t, like)), float(self.sigma(t, like))
        return {"epsilon": s / a if a > 0 else math.inf, "v_prediction": s / (a * a + s * s), "flow": s / (a + s), "sample": 1.0}[prediction]


def student_process(process: NoiseProcess, prediction: str = "teacher") -> NoiseProcess:
    """The process the student's output is read through: the teacher's (``"teacher"``, the paper's and the
    default: the LoRA starts from the teacher's own function), or ``"epsilon"`` / ``"v_prediction"`` /
    ``"sample"`` on the teacher's path and grids; ``"auto"``: the teacher's, or v where the teacher's amplifies
    the error more than :data:`UNSTABLE_AMPLIFICATION` times. A teacher whose schedule ends near zero SNR (DDPM's linear
    schedule: alpha = 0.0064 at t = 999) makes an epsilon-read student amplify its error 157x in its first
    x0; v or sample keep it at most 1x, at the price of a LoRA that starts from another function than the
    teacher's (v read from an epsilon network is right at low noise and -eps at full noise)."""
    if prediction not in STUDENT_PREDICTIONS:
        raise ValueError(f"student_prediction {prediction!r} is not one of {', '.join(STUDENT_PREDICTIONS)}")
    if prediction == "auto":
        prediction = "teacher" if process.amplification() <= UNSTABLE_AMPLIFICATION else "v_prediction"
    return process if prediction == "teacher" else process.reading(prediction)


def parametrisation_warning(process: NoiseProcess, prediction: str = "teacher") -> str | None:
    """One line when the student's parametrisation amplifies its error more than
    :data:`UNSTABLE_AMPLIFICATION` times at full noise on this teacher's schedule, else None."""
    student = student_process(process, prediction)
    gain = student.amplification()
    if gain <= UNSTABLE_AMPLIFICATION:
        return None
    t = process.sampling_timesteps(1)[0]
    alpha = float(process.alpha(t, torch.zeros((), dtype=torch.float64)))
    return (
        f"the student's {student.prediction} output is amplified {gain:.0f}x in its first x0 on the teacher's schedule "
        f"(alpha = {alpha:.4f} at full noise): set student_prediction = \"auto\" (v here), \"v_prediction\" or \"sample\""
    )


class VPProcess(NoiseProcess):
    """A variance-preserving DDPM-family process over the teacher's ``alphas_cumprod``; ``prediction`` says
    what the network outputs. Everything defers to :class:`NoiseSchedule` (the epsilon path bit for bit)."""

    clean = CLEAN
    timestep_dtype = torch.long

    def __init__(self, schedule: NoiseSchedule):
        self.schedule = schedule
        self.num_train_timesteps = schedule.num_train_timesteps

    def alpha(self, t, like):
        return self.schedule.alpha(t, like)

    def sigma(self, t, like):
        return self.schedule.sigma(t, like)

    def lambda_(self, t):
        return self.schedule.lambda_(t)

    def grid_timestep(self, index, num_timesteps):
        return self.schedule.grid_timestep(index, num_timesteps)

    def sampling_timesteps(self, steps):
        return self.schedule.sampling_timesteps(steps)

    def continuous_timestep(self, u):
        return self.schedule.continuous_timestep(u)

    def training_timestep(self, index):
        return index  # the training grid is the timestep table itself

    def add_noise(self, x0, eps, t):
        return self.schedule.add_noise(x0, eps, t)

    def x0_from_eps(self, xt, eps, t):
        return self.schedule.x0_from_eps(xt, eps, t)

    def eps_from_x0(self, xt, x0, t):
        return self.schedule.eps_from_x0(xt, x0, t)

    # alpha^2 + sigma^2 = 1: v needs no normalisation (and no division by alpha, which is ~0.07 at t = 999
    # on SD's schedule; that division is what amplifies an eps student's error at full noise)
    def x0_from_v(self, xt, v, t):
        return self.alpha(t, xt) * xt - self.sigma(t, xt) * v

    def eps_from_v(self, xt, v, t):
        # alpha v + sigma x_t, in the order the SD-family teachers computed it before this module
        return self.alpha(t, xt) * v + self.sigma(t, xt) * xt


class VPEpsilon(VPProcess):
    name = "vp-epsilon"
    prediction = "epsilon"


class VPV(VPProcess):
    name = "vp-v"
    prediction = "v_prediction"


def vp_process(schedule: NoiseSchedule, prediction_type: str = "epsilon") -> VPProcess:
    """The VP process of a DDPM-family scheduler's ``prediction_type`` ("epsilon" or "v_prediction")."""
    if prediction_type == "epsilon":
        return VPEpsilon(schedule)
    if prediction_type == "v_prediction":
        return VPV(schedule)
    raise ValueError(f"prediction_type {prediction_type!r} has no VP process here (epsilon or v_prediction)")


# ==================================================================================================
# rectified flow
# ==================================================================================================


def flux_mu(image_seq_len: int, *, base_seq_len: int = 256, max_seq_len: int = 4096, base_shift: float = 0.5, max_shift: float = 1.15) -> float:
    """Flux's resolution-dependent shift parameter: linear in the image's token count, base_shift at
    ``base_seq_len`` tokens, max_shift at ``max_seq_len`` (diffusers' ``calculate_shift``; 1024 px = 4096 tokens)."""
    slope = (max_shift - base_shift) / (max_seq_len - base_seq_len)
    return image_seq_len * slope + base_shift - slope * base_seq_len


class RectifiedFlow(NoiseProcess):
    """x_t = (1 - sigma) x0 + sigma eps, the network outputs the velocity u = eps - x0 at timestep sigma T.

    ``shift``: SD3's fixed time shift (3.0 for SD3-medium; 1.0 none). ``mu``: Flux's resolution-dependent
    shift (see :func:`flux_mu`); when given it replaces ``shift``, with ``time_shift`` "exponential" (Flux) or
    "linear", as ``FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True)`` with ``set_timesteps(mu=mu)``.
    Timesteps are float32 (as diffusers passes them) and sigma is read back from them, so every part of
    the method sees one sigma per timestep.
    """

    name = "rectified-flow"
    prediction = "flow"
    clean = 0.0
    timestep_dtype = torch.float32

    def __init__(self, *, num_train_timesteps: int = 1000, shift: float = 1.0, mu: float | None = None, time_shift: str = "exponential"):
        if shift <= 0:
            raise ValueError(f"shift must be positive, got {shift}")
        if time_shift not in ("exponential", "linear"):
            raise ValueError(f"time_shift must be 'exponential' or 'linear', got {time_shift!r}")
        self.num_train_timesteps = int(num_train_timesteps)
        self.shift, self.mu, self.time_shift = float(shift), mu, time_shift

    @classmethod
    def from_scheduler_config(cls, config, *, image_seq_len: int | None = None) -> "RectifiedFlow":
        """The process of a ``FlowMatchEulerDiscreteScheduler`` config (SD3's, Flux's); a dynamic-shifting
        config needs ``image_seq_len`` (latent tokens after patching: (H/16)(W/16) px for Flux)."""
        get = config.get if hasattr(config, "get") else lambda k, d=None: getattr(config, k, d)
        t = int(get("num_train_timesteps", 1000))
        if get("use_dynamic_shifting", False):
            if image_seq_len is None:
                raise ValueError("this scheduler shifts by resolution (use_dynamic_shifting): give image_seq_len")
            mu = flux_mu(
                image_seq_len,
                base_seq_len=get("base_image_seq_len", 256),
                max_seq_len=get("max_image_seq_len", 4096),
                base_shift=get("base_shift", 0.5),
                max_shift=get("max_shift", 1.15),
            )
            return cls(num_train_timesteps=t, mu=mu, time_shift=get("time_shift_type", "exponential"))
        return cls(num_train_timesteps=t, shift=float(get("shift", 1.0)))

    def shifted(self, u: torch.Tensor) -> torch.Tensor:
        """sigma at diffusion time u in [0, 1] (float64): the fixed or the resolution-dependent shift."""
        u = torch.as_tensor(u, dtype=torch.float64)
        if self.mu is None:
            return self.shift * u / (1 + (self.shift - 1) * u)
        m = math.exp(self.mu) if self.time_shift == "exponential" else self.mu
        # m / (m + 1/u - 1) written as m u / (m u + 1 - u) so that u = 0 gives 0 without a division by zero
        return m * u / (m * u + 1 - u)

    def _sigma64(self, t) -> torch.Tensor:
        return torch.as_tensor(t).to(torch.float64) / self.num_train_timesteps

    def alpha(self, t, like):
        return _expand(1 - self._sigma64(torch.as_tensor(t, device=like.device)), like)

    def sigma(self, t, like):
        return _expand(self._sigma64(torch.as_tensor(t, device=like.device)), like)

    def lambda_(self, t):
        s = self._sigma64(t)
        return torch.log1p(-s) - torch.log(s)

    def _timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        return (sigma * self.num_train_timesteps).to(torch.float32)

    def grid_timestep(self, index, num_timesteps):
        index = torch.as_tensor(index)
        return self._timestep(self.shifted(index.to(torch.float64) / num_timesteps))  # index 0 -> 0.0 = clean

    def continuous_timestep(self, u):
        return self._timestep(self.shifted(torch.tensor(float(u)))).item()

    def training_timestep(self, index):
        # the scheduler's training table: sigma = shift((i + 1) / T), i = 0..T-1 (never the clean state)
        index = torch.as_tensor(index)
        return self._timestep(self.shifted((index.to(torch.float64) + 1) / self.num_train_timesteps)).to(index.device)

    # rectified flow: a + s = 1 and a^2 + s^2 != 1; the velocity conversions need no division
    def x0_from_velocity(self, xt, u, t):
        return xt - self.sigma(t, xt) * u

    def eps_from_velocity(self, xt, u, t):
        return xt + self.alpha(t, xt) * u

    def describe(self):
        how = f"shift {self.shift:g}" if self.mu is None else f"{self.time_shift} shift mu {self.mu:.4g}"
        return f"{self.name} ({how})"
