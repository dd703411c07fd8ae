"""``toy-clip-score``: CLIP score through open_clip with the tiny CLIP trained here on the toy prompts
(``toy-digits-clip``: 3.6M parameters, 96% zero-shot accuracy over the 60 prompts on held-out digits).
Defined as in the paper's tables: the mean cosine similarity between image and prompt embeddings
(not x100). Not OpenCLIP-G: comparable only with other toy-clip-score numbers. Config: none.
"""

from __future__ import annotations

from flashbench import hookimpl


def build(config, *, device="cpu"):
    import open_clip

    from flashbench_plugins.toy.nets import CLIP_MODEL_NAME
    from flashbench_plugins.toy.perceptual import load_clip

    from ._toy_evaluators import ToyClipScore

    return ToyClipScore(load_clip(str(device)), open_clip.get_tokenizer(CLIP_MODEL_NAME), device)


@hookimpl
def register_evaluators(register):
    register("toy-clip-score", build, metric="clip_score", description="mean cosine similarity under a tiny CLIP trained on the toy prompts")
