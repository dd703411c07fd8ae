"""The result store: rows round-trip, crash safety, completion markers, provenance without torch."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from flashbench.errors import UserError
from flashbench.results import (
    CORE_COLUMNS,
    ResultStore,
    atomic_write_json,
    collect_provenance,
    to_jsonable,
)


def _row(key="lsgan-s0", metric="fd", value=22.5, **extra):
    row = {
        "study": "fig5b",
        "scale": "toy",
        "variant": key.rsplit("-s", 1)[0],
        "variant_key": key,
        "seed": 0,
        "role": "student",
        "nfe": 2,
        "steps": 2,
        "metric": metric,
        "value": value,
        "n": 64,
        "higher_is_better": False,
        "axis.adv_loss": "lsgan",
        "trainable_params": 1000,
    }
    row.update(extra)
    return row


def test_init_creates_nothing(tmp_path):
    store = ResultStore(tmp_path / "run")
    assert not (tmp_path / "run").exists()
    assert store.rows() == []
    assert store.dataframe().empty


def test_rows_round_trip(tmp_path):
    store = ResultStore(tmp_path / "run")
    rows = [_row(), _row(metric="clip_score", value=np.float32(0.25), higher_is_better=np.bool_(True)), _row(nfe=np.int64(4), steps=4, value=np.float64(21.0))]
    store.add_rows(rows[:2])
    store.add_rows(rows[2:])
    store.mark_done("lsgan-s0", {"seconds": 1.5})
    got = store.rows()
    assert len(got) == 3
    for want, have in zip(rows, got):
        for k, v in want.items():
            assert have[k] == pytest.approx(to_jsonable(v)), k
        assert have["status"] == "ok"
        assert set(CORE_COLUMNS) <= set(have)
    assert isinstance(got[2]["nfe"], int)
    df = store.dataframe()
    assert df.shape[0] == 3 and "axis.adv_loss" in df.columns
    # every line of the file is strict JSON
    for line in (tmp_path / "run" / "results.jsonl").read_text().splitlines():
        json.loads(line)


def test_nan_is_stored_as_null_and_failed(tmp_path):
    store = ResultStore(tmp_path)
    store.add_rows([_row(value=float("nan")), _row(metric="clip_score", value=None, status="failed", reason="oom")])
    store.mark_done("lsgan-s0", {})
    text = (tmp_path / "results.jsonl").read_text()
    assert "NaN" not in text
    nan_row, failed_row = store.rows()
    assert nan_row["value"] is None and nan_row["status"] == "failed" and "non-finite" in nan_row["reason"]
    assert failed_row["status"] == "failed" and failed_row["reason"] == "oom"


def test_non_serialisable_value_is_rejected(tmp_path):
    with pytest.raises(TypeError, match="row 0.value"):
        ResultStore(tmp_path).add_rows([_row(value=object())])


def test_truncated_last_line_is_ignored(tmp_path):
    store = ResultStore(tmp_path)
    store.add_rows([_row(), _row(metric="clip_score", value=0.3)])
    store.mark_done("lsgan-s0", {})
    with open(tmp_path / "results.jsonl", "a", encoding="utf-8") as f:
        f.write('{"variant_key": "lsgan-s0", "metric": "fd", "val')  # a crash mid-write
    assert len(store.rows()) == 2
    assert store.skipped_lines == 1


def test_append_after_torn_line_keeps_new_rows(tmp_path):
    store = ResultStore(tmp_path)
    with open(tmp_path / "results.jsonl", "w", encoding="utf-8") as f:
        f.write('{"variant_key": "hinge-s0", "metr')
    store.add_rows([_row()])
    store.mark_done("lsgan-s0", {})
    assert [r["variant_key"] for r in store.rows()] == ["lsgan-s0"]


def test_rows_without_done_marker_are_dropped(tmp_path):
    store = ResultStore(tmp_path)
    store.add_rows([_row("lsgan-s0"), _row("hinge-s0")])
    store.mark_done("lsgan-s0", {})
    assert [r["variant_key"] for r in store.rows()] == ["lsgan-s0"]
    assert store.is_done("lsgan-s0") and not store.is_done("hinge-s0")
    assert len(store.all_rows()) == 2


def test_killed_attempt_is_not_counted_twice(tmp_path):
    killed = ResultStore(tmp_path)
    killed.add_rows([_row("hinge-s0", value=99.0)])  # then the process dies before mark_done
    rerun = ResultStore(tmp_path)
    rerun.add_rows([_row("hinge-s0", value=30.0)])
    rerun.mark_done("hinge-s0", {})
    assert [r["value"] for r in rerun.rows()] == [30.0]
    assert [r["value"] for r in ResultStore(tmp_path).rows()] == [30.0]


def test_mark_done_is_atomic_json(tmp_path):
    store = ResultStore(tmp_path)
    store.mark_done("lsgan-s0", {"train_seconds": np.float64(12.5), "path": tmp_path})
    files = list((tmp_path / "variants" / "lsgan-s0").iterdir())
    assert [f.name for f in files] == ["done.json"]  # no temporary file left behind
    data = json.loads(files[0].read_text())
    assert data["train_seconds"] == 12.5 and data["path"] == str(tmp_path)
    assert data["attempt"] and data["finished"]


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "x.json"
    atomic_write_json(path, {"a": 1})
    with pytest.raises(TypeError):
        atomic_write_json(path, {"a": object()})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_variant_keys_are_checked(tmp_path):
    store = ResultStore(tmp_path)
    for bad in ("", "..", "a/b"):
        with pytest.raises(ValueError):
            store.variant_dir(bad)
    with pytest.raises(ValueError):
        store.add_rows([{"metric": "fd", "value": 1.0}])  # no variant_key
    assert store.variant_dir("teacher-s0").is_dir()


def test_study_and_provenance_round_trip(tmp_path):
    store = ResultStore(tmp_path / "run")
    with pytest.raises(UserError, match="study.json"):
        store.read_study()
    store.write_study({"name": "fig5b", "seeds": (0, 1), "x": math.inf})
    assert store.read_study() == {"name": "fig5b", "seeds": [0, 1], "x": None}
    store.write_provenance({"git_hash": "abc"})
    assert store.read_provenance() == {"git_hash": "abc"}


def test_provenance_keys_without_importing_torch(tmp_path):
    code = (
        "import json, sys\n"
        "from flashbench.results import collect_provenance\n"
        "p = collect_provenance('toy')\n"
        "print(json.dumps({'torch_imported': 'torch' in sys.modules, 'p': p}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path)
    data = json.loads(out.stdout)
    assert data["torch_imported"] is False
    p = data["p"]
    for key in ("scale", "git_hash", "python", "packages", "platform", "cpu", "cpu_count", "gpus", "hostname", "timestamp"):
        assert key in p, key
    assert p["scale"] == "toy"
    assert p["git_hash"] == "unknown"  # tmp_path is not a repository
    assert set(p["packages"]) >= {"torch", "diffusers", "transformers", "peft", "accelerate", "open_clip_torch", "clean-fid", "pandas", "pluggy", "flashbench"}
    assert p["packages"]["flashbench"]
    assert p["gpus"] is None  # torch was not imported, so no GPU query


def test_provenance_is_json(tmp_path):
    json.dumps(collect_provenance("paper"), allow_nan=False)
