"""Turn filesystem events in the target into one debounced "look at the target" request.

Events are hints only (capture.py works out what really changed), so the filter here is loose:
anything that may touch a `.kit` file counts, including an editor's atomic save, which arrives
as a move whose destination is the `.kit` file. If inotify cannot be used (no support, or the
watch limit is reached) it falls back to polling and says so.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gitsync.companion import is_safe_target
from gitsync.dirty import DirtySet
from gitsync.kitname import TEMP_PREFIX, TEMP_SUFFIX, is_definition_file

log = logging.getLogger("gitsync.watch")

# The watch is recursive (files inside ${job} companion folders are pushed back): when gitsync creates a folder
# tree, watchdog's inotify observer registers some new subfolders twice and warns that it replaced its own
# callback. Harmless (the same callback), but it would print a RuntimeWarning per folder into the agent's log.
warnings.filterwarnings("ignore", message="Callback with id .* already exists for watch", category=RuntimeWarning)


def relevant(path: str, directory: str | None = None) -> bool:
    """A `.kit` file Farm would load, or (with `directory`) a plain file below a folder of the job directory, which
    may be a companion file (capture looks only at those gitsync wrote); editor swap files, backups and gitsync's
    temp files are not."""
    if directory is not None and os.path.isabs(path):
        relative = os.path.relpath(path, directory)
        if "/" in relative and not relative.startswith(".."):
            return is_safe_target(relative)
    return is_definition_file(path)


class Debouncer:
    """Calls `fire` once things have been quiet for `delay` seconds, or at most `max_delay` after the first poke,
    so a steady stream of saves still gets committed in batches."""

    def __init__(self, delay: float, fire: Callable[[], None], max_delay: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.delay = delay
        self.max_delay = max_delay if max_delay is not None else max(delay * 10, delay)
        self.fire = fire
        self.clock = clock
        self._cond = threading.Condition()
        self._first: float | None = None
        self._last = 0.0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="gitsync-debounce", daemon=True)
        self._thread.start()

    def poke(self) -> None:
        with self._cond:
            now = self.clock()
            if self._first is None:
                self._first = now
            self._last = now
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(5)

    def _due(self) -> float | None:
        if self._first is None:
            return None
        return min(self._last + self.delay, self._first + self.max_delay)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._closed:
                    due = self._due()
                    if due is not None and self.clock() >= due:
                        break
                    self._cond.wait(None if due is None else max(0.0, due - self.clock()))
                if self._closed:
                    return
                self._first = None
            try:
                self.fire()
            except Exception:  # never let a bad callback stop the watcher
                log.exception("change handler failed")


class DirectoryWatcher:
    """`on_change` is poked for every relevant event; `dirty`, when given, collects the file names the events
    name and is told when events were lost (inotify queue overflow, fall-back to polling)."""

    def __init__(self, directory: Path, on_change: Callable[[], None], *, polling: bool = False,
                 dirty: DirtySet | None = None) -> None:
        self.directory = directory
        self.on_change = on_change
        self.polling = polling
        self.dirty = dirty
        self._observer: Any = None
        self._overflow: logging.Filter | None = None
        self._barriers: dict[str, threading.Event] = {}

    def start(self) -> None:
        from watchdog.events import (
            FileClosedEvent,
            FileCreatedEvent,
            FileDeletedEvent,
            FileModifiedEvent,
            FileMovedEvent,
            FileSystemEvent,
            FileSystemEventHandler,
        )
        from watchdog.observers import Observer
        from watchdog.observers.polling import PollingObserver

        watcher = self
        root = str(self.directory)

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                barrier = watcher._barriers.get(os.path.basename(os.fsdecode(event.src_path)))
                if barrier is not None:
                    barrier.set()
                    return
                if event.event_type in ("opened", "closed_no_write"):
                    return
                paths = [os.fsdecode(event.src_path), os.fsdecode(getattr(event, "dest_path", "") or "")]
                if event.is_directory:
                    return
                if any(relevant(p, root) for p in paths if p):
                    if watcher.dirty is not None:
                        watcher.dirty.add(p for p in paths if p and relevant(p, root))
                    watcher.on_change()

        # Only writes matter. Without a filter every read of the directory (a Farm rescan reads every file
        # every 10 s) is two inotify events, enough to overflow the kernel's queue and lose real ones.
        wanted = [FileCreatedEvent, FileModifiedEvent, FileDeletedEvent, FileMovedEvent, FileClosedEvent]
        self.directory.mkdir(parents=True, exist_ok=True)
        self._watch_overflow()
        if not self.polling:
            try:
                self._observer = Observer()
                self._observer.schedule(Handler(), str(self.directory), recursive=True, event_filter=wanted)
                self._observer.start()
                return
            except OSError as exc:
                log.warning("cannot watch %s with inotify (%s); polling every 2 s instead. Raise "
                            "fs.inotify.max_user_watches / max_user_instances to get events back",
                            self.directory, exc.strerror or exc)
                self.polling = True
                if self.dirty is not None:
                    self.dirty.everything()
        self._observer = PollingObserver(timeout=2)
        self._observer.schedule(Handler(), str(self.directory), recursive=True, event_filter=wanted)
        self._observer.start()

    def settle(self, timeout: float = 5.0) -> bool:
        """Wait until every event for a change made before this call has reached `dirty`: inotify delivers
        events in order, so once the event of a marker file created now arrives, all earlier ones have.
        False when that cannot be known (polling, or the watcher is stuck): then look at everything."""
        if self.polling or self._observer is None:
            return False
        name = f"{TEMP_PREFIX}barrier-{uuid.uuid4().hex}{TEMP_SUFFIX}"  # never a .kit; crash leftovers are swept
        arrived = self._barriers[name] = threading.Event()
        try:
            marker = self.directory / name
            marker.touch()
            marker.unlink()
            return arrived.wait(timeout)
        except OSError:
            return False
        finally:
            self._barriers.pop(name, None)

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(5)
        if self._overflow is not None:
            logging.getLogger("watchdog.observers.inotify_c").removeFilter(self._overflow)

    def _watch_overflow(self) -> None:
        """watchdog reports a kernel queue overflow (events lost) only as a log record; that record means
        the next cycle must look at every file."""
        dirty = self.dirty
        if dirty is None:
            return

        def lost(record: logging.LogRecord) -> bool:
            if "overflow" in record.getMessage():
                dirty.everything()
                self.on_change()
            return True

        self._overflow = _CallFilter(lost)
        logging.getLogger("watchdog.observers.inotify_c").addFilter(self._overflow)


class _CallFilter(logging.Filter):
    def __init__(self, call: Callable[[logging.LogRecord], bool]) -> None:
        super().__init__()
        self.call = call

    def filter(self, record: logging.LogRecord) -> bool:
        return self.call(record)
