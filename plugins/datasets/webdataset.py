"""``webdataset``: tar shards of (image, json caption) samples, streamed through the ``webdataset`` library,
with LAION's aesthetic filter.

The paper trains on LAION samples with an aesthetic score above 6 (Sec. 5.1, 5.3), which is this
dataset's default: ``min_aesthetic = 6.0``. Shards follow the webdataset layout (as img2dataset writes
them): the files of a sample share a key (the name up to the first dot) and sit next to each other,
``000123.jpg`` + ``000123.json`` (+ ``000123.txt``). The caption is the json's ``text_key`` ("caption"),
else the ``.txt`` member; the score is the first of ``aesthetic_keys`` present in the json ("aesthetic" in
LAION-aesthetic metadata, "AESTHETIC_SCORE" in LAION-Aesthetics 6+). A sample without an image, a
caption or (when filtering) a score is skipped.

``shards``: a list of local paths, glob patterns (``/data/laion/*.tar``) and brace ranges
(``/data/laion/{00000..00099}.tar``), or URLs as the authors' configs name them: ``pipe:`` commands
(``pipe:cat /data/{000..099}.tar``, ``pipe:aws s3 cp s3://bucket/laion/{00000..00999}.tar -``), ``http(s)://``
(read with curl) and the other schemes of ``webdataset.gopen``. Shards are opened and parsed by the
``webdataset`` library (``gopen``, ``tarfile_samples``); braces are expanded as ``webdataset`` expands them.
Local paths are checked when the dataset is built; URLs when they are read.

Training stream (:mod:`flashbench_plugins.datasets._stream`): endless passes ("epochs") over the training
shards. Pass ``e`` deals the shards, in a seeded order shared by every process, round-robin to the
``world`` processes (split by node), and each process's shards round-robin to its DataLoader workers
(split by worker): each process reads and decodes only its own share, disjoint from the others', and the
shares of a pass make up the whole pass. Each worker shuffles its share of a pass through a buffer of
``shuffle_buffer`` samples (flushed at the end of the pass), decodes the images and builds the task's extras
(``num_workers`` DataLoader worker processes, default 2, overlapping the training step; 0 decodes in the
training process), and hands over whole per-process batches. Every process needs at least one training
shard; a process uses at most as many workers as it has shards.

Determinism. The stream's seed is drawn from the generator given to ``train_batches`` / ``train_batch``
(without advancing it). Every random choice is a function of that seed: the shard order of each pass, the
shuffle buffers, and each sample's crop and degradations (a generator seeded by the seed, the pass and the
sample's shard and key, so a sample is decoded identically whichever process or worker reads it). The same
seed gives the same batches for the same ``world``, ``rank``, ``batch_size``, ``shuffle_buffer`` and
``num_workers``; the *set* of samples a process reads in a pass depends on the seed and ``world`` only, so
changing ``num_workers`` changes the order of the samples, never which ones a process reads or how they are
decoded. A DataLoader hands the workers' batches over in a fixed round-robin order, so worker timing
never changes the order. Resuming at step ``start`` skips the first ``start`` batches (their samples are
read but not decoded), so a resumed run sees the batches of an uninterrupted one.

``train_batch(rng, n)`` (the single-process protocol): the stream of process 0 of 1, decoded in the calling
process; calls with the same generator object continue one stream, a new generator starts a new one.

Held-out split: the last ``heldout_shards`` shards in sorted order (default 1) are held out, when there are
more shards than that; otherwise nothing is held out and evaluation reads the training shards. The
evaluation pool is the first ``n`` samples of the held-out shards that pass the filter, in shard order;
prompts are those in a seeded order, reference images up to ``n`` of them.

Tasks: as ``image-captions`` (option ``task``: t2i, inpaint, superres, faceswap; the face box is the json's
``box_key``); see :mod:`flashbench_plugins.datasets._degradations`.

Config: ``shards`` (required), ``resolution`` (512), ``center_crop`` (true), ``text_key`` ("caption"),
``min_aesthetic`` (6.0; 0 switches the filter off), ``aesthetic_keys``, ``heldout_shards`` (1),
``shuffle_buffer`` (256), ``num_workers`` (2; 0: decode in the training process), ``box_key``
("face_box"), ``task`` ("t2i"), ``sr_scale`` (4), ``face_detector`` ("boxes").
"""

from __future__ import annotations

import copy
import glob
import hashlib
import json
import math
import numbers
import re
from dataclasses import dataclass
from pathlib import Path

from flashbench import hookimpl
from flashbench.errors import UserError

from .image_captions import check_task_options

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")  # a scheme of two letters or more (``C:\`` stays a path)


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
    num_workers: int = 2
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
        if isinstance(self.num_workers, bool) or not isinstance(self.num_workers, int) or self.num_workers < 0:
            raise ValueError(f"webdataset: num_workers must be a whole number >= 0 (0: decode in the training process), got {self.num_workers!r}")


@dataclass(frozen=True)
class Shard:
    """One tar shard: ``url`` is what ``webdataset.gopen`` opens (a local path, ``pipe:...``, ``https://...``),
    ``name`` its file name, for messages and sample names."""

    url: str
    name: str

    def __str__(self) -> str:
        return self.url


def shard_name(url: str) -> str:
    """The file name a URL reads: the last word naming a ``.tar`` (``pipe:aws s3 cp s3://b/00012.tar -`` ->
    ``00012.tar``), else the last word; without a query string."""
    words = url.split()
    word = next((w for w in reversed(words) if ".tar" in w), words[-1] if words else url)
    return word.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1].strip("'\"") or url


def expand_braces(pattern: str) -> list[str]:
    """``a{00..02}b`` -> a00b a01b a02b (zero padding kept); ``a{x,y}b`` -> axb ayb: webdataset's expansion."""
    from webdataset.shardlists import expand_urls

    return list(expand_urls(pattern))


def _check_scheme(url: str) -> None:
    from webdataset.gopen import gopen_schemes

    scheme = URL.match(url).group(1).lower()
    if scheme != "file" and scheme not in gopen_schemes:
        readable = ", ".join(f"{s}:" for s in sorted(gopen_schemes) if not s.startswith("_"))
        raise UserError(
            f"webdataset: webdataset cannot open {scheme}: URLs ({url}); it reads {readable} and local "
            f"paths; read it through a command, e.g. 'pipe:aws s3 cp {scheme}://bucket/shard.tar -'"
        )


def resolve_shards(patterns) -> list[Shard]:
    if not patterns:
        raise UserError("webdataset needs its shards option: a list of .tar paths, globs, {000..099} ranges or URLs (pipe:, https:)")
    found: dict[str, Shard] = {}
    for pattern in patterns:
        pattern = str(pattern)
        if URL.match(pattern):
            for url in expand_braces(pattern):
                _check_scheme(url)
                found.setdefault(url, Shard(url, shard_name(url)))
            continue
        for item in expand_braces(str(Path(pattern).expanduser())):
            matches = sorted(glob.glob(item)) if glob.has_magic(item) else ([item] if Path(item).is_file() else [])
            if not matches:
                raise UserError(f"webdataset: no shard matches {item}")
            for m in matches:
                found.setdefault(m, Shard(m, Path(m).name))
    return [found[url] for url in sorted(found)]


def read_shard(shard: Shard):
    """(key, {extension: bytes}) per sample, in file order, read by the webdataset library (which opens the URL
    with ``gopen`` and groups a sample's adjacent members by key); a read error is a one-line UserError."""
    import tarfile

    from webdataset.tariterators import tarfile_samples

    try:
        for sample in tarfile_samples([{"url": shard.url}]):
            yield sample["__key__"], {k: v for k, v in sample.items() if not k.startswith("__")}
    except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
        reason = str(exc.args[0]) if exc.args else type(exc).__name__
        reason = reason.split(" @ <", 1)[0]  # webdataset appends the stream object's repr
        status = re.search(r": exit (\d+) \(read\)", reason)
        status = int(status.group(1)) if status else _command_status(exc)
        if status not in (None, 0, 141):  # a pipe:/curl command failed (141: we closed its pipe): its stderr says why
            reason = f"the command exited with status {status}"
        raise UserError(f"webdataset: cannot read shard {shard.url}: {reason}".splitlines()[0]) from None


def _command_status(exc: BaseException) -> int | None:
    """The exit status of the command behind a failed read, when the reader was a ``pipe:``/curl command (the
    tar reader may fail on the empty output before webdataset has looked at the status)."""
    from webdataset.gopen import Pipe

    for arg in exc.args:
        if isinstance(arg, Pipe):
            try:
                return arg.proc.wait(timeout=10)
            except Exception:  # still running, or already reaped: no status to report
                return None
    return None


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

    def record(self, shard: Shard, key: str, members: dict):
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
        return deg.Record(name, str(text), box, _ImageBytes(members[ext]))


class _ImageBytes:
    """A record's ``open``: the encoded image, opened with PIL on demand (picklable, unlike a closure)."""

    def __init__(self, data: bytes):
        self.data = data

    def __call__(self):
        import io

        from PIL import Image

        return Image.open(io.BytesIO(self.data))


def make_batcher(config: WebDatasetConfig):
    from . import _degradations as deg

    task = deg.make_task(config.task, sr_scale=config.sr_scale, face_detector_name=config.face_detector)
    return deg.Batcher(config.resolution, config.center_crop, task)


def stream_seed(rng) -> int:
    """The training stream's seed: an int as given, else drawn from a copy of the generator (the caller's
    generator does not advance, so a checkpoint taken mid-run restores the seed the run started from)."""
    if isinstance(rng, numbers.Integral) and not isinstance(rng, bool):
        return int(rng) % 2**63
    return int(copy.deepcopy(rng).integers(2**63))


def build(config: WebDatasetConfig):
    from ._webdataset import WebDataset

    shards = resolve_shards(config.shards)
    if config.heldout_shards and len(shards) > config.heldout_shards:
        train_shards, held_shards = shards[: -config.heldout_shards], shards[-config.heldout_shards :]
    else:
        train_shards, held_shards = shards, shards
    batcher = make_batcher(config)
    key = hashlib.sha1("\n".join([*map(str, held_shards), str(config.min_aesthetic), *config.aesthetic_keys, config.text_key]).encode("utf-8")).hexdigest()[:12]
    return WebDataset(config, batcher, train_shards, held_shards, f"webdataset:{config.resolution}:{key}")


@hookimpl
def register_datasets(register):
    register(
        "webdataset",
        build,
        config=WebDatasetConfig,
        description="webdataset tar shards or pipe:/https: URLs (image + json caption), streamed by DataLoader "
        "workers, each process its own share; aesthetic filter (LAION, score >= 6)",
    )
