"""Pinned git identity and an isolated HOME for every test, plus the common repo fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gitsync.testing.repos import RemoteRepo

SAMPLE_REPO = Path(__file__).resolve().parent.parent / "sample-repo"


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """No test may read or write the real home directory or inherit the runner's git setup."""
    home = tmp_path_factory.mktemp("home")
    (home / ".gitconfig").write_text("[user]\n\tname = Test Author\n\temail = author@example.com\n"
                                     "[init]\n\tdefaultBranch = main\n[protocol \"file\"]\n\tallow = always\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "XDG_CONFIG_HOME", "GITSYNC_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    yield home


@pytest.fixture
def remote(tmp_path: Path) -> RemoteRepo:
    """An empty bare remote and a work clone."""
    return RemoteRepo(tmp_path / "repo")


@pytest.fixture
def sample_remote(remote: RemoteRepo) -> RemoteRepo:
    """A remote holding the sample definitions under jobs/."""
    remote.seed_from(SAMPLE_REPO)
    return remote
