"""The ``webdataset`` training stream: shards read through the webdataset library from a local ``pipe:cat``
URL, each process reading its own share (disjoint, the shares of a pass make up the whole pass), decoded in
DataLoader workers like in the training process, the same batches for the same seed, resuming at a step,
and the trainer asking a streaming dataset for its rank's share instead of slicing a global batch."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from types import SimpleNamespace

import numpy as np
import pluggy
import pytest
import torch
from PIL import Image

import flashbench.hookspecs
import flashbench.plugins
from flashbench.errors import UserError
from flashbench_plugins.datasets import webdataset

pytestmark = pytest.mark.usefixtures("one_thread")

SHARDS, PER_SHARD = 4, 4
EVERY = {f"s{s} j{j}" for s in range(SHARDS) for j in range(PER_SHARD)}


def _jpeg(seed: int) -> bytes:
    arr = (np.random.default_rng(seed).random((20, 28, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """shard-000.tar .. shard-003.tar, 4 samples each, captions "s<shard> j<sample>", all above the filter."""
    root = tmp_path_factory.mktemp("stream")
    for s in range(SHARDS):
        with tarfile.open(root / f"shard-{s:03d}.tar", "w") as tar:
            for j in range(PER_SHARD):
                meta = {"caption": f"s{s} j{j}", "aesthetic": 6.5, "face_box": [8, 4, 18, 14]}
                for name, data in ((f"{s:02d}{j:04d}.jpg", _jpeg(10 * s + j)), (f"{s:02d}{j:04d}.json", json.dumps(meta).encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return root


@pytest.fixture(scope="module")
def build():
    pm = pluggy.PluginManager("flashbench")
    pm.add_hookspecs(flashbench.hookspecs)
    pm.register(webdataset)
    factory = flashbench.plugins.collect_components(pm).get("dataset", "webdataset").build
    return lambda folder, **options: factory({"shards": (f"pipe:cat {folder}/shard-{{000..003}}.tar",), "resolution": 16, "heldout_shards": 0, **options})


def _take(stream, n):
    return [next(stream) for _ in range(n)]


def _by_prompt(batches) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
    out = {}
    for b in batches:
        for i, p in enumerate(b.prompts):
            assert p not in out, f"{p} twice in one pass"
            out[p] = (b.images[i], b.extras["mask"][i] if "mask" in b.extras else None)
    return out


def test_pipe_url_is_read_through_webdataset(build, folder):
    ds = build(folder, heldout_shards=1)
    assert [s.name for s in ds.train_shards] == ["shard-000.tar", "shard-001.tar", "shard-002.tar"]
    assert ds.heldout_shards[0].url == f"pipe:cat {folder}/shard-003.tar"
    batch = ds.train_batch(np.random.default_rng(0), 5)
    assert batch.images.shape == (5, 3, 16, 16) and -1 <= batch.images.min() and batch.images.max() <= 1
    assert set(batch.prompts) <= EVERY - {f"s3 j{j}" for j in range(PER_SHARD)}
    assert set(ds.eval_prompts(10)) == {f"s3 j{j}" for j in range(PER_SHARD)}  # the held-out shard, via the pipe too
    assert webdataset.shard_name("pipe:aws s3 cp s3://bucket/laion/00012.tar -") == "00012.tar"
    assert webdataset.shard_name("https://host/data/00012.tar?download=1") == "00012.tar"


@pytest.mark.parametrize("workers", [0, 2])
def test_two_ranks_read_disjoint_shares_that_make_up_each_pass(build, folder, workers):
    """World 2: a rank holds 2 shards (8 samples) per pass, so 2 batches of 4 are exactly its pass-0 share and
    the next 2 its pass-1 share (with 2 workers, one shard each: batch 0 from worker 0, batch 1 from worker 1)."""
    ds = build(folder, num_workers=workers)
    shares = [_take(ds.train_batches(np.random.default_rng(7), 4, rank=r, world=2), 4) for r in range(2)]
    for p in range(2):
        seen = [[q for b in share[2 * p : 2 * p + 2] for q in b.prompts] for share in shares]
        assert len(set(seen[0])) == len(seen[0]) == 8 and len(set(seen[1])) == 8
        assert not set(seen[0]) & set(seen[1])  # disjoint
        assert set(seen[0]) | set(seen[1]) == EVERY  # together, the whole pass
    assert {q for b in shares[0][:2] for q in b.prompts} != {q for b in shares[0][2:] for q in b.prompts}  # passes reshuffle shards


def test_worker_decoding_equals_in_process_decoding(build, folder):
    """num_workers = 2 reads the same samples as 0 in a pass, decoded bit-identically (crops and masks come from
    each sample's own generator), in another order."""
    decoded = {}
    for workers in (0, 2):
        ds = build(folder, num_workers=workers, task="inpaint", center_crop=False)
        decoded[workers] = _by_prompt(_take(ds.train_batches(np.random.default_rng(3), 4, rank=1, world=2), 2))
    assert decoded[0].keys() == decoded[2].keys() and len(decoded[0]) == 8
    for p, (image, mask) in decoded[0].items():
        assert torch.equal(image, decoded[2][p][0]) and torch.equal(mask, decoded[2][p][1]), p
    assert len({m.sum().item() for _, m in decoded[0].values()}) > 1  # masks differ between samples


def test_same_seed_same_batches(build, folder):
    rng = np.random.default_rng(11)
    state = rng.bit_generator.state
    a = _take(build(folder, num_workers=2, task="superres").train_batches(rng, 3, rank=0, world=1), 5)
    assert rng.bit_generator.state == state  # the seed is drawn from a copy: the caller's generator does not move
    b = _take(build(folder, num_workers=2, task="superres").train_batches(np.random.default_rng(11), 3, rank=0, world=1), 5)
    for x, y in zip(a, b):
        assert x.prompts == y.prompts and torch.equal(x.images, y.images) and torch.equal(x.extras["low_res"], y.extras["low_res"])
    other = _take(build(folder, num_workers=2).train_batches(np.random.default_rng(12), 3), 5)
    assert [x.prompts for x in a] != [x.prompts for x in other]
    # train_batch (one process, decoded here): the stream of process 0 of 1 with no workers, batch by batch
    ds = build(folder, num_workers=0)
    g = np.random.default_rng(11)
    single = [ds.train_batch(g, 3) for _ in range(5)]
    streamed = _take(ds.train_batches(np.random.default_rng(11), 3), 5)
    assert [x.prompts for x in single] == [x.prompts for x in streamed]
    assert ds.train_batch(np.random.default_rng(11), 3).prompts == single[0].prompts  # a new generator: a new stream


@pytest.mark.parametrize("workers", [0, 2])
def test_resuming_at_a_step_gives_the_uninterrupted_batches(build, folder, workers):
    ds = build(folder, num_workers=workers, shuffle_buffer=3)
    whole = _take(ds.train_batches(np.random.default_rng(5), 3, rank=1, world=2), 7)
    resumed = _take(ds.train_batches(np.random.default_rng(5), 3, rank=1, world=2, start=3), 4)
    assert [b.prompts for b in resumed] == [b.prompts for b in whole[3:]]
    assert all(torch.equal(x.images, y.images) for x, y in zip(resumed, whole[3:]))


def test_stream_errors_are_one_line(build, folder, tmp_path):
    with pytest.raises(UserError, match="4 training shard.* for 5 processes"):
        build(folder).train_batches(0, 2, rank=4, world=5)
    strict = build(folder, min_aesthetic=9.0)
    for workers in (0, 2):
        with pytest.raises(UserError) as info:
            next(build(folder, min_aesthetic=9.0, num_workers=workers).train_batches(0, 2, rank=0, world=2))
        message = str(info.value)
        assert "no sample" in message and "of process 0" in message and "below min_aesthetic" in message and "\n" not in message
    with pytest.raises(UserError, match="no sample of the 4 training shard"):
        strict.train_batch(np.random.default_rng(0), 1)
    missing = webdataset.build(webdataset.WebDatasetConfig(shards=(f"pipe:cat {tmp_path}/none-{{0..1}}.tar",), resolution=16))
    with pytest.raises(UserError) as info:
        next(missing.train_batches(0, 1))
    assert "cannot read shard pipe:cat" in str(info.value) and "exited with status 1" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(UserError, match="pipe:aws s3 cp"):
        webdataset.resolve_shards(["s3://bucket/{0..3}.tar"])
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="num_workers"):
            webdataset.WebDatasetConfig(shards=("x.tar",), num_workers=bad)


def test_trainer_asks_a_streaming_dataset_for_its_share():
    """FlashTrainer.local_batches: ``train_batches(rng, batch_size, rank=, world=, start=)`` when the dataset has
    it; otherwise a slice of each global batch, drawn from the generator as before."""
    from flashbench.method.data import Batch
    from flashbench.method.trainer import FlashTrainer

    calls = []

    class Streaming:
        def train_batches(self, rng, batch_size, rank=0, world=1, start=0):
            calls.append((batch_size, rank, world, start))
            return iter([Batch(torch.zeros(batch_size, 3, 2, 2), ["x"] * batch_size)] * 2)

        def train_batch(self, rng, batch_size):
            raise AssertionError("a streaming dataset's share is not sliced from a global batch")

    class Global:
        def train_batch(self, rng, batch_size):
            return Batch(torch.arange(batch_size, dtype=torch.float32).view(-1, 1, 1, 1), [str(i) for i in rng.integers(0, 100, batch_size)])

    trainer = SimpleNamespace(cfg=SimpleNamespace(batch_size=2), rank=1, world=3)
    trainer.local_batch = lambda batch: FlashTrainer.local_batch(trainer, batch)
    trainer._mine = lambda x: FlashTrainer._mine(trainer, x)
    next(FlashTrainer.local_batches(trainer, Streaming(), np.random.default_rng(0), start=5))
    assert calls == [(2, 1, 3, 5)]
    batches = FlashTrainer.local_batches(trainer, Global(), np.random.default_rng(0))
    first, second = next(batches), next(batches)
    assert first.images.flatten().tolist() == [2.0, 3.0]  # rank 1's slice of a global batch of 6
    g = np.random.default_rng(0)
    g.integers(0, 100, 6)
    assert second.prompts == [str(i) for i in g.integers(0, 100, 6)[2:4]]  # the second global batch, same generator


# a real two-process check: each process builds the dataset from the plugin registry and reads its share
_SHARE_SCRIPT = """
import json, sys
import numpy as np
from flashbench.plugins import collect_components
folder, rank = sys.argv[1], int(sys.argv[2])
ds = collect_components().get("dataset", "webdataset").build(
    {"shards": ["pipe:cat " + folder + "/shard-{000..003}.tar"], "resolution": 16, "heldout_shards": 0})
stream = ds.train_batches(np.random.default_rng(21), 4, rank=rank, world=2)
batches = [next(stream) for _ in range(2)]
print(json.dumps({b.prompts[i]: float(b.images[i].sum()) for b in batches for i in range(len(b.prompts))}))
"""


def test_two_processes_read_disjoint_samples(build, folder):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FLASHBENCH_DISABLE_PLUGIN_AUTOLOAD": "1"}
    procs = [
        subprocess.Popen([sys.executable, "-c", _SHARE_SCRIPT, str(folder), str(r)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        for r in range(2)
    ]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
        outs.append(json.loads(out.strip().splitlines()[-1]))
    assert len(outs[0]) == len(outs[1]) == 8 and not outs[0].keys() & outs[1].keys() and outs[0].keys() | outs[1].keys() == EVERY
    here = _by_prompt(_take(build(folder).train_batches(np.random.default_rng(21), 4, rank=1, world=2), 2))
    assert {p: float(im.sum()) for p, (im, _) in here.items()} == pytest.approx(outs[1])  # as the simulated rank 1 reads it


def test_training_on_the_stream_resumes_bit_for_bit(components, build, folder, tmp_path):
    """The training loop on the stream (2 workers): a run stopped after its step-2 checkpoint and resumed by a
    fresh trainer ends with the uninterrupted run's weights (the resumed stream skips the batches already used)."""
    from flashbench.config import ComponentSpec, TrainConfig
    from flashbench.training import TrainingLoop, build_trainer

    cfg = TrainConfig(
        teacher=ComponentSpec("toy-digits"),
        dataset=ComponentSpec("webdataset"),
        solver=ComponentSpec("ddim"),
        adv_loss=ComponentSpec("none"),
        dmd_loss=ComponentSpec("none"),
        num_timesteps=8,
        phase_length=2,
        iterations=4,
        batch_size=2,
        learning_rate=1e-2,
        disc_learning_rate=1e-2,
        guidance_min=1.5,
        guidance_max=3,
        checkpoint_every=2,
        trackers=(),
    )
    teacher = components.get("teacher", "toy-digits").build({}, device="cpu")
    dataset = build(folder, num_workers=2, task="t2i")

    def run(name, checkpoint, stop_after=None):
        trainer = build_trainer(cfg, components, teacher=teacher, seed=0, adapter_name=name)
        seen, step = [], trainer.step

        def recording(batch, it):
            if it == stop_after:
                raise KeyboardInterrupt
            seen.append(batch.prompts)
            return step(batch, it)

        trainer.step = recording
        try:
            TrainingLoop(trainer).run(dataset, cfg.iterations, seed=0, progress=False, checkpoint=checkpoint)
            return [p.detach().clone() for p in trainer.lora_params], seen
        finally:
            trainer.close()

    whole, whole_seen = run("whole", tmp_path / "a.safetensors")
    with pytest.raises(KeyboardInterrupt):
        run("crash", tmp_path / "b.safetensors", stop_after=3)
    resumed, resumed_seen = run("resumed", tmp_path / "b.safetensors")
    assert resumed_seen == whole_seen[2:]  # steps 2 and 3: the batches the uninterrupted run trained on
    assert all(torch.equal(a, b) for a, b in zip(whole, resumed))
    assert any(p.abs().max() > 0 for p in whole)
