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
import logging
import threading
from collections.abc import Callable, Iterable

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch

from gitsync.jobs_service.store import RescanAborted

log = logging.getLogger(__name__)

FileCallback = Callable[[str], None]


class _KitFileEvents(FileSystemEventHandler):
    """Farm's handler: created, modified and deleted ``*.kit`` files (any case); never moves, never folders."""

    def __init__(self, on_created: FileCallback, on_modified: FileCallback, on_deleted: FileCallback) -> None:
        self._callbacks = {"created": on_created, "modified": on_modified, "deleted": on_deleted}

    def on_any_event(self, event: FileSystemEvent) -> None:
        callback = self._callbacks.get(event.event_type)
        path = _as_str(event.src_path)
        if callback is None or event.is_directory or not fnmatch.fnmatch(path.lower(), "*.kit"):
            return
        try:
            callback(path)
        except RescanAborted as exc:
            # In Farm the exception ends an un-awaited future and is never reported; log it at least.
            log.warning("Reloading %s after a file event failed: %s", path, exc)
        except Exception:
            log.exception("Handling a file event for %s failed", path)


class DirectoryWatch:
    """Runs ``rescan`` on one worker thread every ``interval`` seconds; file events call the callbacks."""

    def __init__(self, rescan: Callable[[], None], interval: float, *, on_created: FileCallback,
                 on_modified: FileCallback, on_deleted: FileCallback, use_events: bool = True) -> None:
        self._rescan = rescan
        self._interval = interval
        self._use_events = use_events
        self._handler = _KitFileEvents(on_created, on_modified, on_deleted)
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
        # Farm's _fetch_from_local: sleep first, then rescan forever, logging a failure and going on.
        while not self._stopping.wait(self._interval):
            try:
                self._rescan()
            except RescanAborted as exc:
                log.error("Failed to load local job definitions: %s", exc)
            except Exception:
                log.exception("Rescan of the job directories failed")


def _as_str(path: str | bytes) -> str:
    return path.decode(errors="replace") if isinstance(path, bytes) else path
