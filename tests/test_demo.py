"""`gitsync demo`, the README's first command, run the way a new user runs it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from gitsync.testing.repos import git

ROOT = Path(__file__).resolve().parent.parent


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
    assert "refused: jobs/render/usd-render.kit:" in out and "/load serves usd-render unchanged" in out
    assert "curl -sS -X POST" in out and "/save" in out


def test_the_demo_runs_again_on_the_same_workspace(tmp_path: Path) -> None:
    for _ in range(2):
        done = subprocess.run([sys.executable, "-m", "gitsync", "demo", "--no-wait", "--port", "0",
                               "--workspace", str(tmp_path)], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr
    assert "from the last run" in done.stdout
    assert '+args = ["Hello from the demo: saved through jobs/save (run 2)"]' in done.stdout
    subjects = git("log", "--format=%s", "refs/heads/main", cwd=tmp_path / "definitions-repo" / "remote.git")
    assert subjects.splitlines().count("Update hello-world from jobs/save") == 2


def test_the_demo_works_from_a_non_editable_install(tmp_path: Path) -> None:
    """Built as a wheel and unpacked elsewhere, run from a folder with no sample-repo/ in sight."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for name in ("gitsync", "sample-repo"):
        shutil.copytree(ROOT / name, source / name, symlinks=True,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(wheels), str(source)], check=True, capture_output=True, timeout=300)
    installed = tmp_path / "site"
    with zipfile.ZipFile(next(wheels.glob("*.whl"))) as wheel:
        wheel.extractall(installed)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(installed)}
    done = subprocess.run([sys.executable, "-m", "gitsync", "demo", "--no-wait", "--port", "0", "--workspace",
                           str(tmp_path / "ws")], capture_output=True, text=True, timeout=120, cwd=elsewhere, env=env)
    assert done.returncode == 0, done.stderr
    assert "the jobs service serves 8 definitions" in done.stdout
    assert str(installed) in subprocess.run([sys.executable, "-c", "import gitsync; print(gitsync.__file__)"],
                                            capture_output=True, text=True, env=env, cwd=elsewhere).stdout


def test_the_printed_curl_saves_a_definition(tmp_path: Path) -> None:
    """The ready-to-paste command, run by a real shell and a real curl against the jobs service."""
    import httpx

    from gitsync.commands.demo import save_curl
    from gitsync.jobs_service.config import JobsServiceConfig
    from gitsync.jobs_service.server import RunningJobsService
    from gitsync.secrets import Secret

    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    config = JobsServiceConfig(save_location=tmp_path / "defs", api_key=Secret("demo-key-1234"))
    service = RunningJobsService(config, port=0).start()
    try:
        done = subprocess.run(["bash", "-c", save_curl(service.url, "demo-key-1234")], capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert "my-first-job" in httpx.get(f"{service.url}/load", trust_env=False).json()
    finally:
        service.stop()
