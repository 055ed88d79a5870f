"""First-run polish: `gitsync init` mistakes give one line, and `--log-format json` gives one JSON object per
log line (parsed back here, as a log collector would)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pull_helpers import gitsync, isolate

from gitsync.testing.repos import RemoteRepo


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    isolate(monkeypatch, tmp_path)


def test_init_into_a_missing_folder_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ran = gitsync(capsys, "init", str(tmp_path / "nowhere" / "gitsync.toml"))
    assert ran.code == 1
    assert ran.err.count("\n") == 1 and "does not exist" in ran.err and "mkdir -p" in ran.err


def test_init_onto_a_directory_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for extra in ((), ("--force",)):
        ran = gitsync(capsys, "init", str(tmp_path), *extra)
        assert ran.code == 1
        assert ran.err.count("\n") == 1 and "is a directory" in ran.err
    assert gitsync(capsys, "init", str(tmp_path / "gitsync.toml")).code == 0


def test_log_format_json_gives_one_object_per_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GITSYNC_")}
    done = subprocess.run([sys.executable, "-m", "gitsync", "--log-format", "json", "sync", "--once", "--repo",
                           "https://user:s3cr3t-token@127.0.0.1:1/nothing.git", "--target", str(tmp_path / "defs"),
                           "--state-dir", str(tmp_path / "state")], capture_output=True, text=True, env=env,
                          timeout=60, cwd=tmp_path)
    assert done.returncode != 0
    logged = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert logged, done.stderr
    for entry in logged:
        assert set(entry) >= {"time", "level", "logger", "message"}
    assert any(e["level"] == "error" and e["logger"].startswith("gitsync") for e in logged)
    assert "s3cr3t-token" not in done.stderr


def on_terminal(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    """Run with stderr on a fresh pseudo-terminal (as a person at a shell has it); stdout stays a pipe."""
    import pty
    import select

    master, slave = pty.openpty()
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave, env=env,
                               cwd=cwd)
    os.close(slave)
    seen = bytearray()
    while True:
        ready, _, _ = select.select([master], [], [], 60)
        if not ready:
            break
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the process closed its end
            break
        if not data:
            break
        seen += data
    os.close(master)
    out = process.stdout.read().decode() if process.stdout else ""
    return process.wait(60), out, seen.decode(errors="replace")


@pytest.fixture
def terminal_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GITSYNC_")}
    return {**env, "GITSYNC_PROGRESS_AFTER": "0", "TERM": "xterm"}


def test_validate_shows_progress_on_a_terminal_and_not_in_a_pipe(tmp_path: Path,
                                                                  terminal_env: dict[str, str]) -> None:
    sample = Path(__file__).resolve().parent.parent / "sample-repo"
    code, out, tty = on_terminal([sys.executable, "-m", "gitsync", "validate", str(sample)], terminal_env, tmp_path)
    assert code == 0 and "all valid" in out
    files = len(list(sample.rglob("*.kit")))
    assert re.search(rf"gitsync: check(ed|ing the set of definitions) {files} \(\d+ s\)", tty), tty
    assert tty.endswith("\r\x1b[K")  # drawn, then erased
    assert "gitsync: checked" not in out
    piped = subprocess.run([sys.executable, "-m", "gitsync", "validate", str(sample)], capture_output=True,
                           text=True, env=terminal_env, cwd=tmp_path, timeout=60)
    assert piped.returncode == 0 and "gitsync:" not in piped.stderr


def test_sync_once_shows_progress_on_a_terminal(sample_remote: RemoteRepo, tmp_path: Path,
                                                terminal_env: dict[str, str]) -> None:
    code, _, tty = on_terminal([sys.executable, "-m", "gitsync", "sync", "--once", "--repo", sample_remote.url,
                                "--path", "jobs", "--target", str(tmp_path / "defs"), "--state-dir",
                                str(tmp_path / "state")], terminal_env, tmp_path)
    assert code == 0, tty
    assert "gitsync: " in tty and tty.endswith("\r\x1b[K")
    assert any(phase in tty for phase in ("fetching main", "validating", "writing"))
