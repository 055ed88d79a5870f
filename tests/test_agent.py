"""`gitsync run`: the Agent with its scheduler, webhook and health server on 127.0.0.1, against a real
bare remote; and the real `gitsync run` process driven with signals."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pull_helpers import SAMPLE_TARGETS, isolate, kit, kit_files, poll_until, stop_agents, url, work_dir
from pull_helpers import http as http  # fixture by import

from gitsync.agent import Agent
from gitsync.config import Settings, load_settings
from gitsync.sync import Syncer
from gitsync.testing.repos import RemoteRepo

SAMPLE_REPO = Path(__file__).resolve().parent.parent / "sample-repo"
WEBHOOK_SECRET = "hook-s3cr3t-value"
REPO_TOKEN = "tok-s3cr3t-value"

StartAgent = Callable[..., Agent]


@pytest.fixture
def tmp_path(tmp_path: Path) -> Iterator[Path]:
    """Shadows pytest's tmp_path (and so the remote fixtures' folder) with one on tmpfs: see work_dir."""
    with work_dir(tmp_path) as path:
        yield path


def settings_for(remote: RemoteRepo, root: Path, **overrides: Any) -> Settings:
    flags: dict[str, Any] = {"repo.url": remote.url, "repo.path": "jobs", "target.directory": str(root / "defs"),
                             "state.dir": str(root / "state"), "sync.interval": 0.2,
                             "server.listen": "127.0.0.1:0"}
    flags.update(overrides)
    return load_settings(None, flags, environ={})


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    isolate(monkeypatch, tmp_path)


@pytest.fixture
def start_agent(tmp_path: Path) -> Iterator[StartAgent]:
    """`start_agent(remote, **settings)`: a started Agent, stopped after the test."""
    running: list[Agent] = []

    def start(remote: RemoteRepo, **overrides: Any) -> Agent:
        settings = settings_for(remote, tmp_path, **overrides)
        agent = Agent(settings, Syncer.from_settings(settings))
        running.append(agent)
        agent.start()
        return agent

    yield start
    stop_agents(running)


def signed(body: bytes, secret: str = WEBHOOK_SECRET) -> dict[str, str]:
    return {"X-Hub-Signature-256": "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()}


def record_triggers(start: StartAgent, remote: RemoteRepo, **overrides: Any) -> tuple[Agent, list[str]]:
    """Start an agent whose sync requests are also written down (the webhook captures the method at start)."""
    reasons: list[str] = []
    original = Agent.request_sync

    def spy(self: Agent, reason: str) -> None:
        reasons.append(reason)
        original(self, reason)

    Agent.request_sync = spy  # type: ignore[method-assign]
    try:
        agent = start(remote, **overrides)
    finally:
        Agent.request_sync = original  # type: ignore[method-assign]
    return agent, reasons


def test_a_pushed_commit_reaches_the_job_directory(start_agent: StartAgent, sample_remote: RemoteRepo,
                                                    tmp_path: Path) -> None:
    target = tmp_path / "defs"
    start_agent(sample_remote)
    poll_until(lambda: kit_files(target) == list(SAMPLE_TARGETS), what="the first sync")

    sample_remote.commit({"jobs/render/thumbnail.kit": kit("thumbnail")})

    poll_until(lambda: (target / "thumbnail.kit").is_file(), what="the pushed commit to arrive")
    assert (target / "thumbnail.kit").read_text() == kit("thumbnail")


def test_a_webhook_triggers_an_immediate_sync(start_agent: StartAgent, sample_remote: RemoteRepo, tmp_path: Path,
                                              http: httpx.Client) -> None:
    agent = start_agent(sample_remote, **{"sync.interval": 3600.0})
    assert agent.wait_for_syncs(1, timeout=10)
    sample_remote.commit({"jobs/render/thumbnail.kit": kit("thumbnail")})

    response = http.post(url(agent, "/webhook"), content=b'{"ref": "refs/heads/main"}')

    assert (response.status_code, response.json()) == (202, {"queued": True})
    assert agent.wait_for_syncs(2, timeout=10)
    assert (tmp_path / "defs" / "thumbnail.kit").read_text() == kit("thumbnail")


def test_a_webhook_with_a_secret_rejects_bad_signatures_and_accepts_good_ones(
    start_agent: StartAgent, sample_remote: RemoteRepo, tmp_path: Path, http: httpx.Client
) -> None:
    secret_file = tmp_path / "webhook-secret"
    secret_file.write_text(WEBHOOK_SECRET + "\n")
    agent, reasons = record_triggers(start_agent, sample_remote, **{
        "sync.interval": 3600.0, "server.webhook_secret_file": str(secret_file)})
    assert agent.wait_for_syncs(1, timeout=10)
    body = b'{"ref": "refs/heads/main"}'
    hook = url(agent, "/webhook")

    unsigned = http.post(hook, content=body)
    wrong_secret = http.post(hook, content=body, headers=signed(body, "not-the-secret"))
    other_body = http.post(hook, content=b'{"ref": "refs/heads/evil"}', headers=signed(body))
    wrong_token = http.post(hook, content=body, headers={"X-Gitlab-Token": "not-the-secret"})

    for response in (unsigned, wrong_secret, other_body, wrong_token):
        assert response.status_code == 401
        assert response.json() == {"detail": "bad or missing webhook signature"}
    assert "webhook" not in reasons

    sample_remote.commit({"jobs/render/thumbnail.kit": kit("thumbnail")})
    accepted = http.post(hook, content=body, headers=signed(body))

    assert accepted.status_code == 202
    assert reasons.count("webhook") == 1
    assert agent.wait_for_syncs(2, timeout=10)
    assert (tmp_path / "defs" / "thumbnail.kit").is_file()
    gitlab = http.post(hook, content=body, headers={"X-Gitlab-Token": WEBHOOK_SECRET})
    assert gitlab.status_code == 202


def test_health_readiness_status_and_metrics(start_agent: StartAgent, remote: RemoteRepo,
                                             http: httpx.Client) -> None:
    agent = start_agent(remote, **{"sync.interval": 3600.0})  # an empty repository: the first sync fails
    assert agent.wait_for_syncs(1, timeout=10)

    assert (http.get(url(agent, "/healthz")).status_code, http.get(url(agent, "/healthz")).text) == (200, "ok")
    not_ready = http.get(url(agent, "/readyz"))
    assert (not_ready.status_code, not_ready.text) == (503, "not ready: no good commit applied yet")
    status = http.get(url(agent, "/status")).json()
    assert (status["last_result"], status["consecutive_failures"], status["applied_commit"]) == ("error", 1, None)
    assert "is empty" in status["last_message"]

    remote.seed_from(SAMPLE_REPO)
    assert http.post(url(agent, "/webhook")).status_code == 202
    assert agent.wait_for_syncs(2, timeout=10)

    ready = http.get(url(agent, "/readyz"))
    assert (ready.status_code, ready.text) == (200, "ready")
    status = http.get(url(agent, "/status")).json()
    assert (status["last_result"], status["applied_commit"], status["owned_files"]) == (
        "synced", remote.head(), len(SAMPLE_TARGETS))
    assert status["consecutive_failures"] == 0
    metrics = http.get(url(agent, "/metrics"))
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    lines = metrics.text.splitlines()
    assert 'gitsync_syncs_total{result="error",target="default"} 1.0' in lines
    assert 'gitsync_syncs_total{result="synced",target="default"} 1.0' in lines
    assert 'gitsync_owned_files{target="default"} 7.0' in lines
    assert 'gitsync_consecutive_failures{target="default"} 0.0' in lines


def test_no_secret_reaches_status_metrics_or_the_log(start_agent: StartAgent, sample_remote: RemoteRepo,
                                                     tmp_path: Path, http: httpx.Client,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    (tmp_path / "webhook-secret").write_text(WEBHOOK_SECRET)
    (tmp_path / "repo-token").write_text(REPO_TOKEN)
    agent = start_agent(sample_remote, **{"server.webhook_secret_file": str(tmp_path / "webhook-secret"),
                                          "repo.token_file": str(tmp_path / "repo-token")})
    assert agent.wait_for_syncs(1, timeout=10)
    body = b"{}"
    assert http.post(url(agent, "/webhook"), content=body, headers=signed(body)).status_code == 202

    status = http.get(url(agent, "/status"))
    metrics = http.get(url(agent, "/metrics"))

    assert status.json()["last_result"] == "synced"
    for shown in (status.text, metrics.text, caplog.text, json.dumps(agent.status())):
        assert WEBHOOK_SECRET not in shown
        assert REPO_TOKEN not in shown
        assert "s3cr3t" not in shown


def test_an_agent_on_a_url_with_credentials_never_shows_them(start_agent: StartAgent, remote: RemoteRepo,
                                                            http: httpx.Client,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    agent = start_agent(remote, **{"repo.url": "https://bot:pa55word-value@127.0.0.1:1/jobs.git",
                                   "sync.interval": 3600.0})
    assert agent.wait_for_syncs(1, timeout=10)

    status = http.get(url(agent, "/status")).json()
    metrics = http.get(url(agent, "/metrics")).text

    assert status["repository"] == "https://bot:****@127.0.0.1:1/jobs.git"
    assert status["last_result"] == "error" and "git fetch failed for https://bot:****@" in status["last_message"]
    assert "repo.url='https://bot:****@127.0.0.1:1/jobs.git'" in caplog.text  # the start-up line
    for shown in (json.dumps(status), metrics, caplog.text):
        assert "pa55word" not in shown


def test_stop_returns_promptly(start_agent: StartAgent, sample_remote: RemoteRepo, http: httpx.Client) -> None:
    agent = start_agent(sample_remote, **{"sync.interval": 3600.0})
    assert agent.wait_for_syncs(1, timeout=10)
    port = agent.server_port

    started = time.monotonic()
    agent.stop()
    elapsed = time.monotonic() - started

    assert elapsed < 5.0
    assert not agent._worker.is_alive()
    with pytest.raises(httpx.ConnectError):
        http.get(f"http://127.0.0.1:{port}/healthz")


def test_an_agent_on_a_cron_schedule_starts_and_syncs(start_agent: StartAgent, sample_remote: RemoteRepo,
                                                      tmp_path: Path) -> None:
    agent = start_agent(sample_remote, **{"sync.cron": "*/5 * * * *"})

    assert agent.wait_for_syncs(1, timeout=10)
    assert kit_files(tmp_path / "defs") == list(SAMPLE_TARGETS)


def test_gitsync_run_syncs_on_start_and_sighup_and_exits_0_on_sigterm(sample_remote: RemoteRepo,
                                                                      tmp_path: Path) -> None:
    target = tmp_path / "defs"
    command = [sys.executable, "-m", "gitsync", "run", "--repo", sample_remote.url, "--path", "jobs",
               "--target", str(target), "--state-dir", str(tmp_path / "state"), "--interval", "3600",
               "--listen", ""]
    log = (tmp_path / "run.log").open("w+")
    process = subprocess.Popen(command, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        poll_until(lambda: kit_files(target) == list(SAMPLE_TARGETS), timeout=30, what="the first sync")
        sample_remote.commit({"jobs/render/thumbnail.kit": kit("thumbnail")})

        process.send_signal(signal.SIGHUP)

        poll_until(lambda: (target / "thumbnail.kit").is_file(), timeout=15, what="the sync after SIGHUP")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.seek(0)
        output = log.read()
        log.close()
    assert "synced, 1 written" in output, output


def test_a_one_file_commit_keeps_every_other_files_warning_in_status_and_metrics(
        start_agent: StartAgent, remote: RemoteRepo, http: httpx.Client) -> None:
    """A one-file commit judges only the changed files; status and the metric still count every file's."""
    exts = '[settings.app.exts.folders]\n"++" = ["${job}/exts"]\n'  # a folder none of them ships: a warning
    remote.commit({f"jobs/{g}/{g}.kit": kit(g, extra=exts) for g in ("render", "bake", "check")}, "three folders")
    agent = start_agent(remote, **{"sync.interval": 3600.0})
    assert agent.wait_for_syncs(1, timeout=30)

    def problems_after(syncs: int) -> tuple[list[tuple[str, str]], str]:
        assert http.post(url(agent, "/webhook")).status_code == 202
        assert agent.wait_for_syncs(syncs, timeout=30)
        found = http.get(url(agent, "/status")).json()["problems"]
        metrics = [line for line in http.get(url(agent, "/metrics")).text.splitlines()
                   if line.startswith("gitsync_problems{")]
        return sorted((p["path"], p["severity"]) for p in found), "\n".join(sorted(metrics))

    remote.commit({"jobs/bake/bake.kit": kit("bake", args=("again",), extra=exts)}, "one file")
    listed, metrics = problems_after(2)
    assert listed == [("jobs/bake/bake.kit", "warning"), ("jobs/check/check.kit", "warning"),
                      ("jobs/render/render.kit", "warning")]
    assert 'gitsync_problems{severity="warning",target="default"} 3.0' in metrics
    assert 'gitsync_problems{severity="error",target="default"} 0.0' in metrics

    remote.commit({"jobs/check/check.kit": "[job.check\n"}, "broken")
    listed, metrics = problems_after(3)
    assert listed == [("jobs/bake/bake.kit", "warning"), ("jobs/check/check.kit", "error"),
                      ("jobs/render/render.kit", "warning")]
    assert 'gitsync_problems{severity="warning",target="default"} 2.0' in metrics
    assert 'gitsync_problems{severity="error",target="default"} 1.0' in metrics
