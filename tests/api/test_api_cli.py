"""`gitsync plan`, `sync --once` and `status` with `target.kind = "jobs-api"`, as a user runs them, against
the jobs service stand-in as its own process on a RedisJobStore (real redis-server)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gitsync.testing.repos import RemoteRepo

from .conftest import ServiceProcess, redis_store_lines, spawn_jobs_service
from .test_api_target import seed


@pytest.fixture
def redis_service(tmp_path: Path, redis_url: str) -> Iterator[ServiceProcess]:
    service = spawn_jobs_service(tmp_path / "farm", redis_store_lines(redis_url))
    yield service
    service.stop()


def gitsync(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GITSYNC_")}
    return subprocess.run([sys.executable, "-m", "gitsync", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def test_plan_sync_and_status_against_a_redis_backed_jobs_service(
        tmp_path: Path, remote: RemoteRepo, redis_service: ServiceProcess, key_file: Path) -> None:
    seed(remote)
    (tmp_path / "gitsync.toml").write_text(
        f'[repo]\nurl = "{remote.url}"\npath = "jobs"\n'
        f'[target]\nkind = "jobs-api"\nurl = "{redis_service.url}"\napi_key_file = "{key_file}"\n'
        f'[state]\ndir = "{tmp_path / "state"}"\n', encoding="utf-8")

    planned = gitsync("plan", cwd=tmp_path)
    assert planned.returncode == 4, planned.stderr
    assert [line.split()[:2] for line in planned.stdout.splitlines()[1:]] == [
        ["save", "check-gpu"], ["save", "hello"], ["save", "render"]]

    synced = gitsync("sync", "--once", cwd=tmp_path)
    assert synced.returncode == 0, synced.stderr
    loaded = httpx.get(f"{redis_service.url}/load", trust_env=False).json()
    assert set(loaded) == {"hello", "render", "check-gpu"}

    assert gitsync("plan", cwd=tmp_path).returncode == 0
    status = gitsync("status", cwd=tmp_path)
    assert status.returncode == 0 and "3 saved by gitsync" in status.stdout
    assert redis_service.url in status.stdout

    key_file.write_text("not-the-key-at-all")
    remote.commit({"jobs/hello.kit": None}, "drop hello")
    refused = gitsync("sync", "--once", cwd=tmp_path)
    assert refused.returncode == 1
    last = refused.stderr.splitlines()[-1]
    assert last.startswith("gitsync: error: ") and "HTTP 403" in last and "api_key" in last, refused.stderr
    assert "Traceback" not in refused.stderr and "httpx" not in refused.stderr
    assert "not-the-key-at-all" not in refused.stderr + refused.stdout
    assert "hello" in httpx.get(f"{redis_service.url}/load", trust_env=False).json()
