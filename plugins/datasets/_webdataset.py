"""The ``webdataset`` dataset's class (see :mod:`flashbench_plugins.datasets.webdataset` for the shards, the
filter and the split; :mod:`._stream` for the training stream). Imported when the dataset is built: it needs
torch. ``build`` resolves the shards and splits them."""

from __future__ import annotations

from flashbench.errors import UserError

from . import _stream
from ._degradations import Batcher, RecordDataset


class WebDataset(RecordDataset):
    name = "webdataset"

    def __init__(self, config, batcher: Batcher, train_shards: list, held_shards: list, reference_key: str):
        super().__init__(batcher, reference_key)
        self.config = config
        self.train_shards, self.heldout_shards = train_shards, held_shards
        self._stream_rng = None  # the generator whose stream train_batch continues
        self._samples = None
        self._seed = 0
        self._pool: list = []
        self._pool_complete = False

    def train_batches(self, rng, batch_size: int, rank: int = 0, world: int = 1, start: int = 0):
        """Endless batches of ``batch_size`` samples: process ``rank`` of ``world``'s share of the stream
        seeded by ``rng``, decoded by ``num_workers`` DataLoader workers, from batch ``start`` on."""
        from .webdataset import stream_seed

        return _stream.local_batches(self.config, self.train_shards, stream_seed(rng), batch_size, rank=rank, world=world, start=start)

    def train_batch(self, rng, batch_size):
        from .webdataset import stream_seed

        if self._stream_rng is not rng:
            self._stream_rng, self._seed = rng, stream_seed(rng)
            self._samples = _stream.share_samples(self.config, self.train_shards, self._seed, rank=0, world=1, worker=0, workers=1)
        return _stream.decode(self.batcher, self._seed, [next(self._samples) for _ in range(batch_size)])

    def eval_pool(self, n):
        # the shard reading and the filter live with the plugin's options (imported here, as _stream does)
        from .webdataset import SampleFilter, read_shard

        if len(self._pool) < n and not self._pool_complete:
            sample_filter = SampleFilter(self.config)
            pool = []
            for shard in self.heldout_shards:
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
                raise UserError(
                    f"webdataset: no sample of the held-out shard(s) {', '.join(s.name for s in self.heldout_shards)} "
                    f"passes the filter ({sample_filter.describe()})"
                )
            self._pool = pool
        return self._pool[:n]
