"""The training stream of ``webdataset``: each process's share of the shards, decoded in DataLoader workers.

Pass ``e`` over the training shards deals them, in an order drawn from ``(seed, e)`` and so shared by every
process, round-robin to the ``world`` processes (split by node: ``order[rank::world]``), then each process's
shards round-robin to its workers (split by worker: ``mine[worker::workers]``). Within a pass a worker reads
its shards one after the other (through ``webdataset``), shuffles the samples that pass the filter through a
buffer of ``shuffle_buffer`` (drawn from ``(seed, e, rank, world, worker, workers)``; flushed at the end of
the pass, so a pass's samples all come out before the next pass's), and decodes them into batches.

Each sample is decoded with its own generator, seeded by ``(seed, e, crc32(shard URL, key))``: its crop and
degradations do not depend on which process or worker reads it, nor on the batch it lands in.

The worker processes are a ``torch.utils.data.DataLoader`` over an iterable dataset with ``batch_size=None``
(each worker yields whole batches). With ``in_order`` (the default) the loader takes batch ``j`` from worker
``j % workers``, whatever the timing, so the order is fixed by the seed; resuming at batch ``start``, loader
worker ``i`` plays worker ``w = (i + start) % workers`` of the uninterrupted run and skips its batches below
``start`` (``ceil((start - w) / workers)`` of them) without decoding them. A
worker hands a one-line error (a :class:`Failure`) to the training process instead of raising: the DataLoader
would re-raise it wrapped in a worker traceback.
"""

from __future__ import annotations

import itertools
import zlib
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from flashbench.errors import UserError
from flashbench.method.data import Batch

PREFETCH_BATCHES = 2  # per worker: the next steps' batches decode while the current one trains


@dataclass(frozen=True)
class Failure:
    """A worker's error, raised as a UserError in the training process."""

    message: str


@dataclass(frozen=True)
class Item:
    """A sample of the stream before decoding: its pass, shard URL and key, and the record."""

    epoch: int
    url: str
    key: str
    record: object


def pass_shards(n_shards: int, seed: int, epoch: int, rank: int, world: int) -> list[int]:
    """The shard indices process ``rank`` of ``world`` reads in pass ``epoch`` (in reading order)."""
    order = np.random.default_rng([seed, epoch]).permutation(n_shards)
    return [int(i) for i in order[rank::world]]


def shards_per_process(n_shards: int, rank: int, world: int) -> int:
    return len(range(rank, n_shards, world))


def share_samples(config, shards, seed: int, *, rank: int, world: int, worker: int, workers: int) -> Iterator[Item]:
    """The endless stream of worker ``worker`` (of ``workers``) of process ``rank`` (of ``world``). A pass in which
    none of its shards' samples passes the filter is a UserError (reading on would loop for ever)."""
    from .webdataset import SampleFilter, read_shard

    sample_filter = SampleFilter(config)
    for epoch in itertools.count():
        mine = pass_shards(len(shards), seed, epoch, rank, world)[worker::workers]
        rng = np.random.default_rng([seed, epoch, rank, world, worker, workers])
        buffer: list[Item] = []
        passed = 0
        for i in mine:
            for key, members in read_shard(shards[i]):
                record = sample_filter.record(shards[i], key, members)
                if record is None:
                    continue
                passed += 1
                buffer.append(Item(epoch, shards[i].url, key, record))
                if len(buffer) >= config.shuffle_buffer:
                    yield _pop_random(buffer, rng)
        while buffer:
            yield _pop_random(buffer, rng)
        if not passed:
            whose = "" if world == workers == 1 else f" of process {rank} (worker {worker}) in pass {epoch}"
            raise UserError(f"webdataset: no sample of the {len(mine)} training shard(s){whose} passes the filter ({sample_filter.describe()})")


def _pop_random(buffer: list, rng: np.random.Generator):
    i = int(rng.integers(len(buffer)))
    buffer[i], buffer[-1] = buffer[-1], buffer[i]
    return buffer.pop()


def decode(batcher, seed: int, items: list[Item]) -> Batch:
    """Decode each sample with its own generator (see the module docstring) and stack them into one batch."""
    parts = []
    for item in items:
        sample_id = zlib.crc32(f"{item.url}\0{item.key}".encode("utf-8"))
        parts.append(batcher.batch([item.record], np.random.default_rng([seed, item.epoch, sample_id]), train=True))
    extras = {k: torch.cat([p.extras[k] for p in parts]) for k in parts[0].extras}
    return Batch(torch.cat([p.images for p in parts]), [t for p in parts for t in p.prompts], extras)


class ShareStream(IterableDataset):
    """One process's batches; in a DataLoader worker, that worker's part of them."""

    def __init__(self, config, shards, seed: int, batch_size: int, rank: int, world: int, start: int):
        self.config, self.shards, self.seed = config, shards, seed
        self.batch_size, self.rank, self.world, self.start = batch_size, rank, world, start

    def __iter__(self):
        from .webdataset import make_batcher

        info = get_worker_info()
        workers = info.num_workers if info is not None else 1
        # the loader asks worker i % workers for resumed batch i, which is batch start + i of the whole stream: so
        # this worker plays the part of worker (i + start) % workers of an uninterrupted run, and skips that one's
        # batches below start (j < start with j % workers == worker)
        worker = ((info.id if info is not None else 0) + self.start) % workers
        skip = max(0, -(-(self.start - worker) // workers))
        try:
            batcher = make_batcher(self.config)
            samples = share_samples(self.config, self.shards, self.seed, rank=self.rank, world=self.world, worker=worker, workers=workers)
            for _ in range(skip * self.batch_size):
                next(samples)  # read and filtered, not decoded
            while True:
                yield decode(batcher, self.seed, [next(samples) for _ in range(self.batch_size)])
        except UserError as exc:
            yield Failure(str(exc))


def _as_is(item):
    return item


def local_batches(config, shards, seed: int, batch_size: int, *, rank: int = 0, world: int = 1, start: int = 0) -> Iterator[Batch]:
    """Process ``rank`` of ``world``'s endless batches of ``batch_size``, from batch ``start`` on, decoded by
    ``config.num_workers`` workers (at most one per shard of the process; 0: in this process)."""
    if world < 1 or not 0 <= rank < world or batch_size < 1 or start < 0:
        raise ValueError(
            f"webdataset: need 0 <= rank < world, batch_size >= 1 and start >= 0; got rank {rank}, world {world}, batch_size {batch_size}, start {start}"
        )
    mine = shards_per_process(len(shards), rank, world)
    if mine == 0:
        raise UserError(
            f"webdataset: {len(shards)} training shard(s) for {world} processes: each process reads whole "
            f"shards, so give at least {world} (the last heldout_shards of the list are held out)"
        )
    stream = ShareStream(config, shards, seed, batch_size, rank, world, start)
    workers = min(config.num_workers, mine)
    if workers == 0:
        return _checked(iter(stream))
    loader = DataLoader(
        stream, batch_size=None, num_workers=workers, collate_fn=_as_is, prefetch_factor=PREFETCH_BATCHES, generator=torch.Generator().manual_seed(seed)
    )  # not the global RNG: workers' base seed only
    return _checked(iter(loader))


def _checked(source) -> Iterator[Batch]:
    for item in source:
        if isinstance(item, Failure):
            raise UserError(item.message)
        yield item
    raise UserError("webdataset: the training stream ended")  # not reached: a worker's stream ends with a Failure
