"""The ``clip_score`` evaluator's class (see :mod:`flashbench_plugins.evaluators.clip_score` for the definition
and the weights). Imported when the evaluator is built: it needs torch; the open_clip model, its transform
and tokenizer are loaded by ``build`` and handed in."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from flashbench.method.evaluation import MeanEvaluator


def to_unit_range(images):
    """(B, 3, H, W) in [-1, 1] -> [0, 1], on the 8-bit grid a saved PNG would have (diffusers' rule)."""
    return ((images.detach().float() / 2 + 0.5).clamp(0, 1) * 255).round() / 255


class ClipScore(MeanEvaluator):
    metric = "clip_score"
    higher_is_better = True

    def __init__(self, config, model, preprocess, tokenizer, device="cpu"):
        self.config, self.device = config, device
        self.model, self.preprocess, self.tokenizer = model, preprocess, tokenizer
        self.dtype = next(model.parameters()).dtype
        self.reset()

    @torch.no_grad()
    def scores(self, images, prompts) -> torch.Tensor:
        """Per-sample cosine similarity (B,) between each image and its prompt."""
        if len(images) != len(prompts):
            raise ValueError(f"clip_score: {len(images)} images for {len(prompts)} prompts")
        out = []
        step = self.config.batch_size
        for i in range(0, len(prompts), step):
            pixels = self.preprocess(to_unit_range(images[i : i + step]).to(self.device))
            tokens = self.tokenizer(list(prompts[i : i + step])).to(self.device)
            img = F.normalize(self.model.encode_image(pixels.to(self.dtype)).float(), dim=-1)
            txt = F.normalize(self.model.encode_text(tokens).float(), dim=-1)
            out.append((img * txt).sum(-1).cpu())
        return torch.cat(out)

    def update(self, images, prompts, *, reference=None):
        self.add(self.scores(images, prompts))
