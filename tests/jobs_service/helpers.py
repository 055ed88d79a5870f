"""Helpers shared by the jobs service tests (constants, the API client wrapper, polling)."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from gitsync.jobs_service.server import RunningJobsService
from gitsync.testing.waiting import wait_until

API_KEY = "test-key-5f3a9c"


poll_until = wait_until


def postable(definition: dict[str, Any]) -> dict[str, Any]:
    """A /load definition as a client must post it back: Farm's /save model refuses an explicit null (422)."""
    return {key: value for key, value in definition.items() if value is not None}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class JobsApi:
    """A running service plus an HTTP client that speaks its API."""

    service: RunningJobsService
    http: httpx.Client
    save_location: Path

    @property
    def url(self) -> str:
        return self.service.url

    def load(self, filter: str | None = None) -> httpx.Response:
        params = {"filter": filter} if filter is not None else None
        return self.http.get(f"{self.url}/load", params=params)

    def names(self) -> set[str]:
        response = self.load()
        response.raise_for_status()
        return set(response.json())

    def save(self, definition: dict[str, Any], key: str | None = API_KEY) -> httpx.Response:
        return self.http.post(f"{self.url}/save", json=definition, headers=_key(key))

    def remove(self, name: str, key: str | None = API_KEY) -> httpx.Response:
        return self.http.post(f"{self.url}/remove", json={"job_definition_name": name}, headers=_key(key))


def _key(key: str | None) -> dict[str, str]:
    return {"X-API-KEY": key} if key is not None else {}
