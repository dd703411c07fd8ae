"""Teacher baselines computed once per teacher recipe, seed and code (``flashbench.baseline_cache``)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
import tomli_w

from flashbench import baseline_cache
from flashbench.cli import main

ROOT = Path(__file__).resolve().parent.parent


def test_the_key_names_recipe_seed_and_device():
    k = baseline_cache.cache_key("recipe-a", 0, "cpu")
    assert k == baseline_cache.cache_key("recipe-a", 0, "cpu")
    assert (
        len(
            {
                k,
                baseline_cache.cache_key("recipe-b", 0, "cpu"),
                baseline_cache.cache_key("recipe-a", 1, "cpu"),
                baseline_cache.cache_key("recipe-a", 0, "cuda:0"),
            }
        )
        == 4
    )
    assert baseline_cache.cache_key("recipe-a", 0, "cuda:0") == baseline_cache.cache_key("recipe-a", 0, "cuda:1")


def test_the_code_fingerprint_covers_both_packages_and_the_toy_weights(monkeypatch):
    """Every file counts: a change anywhere in flashbench or its built-in plugins (weights included) gives
    another fingerprint, so no baseline computed by other code is reused."""
    import flashbench_plugins

    seen = []
    real = Path.read_bytes

    def spy(self):
        seen.append(self)
        return real(self)

    baseline_cache.code_fingerprint.cache_clear()
    monkeypatch.setattr(Path, "read_bytes", spy)
    try:
        fingerprint = baseline_cache.code_fingerprint()
    finally:
        baseline_cache.code_fingerprint.cache_clear()
    assert len(fingerprint) == 64
    names = {p.name for p in seen}
    assert {"runner.py", "baseline_cache.py", "toy_digits.py", "trainer.py"} <= names
    weights = Path(flashbench_plugins.__file__).parent / "weights"
    assert any(p.suffix == ".safetensors" and weights in p.parents for p in seen)


@pytest.mark.parametrize("value", ["off", "OFF", "0", "none"])
def test_the_cache_can_be_turned_off(monkeypatch, value):
    monkeypatch.setenv(baseline_cache.CACHE_ENV, value)
    assert baseline_cache.cache_root() is None


def _study(tmp_path: Path, name: str, guidance: float = 2.0) -> Path:
    data = tomllib.loads((ROOT / "studies" / "ablation_losses.toml").read_text())
    toy = data["scale"]["toy"]
    toy.update({"iterations": 2, "phase_length": 1, "batch_size": 4, "global_batch": 4, "seeds": [0]})
    toy["eval"].update(
        {"num_samples": 16, "batch_size": 16, "teacher_steps": [3], "grid_size": 4, "nfe": [1], "evaluators": ["toy-fd", "toy-lpips"], "guidance": guidance}
    )
    data["study"]["name"] = name
    data["study"]["primary_nfe"] = 1
    data["variants"] = data["variants"][:1]
    data["paper"]["claims"] = []
    path = tmp_path / f"{name}.toml"
    path.write_text(tomli_w.dumps(data))
    return path


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_a_second_study_reuses_the_teacher_baselines(tmp_path, monkeypatch):
    monkeypatch.setenv(baseline_cache.CACHE_ENV, str(tmp_path / "cache"))
    first, second, other = _study(tmp_path, "first"), _study(tmp_path, "second"), _study(tmp_path, "other", guidance=2.5)
    for study in (first, second, other):
        assert main(["run", str(study), "--jobs", "1", "--output", str(tmp_path / study.stem)]) == 0
    a, b, c = _rows(tmp_path / "first"), _rows(tmp_path / "second"), _rows(tmp_path / "other")
    assert "from the cache" not in (tmp_path / "first" / "run.log").read_text()
    assert "from the cache" in (tmp_path / "second" / "run.log").read_text()
    assert "from the cache" not in (tmp_path / "other" / "run.log").read_text()  # another guidance: another key

    def values(rows, role):
        return {(r["variant"], r["nfe"], r["steps"], r["metric"]): (r["value"], r["ci_low"], r["ci_high"]) for r in rows if r["role"] == role}

    assert values(a, "teacher") == values(b, "teacher") and len(values(a, "teacher")) == 2 * 3  # 2 metrics x 3 samplings
    # the students of the second study read the copied reference: their LPIPS-to-teacher is the first study's
    assert values(a, "student") == values(b, "student")
    assert values(a, "teacher") != values(c, "teacher")
    for r in b:
        assert r["study"] == "second"
        if r["role"] == "teacher":
            assert r["baseline_cache"] and (tmp_path / "second" / r["bootstrap_file"]).is_file()
    assert not any("baseline_cache" in r for r in a)
    entries = [p for p in (tmp_path / "cache" / "teacher-baselines").iterdir()]
    assert len(entries) == 2 and not any(p.name.startswith(".") for p in entries)  # first/second share one; other has its own
