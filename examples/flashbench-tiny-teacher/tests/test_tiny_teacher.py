"""The plugin's own tests: flashbench's published teacher contract, and its registration."""
from __future__ import annotations

import pytest
import torch

from flashbench.testing import TeacherContract, tiny_text_prompts
from flashbench_tiny_teacher.plugin import TinyUNetConfig, build


class TestTinyUNetTeacher(TeacherContract):
    """Every test of flashbench.testing.TeacherContract, run against this plugin's teacher."""

    lora_rank = 4

    def make_teacher(self):
        return build(TinyUNetConfig(sample_size=8, block_out_channels=(32, 64)), device="cpu")

    def prompts(self):
        return tiny_text_prompts(3)


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
