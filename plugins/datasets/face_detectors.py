"""The built-in face detectors (kind ``face_detector``): how a ``task = "faceswap"`` dataset (``image-captions``,
``webdataset``) finds the face of a sample that has no ``face_box``. Its ``face_detector`` option names one:

- ``boxes`` (the default): detects nothing, so every sample must carry its box;
- ``center``: a centred square of half the short side, the face of a pre-aligned face crop (FFHQ, CelebA-HQ).

A third party adds a real detector (RetinaFace, MTCNN, ...) like any component: a ``register_face_detectors``
hook in a module of the ``flashbench`` entry-point group (docs/plugins.md).

Deprecated: an entry point of the former group ``flashbench.face_detectors`` (its object, called with no
argument, returns the detector) is still registered here, under its name, and warns with a ``FutureWarning``
when a dataset builds it; it is skipped when ``FLASHBENCH_DISABLE_PLUGIN_AUTOLOAD`` is set.
"""

from __future__ import annotations

import os
import warnings

from flashbench import ENTRY_POINT_GROUP, hookimpl

#: the former entry-point group of face detectors (deprecated: use the register_face_detectors hook)
LEGACY_GROUP = "flashbench.face_detectors"
BUILTIN = ("boxes", "center")


def given_boxes(config):
    """the given face boxes only (the default): a sample without its face_box is an error"""
    from ._degradations import GivenBoxes

    return GivenBoxes()


def center_box(config):
    """a centred square of half the short side (pre-aligned face crops: FFHQ, CelebA-HQ)"""
    from ._degradations import CenterBox

    return CenterBox()


def _legacy_factory(ep):
    def build(config):
        warnings.warn(
            f"face_detector {ep.name!r} ({ep.value}) comes from the deprecated entry-point group {LEGACY_GROUP!r}: "
            f"register it with a register_face_detectors hook in a module of the {ENTRY_POINT_GROUP!r} group instead",
            FutureWarning,
            stacklevel=2,
        )
        return ep.load()()

    build.__doc__ = f"{ep.value} (deprecated entry-point group {LEGACY_GROUP})"
    return build


def legacy_entry_points() -> list:
    if os.environ.get("FLASHBENCH_DISABLE_PLUGIN_AUTOLOAD"):
        return []
    from importlib.metadata import entry_points

    return [ep for ep in entry_points(group=LEGACY_GROUP) if ep.name not in BUILTIN]


@hookimpl
def register_face_detectors(register):
    register("boxes", given_boxes)
    register("center", center_box)
    for ep in legacy_entry_points():
        register(ep.name, _legacy_factory(ep))
