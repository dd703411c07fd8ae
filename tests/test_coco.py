"""The COCO protocol datasets (``coco2017-val``, ``coco2014-val-30k``, ``coco2014-val-10k``) on tiny fake COCO
folders written in tmp: the selection rule, determinism, counts, reference images, streaming, the protocol
record and its hashes, and the one-line errors for what is missing."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pluggy
import pytest
import torch
from PIL import Image

from flashbench import PROJECT_NAME, hookspecs
from flashbench.errors import UserError
from flashbench.method.data import Dataset
from flashbench.plugins import collect_components
from flashbench_plugins.datasets import coco

pytestmark = pytest.mark.usefixtures("one_thread")

# Listed out of id order. Image 25 has no caption (never a prompt, still a val image); image 3 is greyscale.
IMAGES = [(42, (40, 30)), (7, (30, 50)), (19, (24, 24)), (3, (36, 20)), (25, (20, 28))]
# (annotation id, image id, caption): unsorted, several per image, the lowest id not listed first;
# 999 is not a listed image (ignored).
ANNOTATIONS = [
    (510, 42, "a dog on a beach"),
    (77, 42, "  A brown dog running on sand.\n"),
    (300, 7, "two cats"),
    (12, 19, "A red bus on a street. "),
    (11, 19, "unused? no: 11 < 12"),
    (305, 7, "cats on a bed"),
    (40, 3, "\nAn old photo of a train"),
    (41, 3, "a train"),
    (5, 999, "an image that is not listed"),
    (299, 7, "Two cats sleeping on a red blanket."),
]
# The rule by hand: ascending image id, the lowest annotation id of each.
EXPECTED = [
    (3, 40, "An old photo of a train"),
    (7, 299, "Two cats sleeping on a red blanket."),
    (19, 11, "unused? no: 11 < 12"),
    (42, 77, "A brown dog running on sand."),
]


def colour(image_id: int) -> tuple[int, int, int]:
    return ((image_id * 37) % 200 + 30, (image_id * 91) % 200 + 30, (image_id * 53) % 200 + 30)


def file_name(year: int, image_id: int) -> str:
    return f"COCO_val2014_{image_id:012d}.jpg" if year == 2014 else f"{image_id:012d}.jpg"


def write_coco(root, year: int = 2017):
    """A fake COCO folder: annotations/captions_val<year>.json and val<year>/ with small solid-colour JPEGs."""
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / f"val{year}").mkdir(exist_ok=True)
    images = []
    for image_id, (w, h) in IMAGES:
        name = file_name(year, image_id)
        img = Image.new("RGB", (w, h), colour(image_id))
        (img.convert("L") if image_id == 3 else img).save(root / f"val{year}" / name, quality=95)
        images.append({"id": image_id, "file_name": name, "width": w, "height": h})
    anns = [{"id": a, "image_id": i, "caption": c} for a, i, c in ANNOTATIONS]
    data = {"info": {}, "licenses": [], "images": images, "annotations": anns}
    (root / "annotations" / f"captions_val{year}.json").write_text(json.dumps(data))
    return root


@pytest.fixture
def coco2017(tmp_path):
    return write_coco(tmp_path / "coco", 2017)


@pytest.fixture
def coco2014(tmp_path):
    return write_coco(tmp_path / "coco14", 2014)


def components():
    pm = pluggy.PluginManager(PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    pm.register(coco)
    return collect_components(pm)


def build(name, **options):
    return components().registries["dataset"].get(name).build(options)


def sha(values):
    return hashlib.sha256("\n".join(map(str, values)).encode()).hexdigest()


# --- registration and the protocols --------------------------------------------------------------------------
def test_registers_the_three_protocols():
    reg = components().registries["dataset"]
    for name in ("coco2017-val", "coco2014-val-30k", "coco2014-val-10k"):
        comp = reg.get(name)
        assert comp.config is coco.CocoConfig
        assert comp.option_names() == ["root", "resolution", "num_prompts", "reference", "num_workers"]
        assert comp.description
    p = coco.PROTOCOLS
    assert (p["coco2017-val"].split, p["coco2017-val"].num_prompts, p["coco2017-val"].reference) == ("val2017", 5000, "all")
    assert (p["coco2014-val-30k"].split, p["coco2014-val-30k"].num_prompts, p["coco2014-val-30k"].reference) == ("val2014", 30000, "all")
    assert (p["coco2014-val-10k"].split, p["coco2014-val-10k"].num_prompts, p["coco2014-val-10k"].reference) == ("val2014", 10000, "selected")


def test_config_validation():
    assert coco.CocoConfig().resolution == 512
    for bad in ({"resolution": 4}, {"num_prompts": -1}, {"reference": "some"}, {"num_workers": -2}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            coco.CocoConfig(**bad)


# --- the selection rule --------------------------------------------------------------------------------------
def test_selection_rule_2017(coco2017):
    ds = build("coco2017-val", root=str(coco2017), num_prompts=4, resolution=16)
    assert isinstance(ds, Dataset) and ds.name == "coco2017-val"
    assert ds.selection() == EXPECTED
    assert ds.eval_prompts(4) == [c for _, _, c in EXPECTED]
    assert ds.eval_prompts(2) == [c for _, _, c in EXPECTED[:2]]
    assert ds.eval_prompts(0) == []
    assert ds.eval_extras(4) == {}


def test_prompts_ignore_the_seed_and_rebuilds_agree(coco2017):
    a = build("coco2017-val", root=str(coco2017), num_prompts=4)
    b = build("coco2017-val", root=str(coco2017), num_prompts=4)
    assert a.selection() == b.selection()
    assert a.eval_prompts(3, seed=0) == a.eval_prompts(3, seed=1) == b.eval_prompts(3, seed=12345)


def test_num_prompts_truncates_the_list(coco2017):
    ds = build("coco2017-val", root=str(coco2017), num_prompts=2)
    assert ds.selection() == EXPECTED[:2] and ds.num_prompts == 2
    # the reference set of coco2017-val is every val image, whatever the number of prompts
    assert ds.num_reference == 5


def test_10k_is_the_prefix_of_30k(coco2014):
    s30 = build("coco2014-val-30k", root=str(coco2014), num_prompts=4).selection()
    s10 = build("coco2014-val-10k", root=str(coco2014), num_prompts=3).selection()
    assert s30 == EXPECTED and s10 == EXPECTED[:3]


def test_protocol_counts_need_the_full_annotations(coco2017, coco2014):
    # the fake folders caption 4 images; the protocols need 5,000 / 30,000 / 10,000
    for name, root, need in (("coco2017-val", coco2017, 5000), ("coco2014-val-30k", coco2014, 30000), ("coco2014-val-10k", coco2014, 10000)):
        with pytest.raises(UserError) as err:
            build(name, root=str(root))
        msg = str(err.value)
        assert "\n" not in msg and "captions for 4 images" in msg and str(need) in msg and "num_prompts" in msg
    with pytest.raises(UserError, match="captions for 4 images, the protocol needs 5"):
        build("coco2017-val", root=str(coco2017), num_prompts=5)


def test_too_many_eval_prompts_is_an_error_not_a_repeat(coco2017):
    ds = build("coco2017-val", root=str(coco2017), num_prompts=3)
    with pytest.raises(UserError) as err:
        ds.eval_prompts(4)
    assert "\n" not in str(err.value) and "at most 3" in str(err.value)


def test_train_batch_is_an_error(coco2017):
    ds = build("coco2017-val", root=str(coco2017), num_prompts=4)
    with pytest.raises(UserError, match="evaluation prompt set"):
        ds.train_batch(np.random.default_rng(0), 2)


# --- reference images ------------------------------------------------------------------------------------------
def expected_image(root, year, image_id, res):
    """The documented preprocessing, computed directly: RGB, short side -> res (bicubic), centre crop."""
    img = Image.open(root / f"val{year}" / file_name(year, image_id)).convert("RGB")
    w, h = img.size
    s = res / min(w, h)
    nw, nh = max(res, round(w * s)), max(res, round(h * s))
    img = img.resize((nw, nh), Image.BICUBIC)
    left, top = int(round(0.5 * (nw - res))), int(round(0.5 * (nh - res)))
    arr = np.asarray(img, dtype=np.float32)[top : top + res, left : left + res]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1) / 127.5 - 1.0


def test_reference_images_2017_all_in_id_order(coco2017):
    ds = build("coco2017-val", root=str(coco2017), num_prompts=2, resolution=16, num_workers=1)
    ref = ds.reference_images(100)  # more than the set: all 5
    assert ref.shape == (5, 3, 16, 16) and ref.dtype == torch.float32
    assert ref.min() >= -1.0 and ref.max() <= 1.0
    ids = sorted(i for i, _ in IMAGES)
    assert [p.name for p in ds.reference_files()] == [file_name(2017, i) for i in ids]
    for k, image_id in enumerate(ids):
        torch.testing.assert_close(ref[k], expected_image(coco2017, 2017, image_id, 16))
    # greyscale image 3 comes back with 3 equal channels
    assert torch.equal(ref[0][0], ref[0][1]) and torch.equal(ref[0][1], ref[0][2])
    # the first n when n is smaller; the seed changes nothing
    assert torch.equal(ds.reference_images(2, seed=7), ref[:2])
    assert ds.reference_images(0).shape == (0, 3, 16, 16)


def test_reference_sets_2014(coco2014):
    all30 = build("coco2014-val-30k", root=str(coco2014), num_prompts=2, resolution=8)
    assert all30.num_reference == 5  # every listed image, the uncaptioned one included
    sel10 = build("coco2014-val-10k", root=str(coco2014), num_prompts=2, resolution=8)
    assert sel10.num_reference == 2
    assert [p.name for p in sel10.reference_files()] == [file_name(2014, 3), file_name(2014, 7)]
    assert sel10.reference_images(10).shape == (2, 3, 8, 8)
    both = build("coco2014-val-10k", root=str(coco2014), num_prompts=2, reference="all")
    assert both.num_reference == 5


@pytest.mark.parametrize("workers", [1, 3])
def test_streaming_batches_equal_the_one_shot_images(coco2017, workers):
    ds = build("coco2017-val", root=str(coco2017), num_prompts=4, resolution=12, num_workers=workers)
    whole = ds.reference_images(5)
    batches = list(ds.reference_batches(5, seed=0, batch_size=2))
    assert [b.shape[0] for b in batches] == [2, 2, 1]
    assert all(b.shape[1:] == (3, 12, 12) for b in batches)
    assert torch.equal(torch.cat(batches), whole)
    assert torch.equal(torch.cat(list(ds.reference_batches(3, batch_size=64))), whole[:3])
    # stopping early leaves nothing running and does not disturb a new pass
    gen = ds.reference_batches(5, batch_size=1)
    first = next(gen)
    gen.close()
    assert torch.equal(first, whole[:1])


def test_unreadable_image_is_a_one_line_error(coco2017):
    (coco2017 / "val2017" / file_name(2017, 19)).write_bytes(b"not a jpeg")
    ds = build("coco2017-val", root=str(coco2017), num_prompts=4, resolution=8, num_workers=2)
    with pytest.raises(UserError) as err:
        ds.reference_images(5)
    assert "\n" not in str(err.value) and file_name(2017, 19) in str(err.value)


# --- provenance ------------------------------------------------------------------------------------------------
def test_reference_id(coco2017, coco2014):
    ds = build("coco2017-val", root=str(coco2017), num_prompts=4, resolution=16)
    ref_ids = sorted(i for i, _ in IMAGES)
    assert ds.reference_id() == f"coco2017-val:val2017:16px:5:{sha(ref_ids)[:12]}"
    ten = build("coco2014-val-10k", root=str(coco2014), num_prompts=3)
    assert ten.reference_id() == f"coco2014-val-10k:val2014:512px:3:{sha([3, 7, 19])[:12]}"
    assert build("coco2014-val-30k", root=str(coco2014), num_prompts=3).reference_id().startswith("coco2014-val-30k:val2014:512px:5:")


def test_protocol_record_is_json_and_its_hashes_are_stable(coco2017, tmp_path):
    ds = build("coco2017-val", root=str(coco2017), num_prompts=4, resolution=16)
    record = ds.protocol()
    assert json.loads(json.dumps(record)) == record
    assert record["dataset"] == "coco2017-val" and record["split"] == "val2017"
    assert record["num_prompts"] == 4 and record["protocol_num_prompts"] == 5000
    assert record["num_reference_images"] == 5 and record["reference"] == "all"
    assert record["annotation_ids_sha256"] == sha([40, 299, 11, 77])
    assert record["captions_sha256"] == sha([c for _, _, c in EXPECTED])
    assert record["reference_image_ids_sha256"] == sha(sorted(i for i, _ in IMAGES))
    assert record["first_annotation_ids"] == [40, 299, 11, 77]
    assert "lowest annotation id" in record["prompt_rule"] and "ascending image id" in record["prompt_rule"]
    assert record["reference_id"] == ds.reference_id()
    # the same files elsewhere, built again, give the same record (no local path in it)
    moved = shutil.copytree(coco2017, tmp_path / "elsewhere")
    assert build("coco2017-val", root=str(moved), num_prompts=4, resolution=16).protocol() == record
    assert str(coco2017) not in json.dumps(record)
    # a different selection changes the hash
    other = build("coco2017-val", root=str(coco2017), num_prompts=3, resolution=16).protocol()
    assert other["annotation_ids_sha256"] != record["annotation_ids_sha256"]


# --- the folder: what is missing, and the env var -------------------------------------------------------------
def one_line_error(name, **options) -> str:
    with pytest.raises(UserError) as err:
        build(name, **options)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(name + ":")
    return msg


def test_root_from_the_environment(coco2017, monkeypatch):
    monkeypatch.setenv("FLASHBENCH_COCO_DIR", str(coco2017))
    assert build("coco2017-val", num_prompts=4).selection() == EXPECTED
    assert build("coco2017-val", num_prompts=4).root == coco2017


def test_no_root_at_all(monkeypatch):
    monkeypatch.delenv("FLASHBENCH_COCO_DIR", raising=False)
    msg = one_line_error("coco2017-val")
    assert "FLASHBENCH_COCO_DIR" in msg and "root" in msg
    assert "http://images.cocodataset.org/annotations/annotations_trainval2017.zip" in msg
    assert "http://images.cocodataset.org/zips/val2017.zip" in msg


def test_missing_root_folder(tmp_path):
    missing = tmp_path / "nope"
    msg = one_line_error("coco2014-val-30k", root=str(missing))
    assert str(missing) in msg and "FLASHBENCH_COCO_DIR" in msg
    assert "annotations_trainval2014.zip" in msg and "val2014.zip" in msg


def test_missing_annotation_file(coco2014):
    (coco2014 / "annotations" / "captions_val2014.json").unlink()
    msg = one_line_error("coco2014-val-10k", root=str(coco2014))
    assert str(coco2014 / "annotations" / "captions_val2014.json") in msg
    assert "http://images.cocodataset.org/annotations/annotations_trainval2014.zip" in msg and "FLASHBENCH_COCO_DIR" in msg


def test_missing_image_folder(coco2017):
    shutil.rmtree(coco2017 / "val2017")
    msg = one_line_error("coco2017-val", root=str(coco2017), num_prompts=4)
    assert str(coco2017 / "val2017") in msg
    assert "http://images.cocodataset.org/zips/val2017.zip" in msg and "FLASHBENCH_COCO_DIR" in msg


def test_missing_image_files_are_found_at_build(coco2017, coco2014):
    (coco2017 / "val2017" / file_name(2017, 25)).unlink()  # uncaptioned, but in the "all" reference set
    msg = one_line_error("coco2017-val", root=str(coco2017), num_prompts=4)
    assert "1 of 5 reference images missing" in msg and file_name(2017, 25) in msg and "val2017.zip" in msg
    (coco2014 / "val2014" / file_name(2014, 42)).unlink()
    # the 10k set with 2 prompts only needs images 3 and 7
    assert build("coco2014-val-10k", root=str(coco2014), num_prompts=2).num_reference == 2
    assert file_name(2014, 42) in one_line_error("coco2014-val-30k", root=str(coco2014), num_prompts=2)


def test_broken_annotation_file(coco2017):
    path = coco2017 / "annotations" / "captions_val2017.json"
    path.write_text('{"images": [')
    msg = one_line_error("coco2017-val", root=str(coco2017), num_prompts=1)
    assert str(path) in msg and "not JSON" in msg
    path.write_text(json.dumps({"images": []}))
    assert "not a COCO captions file" in one_line_error("coco2017-val", root=str(coco2017), num_prompts=1)
    path.write_text(json.dumps({"images": [{"id": 1}], "annotations": []}))
    assert "malformed" in one_line_error("coco2017-val", root=str(coco2017), num_prompts=1)
