"""Fixtures for the jobs-api target: a real redis-server, the Farm-compatible jobs service on its
directory store or its Redis store (real HTTP on 127.0.0.1), and a gitsync pulling a real git remote
into it through the API."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from gitsync import farm
from gitsync.agent import Agent
from gitsync.api_plan import Prune
from gitsync.api_store import ApiRecord
from gitsync.api_sync import ApiSyncer
from gitsync.api_target import ApiTarget
from gitsync.config import load_settings
from gitsync.credentials import read_secret
from gitsync.forge_http import RetryPolicy
from gitsync.gitrepo import GitMirror
from gitsync.jobs_api import JobsApiClient
from gitsync.jobs_service.config import JobsServiceConfig
from gitsync.jobs_service.server import RunningJobsService
from gitsync.secrets import Secret
from gitsync.state import State
from gitsync.testing.redis_server import RedisServer
from gitsync.testing.waiting import stop_process, wait_until

API_KEY = "api-test-key-7d1e40"
#: Retries without waiting: the tests are about what is retried, not how long it sleeps.
NO_WAIT = RetryPolicy(attempts=3, base_delay=0.0, sleep=lambda _s: None)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    try:
        server = RedisServer(tmp_path_factory.mktemp("redis"))
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    with server as url:
        yield url


@pytest.fixture
def redis_url(redis_server: str) -> Iterator[str]:
    url = f"{redis_server}/0"
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    yield url


@dataclass
class Service:
    """The jobs service stand-in, which can be stopped and started again on the same port."""

    config: JobsServiceConfig
    running: RunningJobsService | None = None
    port: int = 0
    http: httpx.Client = field(default_factory=lambda: httpx.Client(trust_env=False, timeout=10))

    def start(self) -> Service:
        self.running = RunningJobsService(self.config, host="127.0.0.1", port=self.port).start()
        self.port = int(self.running.base_url.rsplit(":", 1)[1])
        return self

    def stop(self) -> None:
        if self.running is not None:
            self.running.stop()
            self.running = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.config.url_prefix}"

    def load(self) -> dict[str, dict[str, Any]]:
        response = self.http.get(f"{self.url}/load")
        response.raise_for_status()
        data: dict[str, dict[str, Any]] = response.json()
        return data

    def save(self, definition: dict[str, Any]) -> None:
        response = self.http.post(f"{self.url}/save", json=definition, headers={"X-API-KEY": API_KEY})
        assert response.status_code == 200, response.text


@pytest.fixture(params=["directory", "redis"])
def service(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Service]:
    """The jobs service on each of Farm's two stores."""
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        config = JobsServiceConfig(store_class=farm.REDIS_STORE_CLASS, connection_string=Secret(url),
                                   api_key=Secret(API_KEY))
    else:
        config = JobsServiceConfig(save_location=tmp_path / "job-definitions", api_key=Secret(API_KEY))
    service = Service(config).start()
    yield service
    service.stop()
    service.http.close()


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "farm-api-key"
    path.write_text(API_KEY + "\n", encoding="utf-8")
    return path


@pytest.fixture
def make_syncer(tmp_path: Path, key_file: Path) -> Iterator[Callable[..., ApiSyncer]]:
    made: list[ApiSyncer] = []

    def make(remote_url: str, url: str, *, prune: Prune = "owned", include: tuple[str, ...] = (),
             state_dir: Path | None = None, **options: Any) -> ApiSyncer:
        state_dir = state_dir or tmp_path / "state"
        settings = load_settings(None, {"repo.url": remote_url, "repo.path": "jobs", "state.dir": str(state_dir),
                                        **options}, environ={})
        client = JobsApiClient(url, lambda: read_secret(str(key_file), None, "jobs API key"), timeout=5,
                               retry=NO_WAIT)
        state = State(state_dir)
        mirror = GitMirror(state_dir / "mirror.git", remote_url, settings.repo_branch)
        syncer = ApiSyncer(settings, state, mirror, ApiTarget("default", client, ApiRecord(state, "default"),
                                                              prune=prune), include=include)
        made.append(syncer)
        return syncer

    yield make
    for syncer in made:
        syncer.close()


@dataclass
class ServiceProcess:
    """The jobs service stand-in as its own process (as Farm runs beside gitsync)."""

    process: subprocess.Popen[bytes]
    url: str

    def stop(self) -> None:
        stop_process(self.process)


def spawn_jobs_service(workdir: Path, store_lines: str) -> ServiceProcess:
    """`python -m gitsync.jobs_service --config farm-jobs.toml` with `store_lines` in its jobs table."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "farm-jobs.toml"
    config.write_text(f'[settings.nv.svc.farm.jobs]\n{store_lines}\napi_key = "{API_KEY}"\n', encoding="utf-8")
    port = free_port()
    with (workdir / "jobs-service.log").open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "gitsync.jobs_service", "--config", str(config),
                                    "--host", "127.0.0.1", "--port", str(port)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/queue/management/jobs"

    def answers() -> bool:
        assert process.poll() is None, (workdir / "jobs-service.log").read_text()
        try:
            return httpx.get(f"{url}/status", timeout=2, trust_env=False).status_code == 200
        except httpx.TransportError:
            return False

    wait_until(answers, 30, "the jobs service process to answer /status")
    return ServiceProcess(process, url)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_store_lines(redis_url: str) -> str:
    return (f'store_class = "{farm.REDIS_STORE_CLASS}"\n'
            f'store_args.connection_string = "{redis_url}"\n')


class ReplicaProcess:
    """A real `gitsync run` replica with its own config file, port and log, for the HA failover tests."""

    def __init__(self, root: Path, config_text: str, port: int) -> None:
        root.mkdir(parents=True)
        self.port = port
        config = root / "gitsync.toml"
        config.write_text(config_text + f'[server]\nlisten = "127.0.0.1:{port}"\n', encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if not k.startswith("GITSYNC_")}
        self.log = root / "gitsync.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "gitsync", "run", "--config", str(config)],
                                            env=env, stdout=log, stderr=subprocess.STDOUT)

    def status(self) -> dict[str, Any] | None:
        assert self.process.poll() is None, self.log.read_text()
        try:
            data: dict[str, Any] = httpx.get(f"http://127.0.0.1:{self.port}/status", timeout=5,
                                             trust_env=False).json()
            return data
        except (httpx.TransportError, ValueError):
            return None

    def role(self) -> object:
        status = self.status()
        return status and status["ha"]["role"]

    def stop(self) -> None:
        stop_process(self.process, grace=30)


@pytest.fixture
def replicas() -> Iterator[list[Any]]:
    """Replicas a test starts, stopped at its end."""
    made: list[Any] = []
    yield made
    for replica in made:
        replica.stop()


@pytest.fixture
def agents() -> Iterator[list[Agent]]:
    """In-process agents a test starts, stopped at its end unless the test stopped them."""
    made: list[Agent] = []
    yield made
    for agent in made:
        if not agent._stop.is_set():
            agent.stop()
