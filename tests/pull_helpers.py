"""Small helpers shared by the pull-sync, agent, validate and config tests."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from gitsync.agent import Agent
from gitsync.cli import main
from gitsync.testing.waiting import wait_until

#: `path:line:col: severity: message — fix`, the one shape every finding is printed in.
PROBLEM_LINE = re.compile(r"^(?P<path>.+?):(?P<line>\d+):(?P<col>\d+): (?P<severity>error|warning): "
                          r"(?P<message>.+) — (?P<fix>.+)$")

SAMPLE_TARGETS = ("asset-validate.kit", "create-render.kit", "gpu-checks.kit", "hello-world.kit",
                  "render-k8s.kit", "usd-render.kit", "win-kit-batch.kit")
#: usd-render.kit's ${job}/exts companion folder, synced beside it.
SAMPLE_COMPANION_FILES = ("exts/omni.services.render/config/extension.toml",
                          "exts/omni.services.render/omni/services/render/__init__.py")


def kit(key: str, *, command: str = "/bin/echo", args: tuple[str, ...] = ("hello",), extra: str = "") -> str:
    """A small valid definition file with one job."""
    quoted = ", ".join(f'"{a}"' for a in args)
    return (f'[job.{key}]\njob_type = "base"\nname = "{key}"\ncommand = "{command}"\nargs = [{quoted}]\n'
            + extra)


@dataclass
class Ran:
    code: int
    out: str
    err: str


def gitsync(capsys: pytest.CaptureFixture[str], *argv: str) -> Ran:
    """Run `gitsync ARGV` in-process; flush what earlier calls printed first."""
    capsys.readouterr()
    code = main(list(argv))
    captured = capsys.readouterr()
    return Ran(code, captured.out, captured.err)


def isolate(monkeypatch: pytest.MonkeyPatch, cwd: Path) -> None:
    """Run in `cwd` (no stray ./gitsync.toml) with no GITSYNC_* variable from the runner's environment."""
    monkeypatch.chdir(cwd)
    for name in [n for n in os.environ if n.startswith("GITSYNC_")]:
        monkeypatch.delenv(name)


poll_until = wait_until


@dataclass(frozen=True)
class FileMark:
    ino: int
    mtime_ns: int
    data: bytes


def snapshot(directory: Path) -> dict[str, FileMark]:
    """Every file directly in `directory` (not the companion folders beside them), with what shows whether it
    was rewritten."""
    marks = {}
    for entry in sorted(os.listdir(directory)):
        if (directory / entry).is_dir():
            continue
        st = os.stat(directory / entry)
        marks[entry] = FileMark(st.st_ino, st.st_mtime_ns, (directory / entry).read_bytes())
    return marks


def kit_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".kit")) if directory.is_dir() else []


RAM_DISK = Path("/dev/shm")


@contextmanager
def work_dir(fallback: Path) -> Iterator[Path]:
    """A fresh folder on tmpfs when the machine has one, else `fallback`.

    Every sync fsyncs each file it writes, the directory and several SQLite commits, and git fsyncs
    its packs; on the runner's disk that is most of the suite's time (measured: 35 s against 15 s).
    tmpfs is still a real filesystem: atomic rename, inode numbers and nanosecond mtimes behave the same.
    """
    if not (RAM_DISK.is_dir() and os.access(RAM_DISK, os.W_OK)):
        yield fallback
        return
    path = Path(tempfile.mkdtemp(prefix="gitsync-test-", dir=RAM_DISK))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(name="tmp_path")
def ram_tmp_path(tmp_path: Path) -> Iterator[Path]:
    """Shadows pytest's tmp_path (and so the remote fixtures' folder) with one on tmpfs: see work_dir.

    Only modules that import it (`from pull_helpers import isolated, ram_tmp_path`) get it; the rest of
    the suite keeps pytest's own tmp_path.
    """
    with work_dir(tmp_path) as path:
        yield path


@pytest.fixture(name="isolated", autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Autouse in the modules that import it: each test runs in its tmp_path with no GITSYNC_* variable."""
    isolate(monkeypatch, tmp_path)


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    """An HTTP client for the agents' endpoints (import it to use it)."""
    # trust_env=False: a proxy from the environment must not intercept 127.0.0.1.
    with httpx.Client(trust_env=False, timeout=10) as client:
        yield client


def url(agent: Agent, path: str) -> str:
    """`path` on a started agent's HTTP server."""
    return f"http://127.0.0.1:{agent.server_port}{path}"


def stop_agents(running: list[Agent]) -> None:
    """Stop the agents a test started and did not stop itself (start_agent fixtures' teardown)."""
    for agent in running:
        if not agent._stop.is_set():
            agent.stop()
