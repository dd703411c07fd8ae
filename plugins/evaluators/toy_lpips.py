"""``toy-lpips``: how far a sample drifts from the teacher's many-step sample from the same noise and
prompt, measured with the toy perceptual distance (LPIPS construction on the trained digit classifier,
see the ``lpips`` loss plugin). Lower is closer to the teacher. Config: none.
"""

from __future__ import annotations

from flashbench import hookimpl


def build(config, *, device="cpu"):
    from flashbench_plugins.toy.perceptual import toy_perceptual_distance

    from ._toy_evaluators import ToyLPIPS

    return ToyLPIPS(toy_perceptual_distance(device))


@hookimpl
def register_evaluators(register):
    register("toy-lpips", build, metric="lpips_to_teacher", description="toy perceptual distance to the teacher's many-step sample")
