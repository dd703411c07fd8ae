"""The layering DESIGN.md states: ``flashbench/method/`` holds Algorithm 1's maths and does no I/O, so it imports
nothing of the host (training loop, checkpoints, runner, studies, reports, CLI), not even lazily in a function."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

METHOD = Path(__file__).resolve().parents[1] / "flashbench" / "method"
#: the host modules method/ may use: the configuration dataclasses and the statistics (both pure, no I/O)
ALLOWED = {"flashbench.config", "flashbench.stats"}


def host_imports(path: Path) -> list[tuple[int, str]]:
    """(line, ``flashbench.X``) for each module outside method/ imported anywhere in ``path`` (top level or inside
    a function)."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                names = [node.module or ""]
            elif node.level == 1:  # a sibling in method/
                continue
            else:  # from .. import x / from ..x import y: relative to flashbench/
                base = "flashbench" + (f".{node.module}" if node.module else "")
                names = [f"{base}.{a.name}" for a in node.names] if not node.module else [base]
        else:
            continue
        for name in names:
            if name.startswith("flashbench") and not name.startswith("flashbench.method"):
                out.append((node.lineno, name))
    return out


@pytest.mark.parametrize("path", sorted(METHOD.glob("*.py")), ids=lambda p: p.name)
def test_method_imports_nothing_of_the_host(path):
    bad = [f"{path.name}:{line}: {name}" for line, name in host_imports(path) if name not in ALLOWED]
    assert not bad, "method/ reaches up into the host: " + "; ".join(bad)


def test_the_check_sees_a_lazy_upward_import(tmp_path):
    source = tmp_path / "x.py"
    source.write_text("def f():\n    from ..training import TrainingLoop\n    import flashbench.checkpoint\n", encoding="utf-8")
    assert host_imports(source) == [(2, "flashbench.training"), (3, "flashbench.checkpoint")]
