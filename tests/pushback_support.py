"""Helpers for the push-back scenarios: a real jobs service over the target directory, the agent
between it and a real bare remote, and ways to drive and observe both without fixed sleeps."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import threading
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from gitsync.agent import Agent, build_agent
from gitsync.config import load_settings
from gitsync.jobs_service.config import JobsServiceConfig
from gitsync.jobs_service.server import RunningJobsService
from gitsync.secrets import Secret
from gitsync.testing import waiting
from gitsync.testing.repos import RemoteRepo, git

SAMPLE_REPO = Path(__file__).resolve().parent.parent / "sample-repo"
#: Seconds a scenario waits for something that normally takes well under one.
TIMEOUT = 20.0


def wait_until(condition: Callable[[], Any], timeout: float = TIMEOUT, what: str = "condition") -> Any:
    return waiting.wait_until(condition, timeout, what)
AGENT_ENV = {"GITSYNC_SERVER_LISTEN": "127.0.0.1:0", "GITSYNC_PUSH_DEBOUNCE": "0.2"}
FORGE_TOKEN_ENV = "GITSYNC_TEST_FORGE_TOKEN"


class JobsService:
    """The Farm-compatible jobs service with a DirectoryJobStore whose save location is `directory`,
    spoken to over HTTP. In this process by default; `own_process` runs it as its own process (as Farm
    runs beside the agent), so a burst of saves does not share a GIL with the agent."""

    def __init__(self, directory: Path, http: httpx.Client, *, own_process: bool = False) -> None:
        self.directory = directory
        self.http = http
        self.api_key = "test-" + secrets.token_hex(8)
        self.service: RunningJobsService | None = None
        self.process: subprocess.Popen[bytes] | None = None
        if own_process:
            self._url = self._spawn()
        else:
            config = JobsServiceConfig(save_location=directory, api_key=Secret(self.api_key))
            self.service = RunningJobsService(config, host="127.0.0.1", port=0).start()
            self._url = self.service.url

    def _spawn(self) -> str:
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self.directory.parent / "farm-jobs.toml"
        config.write_text("[settings.nv.svc.farm.jobs]\n"
                          f"store_args.new_job_definition_save_location = '{self.directory}'\n"
                          f'api_key = "{self.api_key}"\n', encoding="utf-8")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        log = (self.directory.parent / "jobs-service.log").open("wb")
        self.process = subprocess.Popen([sys.executable, "-m", "gitsync.jobs_service", "--config", str(config),
                                         "--host", "127.0.0.1", "--port", str(port)],
                                        stdout=log, stderr=subprocess.STDOUT)
        log.close()
        url = f"http://127.0.0.1:{port}/queue/management/jobs"

        def answers() -> bool:
            assert self.process is not None and self.process.poll() is None, "the jobs service exited"
            try:
                return self.http.get(f"{url}/status").status_code == 200
            except httpx.TransportError:
                return False

        wait_until(answers, what="the jobs service process to answer /status")
        return url

    @property
    def url(self) -> str:
        return self._url

    def stop(self) -> None:
        if self.service is not None:
            self.service.stop()
        if self.process is not None:
            waiting.stop_process(self.process)

    def load(self) -> dict[str, dict[str, Any]]:
        response = self.http.get(f"{self.url}/load")
        response.raise_for_status()
        result: dict[str, dict[str, Any]] = response.json()
        return result

    def get(self, name: str) -> dict[str, Any] | None:
        return self.load().get(name)

    def save(self, definition: dict[str, Any]) -> None:
        response = self.http.post(f"{self.url}/save", json=definition, headers={"X-API-KEY": self.api_key})
        assert response.status_code == 200, response.text

    def remove(self, name: str) -> None:
        # Farm's /remove works from the file map of its last load (files gitsync moved into place are not
        # in it until the next rescan); a real client lists with /load first, and so do the tests.
        self.load()
        response = self.http.post(f"{self.url}/remove", json={"job_definition_name": name},
                                  headers={"X-API-KEY": self.api_key})
        assert response.status_code == 200, response.text

    def change(self, name: str, **fields: Any) -> dict[str, Any]:
        """Load a definition, change some fields and save it back (it keeps its job_spec_path)."""
        loaded = self.get(name)
        assert loaded is not None, f"{name} is not in /load"
        # /load shows unset fields as null; Farm's /save model refuses an explicit null (422).
        definition = {key: value for key, value in loaded.items() if value is not None}
        definition.update(fields)
        self.save(definition)
        return definition

    def file(self, name: str) -> Path:
        return self.directory / name


def new_definition(name: str, *args: str, command: str = "/bin/echo") -> dict[str, Any]:
    """The body a client posts to /save for a new definition."""
    return {"name": name, "job_type": "base", "command": command, "args": list(args)}


def instrument(agent: Agent) -> Agent:
    """Count the cycles the worker has started, so a test can wait for one that began after a change,
    and give the test a gate to hold the worker between cycles (see `Site.paused`)."""
    original = agent.run_once
    gate = threading.Event()
    gate.set()
    lock = threading.Lock()
    agent.gate, agent.gate_lock, agent.runs_started = gate, lock, 0  # type: ignore[attr-defined]

    def run_once(reason: str) -> Any:
        while True:
            gate.wait()
            with lock:  # so that `paused` either sees this run started or keeps it at the gate
                if gate.is_set():
                    agent.runs_started += 1  # type: ignore[attr-defined]
                    break
        return original(reason)

    agent.run_once = run_once  # type: ignore[method-assign]
    return agent


@dataclass
class Site:
    """One Farm installation: jobs service + job directory + a gitsync agent with its state dir."""

    remote: RemoteRepo
    jobs: JobsService
    state_dir: Path
    options: dict[str, Any]
    env: dict[str, str]
    agent: Agent | None = None

    @property
    def directory(self) -> Path:
        return self.jobs.directory

    @property
    def running(self) -> Agent:
        assert self.agent is not None, "the agent is not running"
        return self.agent

    def settings_flags(self) -> dict[str, Any]:
        flags: dict[str, Any] = {"repo.url": self.remote.url, "repo.path": "jobs",
                                 "target.directory": str(self.directory), "state.dir": str(self.state_dir),
                                 "sync.interval": 3600.0}
        flags.update(self.options)
        return flags

    def file(self, name: str) -> Path:
        return self.directory / name

    def start_agent(self) -> Agent:
        """Build and start an agent on this site's state dir; returns after its first cycle."""
        assert self.agent is None
        agent = instrument(build_agent(load_settings(None, self.settings_flags(), environ=self.env)))
        self.agent = agent
        agent.start()
        assert agent.wait_for_syncs(1, TIMEOUT), "the first sync did not finish"
        return agent

    def stop_agent(self) -> None:
        if self.agent is not None:
            agent, self.agent = self.agent, None
            agent.stop()

    def cycle(self, timeout: float = TIMEOUT) -> None:
        """Run one full capture → flush → pull cycle that starts after this call (or after a change
        the caller just made), and wait for it to finish."""
        agent = self.running
        started = agent.runs_started  # type: ignore[attr-defined]
        agent.request_sync("test")
        assert agent.wait_for_syncs(started + 1, timeout), "the requested sync did not finish"

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Hold the agent between two cycles: changes made inside meet in the first cycle after it."""
        agent = self.running
        with agent.gate_lock:  # type: ignore[attr-defined]
            agent.gate.clear()  # type: ignore[attr-defined]
        wait_until(lambda: agent.syncs_done == agent.runs_started,  # type: ignore[attr-defined]
                   what="the cycle in progress to finish")
        try:
            yield
        finally:
            agent.gate.set()  # type: ignore[attr-defined]

    def cycle_until(self, condition: Callable[[], Any], what: str, timeout: float = TIMEOUT) -> Any:
        """Run cycles until `condition()` holds (for waits that a backoff may stretch)."""

        def check() -> Any:
            value = condition()
            if not value:
                self.cycle()
            return value

        return wait_until(check, timeout, what)

    def status(self) -> dict[str, Any]:
        return self.running.status()

    def outbox_length(self) -> int:
        return int(self.status()["outbox_length"])

    def kit_files(self) -> dict[str, bytes]:
        """Every `.kit` file in the job directory, with its bytes."""
        return {p.name: p.read_bytes() for p in sorted(self.directory.iterdir()) if p.name.endswith(".kit")}

    def definitions(self) -> dict[str, dict[str, Any]]:
        """The job tables of every `.kit` file in the directory, as plain data (what Farm would load)."""
        found: dict[str, dict[str, Any]] = {}
        for data in self.kit_files().values():
            found.update(tomllib.loads(data.decode("utf-8")).get("job", {}))
        return found


class Sites:
    """Creates sites on demand and tears every one of them down at the end of the test."""

    def __init__(self, root: Path, http: httpx.Client) -> None:
        self.root = root
        self.http = http
        self.made: list[Site] = []

    def make(self, remote: RemoteRepo, name: str = "a", *, start: bool = True, env: dict[str, str] | None = None,
             jobs_process: bool = False, **options: Any) -> Site:
        jobs = JobsService(self.root / name / "job-definitions", self.http, own_process=jobs_process)
        site = Site(remote, jobs, self.root / name / "state", dict(options), {**AGENT_ENV, **(env or {})})
        self.made.append(site)
        if start:
            site.start_agent()
        return site

    def close(self) -> None:
        errors: list[BaseException] = []
        for site in reversed(self.made):
            for stop in (site.stop_agent, site.jobs.stop):
                try:
                    stop()
                except BaseException as exc:  # noqa: BLE001 - stop everything, then report
                    errors.append(exc)
        if errors:
            raise errors[0]


# -- git observations -------------------------------------------------------------------------------

def commit_count(remote: RemoteRepo, ref: str | None = None) -> int:
    return len(remote.log(ref))


def message(remote: RemoteRepo, ref: str | None = None) -> str:
    """Full message of the newest commit on `ref` (default: the branch)."""
    return git("log", "-1", "--format=%B", ref or f"refs/heads/{remote.branch}", cwd=remote.bare)


def changed_files(remote: RemoteRepo, ref: str | None = None) -> list[str]:
    out = git("show", "--format=", "--name-only", ref or f"refs/heads/{remote.branch}", cwd=remote.bare)
    return out.splitlines()


def diff_lines(remote: RemoteRepo, ref: str | None = None) -> tuple[list[str], list[str]]:
    """Lines removed and added by the newest commit on `ref`."""
    out = git("show", "--format=", "--unified=0", ref or f"refs/heads/{remote.branch}", cwd=remote.bare)
    removed = [line[1:] for line in out.splitlines() if line.startswith("-") and not line.startswith("---")]
    added = [line[1:] for line in out.splitlines() if line.startswith("+") and not line.startswith("+++")]
    return removed, added


def git_bytes(remote: RemoteRepo, path: str, ref: str | None = None) -> bytes | None:
    """A file's exact bytes at `ref` (default: the branch), or None when it is not there."""
    done = subprocess.run(["git", "cat-file", "blob", f"{ref or 'refs/heads/' + remote.branch}:{path}"],
                          cwd=remote.bare, capture_output=True)
    return done.stdout if done.returncode == 0 else None


def git_definitions(remote: RemoteRepo, ref: str | None = None) -> dict[str, dict[str, Any]]:
    """Every job table in every `.kit` file under jobs/ at `ref`."""
    ref = ref or f"refs/heads/{remote.branch}"
    found: dict[str, dict[str, Any]] = {}
    for path in git("ls-tree", "-r", "--name-only", ref, "--", "jobs", cwd=remote.bare).splitlines():
        if path.endswith(".kit"):
            found.update(tomllib.loads(remote.show(path, ref)).get("job", {}))
    return found


def conflict_branches(remote: RemoteRepo, job: str | None = None) -> list[str]:
    prefix = "gitsync/conflict/" + (f"{job}-" if job else "")
    return [b for b in remote.branches() if b.startswith(prefix)]


class RemoteOutage:
    """Make the bare remote unreachable by moving it away, and bring it back."""

    def __init__(self, remote: RemoteRepo) -> None:
        self.remote = remote
        self.away = remote.bare.with_name(remote.bare.name + ".away")

    def __enter__(self) -> RemoteOutage:
        os.rename(self.remote.bare, self.away)
        return self

    def restore(self) -> None:
        if self.away.exists():
            os.rename(self.away, self.remote.bare)

    def __exit__(self, *exc: object) -> None:
        self.restore()


def hammer(calls: list[Callable[[], None]], workers: int = 8) -> None:
    """Run the calls on a thread pool; re-raise the first failure."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(workers) as pool:
        for future in [pool.submit(call) for call in calls]:
            future.result()


@pytest.fixture
def sites(tmp_path: Path) -> Iterator[Sites]:
    """Agent sites under tmp_path, all closed after the test (import it to use it)."""
    # trust_env=False: a proxy from the environment must not intercept 127.0.0.1.
    with httpx.Client(trust_env=False, timeout=10) as http:
        made = Sites(tmp_path / "sites", http)
        yield made
        made.close()
