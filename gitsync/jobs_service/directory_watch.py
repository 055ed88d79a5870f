"""Keep the directory store fresh the way Farm's does: a full rescan every ``interval`` seconds (the
first one ``interval`` seconds after start), plus per-file reloads on watchdog events.

Farm's ``JobFileChangedHandler`` (``nv/svc/farm/services/jobs/facilities/store/directory.py``)
matches ``*.kit`` case-insensitively, watches each directory recursively and handles only
created, modified and deleted events: a **moved** event (an editor's atomic save, gitsync's
temp-file-and-``os.replace``) is ignored, so such a file is seen at the next full rescan or
``/load``. The stand-in does exactly that, so anything tested against it sees Farm's delays.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable
from queue import Empty, SimpleQueue

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch

from gitsync.jobs_service.store import RescanAborted

log = logging.getLogger(__name__)

FileCallback = Callable[[str], None]
_HANDLED = frozenset({"created", "modified", "deleted"})


class _KitFileEvents(FileSystemEventHandler):
    """Farm's handler: created, modified and deleted ``*.kit`` files (any case); never moves, never folders.

    It only queues the event: watchdog calls handlers under its observer lock, and a handler that waited
    for the store (busy in a rescan that is adding a watch, which needs that lock) would deadlock. Farm's
    handler likewise only schedules a coroutine on its event loop.
    """

    def __init__(self, queue: SimpleQueue[tuple[str, str] | None]) -> None:
        self._queue = queue

    def on_any_event(self, event: FileSystemEvent) -> None:
        path = _as_str(event.src_path)
        if event.event_type in _HANDLED and not event.is_directory and fnmatch.fnmatch(path.lower(), "*.kit"):
            self._queue.put((event.event_type, path))


class DirectoryWatch:
    """Runs ``rescan`` on one worker thread every ``interval`` seconds; file events call the callbacks."""

    def __init__(self, rescan: Callable[[], None], interval: float, *, on_created: FileCallback,
                 on_modified: FileCallback, on_deleted: FileCallback, use_events: bool = True) -> None:
        self._rescan = rescan
        self._interval = interval
        self._use_events = use_events
        self._callbacks = {"created": on_created, "modified": on_modified, "deleted": on_deleted}
        self._events: SimpleQueue[tuple[str, str] | None] = SimpleQueue()
        self._handler = _KitFileEvents(self._events)
        self._stopping = threading.Event()
        self._observer: BaseObserver | None = None
        self._watches: dict[str, ObservedWatch] = {}
        self._watch_lock = threading.Lock()
        self._worker: threading.Thread | None = None

    def start(self) -> None:
        self._stopping.clear()
        if self._use_events:
            self._observer = Observer()
            self._observer.daemon = True
            self._observer.start()
        self._worker = threading.Thread(target=self._run, name="jobs-service-rescan", daemon=True)
        self._worker.start()

    def watch(self, directories: Iterable[str]) -> None:
        """Add a recursive watch for each directory not yet watched; like Farm, never drop one."""
        observer = self._observer  # stop() may clear the attribute meanwhile
        if observer is None:
            return
        with self._watch_lock:
            for directory in directories:
                if directory in self._watches:
                    continue
                try:
                    self._watches[directory] = observer.schedule(self._handler, directory, recursive=True)
                except OSError as exc:
                    # e.g. errno 28, inotify watch limit: the periodic rescan still works.
                    log.warning("Cannot watch %s (%s); relying on the %.0f s rescan", directory, exc, self._interval)

    def stop(self) -> None:
        """Stop the worker and the observer and wait for both; safe to call twice."""
        self._stopping.set()
        self._events.put(None)  # wakes the worker
        if self._worker is not None:
            self._worker.join(timeout=10)
            self._worker = None
        if self._observer is not None:
            observer, self._observer = self._observer, None
            observer.stop()
            with contextlib.suppress(RuntimeError):
                observer.join(timeout=10)
            with self._watch_lock:
                self._watches.clear()

    def _run(self) -> None:
        # Farm's _fetch_from_local: sleep first, then rescan forever, logging a failure and going on; file events
        # are handled in between, in the order they happened.
        next_rescan = time.monotonic() + self._interval
        while not self._stopping.is_set():
            try:
                item = self._events.get(timeout=max(0.0, next_rescan - time.monotonic()))
            except Empty:
                self._guarded(self._rescan, "Rescan of the job directories failed")
                next_rescan = time.monotonic() + self._interval
                continue
            if item is not None:
                kind, path = item
                handle = functools.partial(self._callbacks[kind], path)
                self._guarded(handle, f"Handling a file event for {path} failed")

    @staticmethod
    def _guarded(work: Callable[[], None], what: str) -> None:
        try:
            work()
        except RescanAborted as exc:
            log.error("Failed to load local job definitions: %s", exc)
        except Exception:
            log.exception(what)


def _as_str(path: str | bytes) -> str:
    return path.decode(errors="replace") if isinstance(path, bytes) else path
