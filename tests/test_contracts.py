"""The published contracts of :mod:`flashbench.testing` beyond teachers -- datasets, evaluators, timestep
distributions -- run against the built-in components, and every contract test shown able to fail: each is
called on a deliberately broken component and must raise, with the message a plugin author would read.
A meta-test keeps the broken cases complete: a contract test added without one fails it.
"""

from __future__ import annotations

import io
import json
import re
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from flashbench.errors import MissingWeightsError
from flashbench.method.data import Batch, Dataset
from flashbench.method.evaluation import MeanEvaluator
from flashbench.method.timesteps import TimestepDistribution
from flashbench.plugins import collect_components
from flashbench.testing import DatasetContract, EvaluatorContract, MissingWeights, RandomImages, TeacherContract, TimestepDistributionContract

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def components():
    return collect_components()


def _components():
    return collect_components()


def write_caption_folder(root, n: int = 8):
    """``n`` seeded 24x20 noise images with captions.jsonl: an ``image-captions`` folder."""
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        arr = (np.random.default_rng(i).random((20, 24, 3)) * 255).astype(np.uint8)
        Image.fromarray(arr).save(root / f"img{i}.png")
        rows.append({"file": f"img{i}.png", "text": f"caption {i}"})
    (root / "captions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def write_shards(root, shards: int = 3, per_shard: int = 4):
    """webdataset shards of seeded noise JPEGs with json captions (the last shard is held out)."""
    root.mkdir(parents=True, exist_ok=True)
    for s in range(shards):
        with tarfile.open(root / f"part-{s:05d}.tar", "w") as tar:
            for j in range(per_shard):
                buf = io.BytesIO()
                Image.fromarray((np.random.default_rng(10 * s + j).random((20, 20, 3)) * 255).astype(np.uint8)).save(buf, format="JPEG")
                meta = json.dumps({"caption": f"shard {s} {j}", "aesthetic": 6.5}).encode()
                for name, data in ((f"k{s}{j:03d}.jpg", buf.getvalue()), (f"k{s}{j:03d}.json", meta)):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return root


# === the built-ins under the contracts =====================================================================
class TestToyDigitsDataset(DatasetContract):
    image_shape = (3, 16, 16)

    def make_dataset(self):
        return _components().get("dataset", "toy-digits").build({})


class TestImageCaptionsInpaintDataset(DatasetContract):
    """The image-folder dataset with the inpainting task: extras on every batch and evaluation set."""

    image_shape = (3, 16, 16)
    extras_keys = frozenset({"mask", "masked_image"})

    @pytest.fixture(scope="class", autouse=True)
    @classmethod
    def _folder(cls, request, tmp_path_factory):
        request.cls.folder = write_caption_folder(tmp_path_factory.mktemp("captions") / "data")

    def make_dataset(self):
        return _components().get("dataset", "image-captions").build({"path": str(self.folder), "resolution": 16, "heldout_fraction": 0.4, "task": "inpaint"})


class TestWebdatasetDataset(DatasetContract):
    """The streaming dataset: ``train_batches`` per rank, resumable, derived from the rng without advancing it."""

    image_shape = (3, 16, 16)

    @pytest.fixture(scope="class", autouse=True)
    @classmethod
    def _shards(cls, request, tmp_path_factory):
        request.cls.shards = write_shards(tmp_path_factory.mktemp("shards"))

    def make_dataset(self):
        return (
            _components()
            .get("dataset", "webdataset")
            .build({"shards": (str(self.shards / "part-{00000..00002}.tar"),), "resolution": 16, "shuffle_buffer": 4, "num_workers": 0})
        )


class _ToyEvaluator(EvaluatorContract):
    name = ""

    def make_evaluator(self):
        return _components().get("evaluator", self.name).build({}, device="cpu")

    def make_dataset(self):
        return _components().get("dataset", "toy-digits").build({})

    @property
    def metric(self):  # what the plugin declared at registration
        return _components().get("evaluator", self.name).metric


class TestToyFD(_ToyEvaluator):
    name, higher_is_better = "toy-fd", False
    rtol = 1e-5  # a Fréchet distance through a matrix square root


class TestToyKID(_ToyEvaluator):
    name, higher_is_better = "toy-kid", False


class TestToyClipScore(_ToyEvaluator):
    name, higher_is_better = "toy-clip-score", True


class TestToyLPIPS(_ToyEvaluator):
    name, higher_is_better = "toy-lpips", False


class _TimestepBuiltin(TimestepDistributionContract):
    name = ""
    options: dict = {}

    def make_distribution(self, num_timesteps, phase_length, num_phases):
        component = _components().get("timesteps", self.name)
        return component.build(self.options, num_timesteps=num_timesteps, phase_length=phase_length, num_phases=num_phases)


class TestFlashTimesteps(_TimestepBuiltin):
    name = "flash"


class TestFlashCodeSpreadTimesteps(_TimestepBuiltin):
    name, options = "flash", {"spread": "code"}


class TestUniformTimesteps(_TimestepBuiltin):
    name = "uniform"


class TestGaussianTimesteps(_TimestepBuiltin):
    name = "gaussian"


class TestGaussianWideTimesteps(_TimestepBuiltin):
    name, options = "gaussian", {"mean": 0.7, "std": 0.3}


class TestSharpTimesteps(_TimestepBuiltin):
    name = "sharp"


def test_every_builtin_timestep_distribution_is_under_the_contract():
    builtin = {c.name for c in _components().all() if c.kind == "timesteps" and c.distribution == "flashbench"}
    covered = {cls.name for cls in _TimestepBuiltin.__subclasses__()}
    assert builtin and builtin <= covered, f"built-in timestep distributions without a contract test: {sorted(builtin - covered)}"


# === each contract test can fail ============================================================================
# --- datasets: a small, correct dataset, then one fault each ---
class GoodDataset(Dataset):
    name = "good"

    def __init__(self, size: int = 8):
        self.size = size

    def _images(self, n, seed):
        return torch.rand((n, 3, self.size, self.size), generator=torch.Generator().manual_seed(seed)) * 2 - 1

    def train_batch(self, rng, batch_size):
        seed = int(rng.integers(2**31))
        return Batch(self._images(batch_size, seed), [f"p{seed % 97} {i}" for i in range(batch_size)], {"mask": torch.ones(batch_size, 1, 8, 8)})

    def eval_prompts(self, n, seed=0):
        return [f"prompt {(i + seed) % 5}" for i in range(n)]

    def reference_images(self, n, seed=0):
        return self._images(n, 1000 + seed)

    def eval_extras(self, n, seed=0):
        return {"mask": torch.ones(n, 1, 8, 8)}


class StreamingDataset(GoodDataset):
    def train_batches(self, rng, batch_size, rank=0, world=1, start=0):
        seed = int(np.random.default_rng(rng.bit_generator.state["state"]["state"] % 2**32).integers(2**31))
        step = start
        while True:
            yield self.train_batch(np.random.default_rng([seed, step, rank]), batch_size)
            step += 1


class WrongChannels(GoodDataset):
    def train_batch(self, rng, batch_size):
        batch = super().train_batch(rng, batch_size)
        return Batch(batch.images[:, :1], batch.prompts, batch.extras)


class UnseededBatches(GoodDataset):
    def train_batch(self, rng, batch_size):
        return super().train_batch(np.random.default_rng(), batch_size)


class GlobalRNGBatches(GoodDataset):
    def train_batch(self, rng, batch_size):
        batch = super().train_batch(rng, batch_size)
        return Batch(batch.images * torch.rand(()), batch.prompts, batch.extras)


class StreamAdvancesRNG(StreamingDataset):
    def train_batches(self, rng, batch_size, rank=0, world=1, start=0):
        seed = int(rng.integers(2**31))  # advances the trainer's generator
        return super().train_batches(np.random.default_rng(seed), batch_size, rank, world, start)


class TuplePrompts(GoodDataset):
    def eval_prompts(self, n, seed=0):
        return tuple(super().eval_prompts(n, seed))


class ByteReferenceImages(GoodDataset):
    def reference_images(self, n, seed=0):
        return (super().reference_images(n, seed) + 1) * 127.5


class ChannelFirstExtras(GoodDataset):
    def eval_extras(self, n, seed=0):
        return {"mask": torch.ones(1, n, 8, 8)}


class EmptyReferenceId(GoodDataset):
    def reference_id(self):
        return ""


# --- evaluators ---
class GoodEvaluator(MeanEvaluator):
    """Mean brightness of each image: a per-sample score, so intervals come for free."""

    metric, higher_is_better = "brightness", True

    def update(self, images, prompts, *, reference=None):
        self.add(images.float().mean(dim=(1, 2, 3)))


class NoDirection(MeanEvaluator):
    metric = "brightness"

    def update(self, images, prompts, *, reference=None):
        self.add(images.float().mean(dim=(1, 2, 3)))


class NaNValue(GoodEvaluator):
    def compute(self):
        return float("nan")


class NoisyValue(GoodEvaluator):
    def compute(self):
        return super().compute() + float(np.random.default_rng().normal())


class LastBatchOnly(GoodEvaluator):
    def update(self, images, prompts, *, reference=None):
        self.reset()
        super().update(images, prompts, reference=reference)


class NeverForgets(GoodEvaluator):
    def reset(self):
        if not hasattr(self, "_scores"):
            super().reset()


class CountBlindReplicates(GoodEvaluator):
    def replicates(self, counts):
        return np.full(len(counts), self.compute())


# --- timestep distributions ---
class Unnormalised(TimestepDistribution):
    def pmf(self, phase):
        return torch.arange(1, self.num_timesteps + 1, dtype=torch.float64)


class UnclampedPhase(TimestepDistribution):
    def pmf(self, phase):
        return torch.full((self.num_timesteps,), 1.0 / self.num_timesteps, dtype=torch.float64)

    def phase(self, iteration):
        return iteration // self.phase_length


class ZeroBased(UnclampedPhase):
    def phase(self, iteration):
        return TimestepDistribution.phase(self, iteration)

    def sample(self, generator, n, iteration):
        return super().sample(generator, n, iteration) - 1


class GlobalGenerator(ZeroBased):
    def sample(self, generator, n, iteration):
        return torch.multinomial(self.pmf(self.phase(iteration)).float(), n, replacement=True) + 1


class IgnoresPmf(TimestepDistribution):
    def pmf(self, phase):
        p = torch.zeros(self.num_timesteps, dtype=torch.float64)
        p[-1] = 1.0
        return p

    def sample(self, generator, n, iteration):
        return torch.randint(1, self.num_timesteps + 1, (n,), generator=generator)


def dataset_contract(dataset_cls):
    return type(f"Broken{dataset_cls.__name__}", (DatasetContract,), {"make_dataset": lambda self: dataset_cls()})


def evaluator_contract(evaluator_cls):
    return type(f"Broken{evaluator_cls.__name__}", (EvaluatorContract,), {"make_evaluator": lambda self: evaluator_cls()})


def timestep_contract(dist_cls):
    return type(
        f"Broken{dist_cls.__name__}", (TimestepDistributionContract,), {"make_distribution": lambda self, k, length, phases: dist_cls(k, length, phases)}
    )


#: contract -> test -> (the broken component's contract, a fragment of the failure's message)
BROKEN = {
    DatasetContract: {
        "test_train_batch_shapes": (dataset_contract(WrongChannels), "expected (3, 3, H, W)"),
        "test_train_batches_are_determined_by_the_seed": (dataset_contract(UnseededBatches), "differs between two builds"),
        "test_train_batches_ignore_the_global_rngs": (dataset_contract(GlobalRNGBatches), "global RNG"),
        "test_streaming_batches": (dataset_contract(StreamAdvancesRNG), "advanced the rng"),
        "test_eval_prompts": (dataset_contract(TuplePrompts), "must be a list"),
        "test_reference_images": (dataset_contract(ByteReferenceImages), "not [-1, 1]"),
        "test_eval_extras": (dataset_contract(ChannelFirstExtras), "batch first"),
        "test_reference_id": (dataset_contract(EmptyReferenceId), "non-empty string"),
    },
    EvaluatorContract: {
        "test_declares_metric_and_direction": (evaluator_contract(NoDirection), "does not declare higher_is_better"),
        "test_value_is_a_finite_float": (evaluator_contract(NaNValue), "compute() returned nan"),
        "test_value_is_deterministic": (evaluator_contract(NoisyValue), "two values"),
        "test_streamed_equals_one_batch": (evaluator_contract(LastBatchOnly), "batch by batch"),
        "test_reset_forgets_earlier_batches": (evaluator_contract(NeverForgets), "kept earlier samples"),
        "test_replicates_are_interval_ready": (evaluator_contract(CountBlindReplicates), "ignore the counts"),
    },
    TimestepDistributionContract: {
        "test_pmf_is_a_distribution_over_the_grid": (timestep_contract(Unnormalised), "not 1"),
        "test_phases": (timestep_contract(UnclampedPhase), "phase() left"),
        "test_samples_are_grid_indices": (timestep_contract(ZeroBased), "outside 1.."),
        "test_sampling_is_reproducible_for_a_seed": (timestep_contract(GlobalGenerator), "global generator"),
        "test_samples_follow_the_pmf": (timestep_contract(IgnoresPmf), "from pmf"),
    },
}


def _fixtures(contract, test, tmp_path):
    """What pytest would inject into ``test`` (the contract fixtures, built as the contract builds them)."""
    names = test.__code__.co_varnames[1 : test.__code__.co_argcount]
    given = {}
    for name in names:
        if name == "dataset":
            given[name] = contract.make_dataset()
        elif name == "evaluator":
            evaluator = contract.make_evaluator()
            evaluator.prepare(contract.make_dataset(), contract.num_samples)
            given[name] = evaluator
        elif name == "tmp_path":
            given[name] = tmp_path
        else:
            raise AssertionError(f"no fixture {name!r} for the broken-component runner")
    return given


CASES = [pytest.param(base, test, id=f"{base.__name__}.{test}") for base, tests in BROKEN.items() for test in tests]


@pytest.mark.parametrize(("base", "test"), CASES)
def test_the_contract_test_passes_on_a_correct_component(base, test, tmp_path):
    """The control: the same test passes on the correct component the broken one departs from."""
    good = {
        DatasetContract: dataset_contract(StreamingDataset),
        EvaluatorContract: evaluator_contract(GoodEvaluator),
        TimestepDistributionContract: timestep_contract(type("Good", (UnclampedPhase,), {"phase": TimestepDistribution.phase})),
    }[base]()
    method = getattr(good, test)
    method(**_fixtures(good, method, tmp_path))


@pytest.mark.parametrize(("base", "test"), CASES)
def test_the_contract_test_fails_on_a_broken_component(base, test, tmp_path):
    contract_cls, message = BROKEN[base][test]
    contract = contract_cls()
    method = getattr(contract, test)
    with pytest.raises(AssertionError, match=re.escape(message)):
        method(**_fixtures(contract, method, tmp_path))


@pytest.mark.parametrize("base", list(BROKEN))
def test_every_contract_test_has_a_broken_component(base):
    tests = {name for name in dir(base) if name.startswith("test_")}
    assert tests == set(BROKEN[base]), f"{base.__name__}: contract tests without a broken case: {sorted(tests - set(BROKEN[base]))}"


def test_random_images_is_a_dataset_under_its_contract():
    class Contract(DatasetContract):
        def make_dataset(self):
            return RandomImages(8)

    contract = Contract()
    for name in dir(contract):
        if name.startswith("test_") and name != "test_streaming_batches":
            method = getattr(contract, name)
            method(**({"dataset": contract.make_dataset()} if "dataset" in method.__code__.co_varnames else {}))


# --- the teacher contract's offline check ---
class _OfflineContract(TeacherContract):
    def build_teacher(self, options, *, device="cpu"):
        raise MissingWeightsError(self.message.format(**options))


def test_the_offline_check_passes_on_one_line_errors(monkeypatch):
    contract = type("Good", (_OfflineContract,), {"message": "teacher weights {path!r} are not here; set the teacher's path option"})()
    for missing in (MissingWeights({"path": "org/model"}, "org/model"), MissingWeights({"path": "x/y", "other": 1}, "x/y")):
        contract.test_missing_weights_offline_are_one_line_errors(missing, monkeypatch)


@pytest.mark.parametrize(
    ("message", "fragment"),
    [
        ("teacher weights {path!r} are not here;\nset the teacher's path option", "several lines"),
        ("teacher weights are not here; set the teacher's path option", "does not name"),
        ("teacher weights {path!r} are not here", "the option 'path'"),
    ],
)
def test_the_offline_check_fails_on_a_bad_error(message, fragment, monkeypatch):
    contract = type("Bad", (_OfflineContract,), {"message": message})()
    with pytest.raises(AssertionError, match=fragment):
        contract.test_missing_weights_offline_are_one_line_errors(MissingWeights({"path": "org/model"}, "org/model"), monkeypatch)


def test_the_offline_check_fails_when_the_build_succeeds(monkeypatch):
    contract = type("Loads", (TeacherContract,), {"build_teacher": lambda self, options, device="cpu": object()})()
    with pytest.raises(pytest.fail.Exception, match="DID NOT RAISE"):
        contract.test_missing_weights_offline_are_one_line_errors(MissingWeights({"path": "org/model"}, "org/model"), monkeypatch)
