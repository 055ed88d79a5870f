"""gitsync as a real process next to a real jobs service and a real bare remote, killed at exact points.

`GITSYNC_FAULT_POINT=<point>:<n>` (see gitsync/faults.py) makes the `gitsync run` process SIGKILL
itself the n-th time it passes <point>. A trial starts it with a point, drives it (saves through
the jobs service, commits in git, merges pull requests) until it dies, restarts it without one,
lets everything settle and then checks the invariants of issue 7:

- the directory holds exactly the definitions of the applied commit, which is the branch head;
- every save reached git once and in order (no value reappears after a later one);
- no conflict branch exists unless a real concurrent change was made.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from pushback_support import SAMPLE_REPO, JobsService

from gitsync.defset import is_definition_path, target_name
from gitsync.testing.forge_standin import GitHubStandin, RunningStandin
from gitsync.testing.repos import RemoteRepo, git
from gitsync.testing.waiting import wait_until

TIMEOUT = 60.0
SAMPLE_HELLO = (SAMPLE_REPO / "jobs/hello-world.kit").read_text(encoding="utf-8")
FORGE_TOKEN_ENV = "GITSYNC_TEST_FORGE_TOKEN"


def slow_receive(remote: RemoteRepo, marker_dir: Path) -> None:
    """A `pre-receive` hook that, while `marker_dir/slow` exists, notes that a push is being received and
    sleeps 2 s, as a push over a slow network would be in flight."""
    hook = remote.bare / "hooks" / "pre-receive"
    hook.write_text(f"""#!/bin/sh
cat > /dev/null
if [ -f '{marker_dir}/slow' ]; then
    touch '{marker_dir}/receiving'
    sleep 2
fi
exit 0
""")
    hook.chmod(0o755)


@dataclass
class Farm:
    """One site: the jobs service over a job directory, and `gitsync run` on it as a child process."""

    root: Path
    remote: RemoteRepo
    http: httpx.Client
    mode: str = "direct"
    forge_url: str = ""
    jobs: JobsService = field(init=False)
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def __post_init__(self) -> None:
        self.jobs = JobsService(self.root / "job-definitions", self.http)
        self.state_dir = self.root / "state"
        self.marker_dir = self.root / "markers"
        self.marker_dir.mkdir(parents=True, exist_ok=True)

    @property
    def directory(self) -> Path:
        return self.jobs.directory

    def env(self, fault: str | None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GITSYNC_")}
        env.update({"GITSYNC_REPO_URL": self.remote.url, "GITSYNC_REPO_PATH": "jobs",
                    "GITSYNC_TARGET_DIRECTORY": str(self.directory), "GITSYNC_STATE_DIR": str(self.state_dir),
                    "GITSYNC_SYNC_INTERVAL": "0.5", "GITSYNC_PUSH_DEBOUNCE": "0.2",
                    "GITSYNC_PUSH_MAX_BACKOFF": "1", "GITSYNC_PUSH_MODE": self.mode,
                    "GITSYNC_SERVER_LISTEN": "127.0.0.1:0"})
        if self.mode == "pull-request":
            env.update({"GITSYNC_PUSH_FORGE_API_URL": self.forge_url, "GITSYNC_PUSH_FORGE_REPOSITORY": "acme/jobs",
                        "GITSYNC_PUSH_FORGE_TOKEN_ENV": FORGE_TOKEN_ENV,
                        FORGE_TOKEN_ENV: os.environ[FORGE_TOKEN_ENV]})
        if fault:
            env["GITSYNC_FAULT_POINT"] = fault
        return env

    def start(self, fault: str | None = None) -> None:
        assert self.process is None or self.process.poll() is not None
        self.starts += 1
        log = (self.root / f"gitsync-{self.starts}.log").open("wb")
        self.process = subprocess.Popen([sys.executable, "-m", "gitsync", "run"], env=self.env(fault),
                                        stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def died(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    def wait_killed(self, timeout: float = TIMEOUT) -> None:
        assert self.process is not None
        self.process.wait(timeout)
        assert self.process.returncode == -signal.SIGKILL, (self.process.returncode, self.log())

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> float:
        """SIGTERM; returns how long the process took to exit (it must exit 0)."""
        assert self.process is not None
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(35)
        assert self.process.returncode == 0, (self.process.returncode, self.log())
        return time.monotonic() - started

    def close(self) -> None:
        if self.alive():
            assert self.process is not None
            self.process.kill()
            self.process.wait(10)
        self.jobs.stop()

    def log(self) -> str:
        return "\n".join((self.root / f"gitsync-{n}.log").read_text(errors="replace")[-3000:]
                         for n in range(1, self.starts + 1))

    # -- observing ---------------------------------------------------------------------------------
    def _db(self) -> Any:
        path = self.state_dir / "state.sqlite3"
        if not path.exists():
            return None
        return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)

    def meta(self, key: str) -> Any:
        import json

        db = self._db()
        if db is None:
            return None
        try:
            row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        except sqlite3.OperationalError:
            return None
        finally:
            db.close()
        return json.loads(row[0]) if row else None

    def outbox_length(self) -> int:
        db = self._db()
        if db is None:
            return 0
        try:
            return int(db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])
        except sqlite3.OperationalError:
            return 0
        finally:
            db.close()

    def settled(self) -> bool:
        """Nothing on its way in either direction: the outbox is empty and the branch head is applied."""
        return self.alive() and self.outbox_length() == 0 and self.meta("applied_commit") == self.remote.remote_head() \
            and self.meta("last_result") in ("synced", "noop")

    def wait_settled(self, timeout: float = TIMEOUT) -> None:
        """Wait for quiescence: nothing in the outbox, the head applied and the directory holding it. Not reaching
        it within the timeout is the invariant failing (the directory never comes back to one commit)."""
        def quiet() -> bool:
            return self.died() or (self.settled() and self.kit_files() == git_files(self.remote))

        try:
            wait_until(quiet, timeout, "gitsync to settle (outbox empty, head applied, directory = head)")
        except AssertionError:
            assert self.kit_files() == git_files(self.remote), "the directory is not exactly the applied commit"
            raise
        assert self.alive(), self.log()

    def save(self, job: str, value: str) -> None:
        self.jobs.change(job, args=[value])

    def kit_files(self) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in sorted(self.directory.iterdir())
                if p.name.endswith(".kit") and not p.name.startswith(".")}


def git_files(remote: RemoteRepo, ref: str = "refs/heads/main") -> dict[str, bytes]:
    """The definition files of a commit, by the name they have in the job directory."""
    found: dict[str, bytes] = {}
    for path in git("ls-tree", "-r", "--name-only", ref, "--", "jobs", cwd=remote.bare).splitlines():
        if is_definition_path(path):
            found[target_name(path)] = subprocess.run(["git", "cat-file", "blob", f"{ref}:{path}"], cwd=remote.bare,
                                                      capture_output=True, check=True).stdout
    return found


def arg_history(remote: RemoteRepo, job: str, path: str, ref: str = "refs/heads/main") -> list[str]:
    """The first `args` value of a job in each first-parent commit of the branch, oldest first, with runs of the
    same value collapsed: the order in which saves reached git."""
    values: list[str] = []
    for sha in git("rev-list", "--first-parent", "--reverse", ref, cwd=remote.bare).split():
        done = subprocess.run(["git", "cat-file", "blob", f"{sha}:{path}"], cwd=remote.bare, capture_output=True)
        if done.returncode != 0:
            continue
        table = tomllib.loads(done.stdout.decode()).get("job", {}).get(job, {})
        value = (table.get("args") or [""])[0]
        if not values or values[-1] != value:
            values.append(value)
    return values


def conflict_branches(remote: RemoteRepo) -> list[str]:
    return [b for b in remote.branches() if b.startswith("gitsync/conflict/")]


def check_invariants(farm: Farm, saves: list[str], *, job: str = "hello-world",
                     path: str = "jobs/hello-world.kit", concurrent: bool = False) -> None:
    """The invariants every trial ends with (see the module docstring)."""
    farm.wait_settled()
    assert farm.kit_files() == git_files(farm.remote), "the directory is not exactly the applied commit"
    history = [v for v in arg_history(farm.remote, job, path) if v in saves]
    assert len(history) == len(set(history)), f"a save reached git more than once or was reverted: {history}"
    assert history == [s for s in saves if s in history], f"saves reached git out of order: {history}"
    assert history and history[-1] == saves[-1], f"the last save {saves[-1]!r} is not what git holds: {history}"
    if not concurrent:
        assert conflict_branches(farm.remote) == [], "a conflict branch without a concurrent change"


@contextmanager
def forge() -> Iterator[tuple[GitHubStandin, str]]:
    token = "ghp_faults0123456789"
    os.environ[FORGE_TOKEN_ENV] = token
    standin = GitHubStandin(token=token, repository="acme/jobs")
    try:
        with RunningStandin(standin.app) as running:
            yield standin, running.url
    finally:
        os.environ.pop(FORGE_TOKEN_ENV, None)


def until_dead_or(farm: Farm, condition: Callable[[], Any], what: str, timeout: float = TIMEOUT) -> bool:
    """Wait until the process died (True) or `condition` holds (False)."""
    state: dict[str, bool] = {}

    def check() -> bool:
        if farm.died():
            state["dead"] = True
            return True
        return bool(condition())

    wait_until(check, timeout, what)
    return state.get("dead", False)
