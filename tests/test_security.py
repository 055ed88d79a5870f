"""Hostile input that must find no way in: option injection into git, oversized or malformed webhook
requests, credentials in printed URLs. Real git, real HTTP on 127.0.0.1."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import socket
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import httpx
import pytest
from pull_helpers import gitsync, isolate

from gitsync.config import load_settings
from gitsync.errors import GitError
from gitsync.forge import make_forge
from gitsync.gitrepo import GitMirror
from gitsync.http_thread import ServerThread
from gitsync.metrics import Metrics
from gitsync.secrets import Secret
from gitsync.server import build_app
from gitsync.testing.forge_standin import GitHubStandin, RunningStandin
from gitsync.testing.waiting import wait_until

SECRET = "hook-s3cr3t-value"


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    isolate(monkeypatch, tmp_path)


# -- option injection -----------------------------------------------------------------------------------

def _injection(marker: Path) -> str:
    return f"--upload-pack=touch {marker};"


def test_a_repo_flag_that_looks_like_an_option_is_refused_with_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "pwned"
    ran = gitsync(capsys, "sync", "--once", "--repo", _injection(marker), "--target", str(tmp_path / "defs"),
                  "--state-dir", str(tmp_path / "state"))
    assert ran.code == 1
    assert ran.err.strip().splitlines() == [
        f"gitsync: error: repo.url must not start with '-' (git would read it as an option), "
        f"got {_injection(marker)!r}"]
    assert not marker.exists()


def test_a_repo_url_in_the_file_that_looks_like_an_option_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "pwned"
    config = tmp_path / "gitsync.toml"
    config.write_text(f'[repo]\nurl = "{_injection(marker)}"\n[target]\ndirectory = "{tmp_path / "defs"}"\n'
                      f'[state]\ndir = "{tmp_path / "state"}"\n')
    ran = gitsync(capsys, "sync", "--once", "--config", str(config))
    assert ran.code == 1
    assert "repo.url must not start with '-'" in ran.err
    assert not marker.exists()


@pytest.mark.parametrize(("key", "value", "message"), [
    ("repo.branch", "--upload-pack=x", "repo.branch must not start with '-'"),
    ("repo.path", "-jobs", "repo.path must not start with '-'"),
    ("push.new_file_dir", "--exec=x", "push.new_file_dir must not start with '-'"),
    ("repo.branch", "main\nevil", "repo.branch must not contain control characters"),
    ("repo.branch", "a..b", "repo.branch 'a..b' is not a valid git branch name"),
])
def test_values_that_reach_git_are_checked_at_configuration_time(key: str, value: str, message: str) -> None:
    from gitsync.errors import ConfigError

    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        load_settings(None, {"repo.url": "https://example.com/x.git", key: value}, environ={})


def test_git_never_reads_a_url_as_an_option_even_past_the_configuration(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    mirror = GitMirror(tmp_path / "mirror.git", _injection(marker), "main")
    try:
        with pytest.raises(GitError):
            mirror.fetch()
        with pytest.raises(GitError):
            mirror.push("0" * 40, "main")
    finally:
        mirror.close()
    assert not marker.exists()


# -- the webhook ----------------------------------------------------------------------------------------

class Hook:
    def __init__(self, port: int, triggered: list[str]) -> None:
        self.port = port
        self.triggered = triggered

    def raw(self, head: bytes, body_chunks: Iterable[bytes] = ()) -> bytes:
        """Send a request by hand (a body that never ends, bytes no client library sends) and read the reply."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
            sock.sendall(head)
            try:
                for chunk in body_chunks:
                    sock.sendall(chunk)
            except OSError:
                pass  # the server answered and closed while we were still sending: what we want
            reply = b""
            while b"\r\n\r\n" not in reply:
                data = sock.recv(65536)
                if not data:
                    break
                reply += data
            return reply


@pytest.fixture
def hook() -> Iterator[Hook]:
    triggered: list[str] = []
    app = build_app(status=dict, ready=lambda: True, trigger=triggered.append, metrics=Metrics(),
                    webhook_secret=Secret(SECRET), max_body=1024 * 1024)
    with ServerThread(app) as server:
        yield Hook(server.port, triggered)


def _status(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1])


def test_a_huge_declared_webhook_body_is_refused_before_it_is_read(hook: Hook) -> None:
    reply = hook.raw(b"POST /webhook HTTP/1.1\r\nHost: x\r\nX-Hub-Signature-256: sha256=00\r\n"
                     b"Content-Length: 500000000\r\n\r\n")
    assert _status(reply) == 413
    assert hook.triggered == []


def test_an_endless_chunked_webhook_body_is_cut_off_at_the_limit(hook: Hook) -> None:
    chunk = b"%x\r\n%s\r\n" % (64 * 1024, b"x" * 64 * 1024)
    # 2 MiB sent, then the client waits: the answer must come without the body ever ending.
    reply = hook.raw(b"POST /webhook HTTP/1.1\r\nHost: x\r\nX-Hub-Signature-256: sha256=00\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n", iter([chunk] * 32))
    assert _status(reply) == 413
    assert hook.triggered == []


def test_an_unsigned_webhook_is_refused_without_reading_its_body(hook: Hook) -> None:
    reply = hook.raw(b"POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Length: 500000000\r\n\r\n")
    assert _status(reply) == 401


@pytest.mark.parametrize("header", [b"X-Hub-Signature-256", b"X-Gitea-Signature", b"X-Gitlab-Token"])
def test_a_non_ascii_signature_header_is_a_401_not_a_500(hook: Hook, header: bytes) -> None:
    reply = hook.raw(b"POST /webhook HTTP/1.1\r\nHost: x\r\n" + header + b": sha256=\xff\xfe\xc3\xa9\r\n"
                     b"Content-Length: 2\r\n\r\n{}")
    assert _status(reply) == 401
    assert hook.triggered == []


def test_a_correctly_signed_webhook_within_the_limit_still_triggers(hook: Hook) -> None:
    body = b'{"ref": "refs/heads/main"}'
    signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    with httpx.Client(trust_env=False) as client:
        response = client.post(f"http://127.0.0.1:{hook.port}/webhook", content=body,
                               headers={"X-Hub-Signature-256": signature})
    assert response.status_code == 202
    assert hook.triggered == ["webhook"]


def test_the_webhook_body_limit_is_a_setting() -> None:
    settings = load_settings(None, {}, environ={"GITSYNC_SERVER_WEBHOOK_MAX_BODY": "2048"})
    assert settings.server_webhook_max_body == 2048


# -- redaction -------------------------------------------------------------------------------------------

def test_forge_api_url_credentials_are_not_in_the_start_up_line() -> None:
    settings = load_settings(None, {"push.forge_api_url": "https://robot:forge-url-s3cret@forge.example/api"},
                             environ={})
    described = settings.describe()
    assert "forge-url-s3cret" not in described
    assert "push.forge_api_url='https://robot:****@forge.example/api'" in described


def test_httpx_request_log_does_not_show_url_credentials(caplog: pytest.LogCaptureFixture) -> None:
    standin = GitHubStandin(token="tok-value-1234", repository="acme/jobs")
    with RunningStandin(standin.app) as running:
        api = running.url.replace("http://", "http://robot:forge-url-s3cret@")
        forge = make_forge("github", api, "acme/jobs", Secret("tok-value-1234"))
        # the stand-in refuses these credentials: only the log line matters
        with caplog.at_level(logging.INFO, logger="httpx"), contextlib.suppress(Exception):
            forge.find_open_pr("gitsync/changes", "main")
        forge.close()  # type: ignore[attr-defined]
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "HTTP Request" in logged
    assert "forge-url-s3cret" not in logged
    assert "robot:****@" in logged


def test_a_burst_of_signed_webhooks_costs_one_sync_per_second_not_one_each(hook: Hook) -> None:
    body = b'{"ref": "refs/heads/main"}'
    signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    started = time.monotonic()
    with httpx.Client(trust_env=False) as client:
        for _ in range(200):
            response = client.post(f"http://127.0.0.1:{hook.port}/webhook", content=body,
                                   headers={"X-Hub-Signature-256": signature})
            assert response.status_code == 202
    elapsed = time.monotonic() - started
    assert hook.triggered[:1] == ["webhook"]  # the first one is not delayed
    wait_until(lambda: len(hook.triggered) >= 2, timeout=10, what="the trailing sync request")
    # one at once, then at most one per 1-second window while the burst lasts, plus the one closing it
    assert len(hook.triggered) <= 2 + int(elapsed), (len(hook.triggered), elapsed)
