"""Reading a study file, bounded: what may be read (a regular file of at most MAX_FILE_BYTES of UTF-8
TOML), how deep it may nest (MAX_DEPTH), and the other limits on hostile or mistaken input (variants,
seeds, name lengths).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10 with the tomli backport
    import tomli as tomllib  # type: ignore[no-redef]

from .problems import _Problems

MAX_VARIANTS = 256  # explicit variants x matrix cells; beyond this a study is almost surely a typo
MAX_FILE_BYTES = 1 << 20  # the largest study here is ~10 kB: a bigger file is the wrong file (or hostile)
MAX_DEPTH = 32  # tables/arrays nested deeper than this: values are walked recursively (names, JSON)
MAX_SEEDS = 100  # seeds multiply the variants; MAX_VARIANTS x MAX_SEEDS runs at most
MAX_SEED = 2**32 - 1  # numpy's generators take 0 <= seed < 2**32
MAX_NAME_CHARS = 64  # study and scale names: the default run directory is runs/<name>-<scale>
NAME_RE = re.compile(r"[a-z0-9_-]+\Z")


_TOML_AT = re.compile(r"\(at line (\d+), column (\d+)\)")


def _read(path: Path, p: _Problems) -> dict | None:
    """The file's TOML data, or None with the reason recorded. Reads nothing that is not a regular file
    (a FIFO or /dev/zero would block or never end) and at most MAX_FILE_BYTES + 1 bytes."""
    try:
        if not path.is_file():
            if path.is_symlink() and not path.exists():
                p.add(None, "a symbolic link to nothing (or to itself); no study file there")
            elif not path.exists():
                p.add(None, "no such study file")
            elif path.is_dir():
                p.add(None, "is a directory, not a study file (.toml)")
            else:
                p.add(None, "not a regular file; a study file is a TOML text file (.toml)")
            return None
        with open(path, "rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except ValueError:  # a NUL in the path (only reachable in-process: argv cannot hold one)
        p.add(None, "not a valid file name (it contains a NUL character)")
        return None
    except OSError as e:
        p.add(None, f"cannot read: {e.strerror or e}")
        return None
    if len(raw) > MAX_FILE_BYTES:
        size = path.stat().st_size
        p.add(None, f"is {size / 1e6:.1f} MB; a study file is at most {MAX_FILE_BYTES // 1024} KiB of TOML (is this the right file?)")
        return None
    hint = _format_hint(path)
    try:
        text = raw.decode("utf-8-sig")  # a byte-order mark (Windows editors) is not a mistake
    except UnicodeDecodeError as e:
        bom = 3 if raw.startswith(b"\xef\xbb\xbf") else 0
        line = raw.count(b"\n", 0, e.start + bom) + 1
        p.add(None, f"not UTF-8 text (line {line}, byte {e.start + bom}); a study file is TOML{hint}")
        return None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        message = str(e)
        at = _TOML_AT.search(message)
        if at:  # show the line: for "Cannot overwrite a value" it is the only place the key is named
            lines = text.split("\n")  # as tomllib counts lines (splitlines() also breaks on \r, \f, U+2028...)
            n = int(at.group(1))
            if 0 < n <= len(lines) and lines[n - 1].strip():
                shown = lines[n - 1].strip()
                message += f": {shown[:80]!r}" + ("..." if len(shown) > 80 else "")
        p.add(None, f"invalid TOML: {message}{hint}")
        return None
    except RecursionError:  # tomllib recurses once per nested array or inline table
        p.add(None, f"invalid study file: values nested too deeply (more than {MAX_DEPTH} levels are never needed)")
        return None


def _format_hint(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix and suffix != ".toml":
        return f"; study files are TOML (.toml), not {suffix}"
    return ""


def _too_deep(data: dict) -> tuple[str, int] | None:
    """The first key path nested deeper than MAX_DEPTH, and its depth (iterative: the data may be
    nested far deeper than Python's recursion limit, e.g. a dotted table header of 100,000 parts)."""
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    while stack:
        value, key, depth = stack.pop()
        if depth > MAX_DEPTH:
            return key, depth
        if isinstance(value, dict):
            stack.extend((v, f"{key}.{k}" if key else str(k), depth + 1) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, f"{key}[{i}]", depth + 1) for i, v in enumerate(value))
    return None
