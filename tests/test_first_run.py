"""First-run polish: `gitsync init` mistakes give one line, and `--log-format json` gives one JSON object per
log line (parsed back here, as a log collector would)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pull_helpers import gitsync, isolate


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
