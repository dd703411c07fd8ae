"""The plugin's own tests: flashbench's published teacher contract, and its registration."""

from __future__ import annotations

import pytest
import torch

from flashbench.testing import TeacherContract, tiny_text_prompts
from flashbench_tiny_teacher.pipeline import TinyUNetPipeline
from flashbench_tiny_teacher.plugin import TinyUNetConfig, build


class TestTinyUNetTeacher(TeacherContract):
    """Every test of flashbench.testing.TeacherContract, run against this plugin's teacher, with its opt-in
    stock-pipeline check (the offline and bf16 checks stay skipped: the weights are built, not downloaded)."""

    lora_rank = 4
    stock_pipeline = TinyUNetPipeline

    def make_teacher(self):
        return build(TinyUNetConfig(sample_size=8, block_out_channels=(32, 64)), device="cpu")

    def prompts(self):
        return tiny_text_prompts(3)

    def load_stock_pipeline(self, teacher):
        """A fresh pipeline: new modules with the same seeded weights (a real family loads its folder)."""
        return self.make_teacher().pipeline()

    def stock_sample(self, pipe, teacher):
        return pipe(self.prompts(), timesteps=[999, 749, 499, 249], generator=torch.Generator().manual_seed(0))


def test_same_config_same_weights():
    a = build(TinyUNetConfig(sample_size=8))
    b = build(TinyUNetConfig(sample_size=8))
    c = build(TinyUNetConfig(sample_size=8, seed=1))
    wa, wb, wc = (next(t.unet.parameters()) for t in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="divisible"):
        TinyUNetConfig(sample_size=9, block_out_channels=(32, 64))


def test_registered_through_the_hook():
    """What flashbench does with the entry point's module: collect it into the teacher registry."""
    import pluggy

    from flashbench import PROJECT_NAME, hookspecs
    from flashbench.plugins import collect_components
    from flashbench_tiny_teacher import plugin

    pm = pluggy.PluginManager(PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    pm.register(plugin, name="tiny_teacher")
    component = collect_components(pm).get("teacher", "tiny-unet")
    assert component.config is TinyUNetConfig
    assert component.make_config({"sample_size": 8}).sample_size == 8
