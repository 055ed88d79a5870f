"""The record of what gitsync put on a jobs service: one row per definition, per target, in the state DB.

The jobs API has no transactions, so the record is written after every single call that succeeded,
not once per sync: after a failure part way it says exactly what was applied, and the next run's plan
(which starts from `/load`, not from the record) finishes the rest. A crash between a call and its
row is harmless too: a definition that already matches git is adopted, one already gone is forgotten.
"""

from __future__ import annotations

from gitsync.api_plan import Applied
from gitsync.state import State

_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_applied (
    target TEXT NOT NULL, name TEXT NOT NULL, repo_path TEXT NOT NULL, fingerprint TEXT NOT NULL,
    PRIMARY KEY (target, name));
"""


class ApiRecord:
    """The rows of one jobs-api target (named, so several targets can share one state database)."""

    def __init__(self, state: State, target: str) -> None:
        self.state = state
        self.target = target
        with state.transaction() as db:
            db.execute(_SCHEMA)

    def applied(self) -> dict[str, Applied]:
        with self.state.transaction() as db:
            rows = db.execute("SELECT name, repo_path, fingerprint FROM api_applied WHERE target = ?",
                              (self.target,)).fetchall()
        return {name: Applied(path, fp) for name, path, fp in rows}

    def count(self) -> int:
        with self.state.transaction() as db:
            return int(db.execute("SELECT COUNT(*) FROM api_applied WHERE target = ?", (self.target,)).fetchone()[0])

    def saved(self, name: str, applied: Applied) -> None:
        with self.state.transaction() as db:
            db.execute("INSERT OR REPLACE INTO api_applied VALUES (?, ?, ?, ?)",
                       (self.target, name, applied.repo_path, applied.fingerprint))

    def forget(self, name: str) -> None:
        with self.state.transaction() as db:
            db.execute("DELETE FROM api_applied WHERE target = ? AND name = ?", (self.target, name))
