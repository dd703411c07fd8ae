"""Safe loading, checked over the sources: every ``torch.load`` passes ``weights_only=True``; nothing
unpickles (no pickle module, no ``allow_pickle=True``); no ``eval``/``exec`` of text."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = sorted(p for folder in ("flashbench", "plugins", "examples") for p in (ROOT / folder).rglob("*.py"))
UNPICKLERS = ("pickle", "dill", "cloudpickle", "marshal", "shelve")


def _keyword(node: ast.Call, name: str):
    return next((k.value for k in node.keywords if k.arg == name), None)


def _is(value, expected) -> bool:
    return isinstance(value, ast.Constant) and value.value is expected


def problems(source: str, name: str = "<source>") -> list[str]:
    out = []
    for node in ast.walk(ast.parse(source, filename=name)):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            if any(n.split(".")[0] in UNPICKLERS for n in names):
                out.append(f"{name}:{node.lineno}: imports an unpickler")
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if isinstance(f, ast.Name) and f.id in ("eval", "exec"):
            out.append(f"{name}:{node.lineno}: {f.id}() of text")
        elif isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name):
            owner, attr = f.value.id, f.attr
            if owner == "torch" and attr == "load" and not _is(_keyword(node, "weights_only"), True):
                out.append(f"{name}:{node.lineno}: torch.load without weights_only=True")
            if owner in ("np", "numpy") and attr == "load" and _keyword(node, "allow_pickle") is not None and not _is(_keyword(node, "allow_pickle"), False):
                out.append(f"{name}:{node.lineno}: np.load with allow_pickle")
    return out


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_unsafe_loading(path):
    assert problems(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT))) == []


@pytest.mark.parametrize(
    "bad",
    [
        "import torch\ntorch.load('x')\n",
        "import torch\ntorch.load('x', weights_only=False)\n",
        "import numpy as np\nnp.load('x', allow_pickle=True)\n",
        "import pickle\n",
        "from dill import loads\n",
        "eval(open('study.toml').read())\n",
    ],
)
def test_the_scan_catches_each_forbidden_construct(bad):
    assert len(problems(bad)) == 1


def test_the_scan_allows_the_safe_forms():
    ok = "import torch\nimport numpy as np\ntorch.load('x', weights_only=True)\nnp.load('x')\nmodel.eval()\n"
    assert problems(ok) == []
