"""``toy-clip-score``: CLIP score through open_clip with the tiny CLIP trained here on the toy prompts
(``toy-digits-clip``: 3.6M parameters, 96% zero-shot accuracy over the 60 prompts on held-out digits).
Defined as in the paper's tables: the mean cosine similarity between image and prompt embeddings
(not x100). Not OpenCLIP-G: comparable only with other toy-clip-score numbers. Config: none.
"""
from __future__ import annotations

from flashbench import hookimpl


def build(config, *, device="cpu"):
    import open_clip
    import torch
    import torch.nn.functional as F

    from flashbench.method.evaluation import MeanEvaluator
    from flashbench_plugins.toy.nets import CLIP_MODEL_NAME
    from flashbench_plugins.toy.perceptual import load_clip

    class ToyClipScore(MeanEvaluator):
        metric = "clip_score"
        higher_is_better = True

        def __init__(self):
            self.model = load_clip(str(device))
            self.tokenizer = open_clip.get_tokenizer(CLIP_MODEL_NAME)

        @torch.no_grad()
        def update(self, images, prompts, *, reference=None):
            img = F.normalize(self.model.encode_image(images.to(device).float().clamp(-1, 1)), dim=-1)
            txt = F.normalize(self.model.encode_text(self.tokenizer(list(prompts)).to(device)), dim=-1)
            self.add((img * txt).sum(-1))

    return ToyClipScore()


@hookimpl
def register_evaluators(register):
    register("toy-clip-score", build, metric="clip_score", description="mean cosine similarity under a tiny CLIP trained on the toy prompts")
