"""Operating gitsync (issue 11): rollback and pinning, read-only commands beside the agent, exit codes,
and managing the outbox and conflict branches. Real git remotes, the real CLI, a real `gitsync run`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pull_helpers import Ran, gitsync, kit
from pull_helpers import isolated as isolated  # fixtures by import: tmpfs tmp_path, cwd + env isolation
from pull_helpers import ram_tmp_path as ram_tmp_path

from gitsync.capture import capture
from gitsync.cli import EXIT_CONFLICT, EXIT_DRIFT, EXIT_ERROR, EXIT_HELD, EXIT_OK, EXIT_REFUSED
from gitsync.commands.pull import sync_exit_code
from gitsync.config import load_settings
from gitsync.outbox import Outbox
from gitsync.plan import Finding
from gitsync.sync import Syncer, SyncResult
from gitsync.testing.repos import RemoteRepo, git
from gitsync.testing.waiting import wait_until

HELLO = "jobs/hello-world.kit"
BROKEN = '[job.hello-world]\njob_type = "base"\nname = "hello-world"\ncommand = "/bin/echo\n'


@dataclass
class Site:
    remote: RemoteRepo
    target: Path
    state: Path
    capsys: pytest.CaptureFixture[str]

    def args(self, *argv: str) -> list[str]:
        return [argv[0], "--repo", self.remote.url, "--path", "jobs", "--target", str(self.target), "--state-dir",
                str(self.state), *argv[1:]]

    def run(self, *argv: str) -> Ran:
        return gitsync(self.capsys, *self.args(*argv))

    def status(self) -> dict[str, Any]:
        return dict(json.loads(self.run("status", "--format", "json").out))

    def hello(self) -> str:
        return (self.target / "hello-world.kit").read_text()

    def syncer(self, **flags: Any) -> Syncer:
        return Syncer.from_settings(load_settings(None, {
            "repo.url": self.remote.url, "repo.path": "jobs", "target.directory": str(self.target),
            "state.dir": str(self.state), **flags}, environ={}))


@pytest.fixture
def site(sample_remote: RemoteRepo, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Site:
    s = Site(sample_remote, tmp_path / "defs", tmp_path / "state", capsys)
    assert s.run("sync", "--once").code == 0
    return s


def hello(*args: str) -> str:
    return kit("hello-world", args=args)


# -- rollback ---------------------------------------------------------------------------------------
def test_rollback_reverts_one_commit_pushes_the_revert_and_syncs(site: Site) -> None:
    original = site.hello()
    bad = site.remote.commit({HELLO: hello("bad")}, "Break hello-world's greeting")
    site.remote.commit({"jobs/other.kit": kit("other")}, "Add other")
    assert site.run("sync", "--once").code == 0 and '"bad"' in site.hello()

    ran = site.run("rollback", bad)

    assert ran.code == EXIT_OK, ran.err
    assert site.remote.log()[0] == "Revert \"Break hello-world's greeting\""
    assert site.hello() == original
    assert (site.target / "other.kit").is_file()  # the later commit stays
    assert len(ran.out.strip().splitlines()) == 1 and "synced" in ran.out


def test_rollback_to_reverts_everything_after_a_commit_in_one_commit(site: Site) -> None:
    good = site.remote.head()
    site.remote.commit({HELLO: hello("one")}, "one")
    site.remote.commit({"jobs/two.kit": kit("two")}, "two")
    site.remote.commit({HELLO: hello("three")}, "three")
    before = len(site.remote.log())

    ran = site.run("rollback", "--to", good[:10])

    assert ran.code == EXIT_OK, ran.err
    assert len(site.remote.log()) == before + 1
    assert git("rev-parse", "main^{tree}", cwd=site.remote.bare) == git("rev-parse", f"{good}^{{tree}}",
                                                                         cwd=site.remote.bare)
    assert not (site.target / "two.kit").exists() and '"hello"' not in site.hello()


def test_a_rollback_that_conflicts_changes_nothing_and_says_so_in_one_line(site: Site) -> None:
    first = site.remote.commit({HELLO: hello("first")}, "first")
    site.remote.commit({HELLO: hello("second")}, "second")  # the same line again
    assert site.run("sync", "--once").code == 0
    head = site.remote.remote_head()

    ran = site.run("rollback", first)

    assert ran.code == EXIT_CONFLICT
    assert site.remote.remote_head() == head and '"second"' in site.hello()
    assert len(ran.out.strip().splitlines()) == 1 and "hello-world.kit" in ran.out and "nothing was changed" in ran.out


def test_a_rollback_to_a_broken_state_is_refused_before_anything_is_pushed(site: Site) -> None:
    site.remote.commit({HELLO: BROKEN}, "break")
    fix = site.remote.commit({HELLO: hello("fixed")}, "fix")
    assert site.run("sync", "--once").code == 0
    head = site.remote.remote_head()

    ran = site.run("rollback", fix)

    assert ran.code == EXIT_REFUSED and "nothing was pushed" in ran.out
    assert site.remote.remote_head() == head and '"fixed"' in site.hello()


def test_in_pull_request_mode_a_rollback_is_proposed_not_pushed(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    import secrets

    from gitsync.testing.forge_standin import GitHubStandin, RunningStandin

    token = "ghp_" + secrets.token_hex(12)
    monkeypatch.setenv("ROLLBACK_FORGE_TOKEN", token)
    standin = GitHubStandin(token=token, repository="acme/jobs")
    bad = site.remote.commit({HELLO: hello("bad")}, "bad")
    assert site.run("sync", "--once").code == 0
    head = site.remote.remote_head()
    with RunningStandin(standin.app) as forge:
        monkeypatch.setenv("GITSYNC_PUSH_FORGE_API_URL", forge.url)
        monkeypatch.setenv("GITSYNC_PUSH_FORGE_REPOSITORY", "acme/jobs")
        monkeypatch.setenv("GITSYNC_PUSH_FORGE_TOKEN_ENV", "ROLLBACK_FORGE_TOKEN")
        ran = site.run("rollback", bad, "--push-mode", "pull-request")

    assert ran.code == EXIT_OK, ran.err
    assert site.remote.remote_head() == head and '"bad"' in site.hello()  # applied once merged
    pull = standin.pull(1)
    assert pull["title"] == 'Revert "bad"' and pull["head"]["ref"].startswith("gitsync/rollback/")
    assert "pull request" in ran.out


def test_rollback_of_an_unknown_commit_is_one_line(site: Site) -> None:
    ran = site.run("rollback", "0123456789abcdef")
    assert ran.code == EXIT_ERROR and ran.err.count("\n") == 1 and "not a commit" in ran.err


# -- pinning ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("pin", ["tag", "commit"])
def test_a_pinned_directory_stays_at_the_pin_while_the_branch_moves_on(site: Site, pin: str) -> None:
    pinned = site.remote.commit({HELLO: hello("release 1")}, "release 1")
    git("tag", "v1", cwd=site.remote.work)
    git("push", "--quiet", "origin", "v1", cwd=site.remote.work)
    site.remote.commit({HELLO: hello("work in progress")}, "wip")
    ref = "v1" if pin == "tag" else pinned[:12]

    assert site.run("sync", "--once", "--ref", ref).code == 0
    assert '"release 1"' in site.hello()
    status = json.loads(site.run("status", "--format", "json", "--ref", ref).out)
    assert status["pinned_ref"] == ref and status["applied_commit"] == pinned
    assert "pinned       to " + ref in site.run("status", "--ref", ref).out

    assert site.run("sync", "--once").code == 0  # unpinned: the branch head again
    assert '"work in progress"' in site.hello()


def test_a_pin_to_a_tag_that_does_not_exist_is_one_line_and_keeps_the_directory(site: Site) -> None:
    before = site.hello()
    ran = site.run("sync", "--once", "--ref", "no-such-tag")
    assert ran.code == EXIT_ERROR and "repo.ref 'no-such-tag'" in ran.err and site.hello() == before


def test_local_changes_wait_in_the_outbox_while_pinned_and_reach_git_after(site: Site) -> None:
    from gitsync.agent import build_agent

    flags = {"repo.url": site.remote.url, "repo.path": "jobs", "target.directory": str(site.target),
             "state.dir": str(site.state), "server.listen": "", "sync.interval": 3600.0}
    pinned = build_agent(load_settings(None, {**flags, "repo.ref": site.remote.head()}, environ={}))
    head = site.remote.remote_head()
    try:
        (site.target / "hello-world.kit").write_text(hello("saved while pinned"))
        pinned.run_once("test")
        assert site.remote.remote_head() == head  # nothing pushed
        assert pinned.status()["outbox_length"] == 1 and '"saved while pinned"' in site.hello()
    finally:
        pinned.syncer.close()
    agent = build_agent(load_settings(None, flags, environ={}))
    try:
        agent.run_once("test")
    finally:
        agent.syncer.close()
    assert '"saved while pinned"' in site.remote.show(HELLO)


# -- exit codes -------------------------------------------------------------------------------------
@pytest.mark.parametrize(("result", "kinds", "code"), [
    ("synced", (), EXIT_OK), ("noop", (), EXIT_OK), ("noop", ("drift",), EXIT_DRIFT),
    ("synced", ("pending",), EXIT_DRIFT), ("partial", ("held",), EXIT_HELD), ("partial", ("held", "drift"), EXIT_HELD),
    ("invalid", (), EXIT_REFUSED), ("refused", (), EXIT_REFUSED), ("error", (), EXIT_ERROR)])
def test_sync_once_exits_0_only_when_the_directory_holds_the_applied_commit(result: str, kinds: tuple[str, ...],
                                                                          code: int) -> None:
    findings = [Finding(kind, f"f{i}.kit", "detail") for i, kind in enumerate(kinds)]  # type: ignore[arg-type]
    assert sync_exit_code(SyncResult(result, findings=findings)) == code  # type: ignore[arg-type]


def test_sync_once_with_drift_left_in_place_does_not_exit_0(site: Site) -> None:
    """What was found: `sync --once` exited 0 with drift although the README said "exit 0 = in sync"."""
    (site.target / "hello-world.kit").write_text(hello("edited by hand"))
    ran = site.run("sync", "--once")
    assert ran.code == EXIT_DRIFT and "hello-world.kit" in ran.err and "--force" in ran.err
    assert site.run("sync", "--once", "--force").code == EXIT_OK


def test_plan_exits_0_when_nothing_would_change(site: Site) -> None:
    """What was found: `plan` exited 4 while printing "no changes" (a commit that touches no definition)."""
    site.remote.commit({"README.md": "docs only\n"}, "docs")
    ran = site.run("plan")
    assert ran.code == EXIT_OK and "no changes to the target" in ran.out
    site.remote.commit({HELLO: hello("changed")}, "change")
    planned = site.run("plan", "--format", "json")
    assert planned.code == 4
    assert [a["target"] for a in json.loads(planned.out)["actions"]] == ["hello-world.kit"]


# -- the outbox and conflicts -----------------------------------------------------------------------
def capture_local_change(site: Site, text: str) -> None:
    syncer = site.syncer()
    try:
        (site.target / "hello-world.kit").write_text(text)
        assert capture(syncer.target, syncer.state, Outbox(syncer.state)) == ["hello-world.kit"]
        syncer.state.set(push_failures=6, push_next_attempt=4e9)  # backing off after failed pushes
    finally:
        syncer.close()


def test_outbox_retry_pushes_now_instead_of_waiting_for_the_backoff(site: Site) -> None:
    capture_local_change(site, hello("retried"))
    listed = json.loads(site.run("outbox", "--format", "json").out)
    assert [(e["target"], e["status"]) for e in listed] == [("hello-world.kit", "queued")]

    ran = site.run("outbox", "retry")

    assert ran.code == EXIT_OK, ran.out + ran.err
    assert '"retried"' in site.remote.show(HELLO)
    assert site.status()["outbox_length"] == 0


def test_an_outbox_entry_an_older_gitsync_stored_as_pending_is_queued_and_pushed(site: Site) -> None:
    import sqlite3

    capture_local_change(site, hello("from an older gitsync"))
    with sqlite3.connect(site.state / "state.sqlite3") as db:  # the status `queued` was called `pending`
        db.execute("UPDATE outbox SET status = 'pending'")
    db.close()
    listed = json.loads(site.run("outbox", "--format", "json").out)
    assert [(e["target"], e["status"]) for e in listed] == [("hello-world.kit", "queued")]

    assert site.run("outbox", "retry").code == EXIT_OK
    assert '"from an older gitsync"' in site.remote.show(HELLO)


def test_outbox_drop_keeps_the_change_on_a_conflict_branch_and_git_wins(site: Site) -> None:
    capture_local_change(site, hello("dropped"))

    ran = site.run("outbox", "drop", "hello-world.kit")

    assert ran.code == EXIT_OK, ran.err
    branches = [b for b in site.remote.branches() if b.startswith("gitsync/conflict/")]
    assert len(branches) == 1 and '"dropped"' in site.remote.show(HELLO, f"refs/heads/{branches[0]}")
    assert '"dropped"' not in site.hello() and '"dropped"' not in site.remote.show(HELLO)
    status = site.status()
    assert status["outbox_length"] == 0 and [c["branch"] for c in status["conflicts"]] == branches

    listed = site.run("conflicts", "--format", "json")
    assert [c["branch"] for c in json.loads(listed.out)] == branches
    assert site.run("conflicts", "ack", branches[0]).code == EXIT_OK
    assert site.status()["conflicts"] == []
    assert "acknowledged" in site.run("conflicts").out


# -- beside a running agent -------------------------------------------------------------------------
def test_plan_status_history_and_rollback_work_beside_gitsync_run(site: Site, tmp_path: Path) -> None:
    """What was found: `plan` could not run while `gitsync run` held the state directory."""
    command = [sys.executable, "-m", "gitsync", *site.args("run", "--interval", "3600", "--listen", "")]
    log = (tmp_path / "run.log").open("w+")
    agent = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    started = site.status()["last_attempt_at"]
    try:
        wait_until(lambda: "starting:" in log_text(log) and site.status()["last_attempt_at"] != started, timeout=30,
                   what="the agent's first cycle")
        bad = site.remote.commit({HELLO: hello("bad")}, "bad change")

        planned = site.run("plan", "--format", "json")
        assert planned.code == 4, planned.err
        assert json.loads(planned.out)["head"] == bad
        assert site.run("history", "--format", "json").code == EXIT_OK
        assert json.loads(site.run("history", "--format", "json").out)[0]["result"] == "synced"

        agent.send_signal(signal.SIGHUP)
        wait_until(lambda: '"bad"' in site.hello(), timeout=30, what="the agent to apply the bad commit")
        ran = site.run("rollback", bad)
        assert ran.code == EXIT_OK, ran.out + ran.err
        assert '"bad"' not in site.hello() and site.remote.log()[0] == 'Revert "bad change"'
        assert agent.poll() is None  # the agent is still running: nobody fought for the lock
    finally:
        agent.send_signal(signal.SIGTERM)
        code = agent.wait(timeout=30)
        log.close()
    assert code == 0


def log_text(log: Any) -> str:
    log.seek(0)
    return str(log.read())


def test_a_command_waits_for_the_turn_and_gives_up_with_one_line(tmp_path: Path) -> None:
    from gitsync.turn import TurnTimeout, turn

    with turn(tmp_path), pytest.raises(TurnTimeout, match="did not finish its cycle"), turn(tmp_path, timeout=0.2):
        pass  # pragma: no cover - the second turn is never granted while the first is held
    with turn(tmp_path, timeout=0.2):
        pass  # released: granted at once


def test_the_readme_exit_code_table_lists_every_code_the_cli_uses() -> None:
    import re

    import gitsync.cli as cli

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    documented = {int(m) for m in re.findall(r"^\| (\d+) \|", section, flags=re.MULTILINE)}
    used = {v for k, v in vars(cli).items() if k.startswith("EXIT_")} | {2}  # 2: argparse's usage errors
    assert documented == used
