"""The maths of Algorithm 1 (flashbench.method), checked against hand-computed numbers, diffusers, or
independent re-implementations written here (never against the code under test itself).

Tiny tensors only; the only "models" are diffusers schedulers and fake callables.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from flashbench.method import losses as L
from flashbench.method.discriminator import DiscriminatorHead
from flashbench.method.guidance import cfg_combine, guided_eps
from flashbench.method.schedule import CLEAN, NoiseSchedule
from flashbench.method.timesteps import FLASH_PHASE_WEIGHTS, FlashMixture, Gaussian, Sharp, Uniform, mode_indices

K = 32
PAPER_WEIGHTS = [(0.5, 0.5, 0.0, 0.0), (0.3, 0.3, 0.3, 0.1), (0.25, 0.25, 0.25, 0.25), (0.2, 0.2, 0.2, 0.4)]


# ==================================================================================================
# 1. the timestep distribution pi
# ==================================================================================================


def numpy_flash_pmf(k: int, beta) -> np.ndarray:
    """Independent formula: w(i) = sum_m beta_m exp(-((i - m)/k)^2 / (2 * 0.5 / k^2)), i = 1..k."""
    i = np.arange(1, k + 1, dtype=np.float64)
    modes = [k // 4, k // 2, 3 * k // 4, k]
    var = 0.5 / k**2
    w = sum(b * np.exp(-(((i - m) / k) ** 2) / (2 * var)) for b, m in zip(beta, modes))
    return w / w.sum()


def test_paper_phase_weights_are_the_papers():
    assert [tuple(w) for w in FLASH_PHASE_WEIGHTS] == PAPER_WEIGHTS


def test_mode_indices():
    assert mode_indices(32) == [8, 16, 24, 32]
    assert mode_indices(16) == [4, 8, 12, 16]
    assert mode_indices(64) == [16, 32, 48, 64]
    for bad in (30, 33, 6):
        with pytest.raises(ValueError):
            mode_indices(bad)


def test_flash_k_not_multiple_of_4_raises():
    with pytest.raises(ValueError):
        FlashMixture(30, 100, 4).pmf(0)
    with pytest.raises(ValueError):
        Sharp(18, 100, 4).pmf(0)


# Hand computation (K = 32): the exponent is -(i - m)^2, so with theta = sum_{n in Z} exp(-n^2) =
# 1 + 2 (e^-1 + e^-4 + e^-9 + e^-16 + ...) = 1.7726372048 and, for the mode at the edge (m = K),
# half = sum_{n >= 0} exp(-n^2) = 1.3863186024, the normaliser is Z = (b1 + b2 + b3) theta + b4 half.
#   phase 0: Z = 1.7726372;  p(8) = .5/Z = 0.2820656131;  p(9) = .5 e^-1 / Z = 0.1037661401
#   phase 1: Z = 1.7340053;  p(8) = .3/Z = 0.1730098474;  p(9) = 0.0636467660;  p(32) = .1/Z = 0.0576699491
#   phase 2: Z = 1.6760576;  p(8) = p(32) = .25/Z = 0.1491595556;  p(9) = 0.0548727340
#   phase 3: Z = 1.6181098;  p(8) = .2/Z = 0.1236010093;  p(9) = 0.0454702702;  p(32) = .4/Z = 0.2472020186
HAND = {
    0: {8: 0.2820656131, 9: 0.1037661401, 16: 0.2820656131, 24: 0.0, 32: 0.0},
    1: {8: 0.1730098474, 9: 0.0636467660, 16: 0.1730098474, 24: 0.1730098474, 32: 0.0576699491},
    2: {8: 0.1491595556, 9: 0.0548727340, 16: 0.1491595556, 24: 0.1491595556, 32: 0.1491595556},
    3: {8: 0.1236010093, 9: 0.0454702702, 16: 0.1236010093, 24: 0.1236010093, 32: 0.2472020186},
}


@pytest.mark.parametrize("phase", [0, 1, 2, 3])
def test_flash_pmf_hand_values(phase):
    p = FlashMixture(K, 5000, 4).pmf(phase)
    assert p.dtype == torch.float64 and p.shape == (K,)
    assert float(p.sum()) == pytest.approx(1.0, abs=1e-12)
    for i, v in HAND[phase].items():
        assert float(p[i - 1]) == pytest.approx(v, abs=1e-9), (phase, i)
    # neighbour of a mode: e^-1 of the mode's own mass (the other modes are >= 7 grid points away)
    assert float(p[8] / p[7]) == pytest.approx(math.exp(-1), rel=1e-9)
    assert float(p[9] / p[7]) == pytest.approx(math.exp(-4), rel=1e-9)
    # the whole vector against the independent numpy formula
    np.testing.assert_allclose(p.numpy(), numpy_flash_pmf(K, PAPER_WEIGHTS[phase]), rtol=1e-12, atol=1e-15)


def numpy_code_pmf(k: int, beta) -> np.ndarray:
    """The authors' spread, written independently: w(i) = sum_m beta_m exp(-2 (i - m)^2)."""
    i = np.arange(1, k + 1, dtype=np.float64)
    w = sum(b * np.exp(-2.0 * (i - m) ** 2) for b, m in zip(beta, (k // 4, k // 2, 3 * k // 4, k)))
    return w / w.sum()


# Mass on the four modes at K = 32, by hand: with theta_c = sum_{n in Z} exp(-c n^2) and half_c = sum_{n >= 0},
# mass = sum(beta) / ((b1 + b2 + b3) theta_c + b4 half_c).
#   paper (c = 1): theta = 1.7726372048, half = 1.3863186024 -> .5641, .5767, .5966, .6180 by phase
#   code  (c = 2): theta = 1.2713415222, half = 1.1356707611 -> .7866, .7951, .8081, .8216 by phase
MODE_MASS = {"paper": (0.5641312262, 0.5766994912, 0.5966382225, 0.6180050466), "code": (0.7865707070, 0.7950551095, 0.8081305485, 0.8216432548)}


@pytest.mark.parametrize("spread", ["paper", "code"])
def test_flash_spread_mode_mass(spread):
    f = FlashMixture(K, 5000, 4) if spread == "paper" else FlashMixture(K, 5000, 4, spread="code")
    for phase in range(4):
        p = f.pmf(phase)
        assert float(p[[7, 15, 23, 31]].sum()) == pytest.approx(MODE_MASS[spread][phase], abs=1e-9), (spread, phase)
    # ~58% of the mass on the modes in the paper, ~80% in the authors' code (mean over the four phases)
    assert float(np.mean([float(f.pmf(ph)[[7, 15, 23, 31]].sum()) for ph in range(4)])) == pytest.approx({"paper": 0.589, "code": 0.803}[spread], abs=1e-3)
    # a neighbour of a mode: e^-1 (paper) or e^-2 (code) of the mode's mass
    assert float(p[8] / p[7]) == pytest.approx(math.exp({"paper": -1, "code": -2}[spread]), rel=1e-9)


def test_flash_code_spread_against_numpy():
    for k in (16, 32, 64):
        for phase in range(4):
            np.testing.assert_allclose(
                FlashMixture(k, 10, 4, spread="code").pmf(phase).numpy(), numpy_code_pmf(k, PAPER_WEIGHTS[phase]), rtol=1e-12, atol=1e-15
            )
    with pytest.raises(ValueError, match="spread"):
        FlashMixture(K, 10, 4, spread="wide")


def test_flash_plugin_spread_option(components):
    flash = components.get("timesteps", "flash")
    default = flash.build({}, num_timesteps=K, phase_length=10, num_phases=4)
    code = flash.build({"spread": "code"}, num_timesteps=K, phase_length=10, num_phases=4)
    np.testing.assert_allclose(default.pmf(2).numpy(), numpy_flash_pmf(K, PAPER_WEIGHTS[2]), rtol=1e-12)  # Eq. 7 by default
    np.testing.assert_allclose(code.pmf(2).numpy(), numpy_code_pmf(K, PAPER_WEIGHTS[2]), rtol=1e-12)
    for bad in ({"spread": "Code"}, {"weights": [[1, 0, 0]]}, {"weights": [[-1, 1, 0, 0]]}, {"weights": [[0, 0, 0, 0]]}):
        with pytest.raises(ValueError):
            flash.make_config(bad)
    with pytest.raises(KeyError):  # sharp has no spread to choose
        components.get("timesteps", "sharp").make_config({"spread": "code"})


def test_flash_pmf_shape_of_phases():
    f = FlashMixture(K, 5000, 4)
    p0, p3 = f.pmf(0), f.pmf(3)
    assert float(p0[7]) == pytest.approx(float(p0[15]), rel=1e-12)  # p(8) == p(16)
    assert float(p0[23]) < 1e-20 and float(p0[31]) < 1e-20  # no mass at 24, 32 in warm-up
    assert int(p3.argmax()) + 1 == 32  # full noise is the most likely in the last phase
    # mass moves towards full noise phase after phase
    high = [float(f.pmf(ph)[22:].sum()) for ph in range(4)]  # grid indices 23..32
    assert high == sorted(high) and high[0] < 1e-20


@pytest.mark.parametrize("k", [16, 64])
def test_flash_pmf_other_k(k):
    for phase in range(4):
        np.testing.assert_allclose(FlashMixture(k, 10, 4).pmf(phase).numpy(), numpy_flash_pmf(k, PAPER_WEIGHTS[phase]), rtol=1e-12, atol=1e-15)


def test_phase_switching():
    f = FlashMixture(K, 5000, 4)
    assert [f.phase(it) for it in (0, 4999, 5000, 9999, 10000, 14999, 15000, 19999, 10**6)] == [0, 0, 1, 1, 2, 2, 3, 3, 3]
    f2 = Uniform(K, 7, 2)
    assert [f2.phase(it) for it in (0, 6, 7, 13, 14, 100)] == [0, 0, 1, 1, 1, 1]


def test_sampling_follows_pmf():
    f = FlashMixture(K, 100, 4)
    n = 200_000
    for it, phase in ((0, 0), (250, 2), (399, 3)):
        g = torch.Generator().manual_seed(1234 + it)
        idx = f.sample(g, n, it)
        assert idx.shape == (n,) and idx.dtype == torch.int64
        assert int(idx.min()) >= 1 and int(idx.max()) <= K
        freq = np.bincount(idx.numpy(), minlength=K + 1)[1:] / n
        expected = numpy_flash_pmf(K, PAPER_WEIGHTS[phase])
        # binomial std <= sqrt(.25 / n) ~ 1.1e-3; 5 sigma
        np.testing.assert_allclose(freq, expected, atol=5.6e-3)
        if phase == 0:
            assert freq[23] == 0 and freq[31] == 0
    # the same seed gives the same draws
    a = f.sample(torch.Generator().manual_seed(7), 50, 0)
    b = f.sample(torch.Generator().manual_seed(7), 50, 0)
    assert torch.equal(a, b)


def test_uniform():
    u = Uniform(K, 10, 4)
    for phase in range(4):
        p = u.pmf(phase)
        assert p.shape == (K,)
        np.testing.assert_allclose(p.numpy(), np.full(K, 1 / 32))
    idx = u.sample(torch.Generator().manual_seed(0), 64_000, 0)
    assert int(idx.min()) == 1 and int(idx.max()) == K
    freq = np.bincount(idx.numpy(), minlength=K + 1)[1:] / 64_000
    np.testing.assert_allclose(freq, 1 / 32, atol=4e-3)


def test_gaussian_centred_at_half():
    g = Gaussian(K, 10, 4, std=0.25)
    p = g.pmf(0).numpy()
    i = np.arange(1, K + 1) / K
    w = np.exp(-0.5 * ((i - 0.5) / 0.25) ** 2)
    np.testing.assert_allclose(p, w / w.sum(), rtol=1e-12)
    assert int(np.argmax(p)) + 1 == 16  # t = 16/32 = 0.5
    assert p[15 - 3] == pytest.approx(p[15 + 3], rel=1e-12)  # symmetric about t = 0.5
    assert p.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(g.pmf(3).numpy(), p)  # no phases


@pytest.mark.parametrize("k", [16, 32, 64])
def test_gaussian_default_width_is_the_authors(components, k):
    """The authors' p(i) proportional to exp(-(i - K/2)^2 / K), i.e. std 1/sqrt(2K) in t (0.125 at K = 32)."""
    i = np.arange(1, k + 1, dtype=np.float64)
    w = np.exp(-((i - k / 2) ** 2) / k)
    for dist in (Gaussian(k, 10, 4), components.get("timesteps", "gaussian").build({}, num_timesteps=k, phase_length=10, num_phases=4)):
        np.testing.assert_allclose(dist.pmf(0).numpy(), w / w.sum(), rtol=1e-12)
    assert Gaussian(32, 10, 4).std == pytest.approx(0.125)
    # a width given in the study is kept
    wide = components.get("timesteps", "gaussian").build({"std": 0.25}, num_timesteps=k, phase_length=10, num_phases=4)
    assert wide.std == 0.25


@pytest.mark.parametrize("bad", [{"std": -0.1}, {"std": float("nan")}, {"mean": 1.5}, {"mean": "0.5"}])
def test_gaussian_rejects_bad_options(components, bad):
    with pytest.raises(ValueError):
        components.get("timesteps", "gaussian").make_config(bad)


@pytest.mark.parametrize("phase", [0, 1, 2, 3])
def test_sharp_only_the_four_modes(phase):
    p = Sharp(K, 10, 4).pmf(phase).numpy()
    expected = np.zeros(K)
    for b, m in zip(PAPER_WEIGHTS[phase], (8, 16, 24, 32)):
        expected[m - 1] = b
    np.testing.assert_allclose(p, expected, atol=1e-15)
    idx = Sharp(K, 10, 4).sample(torch.Generator().manual_seed(3), 4000, 10 * phase)
    assert set(idx.tolist()) <= {8, 16, 24, 32}


# ==================================================================================================
# 2. the noise schedule
# ==================================================================================================


@pytest.fixture(scope="module")
def ddpm():
    from diffusers import DDPMScheduler

    return DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, num_train_timesteps=1000)


@pytest.fixture(scope="module")
def sched(ddpm):
    return NoiseSchedule(ddpm.alphas_cumprod)


def test_add_noise_matches_diffusers(ddpm, sched):
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(5, 2, 3, 3, generator=g, dtype=torch.float64)
    eps = torch.randn(5, 2, 3, 3, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 9, 249, 749, 999])
    ours = sched.add_noise(x0, eps, t)
    ref = ddpm.add_noise(x0, eps, t)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    # a python int timestep
    ref_499 = ddpm.add_noise(x0, eps, torch.full((5,), 499))
    torch.testing.assert_close(sched.add_noise(x0, eps, 499), ref_499, rtol=1e-12, atol=1e-12)
    # by hand: sqrt(ac) x0 + sqrt(1 - ac) eps
    ac = ddpm.alphas_cumprod.double()[t].reshape(-1, 1, 1, 1)
    torch.testing.assert_close(ours, ac.sqrt() * x0 + (1 - ac).sqrt() * eps, rtol=1e-12, atol=1e-12)


def test_x0_from_eps_inverts_add_noise(sched):
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(4, 3, 2, 2, generator=g, dtype=torch.float64)
    eps = torch.randn(4, 3, 2, 2, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 300, 700, 999])
    zt = sched.add_noise(x0, eps, t)
    torch.testing.assert_close(sched.x0_from_eps(zt, eps, t), x0, rtol=0, atol=1e-10)
    torch.testing.assert_close(sched.eps_from_x0(zt, x0, t), eps, rtol=0, atol=1e-10)
    # the clean state: alpha = 1, sigma = 0
    torch.testing.assert_close(sched.add_noise(x0, eps, CLEAN), x0)
    torch.testing.assert_close(sched.x0_from_eps(x0, eps, CLEAN), x0)
    assert float(sched.alpha(CLEAN, x0)) == 1.0 and float(sched.sigma(CLEAN, x0)) == 0.0


def test_grid_timestep(sched):
    got = sched.grid_timestep(torch.tensor([0, 8, 16, 24, 32]), 32)
    assert got.tolist() == [CLEAN, 249, 499, 749, 999]
    assert CLEAN == -1
    assert int(sched.grid_timestep(1, 32)) == 30  # 1000 // 32 - 1
    assert int(sched.grid_timestep(32, 32)) == 999
    assert sched.grid_timestep(torch.tensor([4, 8, 12, 16]), 16).tolist() == [249, 499, 749, 999]
    assert sched.grid_timestep(torch.tensor([16, 32, 48, 64]), 64).tolist() == [249, 499, 749, 999]


def test_sampling_timesteps(sched):
    assert sched.sampling_timesteps(4) == [999, 749, 499, 249]
    assert sched.sampling_timesteps(2) == [999, 499]
    assert sched.sampling_timesteps(1) == [999]
    assert sched.sampling_timesteps(8) == [999, 874, 749, 624, 499, 374, 249, 124]


def test_continuous_timestep(sched):
    assert sched.continuous_timestep(0.01) == 9
    assert sched.continuous_timestep(0.25) == 249
    assert sched.continuous_timestep(0.5) == 499
    assert sched.continuous_timestep(0.75) == 749
    assert sched.continuous_timestep(1.0) == 999
    assert sched.continuous_timestep(0.0) == 0
    # u in (0, 1] maps to round(u T) - 1: every teacher timestep t is hit by u = (t + 1) / T and by u
    # slightly off it
    for t in range(0, 1000, 37):
        for off in (-0.4, 0.0, 0.4):
            assert sched.continuous_timestep((t + 1 + off) / 1000) == t, (t, off)


def test_lambda_is_half_log_snr_and_monotone(ddpm, sched):
    ac = ddpm.alphas_cumprod.double().numpy()
    t = torch.arange(1000)
    lam = sched.lambda_(t).numpy()
    np.testing.assert_allclose(lam, 0.5 * np.log(ac / (1 - ac)), rtol=1e-10, atol=1e-12)
    snr = ac / (1 - ac)
    order = np.argsort(snr)
    assert np.all(np.diff(lam[order]) > 0)  # increasing in SNR
    assert np.all(np.diff(lam) < 0)  # SNR falls with t
    assert float(sched.lambda_(CLEAN)) == math.inf


# ==================================================================================================
# 3. classifier-free guidance
# ==================================================================================================


def test_cfg_combine_hand_numbers():
    ec = torch.tensor([[1.0, 2.0], [0.5, -1.0]])
    eu = torch.tensor([[0.0, 1.0], [1.5, 1.0]])
    # omega = 3: 3 ec - 2 eu
    torch.testing.assert_close(cfg_combine(ec, eu, 3.0), torch.tensor([[3.0, 4.0], [-1.5, -5.0]]))
    torch.testing.assert_close(cfg_combine(ec, eu, 1.0), ec)
    torch.testing.assert_close(cfg_combine(ec, eu, 0.0), eu)
    # one omega per sample: row 0 with omega 3, row 1 with omega 2 (2 ec - eu)
    torch.testing.assert_close(cfg_combine(ec, eu, torch.tensor([3.0, 2.0])), torch.tensor([[3.0, 4.0], [-0.5, -3.0]]))


def test_cfg_combine_per_sample_broadcast_4d():
    ec = torch.ones(3, 2, 2, 2)
    eu = torch.zeros(3, 2, 2, 2)
    out = cfg_combine(ec, eu, torch.tensor([1.0, 5.0, 13.0]))
    assert out.shape == (3, 2, 2, 2)
    for b, w in enumerate((1.0, 5.0, 13.0)):
        assert torch.all(out[b] == w)


def test_guided_eps_one_batched_call():
    calls = []

    def eps_fn(x, t, c):
        calls.append((x.clone(), t.clone(), {k: v.clone() for k, v in c.items()}))
        return 0.1 * x + 0.001 * t.to(x.dtype).reshape(-1, 1, 1, 1) + c["emb"].reshape(-1, 1, 1, 1)

    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 2, 2, 2, generator=g)
    t = torch.tensor([999, 499, 249])
    cond = {"emb": torch.tensor([1.0, 2.0, 3.0])}
    uncond = {"emb": torch.tensor([-1.0, -1.0, -1.0])}
    omega = torch.tensor([3.0, 7.5, 1.0])
    out = guided_eps(eps_fn, x, t, cond, uncond, omega)
    assert len(calls) == 1
    xb, tb, cb = calls[0]
    assert xb.shape[0] == 6
    torch.testing.assert_close(xb, torch.cat([x, x]))
    assert tb.tolist() == [999, 499, 249, 999, 499, 249]
    assert cb["emb"].tolist() == [1.0, 2.0, 3.0, -1.0, -1.0, -1.0]  # [cond; uncond]
    # the unbatched combination, by hand
    base = 0.1 * x + 0.001 * t.float().reshape(-1, 1, 1, 1)
    ec = base + cond["emb"].reshape(-1, 1, 1, 1)
    eu = base + uncond["emb"].reshape(-1, 1, 1, 1)
    expected = omega.reshape(-1, 1, 1, 1) * ec + (1 - omega.reshape(-1, 1, 1, 1)) * eu
    torch.testing.assert_close(out, expected)
    # a scalar timestep is expanded to the batch
    calls.clear()
    out2 = guided_eps(eps_fn, x, torch.tensor(499), cond, uncond, 3.0)
    assert len(calls) == 1 and calls[0][1].tolist() == [499] * 6
    assert out2.shape == x.shape


# ==================================================================================================
# 4. losses on known inputs
# ==================================================================================================

REAL = torch.tensor([0.5, 2.0, -1.0, 1.0])
FAKE = torch.tensor([0.0, 1.5, -0.5, 3.0])


def test_lsgan_hand_numbers():
    gan = L.LSGAN()
    # generator: 0.5 mean((fake - 1)^2) = 0.5 * (1 + .25 + 2.25 + 4) / 4 = 0.9375
    assert float(gan.generator(FAKE)) == pytest.approx(0.9375)
    # discriminator: 0.5 (mean((real-1)^2) + mean(fake^2)) = 0.5 * ((.25 + 1 + 4 + 0)/4 + (0 + 2.25 + .25 + 9)/4)
    #              = 0.5 * (1.3125 + 2.875) = 2.09375
    assert float(gan.discriminator(REAL, FAKE)) == pytest.approx(2.09375)


def test_lsgan_sigmoid_scores_are_the_authors():
    """The authors' LSGAN: mse_loss(sigmoid(D(fake)), 1) for the generator (no 1/2), and
    1/2 (mse_loss(sigmoid(D(real)), 1) + mse_loss(sigmoid(D(fake)), 0)) for the discriminator."""
    gan = L.LSGAN(scores="sigmoid")
    sig = [1 / (1 + math.exp(-x)) for x in FAKE.tolist()]
    sig_real = [1 / (1 + math.exp(-x)) for x in REAL.tolist()]
    # sigmoid(0) = 0.5, so the first fake term is (0.5 - 1)^2 = 0.25
    assert sig[0] == 0.5
    assert float(gan.generator(FAKE)) == pytest.approx(sum((v - 1) ** 2 for v in sig) / 4, rel=1e-6)
    expected_d = 0.5 * (sum((v - 1) ** 2 for v in sig_real) / 4 + sum(v * v for v in sig) / 4)
    assert float(gan.discriminator(REAL, FAKE)) == pytest.approx(expected_d, rel=1e-6)
    # bounded scores: a very confident head gives the generator (almost) no gradient, the raw LSGAN a large one
    fake = torch.tensor([-20.0], requires_grad=True)
    gan.generator(fake).backward()
    assert abs(float(fake.grad)) < 1e-7
    raw = torch.tensor([-20.0], requires_grad=True)
    L.LSGAN().generator(raw).backward()
    assert float(raw.grad) == pytest.approx(-21.0)
    with pytest.raises(ValueError, match="scores"):
        L.LSGAN(scores="logits")


def test_lsgan_plugin_options(components):
    lsgan = components.get("loss", "lsgan")
    assert lsgan.build({}, device="cpu").scores == "raw"  # Eq. 8 by default
    assert lsgan.build({"scores": "sigmoid"}, device="cpu").scores == "sigmoid"
    for bad in ({"scores": "Sigmoid"}, {"head": "authors"}):
        with pytest.raises(ValueError):
            lsgan.make_config(bad)


def test_hinge_hand_numbers():
    gan = L.Hinge()
    assert float(gan.generator(FAKE)) == pytest.approx(-1.0)  # -mean(fake) = -4/4
    # relu(1 - real) = [.5, 0, 2, 0] -> .625; relu(1 + fake) = [1, 2.5, .5, 4] -> 2.0
    assert float(gan.discriminator(REAL, FAKE)) == pytest.approx(2.625)


def test_wgan_hand_numbers():
    gan = L.WGAN()
    assert float(gan.generator(FAKE)) == pytest.approx(-1.0)
    # mean(fake) - mean(real) = 1.0 - 0.625
    assert float(gan.discriminator(REAL, FAKE)) == pytest.approx(0.375)


def test_gan_losses_gradient_direction():
    """The generator loss must decrease when the fake score moves towards 'real'."""
    for gan in (L.LSGAN(), L.Hinge(), L.WGAN()):
        fake = torch.tensor([0.1, -0.3], requires_grad=True)
        gan.generator(fake).backward()
        assert torch.all(fake.grad < 0), type(gan).__name__


def test_mse_distillation_hand_numbers():
    s = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    t = torch.tensor([[1.0, 0.0], [5.0, 4.0]])
    # (0 + 4 + 4 + 0) / 4 = 2
    assert float(L.MSEDistillation()(s, t)) == pytest.approx(2.0)
    assert float(L.MSEDistillation()(s, t, decode=None)) == pytest.approx(2.0)


def test_perceptual_distillation_decodes_and_averages():
    decoded = []

    def decode(z):
        decoded.append(z.clone())
        return 2 * z

    def distance(a, b):
        assert a.shape == b.shape == (3, 2)
        return (a - b).abs().sum(dim=1)  # per sample

    s = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    t = torch.tensor([[0.0, 0.0], [0.0, 0.5], [0.0, 0.0]])
    loss = L.PerceptualDistillation(distance, crop=0, clamp=False)(s, t, decode)
    # per-sample distances on the decoded (x2) latents: [2, 1, 4] -> mean 7/3
    assert float(loss) == pytest.approx(7 / 3)
    assert len(decoded) == 2
    torch.testing.assert_close(decoded[0], s)
    torch.testing.assert_close(decoded[1], t)
    # by default the decoded images are clamped to [-1, 1] (the authors' code): [[1, 0], [0, 0], [1, 1]] against
    # [[0, 0], [0, 1], [0, 0]] -> [1, 1, 2] -> mean 4/3
    assert float(L.PerceptualDistillation(distance)(s, t, decode)) == pytest.approx(4 / 3)


# ==================================================================================================
# 5. DMD
# ==================================================================================================


def test_dmd_gradient_parallel_to_score_difference(sched):
    g = torch.Generator().manual_seed(5)
    b = 4
    x0_s = torch.randn(b, 3, 4, 4, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.tensor([10, 300, 600, 950])
    zz = sched.add_noise(x0_s.detach(), torch.randn(b, 3, 4, 4, generator=g, dtype=torch.float64), t)
    # the teacher ("real") and the student ("fake") x0 predictions from zz (arbitrary here)
    x0_real = (x0_s.detach() + 0.3 * torch.randn(b, 3, 4, 4, generator=g, dtype=torch.float64)).requires_grad_(True)
    x0_fake = (x0_s.detach() + 0.3 * torch.randn(b, 3, 4, 4, generator=g, dtype=torch.float64)).requires_grad_(True)

    loss = L.dmd_loss(x0_s, x0_real, x0_fake)
    grad_s, grad_real, grad_fake = torch.autograd.grad(loss, [x0_s, x0_real, x0_fake], allow_unused=True)
    # no gradient through the stop-gradient targets
    assert grad_real is None or torch.all(grad_real == 0)
    assert grad_fake is None or torch.all(grad_fake == 0)

    # the scores, computed independently from zz with alpha^2 + sigma^2 = 1 from the diffusers table
    from diffusers import DDPMScheduler

    ac = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012).alphas_cumprod.double()[t]
    alpha, sigma2 = ac.sqrt().reshape(-1, 1, 1, 1), (1 - ac).reshape(-1, 1, 1, 1)
    s_teacher = -(zz - alpha * x0_real.detach()) / sigma2
    s_student = -(zz - alpha * x0_fake.detach()) / sigma2
    diff = (s_student - s_teacher).reshape(b, -1)
    gs = grad_s.reshape(b, -1)
    cos = torch.nn.functional.cosine_similarity(gs, diff, dim=1)
    torch.testing.assert_close(cos, torch.ones(b, dtype=torch.float64), rtol=0, atol=1e-10)
    # gradient descent moves the student sample towards the teacher's prediction: -grad . (real - fake) > 0
    assert torch.all((-gs * (x0_real - x0_fake).detach().reshape(b, -1)).sum(1) > 0)
    # the DMD normalisation: grad = 2 (fake - real) / mean|x0_s - real| / numel (the authors' mean MSE, no 1/2)
    w = (x0_s - x0_real).detach().abs().mean(dim=(1, 2, 3), keepdim=True)
    # (the loss is evaluated in float32, hence the tolerance)
    torch.testing.assert_close(grad_s, 2 * (x0_fake - x0_real).detach() / w / x0_s.numel(), rtol=1e-5, atol=1e-12)


def test_dmd_hand_computed_gradient_is_the_authors():
    """The authors' DMD: mse_loss(x_s, (x_s - g).detach(), reduction="mean") with g = (fake - real) / mean|x_s - real|.

    sample 0: x_s = [1, 2], real = [0, 0], fake = [1, 0]: w = (1 + 2)/2 = 1.5, g = [2/3, 0]
    sample 1: x_s = [3, 5], real = [1, 1], fake = [1, 3]: w = (2 + 4)/2 = 3,   g = [0, 2/3]
    loss = mean(g^2) = (4/9 + 4/9) / 4 = 2/9; d loss / d x_s = 2 g / 4 = [[1/3, 0], [0, 1/3]]
    (an extra 1/2 would give 1/9 and half this gradient).
    """
    x_s = torch.tensor([[1.0, 2.0], [3.0, 5.0]], requires_grad=True)
    real = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    fake = torch.tensor([[1.0, 0.0], [1.0, 3.0]])
    loss = L.DMDLoss()(x_s, real, fake)
    (grad,) = torch.autograd.grad(loss, x_s)
    assert float(loss) == pytest.approx(2 / 9, rel=1e-6)
    torch.testing.assert_close(grad, torch.tensor([[1 / 3, 0.0], [0.0, 1 / 3]]), rtol=1e-6, atol=1e-7)


def test_dmd_zero_when_scores_agree():
    x0_s = torch.randn(2, 4, requires_grad=True)
    same = torch.randn(2, 4)
    loss = L.DMDLoss()(x0_s, same, same.clone())
    (grad,) = torch.autograd.grad(loss, x0_s)
    assert loss.item() == 0.0 and torch.all(grad == 0)


# ==================================================================================================
# 6. the discriminator head
# ==================================================================================================


@pytest.mark.parametrize("size", [8, 4])
def test_discriminator_head(size):
    torch.manual_seed(0)
    head = DiscriminatorHead(in_channels=8, feature_size=size)
    feats = torch.randn(3, 8, size, size)
    out = head(feats)
    assert out.shape == (3,)
    assert torch.isfinite(out).all()
    L.LSGAN().discriminator(out, -out).backward()
    params = [p for p in head.parameters() if p.requires_grad]
    assert params and all(p.grad is not None for p in params)
    assert any(float(p.grad.abs().sum()) > 0 for p in params)
    # strided conv blocks: 8x8 -> 2 blocks, 4x4 -> 1 block (kernel 4, stride 2)
    convs = [m for m in head.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (4, 4)]
    assert len(convs) == {8: 2, 4: 1}[size]
    assert all(c.stride == (2, 2) for c in convs)
    assert any(isinstance(m, torch.nn.GroupNorm) for m in head.modules())
    assert any(isinstance(m, torch.nn.SiLU) for m in head.modules())


def test_authors_discriminator_head():
    """conv3x3 C->64, SiLU, conv4x4/2 ->128 (no bias), SiLU, GroupNorm(4), conv4x4 ->1 (no bias): on SD1.5's
    1280-channel 8x8 mid-block map, 1280*64*9 + 64 + 64*128*16 + 2*128 + 128*16 = 870,720 parameters."""
    from flashbench.method.discriminator import AuthorsHead, build_head
    from flashbench_plugins.teachers._sd_configs import FLASH_SD15_DISCRIMINATOR_PARAMS

    with torch.device("meta"):
        sd15 = build_head("code", 1280, 8)
    assert isinstance(sd15, AuthorsHead)
    assert sum(p.numel() for p in sd15.parameters()) == 870_720 == FLASH_SD15_DISCRIMINATOR_PARAMS
    convs = [m for m in sd15.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.kernel_size, c.stride, c.padding, c.bias is not None) for c in convs] == [
        ((3, 3), (1, 1), (1, 1), True),
        ((4, 4), (2, 2), (1, 1), False),
        ((4, 4), (1, 1), (0, 0), False),
    ]
    norms = [m for m in sd15.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert [(n.num_groups, n.num_channels) for n in norms] == [(4, 128)]
    torch.manual_seed(0)
    head = build_head("code", 8, 8)
    out = head(torch.randn(3, 8, 8, 8))
    assert out.shape == (3,) and torch.isfinite(out).all()
    torch.testing.assert_close(head(torch.randn(2, 8, 16, 16)[:1]).shape, torch.Size([1]))  # larger maps: averaged
    assert isinstance(build_head("paper", 8, 8), DiscriminatorHead)
    with pytest.raises(ValueError, match="8x8"):
        build_head("code", 8, 4)
    with pytest.raises(ValueError, match="head"):
        build_head("authors", 8, 8)


def test_discriminator_head_scores_are_per_sample():
    torch.manual_seed(0)
    head = DiscriminatorHead(in_channels=4, feature_size=8).eval()
    feats = torch.randn(3, 4, 8, 8)
    full = head(feats)
    torch.testing.assert_close(head(feats[1:2]), full[1:2])
