"""``image-captions``: a folder of images with their captions, for every task of the paper.

The folder holds the images (any PIL format, subfolders allowed) and one caption file: ``captions.jsonl``
(one JSON object a line, ``{"file": "cats/001.jpg", "text": "a cat on a sofa"}``) or ``captions.csv``
(a header row with ``file`` and ``text`` columns). For face-swap, a row may carry the face box
``"face_box": [x0, y0, x1, y1]`` in pixels of the original image (csv: a ``face_box`` column of 4 numbers).

Images are resized (short side, bicubic) and cropped to ``resolution`` x ``resolution``: centre crops,
or random crops for training when ``center_crop = false``. Pixels in [-1, 1].

Held-out split: a file is held out when the SHA-1 of its name (as listed), read as a number in [0, 1), is
below ``heldout_fraction`` (about that fraction of the files; at least one when there are two or more, and
at least one left for training). A file's side depends on its name alone: adding files never moves one.
Held-out files give the evaluation prompts (a seeded permutation, cycled when more are asked for), the
reference images (up to ``n``, distinct) and the evaluation extras; training draws from the rest.
``heldout_fraction = 0`` holds nothing out (evaluation then reads the training files).

Tasks (option ``task``): the degradations of :mod:`flashbench_plugins.datasets._degradations` build the
conditioning inputs of conditional tasks from the plain images and put them in ``Batch.extras``:
``t2i`` (none), ``inpaint`` (``mask``, ``masked_image``: random rectangles and brush strokes),
``superres`` (``low_res``: Real-ESRGAN-style blur, x``sr_scale`` downscale, noise, JPEG), ``faceswap``
(``source_face``, ``face_box``, ``face_mask``, ``masked_image``: the face cropped from its box, or from
the ``face_detector``'s box when the row has none). A task is an option of the image dataset rather
than a dataset wrapping another: one study line (``dataset = { name = "image-captions", path = "...",
task = "inpaint" }``) and the same task option on ``webdataset``.

Config: ``path`` (the folder, required), ``captions`` (the caption file's name in it; empty: captions.jsonl,
else captions.csv), ``file_key`` / ``text_key`` / ``box_key`` (column names: file, text, face_box),
``resolution`` (512), ``center_crop`` (true), ``heldout_fraction`` (0.05), ``task`` ("t2i"),
``sr_scale`` (4), ``face_detector`` ("boxes": given boxes only; "center"; or a plugin's: a component of kind
``face_detector``, see ``face_detectors``).
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from flashbench import hookimpl
from flashbench.errors import UserError

TASKS = ("t2i", "inpaint", "superres", "faceswap")
CAPTION_FILES = ("captions.jsonl", "captions.csv")


def check_task_options(owner: str, task: str, resolution: int, sr_scale: int) -> None:
    """Validation shared by the image datasets' configs (a ValueError names the bad option)."""
    if task not in TASKS:
        raise ValueError(f"{owner}: task must be one of {', '.join(TASKS)}, got {task!r}")
    if resolution < 8:
        raise ValueError(f"{owner}: resolution must be at least 8, got {resolution}")
    if task == "superres" and (sr_scale < 1 or resolution % sr_scale):
        raise ValueError(f"{owner}: resolution {resolution} must be a multiple of sr_scale {sr_scale}")


@dataclass(frozen=True)
class ImageCaptionsConfig:
    path: str = ""
    captions: str = ""
    file_key: str = "file"
    text_key: str = "text"
    box_key: str = "face_box"
    resolution: int = 512
    center_crop: bool = True
    heldout_fraction: float = 0.05
    task: str = "t2i"
    sr_scale: int = 4
    face_detector: str = "boxes"

    def __post_init__(self):
        check_task_options("image-captions", self.task, self.resolution, self.sr_scale)
        if not 0.0 <= self.heldout_fraction < 1.0:
            raise ValueError(f"image-captions: heldout_fraction must be in [0, 1), got {self.heldout_fraction}")


def read_rows(config: ImageCaptionsConfig) -> tuple[Path, Path, list[tuple[int, dict]]]:
    """(folder, caption file, [(line number, row)]) with one-line UserErrors for what is missing."""
    if not config.path:
        raise UserError("image-captions needs its path option: a folder of images with captions.jsonl or captions.csv")
    folder = Path(config.path).expanduser()
    if not folder.is_dir():
        raise UserError(f"image-captions: folder {folder} does not exist")
    if config.captions:
        found = folder / config.captions
        if not found.is_file():
            raise UserError(f"image-captions: caption file {found} does not exist")
    else:
        candidates = [folder / name for name in CAPTION_FILES if (folder / name).is_file()]
        if not candidates:
            raise UserError(f"image-captions: no {' or '.join(CAPTION_FILES)} in {folder}")
        found = candidates[0]
    rows: list[tuple[int, dict]] = []
    with open(found, encoding="utf-8", newline="") as fh:
        if found.suffix.lower() == ".csv":
            reader = csv.DictReader(fh)
            for key in (config.file_key, config.text_key):
                if key not in (reader.fieldnames or ()):
                    raise UserError(f"image-captions: {found} has no {key!r} column (columns: {', '.join(reader.fieldnames or ()) or 'none'})")
            rows = [(i + 2, row) for i, row in enumerate(reader)]
        else:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise UserError(f"image-captions: {found}:{lineno}: not JSON ({exc.msg})") from None
                if not isinstance(row, dict):
                    raise UserError(f"image-captions: {found}:{lineno}: expected an object with {config.file_key!r} and {config.text_key!r}")
                rows.append((lineno, row))
    if not rows:
        raise UserError(f"image-captions: {found} lists no images")
    return folder, found, rows


def build(config: ImageCaptionsConfig):
    from . import _degradations as deg
    from ._image_captions import ImageCaptions

    folder, caption_file, rows = read_rows(config)
    records = []
    for lineno, row in rows:
        where = f"{caption_file}:{lineno}"
        for key in (config.file_key, config.text_key):
            if row.get(key) is None:
                raise UserError(f"image-captions: {where}: missing {key!r}")
        file = str(row[config.file_key])
        image = folder / file
        if not image.is_file():
            raise UserError(f"image-captions: {where}: image {file} not found in {folder}")
        box = deg.parse_box(row.get(config.box_key), where)

        def open_image(p=image):
            from PIL import Image

            return Image.open(p)

        records.append(deg.Record(file, str(row[config.text_key]), box, open_image))

    train_idx, held_idx = deg.heldout_split([r.name for r in records], config.heldout_fraction)
    train = [records[i] for i in train_idx]
    held = [records[i] for i in held_idx] or train
    digest = hashlib.sha1("\n".join(r.name for r in held).encode("utf-8")).hexdigest()[:12]
    task = deg.make_task(config.task, sr_scale=config.sr_scale, face_detector_name=config.face_detector)
    batcher = deg.Batcher(config.resolution, config.center_crop, task)
    return ImageCaptions(batcher, f"image-captions:{folder.resolve()}:{config.resolution}:{digest}", train, held, num_heldout=len(held_idx))


@hookimpl
def register_datasets(register):
    register(
        "image-captions",
        build,
        config=ImageCaptionsConfig,
        description="image folder + captions.jsonl/csv; task t2i/inpaint/superres/faceswap builds the conditioning",
    )
