"""One rule for definition file names (gitsync/kitname.py), as a sync applies it: a name Farm would load
but gitsync cannot write safely is refused with one line, never ignored and never half-written."""

from __future__ import annotations

from pathlib import Path

import pytest
from pull_helpers import gitsync, kit

from gitsync import kitname
from gitsync.cli import EXIT_REFUSED
from gitsync.testing.repos import RemoteRepo

LONG = "x" * 242 + ".kit"  # 246 characters: fine on disk, too long once ".gitsync-tmp-" and ".tmp" are added


def sync(capsys: pytest.CaptureFixture[str], remote: RemoteRepo, tmp_path: Path, *flags: str) -> tuple[int, str]:
    ran = gitsync(capsys, "sync", "--once", "--repo", remote.url, "--path", "jobs", "--target",
                  str(tmp_path / "target"), "--state-dir", str(tmp_path / "state"), *flags)
    return ran.code, ran.out + ran.err


def test_a_file_name_too_long_for_the_temp_name_is_refused_with_one_line(
        capsys: pytest.CaptureFixture[str], remote: RemoteRepo, tmp_path: Path) -> None:
    remote.commit({"jobs/good.kit": kit("good"), f"jobs/{LONG}": kit("long-file")})

    code, out = sync(capsys, remote, tmp_path)

    assert code == EXIT_REFUSED
    assert any(LONG in line and "temp prefix and suffix" in line for line in out.splitlines()), out
    assert not (tmp_path / "target" / LONG).exists()
    assert not list((tmp_path / "target").glob(".gitsync-tmp-*"))


def test_with_on_invalid_skip_the_other_files_are_applied_and_later_commits_too(
        capsys: pytest.CaptureFixture[str], remote: RemoteRepo, tmp_path: Path) -> None:
    remote.commit({"jobs/good.kit": kit("good"), f"jobs/{LONG}": kit("long-file")})
    sync(capsys, remote, tmp_path, "--on-invalid", "skip")
    remote.commit({"jobs/later.kit": kit("later")})

    sync(capsys, remote, tmp_path, "--on-invalid", "skip")

    assert sorted(p.name for p in (tmp_path / "target").iterdir()) == ["good.kit", "later.kit"]


@pytest.mark.parametrize("name, rule", [
    ("a.kit", True), (".a.kit", False), ("a.kit.tmp", False), (".gitsync-tmp-a.kit.tmp", False),
    ("A.KIT", False), (".kit", False), ("a\nb.kit", False), (LONG, False),
])
def test_one_rule_decides_what_gitsync_manages(name: str, rule: bool) -> None:
    assert kitname.is_definition_name(name) is rule


@pytest.mark.parametrize("name, loads", [("a.kit", True), (".a.kit", True), (".kit", False), ("a.KIT", False)])
def test_farm_loads_hidden_files_but_not_a_bare_suffix(name: str, loads: bool) -> None:
    # DirectoryJobStore._load_job_configurations: os.path.splitext(path)[1] == ".kit"
    assert kitname.farm_loads(name) is loads
