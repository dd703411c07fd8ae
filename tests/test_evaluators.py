"""The paper-grade evaluator plugins -- ``fid`` (clean-fid), ``clip_score`` (open_clip), ``lpips`` (the lpips
package) -- on weights built here: the maths against direct numpy/scipy/torch computations, streaming,
the on-disk reference statistics cache, clean-fid's preprocessing, and the one-line errors when weights
are not on the machine (with every download path blocked and watched)."""

from __future__ import annotations

import functools
import json
import socket
import urllib.request

import numpy as np
import pluggy
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F
from PIL import Image

import flashbench
import flashbench.hookspecs
import flashbench.plugins
from flashbench.errors import MissingWeightsError, UserError
from flashbench_plugins.evaluators import _stats_cache
from flashbench_plugins.evaluators import clip_score as clip_plugin
from flashbench_plugins.evaluators import fid as fid_plugin
from flashbench_plugins.evaluators import lpips as lpips_plugin

pytestmark = pytest.mark.usefixtures("one_thread")

FEATURE_DIM = 6


@pytest.fixture(scope="module")
def components():
    """Registries of a fresh plugin manager holding only these plugins."""
    from flashbench_plugins.evaluators import kid as kid_plugin
    from flashbench_plugins.evaluators import toy_kid as toy_kid_plugin

    pm = pluggy.PluginManager("flashbench")
    pm.add_hookspecs(flashbench.hookspecs)
    for module in (fid_plugin, clip_plugin, lpips_plugin, kid_plugin, toy_kid_plugin, TINY_FEATURES):
        pm.register(module)
    return flashbench.plugins.collect_components(pm)


@pytest.fixture
def network_attempts(monkeypatch):
    """Every outgoing connection or URL fetch is refused and recorded."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args[:2])
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket.socket, "connect", lambda self, *a: refuse("socket.connect", *a))
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: refuse("create_connection", *a))
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: refuse("urlopen", *a))
    return attempts


def images(n, seed, size=(16, 16), scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return ((torch.rand(n, 3, *size, generator=g) * 2 - 1) * scale).clamp(-1, 1)


# --- fid --------------------------------------------------------------------------------------------


class TinyExtractor:
    """A fixed random projection of 4x4-pooled pixels: a 6-d feature space, with its calls counted
    (float64, so that a sample's features do not depend on the batch it came in)."""

    def __init__(self):
        self.calls = 0
        self.images = 0
        self.proj = torch.from_numpy(np.random.default_rng(0).normal(size=(48, FEATURE_DIM)))

    def __call__(self, x):
        self.calls += 1
        self.images += len(x)
        return torch.tanh((F.adaptive_avg_pool2d(x.double() / 255, 4).flatten(1) - 0.5) @ self.proj)


class TinyFeaturePlugin:
    """A custom feature space as a third party adds one: evaluators of its own (``test-tiny-fid``,
    ``test-tiny-kid``) whose factories hand ``fid.build_evaluator`` their extractor (the ``tiny`` fixture's)."""

    extractor: TinyExtractor | None = None

    def build(self, config, *, device="cpu", kernel=False):
        return fid_plugin.build_evaluator(config, device=device, kernel=kernel, extractor=self.extractor)

    @flashbench.hookimpl
    def register_evaluators(self, register):
        register("test-tiny-fid", self.build, metric="fid", config=fid_plugin.FIDConfig)
        register("test-tiny-kid", functools.partial(self.build, kernel=True), metric="kid", config=fid_plugin.FIDConfig)


TINY_FEATURES = TinyFeaturePlugin()


@pytest.fixture
def tiny(monkeypatch):
    extractor = TinyExtractor()
    monkeypatch.setattr(TINY_FEATURES, "extractor", extractor)
    return extractor


class RefData:
    """A stand-in dataset: seeded real images, with the calls counted. ``streaming`` adds
    ``reference_batches``."""

    def __init__(self, rid="test-reference", streaming=False, size=(16, 16)):
        self.rid, self.size = rid, size
        self.image_calls, self.batch_calls = 0, 0
        if streaming:
            self.reference_batches = self._batches

    def reference_images(self, n, seed=0):
        self.image_calls += 1
        return images(n, 1000 + seed, self.size)

    def _batches(self, n, seed, batch_size):
        self.batch_calls += 1
        yield from images(n, 1000 + seed, self.size).split(batch_size)

    def reference_id(self):
        return self.rid


def build_fid(components, tmp_path, **options):
    """The fid evaluator on the ``tiny`` fixture's features (``test-tiny-fid``), or with ``name`` another."""
    name = options.pop("name", "test-tiny-fid")
    options = {"extractor": "test-tiny", "cache_dir": str(tmp_path / "stats"), "batch_size": 7, **options}
    return components.get("evaluator", name).build(options, device="cpu")


def direct_fd(f1, f2):
    """The Fréchet distance written out with numpy and scipy.linalg.sqrtm."""
    f1, f2 = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean).real)


def direct_features(extractor, imgs, mode="clean"):
    with torch.no_grad():
        return extractor(fid_plugin.preprocess(imgs, mode)).double().numpy()


def test_registered_with_configs(components):
    fid = components.get("evaluator", "fid")
    assert fid.option_names() == ["mode", "inception_dir", "cache_dir", "batch_size", "reference_samples", "extractor"]
    assert fid.make_config().mode == "clean"
    with pytest.raises(ValueError, match="mode must be one of"):
        fid.make_config({"mode": "tensorflow"})
    clip = components.get("evaluator", "clip_score").make_config()
    assert (clip.model, clip.pretrained) == ("ViT-bigG-14", "laion2b_s39b_b160k")
    assert components.get("evaluator", "lpips").make_config().net == "alex"


@pytest.mark.parametrize("mode", fid_plugin.MODES)
def test_fid_equals_direct_frechet(components, tmp_path, tiny, mode):
    data, gen = RefData(), images(24, 7, scale=0.6)
    fid = build_fid(components, tmp_path, mode=mode)
    assert (fid.metric, fid.higher_is_better, fid.needs_teacher_reference) == ("fid", False, False)
    fid.prepare(data, 24)
    value = fid.evaluate(gen, ["a prompt"] * 24)
    expected = direct_fd(direct_features(tiny, gen, mode), direct_features(tiny, data.reference_images(24), mode))
    assert value > 0.01
    assert value == pytest.approx(expected, rel=1e-6)


def test_fid_streaming_equals_one_batch(components, tmp_path, tiny):
    fid = build_fid(components, tmp_path)
    fid.prepare(RefData(), 30)
    gen = images(30, 3, scale=0.8)
    one = fid.evaluate(gen, [""] * 30)
    fid.reset()
    for chunk in gen.split([4, 11, 1, 14]):
        fid.update(chunk, [""] * len(chunk))
    assert fid.compute() == pytest.approx(one, rel=1e-9)
    fid.reset()
    with pytest.raises(ValueError, match="at least 2"):
        fid.compute()


def test_reference_statistics_computed_once_and_cached_on_disk(components, tmp_path, tiny):
    data = RefData()
    first = build_fid(components, tmp_path)
    first.prepare(data, 20)
    assert tiny.images == 20 and tiny.calls == 3  # 20 images in chunks of 7
    first.prepare(data, 20)  # the next variant of the same study
    assert tiny.images == 20

    npz = sorted((tmp_path / "stats").glob("*.npz"))
    sidecars = sorted((tmp_path / "stats").glob("*.json"))
    assert len(npz) == len(sidecars) == 1 and npz[0].name.startswith("test-reference-")
    meta = json.loads(sidecars[0].read_text())
    assert meta["key"] == {
        "dataset": "test-reference",
        "num_samples": 20,
        "seed": 0,
        "image_size": [16, 16],
        "mode": "clean",
        "extractor": "test-tiny",
        "format": fid_plugin.STATS_FORMAT,
    }
    prov = meta["provenance"]
    assert prov["images"] == prov["requested_images"] == 20 and prov["feature_dim"] == FEATURE_DIM
    assert prov["clean_fid_version"] == "0.1.35" and prov["dataset"] == "test-reference" and prov["created"]
    assert not list((tmp_path / "stats").glob(".*.tmp"))  # atomic writes leave no temporary files

    # a second study: a new evaluator instance with the same key loads from disk, no extractor call
    calls, gen = tiny.calls, images(20, 5, scale=0.5)
    second = build_fid(components, tmp_path)
    second.prepare(RefData(), 20)
    assert tiny.calls == calls
    np.testing.assert_array_equal(second.reference[0], first.reference[0])
    np.testing.assert_array_equal(second.reference[1], first.reference[1])
    assert second.reference_provenance == prov
    assert second.evaluate(gen, [""] * 20) == first.evaluate(gen, [""] * 20)

    # a different number of samples, seed, mode or dataset is another key: recomputed
    for change, expect in [((RefData(), 21, 0), 21), ((RefData(), 20, 1), 20), ((RefData("other"), 20, 0), 20)]:
        before = tiny.images
        second.prepare(*change)
        assert tiny.images - before == expect
    before = tiny.images
    build_fid(components, tmp_path, mode="legacy_pytorch").prepare(RefData(), 20)
    assert tiny.images - before == 20
    assert len(list((tmp_path / "stats").glob("*.npz"))) == 5


def test_reference_statistics_streamed_from_reference_batches(components, tmp_path, tiny):
    whole, streamed = RefData(), RefData(streaming=True)
    a = build_fid(components, tmp_path / "a")
    a.prepare(whole, 25)
    b = build_fid(components, tmp_path / "b")
    b.prepare(streamed, 25)
    assert streamed.image_calls == 0 and streamed.batch_calls == 2  # one to read the image size, one to stream
    np.testing.assert_allclose(b.reference[0], a.reference[0], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(b.reference[1], a.reference[1], rtol=1e-10, atol=1e-15)
    feats = direct_features(tiny, whole.reference_images(25))
    np.testing.assert_allclose(b.reference[1], np.cov(feats, rowvar=False), rtol=1e-10, atol=1e-15)


def test_reference_samples_option(components, tmp_path, tiny):
    fid = build_fid(components, tmp_path, reference_samples=12)
    fid.prepare(RefData(), 30)
    assert tiny.images == 12 and fid.reference_key["num_samples"] == 12


def test_corrupt_cache_entry_is_recomputed(components, tmp_path, tiny):
    build_fid(components, tmp_path).prepare(RefData(), 10)
    npz = next((tmp_path / "stats").glob("*.npz"))
    npz.write_bytes(b"not an npz")
    before = tiny.images
    fid = build_fid(components, tmp_path)
    fid.prepare(RefData(), 10)
    assert tiny.images - before == 10 and fid.reference[1].shape == (FEATURE_DIM, FEATURE_DIM)


def test_default_cache_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("FLASHBENCH_CACHE", str(tmp_path))
    assert _stats_cache.default_cache_dir("fid-stats") == tmp_path / "fid-stats"
    monkeypatch.delenv("FLASHBENCH_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert _stats_cache.default_cache_dir("fid-stats") == tmp_path / "home" / ".cache" / "flashbench" / "fid-stats"


def test_running_moments_equal_numpy():
    feats = np.random.default_rng(1).normal(loc=50.0, scale=0.1, size=(41, 5))
    moments = _stats_cache.RunningMoments()
    for chunk in np.array_split(feats, [3, 4, 20]):
        moments.add(chunk)
    mu, sigma = moments.statistics()
    np.testing.assert_allclose(mu, feats.mean(0), rtol=1e-14)
    np.testing.assert_allclose(sigma, np.cov(feats, rowvar=False), rtol=1e-9)


@pytest.mark.parametrize("mode", fid_plugin.MODES)
def test_preprocessing_matches_clean_fid(tmp_path, mode):
    """clean-fid's folder pipeline on the same images saved as PNG gives the same float batch."""
    from cleanfid.utils import ResizeDataset

    imgs = images(3, 11, size=(20, 28))
    files = []
    for i, arr in enumerate(fid_plugin.to_uint8(imgs)):
        Image.fromarray(arr).save(tmp_path / f"{i}.png")
        files.append(str(tmp_path / f"{i}.png"))
    expected = torch.stack([ResizeDataset(files, mode=mode)[i] for i in range(3)])
    ours = fid_plugin.preprocess(imgs, mode)
    assert ours.shape == ((3, 3, 299, 299) if mode != "legacy_tensorflow" else (3, 3, 20, 28))
    assert torch.equal(ours, expected)


def test_quantisation_is_diffusers_rounding():
    x = torch.tensor([-1.0, -0.999, 0.0, 0.5, 1.0, 1.5]).view(1, 1, 1, 6).expand(1, 3, 1, 6)
    assert fid_plugin.to_uint8(x)[0, 0, :, 0].tolist() == [0, 0, 128, 191, 255, 255]


@pytest.mark.parametrize("mode", fid_plugin.MODES)
def test_missing_inception_weights_is_one_line(components, tmp_path, monkeypatch, network_attempts, mode):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(fid_plugin.INCEPTION_ENV, raising=False)
    empty = tmp_path / "weights"
    empty.mkdir()
    with pytest.raises(MissingWeightsError) as err:
        components.get("evaluator", "fid").build({"mode": mode, "inception_dir": str(empty)}, device="cpu")
    message = str(err.value)
    name = fid_plugin.PT_INCEPTION_FILE if mode == "legacy_pytorch" else fid_plugin.INCEPTION_FILE
    url = fid_plugin.PT_INCEPTION_URL if mode == "legacy_pytorch" else fid_plugin.INCEPTION_URL
    assert "\n" not in message and name in message and url in message and str(empty) in message
    assert "FLASHBENCH_INCEPTION_DIR" in message
    assert isinstance(err.value, UserError) and err.value.exit_code == 2
    assert network_attempts == [] and list(empty.iterdir()) == []


def test_inception_dir_from_environment(components, tmp_path, monkeypatch, network_attempts):
    monkeypatch.setenv("FLASHBENCH_INCEPTION_DIR", str(tmp_path / "from-env"))
    with pytest.raises(MissingWeightsError, match="from-env"):
        components.get("evaluator", "fid").build({}, device="cpu")
    assert network_attempts == []


def test_unknown_extractor_is_a_user_error(components, tmp_path):
    with pytest.raises(UserError, match="unknown feature extractor 'nope'; available: inception$"):
        build_fid(components, tmp_path, name="fid", extractor="nope")
    with pytest.raises(UserError, match="unknown feature extractor 'test-tiny'"):  # a custom space is its own evaluator
        build_fid(components, tmp_path, name="fid")


def test_a_custom_extractor_needs_its_own_name(tmp_path):
    """Its reference statistics must never be cached under Inception's key."""
    with pytest.raises(ValueError, match="needs its own name"):
        fid_plugin.build_evaluator(fid_plugin.FIDConfig(cache_dir=str(tmp_path)), extractor=TinyExtractor())


class FakeInception(torch.nn.Module):
    """The interface of clean-fid's TorchScript Inception (``layers`` and ``forward(x, return_features)``),
    2048-d, tiny and random: stands in for inception-2015-12-05.pt to exercise the loading path."""

    def __init__(self):
        super().__init__()
        self.layers = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(12, 2048))

    def forward(self, x, return_features: bool = False):
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        return self.layers((x - 128) / 128)


@pytest.mark.parametrize("mode", ["clean", "legacy_tensorflow"])
def test_inception_loaded_from_local_file_through_clean_fid(components, tmp_path, network_attempts, mode):
    torch.manual_seed(0)
    scripted = torch.jit.script(FakeInception())
    scripted.save(str(tmp_path / fid_plugin.INCEPTION_FILE))
    fid = components.get("evaluator", "fid").build({"mode": mode, "inception_dir": str(tmp_path), "cache_dir": str(tmp_path / "stats")}, device="cpu")
    imgs = images(5, 2)
    batch = fid_plugin.preprocess(imgs, mode)
    with torch.no_grad():
        expected = scripted.layers((batch - 128) / 128) if mode == "clean" else scripted(batch, True)
    np.testing.assert_allclose(fid.features(imgs), expected.double().numpy(), rtol=1e-5, atol=1e-6)
    fid.prepare(RefData(), 4)
    assert fid.reference_provenance["weights"] == str(tmp_path / fid_plugin.INCEPTION_FILE)
    assert network_attempts == []


def test_legacy_pytorch_inception_loaded_from_local_file(tmp_path, monkeypatch, network_attempts):
    """pytorch-fid's port asks for its weights by URL; the evaluator hands it the local file instead."""
    import torch.hub

    import cleanfid.inception_pytorch as ip

    built = []
    with monkeypatch.context() as m:  # a random-initialised port, saved as pt_inception-2015-12-05-6726825d.pth
        make = ip._inception_v3
        m.setattr(ip, "_inception_v3", lambda *a, **k: built.append(make(*a, **k)) or built[-1])
        m.setattr(ip, "load_state_dict_from_url", lambda url, **k: built[-1].state_dict())
        torch.manual_seed(0)
        reference = ip.InceptionV3(output_blocks=[3], resize_input=False).eval()
    torch.save(built[-1].state_dict(), tmp_path / fid_plugin.PT_INCEPTION_FILE)
    downloads = []
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", lambda url, **k: downloads.append(url))
    monkeypatch.setattr(ip, "load_state_dict_from_url", lambda url, **k: downloads.append(url))
    config = fid_plugin.FIDConfig(mode="legacy_pytorch", inception_dir=str(tmp_path), cache_dir=str(tmp_path / "stats"))
    fid = fid_plugin.build(config, device="cpu")
    imgs = images(2, 4)
    with torch.no_grad():
        expected = reference(fid_plugin.preprocess(imgs, "legacy_pytorch") / 255)[0].flatten(1)
    feats = fid.features(imgs)
    assert feats.shape == (2, 2048)
    np.testing.assert_allclose(feats, expected.double().numpy(), rtol=1e-4, atol=1e-5)
    assert downloads == [] and network_attempts == []


# --- clip_score -----------------------------------------------------------------------------------

TINY_CLIP = "flashbench-test-tiny-clip"
TINY_CLIP_CONFIG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 24, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 12, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
PROMPTS = ["a red four", "a blue seven on a green background", "an extremely long prompt " * 5, "zero"]


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A random-initialised tiny open_clip model registered with open_clip and saved as safetensors."""
    import open_clip
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("clip")
    (folder / "configs").mkdir()
    (folder / "configs" / f"{TINY_CLIP}.json").write_text(json.dumps(TINY_CLIP_CONFIG))
    if TINY_CLIP not in open_clip.list_models():
        open_clip.add_model_config(folder / "configs")
    torch.manual_seed(0)
    model = open_clip.create_model(TINY_CLIP, pretrained=None)
    path = folder / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


def direct_clip_scores(path, imgs, prompts):
    """Cosine similarities written out: our own resize/crop/normalise and float64 cosines."""
    import open_clip
    import torchvision.transforms.functional as TF
    from safetensors.torch import load_file

    model = open_clip.create_model(TINY_CLIP, pretrained=None)
    model.load_state_dict(load_file(str(path)))
    model.eval()
    x = ((imgs / 2 + 0.5).clamp(0, 1) * 255).round() / 255
    x = TF.resize(x, 24, interpolation=TF.InterpolationMode.BICUBIC, antialias=True)
    x = TF.center_crop(x, [24, 24])
    x = TF.normalize(x, open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD)
    with torch.no_grad():
        img = model.encode_image(x).double().numpy()
        txt = model.encode_text(open_clip.get_tokenizer(TINY_CLIP)(prompts)).double().numpy()
    return (img * txt).sum(1) / np.linalg.norm(img, axis=1) / np.linalg.norm(txt, axis=1)


def test_clip_score_equals_direct_cosine(components, tiny_clip, network_attempts):
    imgs = images(4, 21, size=(30, 40))
    ev = components.get("evaluator", "clip_score").build({"model": TINY_CLIP, "pretrained": str(tiny_clip), "batch_size": 3}, device="cpu")
    assert (ev.metric, ev.higher_is_better) == ("clip_score", True)
    expected = direct_clip_scores(tiny_clip, imgs, PROMPTS)
    np.testing.assert_allclose(ev.scores(imgs, PROMPTS).double().numpy(), expected, rtol=1e-5, atol=1e-6)
    value = ev.evaluate(imgs, PROMPTS)
    assert value == pytest.approx(expected.mean(), rel=1e-5, abs=1e-6)
    assert -1.0 <= value <= 1.0  # a cosine, not x100
    ev.reset()
    ev.update(imgs[:1], PROMPTS[:1])
    ev.update(imgs[1:], PROMPTS[1:])
    assert ev.compute() == pytest.approx(value, rel=1e-6, abs=1e-7)
    assert network_attempts == []


def test_missing_clip_weights_file_is_one_line(components, tmp_path, network_attempts):
    missing = tmp_path / "nowhere" / "open_clip_model.safetensors"
    with pytest.raises(MissingWeightsError) as err:
        components.get("evaluator", "clip_score").build({"model": "ViT-B-32", "pretrained": str(missing)}, device="cpu")
    assert "\n" not in str(err.value) and str(missing) in str(err.value) and "ViT-B-32" in str(err.value)
    assert network_attempts == []


def test_missing_clip_hub_weights_is_one_line_before_building_the_model(components, tmp_path, monkeypatch, network_attempts):
    import open_clip

    created = []
    monkeypatch.setattr(open_clip, "create_model_and_transforms", lambda *a, **k: created.append(a))
    monkeypatch.setenv("FLASHBENCH_OPENCLIP_DIR", str(tmp_path / "empty-cache"))
    with pytest.raises(MissingWeightsError) as err:
        components.get("evaluator", "clip_score").build({}, device="cpu")
    message = str(err.value)
    assert "\n" not in message
    for part in ("ViT-bigG-14", "laion2b_s39b_b160k", "laion/CLIP-ViT-bigG-14-laion2B-39B-b160k", "FLASHBENCH_OPENCLIP_DIR", "empty-cache"):
        assert part in message
    assert created == [] and network_attempts == []


def test_clip_unknown_tag_or_model_is_a_user_error(components, network_attempts):
    clip = components.get("evaluator", "clip_score")
    with pytest.raises(UserError, match="not an open_clip pretrained tag of ViT-B-32"):
        clip.build({"model": "ViT-B-32", "pretrained": "laion9b"}, device="cpu")
    with pytest.raises(UserError, match="unknown open_clip model"):
        clip.build({"model": "ViT-Z-99"}, device="cpu")
    assert network_attempts == []


# --- lpips ----------------------------------------------------------------------------------------


@pytest.fixture
def blocked_downloads(monkeypatch, tmp_path):
    """TORCH_HOME in an empty folder; torch/torchvision's checkpoint download refuses and records."""
    import torch.hub
    import torchvision.models._api as tv_api

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    calls = []

    def refuse(url, *args, **kwargs):
        calls.append(url)
        raise OSError(f"download of {url} refused in tests")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(tv_api, "load_state_dict_from_url", refuse)
    return calls


@pytest.mark.parametrize("net,file", [("alex", "alexnet-owt-7be5be79.pth"), ("vgg", "vgg16-397923af.pth"), ("squeeze", "squeezenet1_1-b8a52dc0.pth")])
def test_lpips_missing_backbone_is_one_line_without_download(components, tmp_path, blocked_downloads, network_attempts, net, file):
    with pytest.raises(MissingWeightsError) as err:
        components.get("evaluator", "lpips").build({"net": net}, device="cpu")
    message = str(err.value)
    assert "\n" not in message and file in message and str(tmp_path / "torch-home") in message and "TORCH_HOME" in message
    assert blocked_downloads == [] and network_attempts == []


def test_lpips_unloadable_backbone_is_one_line(components, tmp_path, monkeypatch, network_attempts):
    """The checkpoint is there but broken: torchvision reads it from its cache and fails; one line."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    checkpoints = tmp_path / "torch-home" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "alexnet-owt-7be5be79.pth").write_bytes(b"truncated")
    with pytest.raises(MissingWeightsError) as err:
        components.get("evaluator", "lpips").build({}, device="cpu")
    assert "\n" not in str(err.value) and "'alex'" in str(err.value)
    assert network_attempts == []


def test_lpips_to_teacher_equals_direct_call():
    import lpips

    torch.manual_seed(0)
    net = lpips.LPIPS(net="alex", pretrained=False, pnet_rand=True, verbose=False).eval()
    ev = lpips_plugin.evaluator_for(net)
    assert (ev.metric, ev.higher_is_better, ev.needs_teacher_reference) == ("lpips_to_teacher", False, True)
    student, teacher = images(5, 1, size=(64, 64)), images(5, 2, size=(64, 64))
    with torch.no_grad():
        direct = net(student, teacher).flatten().double()
    assert ev.evaluate(student, [""] * 5, reference=teacher) == pytest.approx(float(direct.mean()), rel=1e-6)
    ev.reset()
    ev.update(student[:2], [""] * 2, reference=teacher[:2])
    ev.update(student[2:], [""] * 3, reference=teacher[2:])
    assert ev.compute() == pytest.approx(float(direct.mean()), rel=1e-6)
    assert ev.evaluate(teacher, [""] * 5, reference=teacher) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="teacher"):
        ev.update(student, [""] * 5)
    with pytest.raises(ValueError, match="differ in shape"):
        ev.update(student, [""] * 5, reference=teacher[:, :, :32])


def test_frechet_survives_singular_covariances():
    """Fewer samples than feature dimensions: clean-fid may refuse sqrtm's imaginary part; the symmetric
    form gives the same number where both work, and the exact answer in a case known in closed form."""
    import numpy as np

    from flashbench.method.evaluation import feature_statistics, frechet, frechet_psd

    rng = np.random.default_rng(0)
    a, b = feature_statistics(rng.normal(size=(500, 16))), feature_statistics(rng.normal(0.3, 1.2, size=(500, 16)))
    assert frechet_psd(*a, *b) == pytest.approx(frechet(*a, *b), rel=1e-8)
    few = rng.normal(size=(20, 64))  # rank-19 covariance in 64 dimensions
    mu, sigma = feature_statistics(few)
    shift = np.full(64, 0.5)
    assert frechet_psd(mu, sigma, mu + shift, sigma) == pytest.approx(float(shift @ shift), rel=1e-6)
    value = frechet(mu, sigma, *feature_statistics(rng.normal(size=(20, 64))))
    assert np.isfinite(value) and value > 0


# --- kid / toy-kid ------------------------------------------------------------------------------------------


def test_kid_is_clean_fid_kid_on_the_same_features_and_caches_its_reference_rows(components, tmp_path, tiny):
    from cleanfid.fid import kernel_distance

    data, gen = RefData(), images(24, 7, scale=0.6)
    kid = components.get("evaluator", "test-tiny-kid").build({"extractor": "test-tiny", "cache_dir": str(tmp_path / "stats"), "batch_size": 7})
    assert (kid.metric, kid.higher_is_better) == ("kid", False)
    kid.prepare(data, 24)
    value = kid.evaluate(gen, [""] * 24)
    expected = kernel_distance(direct_features(tiny, gen), direct_features(tiny, data.reference_images(24)))
    assert value == pytest.approx(float(expected), rel=1e-9, abs=1e-12)
    # the reference rows are cached beside fid's statistics (another key): a second study reads them
    calls = tiny.calls
    again = components.get("evaluator", "test-tiny-kid").build({"extractor": "test-tiny", "cache_dir": str(tmp_path / "stats"), "batch_size": 7})
    again.prepare(RefData(), 24)
    assert tiny.calls == calls and again.evaluate(gen, [""] * 24) == pytest.approx(value, rel=1e-12)
    assert json.loads(next((tmp_path / "stats").glob("*.json")).read_text())["key"]["statistic"] == "features"
    # its bootstrap resamples the generated rows with the reference fixed
    counts = np.ones((1, 24), dtype=np.int32)
    assert kid.replicates(counts)[0] == pytest.approx(value, rel=1e-9)


def test_toy_kid_is_the_kid_of_the_toy_features(components):
    from flashbench import stats

    toy = components.get("evaluator", "toy-kid").build({})
    ref = images(40, 1000)
    toy.reference_features = toy.features(ref)
    gen = images(30, 3, scale=0.7)
    value = toy.evaluate(gen, [""] * 30)
    assert value == pytest.approx(stats.kid(toy.features(gen), toy.reference_features), rel=1e-9)
