"""The jobs-api target end to end: a real git remote, gitsync, and the Farm-compatible jobs service on
its directory store and on its Redis store, over real HTTP."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from gitsync.api_plan import normalise
from gitsync.api_sync import ApiSyncer
from gitsync.testing.repos import RemoteRepo

from .conftest import API_KEY, Service

HELLO = '[job.hello]\njob_type = "base"\ncommand = "/bin/echo"\nargs = ["hi"]\n'
RENDER = ('# render job\n[job.render]\njob_type = "kit-service"\ncommand = "kit"\ntask_function = "render.run"\n'
          '[job.render.env]\nMODE = "fast"\n')
CHECK = '[job.check-gpu]\njob_type = "base"\ncommand = "nvidia-smi"\nheadless = false\n'


def seed(remote: RemoteRepo) -> None:
    remote.commit({"jobs/hello.kit": HELLO, "jobs/render/render.kit": RENDER, "jobs/ops/check.kit": CHECK},
                  "three definitions")


def test_initial_sync_saves_every_definition_with_farms_defaults(
        remote: RemoteRepo, service: Service, make_syncer: Callable[..., ApiSyncer]) -> None:
    seed(remote)
    syncer = make_syncer(remote.url, service.url)
    result = syncer.sync()
    assert result.result == "synced", result.message
    loaded = service.load()
    assert set(loaded) == {"hello", "render", "check-gpu"}
    assert loaded["render"]["env"] == {"MODE": "fast"}
    assert loaded["check-gpu"]["headless"] is False
    assert loaded["hello"]["args"] == ["hi"] and loaded["hello"]["success_return_codes"] == [0]
    assert sorted(result.written) == ["check-gpu", "hello", "render"]
    assert syncer.state.get("applied_commit") == remote.head()


def test_a_change_in_git_costs_one_load_and_one_save(
        remote: RemoteRepo, service: Service, make_syncer: Callable[..., ApiSyncer]) -> None:
    seed(remote)
    syncer = make_syncer(remote.url, service.url)
    assert syncer.sync().result == "synced"
    remote.commit({"jobs/hello.kit": HELLO.replace('"hi"', '"hello again"')}, "change hello")
    calls = syncer.target.client.calls
    calls.clear()
    result = syncer.sync()
    assert result.result == "synced" and result.written == ["hello"]
    assert dict(calls) == {"load": 1, "save": 1}
    assert service.load()["hello"]["args"] == ["hello again"]
    calls.clear()
    assert syncer.sync().result == "noop"
    assert dict(calls) == {"load": 1}


def test_a_delete_in_git_removes_only_what_gitsync_saved(
        remote: RemoteRepo, service: Service, make_syncer: Callable[..., ApiSyncer]) -> None:
    seed(remote)
    service.save({"name": "someone-elses", "job_type": "base", "command": "/bin/true"})
    syncer = make_syncer(remote.url, service.url)
    assert syncer.sync().result == "synced"
    remote.commit({"jobs/ops/check.kit": None}, "drop check-gpu")
    result = syncer.sync()
    assert result.result == "synced" and result.removed == ["check-gpu"]
    assert set(service.load()) == {"hello", "render", "someone-elses"}


def test_prune_all_removes_every_definition_git_does_not_have(
        remote: RemoteRepo, service: Service, make_syncer: Callable[..., ApiSyncer]) -> None:
    seed(remote)
    service.save({"name": "someone-elses", "job_type": "base", "command": "/bin/true"})
    service.save({"name": "hello", "job_type": "base", "command": "/bin/false"})  # git's name, other content
    result = make_syncer(remote.url, service.url, prune="all").sync()
    assert result.result == "synced", result.message
    loaded = service.load()
    assert set(loaded) == {"hello", "render", "check-gpu"}
    assert loaded["hello"]["command"] == "/bin/echo"


def test_a_definition_gitsync_did_not_save_is_foreign_and_kept(
        remote: RemoteRepo, service: Service, make_syncer: Callable[..., ApiSyncer]) -> None:
    seed(remote)
    service.save({"name": "hello", "job_type": "base", "command": "/bin/false"})
    result = make_syncer(remote.url, service.url).sync()
    assert result.result == "partial"
    assert [(f.kind, f.target) for f in result.findings] == [("foreign", "hello")]
    assert service.load()["hello"]["command"] == "/bin/false"


def test_a_change_made_on_the_service_is_drift_left_alone_until_forced(
        remote: RemoteRepo, service: Service, make_syncer: Callable[..., ApiSyncer]) -> None:
    seed(remote)
    syncer = make_syncer(remote.url, service.url)
    assert syncer.sync().result == "synced"
    service.save({**normalise("hello", {"job_type": "base", "command": "/bin/echo"}), "args": ["local"]})
    remote.commit({"jobs/hello.kit": HELLO.replace('"hi"', '"from git"')}, "change hello in git too")
    result = syncer.sync()
    assert [(f.kind, f.target) for f in result.findings] == [("drift", "hello")]
    assert service.load()["hello"]["args"] == ["local"]
    assert syncer.sync(force=True).written == ["hello"]
    assert service.load()["hello"]["args"] == ["from git"]


def test_a_commit_with_an_invalid_definition_makes_no_call_that_changes_the_service(
        remote: RemoteRepo, service: Service, make_syncer: Callable[..., ApiSyncer]) -> None:
    seed(remote)
    syncer = make_syncer(remote.url, service.url)
    assert syncer.sync().result == "synced"
    good = remote.head()
    remote.commit({"jobs/hello.kit": HELLO.replace('"hi"', '"new"'),
                   "jobs/bad.kit": '[job.bad_name]\njob_type = "base"\ncommand = "x"\n'}, "one good, one bad")
    syncer.target.client.calls.clear()
    result = syncer.sync()
    assert result.result == "invalid" and "bad_name" in result.message
    assert "save" not in syncer.target.client.calls and "remove" not in syncer.target.client.calls
    assert service.load()["hello"]["args"] == ["hi"]
    assert syncer.state.get("applied_commit") == good


def test_a_wrong_api_key_is_one_clear_error_and_is_not_retried(
        remote: RemoteRepo, service: Service, make_syncer: Callable[..., ApiSyncer], key_file: Path) -> None:
    seed(remote)
    wrong = "wrong-key-" + "x" * 12
    key_file.write_text(wrong)
    syncer = make_syncer(remote.url, service.url)
    result = syncer.sync()
    assert result.result == "error"
    assert "HTTP 403" in result.message and "api_key" in result.message
    assert "\n" not in result.message and wrong not in result.message and API_KEY not in result.message
    assert syncer.target.client.calls["save"] == 1  # refused at once, not retried
    assert service.load() == {}
    key_file.write_text(API_KEY)  # the key is read again before each use: no restart needed
    assert syncer.sync().result == "synced"


def test_the_jobs_service_down_and_back(
        remote: RemoteRepo, service: Service, make_syncer: Callable[..., ApiSyncer]) -> None:
    seed(remote)
    syncer = make_syncer(remote.url, service.url)
    service.stop()
    result = syncer.sync()
    assert result.result == "error"
    assert "is the jobs service running" in result.message and "\n" not in result.message
    assert syncer.target.client.calls["load"] == 3  # a connection failure is retried
    assert syncer.state.get("consecutive_failures") == 1
    service.start()
    assert syncer.sync().result == "synced"
    assert set(service.load()) == {"hello", "render", "check-gpu"}


def test_an_apply_interrupted_part_way_records_what_was_done_and_converges(
        remote: RemoteRepo, service: Service, make_syncer: Callable[..., ApiSyncer]) -> None:
    seed(remote)
    syncer = make_syncer(remote.url, service.url)
    calls = 0

    def outage_after_two_saves() -> None:
        nonlocal calls
        calls += 1
        if calls == 3:
            service.stop()  # a real outage, at a known point of the apply

    syncer.guard = outage_after_two_saves
    result = syncer.sync()
    assert result.result == "error" and result.written == ["check-gpu", "hello"]
    assert "2 saved" in result.message and "1 call(s) left" in result.message
    assert sorted(syncer.target.record.applied()) == ["check-gpu", "hello"]
    assert syncer.state.get("applied_commit") is None
    syncer.guard = lambda: None
    service.start()
    syncer.target.client.calls.clear()
    result = syncer.sync()
    assert result.result == "synced" and result.written == ["render"]  # only what was left
    assert dict(syncer.target.client.calls) == {"load": 1, "save": 1}
    assert set(service.load()) == {"hello", "render", "check-gpu"}
    assert syncer.state.get("applied_commit") == remote.head()


@pytest.mark.parametrize("service", ["redis"], indirect=True)  # the other one is on a directory store
def test_two_jobs_services_with_different_include_rules_share_a_folder(
        tmp_path: Path, remote: RemoteRepo, service: Service, make_syncer: Callable[..., ApiSyncer]) -> None:
    from gitsync.jobs_service.config import JobsServiceConfig
    from gitsync.secrets import Secret

    windows = Service(JobsServiceConfig(save_location=tmp_path / "windows-defs", api_key=Secret(API_KEY))).start()
    try:
        remote.commit({"jobs/linux/render.kit": RENDER, "jobs/windows/check.kit": CHECK,
                       "jobs/shared/hello.kit": HELLO}, "per-platform folders and a shared one")
        linux_sync = make_syncer(remote.url, service.url, include=("linux/**", "shared/**"),
                                 state_dir=tmp_path / "linux-state")
        windows_sync = make_syncer(remote.url, windows.url, include=("windows/**", "shared/**"),
                                   state_dir=tmp_path / "windows-state")
        assert linux_sync.sync().result == "synced" and windows_sync.sync().result == "synced"
        assert set(service.load()) == {"render", "hello"}
        assert set(windows.load()) == {"check-gpu", "hello"}
        windows.stop()  # one service down never holds up the other
        remote.commit({"jobs/shared/hello.kit": HELLO.replace('"hi"', '"both"')}, "change the shared one")
        assert windows_sync.sync().result == "error"
        assert linux_sync.sync().written == ["hello"]
        windows.start()
        assert windows_sync.sync().written == ["hello"]
        assert service.load()["hello"]["args"] == windows.load()["hello"]["args"] == ["both"]
    finally:
        windows.stop()
        windows.http.close()
