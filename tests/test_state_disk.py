"""A full state disk: one line naming the file and the fix (not "damaged, move it away", which would throw
the outbox away for nothing), nothing recorded, and the next sync after space is freed succeeds.

The full disk is real: the child process may not grow any file past 16 KiB (RLIMIT_FSIZE; Python ignores
SIGXFSZ, so writes fail with EFBIG, which SQLite reports as a disk I/O error)."""

from __future__ import annotations

import resource
import subprocess
import sys
from pathlib import Path

import pytest
from pull_helpers import gitsync, isolate

from gitsync.testing.repos import RemoteRepo

SAMPLE_REPO = Path(__file__).resolve().parent.parent / "sample-repo"


def test_a_full_state_disk_is_one_line_and_the_next_sync_recovers(remote: RemoteRepo, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    isolate(monkeypatch, tmp_path)
    remote.seed_from(SAMPLE_REPO)
    args = ["sync", "--once", "--repo", remote.url, "--path", "jobs", "--target", str(tmp_path / "defs"),
            "--state-dir", str(tmp_path / "state")]
    assert gitsync(capsys, *args).code == 0
    remote.commit({"jobs/new-one.kit": '[job.new-one]\njob_type = "base"\ncommand = "/bin/echo"\n'})

    def small_disk() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (16384, 16384))

    full = subprocess.run([sys.executable, "-m", "gitsync", *args], preexec_fn=small_disk, capture_output=True,
                          text=True, timeout=120)

    assert full.returncode == 1
    assert full.stderr.strip().splitlines() == [
        f"gitsync: error: cannot write state database {tmp_path / 'state' / 'state.sqlite3'}: disk I/O error; free "
        "space on its disk (nothing was recorded; the next sync retries)"]
    again = gitsync(capsys, *args)
    assert again.code == 0, again.err
    assert (tmp_path / "defs" / "new-one.kit").is_file()
