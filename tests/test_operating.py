"""Operating the agent: the status page in a real headless browser, health and readiness that mean
something, metrics for alerting, webhook event filtering, and forge commit statuses."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pull_helpers import SAMPLE_TARGETS, kit, kit_files, poll_until, stop_agents, url
from pull_helpers import http as http  # fixture by import
from pull_helpers import isolated as isolated  # fixtures by import: tmpfs tmp_path, cwd + env isolation
from pull_helpers import ram_tmp_path as ram_tmp_path

from gitsync.agent import Agent, build_agent
from gitsync.config import load_settings
from gitsync.testing.forge_standin import GitHubStandin, RunningStandin
from gitsync.testing.repos import RemoteRepo

SECRET = "hook-s3cr3t-value"
BROKEN = '[job.hello-world]\njob_type = "base"\ncommand = "/bin/echo\n'
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

StartAgent = Callable[..., Agent]


@pytest.fixture
def start_agent(tmp_path: Path) -> Iterator[StartAgent]:
    running: list[Agent] = []

    def start(remote: RemoteRepo, **overrides: Any) -> Agent:
        secret = tmp_path / "webhook-secret"
        secret.write_text(SECRET + "\n", encoding="utf-8")
        flags: dict[str, Any] = {"repo.url": remote.url, "repo.path": "jobs",
                                 "target.directory": str(tmp_path / "defs"),
                                 "state.dir": str(tmp_path / "state"), "sync.interval": 3600.0,
                                 "server.listen": "127.0.0.1:0", "server.webhook_secret_file": str(secret),
                                 "push.debounce": 0.05}
        flags.update(overrides)
        agent = build_agent(load_settings(None, flags, environ={}))
        # Every sync request with its reason, recorded before start() hands `request_sync` to the webhook, the
        # watcher and the timer: the agent's own writes in its first sync also ask for a cycle ("local change"),
        # so counting cycles cannot tell whether a webhook asked for one.
        requested: list[str] = []
        ask = agent.request_sync

        def request_sync(reason: str) -> None:
            requested.append(reason)
            ask(reason)

        agent.request_sync = request_sync  # type: ignore[method-assign]
        agent.requested = requested  # type: ignore[attr-defined]
        running.append(agent)
        agent.start()
        return agent

    yield start
    stop_agents(running)


def signed(body: bytes, headers: dict[str, str], secret: str = SECRET) -> dict[str, str]:
    return {**headers, "X-Hub-Signature-256": "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()}


def metric_values(http: httpx.Client, agent: Agent) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = http.get(url(agent, "/metrics")).text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


# == the status page ===============================================================================

def dump_dom(page_url: str, profile: Path) -> str:
    """The page as a real browser renders it (no JavaScript involved on our side)."""
    assert CHROMIUM is not None
    profile.mkdir()
    done = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                           "--disable-background-networking", "--disable-component-update", "--disable-sync",
                           f"--user-data-dir={profile}", "--dump-dom", page_url],
                          capture_output=True, text=True, timeout=90, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_the_status_page_shows_commits_problems_pushbacks_and_history_in_a_browser(
        start_agent: StartAgent, sample_remote: RemoteRepo, tmp_path: Path, http: httpx.Client) -> None:
    agent = start_agent(sample_remote, **{"push.mode": "direct"})
    poll_until(lambda: kit_files(tmp_path / "defs") == list(SAMPLE_TARGETS), what="the first sync")
    good = sample_remote.head()
    bad = sample_remote.commit({"jobs/hello-world.kit": BROKEN}, "Break hello-world on purpose")
    body = json.dumps({"ref": "refs/heads/main"}).encode()
    http.post(url(agent, "/webhook"), content=body, headers=signed(body, {"X-GitHub-Event": "push"}))
    poll_until(lambda: agent.status()["head_commit"] == bad, what="the broken commit to be fetched")

    dom = dump_dom(url(agent, "/"), tmp_path / "chromium-profile")

    assert "<script" not in dom.lower()
    assert good[:12] in dom and "Import job definitions" in dom and "Test Author" in dom  # applied commit
    assert bad[:12] in dom and "Break hello-world on purpose" in dom  # the head, not applied
    (problem,) = [p for p in agent.status()["problems"] if p["severity"] == "error"]
    assert problem["path"] == "jobs/hello-world.kit"
    assert f"jobs/hello-world.kit:{problem['line']}" in dom and problem["message"] in dom  # at file:line
    assert "next scheduled sync" in dom and "in " in dom.split("next scheduled sync", 1)[1][:80]
    assert "invalid" in dom and "synced" in dom  # recent syncs with their results
    for section in ("Pending push-backs", "Conflict branches", "Open pull requests", "Recent syncs"):
        assert section in dom
    assert SECRET not in dom and SECRET not in http.get(url(agent, "/")).text


def test_the_status_page_escapes_what_it_shows() -> None:
    from gitsync.model import HistoryRow
    from gitsync.status_page import PageInputs, render

    report = {"repository": "https://host/<b>repo</b>", "branch": "main", "applied_commit": "a" * 40,
              "applied_commit_info": {"author": "Mallory <m@x>", "subject": "<script>alert(1)</script>", "time": 1},
              "last_result": "synced", "problems": [{"path": "jobs/<i>.kit", "line": 3, "severity": "error",
                                                      "message": "bad & worse", "fix": "fix it"}]}
    history = [HistoryRow(1.0, 0.5, None, "a" * 40, "synced", 1, 0, "<img src=x onerror=alert(1)>")]
    page = render(PageInputs(report, history, [], None, 100.0))
    assert "<script>" not in page and "<img" not in page and "<b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "jobs/&lt;i&gt;.kit:3" in page


def test_the_status_page_shows_a_repeated_refusal_once_with_its_count() -> None:
    from gitsync.model import HistoryRow
    from gitsync.status_page import PageInputs, render

    history = [HistoryRow(10.0, 0.5, "a" * 40, "b" * 40, "invalid", 0, 0, "commit bbbb not applied", repeats=3,
                          last_seen=70.0)]
    page = render(PageInputs({"last_result": "invalid"}, history, [], None, 100.0))
    assert page.count("commit bbbb not applied") == 1
    assert "seen 3 times, last 1970-01-01 00:01:10 UTC (30 s ago)" in page


# == health and readiness ==========================================================================

def test_readyz_stays_ready_after_a_restart_while_the_head_is_broken(start_agent: StartAgent,
                                                                   sample_remote: RemoteRepo,
                                                                   http: httpx.Client) -> None:
    agent = start_agent(sample_remote)
    assert agent.wait_for_syncs(1, timeout=30)
    assert http.get(url(agent, "/readyz")).status_code == 200
    agent.stop()
    sample_remote.commit({"jobs/hello-world.kit": BROKEN}, "broken")

    restarted = start_agent(sample_remote)
    assert restarted.wait_for_syncs(1, timeout=30)

    assert restarted.last_result is not None and restarted.last_result.result == "invalid"
    assert (http.get(url(restarted, "/readyz")).status_code, http.get(url(restarted, "/healthz")).status_code) == (
        200, 200)


def test_healthz_fails_when_a_cycle_runs_longer_than_twice_the_timeout(start_agent: StartAgent,
                                                                      sample_remote: RemoteRepo,
                                                                      http: httpx.Client) -> None:
    agent = start_agent(sample_remote, **{"sync.timeout": 0.5})
    assert agent.wait_for_syncs(1, timeout=30)
    assert http.get(url(agent, "/healthz")).status_code == 200
    release = threading.Event()
    original = agent.syncer.pull
    # A hang past every git timeout cannot be produced for real: the fault is injected into the cycle.
    agent.syncer.pull = lambda **kw: (release.wait(30), original(**kw))[1]  # type: ignore[method-assign]
    try:
        agent.request_sync("test")
        stuck = poll_until(lambda: (r := http.get(url(agent, "/healthz"))).status_code == 503 and r, timeout=20,
                           what="/healthz to notice the stuck cycle")
        assert "more than twice sync.timeout" in stuck.text
        assert http.get(url(agent, "/readyz")).status_code == 200  # the directory still holds a good commit
    finally:
        release.set()
    poll_until(lambda: http.get(url(agent, "/healthz")).status_code == 200, timeout=20, what="recovery")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the injected death
def test_healthz_fails_when_the_worker_is_dead(start_agent: StartAgent, sample_remote: RemoteRepo,
                                               http: httpx.Client) -> None:
    agent = start_agent(sample_remote)
    assert agent.wait_for_syncs(1, timeout=30)

    def die(reason: str) -> Any:  # a worker killed by something run_once cannot catch
        raise SystemExit("worker killed")

    agent.run_once = die  # type: ignore[method-assign]
    agent.request_sync("test")
    poll_until(lambda: not agent._worker.is_alive(), timeout=20, what="the worker to die")
    dead = http.get(url(agent, "/healthz"))
    assert (dead.status_code, dead.text) == (503, "the sync worker is not running")


# == webhooks ======================================================================================

@pytest.mark.parametrize(("headers", "ref", "outcome", "code"), [
    ({"X-GitHub-Event": "ping"}, None, "ping", 200),
    ({"X-GitHub-Event": "push"}, "refs/heads/other", "ignored", 202),
    ({"X-GitHub-Event": "pull_request"}, None, "ignored", 202),
    ({"X-GitHub-Event": "push"}, "refs/heads/main", "sync", 202),
    ({"X-Gitlab-Event": "Push Hook"}, "refs/heads/main", "sync", 202),
    ({"X-Gitlab-Event": "Push Hook"}, "refs/tags/v1", "ignored", 202),
    ({"X-Gitlab-Event": "Merge Request Hook"}, None, "ignored", 202),
    ({"X-Gitea-Event": "push", "X-GitHub-Event": "push"}, "refs/heads/main", "sync", 202),
    ({"X-Gitea-Event": "push", "X-GitHub-Event": "push"}, "refs/heads/dev", "ignored", 202),
])
def test_only_pushes_to_the_tracked_branch_trigger_a_sync(start_agent: StartAgent, sample_remote: RemoteRepo,
                                                          http: httpx.Client, headers: dict[str, str],
                                                          ref: str | None, outcome: str, code: int) -> None:
    agent = start_agent(sample_remote)
    assert agent.wait_for_syncs(1, timeout=30)
    body = json.dumps({"ref": ref} if ref else {"zen": "hello"}).encode()
    sent = {**headers, "X-Gitlab-Token": SECRET} if "X-Gitlab-Event" in headers else signed(body, headers)

    response = http.post(url(agent, "/webhook"), content=body, headers=sent)

    assert response.status_code == code
    assert metric_values(http, agent)[("gitsync_webhooks_total", (("result", outcome),))] == 1
    # The answer is given only after the decision, so a sync the webhook asked for is already recorded.
    asked = agent.requested.count("webhook")  # type: ignore[attr-defined]
    assert asked == (1 if outcome == "sync" else 0), agent.requested  # type: ignore[attr-defined]
    if outcome == "sync":
        assert agent.wait_for_syncs(2, timeout=30)


def test_a_rejected_webhook_is_logged_without_the_secret_and_counted(start_agent: StartAgent,
                                                                     sample_remote: RemoteRepo, http: httpx.Client,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    agent = start_agent(sample_remote)
    assert agent.wait_for_syncs(1, timeout=30)
    body = b'{"ref": "refs/heads/main"}'
    with caplog.at_level(logging.WARNING, logger="gitsync.server"):
        wrong = http.post(url(agent, "/webhook"), content=body,
                          headers=signed(body, {"X-GitHub-Event": "push"}, secret="guessed-" + SECRET))
        token = http.post(url(agent, "/webhook"), content=body,
                          headers={"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": SECRET + "x"})
    assert (wrong.status_code, token.status_code) == (401, 401)
    refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refused) == 2 and "X-GitHub-Event" in refused[0].replace("x-github-event", "X-GitHub-Event")
    assert not any(SECRET in line for line in refused)
    assert metric_values(http, agent)[("gitsync_webhooks_total", (("result", "unauthorized"),))] == 2
    assert agent.syncs_done == 1


# == metrics =======================================================================================

def test_every_declared_metric_is_updated(start_agent: StartAgent, sample_remote: RemoteRepo, tmp_path: Path,
                                          http: httpx.Client) -> None:
    """Drive the agent through syncs, a refusal, a push, a conflict and webhooks; every metric moves."""
    agent = start_agent(sample_remote)
    target = tmp_path / "defs"
    poll_until(lambda: kit_files(target) == list(SAMPLE_TARGETS), what="the first sync")
    seen: dict[str, set[float]] = {}

    def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        values = metric_values(http, agent)
        for (name, _labels), value in values.items():
            if not name.endswith("_created"):  # a counter's creation time says nothing about its use
                seen.setdefault(name, set()).add(value)
        return values

    def scrape_until(condition: Callable[[dict[tuple[str, tuple[tuple[str, str], ...]], float]], bool],
                     what: str) -> None:
        # The status is written in the cycle's record step and the metrics only after it: polling the status
        # and scraping once could read the metrics of the cycle before.
        poll_until(lambda: condition(scrape()), timeout=30, what=what)

    scrape()
    hello = target / "hello-world.kit"
    hello.write_text(hello.read_text().replace("synced by gitsync", "pushed back"))
    poll_until(lambda: "pushed back" in sample_remote.show("jobs/hello-world.kit"), timeout=30, what="the push")
    pushed = ("gitsync_pushes_total", (("result", "pushed"), ("target", "default")))
    poll_until(lambda: metric_values(http, agent).get(pushed) == 1, timeout=30, what="the push to be counted")
    scrape()
    # A conflict: git and the directory change the same definition before the agent looks.
    sample_remote.pull()
    agent.stop()
    sample_remote.commit({"jobs/hello-world.kit": kit("hello-world", args=("from git",))}, "git side")
    hello.write_text(kit("hello-world", args=("from the directory",)))
    agent = start_agent(sample_remote)
    poll_until(lambda: agent.status()["conflicts"], timeout=30, what="the conflict branch")
    conflicts = ("gitsync_conflicts_total", (("target", "default"),))
    poll_until(lambda: metric_values(http, agent).get(conflicts) == 1, timeout=30, what="the conflict to be counted")
    # A local edit that makes a definition invalid: kept in the outbox as blocked, never pushed.
    (target / "gpu-checks.kit").write_text('[job.gpu-checks]\njob_type = "nope"\ncommand = "/bin/true"\n')
    agent.request_sync("local change")
    poll_until(lambda: agent.status()["outbox_blocked"], timeout=30, what="the blocked entry")
    sample_remote.pull()
    sample_remote.commit({"jobs/hello-world.kit": BROKEN}, "broken")
    body = b'{"ref": "refs/heads/main"}'
    http.post(url(agent, "/webhook"), content=body, headers=signed(body, {"X-GitHub-Event": "push"}))
    refused = ("gitsync_syncs_total", (("result", "invalid"), ("target", "default")))
    scrape_until(lambda values: values.get(refused, 0) >= 1, what="the refusal to be counted")
    http.post(url(agent, "/webhook"), content=body, headers={"X-GitHub-Event": "push"})
    scrape()
    os.symlink("loop.kit", target / "loop.kit")  # a step that fails: stat() gives ELOOP, even for root
    agent.request_sync("test")
    scrape_until(lambda values: any(v == 1 for (n, _), v in values.items() if n == "gitsync_step_failing"),
                 what="a failing step in the metrics")

    declared = {m.name for m in agent.metrics.registry.collect()}
    assert len(declared) >= 14
    for name in declared:
        values = {v for n, vs in seen.items() if n == name or n.startswith(name + "_") for v in vs}
        assert values - {0.0}, f"metric {name} was never updated (values seen: {values})"
    info = [k for k in metric_values(http, agent) if k[0] == "gitsync_commit_info"]
    labels = dict(info[0][1])
    assert labels["head"] == sample_remote.head() and labels["applied"] != labels["head"]


# == forge commit status ===========================================================================

def test_each_apply_and_refusal_posts_a_commit_status(start_agent: StartAgent, sample_remote: RemoteRepo,
                                                       tmp_path: Path) -> None:
    standin = GitHubStandin("forge-t0ken", "acme/jobs")
    token = tmp_path / "forge-token"
    token.write_text("forge-t0ken\n")
    with RunningStandin(standin.app) as forge:
        agent = start_agent(sample_remote, **{
            "sync.commit_status": True, "push.forge": "github", "push.forge_api_url": forge.url,
            "push.forge_repository": "acme/jobs", "push.forge_token_file": str(token)})
        good = sample_remote.head()
        poll_until(lambda: standin.statuses(good), timeout=30, what="the success status")
        assert [(s["state"], s["context"]) for s in standin.statuses(good)] == [("success", "gitsync")]
        assert "applied to" in standin.statuses(good)[0]["description"]

        bad = sample_remote.commit({"jobs/hello-world.kit": BROKEN}, "broken")
        agent.request_sync("test")
        poll_until(lambda: standin.statuses(bad), timeout=30, what="the failure status")
        (failure,) = standin.statuses(bad)
        assert failure["state"] == "failure" and "not applied" in failure["description"]
        agent.request_sync("again")
        assert agent.wait_for_syncs(agent.syncs_done + 1, timeout=30)
        assert len(standin.statuses(bad)) == 1, "a status is posted once per commit, not every cycle"
    assert os.environ.get("GITSYNC_SYNC_COMMIT_STATUS") is None


def test_sync_once_posts_the_commit_status_too(sample_remote: RemoteRepo, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from pull_helpers import gitsync

    standin = GitHubStandin("forge-t0ken", "acme/jobs")
    token = tmp_path / "forge-token"
    token.write_text("forge-t0ken\n")
    bad = sample_remote.commit({"jobs/hello-world.kit": BROKEN}, "broken")
    args = ("sync", "--once", "--repo", sample_remote.url, "--path", "jobs", "--target", str(tmp_path / "defs"),
            "--state-dir", str(tmp_path / "state"))
    with RunningStandin(standin.app) as forge:
        assert gitsync(capsys, *args).code != 0
        assert standin.statuses(bad) == []  # off by default
        for name, value in (("SYNC_COMMIT_STATUS", "true"), ("PUSH_FORGE_API_URL", forge.url),
                            ("PUSH_FORGE_REPOSITORY", "acme/jobs"), ("PUSH_FORGE_TOKEN_FILE", str(token))):
            monkeypatch.setenv(f"GITSYNC_{name}", value)
        assert gitsync(capsys, *args).code != 0
        assert [s["state"] for s in standin.statuses(bad)] == ["failure"]
