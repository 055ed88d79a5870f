"""Which target files may have changed since the last look, so a cycle `stat`s only those.

The watcher's events name the files; a cycle takes the names collected so far. When the events
cannot be trusted to be complete (at start, after the kernel's inotify queue overflowed, after a
fall-back to polling, after a cycle step failed) and on a slow resync timer, as Kubernetes
informers resync, the answer is "everything" (None) and the cycle scans the whole directory.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable

#: A full scan at least this often even when every event arrived: a safety net, not the normal path.
RESYNC_SECONDS = 600.0


class DirtySet:
    def __init__(self, resync_after: float = RESYNC_SECONDS, clock: Callable[[], float] = time.monotonic,
                 root: str | os.PathLike[str] | None = None) -> None:
        #: The job directory: a path under it is kept relative (``exts/x/y.py`` inside a companion folder);
        #: without it, or for a path outside it, the base name.
        self.root = os.fspath(root) if root is not None else None
        self.resync_after = resync_after
        self.clock = clock
        self._lock = threading.Lock()
        self._names: set[str] = set()
        self._everything = True
        self._last_full = clock()

    def add(self, paths: Iterable[str]) -> None:
        with self._lock:
            self._names.update(self._name(p) for p in paths if p)

    def _name(self, path: str) -> str:
        if self.root is not None and os.path.isabs(path):
            relative = os.path.relpath(path, self.root)
            if not relative.startswith(".."):
                return relative.replace(os.sep, "/")
        return os.path.basename(path)

    def everything(self) -> None:
        """Events were or may have been lost: the next cycle looks at every file."""
        with self._lock:
            self._everything = True

    def take(self) -> set[str] | None:
        """The names collected since the last take, or None when the whole directory must be scanned."""
        with self._lock:
            now = self.clock()
            if self._everything or now - self._last_full >= self.resync_after:
                self._everything, self._names, self._last_full = False, set(), now
                return None
            names, self._names = self._names, set()
            return names
