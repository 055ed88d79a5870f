"""Farm's RedisJobStore: each definition is a Redis string ``job_spec_<name>`` holding its JSON.

A jobs service on Redis has no directory, so gitsync can only reach it through the HTTP API;
this store exists so that path can be tested. As in Farm, loading walks the keys with SCAN
(never KEYS, which blocks a shared server), damaged JSON is skipped with a warning, and removing
a name that is not there is an error (HTTP 404), unlike the directory store.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import redis

from gitsync import farm
from gitsync.jobs_service.store import Definition, DefinitionNotFound, StoreError
from gitsync.secrets import Secret, redact_text

log = logging.getLogger(__name__)

KEY_PREFIX = "job_spec_"
_T = TypeVar("_T")


class RedisJobStore:
    """Stateless apart from the connection pool, so it is thread-safe as redis-py's client is."""

    def __init__(self, connection_string: Secret) -> None:
        self._url = connection_string
        self._client: redis.Redis = redis.Redis.from_url(
            connection_string.reveal(), socket_timeout=10, socket_connect_timeout=5
        )

    def start(self) -> None:
        """Fail early with a clear message if Redis is unreachable."""
        self._call(self._client.ping)

    def stop(self) -> None:
        self._client.close()

    def load(self) -> dict[str, Definition]:
        keys: list[bytes] = self._call(lambda: sorted(self._client.scan_iter(match=f"{KEY_PREFIX}*", _type="STRING")))
        values: list[bytes | str | None] = self._call(lambda: self._client.mget(keys)) if keys else []
        jobs: dict[str, Definition] = {}
        for key, raw in zip(keys, values, strict=True):
            data = _decode(raw)  # None also when the key vanished since the SCAN
            if data is None:
                log.warning("skipped loading damaged job definition from redis: %s", _text(key))
                continue
            name = data.get("name") or _text(key)[len(KEY_PREFIX) :]
            jobs[name] = farm.as_job_definition(name, data)
        return jobs

    def save(self, definition: Definition) -> None:
        """Farm's ``save_job`` is fire-and-forget (``asyncio.ensure_future``): the client gets 200 whatever
        happens, and a failure only reaches the log. The stand-in writes synchronously but likewise
        never reports a failure to the client."""
        name = definition["name"]
        record = farm.as_job_definition(name, definition)
        try:
            stored = self._call(lambda: self._client.set(f"{KEY_PREFIX}{name}", json.dumps(record)))
        except StoreError as exc:
            log.error("Saving job definition %r to redis failed (the client was told it succeeded): %s", name, exc)
            return
        if not stored:
            log.error("Job could not be stored: %r (the client was told it succeeded)", name)
            return
        log.info("Saved job definition %r to redis", name)

    def spec_path_problem(self, spec_path: str) -> str | None:
        return None  # stored as given, never used as a path

    def remove(self, name: str) -> None:
        deleted = self._call(lambda: self._client.delete(f"{KEY_PREFIX}{name}"))
        if not deleted:
            raise DefinitionNotFound("Job does not exist.")
        log.info("Removed job definition %r from redis", name)

    def _call(self, operation: Callable[[], _T]) -> _T:
        try:
            return operation()
        except redis.RedisError as exc:
            # redis-py errors can quote the URL or the password; neither may reach a client or log.
            password = urlsplit(self._url.reveal()).password or ""
            raise StoreError(f"redis: {redact_text(str(exc), self._url, password)}") from exc


def _decode(raw: bytes | str | None) -> dict[str, Any] | None:
    try:
        data = json.loads(raw) if raw is not None else None
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _text(key: bytes | str) -> str:
    return key.decode(errors="replace") if isinstance(key, bytes) else key
