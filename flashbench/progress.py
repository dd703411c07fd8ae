"""Progress of a loop: a tqdm bar on a terminal, a plain line every few percent anywhere else.

On a terminal tqdm redraws one line with carriage returns. Where standard error is a file (a SLURM log,
CI, ``2> file``) every redraw stays in the file: a 4-variant toy run wrote thousands of frames. There,
:class:`LineProgress` prints one line each time another ``every_percent`` of the loop is done and one
at the end (at most 100 / every_percent + 1 lines per loop), e.g.::

    distil: 45% 180/400 [00:41 elapsed, 00:50 left] distil=0.0123, adv=0.691

``progress_bar`` is what the training loop calls; it takes the same ``set_postfix`` either way.
"""

from __future__ import annotations

import math
import os
import sys
import time
from typing import Any, Iterable, Iterator, TextIO

DEFAULT_EVERY_PERCENT = 5


def progress_bar(
    iterable: Iterable,
    *,
    desc: str = "",
    total: int | None = None,
    disable: bool = False,
    stream: TextIO | None = None,
    every_percent: float = DEFAULT_EVERY_PERCENT,
):
    """Wrap ``iterable``: tqdm when ``stream`` (default: standard error at call time) is a terminal or a
    notebook, else a :class:`LineProgress`; ``disable``: no output at all."""
    stream = sys.stderr if stream is None else stream
    if disable:
        return LineProgress(iterable, desc=desc, total=total, stream=None)
    if is_interactive(stream) and os.environ.get("FLASHBENCH_PROGRESS") != "lines":  # lines: workers of --jobs N share a terminal
        from tqdm.auto import tqdm

        return tqdm(iterable, desc=desc, total=total, leave=False, dynamic_ncols=True, file=stream)
    return LineProgress(iterable, desc=desc, total=total, stream=stream, every_percent=every_percent)


def is_interactive(stream: Any) -> bool:
    """A terminal, or a Jupyter kernel (whose streams are not terminals, but tqdm.auto draws a widget there)."""
    try:
        if stream.isatty():
            return True
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    return shell is not None and hasattr(shell, "kernel")


def _clock(seconds: float) -> str:
    seconds = int(max(0.0, seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60:02d}:{rest % 60:02d}"


class LineProgress:
    """Iterates like ``iterable`` and writes a plain line to ``stream`` (None: nothing) each time the share
    done passes another multiple of ``every_percent``, and after the last item. Without a known length,
    one line at the end."""

    def __init__(
        self, iterable: Iterable, *, desc: str = "", total: int | None = None, stream: TextIO | None = None, every_percent: float = DEFAULT_EVERY_PERCENT
    ):
        if not every_percent > 0:
            raise ValueError(f"every_percent must be > 0, got {every_percent}")
        self.iterable = iterable
        if total is None and hasattr(iterable, "__len__"):
            total = len(iterable)  # type: ignore[arg-type]
        self.total = total
        self.desc = desc
        self.stream = stream
        self.every_percent = every_percent
        self.postfix = ""
        self.n = 0

    def set_postfix(self, ordered_dict: dict | None = None, refresh: bool = True, **kwargs) -> None:
        """As tqdm's: ``key=value`` pairs shown at the end of the next line."""
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def __len__(self) -> int:
        return self.total or 0

    def __iter__(self) -> Iterator:
        t0 = time.perf_counter()
        next_mark = self.every_percent
        for item in self.iterable:
            yield item  # the loop body runs here: its set_postfix shows on this step's line
            self.n += 1
            if self.stream is None:
                continue
            if self.total:
                percent = 100.0 * self.n / self.total
                if percent + 1e-9 >= next_mark or self.n == self.total:
                    self._write(time.perf_counter() - t0)
                    next_mark = (math.floor(percent / self.every_percent + 1e-9) + 1) * self.every_percent
        if self.stream is not None and not self.total and self.n:
            self._write(time.perf_counter() - t0)

    def _write(self, elapsed: float) -> None:
        head = f"{self.desc}: " if self.desc else ""
        if self.total:
            left = elapsed / self.n * (self.total - self.n)
            text = f"{head}{100.0 * self.n / self.total:3.0f}% {self.n}/{self.total} [{_clock(elapsed)} elapsed, {_clock(left)} left]"
        else:
            text = f"{head}{self.n} [{_clock(elapsed)} elapsed]"
        if self.postfix:
            text += f" {self.postfix}"
        try:
            print(text, file=self.stream, flush=True)
        except (OSError, ValueError):  # a closed or full log must not stop training
            pass

    def close(self) -> None:  # tqdm's interface
        pass
