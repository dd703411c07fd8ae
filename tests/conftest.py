"""Shared fixtures. ``fake_components``: small registries built from an in-test plugin, so that study and
CLI tests run without the built-in plugins (and without torch)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pluggy
import pytest

from flashbench import PROJECT_NAME, hookimpl, hookspecs
from flashbench.plugins import collect_components


def _factory(config, **context):
    """A fake component (never built by these tests)."""
    return config


@dataclass(frozen=True)
class FakeTeacherConfig:
    resolution: int = 8
    channels: tuple[int, ...] = (8, 16)


@dataclass(frozen=True)
class FakeLSGANConfig:
    head_channels: int = 16
    label_smoothing: float = 0.0

    def __post_init__(self):
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")


@dataclass(frozen=True)
class FakeFlashConfig:
    sigma_scale: float = 1.0


class FakePlugin:
    """Registers one or two components of every kind, named like the built-ins."""

    @hookimpl
    def register_teachers(self, register):
        register("toy-digits", _factory, config=FakeTeacherConfig, description="fake toy teacher")

    @hookimpl
    def register_conditionings(self, register):
        register("text", _factory, description="fake text conditioning")

    @hookimpl
    def register_datasets(self, register):
        register("toy-digits", _factory, description="fake toy dataset")
        register("toy-prompts", _factory, description="fake prompt set")

    @hookimpl
    def register_losses(self, register):
        register("mse", _factory, tags=("distillation",), description="fake MSE")
        register("lpips", _factory, tags=("distillation",), description="fake LPIPS")
        register("lsgan", _factory, config=FakeLSGANConfig, tags=("adversarial",), description="fake LSGAN")
        register("hinge", _factory, tags=("adversarial",), description="fake hinge")
        register("wgan", _factory, tags=("adversarial",), description="fake WGAN")
        register("dmd", _factory, tags=("distribution_matching",), description="fake DMD")

    @hookimpl
    def register_timestep_distributions(self, register):
        register("flash", _factory, config=FakeFlashConfig, description="fake flash pi")
        register("uniform", _factory, description="fake uniform pi")

    @hookimpl
    def register_solvers(self, register):
        register("ddim", _factory, description="fake DDIM")
        register("dpm-solver", _factory, description="fake DPM-Solver")

    @hookimpl
    def register_samplers(self, register):
        register("flash", _factory, description="fake flash sampler")

    @hookimpl
    def register_evaluators(self, register):
        register("toy-fd", _factory, description="fake FD")
        register("toy-clip", _factory, description="fake CLIP score")

    @hookimpl
    def register_face_detectors(self, register):
        register("centre", _factory, description="fake face detector")


def make_fake_components():
    pm = pluggy.PluginManager(PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    pm.register(FakePlugin(), name="fake-plugin")
    return collect_components(pm)


@pytest.fixture
def fake_components():
    return make_fake_components()


@pytest.fixture
def write_study(tmp_path):
    """``write_study(text, name="study.toml") -> Path``."""

    def write(text: str, name: str = "study.toml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write


@pytest.fixture(scope="session")
def components():
    """The installed plugins (built-ins and entry points), collected once per test session."""
    return collect_components()


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one thread; two threads on a busy 2-core machine spin in OpenMP
    barriers (a 16x16 UNet forward goes from 6 ms to 2 s). Use with ``pytest.mark.usefixtures``."""
    import torch
    from threadpoolctl import threadpool_limits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(threads)


@pytest.fixture
def hub_offline(monkeypatch):
    """No Hugging Face Hub: the variable, and the constant huggingface_hub read from it at import."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
