"""User-facing errors: one line, exit code 2, no traceback."""

from __future__ import annotations

import re

# Everything str.splitlines() breaks on (\n, \r, \v, \f, \x1c-\x1e, \x85, U+2028/9), the other C0
# controls and DEL: a hostile key or file name must not turn one error into several lines, or into
# terminal escape sequences.
_LINE_BREAKING = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")
MAX_KEY_CHARS = 200  # a key path longer than this is shown cut (a 1 MB key name is one unreadable line)


def one_line(text: str) -> str:
    """``text`` with line breaks and control characters escaped, so that it prints as one line."""
    return _LINE_BREAKING.sub(lambda m: repr(m.group())[1:-1], str(text))


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class UserError(Exception):
    """A mistake in the user's input (study file, CLI call, missing weights). Printed as one line, exit 2."""

    exit_code = 2


class StudyError(UserError):
    """A problem in a study file, located by file and key. ``str()`` is one line whatever the file name,
    key or message hold (control characters escaped); the attributes keep the raw text."""

    def __init__(self, path, key: str | None, message: str):
        self.path, self.key, self.message = str(path), key, message
        where = f"{one_line(self.path)}: "
        if key:
            where += f"{_clip(one_line(key), MAX_KEY_CHARS)}: "
        super().__init__(where + one_line(message))


class MissingWeightsError(UserError):
    """Weights a component needs are not on this machine (and cannot be downloaded here)."""
