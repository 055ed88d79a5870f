"""Every target of one gitsync, opened together: one lock, one mirror, one state database per target.

The repository is fetched once per cycle into one mirror (`state.dir/mirror.git`) and every target plans
from that commit; what is per target is what it applied and what it owns:

- its state database: `state.dir/state.sqlite3` for the target named "default" (the single `[target]`
  table, as before several targets existed), `state.dir/targets/<name>/state.sqlite3` for a named one.
  Each holds that target's applied commit, manifest or record, outbox, problems and history, with the
  same schema as ever, so nothing another module reads or writes had to learn about targets;
- its applied ref in the mirror (`refs/gitsync/applied` for "default", else
  `refs/gitsync/targets/<name>/applied`), which rebuilds its state if its database is lost;
- its syncer, and the push-back that serves it, if any (`Unit.pushback`).

Migration: when a named target has no database yet and `state.dir/state.sqlite3` was written for the same
job directory or jobs service (a single-target setup turned into `[[target]]` tables), that database
becomes the target's, so it carries on from its applied commit and outbox without a resync.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gitsync.config import DEFAULT_TARGET, Settings
from gitsync.gitrepo import APPLIED_REF

if TYPE_CHECKING:
    from gitsync.api_sync import ApiSyncer
    from gitsync.commit_status import StatusPoster
    from gitsync.dirty import DirtySet
    from gitsync.gitrepo import GitMirror
    from gitsync.sync import Syncer, SyncResult
    from gitsync.watch import Debouncer, DirectoryWatcher

log = logging.getLogger("gitsync.targets")
_DB = "state.sqlite3"


def target_state_dir(settings: Settings) -> Path:
    """The directory of a target's state database."""
    if settings.target_name == DEFAULT_TARGET:
        return settings.state_path
    return settings.state_path / "targets" / settings.target_name


def reading_state_dir(settings: Settings) -> Path | None:
    """Where `gitsync status` reads a target's state: its own database, or the single-target one that will
    become its own at the next sync; None when it has none yet. Never moves anything (no lock is held)."""
    own = target_state_dir(settings)
    if (own / _DB).is_file():
        return own
    root = settings.state_path
    if settings.target_name != DEFAULT_TARGET and (root / _DB).is_file():
        from gitsync.state import State

        state = State(root)
        try:
            key, mine = _claim_of(settings)
            return root if state.get(key) == mine else None
        finally:
            state.close()
    return None


def applied_ref(settings: Settings) -> str:
    if settings.target_name == DEFAULT_TARGET:
        return APPLIED_REF
    return f"refs/gitsync/targets/{settings.target_name}/applied"


def _claim_of(settings: Settings) -> tuple[str, str]:
    """The state key a target's database records its place under, and this target's value of it."""
    if settings.target_kind == "jobs-api":
        from gitsync.secrets import redact_url

        return "target_url", redact_url(settings.target_url.rstrip("/"))
    return "target_directory", str(Path(settings.target_directory).resolve())


def migrate(settings: Settings) -> bool:
    """Move `state.dir/state.sqlite3` to this named target's directory if it has none and the database records
    this target's place; True if it moved. Only with the state directory's lock held."""
    from gitsync.state import State, ensure_state_dir

    root, own = settings.state_path, target_state_dir(settings)
    if settings.target_name == DEFAULT_TARGET or (own / _DB).exists() or not (root / _DB).is_file():
        return False
    state = State(root)
    try:
        key, mine = _claim_of(settings)
        if state.get(key) != mine:
            return False
        if settings.target_kind == "jobs-api":  # its record's rows were the single target's, "default"
            with state.transaction() as db:
                for table in ("api_applied", "api_baseline"):  # what it saved, and what push-back found there
                    if db.execute("SELECT 1 FROM sqlite_master WHERE name = ?", (table,)).fetchone():
                        db.execute(f"UPDATE {table} SET target = ? WHERE target = ?",  # noqa: S608 - fixed names
                                   (settings.target_name, DEFAULT_TARGET))
        state.checkpoint()
    finally:
        state.close()
    ensure_state_dir(own)
    for suffix in ("-wal", "-shm", "-checked", ""):  # the database itself last: until it moves, nothing has
        source = root / (_DB + suffix)
        if source.exists():
            os.replace(source, own / (_DB + suffix))
    log.warning("target %r: took over the single-target state of %s %s from %s; it carries on from its "
                "applied commit without a resync", settings.target_name, key.removeprefix("target_"), mine, root)
    return True


@dataclass(eq=False)
class Unit:
    """One target at runtime: its settings, its syncer, and what serves it in the agent.

    `pushback` is the target's push-back, if any: an object with `flush()`, `retry_due()`, `clock()` and
    `outbox`. For a directory target the agent captures local changes into its outbox (capture.py); any
    other kind's push-back may bring its own `capture()`, which the agent calls in the capture step."""

    settings: Settings
    syncer: Syncer | ApiSyncer
    pushback: Any = None
    status_poster: StatusPoster | None = None
    watcher: DirectoryWatcher | None = None
    dirty: DirtySet | None = None  # what the watcher saw change; None: no watcher, scan everything
    debouncer: Debouncer | None = None
    last_result: SyncResult | None = None
    conflicts_seen: float = 0.0
    problem_counts: Counter[str] | None = None  # by severity, kept while a pull judges nothing new
    tracebacks: set[str] = field(default_factory=set)

    @property
    def name(self) -> str:
        return self.settings.target_name


def open_syncers(settings: Settings, *, lock: bool = True) -> list[Syncer | ApiSyncer]:
    """A syncer per target, sharing one mirror (the first one's) and one state-directory lock. With the lock,
    a single-target state is first migrated to the named target it belongs to. Closing them in reverse
    order (close_all) closes the mirror and releases the lock last."""
    from gitsync.state import StateLock

    held = StateLock(settings.state_path) if lock else None
    opened: list[Syncer | ApiSyncer] = []
    try:
        moved = [t for t in settings.targets() if held is not None and migrate(t)]
        for target in settings.targets():
            mirror = opened[0].mirror if opened else None
            opened.append(open_syncer(target, lock=False, mirror=mirror))
        opened[0]._lock = held
        for target in moved:  # the applied ref that rebuilds its state if the database is ever lost
            from gitsync.errors import GitError

            with contextlib.suppress(GitError):  # nothing applied yet, or no mirror yet: nothing to carry over
                opened[0].mirror.update_ref(applied_ref(target), opened[0].mirror.resolve(APPLIED_REF))
    except BaseException:
        close_all(opened)
        if held is not None:
            held.release()
        raise
    return opened


def open_syncer(settings: Settings, *, lock: bool = True, mirror: GitMirror | None = None) -> Syncer | ApiSyncer:
    if settings.target_kind == "jobs-api":
        from gitsync.api_sync import ApiSyncer

        return ApiSyncer.from_settings(settings, lock=lock, mirror=mirror)
    from gitsync.sync import Syncer

    return Syncer.from_settings(settings, lock=lock, mirror=mirror)


def close_all(syncers: list[Syncer | ApiSyncer]) -> None:
    for syncer in reversed(syncers):
        syncer.close()


class SharedFetch:
    """The cycle's one fetch for every target: the first pull fetches, the others reuse its commit, or its
    error (so a remote that is down is one failed fetch, reported by every target)."""

    def __init__(self, mirror: GitMirror, ref: str) -> None:
        self.mirror = mirror
        self.ref = ref
        self.fetches = 0
        self._head: str | None = None
        self._error: Exception | None = None

    def __call__(self) -> str:
        if self._head is None and self._error is None:
            from gitsync.pinning import fetch_target

            self.fetches += 1
            try:
                self._head = fetch_target(self.mirror, self.ref)
            except Exception as exc:
                self._error = exc
        if self._error is not None:
            raise self._error
        assert self._head is not None
        return self._head
