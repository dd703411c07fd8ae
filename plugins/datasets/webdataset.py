"""``webdataset``: tar shards of (image, json caption) samples, streamed, with LAION's aesthetic filter.

The paper trains on LAION samples with an aesthetic score above 6 (Sec. 5.1, 5.3), which is this
dataset's default: ``min_aesthetic = 6.0``. Shards follow the webdataset layout (as img2dataset writes
them): the files of a sample share a key (the name up to the first dot) and sit next to each other,
``000123.jpg`` + ``000123.json`` (+ ``000123.txt``). The caption is the json's ``text_key`` ("caption"),
else the ``.txt`` member; the score is the first of ``aesthetic_keys`` present in the json ("aesthetic" in
LAION-aesthetic metadata, "AESTHETIC_SCORE" in LAION-Aesthetics 6+). A sample without an image, a
caption or (when filtering) a score is skipped. Read with the standard library's ``tarfile``: no
``webdataset`` dependency.

Streaming: training shards are read one after the other in a seeded order (a new order each pass) through
a shuffle buffer of ``shuffle_buffer`` samples; every random choice comes from the generator given to
``train_batch``, so the same seed gives the same batches. Only the buffer's encoded bytes are held in
memory.

Held-out split: the last ``heldout_shards`` shards in sorted order (default 1) are held out, when there are
more shards than that; otherwise nothing is held out and evaluation reads the training shards. The
evaluation pool is the first ``n`` samples of the held-out shards that pass the filter, in shard order;
prompts are those in a seeded order, reference images up to ``n`` of them.

``shards``: a list of paths, glob patterns (``/data/laion/*.tar``) or brace ranges
(``/data/laion/{00000..00099}.tar``), as webdataset writes them.

Tasks: as ``image-captions`` (option ``task``: t2i, inpaint, superres, faceswap; the face box is the json's
``box_key``); see :mod:`flashbench_plugins.datasets._degradations`.

Config: ``shards`` (required), ``resolution`` (512), ``center_crop`` (true), ``text_key`` ("caption"),
``min_aesthetic`` (6.0; 0 switches the filter off), ``aesthetic_keys``, ``heldout_shards`` (1),
``shuffle_buffer`` (256), ``box_key`` ("face_box"), ``task`` ("t2i"), ``sr_scale`` (4),
``face_detector`` ("boxes").
"""
from __future__ import annotations

import glob
import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from flashbench import hookimpl
from flashbench.errors import UserError

from .image_captions import check_task_options

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")


@dataclass(frozen=True)
class WebDatasetConfig:
    shards: tuple[str, ...] = ()
    resolution: int = 512
    center_crop: bool = True
    text_key: str = "caption"
    min_aesthetic: float = 6.0
    aesthetic_keys: tuple[str, ...] = ("aesthetic", "AESTHETIC_SCORE", "aesthetic_score")
    heldout_shards: int = 1
    shuffle_buffer: int = 256
    box_key: str = "face_box"
    task: str = "t2i"
    sr_scale: int = 4
    face_detector: str = "boxes"

    def __post_init__(self):
        if isinstance(self.shards, str):  # one pattern given as a plain string
            object.__setattr__(self, "shards", (self.shards,))
        check_task_options("webdataset", self.task, self.resolution, self.sr_scale)
        if self.heldout_shards < 0 or self.shuffle_buffer < 1:
            raise ValueError("webdataset: heldout_shards must be >= 0 and shuffle_buffer >= 1")


def expand_braces(pattern: str) -> list[str]:
    """``a{00..02}b`` -> a00b a01b a02b (zero padding kept); ``a{x,y}b`` -> axb ayb; nested left to right."""
    m = re.search(r"\{([^{}]*)\}", pattern)
    if not m:
        return [pattern]
    head, tail, body = pattern[: m.start()], pattern[m.end() :], m.group(1)
    rng = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if rng:
        lo, hi = rng.group(1), rng.group(2)
        width = len(lo) if lo.startswith("0") else 0
        items = [str(i).zfill(width) for i in range(int(lo), int(hi) + 1)]
    else:
        items = body.split(",")
    return [out for item in items for out in expand_braces(head + item + tail)]


def resolve_shards(patterns) -> list[Path]:
    if not patterns:
        raise UserError("webdataset needs its shards option: a list of .tar paths, globs or {000..099} ranges")
    found: list[Path] = []
    for pattern in patterns:
        for item in expand_braces(str(Path(pattern).expanduser())):
            matches = sorted(glob.glob(item)) if glob.has_magic(item) else ([item] if Path(item).is_file() else [])
            if not matches:
                raise UserError(f"webdataset: no shard matches {item}")
            found.extend(Path(m) for m in matches)
    return sorted(dict.fromkeys(found))


def read_shard(path: Path):
    """(key, {extension: bytes}) per sample, in file order; members of a sample are adjacent."""
    import tarfile

    key, members = None, {}
    try:
        with tarfile.open(path, mode="r|*") as tar:
            for info in tar:
                if not info.isfile():
                    continue
                name = info.name
                base = name.rsplit("/", 1)[-1]
                if "." not in base or base.startswith("."):
                    continue
                prefix = name[: len(name) - len(base)]
                stem, ext = base.split(".", 1)
                k = prefix + stem
                if k != key and members:
                    yield key, members
                    members = {}
                key = k
                members[ext.lower()] = tar.extractfile(info).read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise UserError(f"webdataset: cannot read shard {path}: {exc}".splitlines()[0]) from None
    if members:
        yield key, members


class SampleFilter:
    """Turns raw samples into records; counts why samples were skipped."""

    def __init__(self, config: WebDatasetConfig):
        self.config = config
        self.skipped = {"no image": 0, "no caption": 0, "no aesthetic score": 0, "below min_aesthetic": 0}

    def describe(self) -> str:
        c = self.config
        rule = f"aesthetic score >= {c.min_aesthetic} under {'/'.join(c.aesthetic_keys)}" if c.min_aesthetic > 0 else "no aesthetic filter"
        skipped = ", ".join(f"{v} {k}" for k, v in self.skipped.items() if v) or "none read"
        return f"{rule}; caption under {c.text_key!r} or .txt; skipped: {skipped}"

    def record(self, shard: Path, key: str, members: dict):
        from . import _degradations as deg

        c = self.config
        ext = next((e for e in IMAGE_EXTENSIONS if e in members), None)
        if ext is None:
            self.skipped["no image"] += 1
            return None
        meta = {}
        if "json" in members:
            try:
                meta = json.loads(members["json"].decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                meta = {}
            meta = meta if isinstance(meta, dict) else {}
        text = meta.get(c.text_key)
        if text is None and "txt" in members:
            text = members["txt"].decode("utf-8", errors="replace").strip()
        if text is None:
            self.skipped["no caption"] += 1
            return None
        if c.min_aesthetic > 0:
            score = next((meta[k] for k in c.aesthetic_keys if meta.get(k) is not None), None)
            try:
                score = float(score) if score is not None else math.nan
            except (TypeError, ValueError):
                score = math.nan
            if math.isnan(score):
                self.skipped["no aesthetic score"] += 1
                return None
            if score < c.min_aesthetic:
                self.skipped["below min_aesthetic"] += 1
                return None
        name = f"{shard.name}:{key}.{ext}"
        box = deg.parse_box(meta.get(c.box_key), name)
        data = members[ext]

        def open_image(data=data):
            import io

            from PIL import Image

            return Image.open(io.BytesIO(data))

        return deg.Record(name, str(text), box, open_image)


class ShuffledStream:
    """Endless stream of training records: shards in a new seeded order each pass, through a shuffle buffer."""

    def __init__(self, shards: list[Path], sample_filter: SampleFilter, buffer_size: int):
        self.shards, self.filter, self.buffer_size = shards, sample_filter, buffer_size
        self.buffer: list = []
        self._pass = None
        self._pass_count = 0

    def _records(self, order):
        for i in order:
            for key, members in read_shard(self.shards[i]):
                rec = self.filter.record(self.shards[i], key, members)
                if rec is not None:
                    yield rec

    def _pull(self, rng):
        for _ in range(2):
            if self._pass is None:
                self._pass = self._records(rng.permutation(len(self.shards)))
                self._pass_count = 0
            try:
                rec = next(self._pass)
                self._pass_count += 1
                return rec
            except StopIteration:
                self._pass = None
                if self._pass_count == 0:
                    break
        raise UserError(f"webdataset: no sample of the {len(self.shards)} training shard(s) passes the filter ({self.filter.describe()})")

    def take(self, rng, n: int) -> list:
        out = []
        for _ in range(n):
            while len(self.buffer) < self.buffer_size:
                self.buffer.append(self._pull(rng))  # data smaller than the buffer: it holds several passes
            i = int(rng.integers(len(self.buffer)))
            self.buffer[i], self.buffer[-1] = self.buffer[-1], self.buffer[i]
            out.append(self.buffer.pop())
        return out


def build(config: WebDatasetConfig):
    from . import _degradations as deg

    shards = resolve_shards(config.shards)
    if config.heldout_shards and len(shards) > config.heldout_shards:
        train_shards, held_shards = shards[: -config.heldout_shards], shards[-config.heldout_shards :]
    else:
        train_shards, held_shards = shards, shards
    task = deg.make_task(config.task, sr_scale=config.sr_scale, face_detector_name=config.face_detector)
    batcher = deg.Batcher(config.resolution, config.center_crop, task)
    key = hashlib.sha1(
        "\n".join([*map(str, held_shards), str(config.min_aesthetic), *config.aesthetic_keys, config.text_key]).encode("utf-8")
    ).hexdigest()[:12]

    class WebDataset(deg.RecordDataset):
        name = "webdataset"

        def __init__(self):
            super().__init__(batcher, f"webdataset:{config.resolution}:{key}")
            self.train_filter = SampleFilter(config)
            self.stream = ShuffledStream(train_shards, self.train_filter, config.shuffle_buffer)
            self._pool: list = []
            self._pool_complete = False

        def train_records(self, rng, n):
            return self.stream.take(rng, n)

        def eval_pool(self, n):
            if len(self._pool) < n and not self._pool_complete:
                sample_filter = SampleFilter(config)
                pool = []
                for shard in held_shards:
                    for k, members in read_shard(shard):
                        rec = sample_filter.record(shard, k, members)
                        if rec is not None:
                            pool.append(rec)
                            if len(pool) >= n:
                                break
                    if len(pool) >= n:
                        break
                else:
                    self._pool_complete = True
                if not pool:
                    raise UserError(f"webdataset: no sample of the held-out shard(s) {', '.join(s.name for s in held_shards)} "
                                    f"passes the filter ({sample_filter.describe()})")
                self._pool = pool
            return self._pool[:n]

    dataset = WebDataset()
    dataset.train_shards, dataset.heldout_shards = train_shards, held_shards
    return dataset


@hookimpl
def register_datasets(register):
    register("webdataset", build, config=WebDatasetConfig,
             description="webdataset tar shards (image + json caption), streamed, aesthetic filter (LAION, score >= 6)")
