"""Shared code of the image datasets (``image-captions``, ``webdataset``): image loading and cropping, the
held-out split, and the *tasks*: the degradations that build a conditional task's inputs from plain images.

A task turns a batch of training images into the ``extras`` the task's teacher reads (batch-first tensors):

==============  ================================================================================================
task            extras
==============  ================================================================================================
``t2i``         none
``inpaint``     ``mask`` (B, 1, H, W), 1 = the region to fill; ``masked_image`` (B, 3, H, W), the image with the
                hole set to 0 (mid-grey in [-1, 1]), as diffusers' inpainting pipelines build it
``superres``    ``low_res`` (B, 3, H/s, W/s) in [-1, 1]: a Real-ESRGAN-style degradation [70] of the image
                (Gaussian blur, x``s`` bicubic downscale, Gaussian noise, JPEG), ``s`` = ``sr_scale`` (4)
``faceswap``    ``source_face`` (B, 3, H, W): the face crop (the square around the face box, 20% margin, cut
                from the original image and resized to the resolution); ``face_box`` (B, 4) that square
                (x0, y0, x1, y1) in pixels of the training image; ``face_mask`` (B, 1, H, W), 1 inside it;
                ``masked_image``, the image with it blanked
==============  ================================================================================================

Every random choice is drawn from the ``numpy.random.Generator`` the caller passes: the same generator
state gives the same batch, degradations included.

Face boxes. A sample's box comes from its record (the ``face_box`` key of the captions file / the
webdataset json, ``[x0, y0, x1, y1]`` in pixels of the original image); a sample without one is given to
the *face detector*, any callable ``image (3, H, W) in [-1, 1] -> (x0, y0, x1, y1) | None`` (the
:class:`FaceDetector` protocol), called on the original image. Detectors are components of kind
``face_detector``, found in the registries the dataset is built from: the built-ins ``boxes`` (the default:
the given boxes only; a sample without one is an error) and ``center`` (a centred square of half the short
side, for pre-aligned face crops such as FFHQ), registered by :mod:`.face_detectors`, and any plugin's (a
real detector, RetinaFace, MTCNN, ..., registered with the ``register_face_detectors`` hook of a module of the
``flashbench`` entry-point group), selected with the dataset option ``face_detector = "retinaface"``.
"""

from __future__ import annotations

import hashlib
import io
import math
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F

from flashbench.errors import UserError
from flashbench.method.data import Batch, Dataset

Box = tuple[float, float, float, float]
FACE_MARGIN = 0.2  # the source face crop: the face box's square, grown by this fraction of its side on each side


# --- records and images ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Record:
    """One sample before decoding: a name (for messages and the held-out split), its caption, a face box
    in pixels of the original image (or None) and a callable opening the image as a PIL image."""

    name: str
    text: str
    box: Box | None
    open: Callable[[], "object"]


def to_tensor(img) -> torch.Tensor:
    """PIL RGB image -> (3, H, W) float32 in [-1, 1]."""
    arr = np.asarray(img.convert("RGB"), dtype=np.float32)
    return torch.from_numpy(arr).permute(2, 0, 1) / 127.5 - 1.0


def resize_and_crop(img, resolution: int, left_top: tuple[float, float] | None):
    """Resize the short side to ``resolution`` (bicubic) and crop a square; ``left_top`` in [0, 1]^2 places
    the crop (None: centre). Returns the (3, R, R) tensor and ``(sx, sy, left, top)`` to map boxes."""
    from PIL import Image

    w, h = img.size
    scale = resolution / min(w, h)
    nw, nh = max(resolution, round(w * scale)), max(resolution, round(h * scale))
    img = img.convert("RGB").resize((nw, nh), Image.BICUBIC)
    fx, fy = left_top if left_top is not None else (0.5, 0.5)
    left, top = int(round(fx * (nw - resolution))), int(round(fy * (nh - resolution)))
    img = img.crop((left, top, left + resolution, top + resolution))
    return to_tensor(img), (nw / w, nh / h, left, top)


def map_box(box: Box, transform, resolution: int) -> Box:
    """A box of the original image in pixels of the resized, cropped one (clamped to it: a face outside the
    crop gives an empty box)."""
    sx, sy, left, top = transform
    x0, y0, x1, y1 = (float(v) for v in box)
    out = (x0 * sx - left, y0 * sy - top, x1 * sx - left, y1 * sy - top)
    return tuple(min(max(v, 0.0), float(resolution)) for v in out)  # type: ignore[return-value]


def parse_box(value, where: str) -> Box | None:
    """``[x0, y0, x1, y1]`` (a list, or a string of 4 numbers) -> a box; empty -> None."""
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, str):
        value = value.replace(",", " ").split()
    try:
        box = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise UserError(f"{where}: face box {value!r} is not 4 numbers x0 y0 x1 y1") from None
    if len(box) != 4 or box[2] <= box[0] or box[3] <= box[1]:
        raise UserError(f"{where}: face box {value!r} must be x0 y0 x1 y1 with x1 > x0 and y1 > y0")
    return box  # type: ignore[return-value]


def _unit_hash(name: str) -> float:
    return int(hashlib.sha1(name.encode("utf-8")).hexdigest()[:12], 16) / 16**12


def heldout_split(names: Sequence[str], fraction: float) -> tuple[list[int], list[int]]:
    """(train, held-out) indices. A name is held out when its SHA-1, read as a number in [0, 1), is below
    ``fraction``: its side depends on the name alone, so adding files never moves one, and the listing order
    does not matter. Small folders: at least one name is held out when there are two or more (the smallest
    hash), and at least one is kept for training. ``fraction`` 0: nothing is held out."""
    n = len(names)
    if fraction <= 0 or n < 2:
        return list(range(n)), []
    hashes = [_unit_hash(name) for name in names]
    held = {i for i in range(n) if hashes[i] < fraction}
    if not held:
        held = {min(range(n), key=hashes.__getitem__)}
    if len(held) == n:
        held.discard(max(range(n), key=hashes.__getitem__))
    return [i for i in range(n) if i not in held], sorted(held)


# --- inpainting masks ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class MaskConfig:
    """Random masks, half rectangles, half free-form brush strokes (as LaMa / SD-inpainting trainers draw)."""

    rectangle_prob: float = 0.5
    max_rectangles: int = 3
    rectangle_side: tuple[float, float] = (0.1, 0.5)  # fraction of the image side
    max_strokes: int = 4
    max_vertices: int = 6
    stroke_width: tuple[float, float] = (0.05, 0.15)  # fraction of the short side
    stroke_length: tuple[float, float] = (0.1, 0.35)


def random_mask(rng: np.random.Generator, height: int, width: int, cfg: MaskConfig = MaskConfig()) -> np.ndarray:
    """(H, W) float32 mask, 1 = hole; never empty."""
    from PIL import Image, ImageDraw

    mask = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(mask)
    short = min(width, height)
    if rng.random() < cfg.rectangle_prob:
        for _ in range(int(rng.integers(1, cfg.max_rectangles + 1))):
            rw = max(1.0, rng.uniform(*cfg.rectangle_side) * width)
            rh = max(1.0, rng.uniform(*cfg.rectangle_side) * height)
            x0, y0 = rng.uniform(0, width - rw), rng.uniform(0, height - rh)
            draw.rectangle([x0, y0, x0 + rw - 1, y0 + rh - 1], fill=255)
    else:
        for _ in range(int(rng.integers(1, cfg.max_strokes + 1))):
            px, py = rng.uniform(0, width), rng.uniform(0, height)
            stroke = max(1, int(round(rng.uniform(*cfg.stroke_width) * short)))
            for _ in range(int(rng.integers(2, cfg.max_vertices + 1))):
                angle = rng.uniform(0, 2 * math.pi)
                length = rng.uniform(*cfg.stroke_length) * short
                qx = float(np.clip(px + length * math.cos(angle), 0, width - 1))
                qy = float(np.clip(py + length * math.sin(angle), 0, height - 1))
                draw.line([(px, py), (qx, qy)], fill=255, width=stroke)
                r = stroke / 2
                draw.ellipse([qx - r, qy - r, qx + r, qy + r], fill=255)  # round joints
                px, py = qx, qy
    out = (np.asarray(mask, dtype=np.float32) > 127).astype(np.float32)
    if not out.any():  # a degenerate draw on a tiny image: mask one pixel rather than nothing
        out[int(rng.integers(height)), int(rng.integers(width))] = 1.0
    return out


# --- super-resolution degradation ---------------------------------------------------------------------
@dataclass(frozen=True)
class SRDegradation:
    """A light, seeded, single-stage version of Real-ESRGAN's degradation [70]: blur, downscale, noise, JPEG.
    (Real-ESRGAN applies two such stages with more kernel shapes; this keeps its order and ranges.)"""

    blur_sigma: tuple[float, float] = (0.2, 3.0)  # Gaussian blur, in pixels of the high-resolution image
    noise_sigma: tuple[float, float] = (1.0, 25.0)  # Gaussian noise, in 8-bit levels
    gray_noise_prob: float = 0.4  # the same noise on all channels
    jpeg_quality: tuple[int, int] = (30, 95)


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """(C, H, W) image blurred by a separable Gaussian (kernel 2 ceil(3 sigma) + 1, reflect padding)."""
    radius = max(1, int(math.ceil(3 * sigma)))
    radius = min(radius, (min(image.shape[-2:]) - 1))  # reflect padding needs radius < size
    if radius < 1:
        return image
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = (k / k.sum()).to(image.dtype)
    c = image.shape[0]
    out = F.pad(image[None], (radius, radius, radius, radius), mode="reflect")
    out = F.conv2d(out, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    out = F.conv2d(out, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return out[0]


def jpeg(image01: torch.Tensor, quality: int) -> torch.Tensor:
    """(3, H, W) image in [0, 1] through a JPEG encode/decode at ``quality`` (PIL)."""
    from PIL import Image

    arr = (image01.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    return (to_tensor(Image.open(buf)) + 1) / 2


def degrade_low_res(image: torch.Tensor, rng: np.random.Generator, scale: int = 4, cfg: SRDegradation = SRDegradation()) -> torch.Tensor:
    """(3, H, W) in [-1, 1] -> its degraded (3, H/scale, W/scale) low-resolution version in [-1, 1]."""
    _, h, w = image.shape
    x = (image.float() + 1) / 2
    x = gaussian_blur(x, float(rng.uniform(*cfg.blur_sigma)))
    x = F.interpolate(x[None], size=(h // scale, w // scale), mode="bicubic", antialias=True, align_corners=False)[0]
    sigma = float(rng.uniform(*cfg.noise_sigma)) / 255.0
    gray = rng.random() < cfg.gray_noise_prob
    noise = rng.standard_normal((1 if gray else 3, *x.shape[1:])).astype(np.float32)
    x = (x + sigma * torch.from_numpy(noise)).clamp(0, 1)
    x = jpeg(x, int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1)))
    return x * 2 - 1


# --- face crops -----------------------------------------------------------------------------------------
@runtime_checkable
class FaceDetector(Protocol):
    """Finds the face to swap: ``image`` (3, H, W) in [-1, 1] -> (x0, y0, x1, y1) in its pixels, or None."""

    def __call__(self, image: torch.Tensor) -> Box | None: ...


class GivenBoxes:
    """The default detector: detects nothing, so every sample must carry its box (``face_box``)."""

    def __call__(self, image: torch.Tensor) -> Box | None:
        return None


class CenterBox:
    """A centred square of half the short side: the face of a pre-aligned face crop (FFHQ, CelebA-HQ)."""

    def __call__(self, image: torch.Tensor) -> Box | None:
        _, h, w = image.shape
        side = min(h, w) / 2
        cx, cy = w / 2, h / 2
        return (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)


def face_detector(name: str) -> FaceDetector:
    """The face detector ``name``: the component of kind ``face_detector`` of the registries the dataset being
    built was collected from (:func:`flashbench.registry.lookup`); unknown: one line with the closest name and
    the available ones."""
    from flashbench.registry import lookup

    return lookup("face_detector", name).build()


def square_box(box: Box, margin: float) -> Box:
    """The square around ``box``'s centre whose side is its longer side plus ``margin`` on each side."""
    x0, y0, x1, y1 = box
    side = max(x1 - x0, y1 - y0) * (1 + 2 * margin)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    return (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)


def crop_resize(image: torch.Tensor, box: Box, size: int) -> torch.Tensor:
    """The ``box`` region of a (C, H, W) image (zero padding where it leaves the image), resized to size x size."""
    _, h, w = image.shape
    x0, y0 = int(math.floor(box[0])), int(math.floor(box[1]))
    x1, y1 = max(x0 + 1, int(math.ceil(box[2]))), max(y0 + 1, int(math.ceil(box[3])))
    pad = (max(0, -x0), max(0, x1 - w), max(0, -y0), max(0, y1 - h))
    padded = F.pad(image, pad)
    crop = padded[:, y0 + pad[2] : y1 + pad[2], x0 + pad[0] : x1 + pad[0]]
    return F.interpolate(crop[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]


def box_mask(box: Box, height: int, width: int) -> torch.Tensor:
    """(1, H, W) float mask, 1 on the pixels whose centre lies in ``box``."""
    ys = torch.arange(height, dtype=torch.float32) + 0.5
    xs = torch.arange(width, dtype=torch.float32) + 0.5
    inside_y = (ys >= box[1]) & (ys < box[3])
    inside_x = (xs >= box[0]) & (xs < box[2])
    return (inside_y[:, None] & inside_x[None, :]).float()[None]


# --- tasks -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Decoded:
    """A decoded sample as the tasks see it: its original image (PIL), its face box in the original's pixels
    (or None) and the resize-and-crop that made the training image (``(sx, sy, left, top)``)."""

    name: str
    original: object
    box: Box | None
    transform: tuple[float, float, int, int]


class Task(Protocol):
    needs_boxes: bool

    def extras(self, images: torch.Tensor, samples: list[Decoded], rng: np.random.Generator) -> dict[str, torch.Tensor]: ...


class TextToImage:
    needs_boxes = False

    def extras(self, images, samples, rng):
        return {}


class Inpaint:
    needs_boxes = False

    def __init__(self, cfg: MaskConfig = MaskConfig()):
        self.cfg = cfg

    def extras(self, images, samples, rng):
        b, _, h, w = images.shape
        mask = torch.from_numpy(np.stack([random_mask(rng, h, w, self.cfg) for _ in range(b)]))[:, None]
        return {"mask": mask, "masked_image": images * (1 - mask)}


class SuperRes:
    needs_boxes = False

    def __init__(self, scale: int = 4, cfg: SRDegradation = SRDegradation()):
        self.scale, self.cfg = scale, cfg

    def extras(self, images, samples, rng):
        return {"low_res": torch.stack([degrade_low_res(im, rng, self.scale, self.cfg) for im in images])}


class FaceSwap:
    """The face is found (given box, else the detector) and cropped on the *original* image, at full
    resolution and wherever it is; its square is then mapped onto the training image for the mask."""

    needs_boxes = True

    def __init__(self, detector: FaceDetector, margin: float = FACE_MARGIN):
        self.detector, self.margin = detector, margin

    def extras(self, images, samples, rng):
        _, _, h, w = images.shape
        faces, squares = [], []
        for s in samples:
            original = to_tensor(s.original)
            box = s.box if s.box is not None else self.detector(original)
            if box is None:
                raise UserError(f"no face box for {s.name}: give face_box [x0, y0, x1, y1] with the sample or set a face_detector")
            square = square_box(tuple(float(v) for v in box), self.margin)
            faces.append(crop_resize(original, square, h))
            squares.append(map_box(square, s.transform, h))
        masks = torch.stack([box_mask(sq, h, w) for sq in squares])
        return {
            "source_face": torch.stack(faces),
            "face_box": torch.tensor(squares, dtype=torch.float32),
            "face_mask": masks,
            "masked_image": images * (1 - masks),
        }


def make_task(name: str, *, sr_scale: int = 4, face_detector_name: str = "boxes") -> Task:
    builders: dict[str, Callable[[], Task]] = {
        "t2i": TextToImage,
        "inpaint": Inpaint,
        "superres": lambda: SuperRes(sr_scale),
        "faceswap": lambda: FaceSwap(face_detector(face_detector_name)),
    }
    return builders[name]()


# --- batches -----------------------------------------------------------------------------------------
class Batcher:
    """Decodes records into a :class:`Batch`: resize + crop to ``resolution`` (random crop when training and
    ``center_crop`` is off; always centred for tasks with face boxes, where a random crop may cut the face),
    then the task's extras."""

    def __init__(self, resolution: int, center_crop: bool, task: Task):
        self.resolution, self.center_crop, self.task = resolution, center_crop, task

    def batch(self, records: Sequence[Record], rng: np.random.Generator, *, train: bool, with_extras: bool = True) -> Batch:
        images, samples = [], []
        for rec in records:
            centred = self.center_crop or not train or self.task.needs_boxes
            place = None if centred else (float(rng.random()), float(rng.random()))
            try:
                img = rec.open()
                img.load()
            except Exception as exc:  # PIL raises many types for a corrupt or unknown file
                raise UserError(f"cannot read image {rec.name}: {exc}".splitlines()[0]) from None
            tensor, transform = resize_and_crop(img, self.resolution, place)
            images.append(tensor)
            samples.append(Decoded(rec.name, img, rec.box, transform))
        stacked = torch.stack(images)
        extras = self.task.extras(stacked, samples, rng) if with_extras else {}
        return Batch(stacked, [r.text for r in records], extras)


# --- the datasets' shared behaviour --------------------------------------------------------------------
class RecordDataset(Dataset):
    """A dataset over :class:`Record` s. Subclasses give training records and a deterministic evaluation pool;
    evaluation prompts, extras and reference images are read from that pool (see each plugin's split rule)."""

    name = "records"

    def __init__(self, batcher: Batcher, reference_key: str):
        self.batcher = batcher
        self._reference_key = reference_key

    # subclasses
    def train_records(self, rng: np.random.Generator, n: int) -> list[Record]:
        raise NotImplementedError

    def eval_pool(self, n: int) -> list[Record]:
        """At least one and up to ``n`` held-out records, always the same ones for the same ``n``."""
        raise NotImplementedError

    # the Dataset interface
    def train_batch(self, rng, batch_size):
        return self.batcher.batch(self.train_records(rng, batch_size), rng, train=True)

    def eval_records(self, n: int, seed: int = 0) -> list[Record]:
        """``n`` records of the evaluation pool in a seeded order (cycled when the pool is smaller)."""
        pool = self.eval_pool(n)
        order = np.random.default_rng(seed).permutation(len(pool))
        return [pool[order[i % len(pool)]] for i in range(n)]

    def eval_prompts(self, n, seed=0):
        return [r.text for r in self.eval_records(n, seed)]

    def eval_extras(self, n: int, seed: int = 0) -> dict[str, torch.Tensor]:
        """The task's extras for the samples of ``eval_prompts(n, seed)`` (centre crops, degradations seeded
        by ``seed``): what a conditional teacher needs to sample for those prompts."""
        return self.batcher.batch(self.eval_records(n, seed), np.random.default_rng(seed), train=False).extras

    def reference_images(self, n, seed=0):
        """Up to ``n`` distinct held-out images (fewer when the split is smaller), centre-cropped."""
        pool = self.eval_pool(n)
        order = np.random.default_rng(seed).permutation(len(pool))[:n]
        return self.batcher.batch([pool[i] for i in order], np.random.default_rng(seed), train=False, with_extras=False).images

    def reference_id(self):
        return self._reference_key
