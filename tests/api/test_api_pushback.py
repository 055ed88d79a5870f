"""Push-back from a jobs-api target: what others change through the jobs service's `/save` and `/remove`
becomes commits on a real bare remote, with the directory target's rules (outbox, minimal diff, conflict
branches, no echo). Against the Farm-compatible stand-in over real HTTP, on its directory store and its
Redis store (real redis-server)."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from gitsync.agent import Agent, build_agent
from gitsync.config import load_settings
from gitsync.outbox import Outbox
from gitsync.state import State
from gitsync.testing.forge_standin import GitHubStandin, RunningStandin
from gitsync.testing.repos import RemoteRepo, git
from gitsync.testing.waiting import stop_process, wait_until

from .conftest import API_KEY, NO_WAIT, Service
from .test_api_target import HELLO, seed

TIMEOUT = 20.0
TOOLS = ('# Tools every agent runs\n\n'
         '[job.lint]\njob_type = "base"\ncommand = "ruff"  # the linter\nargs = ["check"]\n\n'
         '# formatting\n[job.fmt]\njob_type = "base"\ncommand = "ruff"\nargs = ["format"]\n')


@pytest.fixture
def start_agent(tmp_path: Path, key_file: Path, agents: list[Agent]) -> Callable[..., Agent]:
    """An agent with push-back on; it polls every 0.2 s unless `poll` says otherwise (3600: cycles only
    when the test asks for one)."""

    def start(remote: RemoteRepo, url: str, name: str = "a", poll: float = 0.2, **options: Any) -> Agent:
        flags = {"repo.url": remote.url, "repo.path": "jobs", "target.kind": "jobs-api", "target.url": url,
                 "target.api_key_file": str(key_file), "state.dir": str(tmp_path / name / "state"),
                 "sync.interval": 3600.0, "target.poll_interval": poll, "push.debounce": 0.1,
                 "server.listen": "127.0.0.1:0", "push.mode": "direct", **options}
        agent = build_agent(load_settings(None, flags, environ={}))
        agents.append(agent)
        agent.start()
        assert agent.wait_for_syncs(1, TIMEOUT), "the first cycle did not finish"
        return agent

    return start


def cycle(agent: Agent) -> None:
    done = agent.syncs_done
    agent.request_sync("test")
    assert agent.wait_for_syncs(done + 1, TIMEOUT), "the requested cycle did not finish"


def cycles(agent: Agent, count: int) -> None:
    """Wait for `count` more cycles of the agent's own poll timer."""
    done = agent.syncs_done
    assert agent.wait_for_syncs(done + count, TIMEOUT), f"{count} poll cycles did not run"


def remove(service: Service, name: str) -> None:
    response = service.http.post(f"{service.url}/remove", json={"job_definition_name": name},
                                 headers={"X-API-KEY": API_KEY})
    assert response.status_code == 200, response.text


def definition(service: Service, name: str, **changes: Any) -> dict[str, Any]:
    """What a person would post to /save: the definition /load returns, changed."""
    loaded = {k: v for k, v in service.load()[name].items() if v is not None and k != "job_spec_path"}
    loaded.update(changes)
    return loaded


def new_commits(remote: RemoteRepo, since: str) -> list[str]:
    return git("rev-list", f"{since}..refs/heads/main", cwd=remote.bare).split()


def diff(remote: RemoteRepo, old: str, new: str = "refs/heads/main") -> str:
    return git("diff", "--unified=0", old, new, cwd=remote.bare)


def status(agent: Agent) -> dict[str, Any]:
    data: dict[str, Any] = httpx.get(f"http://127.0.0.1:{agent.server_port}/status", trust_env=False).json()
    return data


def metrics(agent: Agent) -> str:
    return httpx.get(f"http://127.0.0.1:{agent.server_port}/metrics", trust_env=False).text


def test_a_save_by_someone_else_becomes_one_commit_with_a_minimal_diff(
        remote: RemoteRepo, service: Service, start_agent: Callable[..., Agent]) -> None:
    seed(remote)
    remote.commit({"jobs/tools.kit": TOOLS}, "tools")
    before = remote.remote_head()
    agent = start_agent(remote, service.url)
    service.save(definition(service, "lint", args=["check", "--fix"]))
    wait_until(lambda: new_commits(remote, before), TIMEOUT, "the save to become a commit")
    assert remote.show("jobs/tools.kit") == TOOLS.replace('args = ["check"]', 'args = ["check", "--fix"]').rstrip()
    changed = [line for line in diff(remote, before).splitlines() if line[:1] in "+-" and line[:3] not in "+++---"]
    assert changed == ['-args = ["check"]', '+args = ["check", "--fix"]']
    message = git("log", "-1", "--format=%B", "refs/heads/main", cwd=remote.bare)
    assert "lint" in message and "jobs/save" in message and service.url in message
    cycles(agent, 2)  # the pull saw git's version of it, and the polls that followed saw nothing new
    assert len(new_commits(remote, before)) == 1
    assert service.load()["lint"]["args"] == ["check", "--fix"]
    assert Outbox(agent.syncer.state).entries() == []


@pytest.mark.parametrize("service", ["directory"], indirect=True)  # Farm's directory store rewrites the file
def test_a_remove_by_someone_else_becomes_a_deletion_commit(
        remote: RemoteRepo, service: Service, start_agent: Callable[..., Agent]) -> None:
    seed(remote)
    remote.commit({"jobs/tools.kit": TOOLS}, "tools")
    before = remote.remote_head()
    agent = start_agent(remote, service.url)
    remove(service, "hello")
    remove(service, "fmt")
    wait_until(lambda: len(new_commits(remote, before)) >= 1 and "fmt" not in remote.show("jobs/tools.kit"),
               TIMEOUT, "the removals to become a commit")
    files = git("ls-tree", "-r", "--name-only", "refs/heads/main", cwd=remote.bare).split()
    assert "jobs/hello.kit" not in files and "jobs/render/render.kit" in files
    assert remote.show("jobs/tools.kit") == TOOLS.split("\n# formatting")[0].rstrip()
    cycles(agent, 2)
    assert "hello" not in service.load() and "lint" in service.load()
    assert Outbox(agent.syncer.state).entries() == []


@pytest.mark.parametrize("service", ["directory"], indirect=True)  # the store that fills in job_spec_path
def test_gitsyncs_own_saves_and_farms_defaults_never_come_back_as_changes(
        remote: RemoteRepo, service: Service, start_agent: Callable[..., Agent],
        caplog: pytest.LogCaptureFixture) -> None:
    seed(remote)
    agent = start_agent(remote, service.url)
    remote.commit({"jobs/hello.kit": HELLO.replace('"hi"', '"from git"')}, "change hello")
    head = remote.remote_head()
    wait_until(lambda: service.load()["hello"]["args"] == ["from git"], TIMEOUT, "the commit to reach the service")
    assert service.load()["hello"]["job_spec_path"]  # Farm's own field, never a change
    cycles(agent, 1)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="gitsync"):
        cycles(agent, 3)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO] == []  # idle polls are quiet
    assert remote.remote_head() == head  # nothing of its own, nor Farm's filled-in fields, was pushed
    assert Outbox(agent.syncer.state).entries() == []
    assert agent.status()["findings"] == [] and agent.status()["last_result"] in ("synced", "noop")


@pytest.mark.parametrize("service", ["redis"], indirect=True)
def test_a_new_definition_that_would_land_outside_the_targets_files_is_blocked_with_the_fix(
        remote: RemoteRepo, service: Service, start_agent: Callable[..., Agent]) -> None:
    seed(remote)
    before = remote.remote_head()
    agent = start_agent(remote, service.url, **{"target.include": "ops/**"})  # new files would go to jobs/
    service.save({"name": "nightly", "job_type": "base", "command": "/bin/backup"})
    wait_until(lambda: status(agent)["outbox_blocked"], TIMEOUT, "the change to be blocked")
    assert "push.new_file_dir" in status(agent)["outbox_blocked"][0]
    cycles(agent, 2)
    assert remote.remote_head() == before  # never committed where the next pull would remove it
    assert "nightly" in service.load()


@pytest.mark.parametrize("service", ["redis"], indirect=True)
def test_both_sides_changed_git_wins_and_the_saved_version_is_kept_on_a_conflict_branch(
        remote: RemoteRepo, service: Service, start_agent: Callable[..., Agent]) -> None:
    seed(remote)
    agent = start_agent(remote, service.url, poll=3600)
    service.save(definition(service, "hello", args=["from the service"]))
    remote.commit({"jobs/hello.kit": HELLO.replace('"hi"', '"from git"')}, "change hello in git")
    cycle(agent)
    assert service.load()["hello"]["args"] == ["from git"]  # git wins in the service
    conflicts = [b for b in git("for-each-ref", "--format=%(refname:short)", "refs/heads", cwd=remote.bare).split()
                 if b.startswith("gitsync/conflict/hello-")]
    assert len(conflicts) == 1
    assert 'args = ["from the service"]' in remote.show("jobs/hello.kit", f"refs/heads/{conflicts[0]}")
    assert 'args = ["from git"]' in remote.show("jobs/hello.kit")
    assert [c["branch"] for c in agent.status()["conflicts"]] == conflicts
    cycle(agent)
    assert service.load()["hello"]["args"] == ["from git"] and Outbox(agent.syncer.state).entries() == []


@pytest.mark.parametrize("service", ["redis"], indirect=True)
def test_in_pull_request_mode_a_save_is_proposed_and_closing_the_pull_request_restores_gits_version(
        remote: RemoteRepo, service: Service, start_agent: Callable[..., Agent],
        monkeypatch: pytest.MonkeyPatch) -> None:
    seed(remote)
    before = remote.remote_head()
    monkeypatch.setenv("GITSYNC_TEST_API_FORGE_TOKEN", "ghp_api0123456789")
    standin = GitHubStandin(token="ghp_api0123456789", repository="acme/jobs")
    with RunningStandin(standin.app) as forge:
        agent = start_agent(remote, service.url, **{
            "push.mode": "pull-request", "push.forge": "github", "push.forge_api_url": forge.url,
            "push.forge_repository": "acme/jobs", "push.forge_token_env": "GITSYNC_TEST_API_FORGE_TOKEN"})
        service.save(definition(service, "hello", args=["proposed"]))
        opened = wait_until(lambda: standin.pull(1) if any(r.method == "POST" for r in standin.requests) else None,
                            TIMEOUT, "a pull request")
        branch = opened["head"]["ref"]
        assert 'args = ["proposed"]' in remote.show("jobs/hello.kit", f"refs/heads/{branch}")
        cycles(agent, 2)
        assert remote.remote_head() == before and service.load()["hello"]["args"] == ["proposed"]  # while open
        standin.close(1)
        wait_until(lambda: service.load()["hello"]["args"] == ["hi"], TIMEOUT, "git's version to come back")
        assert remote.remote_head() == before


@pytest.mark.parametrize("service", ["directory"], indirect=True)
def test_a_change_waits_in_the_outbox_while_the_remote_is_down_and_is_pushed_when_it_is_back(
        remote: RemoteRepo, service: Service, start_agent: Callable[..., Agent]) -> None:
    seed(remote)
    before = remote.remote_head()
    agent = start_agent(remote, service.url, poll=3600)
    away = remote.bare.with_name("remote-away.git")
    remote.bare.rename(away)
    service.save(definition(service, "hello", args=["while git is down"]))
    cycle(agent)
    shown = status(agent)
    assert shown["outbox_length"] == 1 and "flush" in shown["failing_steps"]
    assert 'gitsync_outbox_length{target="default"} 1.0' in metrics(agent)
    assert 'gitsync_step_failing{step="flush",target="default"} 1.0' in metrics(agent)
    away.rename(remote.bare)
    wait_until(lambda: new_commits(remote, before), TIMEOUT, "the kept change to be pushed (push retry)")
    assert 'args = ["while git is down"]' in remote.show("jobs/hello.kit")
    wait_until(lambda: not Outbox(agent.syncer.state).entries(), TIMEOUT, "the outbox to empty")


@pytest.mark.parametrize("service", ["redis"], indirect=True)
def test_changes_waiting_in_the_outbox_survive_sync_once_and_outbox_drop_keeps_one_on_a_conflict_branch(
        remote: RemoteRepo, service: Service, start_agent: Callable[..., Agent], tmp_path: Path,
        key_file: Path) -> None:
    seed(remote)
    agent = start_agent(remote, service.url, poll=3600, **{"target.prune": "all"})
    away = remote.bare.with_name("remote-away.git")
    remote.bare.rename(away)
    service.save(definition(service, "hello", args=["given up"]))
    service.save({"name": "nightly", "job_type": "base", "command": "/bin/backup"})
    cycle(agent)  # captured, not pushed
    assert sorted(e.target for e in Outbox(agent.syncer.state).entries()) == ["hello", "nightly"]
    agent.stop()  # before its push retry could settle them
    away.rename(remote.bare)
    env = {**os.environ, "GITSYNC_REPO_URL": remote.url, "GITSYNC_REPO_PATH": "jobs",
           "GITSYNC_TARGET_KIND": "jobs-api", "GITSYNC_TARGET_URL": service.url, "GITSYNC_TARGET_PRUNE": "all",
           "GITSYNC_TARGET_API_KEY_FILE": str(key_file), "GITSYNC_STATE_DIR": str(tmp_path / "a" / "state")}

    def gitsync(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "gitsync", *args], env=env, capture_output=True, text=True,
                              timeout=60)

    gitsync("sync", "--once")
    assert "nightly" in service.load()  # prune = all removes what git lacks, but not a change on its way to git
    assert service.load()["hello"]["args"] == ["given up"]
    done = gitsync("outbox", "drop", "hello")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "the jobs service has git's version again" in done.stdout
    branch = done.stdout.split("kept on ")[1].split(";")[0]
    assert 'args = ["given up"]' in remote.show("jobs/hello.kit", f"refs/heads/{branch}")
    assert service.load()["hello"]["args"] == ["hi"]
    state = State(tmp_path / "a" / "state")
    assert [e.target for e in Outbox(state).entries()] == ["nightly"]
    state.close()


@pytest.mark.parametrize("service", ["redis"], indirect=True)
def test_a_poll_that_fails_is_reported_in_one_cycle_and_the_change_is_pushed_once_the_service_is_back(
        remote: RemoteRepo, service: Service, start_agent: Callable[..., Agent]) -> None:
    seed(remote)
    before = remote.remote_head()
    agent = start_agent(remote, service.url, poll=3600)
    agent.syncer.target.client._retry = NO_WAIT  # the test is about what is reported, not how long retries wait
    service.save(definition(service, "hello", args=["saved just before the outage"]))
    service.stop()
    cycle(agent)
    shown = status(agent)
    assert "capture" in shown["failing_steps"] and "jobs service" in shown["failing_steps"]["capture"]
    assert 'gitsync_step_failing{step="capture",target="default"} 1.0' in metrics(agent)
    assert httpx.get(f"http://127.0.0.1:{agent.server_port}/syncz", trust_env=False).status_code == 503
    service.start()
    cycle(agent)
    assert 'args = ["saved just before the outage"]' in remote.show("jobs/hello.kit")
    assert len(new_commits(remote, before)) == 1 and "capture" not in status(agent)["failing_steps"]


@pytest.mark.parametrize("service", ["redis"], indirect=True)
def test_only_the_ha_leader_pushes_back_and_a_leader_that_lost_its_lease_pushes_nothing(
        remote: RemoteRepo, service: Service, start_agent: Callable[..., Agent], redis_url: str) -> None:
    seed(remote)
    before = remote.remote_head()
    ha = {"ha.redis_url": redis_url, "ha.lease_ttl": 30.0, "ha.key": "test:pushback"}
    leader = start_agent(remote, service.url, "a", **ha)
    follower = start_agent(remote, service.url, "b", **ha)
    service.save(definition(service, "hello", args=["once"]))
    wait_until(lambda: new_commits(remote, before), TIMEOUT, "the leader to push the save")
    cycles(leader, 2)
    cycles(follower, 2)
    assert len(new_commits(remote, before)) == 1
    assert Outbox(follower.syncer.state).entries() == []

    client = redis.Redis.from_url(redis_url)  # the leader is paused past its TTL and replaced meanwhile
    client.set("test:pushback", "elsewhere:1:token", px=30_000)
    client.close()
    head = remote.remote_head()
    service.save(definition(service, "hello", args=["after the lease was lost"]))
    wait_until(lambda: "does not hold the HA lease" in (leader.status()["last_message"] or ""), TIMEOUT,
               "the leader to notice it lost the lease")
    assert remote.remote_head() == head  # fenced: nothing pushed


@pytest.mark.parametrize("service", ["redis"], indirect=True)
def test_a_definition_created_while_the_leader_is_replaced_is_pushed_by_the_new_leader_as_a_new_file(
        remote: RemoteRepo, service: Service, start_agent: Callable[..., Agent], redis_url: str) -> None:
    service.save({"name": "legacy", "job_type": "base", "command": "/opt/legacy"})  # the operator's
    seed(remote)
    before = remote.remote_head()
    ha = {"ha.redis_url": redis_url, "ha.lease_ttl": 1.5, "ha.key": "test:failover"}
    leader = start_agent(remote, service.url, "a", **ha)
    successor = start_agent(remote, service.url, "b", **ha)
    leader.stop()  # hands the lease over
    service.save({"name": "nightly", "job_type": "base", "command": "/bin/backup"})  # before the successor looked
    wait_until(lambda: new_commits(remote, before), TIMEOUT, "the successor to push the new definition")
    assert remote.show("jobs/nightly.kit") == (  # where and how the directory target writes a new definition
        '# Job definition nightly, added by gitsync from the Farm jobs service.\n'
        '[job.nightly]\nname = "nightly"\njob_type = "base"\ncommand = "/bin/backup"')
    cycles(successor, 2)
    assert len(new_commits(remote, before)) == 1  # and the operator's own definition was never pushed
    assert "legacy" in service.load()


@pytest.mark.parametrize("service", ["redis"], indirect=True)  # a directory store ignores `active` in any case
def test_active_false_in_git_is_served_active_as_farms_directory_store_reads_the_file(
        remote: RemoteRepo, service: Service, start_agent: Callable[..., Agent]) -> None:
    remote.commit({"jobs/hello.kit": HELLO + "active = false\n"}, "an inactive definition")
    start_agent(remote, service.url, poll=3600, **{"push.mode": "off"})
    assert service.load()["hello"]["active"] is True


@pytest.mark.parametrize("service", ["redis"], indirect=True)
def test_a_change_captured_before_a_sigkill_is_pushed_after_the_restart(
        remote: RemoteRepo, service: Service, tmp_path: Path, key_file: Path) -> None:
    seed(remote)
    before = remote.remote_head()
    env = {**os.environ, "GITSYNC_REPO_URL": remote.url, "GITSYNC_REPO_PATH": "jobs",
           "GITSYNC_TARGET_KIND": "jobs-api", "GITSYNC_TARGET_URL": service.url,
           "GITSYNC_TARGET_API_KEY_FILE": str(key_file), "GITSYNC_STATE_DIR": str(tmp_path / "state"),
           "GITSYNC_TARGET_POLL_INTERVAL": "0.2", "GITSYNC_PUSH_DEBOUNCE": "0.1", "GITSYNC_SYNC_INTERVAL": "3600",
           "GITSYNC_SERVER_LISTEN": "", "GITSYNC_FAULT_POINT": "capture.put:1"}
    log = (tmp_path / "agent.log").open("wb")

    def run(environ: dict[str, str]) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "gitsync", "run"], env=environ, stdout=log,
                                stderr=subprocess.STDOUT)

    agent = run(env)
    try:
        wait_until(lambda: "hello" in service.load(), TIMEOUT, "the first sync")
        service.save(definition(service, "hello", args=["survives a kill"]))
        wait_until(lambda: agent.poll() is not None, TIMEOUT, "the agent to be killed right after capturing")
        assert agent.returncode == -signal.SIGKILL
        assert remote.remote_head() == before
        state = State(tmp_path / "state")
        assert [e.target for e in Outbox(state).entries()] == ["hello"]  # durable before anything else
        state.close()
        del env["GITSYNC_FAULT_POINT"]
        agent = run(env)
        wait_until(lambda: new_commits(remote, before), TIMEOUT, "the kept change to be pushed after the restart")
        assert 'args = ["survives a kill"]' in remote.show("jobs/hello.kit")
        assert len(new_commits(remote, before)) == 1
    finally:
        stop_process(agent)
        log.close()
    shutil.rmtree(tmp_path / "state", ignore_errors=True)
