"""Keep the directory store fresh: a watchdog observer and a periodic timer both only *request*
a rescan, and one worker thread does it.

Farm reloads single files on events and rescans everything every 10 s; rescanning everything on
either trigger gives the same visible result with one code path, and coalescing the requests in a
``threading.Event`` means a burst of events (Farm's own delete, create, write) costs one or two
rescans, never a queue of them.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterable

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver, ObservedWatch

from gitsync.jobs_service.store import RescanAborted

log = logging.getLogger(__name__)

#: Reads (opened, closed_no_write) must not count, or every rescan would trigger the next.
_CHANGE_EVENTS = frozenset({"created", "deleted", "modified", "moved", "closed"})


class _KitFileEvents(FileSystemEventHandler):
    def __init__(self, on_change: Callable[[], None]) -> None:
        self._on_change = on_change

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory or event.event_type not in _CHANGE_EVENTS:
            return
        # An editor's atomic save arrives only as a move whose destination is the .kit file.
        paths = [event.src_path, getattr(event, "dest_path", "")]
        if any(_as_str(path).endswith(".kit") for path in paths):
            self._on_change()


class DirectoryWatch:
    """Runs ``rescan`` on one worker thread every ``interval`` seconds and soon after a change."""

    def __init__(self, rescan: Callable[[], None], interval: float, *, use_events: bool = True) -> None:
        self._rescan = rescan
        self._interval = interval
        self._use_events = use_events
        self._wake = threading.Event()
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

    def request_rescan(self) -> None:
        self._wake.set()

    def watch(self, directories: Iterable[str]) -> None:
        """Watch exactly these directories (non-recursively), adding and dropping watches."""
        observer = self._observer  # stop() may clear the attribute meanwhile
        if observer is None:
            return
        wanted = set(directories)
        with self._watch_lock:
            for directory in set(self._watches) - wanted:
                watch = self._watches.pop(directory)
                with contextlib.suppress(KeyError, OSError):  # gone with its directory
                    observer.unschedule(watch)
            for directory in wanted - set(self._watches):
                try:
                    self._watches[directory] = observer.schedule(
                        _KitFileEvents(self.request_rescan), directory, recursive=False
                    )
                except OSError as exc:
                    # e.g. errno 28, inotify watch limit: the periodic rescan still works.
                    log.warning(
                        "Cannot watch %s (%s); relying on the %.0f s rescan",
                        directory,
                        exc,
                        self._interval,
                    )

    def stop(self) -> None:
        """Stop the worker and the observer and wait for both; safe to call twice."""
        self._stopping.set()
        self._wake.set()
        if self._worker is not None:
            self._worker.join(timeout=10)
            self._worker = None
        if self._observer is not None:
            observer, self._observer = self._observer, None
            observer.stop()
            observer.join(timeout=10)
            with self._watch_lock:
                self._watches.clear()

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self._interval)
            self._wake.clear()
            if self._stopping.is_set():
                return
            try:
                self._rescan()
            except RescanAborted as exc:
                log.error("Failed to load local job definitions: %s", exc)
            except Exception:
                log.exception("Rescan of the job directories failed")


def _as_str(path: str | bytes) -> str:
    return path.decode(errors="replace") if isinstance(path, bytes) else path
