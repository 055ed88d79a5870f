"""Fixtures for the fault-injection suite: a sample remote, an HTTP client and a Farm torn down after each test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from faults.harness import Farm
from gitsync.testing.repos import RemoteRepo


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(trust_env=False, timeout=10) as client:
        yield client


@pytest.fixture
def farms(tmp_path: Path, http: httpx.Client) -> Iterator[list[Farm]]:
    made: list[Farm] = []
    yield made
    for farm in made:
        farm.close()


@pytest.fixture
def make_farm(tmp_path: Path, http: httpx.Client, farms: list[Farm]):  # type: ignore[no-untyped-def]
    def make(remote: RemoteRepo, mode: str = "direct", forge_url: str = "") -> Farm:
        farm = Farm(tmp_path / f"farm{len(farms)}", remote, http, mode=mode, forge_url=forge_url)
        farms.append(farm)
        return farm
    return make
