"""The image dataset plugins (``image-captions``, ``webdataset``) and the task degradations that build the
inpainting / super-resolution / face-swap conditionings from plain images: loading, shapes and ranges,
determinism under a seeded generator, the held-out split, the aesthetic filter, and one-line errors."""

from __future__ import annotations

import io
import json
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
from flashbench.method.data import Batch, Dataset
from flashbench_plugins.datasets import _degradations as deg
from flashbench_plugins.datasets import face_detectors, image_captions, webdataset

pytestmark = pytest.mark.usefixtures("one_thread")

FACE = (20, 10, 36, 26)  # the white square of every test image, in pixels of the 56x40 original


def make_image(i: int) -> Image.Image:
    """56x40 noise (seeded by ``i``) with a white square at FACE."""
    arr = (np.random.default_rng(i).random((40, 56, 3)) * 200).astype(np.uint8)
    arr[FACE[1] : FACE[3], FACE[0] : FACE[2]] = 255
    return Image.fromarray(arr)


def write_folder(root, n=10, fmt="jsonl", boxes=True):
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        make_image(i).save(root / f"img{i:02d}.png")
        rows.append({"file": f"img{i:02d}.png", "text": f"caption {i}", **({"face_box": list(FACE)} if boxes else {})})
    if fmt == "jsonl":
        (root / "captions.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    else:
        lines = ["file,text,face_box"] + [f"{r['file']},{r['text']},{' '.join(map(str, FACE))}" for r in rows]
        (root / "captions.csv").write_text("\n".join(lines) + "\n")
    return root


def write_shard(path, samples):
    """``samples``: (key, json dict or None, txt or None, with_image) -> a webdataset tar."""
    with tarfile.open(path, "w") as tar:
        for key, meta, txt, with_image in samples:
            members = []
            if with_image:
                buf = io.BytesIO()
                make_image(int(key[-3:])).save(buf, format="JPEG", quality=95)
                members.append((f"{key}.jpg", buf.getvalue()))
            if meta is not None:
                members.append((f"{key}.json", json.dumps(meta).encode()))
            if txt is not None:
                members.append((f"{key}.txt", txt.encode()))
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture(scope="module")
def comps():
    pm = pluggy.PluginManager("flashbench")
    pm.add_hookspecs(flashbench.hookspecs)
    pm.register(image_captions)
    pm.register(webdataset)
    pm.register(face_detectors)
    return flashbench.plugins.collect_components(pm)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("captions") / "data")


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """Three shards of 6 samples: scores cycle 7.5, 5.0, 6.5, none; keys differ per shard; AESTHETIC_SCORE in
    shard 1. The last shard is the held-out one."""
    root = tmp_path_factory.mktemp("shards")
    for s in range(3):
        samples = []
        for j in range(6):
            k = s * 100 + j
            score = [7.5, 5.0, 6.5, None][j % 4]
            meta = {"caption": f"shard {s} sample {j}", "face_box": list(FACE)}
            if score is not None:
                meta["AESTHETIC_SCORE" if s == 1 else "aesthetic"] = score
            samples.append((f"s{s}/{k:06d}", meta, None, True))
        write_shard(root / f"part-{s:05d}.tar", samples)
    return root


def same_batch(a: Batch, b: Batch) -> bool:
    return (
        torch.equal(a.images, b.images)
        and a.prompts == b.prompts
        and a.extras.keys() == b.extras.keys()
        and all(torch.equal(a.extras[k], b.extras[k]) for k in a.extras)
    )


# --- image-captions --------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_image_captions_loads_batches(comps, tmp_path, fmt):
    root = write_folder(tmp_path / fmt, n=6, fmt=fmt)
    ds = comps.get("dataset", "image-captions").build({"path": str(root), "resolution": 24})
    assert isinstance(ds, Dataset)
    batch = ds.train_batch(np.random.default_rng(0), 5)
    assert batch.images.shape == (5, 3, 24, 24) and batch.images.dtype == torch.float32
    assert batch.images.min() >= -1 and batch.images.max() <= 1 and batch.images.max() == 1  # the white square
    assert len(batch.prompts) == 5 and all(p.startswith("caption ") for p in batch.prompts)
    assert batch.extras == {}


def test_image_captions_is_deterministic_and_splits(comps, folder):
    build = comps.get("dataset", "image-captions").build
    ds = build({"path": str(folder), "resolution": 16, "center_crop": False, "heldout_fraction": 0.2})
    again = build({"path": str(folder), "resolution": 16, "center_crop": False, "heldout_fraction": 0.2})
    a = [ds.train_batch(np.random.default_rng(3), 4) for _ in range(2)]
    rng = np.random.default_rng(3)
    b1 = again.train_batch(rng, 4)
    b2 = again.train_batch(rng, 4)
    assert same_batch(a[0], b1) and not same_batch(b1, b2)
    other = again.train_batch(np.random.default_rng(4), 4)
    assert not torch.equal(other.images, b1.images)
    # held-out: 2 of 10 files, never drawn for training, the source of eval prompts and reference images
    assert ds.num_heldout >= 1 and ds.num_heldout + ds.num_train == 10
    held = set(ds.eval_prompts(50, seed=0))
    assert len(held) == ds.num_heldout
    drawn = {p for _ in range(20) for p in ds.train_batch(np.random.default_rng(_), 8).prompts}
    assert not held & drawn
    assert ds.eval_prompts(5, seed=1) == again.eval_prompts(5, seed=1)
    refs = ds.reference_images(8, seed=0)
    assert refs.shape == (ds.num_heldout, 3, 16, 16)  # up to n distinct held-out images
    assert ds.reference_id() == again.reference_id()


def test_heldout_split_is_stable_when_files_are_added():
    names = [f"img{i}.png" for i in range(400)]
    train, held = deg.heldout_split(names, 0.05)
    assert 5 <= len(held) <= 40 and not set(train) & set(held) and len(train) + len(held) == 400
    more = names + [f"new{i}.png" for i in range(400)]
    _, held_more = deg.heldout_split(more, 0.05)
    assert {names[i] for i in held} == {more[i] for i in held_more if i < 400}  # no file changed side
    shuffled = list(reversed(names))
    assert {shuffled[i] for i in deg.heldout_split(shuffled, 0.05)[1]} == {names[i] for i in held}
    assert deg.heldout_split(names, 0.0) == (list(range(400)), [])
    assert len(deg.heldout_split(names[:2], 0.01)[1]) == 1 and deg.heldout_split(names[:1], 0.5) == ([0], [])
    assert len(deg.heldout_split(names[:3], 0.99)[0]) >= 1


def test_random_crop_moves_the_face_box(comps, folder):
    ds = comps.get("dataset", "image-captions").build({"path": str(folder), "resolution": 20, "center_crop": False, "heldout_fraction": 0})
    crops = {tuple(ds.train_batch(np.random.default_rng(s), 1).images[0, 0, 0, :3].tolist()) for s in range(6)}
    assert len(crops) > 1  # random crops differ; centre crops below do not
    centre = comps.get("dataset", "image-captions").build({"path": str(folder), "resolution": 20, "heldout_fraction": 0})
    rec = centre.batcher.batch([centre.eval_pool(1)[0]] * 2, np.random.default_rng(0), train=True, with_extras=False)
    assert torch.equal(rec.images[0], rec.images[1])


@pytest.mark.parametrize("case", ["no-option", "no-folder", "no-captions", "empty", "missing-image", "bad-json", "no-column"])
def test_image_captions_errors_are_one_line(comps, tmp_path, case):
    root = tmp_path / "d"
    options = {"path": str(root)}
    if case == "no-option":
        options = {}
    elif case != "no-folder":
        root.mkdir()
        if case == "empty":
            (root / "captions.jsonl").write_text("\n")
        elif case == "missing-image":
            (root / "captions.jsonl").write_text(json.dumps({"file": "gone.png", "text": "x"}) + "\n")
        elif case == "bad-json":
            (root / "captions.jsonl").write_text("{not json\n")
        elif case == "no-column":
            (root / "captions.csv").write_text("path,caption\na.png,x\n")
    with pytest.raises(UserError) as info:
        comps.get("dataset", "image-captions").build(options)
    message = str(info.value)
    assert "\n" not in message and message.startswith("image-captions")
    if case != "no-option":
        assert str(root) in message
    expected = {
        "no-option": "path option",
        "no-folder": "does not exist",
        "no-captions": "captions.jsonl or captions.csv",
        "empty": "lists no images",
        "missing-image": "gone.png not found",
        "bad-json": "not JSON",
        "no-column": "'file' column",
    }
    assert expected[case] in message


def test_bad_options_are_rejected_by_the_config(comps):
    component = comps.get("dataset", "image-captions")
    for options, text in (
        ({"task": "colorize"}, "task must be one of"),
        ({"task": "superres", "resolution": 30}, "multiple of sr_scale"),
        ({"heldout_fraction": 1.0}, "heldout_fraction"),
    ):
        with pytest.raises(ValueError, match=text):
            component.make_config(options)
    with pytest.raises(ValueError, match="task must be one of"):
        comps.get("dataset", "webdataset").make_config({"task": "t2v"})


# --- tasks: masks, low-res, face crops ---------------------------------------------------------------
def test_inpaint_masks(comps, folder):
    ds = comps.get("dataset", "image-captions").build({"path": str(folder), "resolution": 32, "task": "inpaint"})
    batch = ds.train_batch(np.random.default_rng(0), 6)
    mask, masked = batch.extras["mask"], batch.extras["masked_image"]
    assert mask.shape == (6, 1, 32, 32) and masked.shape == (6, 3, 32, 32)
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    area = mask.mean(dim=(1, 2, 3))
    assert (area > 0).all() and (area < 1).all()
    assert torch.equal(masked, batch.images * (1 - mask)) and (masked[mask.expand_as(masked) == 1] == 0).all()
    assert same_batch(batch, ds.train_batch(np.random.default_rng(0), 6))
    assert not torch.equal(mask, ds.train_batch(np.random.default_rng(1), 6).extras["mask"])
    # both shapes occur: rectangles (a full bounding box) and strokes
    rng = np.random.default_rng(5)
    masks = [deg.random_mask(rng, 64, 64) for _ in range(40)]
    filled = [m.sum() / ((np.ptp(np.nonzero(m)[0]) + 1) * (np.ptp(np.nonzero(m)[1]) + 1)) for m in masks]
    assert min(filled) < 0.9 and max(filled) == 1.0


def test_superres_low_res(comps, folder):
    ds = comps.get("dataset", "image-captions").build({"path": str(folder), "resolution": 32, "task": "superres"})
    batch = ds.train_batch(np.random.default_rng(0), 4)
    low = batch.extras["low_res"]
    assert low.shape == (4, 3, 8, 8) and low.min() >= -1 and low.max() <= 1
    assert same_batch(batch, ds.train_batch(np.random.default_rng(0), 4))
    # a degraded, but recognisable, x4 downscale of the image
    plain = torch.nn.functional.interpolate(batch.images, size=(8, 8), mode="bicubic", antialias=True)
    gap = (low - plain).abs().mean().item()
    assert 0.005 < gap < 0.35
    x8 = comps.get("dataset", "image-captions").build({"path": str(folder), "resolution": 32, "task": "superres", "sr_scale": 8})
    assert x8.train_batch(np.random.default_rng(0), 1).extras["low_res"].shape == (1, 3, 4, 4)


def test_degradation_steps():
    img = torch.rand(3, 32, 32) * 2 - 1
    blurred = deg.gaussian_blur((img + 1) / 2, 2.0)
    assert blurred.shape == (3, 32, 32) and blurred.std() < ((img + 1) / 2).std()
    flat = torch.full((3, 16, 16), 0.5)
    torch.testing.assert_close(deg.gaussian_blur(flat, 1.5), flat)  # a normalised kernel keeps constants
    assert (deg.jpeg(flat, 90) - flat).abs().max() < 0.02
    a = deg.degrade_low_res(img, np.random.default_rng(0))
    assert torch.equal(a, deg.degrade_low_res(img, np.random.default_rng(0))) and a.shape == (3, 8, 8)


def test_face_crops_follow_the_boxes(comps, folder):
    ds = comps.get("dataset", "image-captions").build({"path": str(folder), "resolution": 20, "task": "faceswap"})
    batch = ds.train_batch(np.random.default_rng(0), 3)
    ex = batch.extras
    assert ex["source_face"].shape == (3, 3, 20, 20) and ex["face_mask"].shape == (3, 1, 20, 20) and ex["face_box"].shape == (3, 4)
    # 56x40 -> 28x20, centre crop at x = 4: the white square lands on (6, 5, 14, 13), its 20%-margin square on
    # (4.4, 3.4, 15.6, 14.6)
    torch.testing.assert_close(ex["face_box"][0], torch.tensor([4.4, 3.4, 15.6, 14.6]))
    assert ex["face_mask"][0].sum() == 12 * 12  # pixel centres 4.5 .. 15.5 in x, 3.5 .. 14.5 in y
    centre = ex["source_face"][:, :, 7:13, 7:13]
    assert (centre > 0.9).all()  # the middle of the crop is the white face
    assert torch.equal(ex["masked_image"], batch.images * (1 - ex["face_mask"]))
    assert same_batch(batch, ds.train_batch(np.random.default_rng(0), 3))
    eval_extras = ds.eval_extras(4, seed=0)
    assert eval_extras["source_face"].shape == (4, 3, 20, 20)


def test_face_outside_the_crop_is_still_cropped_from_the_original(comps, tmp_path):
    root = tmp_path / "wide"
    root.mkdir()
    arr = np.zeros((20, 80, 3), dtype=np.uint8)
    arr[4:14, 2:12] = 255  # a face at the left edge, outside the 20x20 centre crop
    Image.fromarray(arr).save(root / "wide.png")
    (root / "captions.jsonl").write_text(json.dumps({"file": "wide.png", "text": "", "face_box": [2, 4, 12, 14]}))
    ds = comps.get("dataset", "image-captions").build({"path": str(root), "resolution": 20, "task": "faceswap"})
    ex = ds.train_batch(np.random.default_rng(0), 1).extras
    assert (ex["source_face"][0, :, 8:12, 8:12] > 0.9).all()
    assert ex["face_mask"].sum() == 0 and ex["face_box"][0, 2] == ex["face_box"][0, 0] == 0  # empty in the target


def test_face_detectors(comps, tmp_path, shards):
    root = write_folder(tmp_path / "nobox", n=3, boxes=False)
    ds = comps.get("dataset", "image-captions").build({"path": str(root), "resolution": 16, "task": "faceswap"})
    with pytest.raises(UserError, match="no face box for img0"):
        ds.train_batch(np.random.default_rng(0), 3)
    centre = comps.get("dataset", "image-captions").build({"path": str(root), "resolution": 16, "task": "faceswap", "face_detector": "center"})
    box = centre.train_batch(np.random.default_rng(0), 1).extras["face_box"][0]
    # on the 56x40 original: (18, 10, 38, 30), + 20% margin (14, 6, 42, 34); resized by (22/56, 16/40), crop at x = 3
    torch.testing.assert_close(box, torch.tensor([14 * 22 / 56 - 3, 2.4, 42 * 22 / 56 - 3, 13.6]))
    with pytest.raises(UserError, match=r"^unknown face_detector 'retina'; available: boxes, center$"):
        comps.get("dataset", "image-captions").build({"path": str(root), "task": "faceswap", "face_detector": "retina"})
    with pytest.raises(UserError, match=r"^unknown face_detector 'centre'; did you mean 'center'\? available: boxes, center$"):
        comps.get("dataset", "webdataset").build({"shards": (str(shards / "part-{00000..00002}.tar"),), "task": "faceswap", "face_detector": "centre"})
    assert [(c.name, c.plugin) for c in comps["face_detector"]] == [("boxes", face_detectors.__name__), ("center", face_detectors.__name__)]


def test_a_third_party_face_detector_is_a_plugin_component(tmp_path):
    """A detector is added like any component: a register_face_detectors hook of a plugin (in a distribution's
    module of the ``flashbench`` entry-point group); the dataset finds it in the registries it is built from."""
    root = write_folder(tmp_path / "nobox", n=3, boxes=False)

    class Square:
        def __call__(self, image):
            assert image.shape == (3, 40, 56)  # detectors see the original image
            return FACE

    class ThirdParty:
        @flashbench.hookimpl
        def register_face_detectors(self, register):
            register("corner", lambda config: Square(), description="a fixed box")
            register("broken", lambda config: "not a detector")

    pm = pluggy.PluginManager("flashbench")
    pm.add_hookspecs(flashbench.hookspecs)
    for plugin in (image_captions, face_detectors, ThirdParty()):
        pm.register(plugin)
    comps = flashbench.plugins.collect_components(pm)
    assert comps["face_detector"].names() == ["boxes", "broken", "center", "corner"]
    plugged = comps.get("dataset", "image-captions").build({"path": str(root), "resolution": 16, "task": "faceswap", "face_detector": "corner"})
    found = plugged.train_batch(np.random.default_rng(0), 1).extras
    # FACE + 20% margin on the original: (16.8, 6.8, 39.2, 29.2), mapped as above
    torch.testing.assert_close(found["face_box"][0], torch.tensor([16.8 * 22 / 56 - 3, 6.8 * 0.4, 39.2 * 22 / 56 - 3, 29.2 * 0.4]))
    assert (found["source_face"][0, :, 6:10, 6:10] > 0.9).all()
    with pytest.raises(
        TypeError,
        match=r"^face_detector 'broken' \(plugin .*\): its factory returned builtins.str, which is not callable; "
        r"a face_detector factory must return a callable$",
    ):
        comps.get("dataset", "image-captions").build({"path": str(root), "task": "faceswap", "face_detector": "broken"})
    # a factory called outside a build (a DataLoader worker rebuilding its batcher) looks in the installed plugins', which lack it
    with pytest.raises(UserError, match="unknown face_detector 'corner'"):
        comps.get("dataset", "image-captions").factory(image_captions.ImageCaptionsConfig(path=str(root), task="faceswap", face_detector="corner"))


def test_the_former_face_detector_group_still_works_with_a_warning(tmp_path, monkeypatch):
    """Deprecated: an entry point of group ``flashbench.face_detectors`` (an object returning the detector) is
    registered under its name by the built-in face_detectors plugin, and warns when built."""
    root = write_folder(tmp_path / "nobox", n=3, boxes=False)

    class Square:
        def __call__(self, image):
            return FACE

    legacy = SimpleNamespace(name="corner", value="thirdparty:Square", load=lambda: Square)
    shadow = SimpleNamespace(name="center", value="thirdparty:Other", load=lambda: Square)  # a built-in name: skipped
    monkeypatch.setattr("importlib.metadata.entry_points", lambda group: [legacy, shadow] if group == face_detectors.LEGACY_GROUP else [])
    pm = pluggy.PluginManager("flashbench")
    pm.add_hookspecs(flashbench.hookspecs)
    pm.register(image_captions)
    pm.register(face_detectors)
    comps = flashbench.plugins.collect_components(pm)
    assert comps["face_detector"].names() == ["boxes", "center", "corner"]
    assert "deprecated" in comps.get("face_detector", "corner").description
    with pytest.warns(FutureWarning, match="deprecated entry-point group 'flashbench.face_detectors'"):
        plugged = comps.get("dataset", "image-captions").build({"path": str(root), "resolution": 16, "task": "faceswap", "face_detector": "corner"})
    assert isinstance(plugged.batcher.task.detector, Square)
    monkeypatch.setenv("FLASHBENCH_DISABLE_PLUGIN_AUTOLOAD", "1")
    assert flashbench.plugins.collect_components(pm)["face_detector"].names() == ["boxes", "center"]


# --- webdataset ----------------------------------------------------------------------------------------
def test_webdataset_streams_with_the_aesthetic_filter(comps, shards):
    ds = comps.get("dataset", "webdataset").build({"shards": (str(shards / "part-{00000..00002}.tar"),), "resolution": 16})
    assert [s.name for s in ds.heldout_shards] == ["part-00002.tar"] and len(ds.train_shards) == 2
    batch = ds.train_batch(np.random.default_rng(0), 4)
    assert batch.images.shape == (4, 3, 16, 16) and batch.images.min() >= -1 and batch.images.max() <= 1
    seen = {p for i in range(10) for p in ds.train_batch(np.random.default_rng(i), 4).prompts}
    # score >= 6 under "aesthetic" (shard 0) or "AESTHETIC_SCORE" (shard 1): samples 0, 2, 4 of each training shard
    assert seen == {f"shard {s} sample {j}" for s in (0, 1) for j in (0, 2, 4)}
    assert set(ds.eval_prompts(10)) == {"shard 2 sample 0", "shard 2 sample 2", "shard 2 sample 4"}
    assert ds.reference_images(2).shape == (2, 3, 16, 16)
    unfiltered = comps.get("dataset", "webdataset").build({"shards": (str(shards / "*.tar"),), "resolution": 16, "min_aesthetic": 0.0})
    assert len(set(unfiltered.eval_prompts(20))) == 6
    strict = comps.get("dataset", "webdataset").build({"shards": (str(shards / "*.tar"),), "resolution": 16, "min_aesthetic": 7.0})
    assert set(strict.train_batch(np.random.default_rng(0), 12).prompts) == {f"shard {s} sample {j}" for s in (0, 1) for j in (0, 4)}
    only_one_key = comps.get("dataset", "webdataset").build({"shards": (str(shards / "*.tar"),), "resolution": 16, "aesthetic_keys": ("AESTHETIC_SCORE",)})
    assert {p.split(" sample")[0] for p in only_one_key.train_batch(np.random.default_rng(0), 8).prompts} == {"shard 1"}


def test_webdataset_is_deterministic(comps, shards):
    options = {"shards": (str(shards / "*.tar"),), "resolution": 16, "task": "inpaint", "shuffle_buffer": 4}
    a, b = (comps.get("dataset", "webdataset").build(options) for _ in range(2))
    ra, rb = np.random.default_rng(5), np.random.default_rng(5)
    for _ in range(4):  # across passes over the data
        assert same_batch(a.train_batch(ra, 3), b.train_batch(rb, 3))
    assert a.train_batch(ra, 2).extras["mask"].shape == (2, 1, 16, 16)


def test_webdataset_tasks_and_txt_captions(comps, tmp_path):
    write_shard(
        tmp_path / "a.tar",
        [(f"k{j:03d}", {"aesthetic": 6.5, "face_box": list(FACE)}, f"text {j}", True) for j in range(3)] + [("k009", {"aesthetic": 9.0}, None, False)],
    )  # no image: skipped
    ds = comps.get("dataset", "webdataset").build({"shards": (str(tmp_path / "a.tar"),), "resolution": 16, "task": "faceswap"})
    batch = ds.train_batch(np.random.default_rng(0), 2)
    assert set(batch.prompts) <= {"text 0", "text 1", "text 2"}
    assert batch.extras["source_face"].shape == (2, 3, 16, 16)
    sr = comps.get("dataset", "webdataset").build({"shards": str(tmp_path / "a.tar"), "resolution": 16, "task": "superres"})
    assert sr.train_batch(np.random.default_rng(0), 2).extras["low_res"].shape == (2, 3, 4, 4)
    assert ds.heldout_shards == ds.train_shards  # one shard: nothing held out


def test_webdataset_errors_are_one_line(comps, tmp_path, shards):
    build = comps.get("dataset", "webdataset").build
    cases = [
        ({}, "needs its shards option"),
        ({"shards": (str(tmp_path / "none-*.tar"),)}, "no shard matches"),
        ({"shards": (str(tmp_path / "missing.tar"),)}, "missing.tar"),
    ]
    for options, text in cases:
        with pytest.raises(UserError) as info:
            build(options)
        assert text in str(info.value) and "\n" not in str(info.value)
    too_strict = build({"shards": (str(shards / "*.tar"),), "min_aesthetic": 9.5, "resolution": 16})
    with pytest.raises(UserError) as info:
        too_strict.train_batch(np.random.default_rng(0), 1)
    message = str(info.value)
    assert "no sample" in message and "aesthetic score >= 9.5" in message and "below min_aesthetic" in message and "\n" not in message
    (tmp_path / "junk.tar").write_bytes(b"not a tar file at all" * 30)
    with pytest.raises(UserError, match="cannot read shard"):
        build({"shards": (str(tmp_path / "junk.tar"),), "resolution": 16}).train_batch(np.random.default_rng(0), 1)


def test_brace_expansion():
    assert webdataset.expand_braces("a-{008..010}.tar") == ["a-008.tar", "a-009.tar", "a-010.tar"]
    assert webdataset.expand_braces("{x,y}/{1..2}") == ["x/1", "x/2", "y/1", "y/2"]
    assert webdataset.expand_braces("plain.tar") == ["plain.tar"]
