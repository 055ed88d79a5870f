"""`sync --once` has no watcher: it learns whether the job directory changed from a fingerprint of every
entry's stat instead of comparing every file with the manifest, and must still report every local change.

Each test first lets two runs record a look (the second one fingerprints the directory), then changes the
directory the way a person or Farm would, and checks that the next `sync --once` says so (exit code table
in the README).
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from pull_helpers import Ran, gitsync, kit
from pull_helpers import isolated as isolated  # fixtures by import: tmpfs tmp_path, cwd + env isolation
from pull_helpers import ram_tmp_path as ram_tmp_path

from gitsync.model import Owned
from gitsync.state import State
from gitsync.sync import LOOK_KEY
from gitsync.testing.repos import RemoteRepo

DRIFT, HELD, REFUSED = 5, 6, 7


def files() -> dict[str, str]:
    return {f"jobs/job-{i}.kit": kit(f"job-{i}", args=(f"run-{i}",)) for i in range(6)}


@pytest.fixture
def remote(tmp_path: Path) -> RemoteRepo:
    repo = RemoteRepo(tmp_path / "remote")
    repo.commit(files())
    return repo


def once(capsys: pytest.CaptureFixture[str], remote: RemoteRepo, root: Path, *extra: str) -> Ran:
    return gitsync(capsys, "sync", "--once", "--repo", remote.url, "--path", "jobs", "--target",
                   str(root / "target"), "--state-dir", str(root / "state"), *extra)


def look(root: Path) -> object:
    with sqlite3.connect(root / "state" / "state.sqlite3") as db:
        row = db.execute("SELECT value FROM meta WHERE key = ?", (LOOK_KEY,)).fetchone()
    return row[0] if row else None


def looked_at_quietly(capsys: pytest.CaptureFixture[str], remote: RemoteRepo, root: Path) -> None:
    """The first sync writes everything; the second fingerprints the directory; a commit then syncs on the look."""
    assert once(capsys, remote, root).code == 0
    assert once(capsys, remote, root).code == 0
    assert look(root) is not None
    remote.commit({"jobs/job-5.kit": kit("job-5", args=("changed",))})
    assert once(capsys, remote, root).code == 0
    assert b"changed" in (root / "target" / "job-5.kit").read_bytes()
    assert look(root) is not None, "an apply on the look keeps a look for the next run"


def later(path: Path) -> None:
    """Move the file's mtime a second on, as a later save would (a fast test can land in the same tick)."""
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def test_an_edit_in_place_of_the_same_size_is_reported_as_drift(
        capsys: pytest.CaptureFixture[str], remote: RemoteRepo, tmp_path: Path) -> None:
    looked_at_quietly(capsys, remote, tmp_path)
    target = tmp_path / "target" / "job-2.kit"
    with open(target, "r+b") as handle:  # Farm's /save rewrites the file in place: same inode, same folder
        handle.write(handle.read().replace(b"run-2", b"RUN-2"))
    later(target)

    ran = once(capsys, remote, tmp_path)
    assert ran.code == DRIFT
    assert "job-2.kit" in ran.err
    assert b"RUN-2" in target.read_bytes(), "drift is left in place"


def test_drift_is_reported_again_by_the_next_run_until_it_is_resolved(
        capsys: pytest.CaptureFixture[str], remote: RemoteRepo, tmp_path: Path) -> None:
    looked_at_quietly(capsys, remote, tmp_path)
    target = tmp_path / "target" / "job-1.kit"
    target.write_text(kit("job-1", args=("edited-here",)), encoding="utf-8")
    assert once(capsys, remote, tmp_path).code == DRIFT

    again = once(capsys, remote, tmp_path)  # nothing changed since: the look says "open", not "quiet"
    assert again.code == DRIFT and "job-1.kit" in again.err
    assert once(capsys, remote, tmp_path, "--force").code == 0
    assert b"run-1" in target.read_bytes()
    assert once(capsys, remote, tmp_path).code == 0


def test_drift_stays_reported_after_a_run_that_recorded_no_findings(
        capsys: pytest.CaptureFixture[str], remote: RemoteRepo, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    looked_at_quietly(capsys, remote, tmp_path)
    (tmp_path / "target" / "job-1.kit").write_text(kit("job-1", args=("edited-here",)), encoding="utf-8")
    assert once(capsys, remote, tmp_path).code == DRIFT
    signers = tmp_path / "allowed_signers"
    signers.write_text("", encoding="utf-8")
    monkeypatch.setenv("GITSYNC_SYNC_REQUIRE_SIGNED", "true")
    monkeypatch.setenv("GITSYNC_SYNC_ALLOWED_SIGNERS_FILE", str(signers))
    remote.commit({"jobs/job-5.kit": kit("job-5", args=("unsigned",))})
    assert once(capsys, remote, tmp_path).code == REFUSED  # refused before anything was planned: no findings
    monkeypatch.delenv("GITSYNC_SYNC_REQUIRE_SIGNED")

    ran = once(capsys, remote, tmp_path)  # the directory is as the drift run left it; the findings are gone
    assert ran.code == DRIFT and "job-1.kit" in ran.err


def test_a_new_file_a_deleted_one_and_a_rename_are_all_seen(
        capsys: pytest.CaptureFixture[str], remote: RemoteRepo, tmp_path: Path) -> None:
    looked_at_quietly(capsys, remote, tmp_path)
    target = tmp_path / "target"
    (target / "hand-made.kit").write_text(kit("hand-made"), encoding="utf-8")
    ran = once(capsys, remote, tmp_path)
    assert ran.code == 0 and "hand-made" not in ran.err  # a foreign file with its own job name is left alone
    assert (target / "hand-made.kit").exists()

    (target / "job-3.kit").unlink()
    ran = once(capsys, remote, tmp_path)
    assert ran.code == DRIFT and "job-3.kit" in ran.err, "a managed file deleted by hand is drift"
    assert not (target / "job-3.kit").exists()
    assert once(capsys, remote, tmp_path, "--force").code == 0
    assert (target / "job-3.kit").exists()

    (target / "job-4.kit").rename(target / "job-4-copy.kit")
    ran = once(capsys, remote, tmp_path)
    assert ran.code == HELD and "job-4.kit (held)" in ran.err, "the renamed copy now holds job-4's name"


def test_a_file_replaced_by_an_atomic_save_is_reported_as_drift(
        capsys: pytest.CaptureFixture[str], remote: RemoteRepo, tmp_path: Path) -> None:
    looked_at_quietly(capsys, remote, tmp_path)
    target = tmp_path / "target"
    (target / ".job-0.kit.swp").write_text(kit("job-0", args=("from-an-editor",)), encoding="utf-8")
    (target / ".job-0.kit.swp").rename(target / "job-0.kit")  # an editor's save: a new inode under the name
    ran = once(capsys, remote, tmp_path)
    assert ran.code == DRIFT and "job-0.kit" in ran.err


def test_any_write_to_the_manifest_or_the_foreign_files_drops_the_look(
        capsys: pytest.CaptureFixture[str], remote: RemoteRepo, tmp_path: Path) -> None:
    looked_at_quietly(capsys, remote, tmp_path)
    state = State(tmp_path / "state")
    try:
        state.record_apply(tree=None, owned={"job-0.kit": Owned("jobs/job-0.kit", "0" * 40, ("job-0",), "")},
                           meta={})
        assert look(tmp_path) is None
        assert once(capsys, remote, tmp_path).code == 0  # compared with the manifest as it is now
        assert look(tmp_path) is not None
        state.remember_foreign({"other.kit": ("1:2:3", "0" * 40, ("other",))})
        assert look(tmp_path) is None
    finally:
        state.close()


def test_the_full_scan_and_the_quick_look_count_every_entry_alike(tmp_path: Path) -> None:
    from gitsync.target_dir import DirectoryTarget, Fingerprint

    directory = tmp_path / "target"
    directory.mkdir()
    (directory / "a.kit").write_text(kit("a"), encoding="utf-8")
    (directory / "notes.txt").write_text("not a definition", encoding="utf-8")
    (directory / "folder.kit").mkdir()
    (directory / "gone.kit").symlink_to(directory / "nowhere")
    target = DirectoryTarget(directory)
    counted = Fingerprint()
    target.scan({}, counted)
    assert target.fingerprint() == counted.value

    (directory / "notes.txt").write_text("changed, and longer than before", encoding="utf-8")
    assert target.fingerprint() != counted.value, "any entry counts, not only definitions"
