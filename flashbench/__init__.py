"""flashbench: Flash Diffusion distillation as a plugin-based benchmarking and ablation harness.

Importing this package is cheap: torch and the diffusion libraries load only when a component is built.
"""

from __future__ import annotations

import pluggy

__version__ = "0.1.0"
PROJECT_NAME = "flashbench"
ENTRY_POINT_GROUP = "flashbench"

hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

__all__ = ["hookimpl", "__version__", "PROJECT_NAME", "ENTRY_POINT_GROUP"]
