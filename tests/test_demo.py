"""`gitsync demo`, the README's first command, run the way a new user runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from gitsync.testing.repos import git


def test_the_demo_shows_a_sync_both_ways_and_stops_cleanly(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "gitsync", "demo", "--no-wait", "--port", "0",
                           "--workspace", str(tmp_path)], capture_output=True, text=True, timeout=120)

    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "the jobs service serves 8 definitions" in out
    assert "demo-echo is in /load" in out
    assert "-args = [\"Hello from Omniverse Farm, synced by gitsync!\"]" in out
    assert "+args = [\"Hello from the demo: saved through jobs/save\"]" in out
    assert out.rstrip().endswith("Done.")
    assert "WARNING" not in done.stderr and "Traceback" not in done.stderr
    subjects = git("log", "--format=%s", "refs/heads/main", cwd=tmp_path / "definitions-repo" / "remote.git")
    assert subjects.splitlines()[0] == "Update hello-world from jobs/save"
    assert (tmp_path / "job-definitions" / "demo-echo.kit").is_file()
