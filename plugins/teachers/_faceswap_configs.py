"""The ``faceswap`` teacher's LoRA default, read by both the plugin module (:mod:`.faceswap`, its config's
default) and the teacher class (:mod:`._faceswap`), so that neither imports the other at module level.

No torch import: the plugin module imports this cheaply.
"""

from __future__ import annotations

#: the default LoRA's targets: the transformer blocks' attention, projections and feed-forward layers
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2")
