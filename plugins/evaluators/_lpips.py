"""The ``lpips`` evaluator's class (see :mod:`flashbench_plugins.evaluators.lpips`). Imported when the evaluator
is built: it needs torch; the lpips network is loaded by ``build`` (or given by the caller of
:func:`~flashbench_plugins.evaluators.lpips.evaluator_for`) and handed in."""

from __future__ import annotations

import torch

from flashbench.method.evaluation import MeanEvaluator


class LPIPSToTeacher(MeanEvaluator):
    """``network(x, y)`` -> (B, 1, 1, 1) distances for images in [-1, 1], averaged over samples."""

    metric = "lpips_to_teacher"
    higher_is_better = False
    needs_teacher_reference = True

    def __init__(self, network, device="cpu"):
        self.network, self.device = network, device
        self.reset()

    @torch.no_grad()
    def distances(self, images, reference):
        if reference is None:
            raise ValueError("lpips needs the teacher's many-step samples as reference")
        if images.shape != reference.shape:
            raise ValueError(f"lpips: images {tuple(images.shape)} and teacher reference {tuple(reference.shape)} differ in shape")
        a = images.to(self.device).float().clamp(-1, 1)
        b = reference.to(self.device).float().clamp(-1, 1)
        return self.network(a, b).flatten().cpu()

    def update(self, images, prompts, *, reference=None):
        self.add(self.distances(images, reference))
