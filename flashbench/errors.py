"""User-facing errors: one line, exit code 2, no traceback."""
from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input (study file, CLI call, missing weights). Printed as one line, exit 2."""

    exit_code = 2


class StudyError(UserError):
    """A problem in a study file, located by file and key."""

    def __init__(self, path, key: str | None, message: str):
        self.path, self.key, self.message = str(path), key, message
        where = f"{self.path}: {key}: " if key else f"{self.path}: "
        super().__init__(where + message)


class MissingWeightsError(UserError):
    """Weights a component needs are not on this machine (and cannot be downloaded here)."""
