"""Farm's DirectoryJobStore: job definitions live in ``.kit`` files in a few flat directories.

What it reproduces (see ../shared/farm-jobs.md and Farm's ``store/directory.py``):

* scans ``job_directories`` (glob patterns expanded) and the save location, non-recursively,
  for files whose extension is exactly ``.kit``; subdirectories are never loaded;
* identity is the ``[job.<key>]`` table key; the last file loaded wins a duplicate name
  (directories in configured order, the save location last, files sorted by name);
* rescans on watchdog events, every ``rescan_interval`` seconds and on every ``load()``;
* ``save`` rewrites the file a definition came from in place, or creates
  ``<save_location>/<name>.kit`` (deleting any old one first);
* ``remove`` deletes a file that held only that definition, else rewrites it without the table,
  and succeeds when the name is unknown.

Unlike Farm, a rescan builds the new view aside and publishes it under the lock, so a reader
never sees a half-filled store.
"""

from __future__ import annotations

import copy
import glob
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path

from gitsync.jobs_service import kit_file
from gitsync.jobs_service.directory_watch import DirectoryWatch
from gitsync.jobs_service.store import Definition, RescanAborted, StoreError

log = logging.getLogger(__name__)

_GLOB_CHARS = frozenset("*?[")


class DirectoryJobStore:
    """Thread-safe: one lock covers scanning, saving and removing."""

    def __init__(
        self,
        save_location: Path,
        job_directories: Sequence[str] = (),
        *,
        rescan_interval: float = 10.0,
        watch_events: bool = True,
    ) -> None:
        self._save_location = save_location.absolute()
        self._patterns = [*job_directories, str(self._save_location)]
        self._lock = threading.RLock()
        self._jobs: dict[str, Definition] = {}
        self._names_by_file: dict[str, list[str]] = {}
        self._parsed: dict[str, tuple[tuple[int, int, int], dict[str, Definition]]] = {}
        self._watch = DirectoryWatch(self.rescan, rescan_interval, use_events=watch_events)
        # Farm creates every configured directory up front; a glob pattern is not a directory.
        for directory in self._patterns:
            if _GLOB_CHARS.isdisjoint(directory):
                try:
                    Path(directory).mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise StoreError(f"cannot create job directory {directory}: {exc.strerror}") from exc

    def start(self) -> None:
        self._watch.start()
        self._rescan_logging_abort()  # the first load; it also schedules the watches

    def stop(self) -> None:
        self._watch.stop()

    def directories(self) -> list[str]:
        """The existing directories scanned, in load order (so the last one wins duplicates)."""
        found: list[str] = []
        for pattern in self._patterns:
            for match in sorted(glob.glob(pattern)):
                path = os.path.abspath(match)
                if os.path.isdir(path) and path not in found:
                    found.append(path)
        return found

    def rescan(self) -> None:
        """Reload every file; raises RescanAborted (after publishing what loaded) like Farm."""
        with self._lock:
            directories = self.directories()
            self._watch.watch(directories)
            jobs: dict[str, Definition] = {}
            names_by_file: dict[str, list[str]] = {}
            try:
                for directory in directories:
                    for entry in sorted(os.listdir(directory)):
                        path = os.path.join(directory, entry)
                        if kit_file.is_kit_file(path):
                            found = self._read(path)
                            names_by_file[path] = list(found)
                            jobs.update(found)
            finally:
                self._jobs, self._names_by_file = jobs, names_by_file

    def _read(self, path: str) -> dict[str, Definition]:
        """A file's definitions, parsed again only when its size, mtime or inode changed: a rescan of a
        directory of thousands of files then costs a stat per file, not a parse (the result is the same)."""
        st = os.stat(path)
        key = (st.st_size, st.st_mtime_ns, st.st_ino)
        cached = self._parsed.get(path)
        if cached is not None and cached[0] == key:
            return cached[1]  # never mutated: readers get deep copies from snapshot()
        found = kit_file.read_definitions(path)
        self._parsed[path] = (key, found)
        return found

    def snapshot(self) -> dict[str, Definition]:
        """The definitions as last scanned, without rescanning (what Farm's agents would fetch)."""
        with self._lock:
            return copy.deepcopy(self._jobs)

    def load(self) -> dict[str, Definition]:
        with self._lock:
            self.rescan()
            return self.snapshot()

    def save(self, definition: Definition) -> None:
        name = definition["name"]
        with self._lock:
            spec_path = definition.get("job_spec_path")
            path = Path(spec_path) if spec_path else self._fresh_file(name)
            kit_file.save_definition(path, definition)
            log.info("Saved job definition %r to %s", name, path)
            self._rescan_logging_abort()

    def remove(self, name: str) -> None:
        with self._lock:
            self._rescan_logging_abort()
            holders = [path for path, names in self._names_by_file.items() if name in names]
            for path in holders:
                self._remove_from(Path(path), name, only=len(self._names_by_file[path]) == 1)
            if not holders:
                log.info("No instances of job definition %r found for removal", name)
            self._rescan_logging_abort()

    def _fresh_file(self, name: str) -> Path:
        """Farm's order of events for a new definition: delete, create empty, then write."""
        path = self._save_location / f"{name}.kit"
        try:
            path.unlink(missing_ok=True)
            self._save_location.mkdir(parents=True, exist_ok=True)
            path.touch()
        except OSError as exc:
            raise StoreError(f"cannot create {path}: {exc.strerror}") from exc
        return path

    def _remove_from(self, path: Path, name: str, *, only: bool) -> None:
        # Farm counts the definitions it loaded from the file: a file whose other tables are
        # invalid definitions (or [package] metadata) is deleted whole.
        try:
            if only:
                path.unlink(missing_ok=True)
                log.info("Deleted %s, which held only job definition %r", path, name)
            else:
                kit_file.remove_definition(path, name)
                log.info("Removed job definition %r from %s", name, path)
        except (OSError, StoreError) as exc:
            log.warning("Unable to remove job definition %r from %s: %s", name, path, exc)

    def _rescan_logging_abort(self) -> None:
        try:
            self.rescan()
        except RescanAborted as exc:
            log.error("Failed to load local job definitions: %s", exc)
