"""Opening the state database: the integrity check reads the whole file (40 ms at 10,000 definitions, on
every `sync --once`), so it is skipped only when the file is exactly as gitsync's own clean close left it;
any other change to it (truncated, overwritten, left mid-write by a crash) is checked at start-up."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from gitsync.errors import StateError
from gitsync.model import Owned
from gitsync.state import State


@pytest.fixture
def statements(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every SQL statement the state databases opened in the test run."""
    seen: list[str] = []
    real_connect = sqlite3.connect

    def connect(*args: object, **kwargs: object) -> sqlite3.Connection:
        db = real_connect(*args, **kwargs)  # type: ignore[call-overload]
        db.set_trace_callback(seen.append)
        return db
    monkeypatch.setattr(sqlite3, "connect", connect)
    yield seen


def filled(directory: Path) -> None:
    state = State(directory)
    state.record_apply(tree=None, owned={f"job-{i}.kit": Owned(f"jobs/job-{i}.kit", "0" * 40, (f"job-{i}",), "1:2:3")
                                         for i in range(500)}, meta={"applied_commit": "1" * 40})
    state.close()


def checked(statements: list[str]) -> bool:
    return any("quick_check" in s for s in statements)


def test_a_database_gitsync_closed_cleanly_opens_without_reading_it_whole(
        tmp_path: Path, statements: list[str]) -> None:
    filled(tmp_path)
    assert checked(statements), "a new database is checked"
    statements.clear()

    State(tmp_path).close()
    assert not checked(statements)


def test_a_database_left_open_by_a_crash_is_checked(tmp_path: Path, statements: list[str]) -> None:
    filled(tmp_path)
    crashed = State(tmp_path)  # never closed: its log stays, as after a SIGKILL
    crashed.set(last_result="synced")
    statements.clear()
    State(tmp_path).close()
    assert checked(statements)
    crashed.close()


def test_a_truncated_database_fails_at_start_up_even_after_a_clean_close(tmp_path: Path) -> None:
    filled(tmp_path)
    with open(tmp_path / "state.sqlite3", "r+b") as handle:  # the schema stays readable, the rows do not
        handle.truncate(os.fstat(handle.fileno()).st_size * 2 // 3)
    with pytest.raises((StateError, sqlite3.DatabaseError)):
        State(tmp_path)


def test_a_database_overwritten_with_the_same_size_fails_at_start_up(tmp_path: Path) -> None:
    filled(tmp_path)
    path = tmp_path / "state.sqlite3"
    size = path.stat().st_size
    with open(path, "r+b") as handle:  # the schema stays readable, the rows do not
        handle.seek(size * 2 // 3)
        handle.write(os.urandom(size - size * 2 // 3))
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # a later write, whatever the clock's tick
    with pytest.raises((StateError, sqlite3.DatabaseError)):
        State(tmp_path)
