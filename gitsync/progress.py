"""A one-line progress display for long runs of `validate` and `sync --once` on a terminal.

A first sync of 10,000 definitions takes seconds; without a sign of life a person at a terminal
cannot tell work from a hang. The line appears only when stderr is a terminal and the run has
already taken `after` seconds (about 2), is rewritten in place, and is erased at the end, so
short runs, pipes, CI logs and `--format json` never see it. Code reports with `step()`, which
costs nothing when no display is active.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import TextIO

_current: Progress | None = None


def step(phase: str, done: int = 0, total: int = 0) -> None:
    """Say what is being done now (`done` of `total` items, when known)."""
    if _current is not None:
        _current.update(phase, done, total)


class Progress:
    def __init__(self, stream: TextIO | None = None, after: float | None = None) -> None:
        self.stream = stream or sys.stderr
        # GITSYNC_PROGRESS_AFTER: a test seam, so a test need not make a run slow to see the line.
        self.after = float(os.environ.get("GITSYNC_PROGRESS_AFTER", "2")) if after is None else after
        self.enabled = _is_terminal(self.stream)
        self._phase, self._done, self._total = "starting", 0, 0
        self._started = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._shown = False

    def update(self, phase: str, done: int = 0, total: int = 0) -> None:
        self._phase, self._done, self._total = phase, done, total

    def __enter__(self) -> Progress:
        global _current
        if self.enabled:
            _current = self
            self._thread = threading.Thread(target=self._tick, name="gitsync-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        global _current
        if self._thread is not None:
            self._stop.set()
            self._thread.join(2)
            _current = None
        if self.enabled and time.monotonic() - self._started >= self.after:
            self._write("\r\033[K" + self.line())  # the last state, which the ticker may not have drawn yet
            self._shown = True
        if self._shown:
            self._write("\r\033[K")

    def line(self) -> str:
        count = f" {self._done}/{self._total}" if self._total else (f" {self._done}" if self._done else "")
        return f"gitsync: {self._phase}{count} ({time.monotonic() - self._started:.0f} s)"

    def _tick(self) -> None:
        if self._stop.wait(self.after):
            return
        while True:
            self._write("\r\033[K" + self.line())
            self._shown = True
            if self._stop.wait(0.25):
                return

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # the terminal went away: progress is not worth an error
            pass


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty() and os.environ.get("TERM", "") != "dumb"
    except (AttributeError, ValueError):
        return False
