"""MS COCO caption prompt sets with their reference images: the paper's evaluation protocols (Tables 1-4).

Three names, one per protocol (evaluation only: ``train_batch`` raises a UserError):

=====================  =======  =======  ==============================================================
name                   split    prompts  reference images (FID)
=====================  =======  =======  ==============================================================
``coco2017-val``       val2017  5,000    all 5,000 val2017 images (Table 1, FID-5k, after Meng et al. [45])
``coco2014-val-30k``   val2014  30,000   all 40,504 val2014 images (Table 2, FID-30k, after GigaGAN [22])
``coco2014-val-10k``   val2014  10,000   the 10,000 images of those prompts (Tables 3 and 4, FID + CLIP)
=====================  =======  =======  ==============================================================

Prompt selection (fixed, no randomness; the paper does not publish its exact list, so this is ours, stored
with the results by :meth:`protocol`):

1. Read ``annotations/captions_<split>.json``. Every image listed in its ``images`` is a val image;
   captions whose ``image_id`` is not listed there are ignored.
2. **One caption per image**: of an image's captions, the one with the lowest annotation ``id``.
   Its text is stripped of leading and trailing whitespace (COCO captions carry stray newlines and
   spaces); nothing else is changed (case and punctuation kept).
3. Images in **ascending image id**; images without any caption are skipped.
4. The first ``N`` of that list: N = 5,000 for ``coco2017-val`` (every val2017 image), 30,000 for
   ``coco2014-val-30k`` (the 30,000 lowest image ids of val2014's 40,504), 10,000 for ``coco2014-val-10k``.
   "The first 10k prompts of COCO2014 val" is read as the first 10,000 entries of this list, so the 10k
   set is exactly the first third of the 30k set.

``selection()`` returns the selected ``(image_id, annotation_id, caption)`` triples in that order;
``eval_prompts(n, seed)`` the first ``n`` captions (the ``seed`` is ignored: the protocol is fixed, every
seed gets the same prompts; asking for more prompts than the selection holds is a UserError rather than
a silent repeat).

Reference images: the reference set in ascending image id, every image listed in the annotation file
(``reference = "all"``) or the images of the selected prompts in selection order (``"selected"``); the
default is the paper's per protocol (the table above; Tables 3-4 do not say which real images they used,
and "selected" pairs each prompt with its own image: set ``reference = "all"`` to compare with all
40,504). ``reference_images(n, seed)`` returns the first ``min(n, set size)`` of them as one tensor
(B, 3, R, R) in [-1, 1] (the ``seed`` is ignored); at R = 512 an image takes 3 MB as float32, so for the
full sets use ``reference_batches(n, seed, batch_size)``, which yields the same images in the same order,
``batch_size`` at a time, decoding with ``num_workers`` threads. ``reference_files(n)`` gives their paths
(for tools that read the original files themselves). Every image is converted to RGB (COCO holds some
greyscale JPEGs), its short side resized to R (bicubic) and centre-cropped to R x R, as the other image
datasets do. clean-fid resizes every image to 299 x 299 before Inception anyway; ``resolution`` only makes
the real images share the generated images' size, so both go through the same resize (512 for SD1.5;
set 1024 for SDXL and Pixart-alpha).

``reference_id()`` names the reference set for caching FID statistics:
``<name>:<split>:<R>px:<count>:<12 hex of the sha256 of the reference image ids>``. ``protocol()`` is a
JSON-serialisable dict of the selection (dataset, split, counts, rules, sha256 of the selected annotation
ids, of the captions and of the reference image ids) to store with results; it holds no local path, so
the same COCO files give the same dict on every machine.

Folder layout (``root``)::

    <root>/annotations/captions_val2017.json   <root>/val2017/000000000139.jpg ...
    <root>/annotations/captions_val2014.json   <root>/val2014/COCO_val2014_000000000042.jpg ...

from http://images.cocodataset.org/annotations/annotations_trainval2017.zip and
http://images.cocodataset.org/zips/val2017.zip (2014: ``annotations_trainval2014.zip``, ``val2014.zip``).
Building the dataset (before any training) reads the annotations and checks that every reference image is
in the image folder; what is missing is a one-line UserError naming the path and the download.

Config: ``root`` (the COCO folder; empty: the environment variable ``FLASHBENCH_COCO_DIR``),
``resolution`` (512), ``num_prompts`` (0: the protocol's count; fewer for quicker runs, the reference set
is unchanged unless it is "selected"), ``reference`` ("": the protocol's; "all" or "selected"),
``num_workers`` (image-decoding threads of ``reference_batches``; 0: min(8, CPU count)).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from flashbench import hookimpl
from flashbench.errors import UserError

ENV_VAR = "FLASHBENCH_COCO_DIR"
REFERENCE_CHOICES = ("all", "selected")
ANNOTATIONS_URL = "http://images.cocodataset.org/annotations/annotations_trainval{year}.zip"
IMAGES_URL = "http://images.cocodataset.org/zips/val{year}.zip"

PROMPT_RULE = (
    "one caption per image: the caption with the lowest annotation id (leading/trailing whitespace stripped); "
    "images in ascending image id, images without captions skipped; the first num_prompts of that list"
)
REFERENCE_RULES = {
    "all": "every image listed in the annotation file, in ascending image id",
    "selected": "the images of the selected prompts, in ascending image id",
}
IMAGE_RULE = "RGB, short side resized to resolution (PIL bicubic), centre crop resolution x resolution, [-1, 1]"


@dataclass(frozen=True)
class CocoProtocol:
    """One evaluation protocol: which split, how many prompts, which reference images."""

    name: str
    year: int
    num_prompts: int
    reference: str  # "all" or "selected"
    paper: str

    @property
    def split(self) -> str:
        return f"val{self.year}"

    @property
    def annotation_file(self) -> str:
        return f"annotations/captions_val{self.year}.json"


PROTOCOLS = {
    p.name: p
    for p in (
        CocoProtocol("coco2017-val", 2017, 5_000, "all", "Table 1: FID-5k vs the 5,000 val2017 images, CLIP score"),
        CocoProtocol("coco2014-val-30k", 2014, 30_000, "all", "Table 2: FID-30k vs the 40,504 val2014 images"),
        CocoProtocol("coco2014-val-10k", 2014, 10_000, "selected", "Tables 3-4: FID + CLIP on the first 10k prompts of val2014"),
    )
}


@dataclass(frozen=True)
class CocoConfig:
    root: str = ""
    resolution: int = 512
    num_prompts: int = 0
    reference: str = ""
    num_workers: int = 0

    def __post_init__(self):
        if self.resolution < 8:
            raise ValueError(f"coco: resolution must be at least 8, got {self.resolution}")
        if self.num_prompts < 0:
            raise ValueError(f"coco: num_prompts must be 0 (the protocol's count) or positive, got {self.num_prompts}")
        if self.reference not in ("", *REFERENCE_CHOICES):
            raise ValueError(f"coco: reference must be '', 'all' or 'selected', got {self.reference!r}")
        if self.num_workers < 0:
            raise ValueError(f"coco: num_workers must be 0 (automatic) or positive, got {self.num_workers}")


def sha256_lines(values) -> str:
    """sha256 of the values as text, one per line joined by "\\n" (no trailing newline)."""
    return hashlib.sha256("\n".join(str(v) for v in values).encode("utf-8")).hexdigest()


def how_to_get(protocol: CocoProtocol) -> str:
    return (
        f"download {ANNOTATIONS_URL.format(year=protocol.year)} and {IMAGES_URL.format(year=protocol.year)}, "
        f"unzip both into one folder and point the dataset option root (or {ENV_VAR}) at it"
    )


def resolve_root(protocol: CocoProtocol, config: CocoConfig) -> Path:
    """The COCO folder, with one-line UserErrors for a missing folder, annotation file or image folder."""
    raw = config.root or os.environ.get(ENV_VAR, "")
    need = f"{protocol.annotation_file} and {protocol.split}/"
    if not raw:
        raise UserError(f"{protocol.name}: no COCO folder given (dataset option root, or {ENV_VAR}); it must hold {need}: {how_to_get(protocol)}")
    root = Path(raw).expanduser()
    if not root.is_dir():
        raise UserError(f"{protocol.name}: COCO folder {root} does not exist; it must hold {need}: {how_to_get(protocol)}")
    if not (root / protocol.annotation_file).is_file():
        raise UserError(
            f"{protocol.name}: annotation file {root / protocol.annotation_file} not found: "
            f"unzip {ANNOTATIONS_URL.format(year=protocol.year)} into {root} (dataset option root, or {ENV_VAR})"
        )
    if not (root / protocol.split).is_dir():
        raise UserError(
            f"{protocol.name}: image folder {root / protocol.split} not found: "
            f"unzip {IMAGES_URL.format(year=protocol.year)} into {root} (dataset option root, or {ENV_VAR})"
        )
    return root


def read_captions(path: Path, owner: str) -> tuple[dict[int, str], list[tuple[int, int, str]]]:
    """({image id: file name}, [(image id, annotation id, caption)]) from a COCO captions json."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except json.JSONDecodeError as exc:
        raise UserError(f"{owner}: {path} is not JSON (line {exc.lineno}: {exc.msg}); re-extract the annotation zip") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{owner}: cannot read {path}: {exc}".splitlines()[0]) from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not isinstance(data.get("annotations"), list):
        raise UserError(f"{owner}: {path} is not a COCO captions file (no 'images' and 'annotations' lists)")
    try:
        images = {int(im["id"]): str(im["file_name"]) for im in data["images"]}
        captions = [(int(a["image_id"]), int(a["id"]), str(a["caption"])) for a in data["annotations"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{owner}: {path}: malformed image or annotation entry ({type(exc).__name__}: {exc})".splitlines()[0]) from None
    return images, captions


def select_prompts(images: dict[int, str], captions: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    """The full prompt list of the rule (module docstring): one (image id, annotation id, caption) per image."""
    first: dict[int, tuple[int, str]] = {}
    for image_id, ann_id, text in captions:
        if image_id in images and (image_id not in first or ann_id < first[image_id][0]):
            first[image_id] = (ann_id, text.strip())
    return [(image_id, *first[image_id]) for image_id in sorted(first)]


class CocoSelection:
    """The parsed protocol, without torch: the prompts, the reference images and their provenance."""

    def __init__(self, protocol: CocoProtocol, config: CocoConfig):
        self.protocol, self.config = protocol, config
        self.root = resolve_root(protocol, config)
        self.image_dir = self.root / protocol.split
        self.annotation_path = self.root / protocol.annotation_file
        images, captions = read_captions(self.annotation_path, protocol.name)
        full = select_prompts(images, captions)
        self.num_prompts = config.num_prompts or protocol.num_prompts
        if len(full) < self.num_prompts:
            raise UserError(
                f"{protocol.name}: {self.annotation_path} has captions for {len(full)} images, the protocol needs "
                f"{self.num_prompts}: use the complete {ANNOTATIONS_URL.format(year=protocol.year)} (or set num_prompts lower)"
            )
        self._selection = full[: self.num_prompts]
        self.reference = config.reference or protocol.reference
        ref_ids = sorted(images) if self.reference == "all" else [image_id for image_id, _, _ in self._selection]
        self.reference_image_ids = ref_ids
        self._reference_files = [self.image_dir / images[i] for i in ref_ids]
        self._check_images(images, ref_ids)

    def _check_images(self, images: dict[int, str], ref_ids: list[int]) -> None:
        # One directory listing instead of 40k stat calls (network file systems).
        present = set(os.listdir(self.image_dir))
        missing = [images[i] for i in ref_ids if images[i] not in present]
        if missing:
            raise UserError(
                f"{self.protocol.name}: {len(missing)} of {len(ref_ids)} reference images missing from {self.image_dir} "
                f"(first: {missing[0]}): unzip {IMAGES_URL.format(year=self.protocol.year)} into {self.root}"
            )

    def selection(self) -> list[tuple[int, int, str]]:
        return list(self._selection)

    def reference_files(self, n: int | None = None) -> list[Path]:
        """Paths of the first ``n`` reference images (all of them when ``n`` is None or larger)."""
        return list(self._reference_files if n is None else self._reference_files[: max(0, n)])

    @property
    def num_reference(self) -> int:
        return len(self._reference_files)

    def reference_id(self) -> str:
        p = self.protocol
        return f"{p.name}:{p.split}:{self.config.resolution}px:{self.num_reference}:{sha256_lines(self.reference_image_ids)[:12]}"

    def protocol_dict(self) -> dict:
        p = self.protocol
        return {
            "dataset": p.name,
            "source": f"MS COCO {p.year} captions",
            "split": p.split,
            "annotation_file": p.annotation_file,
            "paper": p.paper,
            "num_prompts": self.num_prompts,
            "protocol_num_prompts": p.num_prompts,
            "prompt_rule": PROMPT_RULE,
            "seed": "ignored: the same prompts and reference images for every seed",
            "reference": self.reference,
            "num_reference_images": self.num_reference,
            "reference_rule": REFERENCE_RULES[self.reference],
            "reference_resolution": self.config.resolution,
            "reference_preprocessing": IMAGE_RULE,
            "reference_id": self.reference_id(),
            "first_annotation_ids": [a for _, a, _ in self._selection[:5]],
            "annotation_ids_sha256": sha256_lines(a for _, a, _ in self._selection),
            "captions_sha256": sha256_lines(c for _, _, c in self._selection),
            "reference_image_ids_sha256": sha256_lines(self.reference_image_ids),
            "hash_rule": "sha256 of the values in selection order as decimal text / caption text, joined by '\\n'",
        }


def build(config: CocoConfig, *, protocol: CocoProtocol):
    from ._coco import CocoPrompts

    return CocoPrompts(CocoSelection(protocol, config), workers=config.num_workers or min(8, os.cpu_count() or 1))


def _builder(protocol: CocoProtocol):
    def factory(config: CocoConfig):
        return build(config, protocol=protocol)

    factory.__name__ = f"build_{protocol.name.replace('-', '_')}"
    factory.__doc__ = f"COCO {protocol.split} prompt set: {protocol.paper}."
    return factory


@hookimpl
def register_datasets(register):
    descriptions = {
        "coco2017-val": "COCO2017 val: 5,000 prompts (first caption of each image), FID vs the 5,000 val images (Table 1)",
        "coco2014-val-30k": "COCO2014 val: 30,000 prompts (first caption of the 30k lowest image ids), FID vs all 40,504 images (Table 2)",
        "coco2014-val-10k": "COCO2014 val: the first 10,000 of those prompts, FID vs their 10,000 images + CLIP (Tables 3-4)",
    }
    for name, protocol in PROTOCOLS.items():
        register(name, _builder(protocol), config=CocoConfig, description=descriptions[name])
