"""The property the whole project exists for: after a sync, the jobs service serves exactly the commit.

Real git remote, real `gitsync sync --once`, the Farm-compatible jobs service over real HTTP.
Definitions are compared after Farm's own defaults, ignoring the fields the store fills in.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import toml

from gitsync import farm
from gitsync.cli import EXIT_REFUSED, main
from gitsync.jobs_service.config import JobsServiceConfig
from gitsync.jobs_service.server import RunningJobsService
from gitsync.secrets import Secret
from gitsync.testing.repos import RemoteRepo, git

STORE_FILLED = ("job_spec_path", "extension_paths", "unresolved_command_path")


@pytest.fixture
def jobs_url(tmp_path: Path) -> Iterator[str]:
    config = JobsServiceConfig(save_location=tmp_path / "job-definitions", api_key=Secret("conformance-key"))
    with RunningJobsService(config, host="127.0.0.1", port=0) as service:
        yield service.url


def served(jobs_url: str) -> dict[str, dict[str, Any]]:
    loaded = httpx.get(f"{jobs_url}/load", timeout=10, trust_env=False).json()
    return {name: {k: v for k, v in d.items() if k not in STORE_FILLED} for name, d in loaded.items()}


def in_commit(remote: RemoteRepo) -> dict[str, dict[str, Any]]:
    """Every definition under jobs/ in the remote's head, as Farm's store would hand it out."""
    expected: dict[str, dict[str, Any]] = {}
    files = git("ls-tree", "-r", "--name-only", "refs/heads/main", "--", "jobs", cwd=remote.bare).splitlines()
    for path in (f for f in files if f.endswith(".kit")):
        for key, definition in toml.loads(remote.show(path)).get("job", {}).items():
            full = farm.as_job_definition(key, dict(definition))
            expected[key] = {k: v for k, v in full.items() if k not in STORE_FILLED}
    return expected


def sync_once(remote: RemoteRepo, tmp_path: Path) -> None:
    code = main(["sync", "--once", "--repo", remote.url, "--path", "jobs", "--target",
                 str(tmp_path / "job-definitions"), "--state-dir", str(tmp_path / "state")])
    assert code == 0


def test_after_a_sync_load_serves_exactly_the_commits_definitions(sample_remote: RemoteRepo, tmp_path: Path,
                                                                  jobs_url: str) -> None:
    sync_once(sample_remote, tmp_path)

    assert served(jobs_url) == in_commit(sample_remote)
    assert len(served(jobs_url)) == 8


def test_after_changes_in_git_load_still_serves_exactly_the_commit(sample_remote: RemoteRepo, tmp_path: Path,
                                                                   jobs_url: str) -> None:
    sync_once(sample_remote, tmp_path)
    hello = sample_remote.show("jobs/hello-world.kit").replace("synced by gitsync!", "second version")
    sample_remote.commit({
        "jobs/hello-world.kit": hello,                       # modified
        "jobs/ops/gpu-checks.kit": None,                     # two definitions removed
        "jobs/render/thumbnail.kit": '[job.thumbnail]\nname = "thumbnail"\njob_type = "base"\n'
                                     'command = "/usr/bin/convert"\nargs = ["-thumbnail", "256x256"]\n',
    }, "change, remove and add definitions")

    sync_once(sample_remote, tmp_path)

    now = served(jobs_url)
    assert now == in_commit(sample_remote)
    assert now["hello-world"]["args"] == ["Hello from Omniverse Farm, second version"]
    assert "check-gpu" not in now and "thumbnail" in now


def test_an_invalid_commit_leaves_load_serving_the_last_good_one(sample_remote: RemoteRepo, tmp_path: Path,
                                                                 jobs_url: str) -> None:
    sync_once(sample_remote, tmp_path)
    good = served(jobs_url)
    sample_remote.commit({"jobs/hello-world.kit": '[job.hello-world]\njob_type = "base"\n'}, "lose the command")

    code = main(["sync", "--once", "--repo", sample_remote.url, "--path", "jobs", "--target",
                 str(tmp_path / "job-definitions"), "--state-dir", str(tmp_path / "state")])

    assert code == EXIT_REFUSED
    assert served(jobs_url) == good
