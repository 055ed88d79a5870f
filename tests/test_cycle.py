"""The agent's cycle: each step has its own error boundary, the pull always runs, and every failure is
visible in status, /readyz, metrics and the log (issue 7, "one bad thing stops both directions")."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from pushback_support import SAMPLE_REPO, Site, Sites, commit_count, git_bytes, wait_until
from pushback_support import sites as sites  # fixture by import

from gitsync.agent import build_agent
from gitsync.config import load_settings
from gitsync.errors import ConfigError
from gitsync.testing.repos import RemoteRepo

HELLO = (SAMPLE_REPO / "jobs/hello-world.kit").read_text(encoding="utf-8")
HELLO_ARGS = 'args = ["Hello from Omniverse Farm, synced by gitsync!"]'


@pytest.fixture
def site(sites: Sites, sample_remote: RemoteRepo) -> Site:
    return sites.make(sample_remote, **{"server.listen": "127.0.0.1:0"})


def readyz(site: Site) -> int:
    """/syncz: whether the latest cycle succeeded in every step. (/readyz means "the directory holds a good
    commit", so that a failing push-back never takes Farm's API out of its Service: issue 11.)"""
    with httpx.Client(trust_env=False, timeout=10) as http:
        return http.get(f"http://127.0.0.1:{site.running.server_port}/syncz").status_code


def metric(site: Site, line_start: str) -> str:
    text = httpx.get(f"http://127.0.0.1:{site.running.server_port}/metrics", trust_env=False).text
    return next((line for line in text.splitlines() if line.startswith(line_start)), "")


def git_moves_gpu_checks(remote: RemoteRepo) -> None:
    """An unrelated change in git that only a running pull brings to the directory."""
    path = "jobs/ops/gpu-checks.kit"
    text = (SAMPLE_REPO / path).read_text(encoding="utf-8")
    remote.commit({path: text + "\n# changed in git while push-back fails\n"}, "Touch gpu-checks")


def assert_failure_visible(site: Site, step: str) -> None:
    status = site.status()
    assert status["last_result"] == "error", status
    assert step in status["failing_steps"], status["failing_steps"]
    assert status["consecutive_failures"] >= 1
    assert readyz(site) == 503
    assert metric(site, f'gitsync_step_failing{{step="{step}",target="default"}}').endswith(" 1.0")


def assert_pull_still_runs(site: Site, remote: RemoteRepo) -> None:
    git_moves_gpu_checks(remote)
    site.cycle()
    assert (site.directory / "gpu-checks.kit").read_bytes() == git_bytes(remote, "jobs/ops/gpu-checks.kit")


def test_hand_written_array_of_jobs_in_a_managed_file_fails_push_back_but_not_the_pull(
        site: Site, sample_remote: RemoteRepo) -> None:
    (site.directory / "hello-world.kit").write_text('[[job]]\nname = "by-hand"\ncommand = "/bin/true"\n')
    site.cycle()
    assert_pull_still_runs(site, sample_remote)
    failing = site.status()["failing_steps"]
    assert set(failing) & {"capture", "flush"}, failing
    assert_failure_visible(site, next(iter(set(failing) & {"capture", "flush"})))


def test_unknown_push_message_placeholder_is_refused_at_start_up(sample_remote: RemoteRepo, tmp_path: Path) -> None:
    flags = {"repo.url": sample_remote.url, "repo.path": "jobs", "target.directory": str(tmp_path / "defs"),
             "state.dir": str(tmp_path / "state"), "push.message": "{summary} by {user}"}
    with pytest.raises(ConfigError, match=r"push.message.*\{user\}"):
        build_agent(load_settings(None, flags, environ={}))
    env = {**os.environ, "GITSYNC_REPO_URL": sample_remote.url, "GITSYNC_REPO_PATH": "jobs",
           "GITSYNC_TARGET_DIRECTORY": str(tmp_path / "defs"), "GITSYNC_STATE_DIR": str(tmp_path / "state2"),
           "GITSYNC_PUSH_MESSAGE": "{summary} {nope}"}
    done = subprocess.run([sys.executable, "-m", "gitsync", "run"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 1, done.stderr
    assert "{nope}" in done.stderr and "Traceback" not in done.stderr


def test_a_kit_entry_the_agent_cannot_read_is_reported_and_the_pull_still_runs(
        site: Site, sample_remote: RemoteRepo) -> None:
    os.symlink("loop.kit", site.directory / "loop.kit")  # stat() fails with ELOOP, even for root
    site.cycle()
    status = site.status()
    assert status["last_result"] == "error" and status["consecutive_failures"] >= 1
    assert "loop.kit" in status["last_message"]
    assert readyz(site) == 503
    os.unlink(site.directory / "loop.kit")
    site.cycle()
    assert site.status()["last_result"] in ("synced", "noop") and readyz(site) == 200


def test_a_git_head_that_does_not_parse_for_an_outbox_file_fails_flush_but_not_the_pull(
        site: Site, sample_remote: RemoteRepo) -> None:
    with site.paused():
        sample_remote.commit({"jobs/hello-world.kit": "[job.hello-world\nbroken = "}, "Break hello-world in git")
        site.jobs.change("hello-world", args=["saved locally"])
    git_moves_gpu_checks(sample_remote)
    site.cycle_until(lambda: site.status()["failing_steps"] or site.status()["last_result"] == "invalid",
                     what="the failure to show")
    site.cycle()
    status = site.status()
    assert status["last_result"] in ("error", "invalid") and status["consecutive_failures"] >= 1
    assert readyz(site) == 503
    assert site.outbox_length() == 1  # the save is kept


def test_a_failing_step_logs_its_traceback_once_then_one_line_per_cycle(
        site: Site, sample_remote: RemoteRepo, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    (site.directory / "hello-world.kit").write_text('[[job]]\nname = "by-hand"\ncommand = "/bin/true"\n')
    for _ in range(3):
        site.cycle()
    tracebacks = [r for r in caplog.records if r.exc_info and "step crashed" in r.getMessage()]
    summaries = [r for r in caplog.records if r.name == "gitsync.sync" and r.getMessage().startswith("sync ")
                 and " failed: " in r.getMessage()]
    assert len(tracebacks) == 1
    assert len(summaries) >= 3


def test_push_retry_runs_on_its_own_timer_not_the_sync_interval(sites: Sites, sample_remote: RemoteRepo) -> None:
    site = sites.make(sample_remote, **{"push.max_backoff": 1.0})  # interval is an hour
    with site.paused():
        sample_remote.bare.rename(sample_remote.bare.with_name("away.git"))
        site.jobs.change("hello-world", args=["saved while the remote is down"])
    wait_until(lambda: site.status()["push_last_error"], what="the push to fail")
    before = commit_count_after_restore(sample_remote)
    wait_until(lambda: commit_count(sample_remote) > before, what="the retry, without any sync request")
    text = git_bytes(sample_remote, "jobs/hello-world.kit") or b""
    assert b"saved while the remote is down" in text


def commit_count_after_restore(remote: RemoteRepo) -> int:
    remote.bare.with_name("away.git").rename(remote.bare)
    return commit_count(remote)


def test_a_save_between_gitsyncs_rename_and_its_stat_is_not_recorded_as_gitsyncs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The window between os.replace and a later stat() cannot be hit on purpose from outside, so a wrapper
    around os.replace lands the save (Farm's in-place rewrite) exactly there."""
    from gitsync import target_dir
    from gitsync.target_dir import DirectoryTarget, Seen, blob_id

    target = DirectoryTarget(tmp_path / "defs")
    saved = b'[job.hello-world]\njob_type = "base"\ncommand = "/bin/echo"\nargs = ["saved by a person"]\n'
    real_replace = os.replace

    def replace_then_save(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        real_replace(src, dst)
        with open(dst, "r+b") as handle:
            handle.truncate(0)
            handle.write(saved)

    monkeypatch.setattr(target_dir.os, "replace", replace_then_save)
    ours = b'[job.hello-world]\ncommand = "/bin/echo"\n'
    written = target.write_many([("hello-world.kit", ours)], {"hello-world.kit": None})
    monkeypatch.setattr(target_dir.os, "replace", real_replace)

    seen = target.scan({"hello-world.kit": Seen(blob_id(ours), written["hello-world.kit"])})
    assert seen["hello-world.kit"].blob == blob_id(saved)


def test_a_non_utf8_file_name_in_git_is_reported_and_removing_it_recovers(
        site: Site, sample_remote: RemoteRepo) -> None:
    bad = b"jobs/caf\xe9.kit"
    work = sample_remote.work
    (work / os.fsdecode(bad)).write_bytes(b'[job.cafe]\njob_type = "base"\ncommand = "/bin/true"\n')
    subprocess.run(["git", "add", "-A"], cwd=work, check=True)
    sample_remote.commit({}, "Add a file whose name is not UTF-8")
    site.cycle()
    status = site.status()
    assert status["last_result"] == "invalid" and "not valid UTF-8" in status["last_message"]
    assert status["consecutive_failures"] >= 1 and readyz(site) == 503

    subprocess.run(["git", "rm", "-q", "--", os.fsdecode(bad)], cwd=work, check=True)
    sample_remote.commit({}, "Remove it")
    site.cycle()
    assert site.status()["last_result"] in ("synced", "noop")
    assert readyz(site) == 200


def test_a_cycle_never_captures_a_save_half_way(tmp_path: Path) -> None:
    """Farm saves by deleting and re-creating the file; a cycle sampled in between must not commit a
    deletion. The second look of capture is where Farm's write lands (the `sleep` seam)."""
    from gitsync.capture import capture
    from gitsync.model import Owned
    from gitsync.outbox import Outbox
    from gitsync.state import State
    from gitsync.target_dir import DirectoryTarget, blob_id

    target = DirectoryTarget(tmp_path / "defs")
    target.ensure()
    state = State(tmp_path / "state")
    outbox = Outbox(state)
    text = b'[job.hello-world]\njob_type = "base"\ncommand = "/bin/echo"\n'
    stats = target.write_many([("hello-world.kit", text)], {"hello-world.kit": None})
    state.record_apply(tree=None, owned={"hello-world.kit": Owned("jobs/hello-world.kit", blob_id(text), (
        "hello-world",), stats["hello-world.kit"])}, meta={})
    outbox.take_baseline({})

    (target.directory / "hello-world.kit").unlink()  # Farm's delete ...
    saved = text + b'args = ["saved"]\n'

    def farm_writes(_: float) -> None:  # ... and its write, landing while gitsync looks again
        (target.directory / "hello-world.kit").write_bytes(saved)

    assert capture(target, state, outbox, settle=0.2, sleep=farm_writes) == []  # missing: only noted
    assert capture(target, state, outbox, settle=0.2, sleep=farm_writes) == []  # still missing, then written
    assert outbox.entries() == []
    assert capture(target, state, outbox, settle=0.2, sleep=lambda _: None) == ["hello-world.kit"]
    [entry] = outbox.entries()
    assert entry.content == saved  # the save, never a deletion
    state.close()


def owned_file(tmp_path: Path, text: bytes) -> tuple[Any, Any, Any]:
    """A job directory with one file gitsync wrote, its state and outbox (after the first look)."""
    from gitsync.model import Owned
    from gitsync.outbox import Outbox
    from gitsync.state import State
    from gitsync.target_dir import DirectoryTarget, blob_id

    target = DirectoryTarget(tmp_path / "defs")
    target.ensure()
    state = State(tmp_path / "state")
    stats = target.write_many([("hello-world.kit", text)], {"hello-world.kit": None})
    state.record_apply(tree=None, owned={"hello-world.kit": Owned("jobs/hello-world.kit", blob_id(text), (
        "hello-world",), stats["hello-world.kit"])}, meta={})
    outbox = Outbox(state)
    outbox.take_baseline({})
    return target, state, outbox


def test_a_save_stalled_between_farms_delete_and_create_is_never_pushed_as_a_deletion(tmp_path: Path) -> None:
    """The burst-save failure: Farm saves a new definition by deleting its file, then creating and writing it.
    A jobs service stalled in between (a loaded machine, its GIL shared by ten request threads) leaves the
    file missing for longer than the settle time, so both looks of one cycle found it missing and the save in
    progress was pushed as a deletion. Here the stall is real time with the file missing across both looks."""
    from gitsync.capture import capture

    text = b'[job.hello-world]\njob_type = "base"\ncommand = "/bin/echo"\n'
    target, state, outbox = owned_file(tmp_path, text)
    (target.directory / "hello-world.kit").unlink()  # Farm's delete; its create comes late

    assert capture(target, state, outbox, settle=0.05) == []  # missing at both looks of this cycle
    assert outbox.entries() == []
    saved = text + b'args = ["saved"]\n'
    (target.directory / "hello-world.kit").write_bytes(saved)  # Farm's create and write
    assert capture(target, state, outbox, settle=0.05) == ["hello-world.kit"]
    [entry] = outbox.entries()
    assert entry.content == saved  # the save, never a deletion
    assert state.get("absent_local") == {}
    state.close()


def test_a_file_that_stays_deleted_is_captured_as_a_deletion_at_the_next_cycle(tmp_path: Path) -> None:
    from gitsync.capture import capture

    target, state, outbox = owned_file(tmp_path, b'[job.hello-world]\njob_type = "base"\ncommand = "/bin/echo"\n')
    (target.directory / "hello-world.kit").unlink()  # jobs/remove

    assert capture(target, state, outbox, settle=0.05) == []
    assert list(state.get("absent_local")) == ["hello-world.kit"]  # the agent runs a follow-up cycle for it
    assert capture(target, state, outbox, names=set(), settle=0.05) == ["hello-world.kit"]  # no event needed
    [entry] = outbox.entries()
    assert (entry.content, entry.local_blob, entry.origin) == (None, None, "jobs/remove or hand delete")
    state.close()


def test_a_name_that_was_once_a_foreign_file_is_pushed(sites: Sites, sample_remote: RemoteRepo) -> None:
    site = sites.make(sample_remote, start=False)
    site.directory.mkdir(parents=True, exist_ok=True)
    (site.directory / "legacy.kit").write_text('[job.legacy]\njob_type = "base"\ncommand = "/bin/true"\n')
    site.start_agent()
    site.cycle()
    (site.directory / "legacy.kit").unlink()
    site.cycle()
    before = commit_count(sample_remote)
    site.jobs.save({"name": "legacy", "job_type": "base", "command": "/bin/echo", "args": ["new"]})
    wait_until(lambda: commit_count(sample_remote) > before, what="the new legacy definition to be pushed")
    assert b'"new"' in (git_bytes(sample_remote, "jobs/legacy.kit") or b"")
    wait_until(lambda: site.outbox_length() == 0, what="the pushed save to leave the outbox")  # settled after the push


def test_a_conflict_on_a_job_whose_name_is_not_a_valid_ref_does_not_wedge_push_back(
        site: Site, sample_remote: RemoteRepo) -> None:
    night = '[job."night build"]\njob_type = "base"\ncommand = "/bin/echo"\nargs = ["git"]\n'
    sample_remote.commit({"jobs/night.kit": night}, "Add the night build")
    site.cycle_until(lambda: (site.directory / "night.kit").exists(), what="night.kit to arrive")
    with site.paused():
        sample_remote.commit({"jobs/night.kit": night.replace('"git"', '"changed in git"')}, "Change it in git")
        (site.directory / "night.kit").write_text(night.replace('"git"', '"changed here"'))
    site.cycle_until(lambda: site.outbox_length() == 0 and site.status()["conflicts"], what="the conflict branch")
    [conflict] = site.status()["conflicts"]
    assert conflict["jobs"] == ["night build"] and conflict["branch"].startswith("gitsync/conflict/night-build-")
    assert conflict["branch"] in sample_remote.branches()
    # push-back keeps working afterwards
    before = commit_count(sample_remote)
    site.jobs.change("hello-world", args=["after the conflict"])
    wait_until(lambda: commit_count(sample_remote) > before, what="the next save to be pushed")


def test_sigterm_ends_gitsync_run_within_30_s_even_during_a_slow_push(
        sample_remote: RemoteRepo, tmp_path: Path) -> None:
    """The push hangs in a pre-receive hook far longer than the grace period."""
    import signal
    import time

    hook = sample_remote.bare / "hooks" / "pre-receive"
    marker = tmp_path / "receiving"
    hold = tmp_path / "hold"
    hold.touch()
    hook.write_text(f"#!/bin/sh\ncat >/dev/null\ntouch '{marker}'\nwhile [ -f '{hold}' ]; do sleep 0.2; done\n")
    hook.chmod(0o755)
    defs = tmp_path / "defs"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("GITSYNC_")},
           "GITSYNC_REPO_URL": sample_remote.url, "GITSYNC_REPO_PATH": "jobs", "GITSYNC_TARGET_DIRECTORY": str(defs),
           "GITSYNC_STATE_DIR": str(tmp_path / "state"), "GITSYNC_PUSH_DEBOUNCE": "0.1",
           "GITSYNC_SYNC_SHUTDOWN_TIMEOUT": "3",
           "GITSYNC_SERVER_LISTEN": "127.0.0.1:0"}
    process = subprocess.Popen([sys.executable, "-m", "gitsync", "run"], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: (defs / "hello-world.kit").exists(), what="the first sync")
        (defs / "hello-world.kit").write_text(HELLO.replace(HELLO_ARGS, 'args = ["edited"]'))
        wait_until(marker.exists, timeout=30, what="the push to reach the hook")
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.wait(40)
        assert time.monotonic() - started < 30
        assert process.returncode == 0
        # what the abandoned push carried is still in the outbox for the next start
        import sqlite3

        db = sqlite3.connect(tmp_path / "state" / "state.sqlite3")
        assert db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 1
        db.close()
    finally:
        hold.unlink()  # lets the hook (an orphan of the abandoned push) finish
        if process.poll() is None:
            process.kill()
            process.wait()


def test_a_waiting_change_whose_base_is_gone_from_the_mirror_goes_to_a_conflict_branch_without_wedging(
        sample_remote: RemoteRepo, tmp_path: Path) -> None:
    """A base pruned before push-back could keep it (see keep_bases): the change is compared without it. Today's
    blob ids cannot be made to vanish from outside between two reads, so the entry names a version the mirror
    never held, which is what a pruned one looks like to the flush."""
    from gitsync.outbox import Outbox
    from gitsync.pushback import PushBack
    from gitsync.sync import Syncer
    from gitsync.target_dir import blob_id

    settings = load_settings(None, {"repo.url": sample_remote.url, "repo.path": "jobs", "target.directory":
                                    str(tmp_path / "defs"), "state.dir": str(tmp_path / "state")}, environ={})
    syncer = Syncer.from_settings(settings)
    try:
        assert syncer.sync().result == "synced"
        head = sample_remote.remote_head()
        outbox = Outbox(syncer.state)
        saved = HELLO.replace(HELLO_ARGS, 'args = ["saved"]').encode()
        outbox.put("hello-world.kit", repo_path="jobs/hello-world.kit", base_blob=blob_id(b"pruned version\n"),
                   local_blob=blob_id(saved), content=saved, origin="jobs/save")

        PushBack(settings, syncer.state, syncer.mirror, syncer.target, outbox).flush()

        assert outbox.entries() == [] and sample_remote.remote_head() == head  # settled, git's version stays
        [branch] = [b for b in sample_remote.branches() if b.startswith("gitsync/conflict/hello-world-")]
        assert git_bytes(sample_remote, "jobs/hello-world.kit", f"refs/heads/{branch}") == saved
        assert not (tmp_path / "state" / "mirror.git" / "gitsync-repair-needed").exists()  # no re-clone
    finally:
        syncer.close()
