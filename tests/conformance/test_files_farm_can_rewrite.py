"""Files gitsync writes can be rewritten in place by Farm's jobs service running as another user.

Follows ``nv/svc/farm/services/jobs/facilities/store/directory.py`` (``save_job`` and
``_remove_job_definition_from_file`` open the existing file for writing, in place) and Farm's
container image, which runs as uid 1000: in a shared job directory the files must be writable by
that user through a shared group. The other user is a real process with another uid (numeric ids,
nothing added to /etc/passwd), so this needs root; CI runs as root.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from gitsync.cli import main
from gitsync.testing.repos import RemoteRepo

FARM_UID = 54_321  # stands for Farm's uid 1000, which may be a real user on this machine
SHARED_GID = 54_322  # the fsGroup both containers share

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a process as another user")


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A job directory another user can reach (pytest's tmp_path is private to root)."""
    root = Path(tempfile.mkdtemp(prefix="gitsync-shared-"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def rewrite_as_farm(path: Path) -> subprocess.CompletedProcess[str]:
    """Farm's in-place rewrite (truncate and write), as the Farm user in the shared group."""
    # /bin/sh, not this Python: the interpreter may live under /root, which the other user cannot reach.
    script = """printf '[job.hello-world]\\njob_type = "base"\\ncommand = "x"\\n' > "$1" """
    return subprocess.run(["/bin/sh", "-c", script, "sh", str(path)], user=FARM_UID, group=FARM_UID,
                          extra_groups=[SHARED_GID], capture_output=True, text=True, timeout=60, check=False)


def sync(remote: RemoteRepo, target: Path, state: Path, *flags: str) -> None:
    assert main(["sync", "--once", "--repo", remote.url, "--path", "jobs", "--target", str(target),
                 "--state-dir", str(state), *flags]) == 0


def test_a_file_gitsync_wrote_is_rewritten_in_place_by_another_user_of_the_group(
        sample_remote: RemoteRepo, shared_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITSYNC_TARGET_GROUP", str(SHARED_GID))
    target = shared_dir / "job-definitions"
    sync(sample_remote, target, tmp_path / "state")
    written = target / "hello-world.kit"

    st = written.stat()
    assert (stat.S_IMODE(st.st_mode), st.st_gid) == (0o664, SHARED_GID)
    done = rewrite_as_farm(written)

    assert done.returncode == 0, done.stderr
    assert 'command = "x"' in written.read_text()


def test_with_the_old_mode_0644_farm_cannot_rewrite_the_file(
        sample_remote: RemoteRepo, shared_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITSYNC_TARGET_GROUP", str(SHARED_GID))
    monkeypatch.setenv("GITSYNC_TARGET_FILE_MODE", "0644")
    target = shared_dir / "job-definitions"
    sync(sample_remote, target, tmp_path / "state")

    done = rewrite_as_farm(target / "hello-world.kit")

    assert done.returncode != 0 and "Permission denied" in done.stderr
