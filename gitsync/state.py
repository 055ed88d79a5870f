"""Everything gitsync remembers between runs, in one SQLite database in the state directory.

SQLite transactions give crash safety without hand-written journal files: the manifest, the
applied commit and the cached validation of that commit's files change together or not at all.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gitsync.companion import root as companion_root
from gitsync.errors import ConfigError, StateError
from gitsync.model import HistoryRow, JournalRow, Owned, TreeRecord
from gitsync.problems import Problem, from_dict

if TYPE_CHECKING:
    from gitsync.target_dir import Seen

#: A cached check_kit result: job names, problems (without a path), companion folders with their line.
Validation = tuple[tuple[str, ...], tuple[Problem, ...], tuple[tuple[str, int], ...]]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
-- The definition files of the applied commit, with their cached validation (by blob id).
CREATE TABLE IF NOT EXISTS tree (
    repo_path TEXT PRIMARY KEY, blob TEXT NOT NULL, names TEXT NOT NULL, problems TEXT NOT NULL,
    folders TEXT NOT NULL DEFAULT '[]');
-- Files in the target that gitsync wrote or adopted, with the blob id of what it wrote.
CREATE TABLE IF NOT EXISTS manifest (
    target TEXT PRIMARY KEY, repo_path TEXT NOT NULL, blob TEXT NOT NULL, names TEXT NOT NULL,
    stat TEXT NOT NULL, git_blob TEXT NOT NULL);
-- One row per sync that changed something or failed; a verdict seen again (the same commit refused every
-- cycle) counts up `repeats` and moves `last_seen` instead of adding a row (see State.add_history).
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY AUTOINCREMENT, started REAL NOT NULL, duration REAL NOT NULL,
    from_commit TEXT, to_commit TEXT, result TEXT NOT NULL, written INTEGER NOT NULL,
    removed INTEGER NOT NULL, message TEXT NOT NULL, repeats INTEGER NOT NULL DEFAULT 1, last_seen REAL);
CREATE INDEX IF NOT EXISTS history_by_commit ON history (to_commit);
-- Push-back: local changes on their way to git (see outbox.py).
CREATE TABLE IF NOT EXISTS outbox (
    target TEXT PRIMARY KEY, seq INTEGER NOT NULL, created REAL NOT NULL, updated REAL NOT NULL,
    repo_path TEXT, base_blob TEXT, local_blob TEXT, content BLOB, origin TEXT NOT NULL,
    status TEXT NOT NULL, pr_number INTEGER, error TEXT NOT NULL DEFAULT '');
-- .kit files that were in the target before gitsync first looked: an operator's, never pushed.
CREATE TABLE IF NOT EXISTS foreign_baseline (target TEXT PRIMARY KEY, blob TEXT NOT NULL);
-- Pull-request mode: the pull request gitsync keeps open (at most one row). The branch is written before
-- the first push to it and the number once the forge answers, each in its own transaction.
CREATE TABLE IF NOT EXISTS pull_request (
    id INTEGER PRIMARY KEY CHECK (id = 1), branch TEXT NOT NULL, number INTEGER, url TEXT NOT NULL DEFAULT '');
-- The apply in progress, one row per file it touches (see model.JournalRow); empty between applies.
-- Cleared in the transaction that records the apply, so a row left here means a crash interrupted it.
CREATE TABLE IF NOT EXISTS apply_journal (
    target TEXT PRIMARY KEY, repo_path TEXT NOT NULL, old_blob TEXT, new_blob TEXT, names TEXT NOT NULL);
-- Indexes over `tree`, kept by record_apply, so a cross-file check reads only the rows that share a job
-- name or a target file name with what changed instead of the whole tree.
CREATE TABLE IF NOT EXISTS tree_names (
    name TEXT NOT NULL, repo_path TEXT NOT NULL, PRIMARY KEY (name, repo_path)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tree_names_by_path ON tree_names (repo_path);
CREATE TABLE IF NOT EXISTS tree_targets (
    target TEXT NOT NULL, repo_path TEXT NOT NULL, PRIMARY KEY (target, repo_path)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tree_targets_by_path ON tree_targets (repo_path);
-- Every problem of the applied tree (a file's own and the cross-file ones) for the few files that have any.
CREATE TABLE IF NOT EXISTS tree_problems (repo_path TEXT PRIMARY KEY, problems TEXT NOT NULL);
-- The rows holding an error (json.dumps writes "severity": "error" exactly so; a message cannot, being escaped):
-- a one-file change reads the few files that stop a commit, not the thousands with a warning.
CREATE INDEX IF NOT EXISTS tree_problems_errors ON tree_problems (repo_path)
    WHERE instr(problems, '"severity": "error"') > 0;
-- What check_kit said about a blob under one set of rules; problems carry no path (added on use). Survives
-- refused commits, renames and switching rules back and forth.
CREATE TABLE IF NOT EXISTS validation (
    blob TEXT NOT NULL, rules TEXT NOT NULL, names TEXT NOT NULL, problems TEXT NOT NULL,
    folders TEXT NOT NULL DEFAULT '[]', PRIMARY KEY (blob, rules)) WITHOUT ROWID;
-- ${job} companion folders (companion.py): folder = the target folder name, root = the folder's path in git,
-- repo_path = the definition naming it. Kept by record_apply with `tree`.
-- Only the manifest rows of companion files (targets holding a '/'), so counting definitions reads none of theirs.
CREATE INDEX IF NOT EXISTS manifest_companions ON manifest (target) WHERE instr(target, '/') > 0;
CREATE TABLE IF NOT EXISTS tree_folders (
    folder TEXT NOT NULL, root TEXT NOT NULL, repo_path TEXT NOT NULL, line INTEGER NOT NULL,
    PRIMARY KEY (folder, repo_path)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tree_folders_by_root ON tree_folders (root);
CREATE INDEX IF NOT EXISTS tree_folders_by_folder_root ON tree_folders (folder, root);
CREATE INDEX IF NOT EXISTS tree_folders_by_path ON tree_folders (repo_path);
-- .kit files in the target gitsync does not own, remembered by stat so they are parsed again only on change.
CREATE TABLE IF NOT EXISTS foreign_files (
    target TEXT PRIMARY KEY, stat TEXT NOT NULL, blob TEXT NOT NULL, names TEXT NOT NULL);
"""
# `sync --once` trusts its last look at the target (meta 'target_look', see Syncer._remember_look) only while
# the stat keys it was judged against are unchanged: any write to them, by any code path, drops it.
_SCHEMA += "".join(
    f"CREATE TRIGGER IF NOT EXISTS {table}_{event.lower()}_drops_look AFTER {event} ON {table} "
    "BEGIN DELETE FROM meta WHERE key = 'target_look'; END;\n"
    for table in ("manifest", "foreign_files") for event in ("INSERT", "UPDATE", "DELETE"))


SCHEMA_VERSION = 1
#: The write-ahead log is checkpointed once it holds this many pages, and truncated to WAL_SIZE_LIMIT bytes
#: after each checkpoint (maintenance truncates it to 0).
WAL_PAGES = 32
WAL_SIZE_LIMIT = 128 * 1024


class StateBusy(ConfigError):
    """Another gitsync process (an agent, a `sync --once`) works on this state directory."""


class StateLock:
    """One gitsync per state directory: two would share a mirror and apply over each other."""

    def __init__(self, directory: Path) -> None:
        import fcntl

        ensure_state_dir(directory)
        try:
            self._file = open(directory / "lock", "a+")  # noqa: SIM115 - held for the lock's lifetime
        except OSError as exc:
            raise StateError(f"cannot use state directory {directory}: {exc.strerror}") from None
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.seek(0)
            holder = self._file.read().strip() or "another process"
            self._file.close()
            raise StateBusy(f"state directory {directory} is in use by {holder}; wait for it to finish or "
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
        ensure_state_dir(directory)
        self.path = directory / "state.sqlite3"
        self._lock = threading.RLock()
        if self.path.is_dir():
            raise StateError(f"state database {self.path} is a directory; move it away")
        self._checked = self.path.with_name(self.path.name + "-checked")
        self._trusted = self._closed_cleanly()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        except sqlite3.Error as exc:
            raise StateError(f"cannot open state database {self.path}: {exc}") from None
        try:
            self._open()
        except sqlite3.Error as exc:
            self._db.close()
            raise StateError(explain(self.path, exc)) from None

    def _open(self) -> None:
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        # A garbage or truncated file fails here, at start-up, rather than half way through an apply. It reads the
        # whole file (40 ms for 10,000 definitions), so not when the file is exactly as gitsync closed it.
        if not self._trusted:
            check = self._db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise sqlite3.DatabaseError(check)
        # SQLite checkpoints every 1,000 pages (4 MB) and never shrinks its log: an agent that writes a little every
        # cycle would keep megabytes of it. Checkpoint at WAL_PAGES instead, and truncate the log to its limit.
        self._db.execute(f"PRAGMA wal_autocheckpoint={WAL_PAGES}")
        self._db.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        has_tables = self._db.execute("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0]
        if has_tables and version != SCHEMA_VERSION:
            self._db.close()
            raise ConfigError(f"{self.path} was written by another version of gitsync (schema {version}, this one "
                              f"reads {SCHEMA_VERSION}); move it away: the next sync rebuilds it and adopts the "
                              "files that already match git")
        # Columns a database written by an older gitsync lacks (older versions name the columns they write, so
        # they still work on it). `folders`: the rules key changed with it, so every file is checked again at the
        # next sync and the column filled.
        _add_missing_columns(self._db, "history", {"repeats": "INTEGER NOT NULL DEFAULT 1", "last_seen": "REAL"})
        for table in ("tree", "validation"):
            _add_missing_columns(self._db, table, {"folders": "TEXT NOT NULL DEFAULT '[]'"})
        self._db.executescript(_SCHEMA)
        self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            self._db.close()
            self._mark_closed_cleanly()

    def _closed_cleanly(self) -> bool:
        """The file is exactly as a clean close left it (the write-ahead log folded in and gone; size, mtime and
        inode as noted then): nothing has written to it since, so it needs no integrity check."""
        try:
            noted = self._checked.read_text(encoding="ascii")
            st = os.stat(self.path)
        except OSError:
            return False
        return not self.path.with_name(self.path.name + "-wal").exists() and noted == _file_key(st)

    def _mark_closed_cleanly(self) -> None:
        """After the last connection closed: SQLite folded the log into the file and removed it (another process
        still holding the database keeps it; then nothing is noted and the next start checks)."""
        with contextlib.suppress(OSError):
            self._checked.unlink(missing_ok=True)
            if not self.path.with_name(self.path.name + "-wal").exists():
                self._checked.write_text(_file_key(os.stat(self.path)), encoding="ascii")

    def prune_validation(self, keep_extra: int) -> int:
        """Bound the validation cache: when it holds more than `keep_extra` results for blobs outside the
        applied tree (earlier versions of files, refused commits), drop those; the applied tree's stay.
        Returns the rows deleted."""
        with self._lock:
            total = self._db.execute("SELECT COUNT(*) FROM validation").fetchone()[0]
            in_tree = self._db.execute("SELECT COUNT(*) FROM validation WHERE blob IN (SELECT blob FROM tree)"
                                       ).fetchone()[0]
            if total - in_tree <= keep_extra:
                return 0
        with self.transaction() as db:
            return int(db.execute("DELETE FROM validation WHERE blob NOT IN (SELECT blob FROM tree)").rowcount)

    def blobs_outside_tree(self) -> list[str]:
        """git blobs gitsync still needs that the applied commit may not hold: the base of each local change in
        the outbox (carried onto git's file at the next flush) and the version of each owned file that is not
        the applied tree's (a held file keeps its last good version). On a shallow mirror their commits fall
        below the boundary, so maintenance keeps these by a ref of their own (GitMirror.keep)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT base_blob FROM outbox WHERE base_blob IS NOT NULL AND base_blob != '' "
                "UNION SELECT base FROM (SELECT COALESCE(NULLIF(m.git_blob, ''), m.blob) AS base, t.blob AS applied "
                "FROM manifest m LEFT JOIN tree t ON t.repo_path = m.repo_path) "
                "WHERE applied IS NULL OR applied != base").fetchall()
        return [row[0] for row in rows]

    def shrink_memory(self) -> None:
        """Hand SQLite's page cache back: a sync over thousands of rows fills it, and an idle agent never needs it."""
        with self._lock:
            self._db.execute("PRAGMA shrink_memory")

    def checkpoint(self) -> int:
        """Fold the write-ahead log into the database and truncate it (SQLite's automatic checkpoints never
        shrink the file); returns the WAL's size in bytes afterwards. A reader holding an old snapshot
        (a `gitsync status` just then) makes this a partial checkpoint; the next one finishes it."""
        with self._lock:
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        wal = self.path.with_name(self.path.name + "-wal")
        return wal.stat().st_size if wal.exists() else 0

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._errors():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                with contextlib.suppress(sqlite3.Error):  # SQLite may have rolled back already (disk full)
                    self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """SQLite failures become one line naming the file and the fix; nothing was committed."""
        try:
            yield
        except sqlite3.Error as exc:
            raise StateError(explain(self.path, exc)) from None

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
            rows = self._db.execute("SELECT repo_path, blob, names, problems, folders FROM tree").fetchall()
        return {path: _tree_record(blob, names, probs, folders) for path, blob, names, probs, folders in rows}

    def manifest(self) -> dict[str, Owned]:
        with self._lock:
            rows = self._db.execute("SELECT target, repo_path, blob, names, stat, git_blob FROM manifest").fetchall()
        return {target: Owned(path, blob, tuple(json.loads(names)), stat, git_blob)
                for target, path, blob, names, stat, git_blob in rows}

    def tree_rows(self, paths: Iterable[str]) -> dict[str, TreeRecord]:
        """The stored tree rows of some repo paths (missing ones are left out)."""
        rows = self._select_in("SELECT repo_path, blob, names, problems, folders FROM tree WHERE repo_path IN ({})",
                               paths)
        return {path: _tree_record(blob, names, probs, folders) for path, blob, names, probs, folders in rows}

    def owned(self, targets: Iterable[str]) -> dict[str, Owned]:
        """The manifest rows of some targets, for a plan over only the targets a change affects."""
        rows = self._select_in("SELECT target, repo_path, blob, names, stat, git_blob FROM manifest "
                               "WHERE target IN ({})", targets)
        return {target: Owned(path, blob, tuple(json.loads(names)), stat, git_blob)
                for target, path, blob, names, stat, git_blob in rows}

    def owned_stats(self) -> dict[str, Seen]:
        """Every owned target's stat key and blob id: what a scan compares with, without decoding whole rows."""
        from gitsync.target_dir import Seen

        with self._lock:
            rows = self._db.execute("SELECT target, blob, stat FROM manifest").fetchall()
        return {target: Seen(blob, stat) for target, blob, stat in rows}

    def recorded_stats(self, targets: Iterable[str]) -> dict[str, str]:
        """The stat key recorded for each of these targets: owned (the manifest), else remembered as foreign."""
        targets = list(targets)
        found = dict(self._select_in("SELECT target, stat FROM foreign_files WHERE target IN ({})", targets))
        found.update(self._select_in("SELECT target, stat FROM manifest WHERE target IN ({})", targets))
        return found

    def paths_named(self, names: Iterable[str]) -> dict[str, list[str]]:
        """Job name -> the stored repo paths defining it (through the tree_names index)."""
        found: dict[str, list[str]] = {}
        for name, path in self._select_in("SELECT name, repo_path FROM tree_names WHERE name IN ({})", names):
            found.setdefault(name, []).append(path)
        return found

    def paths_landing(self, targets: Iterable[str]) -> dict[str, list[str]]:
        """Target file name -> the stored repo paths that land there."""
        found: dict[str, list[str]] = {}
        for target, path in self._select_in("SELECT target, repo_path FROM tree_targets WHERE target IN ({})",
                                            targets):
            found.setdefault(target, []).append(path)
        return found

    def paths_referencing(self, folders: Iterable[str]) -> dict[str, list[str]]:
        """Companion folder name -> the stored definition files naming it through ``${job}``."""
        found: dict[str, list[str]] = {}
        for folder, path in self._select_in("SELECT folder, repo_path FROM tree_folders WHERE folder IN ({})", folders):
            found.setdefault(folder, []).append(path)
        return found

    def root_representatives(self, folders: Iterable[str]) -> frozenset[str]:
        """One definition naming each (companion folder, folder in git) pair of these folders: what a clash
        between folders in git needs, without the thousands of definitions that may name one folder."""
        found: list[str] = []
        with self._lock:
            for folder in sorted(set(folders)):  # one index seek per root, however many definitions name it
                after = ""
                while (row := self._db.execute(
                        "SELECT root, repo_path FROM tree_folders INDEXED BY tree_folders_by_folder_root "
                        "WHERE folder = ? AND root > ? ORDER BY root LIMIT 1", (folder, after)).fetchone()):
                    after = row[0]
                    found.append(row[1])
        return frozenset(found)

    def folders_rooted(self, roots: Iterable[str]) -> dict[str, str]:
        """Companion root (a folder's path in git) -> its target folder name, for the stored roots given."""
        return {root: folder for root, folder in
                self._select_in("SELECT root, folder FROM tree_folders WHERE root IN ({})", roots)}

    def owned_under(self, folder: str) -> dict[str, Owned]:
        """The manifest rows of the files gitsync owns inside one companion folder of the target (a range over
        the primary key: only that folder's rows are read)."""
        with self._lock:
            rows = self._db.execute("SELECT target, repo_path, blob, names, stat, git_blob FROM manifest "
                                    "WHERE target >= ? AND target < ?", (folder + "/", folder + "0")).fetchall()
        return {target: Owned(path, blob, tuple(json.loads(names)), stat, git_blob)
                for target, path, blob, names, stat, git_blob in rows}

    def open_problems(self) -> dict[str, tuple[Problem, ...]]:
        """Every problem of the applied tree, by repo path: rows exist only for files that have one."""
        with self._lock:
            rows = self._db.execute("SELECT repo_path, problems FROM tree_problems").fetchall()
        return {path: _problems(probs) for path, probs in rows}

    def problem_paths(self) -> frozenset[str]:
        """Every repo path with a stored problem (keys only: nothing decoded)."""
        with self._lock:
            return frozenset(row[0] for row in self._db.execute("SELECT repo_path FROM tree_problems"))

    def problems_of(self, paths: Iterable[str]) -> dict[str, tuple[Problem, ...]]:
        """The stored problems of some repo paths (paths without any are left out)."""
        rows = self._select_in("SELECT repo_path, problems FROM tree_problems WHERE repo_path IN ({})", paths)
        return {path: _problems(probs) for path, probs in rows}

    def error_problems(self) -> dict[str, tuple[Problem, ...]]:
        """The stored problems of the files that have an error (through the partial index: warnings unread)."""
        with self._lock:
            rows = self._db.execute("SELECT repo_path, problems FROM tree_problems "
                                    "WHERE instr(problems, '\"severity\": \"error\"') > 0").fetchall()
        found = {path: _problems(probs) for path, probs in rows}
        return {path: probs for path, probs in found.items() if any(p.severity == "error" for p in probs)}

    def problem_paths_under(self, roots: Iterable[str]) -> frozenset[str]:
        """Repo paths with stored problems inside these folders (a range over the primary key per folder)."""
        found: list[str] = []
        with self._lock:
            for root in set(roots):
                found += (row[0] for row in self._db.execute(
                    "SELECT repo_path FROM tree_problems WHERE repo_path >= ? AND repo_path < ?",
                    (root + "/", root + "0")))
        return frozenset(found)

    def problem_counts(self) -> dict[str, int]:
        """Stored problems by severity, counted inside SQLite (no row decoded here)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT json_extract(j.value, '$.severity'), COUNT(*) "
                "FROM tree_problems, json_each(tree_problems.problems) AS j GROUP BY 1").fetchall()
        return {str(severity): int(count) for severity, count in rows}

    def current_problems(self) -> list[dict[str, Any]]:
        """Every problem at the last commit looked at, for status: the applied tree's stored problems, with the
        paths the last pull judged (meta "problems_looked") replaced by what it found (meta "problems")."""
        looked = self.get("problems_looked")
        latest = list(self.get("problems", []))
        if looked is None:  # the last pull judged everything (or a jobs-api target): its list is complete
            return latest
        judged = set(looked)
        merged = [p for path, found in self.open_problems().items() if path not in judged for p in found]
        merged += [from_dict(p) for p in latest if p["path"] in judged]
        return [dict(p.__dict__) for p in sorted(merged)]

    def has_tree(self) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM tree LIMIT 1").fetchone() is not None

    def validations(self, blobs: Iterable[str], rules: str) -> dict[str, Validation]:
        """Cached check_kit results: blob -> (job names, problems with an empty path, companion folders)."""
        rows = self._select_in("SELECT blob, names, problems, folders FROM validation WHERE rules = ? AND blob IN ({})",
                               blobs, rules)
        return {blob: (tuple(json.loads(names)), _problems(probs), _folders(folders))
                for blob, names, probs, folders in rows}

    def remember_validations(self, rules: str, found: Mapping[str, Validation]) -> None:
        if not found:
            return
        with self.transaction() as db:
            db.executemany("INSERT OR REPLACE INTO validation (blob, rules, names, problems, folders) "
                           "VALUES (?, ?, ?, ?, ?)", (
                               (blob, rules, json.dumps(names), json.dumps([p.__dict__ for p in problems]),
                                json.dumps(folders)) for blob, (names, problems, folders) in found.items()))

    def foreign_files(self, targets: Iterable[str] | None = None) -> dict[str, tuple[str, str, tuple[str, ...]]]:
        """Remembered foreign files: target -> (stat key, blob id, job names); all of them, or those of `targets`."""
        if targets is not None:
            rows = self._select_in("SELECT target, stat, blob, names FROM foreign_files WHERE target IN ({})",
                                   targets)
        else:
            with self._lock:
                rows = self._db.execute("SELECT target, stat, blob, names FROM foreign_files").fetchall()
        return {target: (stat, blob, tuple(json.loads(names))) for target, stat, blob, names in rows}

    def remember_foreign(self, files: Mapping[str, tuple[str, str, tuple[str, ...]] | None]) -> None:
        """Store (or with None, forget) foreign files."""
        if not files:
            return
        with self.transaction() as db:
            db.executemany("DELETE FROM foreign_files WHERE target = ?", ((t,) for t, v in files.items() if v is None))
            db.executemany("INSERT OR REPLACE INTO foreign_files VALUES (?, ?, ?, ?)", (
                (t, v[0], v[1], json.dumps(v[2])) for t, v in files.items() if v is not None))

    def _select_in(self, sql: str, keys: Iterable[str], *params: str) -> list[tuple[Any, ...]]:
        """Rows for `WHERE x IN (keys)`, in chunks below SQLite's variable limit."""
        keys = sorted(set(keys))
        rows: list[tuple[Any, ...]] = []
        with self._lock:
            for at in range(0, len(keys), 500):
                chunk = keys[at:at + 500]
                rows += self._db.execute(sql.format(", ".join("?" * len(chunk))), (*params, *chunk)).fetchall()
        return rows

    def has_companions(self) -> bool:
        """Whether gitsync owns any file inside a companion folder (through the partial index: no row read
        when it owns none)."""
        with self._lock:
            return self._db.execute("SELECT 1 FROM manifest WHERE instr(target, '/') > 0 LIMIT 1").fetchone() \
                is not None

    def owned_count(self) -> int:
        """Definition files gitsync owns (files inside companion folders, whose targets hold a '/', are not
        counted: the mass-delete guard and the metric are about definitions)."""
        with self._lock:
            total = self._db.execute("SELECT COUNT(*) FROM manifest").fetchone()[0]
            inside = self._db.execute("SELECT COUNT(*) FROM manifest WHERE instr(target, '/') > 0").fetchone()[0]
            return int(total - inside)

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
                     meta: Mapping[str, Any], end_apply: bool = False,
                     problems: Mapping[str, tuple[Problem, ...]] | None = None) -> None:
        """Commit one apply: change the tree rows given (None removes one) and their name indexes, the open
        problems of the paths in `problems` (an empty tuple clears a path), the manifest rows, and meta keys;
        `end_apply` also clears the journal in the same transaction."""
        with self.transaction() as db:
            if end_apply:
                db.execute("DELETE FROM apply_journal")
                _set_meta(db, {"apply_in_progress": None})
            if tree:
                db.executemany("DELETE FROM tree WHERE repo_path = ?", ((p,) for p, r in tree.items() if r is None))
                db.executemany("INSERT OR REPLACE INTO tree (repo_path, blob, names, problems, folders) "
                               "VALUES (?, ?, ?, ?, ?)", (
                                   (path, rec.blob, json.dumps(rec.names),
                                    json.dumps([p.__dict__ for p in rec.problems]), json.dumps(rec.folders))
                                   for path, rec in tree.items() if rec is not None))
                db.executemany("DELETE FROM tree_folders WHERE repo_path = ?", ((p,) for p in tree))
                db.executemany("INSERT OR IGNORE INTO tree_folders VALUES (?, ?, ?, ?)", (
                    (folder, companion_root(path, folder), path, line)
                    for path, rec in tree.items() if rec is not None for folder, line in rec.folders))
                db.executemany("DELETE FROM tree_names WHERE repo_path = ?", ((p,) for p in tree))
                db.executemany("INSERT OR IGNORE INTO tree_names VALUES (?, ?)", (
                    (name, path) for path, rec in tree.items() if rec is not None for name in rec.names))
                db.executemany("DELETE FROM tree_targets WHERE repo_path = ?", ((p,) for p in tree))
                db.executemany("INSERT OR IGNORE INTO tree_targets VALUES (?, ?)", (
                    (posixpath.basename(path), path) for path, rec in tree.items() if rec is not None))
            if problems:
                db.executemany("DELETE FROM tree_problems WHERE repo_path = ?", ((p,) for p, f in problems.items()
                                                                                if not f))
                db.executemany("INSERT OR REPLACE INTO tree_problems VALUES (?, ?)", (
                    (path, json.dumps([p.__dict__ for p in found])) for path, found in problems.items() if found))
            db.executemany("DELETE FROM manifest WHERE target = ?", ((t,) for t, o in owned.items() if o is None))
            db.executemany("INSERT OR REPLACE INTO manifest VALUES (?, ?, ?, ?, ?, ?)", (
                (t, o.repo_path, o.blob, json.dumps(o.names), o.stat, o.base)
                for t, o in owned.items() if o is not None))
            db.executemany("DELETE FROM foreign_files WHERE target = ?", ((t,) for t, o in owned.items() if o))
            _set_meta(db, meta)

    # -- history ------------------------------------------------------------------------------------
    def add_history(self, row: HistoryRow, keep: int = 1000) -> None:
        """Record one sync. A verdict already recorded is counted on its row instead of adding one: a commit
        refused (invalid, or refused by a rule) once per (applied commit, refused commit, verdict), however
        many cycles refuse it; an error identical to the newest row once per run of that error. Otherwise a
        broken head would add a row every cycle, pushing the syncs that did something out of the history."""
        key = (row.from_commit, row.to_commit, row.result, row.message)
        with self.transaction() as db:
            found = None
            if row.result in REFUSALS:
                found = db.execute("SELECT id FROM history WHERE to_commit IS ? AND from_commit IS ? AND result = ?"
                                   " AND message = ? ORDER BY id DESC LIMIT 1",
                                   (row.to_commit, row.from_commit, row.result, row.message)).fetchone()
            elif row.result == "error":
                newest = db.execute("SELECT id, from_commit, to_commit, result, message FROM history"
                                    " ORDER BY id DESC LIMIT 1").fetchone()
                found = newest if newest and tuple(newest[1:]) == key else None
            if found:
                db.execute("UPDATE history SET repeats = repeats + 1, last_seen = ?, duration = ? WHERE id = ?",
                           (row.started, row.duration, found[0]))
                return
            db.execute("INSERT INTO history (started, duration, from_commit, to_commit, result, written, removed,"
                       " message) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (row.started, row.duration, row.from_commit, row.to_commit, row.result, row.written,
                        row.removed, row.message))
            db.execute("DELETE FROM history WHERE id <= (SELECT MAX(id) FROM history) - ?", (keep,))

    def history(self, limit: int = 20) -> list[HistoryRow]:
        with self._lock:
            rows = self._db.execute("SELECT started, duration, from_commit, to_commit, result, written, removed,"
                                    " message, repeats, last_seen FROM history ORDER BY id DESC LIMIT ?",
                                    (limit,)).fetchall()
        return [HistoryRow(*row) for row in rows]


#: Results that are a verdict on a commit (nothing was applied): recorded once per commit and verdict.
REFUSALS = ("invalid", "refused")


def _add_missing_columns(db: sqlite3.Connection, table: str, columns: Mapping[str, str]) -> None:
    """Add the columns (name -> declaration) an existing table lacks; a table not created yet is left to the
    schema, which has them."""
    have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
    for name, declaration in columns.items():
        if have and name not in have:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {declaration}")


def _problems(text: str) -> tuple[Problem, ...]:
    return tuple(from_dict(p) for p in json.loads(text)) if text != "[]" else ()


def _folders(text: str) -> tuple[tuple[str, int], ...]:
    return tuple((str(folder), int(line)) for folder, line in json.loads(text)) if text != "[]" else ()


def _tree_record(blob: str, names: str, problems: str, folders: str = "[]") -> TreeRecord:
    return TreeRecord(blob, tuple(json.loads(names)), _problems(problems), _folders(folders))


def _file_key(st: os.stat_result) -> str:
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"


def ensure_state_dir(directory: Path) -> None:
    """Create the state directory, or say in one line why it cannot be one."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise StateError(f"state.dir {directory} is a file, not a directory; point state.dir at a "
                         "directory") from None
    except NotADirectoryError:
        raise StateError(f"state.dir {directory} is inside a file, not a directory; point state.dir at a "
                         "directory") from None
    except OSError as exc:
        raise StateError(f"cannot create state directory {directory}: {exc.strerror}") from None


def explain(path: Path, exc: sqlite3.Error) -> str:
    """One line for a SQLite failure: a full or failing disk is not a damaged database (moving it away would
    lose the outbox for nothing)."""
    text = str(exc)
    if isinstance(exc, sqlite3.OperationalError):
        if "full" in text or "disk I/O" in text:
            return (f"cannot write state database {path}: {text}; free space on its disk (nothing was "
                    "recorded; the next sync retries)")
        return f"state database {path}: {text}"
    return damaged(path, exc)


def damaged(path: Path, exc: Exception) -> str:
    return (f"state database {path} is damaged ({exc}); move it away (mv {path} {path}.broken): the next "
            "sync rebuilds it, adopts the files that match git and reports the rest as drift")


def _set_meta(db: sqlite3.Connection, values: Mapping[str, Any]) -> None:
    db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", ((k, json.dumps(v)) for k, v in values.items()))


def problems_json(problems: Iterable[Problem]) -> list[dict[str, Any]]:
    return [dict(p.__dict__) for p in problems]


def now() -> float:
    return time.time()
