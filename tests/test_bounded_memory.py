"""Memory bounded by sync.max_file_size: sizes are checked before content is read, content over the
limit never reaches the outbox, and a write the disk refuses leaves no partial temp file behind."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from pull_helpers import gitsync, isolate

from gitsync.capture import capture
from gitsync.cli import EXIT_REFUSED
from gitsync.gitrepo import GitMirror
from gitsync.model import Owned
from gitsync.outbox import Outbox
from gitsync.state import State
from gitsync.target_dir import DirectoryTarget, blob_id
from gitsync.testing.repos import RemoteRepo

SAMPLE_REPO = Path(__file__).resolve().parent.parent / "sample-repo"
BIG = 2 * 1024 * 1024


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    isolate(monkeypatch, tmp_path)


@pytest.fixture
def blobs_read(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every blob id whose content the mirror hands out."""
    read: list[str] = []
    original = GitMirror.read_blobs

    def spy(self: GitMirror, blobs: list[str]) -> Iterator[tuple[str, bytes]]:
        read.extend(blobs)
        return original(self, blobs)

    monkeypatch.setattr(GitMirror, "read_blobs", spy)
    yield read


def test_a_blob_over_the_size_limit_is_judged_by_its_size_and_never_read(
        remote: RemoteRepo, tmp_path: Path, capsys: pytest.CaptureFixture[str], blobs_read: list[str]) -> None:
    remote.seed_from(SAMPLE_REPO)
    huge = b'[job.huge]\njob_type = "base"\ncommand = "/bin/echo"\n# ' + b"x" * BIG + b"\n"
    remote.commit({"jobs/huge.kit": huge})

    ran = gitsync(capsys, "sync", "--once", "--repo", remote.url, "--path", "jobs", "--target",
                  str(tmp_path / "defs"), "--state-dir", str(tmp_path / "state"))

    assert ran.code == EXIT_REFUSED
    assert f"jobs/huge.kit:1:1: error: file is {len(huge)} bytes, over the 1048576-byte limit" in ran.err
    assert blob_id(huge) not in blobs_read
    assert blobs_read, "the other definitions were read as usual"


def test_a_local_file_over_the_size_limit_never_reaches_the_outbox(tmp_path: Path) -> None:
    state = State(tmp_path / "state")
    outbox = Outbox(state)
    target = DirectoryTarget(tmp_path / "defs", max_file_size=4096)
    target.ensure()
    small = b'[job.a]\njob_type = "base"\ncommand = "/bin/echo"\n'
    (target.directory / "a.kit").write_bytes(small)
    state.record_apply(tree=None, owned={"a.kit": Owned("jobs/a.kit", blob_id(small), ("a",), target.stat("a.kit"))},
                       meta={})
    capture(target, state, outbox)  # takes the baseline: nothing changed yet
    (target.directory / "a.kit").write_bytes(small + b"# " + b"x" * BIG + b"\n")  # valid TOML, just huge

    captured = capture(target, state, outbox)

    assert captured == []
    assert outbox.entries() == []
    assert "a.kit" in state.get("unreadable_local", {})
    state.close()


def test_a_write_the_disk_refuses_leaves_no_partial_temp_file(tmp_path: Path) -> None:
    # A real EFBIG: the child process may not write files over 64 KiB (RLIMIT_FSIZE; Python ignores SIGXFSZ).
    script = textwrap.dedent(f"""
        import resource
        from pathlib import Path
        from gitsync.target_dir import DirectoryTarget
        target = DirectoryTarget(Path({str(tmp_path / "defs")!r}))
        target.ensure()
        resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))
        try:
            target.write_many([("small.kit", b"x" * 100), ("big.kit", b"x" * 200000)], {{}})
        except OSError as exc:
            print("refused", exc.errno)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)

    assert done.stdout.strip() == "refused 27", done.stderr  # EFBIG
    assert sorted(p.name for p in (tmp_path / "defs").iterdir()) == []
