"""Rotating credentials: the repo token, the forge token and the webhook secret are read from their
files before each use, so a Kubernetes Secret update or an hourly GitHub App token needs no restart.
Each test rotates the secret on the server side AND in the file between two uses by one running agent:
the old value would now be refused, so only a re-read can succeed."""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import httpx
from pull_helpers import isolated as isolated  # fixtures by import: tmpfs tmp_path, cwd + env isolation
from pull_helpers import kit, kit_files
from pull_helpers import ram_tmp_path as ram_tmp_path

from gitsync.agent import build_agent
from gitsync.config import load_settings
from gitsync.forge import make_forge, token_reader
from gitsync.testing.forge_standin import GitHubStandin, RunningStandin
from gitsync.testing.repos import RemoteRepo
from gitsync.testing.transports import GitHttpServer
from gitsync.testing.waiting import wait_until

SAMPLE_REPO = Path(__file__).resolve().parent.parent / "sample-repo"
OLD, NEW = "tok-old-1111", "tok-new-2222"


def rotate(secret_file: Path, value: str) -> None:
    """As kubelet does: write a new file and rename it over the old one."""
    fresh = secret_file.with_suffix(".new")
    fresh.write_text(value + "\n", encoding="utf-8")
    fresh.replace(secret_file)


def test_a_repo_token_rotated_between_two_syncs_is_used_for_fetch_and_push(sample_remote: RemoteRepo,
                                                                           tmp_path: Path) -> None:
    GitHttpServer.enable_push(sample_remote.bare)
    token = tmp_path / "token"
    rotate(token, OLD)
    target = tmp_path / "defs"
    with GitHttpServer(sample_remote.root, {"x-access-token": OLD}) as server:
        settings = load_settings(None, {
            "repo.url": server.url(sample_remote.bare), "repo.path": "jobs", "target.directory": str(target),
            "state.dir": str(tmp_path / "state"), "server.listen": "", "push.debounce": 0.05,
        }, environ={"GITSYNC_REPO_TOKEN_FILE": str(token)})
        agent = build_agent(settings)
        try:
            assert agent.run_once("first").result == "synced"
            assert "hello-world.kit" in kit_files(target)

            server.set_password("x-access-token", NEW)  # the old token is revoked ...
            rotate(token, NEW)  # ... and the mounted secret updated, while the agent runs
            sample_remote.pull()
            sample_remote.commit({"jobs/rotated.kit": kit("rotated")}, "add rotated")
            hello = target / "hello-world.kit"  # a hand edit of a managed definition, pushed back
            hello.write_text(hello.read_text(encoding="utf-8").replace("synced by gitsync", "rotated"),
                             encoding="utf-8")

            result = agent.run_once("after rotation")
            assert result.ok, result.message
            assert "rotated.kit" in kit_files(target)

            def pushed() -> bool:  # capture waits for the file to be stable first
                agent.run_once("local change")
                return "rotated!" in sample_remote.show("jobs/hello-world.kit")

            wait_until(pushed, timeout=30, what="the hand edit pushed with the new token")
            denied = [r for r in server.requests if r.status == 401 and r.authorization]
            assert not denied, "a request went out with the revoked token"
        finally:
            agent.syncer.close()


def test_a_forge_token_rotated_between_two_calls_is_used(tmp_path: Path) -> None:
    standin = GitHubStandin(OLD)
    token = tmp_path / "forge-token"
    rotate(token, OLD)
    with RunningStandin(standin.app) as running:
        forge = make_forge("github", running.url, "acme/jobs", token_reader(str(token), None))
        assert forge.find_open_pr("gitsync/changes", "main") is None
        standin.token = NEW
        rotate(token, NEW)
        forge.set_commit_status("a" * 40, "success", "applied")
        assert standin.statuses("a" * 40)[0]["state"] == "success"
        assert all(r.headers.get("authorization") == f"Bearer {NEW}" for r in standin.requests[1:])


def test_a_rotated_webhook_secret_is_used_for_the_next_delivery(sample_remote: RemoteRepo, tmp_path: Path) -> None:
    secret = tmp_path / "webhook-secret"
    rotate(secret, OLD)
    settings = load_settings(None, {
        "repo.url": sample_remote.url, "repo.path": "jobs", "target.directory": str(tmp_path / "defs"),
        "state.dir": str(tmp_path / "state"), "server.listen": "127.0.0.1:0", "sync.interval": 3600.0,
        "server.webhook_secret_file": str(secret)}, environ={})
    agent = build_agent(settings)
    agent.start()
    try:
        hook = f"http://127.0.0.1:{agent.server_port}/webhook"
        body = b'{"ref": "refs/heads/main"}'

        def deliver(key: str) -> int:
            signature = "sha256=" + hmac.new(key.encode(), body, hashlib.sha256).hexdigest()
            with httpx.Client(trust_env=False, timeout=10) as http:
                return http.post(hook, content=body, headers={"X-GitHub-Event": "push",
                                                              "X-Hub-Signature-256": signature}).status_code

        assert deliver(OLD) == 202
        rotate(secret, NEW)
        assert (deliver(OLD), deliver(NEW)) == (401, 202)
    finally:
        agent.stop()
