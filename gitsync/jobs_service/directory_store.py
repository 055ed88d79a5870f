"""Farm's DirectoryJobStore: job definitions live in ``.kit`` files in a few flat directories.

What it reproduces, function by function, from Farm's ``nv/svc/farm/services/jobs/facilities/store/directory.py``
(see ../shared/farm-jobs.md):

* ``_load_jobs``: a full rescan **clears** the store, then loads each directory (``job_directories``
  with glob patterns expanded, then the save location) non-recursively, files whose extension is
  exactly ``.kit``, and publishes a directory only after all its files loaded. A file that breaks
  Farm's file-level code (``job`` not a table, a bad ``${job}`` folder entry) raises: that
  directory and the ones after it stay missing and ``/load`` answers 500.
* ``_fetch_from_local``: that rescan runs every ``rescan_interval`` seconds (10), the first one
  ``rescan_interval`` seconds after start, and on every ``load()``.
* ``JobFileChangedHandler``: created, modified and deleted events reload or drop one file; a move
  is ignored (see directory_watch).
* ``save_job``: rewrites the file a definition came from in place, or creates
  ``<save_location>/<name>.kit`` (deleting any old one first); then reloads that file only.
* ``delete_job``: works from the file map of the last loads, without rescanning: deletes a file
  that held only that definition, else rewrites it without the table; succeeds when the name is
  unknown.

Stricter than Farm, for safety: ``spec_path_problem`` refuses a ``job_spec_path`` outside the
scanned directories (Farm writes wherever it points).
"""

from __future__ import annotations

import copy
import glob
import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path

from gitsync import kitname
from gitsync.jobs_service import kit_file
from gitsync.jobs_service.directory_watch import DirectoryWatch
from gitsync.jobs_service.store import Definition, RescanAborted, StoreError

log = logging.getLogger(__name__)

_GLOB_CHARS = frozenset("*?[")


class DirectoryJobStore:
    """Thread-safe: one lock covers scanning, file events, saving and removing."""

    def __init__(
        self,
        save_location: Path | None,
        job_directories: Sequence[str] = (),
        *,
        rescan_interval: float = 10.0,
        watch_events: bool = True,
    ) -> None:
        #: None: Farm's ``""`` setting, no save location (``/save`` of a new definition then fails).
        self._save_location = save_location.absolute() if save_location is not None else None
        self._patterns = [*job_directories, *([str(self._save_location)] if self._save_location else [])]
        self._lock = threading.RLock()
        self._jobs: dict[str, Definition] = {}
        #: Farm's ``_job_defs_per_file``: updated per file loaded, never cleared by a rescan.
        self._names_by_file: dict[str, list[str]] = {}
        self._parsed: dict[str, tuple[tuple[int, int, int], dict[str, Definition]]] = {}
        self._watch = DirectoryWatch(self.rescan, rescan_interval, use_events=watch_events,
                                     on_created=self._on_created, on_modified=self._on_modified,
                                     on_deleted=self._on_deleted)
        # Farm creates every configured directory up front; a glob pattern is not a directory.
        for directory in self._patterns:
            if _GLOB_CHARS.isdisjoint(directory):
                try:
                    Path(directory).mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise StoreError(f"cannot create job directory {directory}: {exc.strerror}") from exc

    def start(self) -> None:
        """Start the periodic rescan; like Farm, nothing is loaded until it runs or ``load()`` is called."""
        self._watch.start()

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
        """Farm's ``_load_jobs``: clear, then publish directory by directory; RescanAborted stops it there."""
        with self._lock:
            self._jobs = {}
            present: set[str] = set()
            for directory in self.directories():
                loaded: dict[str, Definition] = {}
                for entry in sorted(os.listdir(directory)):
                    path = os.path.join(directory, entry)
                    if kitname.farm_loads(entry) and os.path.isfile(path):
                        present.add(path)
                        loaded.update(self._load_file(path))
                self._jobs.update(loaded)
                self._watch.watch([directory])
            # Every file was looked at: forget the parses of files that are gone, so the cache holds at most
            # one entry per file present (a service running for weeks sees many names come and go).
            self._parsed = {p: v for p, v in self._parsed.items() if p in present}

    def spec_path_problem(self, spec_path: str) -> str | None:
        """Why ``/save`` must not write to ``spec_path`` (gitsync's rule, stricter than Farm), or None."""
        name = os.path.basename(spec_path)
        if not os.path.isabs(spec_path) or not kitname.farm_loads(name) or kitname.name_problem(name):
            return "job_spec_path must be the absolute path of a .kit file with a plain name"
        if os.path.islink(spec_path):
            return "job_spec_path must not be a symbolic link"
        parent = os.path.realpath(os.path.dirname(spec_path))
        if parent not in {os.path.realpath(d) for d in self.directories()}:
            return "job_spec_path must be in one of the configured job directories"
        return None

    def _load_file(self, path: str) -> dict[str, Definition]:
        """Farm's ``_load_configuration`` for one file, recording which names it defines.

        Parsed again only when its size, mtime or inode changed: a rescan of thousands of files then
        costs a stat per file, not a parse (the result is the same)."""
        try:
            st = os.stat(path)
            key: tuple[int, int, int] | None = (st.st_size, st.st_mtime_ns, st.st_ino)
        except OSError:
            key = None
        cached = self._parsed.get(path)
        if key is not None and cached is not None and cached[0] == key:
            found = cached[1]  # never mutated: readers get deep copies from snapshot()
        else:
            found = kit_file.read_definitions(path)
            if key is not None:
                self._parsed[path] = (key, found)
        self._names_by_file[path] = list(found)
        return found

    def _forget_file(self, path: str) -> None:
        for name in self._names_by_file.pop(path, []):
            self._jobs.pop(name, None)

    def _on_created(self, path: str) -> None:
        with self._lock:
            self._jobs.update(self._load_file(path))

    def _on_modified(self, path: str) -> None:
        with self._lock:
            self._forget_file(path)
            self._jobs.update(self._load_file(path))

    def _on_deleted(self, path: str) -> None:
        with self._lock:
            self._forget_file(path)

    def snapshot(self) -> dict[str, Definition]:
        """The definitions as last loaded, without rescanning (what Farm's agents would fetch)."""
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
            self._reload_logging_abort(str(path))

    def remove(self, name: str) -> None:
        with self._lock:
            holders = [path for path, names in self._names_by_file.items() if name in names]
            for path in holders:
                self._remove_from(Path(path), name, only=len(self._names_by_file[path]) == 1)
            if holders:
                log.info("removed %d instance(s) of the job definition %r", len(holders), name)
            else:
                log.info("No instances of job definition %r found for removal", name)

    def _fresh_file(self, name: str) -> Path:
        """Farm's order of events for a new definition: delete, create empty, then write."""
        if self._save_location is None:
            raise StoreError("no new_job_definition_save_location is configured, so a new definition cannot be saved")
        path = self._save_location / f"{name}.kit"
        try:
            path.unlink(missing_ok=True)
            self._save_location.mkdir(parents=True, exist_ok=True)
            self._watch.watch([str(self._save_location)])
            path.touch()
        except OSError as exc:
            raise StoreError(f"cannot create {path}: {exc.strerror}") from exc
        return path

    def _remove_from(self, path: Path, name: str, *, only: bool) -> None:
        # Farm counts the definitions it loaded from the file: a file whose other tables are
        # invalid definitions (or [package] metadata) is deleted whole.
        try:
            if only:
                if path.is_file():
                    path.unlink()
                    log.info("Deleted %s, which held only job definition %r", path, name)
                self._forget_file(str(path))
            elif path.is_file():
                kit_file.remove_definition(path, name)
                log.info("Removed job definition %r from %s", name, path)
                self._reload_logging_abort(str(path))
        except (OSError, StoreError) as exc:
            log.warning("Unable to remove job definition %r from %s: %s", name, path, exc)

    def _reload_logging_abort(self, path: str) -> None:
        try:
            self._on_modified(path)
        except RescanAborted as exc:
            log.error("Failed to reload %s: %s", path, exc)
