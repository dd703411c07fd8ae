"""``toy-lpips``: how far a sample drifts from the teacher's many-step sample from the same noise and
prompt, measured with the toy perceptual distance (LPIPS construction on the trained digit classifier,
see the ``lpips`` loss plugin). Lower is closer to the teacher. Config: none.
"""
from __future__ import annotations

from flashbench import hookimpl


def build(config, *, device="cpu"):
    import torch

    from flashbench.method.evaluation import MeanEvaluator
    from flashbench_plugins.toy.perceptual import toy_perceptual_distance

    class ToyLPIPS(MeanEvaluator):
        metric = "lpips_to_teacher"
        higher_is_better = False
        needs_teacher_reference = True

        def __init__(self):
            self.distance = toy_perceptual_distance(device)

        @torch.no_grad()
        def update(self, images, prompts, *, reference=None):
            if reference is None:
                raise ValueError("toy-lpips needs the teacher's many-step samples as reference")
            self.add(self.distance(images.float().clamp(-1, 1), reference.float().clamp(-1, 1)))

    return ToyLPIPS()


@hookimpl
def register_evaluators(register):
    register("toy-lpips", build, metric="lpips_to_teacher", description="toy perceptual distance to the teacher's many-step sample")
