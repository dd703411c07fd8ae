"""The embedded toy world: data and split, prompts, the offline CLIP tokenizer, the bundled networks, and the
toy evaluators / perceptual loss checked against direct computations."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.nn.functional as F

from flashbench.errors import MissingWeightsError
from flashbench_plugins.toy import data

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def dataset(components):
    return components.get("dataset", "toy-digits").build({})


@pytest.fixture(scope="module")
def heldout():
    """(images, prompts, digits, colours) of 180 held-out digits, unshifted, seeded colours."""
    images, prompts = data.ColouredDigits("heldout", shift=0).fixed(180, seed=3)
    digits, colours = zip(*(data.parse_prompt(p) for p in prompts))
    colour_idx = [list(data.COLOURS).index(c) for c in colours]
    return torch.from_numpy(images), prompts, np.array(digits), np.array(colour_idx)


# --- data ------------------------------------------------------------------------------------------------


def test_splits_hold_every_fifth_digit_out():
    from sklearn.datasets import load_digits

    raw = load_digits()
    train, held = data.load_split("train"), data.load_split("heldout")
    assert len(held.digits) == 360 and len(train.digits) == 1437
    idx = np.arange(len(raw.images))
    np.testing.assert_array_equal(held.digits, raw.target[idx % 5 == 0])
    np.testing.assert_array_equal(train.digits, raw.target[idx % 5 != 0])
    # disjoint as images, not only as indices (sklearn's digits hold no exact duplicates across the split)
    held_raw = {raw.images[i].tobytes() for i in idx[idx % 5 == 0]}
    train_raw = {raw.images[i].tobytes() for i in idx[idx % 5 != 0]}
    assert not held_raw & train_raw
    with pytest.raises(ValueError, match="split"):
        data.load_split("test")


def test_upsampling_is_bilinear_half_pixel():
    from sklearn.datasets import load_digits

    raw = load_digits().images[::5].astype(np.float32) / 16.0
    expected = F.interpolate(torch.from_numpy(raw)[:, None], scale_factor=2, mode="bilinear", align_corners=False)[:, 0]
    held = data.load_split("heldout").intensity
    assert held.shape == (360, 16, 16) and held.dtype == np.float32
    np.testing.assert_allclose(held, expected.numpy(), atol=1e-6)
    assert held.min() >= 0.0 and held.max() <= 1.0


def test_batches_shapes_ranges_and_prompts():
    ds = data.ColouredDigits("train")
    images, prompts, digits, colours = ds.batch(np.random.default_rng(0), 64)
    assert images.shape == (64, 3, 16, 16) and images.dtype == np.float32
    assert images.min() >= -1.0 and images.max() <= 1.0
    assert images.min() == -1.0  # black background
    names = list(data.COLOURS)
    for prompt, d, c in zip(prompts, digits, colours):
        assert prompt == data.prompt_for(int(d), names[int(c)])
        assert data.parse_prompt(prompt) == (int(d), names[int(c)])
    again = ds.batch(np.random.default_rng(0), 64)
    np.testing.assert_array_equal(again[0], images)  # seeded


def test_sixty_prompts_digit_major():
    prompts = data.all_prompts()
    assert len(prompts) == 60 and len(set(prompts)) == 60
    names = list(data.COLOURS)
    for i, prompt in enumerate(prompts):
        digit, colour = data.parse_prompt(prompt)
        assert i == digit * len(names) + names.index(colour)
    assert prompts[0] == "a red digit zero"


def test_dataset_plugin(dataset):
    batch = dataset.train_batch(np.random.default_rng(0), 4)
    assert batch.images.shape == (4, 3, 16, 16) and len(batch.prompts) == 4
    assert dataset.eval_prompts(70, seed=1) == dataset.eval_prompts(70, seed=1)
    assert set(dataset.eval_prompts(60, seed=1)) == set(data.all_prompts())
    ref = dataset.reference_images(8, seed=0)
    assert ref.shape == (8, 3, 16, 16) and ref.min() >= -1 and ref.max() <= 1


# --- the offline tokenizer ---------------------------------------------------------------------------------


def test_written_tokenizer_gives_sd_ids(tmp_path):
    import open_clip
    from transformers import CLIPTokenizer

    from flashbench_plugins.teachers.toy_digits import BUNDLED
    from flashbench_plugins.toy.models import write_clip_tokenizer

    tok = CLIPTokenizer.from_pretrained(str(write_clip_tokenizer(tmp_path / "tok", model_max_length=77)))
    assert tok("a").input_ids == [49406, 320, 49407]
    assert len(tok) == 49408 and tok.model_max_length == 77
    # the same ids as open_clip's own BPE (= SD's tokenizer) on every prompt of the world
    reference = open_clip.tokenizer.SimpleTokenizer()
    bundled = CLIPTokenizer.from_pretrained(str(BUNDLED / "tokenizer"))
    for prompt in data.all_prompts() + ["A Photo of an astronaut, riding a horse!"]:
        expected = [49406, *reference.encode(prompt), 49407]
        assert tok(prompt).input_ids == expected, prompt
        assert bundled(prompt).input_ids == expected, prompt


# --- bundled networks ----------------------------------------------------------------------------------------


def test_bundled_teacher_loads_and_draws_digits(components, heldout):
    from flashbench.method.sampling import teacher_sample
    from flashbench_plugins.toy.models import UNET_CONFIG
    from flashbench_plugins.toy.perceptual import load_features

    teacher = components.get("teacher", "toy-digits").build({}, device="cpu")
    assert teacher.vae is None and teacher.latent_shape == (3, 16, 16)
    assert teacher.unet.config.block_out_channels == list(UNET_CONFIG["block_out_channels"])
    assert all(p.dtype == torch.float32 and not p.requires_grad for p in teacher.unet.parameters())
    # 12 prompts, 8 DDIM steps with CFG: the classifier should read back what was asked for
    _, prompts, digits, colours = heldout
    prompts, digits, colours = prompts[:12], digits[:12], colours[:12]
    solver = components.get("solver", "ddim").build({})
    cond, uncond = teacher.encode_prompts(prompts), teacher.null_condition(prompts)
    noise = torch.randn((12, 3, 16, 16), generator=torch.Generator().manual_seed(0))
    images = teacher_sample(teacher, solver, cond, uncond, noise, 8, 3.0).clamp(-1, 1)
    assert torch.isfinite(images).all()
    logits_d, logits_c = load_features("cpu")(images)
    assert (logits_d.argmax(1).numpy() == digits).mean() >= 0.9
    assert (logits_c.argmax(1).numpy() == colours).mean() >= 0.9


def test_features_classifier_accuracy(heldout):
    from flashbench_plugins.toy.perceptual import load_features

    images, _, digits, colours = heldout
    with torch.no_grad():
        logits_d, logits_c = load_features("cpu")(images)
    assert (logits_d.argmax(1).numpy() == digits).mean() > 0.95
    assert (logits_c.argmax(1).numpy() == colours).mean() > 0.95


def test_clip_zero_shot_accuracy(heldout):
    import open_clip

    from flashbench_plugins.toy.nets import CLIP_MODEL_NAME
    from flashbench_plugins.toy.perceptual import load_clip

    images, prompts, _, _ = heldout
    model, tokenizer = load_clip("cpu"), open_clip.get_tokenizer(CLIP_MODEL_NAME)
    vocabulary = data.all_prompts()
    with torch.no_grad():
        img = F.normalize(model.encode_image(images), dim=-1)
        txt = F.normalize(model.encode_text(tokenizer(vocabulary)), dim=-1)
    predicted = [vocabulary[i] for i in (img @ txt.T).argmax(1).tolist()]
    assert np.mean([p == q for p, q in zip(predicted, prompts)]) > 0.9


# --- evaluators against direct computations ------------------------------------------------------------------------


def _frechet(a: np.ndarray, b: np.ndarray) -> float:
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = scipy.linalg.sqrtm(cov_a @ cov_b)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(root.real))


@pytest.fixture(scope="module")
def toy_fd(components, dataset):
    evaluator = components.get("evaluator", "toy-fd").build({}, device="cpu")
    evaluator.prepare(dataset, 200, seed=0)
    return evaluator


def _features(images: torch.Tensor) -> np.ndarray:
    from flashbench_plugins.toy.perceptual import load_features

    with torch.no_grad():
        return load_features("cpu").features(images.clamp(-1, 1)).double().numpy()


def test_toy_fd_equals_direct_frechet(toy_fd, dataset):
    generated, _, _, _ = data.ColouredDigits("train").batch(np.random.default_rng(5), 200)
    generated = torch.from_numpy(generated)
    value = toy_fd.evaluate(generated, [""] * 200)
    direct = _frechet(_features(generated), _features(dataset.reference_images(200, seed=0)))
    assert value == pytest.approx(direct, rel=1e-6)


def test_toy_fd_zero_on_itself_and_large_on_noise(toy_fd, dataset):
    reference = dataset.reference_images(200, seed=0)
    itself = toy_fd.evaluate(reference, [""] * 200)
    spread = np.trace(np.cov(_features(reference), rowvar=False))  # the scale distances are measured on
    assert abs(itself) < 1e-6 * spread
    noise = torch.rand((200, 3, 16, 16), generator=torch.Generator().manual_seed(0)) * 2 - 1
    other_real = torch.from_numpy(data.ColouredDigits("train", shift=0).fixed(200, seed=9)[0])
    real_gap = toy_fd.evaluate(other_real, [""] * 200)
    # 200 samples of 128-d features: real vs other real is not ~0 (finite-sample bias), noise is far beyond it
    assert toy_fd.evaluate(noise, [""] * 200) > 5 * real_gap > 0


def test_toy_clip_score_equals_direct_cosine(components, heldout):
    import open_clip

    from flashbench_plugins.toy.nets import CLIP_MODEL_NAME
    from flashbench_plugins.toy.perceptual import load_clip

    images, prompts, _, _ = heldout
    images, prompts = images[:40], prompts[:40]
    evaluator = components.get("evaluator", "toy-clip-score").build({}, device="cpu")
    value = evaluator.evaluate(images, prompts)
    model = load_clip("cpu")
    with torch.no_grad():
        img = model.encode_image(images)
        txt = model.encode_text(open_clip.get_tokenizer(CLIP_MODEL_NAME)(prompts))
    direct = F.cosine_similarity(img.double(), txt.double(), dim=-1).mean().item()
    assert value == pytest.approx(direct, rel=1e-5)
    shuffled = evaluator.evaluate(images, prompts[1:] + prompts[:1])
    assert value > shuffled  # the right prompts score higher than the wrong ones


# --- the lpips loss plugin -----------------------------------------------------------------------------------


def test_lpips_toy_digits_net(components, heldout):
    images = heldout[0][:8]
    loss = components.get("loss", "lpips").build({"net": "toy-digits"}, device="cpu")
    identity = lambda z: z  # noqa: E731  (pixel space: decode is the identity)
    assert loss(images, images, identity).item() == 0.0
    other = heldout[0][8:16]
    assert loss(images, other, identity).item() > 0.0
    assert loss(images, (images + 0.1 * torch.randn_like(images)).clamp(-1, 1), identity).item() > 0.0


def test_lpips_vgg_offline_raises_missing_weights(components, monkeypatch, tmp_path):
    import torchvision.models._api

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache: no checkpoint to find

    def offline(*args, **kwargs):
        raise OSError("network unreachable (offline test)")

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)
    with pytest.raises(MissingWeightsError, match="vgg") as info:
        components.get("loss", "lpips").build({"net": "vgg"}, device="cpu")
    assert "\n" not in str(info.value)
