"""Local changes on their way to git, persisted before anything else happens.

One row per target file: a later change to the same file updates the row (keeping the git
version it was first made against, which is what conflict detection needs). Rows leave only
when their change is in git, on a conflict branch, or consciously dropped (a closed PR).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Literal

from gitsync.state import State

#: Where a waiting change is: `queued` for the next push, `in_pr` proposed in the open pull request, `blocked`
#: (invalid) until a later save. All three are the "pending push" state of the README's glossary. (`queued`
#: was called `pending` before 2026-11; such rows are read as `queued`.)
Status = Literal["queued", "in_pr", "blocked"]



@dataclass(frozen=True)
class Entry:
    target: str
    seq: int
    created: float
    repo_path: str | None  # the git file it belongs to; None for a definition git has not seen
    base_blob: str | None  # the git blob the local change was made against
    local_blob: str | None  # None: the file was deleted
    content: bytes | None
    origin: str
    status: Status
    pr_number: int | None = None
    error: str = ""


@dataclass(frozen=True)
class OpenPullRequest:
    """The pull request gitsync proposes its changes in; `number` is None until the forge has answered."""

    branch: str
    number: int | None
    url: str


_COLUMNS = "target, seq, created, repo_path, base_blob, local_blob, content, origin, status, pr_number, error"


class Outbox:
    def __init__(self, state: State) -> None:
        self.state = state

    def entries(self, *statuses: Status) -> list[Entry]:
        with self.state.transaction() as db:
            rows = db.execute(f"SELECT {_COLUMNS} FROM outbox ORDER BY seq").fetchall()
        found = [Entry(*row) if row[8] != "pending" else replace(Entry(*row), status="queued") for row in rows]
        return [e for e in found if not statuses or e.status in statuses]

    def put(self, target: str, *, repo_path: str | None, base_blob: str | None, local_blob: str | None,
            content: bytes | None, origin: str) -> None:
        """Record a captured change; an existing row for the target keeps its base and its place in line."""
        now = time.time()
        with self.state.transaction() as db:
            row = db.execute("SELECT seq FROM outbox WHERE target = ?", (target,)).fetchone()
            if row:
                # Any new content must be pushed again, including content whose previous version is in a PR.
                db.execute("UPDATE outbox SET updated = ?, local_blob = ?, content = ?, origin = ?, error = '',"
                           " status = 'queued' WHERE target = ?", (now, local_blob, content, origin, target))
                return
            seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM outbox").fetchone()[0]
            db.execute(f"INSERT INTO outbox ({_COLUMNS}, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'queued', NULL,"
                       " '', ?)", (target, seq, now, repo_path, base_blob, local_blob, content, origin, now))

    def mark(self, targets: Iterable[str], status: Status, *, pr_number: int | None = None, error: str = "") -> None:
        with self.state.transaction() as db:
            db.executemany("UPDATE outbox SET status = ?, pr_number = ?, error = ? WHERE target = ?",
                           ((status, pr_number, error, t) for t in targets))

    def rebase(self, target: str, base_blob: str | None, *, repo_path: str | None = None) -> None:
        """The git version a pending change is relative to moved (its earlier version was merged or pushed)."""
        with self.state.transaction() as db:
            db.execute("UPDATE outbox SET base_blob = ?, repo_path = COALESCE(?, repo_path) WHERE target = ?",
                       (base_blob, repo_path, target))

    def remove(self, entries: Iterable[Entry]) -> None:
        """Drop rows whose change is settled, unless the file changed again since (then the row stays)."""
        with self.state.transaction() as db:
            db.executemany("DELETE FROM outbox WHERE target = ? AND local_blob IS ?",
                           ((e.target, e.local_blob) for e in entries))

    def held_targets(self) -> dict[str, str]:
        """Targets the pull must leave alone because their local change has not reached git yet."""
        return {e.target: f"local change ({e.origin}) waiting to reach git" + (f": {e.error}" if e.error else "")
                for e in self.entries()}

    # -- the pull request (pull-request mode) -----------------------------------------------------------
    def pull_request(self) -> OpenPullRequest | None:
        with self.state.transaction() as db:
            row = db.execute("SELECT branch, number, url FROM pull_request").fetchone()
            if row is None:  # state written by an older gitsync kept it in meta
                old = self.state.get("open_pr")
                if old:
                    row = (old["branch"], old["number"], old["url"])
                    db.execute("INSERT INTO pull_request VALUES (1, ?, ?, ?)", row)
                    db.execute("DELETE FROM meta WHERE key = 'open_pr'")
        return OpenPullRequest(*row) if row else None

    def plan_pull_request(self, branch: str) -> None:
        """Persist the branch name before anything is pushed to it, so a restart reuses it (and the forge's
        "already exists" answer adopts the pull request a crash kept us from recording)."""
        with self.state.transaction() as db:
            db.execute("INSERT OR REPLACE INTO pull_request VALUES (1, ?, NULL, '')", (branch,))

    def record_pull_request(self, number: int, url: str, proposed: Iterable[Entry]) -> None:
        """The forge answered: remember the pull request and what it now proposes, in one transaction."""
        with self.state.transaction() as db:
            db.execute("UPDATE pull_request SET number = ?, url = ?", (number, url))
            db.executemany("UPDATE outbox SET status = 'in_pr', pr_number = ? WHERE target = ? AND local_blob IS ?",
                           ((number, e.target, e.local_blob) for e in proposed))

    def end_pull_request(self) -> None:
        with self.state.transaction() as db:
            db.execute("DELETE FROM pull_request")
            db.execute("DELETE FROM meta WHERE key = 'open_pr'")

    # -- the foreign baseline --------------------------------------------------------------------------
    def baseline(self) -> dict[str, str] | None:
        if not self.state.get("baseline_taken"):
            return None
        with self.state.transaction() as db:
            return dict(db.execute("SELECT target, blob FROM foreign_baseline").fetchall())

    def take_baseline(self, files: dict[str, str]) -> None:
        with self.state.transaction() as db:
            db.executemany("INSERT OR REPLACE INTO foreign_baseline VALUES (?, ?)", files.items())
            db.execute("INSERT OR REPLACE INTO meta VALUES ('baseline_taken', 'true')")

    def prune_baseline(self, targets: Iterable[str]) -> None:
        """Forget foreign files that were deleted or changed: their names are free for new definitions."""
        with self.state.transaction() as db:
            db.executemany("DELETE FROM foreign_baseline WHERE target = ?", ((t,) for t in targets))

    def summary(self) -> dict[str, object]:
        entries = self.entries()
        oldest = min((e.created for e in entries), default=None)
        return {"outbox_length": len(entries),
                "outbox_oldest_age_s": round(time.time() - oldest, 1) if oldest else 0,
                "outbox_blocked": [f"{e.target}: {e.error}" for e in entries if e.status == "blocked"]}
