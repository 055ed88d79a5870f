"""Fixtures for the Farm-compatible jobs service: a real redis-server, and real running services
(directory and Redis stores) reached over HTTP on 127.0.0.1."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from gitsync import farm
from gitsync.jobs_service.config import JobsServiceConfig
from gitsync.jobs_service.server import RunningJobsService
from gitsync.secrets import Secret
from gitsync.testing.waiting import stop_process

from .helpers import API_KEY, JobsApi, free_port, poll_until


@pytest.fixture
def poll() -> Callable[..., Any]:
    """``poll(condition, timeout=5.0, what=...)``: wait for a condition; never a fixed sleep."""
    return poll_until


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    # trust_env=False: a proxy from the environment must not intercept 127.0.0.1.
    with httpx.Client(trust_env=False, timeout=10) as client:
        yield client


@pytest.fixture
def save_location(tmp_path: Path) -> Path:
    return tmp_path / "job-definitions"


@pytest.fixture
def start_service(http: httpx.Client, save_location: Path) -> Iterator[Callable[..., JobsApi]]:
    """Start a service from a config (defaults: directory store over ``save_location``)."""
    started: list[RunningJobsService] = []

    def start(**overrides: Any) -> JobsApi:
        settings: dict[str, Any] = {"save_location": save_location, "api_key": Secret(API_KEY)}
        settings.update(overrides)
        service = RunningJobsService(JobsServiceConfig(**settings), host="127.0.0.1", port=0)
        started.append(service.start())
        return JobsApi(service, http, settings["save_location"])

    yield start
    for service in started:
        service.stop()


@pytest.fixture
def dir_api(start_service: Callable[..., JobsApi]) -> JobsApi:
    """A running jobs service over a directory store in a temp directory."""
    return start_service()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A throwaway redis-server on a free port, no persistence; yields its base URL."""
    executable = shutil.which("redis-server")
    if executable is None:
        pytest.skip("redis-server is not installed")
    workdir = tmp_path_factory.mktemp("redis")
    port = free_port()
    log_file = (workdir / "redis.log").open("w")
    process = subprocess.Popen(
        [executable, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir)]
        + ["--save", "", "--appendonly", "no"],
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1)

    def answers() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"redis-server exited: {(workdir / 'redis.log').read_text()}")
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    try:
        poll_until(answers, timeout=10, what="redis-server to answer PING")
        yield f"redis://127.0.0.1:{port}"
    finally:
        client.close()
        stop_process(process)
        log_file.close()


@pytest.fixture
def redis_url(redis_server: str) -> Iterator[str]:
    """A redis:// URL to an empty database 0."""
    url = f"{redis_server}/0"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield url
    client.close()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def redis_api(start_service: Callable[..., JobsApi], redis_url: str) -> JobsApi:
    """A running jobs service over a Redis store."""
    return start_service(store_class=farm.REDIS_STORE_CLASS, connection_string=Secret(redis_url))


@pytest.fixture
def write_kit(save_location: Path) -> Callable[..., Path]:
    """Write a .kit file by hand (as a user or git would), into the save location by default."""

    def write(name: str, text: str, directory: Path | None = None) -> Path:
        target = directory or save_location
        target.mkdir(parents=True, exist_ok=True)
        path = target / name
        path.write_text(text, encoding="utf-8")
        return path

    return write
