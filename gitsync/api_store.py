"""The record of what gitsync put on a jobs service: one row per definition, per target, in the state DB.

The jobs API has no transactions, so the record is written after every single call that succeeded,
not once per sync: after a failure part way it says exactly what was applied, and the next run's plan
(which starts from `/load`, not from the record) finishes the rest. A crash between a call and its
row is harmless too: a definition that already matches git is adopted, one already gone is forgotten.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol

from gitsync.api_plan import Applied
from gitsync.errors import TargetError
from gitsync.secrets import Secret, redact_failure
from gitsync.state import State

_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_applied (
    target TEXT NOT NULL, name TEXT NOT NULL, repo_path TEXT NOT NULL, fingerprint TEXT NOT NULL,
    PRIMARY KEY (target, name));
CREATE TABLE IF NOT EXISTS api_baseline (
    target TEXT NOT NULL, name TEXT NOT NULL, fingerprint TEXT NOT NULL, PRIMARY KEY (target, name));
"""
#: The name of the row that says the baseline was taken (no job is called "": Farm refuses it).
_TAKEN = ""


class ApiRecord:
    """The rows of one jobs-api target (named, so several targets can share one state database)."""

    def __init__(self, state: State, target: str) -> None:
        self.state = state
        self.target = target
        with state.transaction() as db:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)

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

    # -- the baseline: definitions on the service at push-back's first look (see api_capture.py) ----------
    def baseline(self) -> dict[str, str] | None:
        with self.state.transaction() as db:
            rows = dict(db.execute("SELECT name, fingerprint FROM api_baseline WHERE target = ?",
                                   (self.target,)).fetchall())
        return None if _TAKEN not in rows else {n: fp for n, fp in rows.items() if n != _TAKEN}

    def take_baseline(self, found: dict[str, str]) -> None:
        with self.state.transaction() as db:
            db.executemany("INSERT OR REPLACE INTO api_baseline VALUES (?, ?, ?)",
                           [(self.target, n, fp) for n, fp in {**found, _TAKEN: ""}.items()])

    def prune_baseline(self, names: list[str]) -> None:
        with self.state.transaction() as db:
            db.executemany("DELETE FROM api_baseline WHERE target = ? AND name = ?",
                           [(self.target, n) for n in names if n != _TAKEN])


class Record(Protocol):
    """Where a jobs-api target keeps what gitsync put on the service, and the baseline of what it found there."""

    def applied(self) -> dict[str, Applied]: ...

    def count(self) -> int: ...

    def saved(self, name: str, applied: Applied) -> None: ...

    def forget(self, name: str) -> None: ...

    def baseline(self) -> dict[str, str] | None: ...

    def take_baseline(self, found: dict[str, str]) -> None: ...

    def prune_baseline(self, names: list[str]) -> None: ...


class SharedRecord:
    """The record in Redis, shared by HA replicas: a replica taking over knows what its predecessor saved,
    so it neither mistakes those definitions for foreign ones nor saves them a second time. Each write
    also goes to the local database, so `gitsync status` of any replica can count them. The push-back
    baseline is shared too: a definition someone created while the leader was being replaced is new to
    the successor as well, not the operator's."""

    def __init__(self, local: ApiRecord, redis_url: Secret, key: str) -> None:
        import redis

        self.local = local
        self.key = f"{key}:applied:{local.target}"
        self.baseline_key = f"{key}:baseline:{local.target}"
        self._url = redis_url
        self._client = redis.Redis.from_url(redis_url.reveal(), socket_timeout=5, socket_connect_timeout=5)

    def applied(self) -> dict[str, Applied]:
        rows = self._call(lambda: self._client.hgetall(self.key))
        if not rows:
            rows = self._seed()
        found: dict[str, Applied] = {}
        for name, value in rows.items():
            try:
                path, fp = json.loads(value)
            except (ValueError, TypeError):
                continue  # a damaged row is treated as unknown: the plan adopts or reports that definition
            found[name.decode() if isinstance(name, bytes) else str(name)] = Applied(str(path), str(fp))
        return found

    def count(self) -> int:
        return int(self._call(lambda: self._client.hlen(self.key)))

    def _seed(self) -> dict[Any, Any]:
        """HA switched on for a target one replica already served: start from that replica's own record,
        so its definitions stay gitsync's (not foreign) under the new leader."""
        mine = self.local.applied()
        if not mine:
            return {}
        rows = {name: json.dumps([a.repo_path, a.fingerprint]) for name, a in mine.items()}
        self._call(lambda: self._client.hset(self.key, mapping=rows))  # type: ignore[arg-type]
        return rows

    def saved(self, name: str, applied: Applied) -> None:
        self._call(lambda: self._client.hset(self.key, name, json.dumps([applied.repo_path, applied.fingerprint])))
        self.local.saved(name, applied)

    def forget(self, name: str) -> None:
        self._call(lambda: self._client.hdel(self.key, name))
        self.local.forget(name)

    def baseline(self) -> dict[str, str] | None:
        rows = self._call(lambda: self._client.hgetall(self.baseline_key))
        found = {(k.decode() if isinstance(k, bytes) else str(k)): (v.decode() if isinstance(v, bytes) else str(v))
                 for k, v in rows.items()}
        return None if _TAKEN not in found else {n: fp for n, fp in found.items() if n != _TAKEN}

    def take_baseline(self, found: dict[str, str]) -> None:
        mapping = {**found, _TAKEN: "taken"}
        self._call(lambda: self._client.hset(self.baseline_key, mapping=mapping))  # type: ignore[arg-type]

    def prune_baseline(self, names: list[str]) -> None:
        names = [n for n in names if n != _TAKEN]
        if names:
            self._call(lambda: self._client.hdel(self.baseline_key, *names))

    def close(self) -> None:
        self._client.close()

    def _call(self, operation: Callable[[], Any]) -> Any:
        import redis

        try:
            return operation()
        except redis.RedisError as exc:
            raise TargetError(f"HA record at {redact_failure(self._url, exc)}") from None
