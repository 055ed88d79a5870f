"""Everything gitsync remembers between runs, in one SQLite database in the state directory.

SQLite transactions give crash safety without hand-written journal files: the manifest, the
applied commit and the cached validation of that commit's files change together or not at all.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gitsync.errors import ConfigError
from gitsync.model import HistoryRow, JournalRow, Owned, TreeRecord
from gitsync.problems import Problem, from_dict

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
-- The definition files of the applied commit, with their cached validation (by blob id).
CREATE TABLE IF NOT EXISTS tree (
    repo_path TEXT PRIMARY KEY, blob TEXT NOT NULL, names TEXT NOT NULL, problems TEXT NOT NULL);
-- Files in the target that gitsync wrote or adopted, with the blob id of what it wrote.
CREATE TABLE IF NOT EXISTS manifest (
    target TEXT PRIMARY KEY, repo_path TEXT NOT NULL, blob TEXT NOT NULL, names TEXT NOT NULL,
    stat TEXT NOT NULL, git_blob TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY AUTOINCREMENT, started REAL NOT NULL, duration REAL NOT NULL,
    from_commit TEXT, to_commit TEXT, result TEXT NOT NULL, written INTEGER NOT NULL,
    removed INTEGER NOT NULL, message TEXT NOT NULL);
-- Push-back: local changes on their way to git (see outbox.py).
CREATE TABLE IF NOT EXISTS outbox (
    target TEXT PRIMARY KEY, seq INTEGER NOT NULL, created REAL NOT NULL, updated REAL NOT NULL,
    repo_path TEXT, base_blob TEXT, local_blob TEXT, content BLOB, origin TEXT NOT NULL,
    status TEXT NOT NULL, pr_number INTEGER, error TEXT NOT NULL DEFAULT '');
-- .kit files that were in the target before gitsync first looked: an operator's, never pushed.
CREATE TABLE IF NOT EXISTS foreign_baseline (target TEXT PRIMARY KEY, blob TEXT NOT NULL);
-- The apply in progress, one row per file it touches (see model.JournalRow); empty between applies.
-- Cleared in the transaction that records the apply, so a row left here means a crash interrupted it.
CREATE TABLE IF NOT EXISTS apply_journal (
    target TEXT PRIMARY KEY, repo_path TEXT NOT NULL, old_blob TEXT, new_blob TEXT, names TEXT NOT NULL);
"""


SCHEMA_VERSION = 1


class StateLock:
    """One gitsync per state directory: two would share a mirror and apply over each other."""

    def __init__(self, directory: Path) -> None:
        import fcntl

        directory.mkdir(parents=True, exist_ok=True)
        self._file = open(directory / "lock", "a+")  # noqa: SIM115 - held for the lock's lifetime
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.seek(0)
            holder = self._file.read().strip() or "another process"
            self._file.close()
            raise ConfigError(f"state directory {directory} is in use by {holder}; wait for it to finish or "
                              "give this run its own --state-dir") from None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(f"gitsync pid {os.getpid()}")
        self._file.flush()

    def release(self) -> None:
        if not self._file.closed:
            self._file.close()


class State:
    """The state database; safe to share between the worker and status readers."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "state.sqlite3"
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        has_tables = self._db.execute("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0]
        if has_tables and version != SCHEMA_VERSION:
            self._db.close()
            raise ConfigError(f"{self.path} was written by another version of gitsync (schema {version}, this one "
                              f"reads {SCHEMA_VERSION}); move it away: the next sync rebuilds it and adopts the "
                              "files that already match git")
        self._db.executescript(_SCHEMA)
        self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # -- meta -------------------------------------------------------------------------------------
    def get(self, key: str, default: Any = None) -> Any:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def set(self, **values: Any) -> None:
        with self.transaction() as db:
            _set_meta(db, values)

    # -- tree and manifest --------------------------------------------------------------------------
    def tree(self) -> dict[str, TreeRecord]:
        with self._lock:
            rows = self._db.execute("SELECT repo_path, blob, names, problems FROM tree").fetchall()
        return {path: TreeRecord(blob, tuple(json.loads(names)),
                                 tuple(from_dict(p) for p in json.loads(probs)) if probs != "[]" else ())
                for path, blob, names, probs in rows}

    def manifest(self) -> dict[str, Owned]:
        with self._lock:
            rows = self._db.execute("SELECT target, repo_path, blob, names, stat, git_blob FROM manifest").fetchall()
        return {target: Owned(path, blob, tuple(json.loads(names)), stat, git_blob)
                for target, path, blob, names, stat, git_blob in rows}

    def owned_count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM manifest").fetchone()[0])

    # -- the apply journal ---------------------------------------------------------------------------
    def begin_apply(self, commit: str, rows: Iterable[JournalRow]) -> None:
        """Note what an apply is about to write or delete, before the target is touched."""
        with self.transaction() as db:
            db.execute("DELETE FROM apply_journal")
            db.executemany("INSERT INTO apply_journal VALUES (?, ?, ?, ?, ?)", (
                (r.target, r.repo_path, r.old_blob, r.new_blob, json.dumps(r.names)) for r in rows))
            _set_meta(db, {"apply_in_progress": commit})

    def journal(self) -> dict[str, JournalRow]:
        with self._lock:
            rows = self._db.execute("SELECT target, repo_path, old_blob, new_blob, names FROM apply_journal"
                                    ).fetchall()
        return {t: JournalRow(t, path, old, new, tuple(json.loads(names))) for t, path, old, new, names in rows}

    def record_apply(self, *, tree: Mapping[str, TreeRecord | None] | None, owned: Mapping[str, Owned | None],
                     meta: Mapping[str, Any], end_apply: bool = False) -> None:
        """Commit one apply: change the tree rows given (None removes one), the manifest rows, and meta keys;
        `end_apply` also clears the journal in the same transaction."""
        with self.transaction() as db:
            if end_apply:
                db.execute("DELETE FROM apply_journal")
                _set_meta(db, {"apply_in_progress": None})
            if tree:
                db.executemany("DELETE FROM tree WHERE repo_path = ?", ((p,) for p, r in tree.items() if r is None))
                db.executemany("INSERT OR REPLACE INTO tree VALUES (?, ?, ?, ?)", (
                    (path, rec.blob, json.dumps(rec.names), json.dumps([p.__dict__ for p in rec.problems]))
                    for path, rec in tree.items() if rec is not None))
            db.executemany("DELETE FROM manifest WHERE target = ?", ((t,) for t, o in owned.items() if o is None))
            db.executemany("INSERT OR REPLACE INTO manifest VALUES (?, ?, ?, ?, ?, ?)", (
                (t, o.repo_path, o.blob, json.dumps(o.names), o.stat, o.base)
                for t, o in owned.items() if o is not None))
            _set_meta(db, meta)

    # -- history ------------------------------------------------------------------------------------
    def add_history(self, row: HistoryRow, keep: int = 1000) -> None:
        with self.transaction() as db:
            db.execute("INSERT INTO history (started, duration, from_commit, to_commit, result, written, removed,"
                       " message) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (row.started, row.duration, row.from_commit, row.to_commit, row.result, row.written,
                        row.removed, row.message))
            db.execute("DELETE FROM history WHERE id <= (SELECT MAX(id) FROM history) - ?", (keep,))

    def history(self, limit: int = 20) -> list[HistoryRow]:
        with self._lock:
            rows = self._db.execute("SELECT started, duration, from_commit, to_commit, result, written, removed,"
                                    " message FROM history ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        return [HistoryRow(*row) for row in rows]


def _set_meta(db: sqlite3.Connection, values: Mapping[str, Any]) -> None:
    db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", ((k, json.dumps(v)) for k, v in values.items()))


def problems_json(problems: Iterable[Problem]) -> list[dict[str, Any]]:
    return [dict(p.__dict__) for p in problems]


def now() -> float:
    return time.time()
