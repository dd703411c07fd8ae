"""Names: what an explicit variant may be called, how a matrix cell names its variant, and the
filesystem-safe key derived from a name.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from .problems import _fmt

VARIANT_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*\Z")


def _render(raw: Any) -> str:
    """A matrix value in a variant name: components by name, arrays space-separated."""
    if isinstance(raw, dict):
        options = " ".join(f"{k}={_render(v)}" for k, v in raw.items() if k != "name")
        return f"{raw.get('name')}({options})" if options else str(raw.get("name"))
    if isinstance(raw, list):
        return "[" + " ".join(_render(x) for x in raw) + "]"
    if isinstance(raw, (bool, float)):
        return _fmt(raw)
    return str(raw)


def _variant_name(vname: str, cell, explicit: bool) -> str:
    """A variant's name: ``variant/k=v,k2=v2`` with an explicit variant and a matrix cell, ``k=v,k2=v2``
    with a matrix only, the explicit variant's name (or ``base``) without a matrix."""
    cell_name = ",".join(f"{a.name}={_render(s.raw)}" for a, s in cell)
    if cell and explicit:
        return f"{vname}/{cell_name}"
    return cell_name or vname


def _slug(name: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._+=,-]+", "_", name)
    if safe.startswith("."):
        safe = "_" + safe[1:]
    if safe != name or len(safe) > 96:
        # Replaced characters could make two names collide: a short hash of the name keeps keys unique.
        safe = f"{safe[:80]}-{hashlib.sha1(name.encode()).hexdigest()[:6]}"
    return safe
