"""Secrets never leave: sentinel values for the repo token, the forge token, credentials in the forge URL,
the webhook secret and the jobs API key go through every flow, failures included, and none of them
appears in the log (at DEBUG), `gitsync status`, `gitsync history`, /status, /metrics, or any file in
the state directory (the database and the mirror).

Real processes: `gitsync run` and `gitsync sync --once` as subprocesses, git http-backend behind Basic
auth, the GitHub stand-in, the jobs service stand-in, all over HTTP on 127.0.0.1.
"""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pull_helpers import work_dir

from gitsync.jobs_service.config import JobsServiceConfig
from gitsync.jobs_service.server import RunningJobsService
from gitsync.secrets import Secret
from gitsync.testing.forge_standin import GitHubStandin, RunningStandin
from gitsync.testing.repos import RemoteRepo
from gitsync.testing.transports import GitHttpServer
from gitsync.testing.waiting import wait_until

SAMPLE_REPO = Path(__file__).resolve().parent.parent / "sample-repo"
REPO_TOKEN = "SENTINEL-repo-token-4f1a"
FORGE_TOKEN = "SENTINEL-forge-token-9c2b"
FORGE_URL_PASSWORD = "SENTINEL-forge-url-77d0"
WEBHOOK_SECRET = "SENTINEL-webhook-secret-1e5c"
API_KEY = "SENTINEL-api-key-3a9e"
WRONG_API_KEY = "SENTINEL-wrong-api-key-b81f"
SENTINELS = (REPO_TOKEN, FORGE_TOKEN, FORGE_URL_PASSWORD, WEBHOOK_SECRET, API_KEY, WRONG_API_KEY)


def needles() -> list[bytes]:
    """Each sentinel as text and in the encodings it travels in (Basic auth headers)."""
    found = []
    for value in SENTINELS:
        found.append(value.encode())
        for user in ("x-access-token", "robot"):
            found.append(base64.b64encode(f"{user}:{value}".encode()))
    return found


def leaks(text: str | bytes) -> list[str]:
    data = text.encode() if isinstance(text, str) else text
    return [n.decode() for n in needles() if n in data]


def leaking_files(root: Path) -> list[str]:
    return [f"{path}: {leaks(path.read_bytes())}" for path in root.rglob("*")
            if path.is_file() and not path.is_symlink() and leaks(path.read_bytes())]


@pytest.fixture
def tmp_path(tmp_path: Path) -> Iterator[Path]:
    with work_dir(tmp_path) as path:
        yield path


def gitsync(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gitsync", "--log-level", "DEBUG", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120, env=_env())


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("GITSYNC_")}


def test_no_secret_reaches_a_log_a_status_a_metric_or_the_state_in_any_flow(tmp_path: Path) -> None:
    remote = RemoteRepo(tmp_path / "repos" / "farm")
    remote.seed_from(SAMPLE_REPO)
    GitHttpServer.enable_push(remote.bare)
    (tmp_path / "repo-token").write_text(REPO_TOKEN + "\n")
    (tmp_path / "forge-token").write_text(FORGE_TOKEN)
    (tmp_path / "hook-secret").write_text(WEBHOOK_SECRET)
    standin = GitHubStandin(token=FORGE_TOKEN, repository="acme/jobs")
    port = _free_port()
    outputs: list[str] = []
    with GitHttpServer(tmp_path / "repos", {"x-access-token": REPO_TOKEN}) as git_http, \
            RunningStandin(standin.app) as forge:
        forge_url = forge.url.replace("http://", f"http://robot:{FORGE_URL_PASSWORD}@")
        (tmp_path / "gitsync.toml").write_text(
            f'[repo]\nurl = "{git_http.url(remote.bare)}"\npath = "jobs"\ntoken_file = "{tmp_path / "repo-token"}"\n'
            f'[target]\ndirectory = "{tmp_path / "defs"}"\n[state]\ndir = "{tmp_path / "state"}"\n'
            f'[sync]\ninterval = 3600\n'
            f'[push]\nmode = "pull-request"\ndebounce = 0.2\nforge = "github"\nforge_api_url = "{forge_url}"\n'
            f'forge_repository = "acme/jobs"\nforge_token_file = "{tmp_path / "forge-token"}"\nmax_backoff = 1\n'
            f'[server]\nlisten = "127.0.0.1:{port}"\nwebhook_secret_file = "{tmp_path / "hook-secret"}"\n')
        log_path = tmp_path / "agent.log"
        with log_path.open("w") as log:
            agent = subprocess.Popen([sys.executable, "-m", "gitsync", "--log-level", "DEBUG", "run", "--config",
                                      str(tmp_path / "gitsync.toml")], cwd=tmp_path, stdout=log,
                                     stderr=subprocess.STDOUT, env=_env())
        base = f"http://127.0.0.1:{port}"
        http = httpx.Client(trust_env=False, timeout=10)
        try:
            wait_until(lambda: _get(http, f"{base}/readyz") == 200, timeout=60, what="the first sync")
            # a local change: push-back to a PR branch with the repo token, then the forge call with both
            # the URL credentials and the token (the stand-in refuses the URL's Basic auth: a failure flow)
            hello = tmp_path / "defs" / "hello-world.kit"
            hello.write_text(hello.read_text().replace("synced by gitsync!", "edited by hand"))
            wait_until(lambda: "gitsync/" in " ".join(remote.branches()) or _status(http, base)["push_last_error"],
                       timeout=60, what="the push-back to run")
            # webhooks: the secret sent as a GitLab token (accepted), a wrong one, and a forged signature
            http.post(f"{base}/webhook", content=b"{}", headers={"X-Gitlab-Token": WEBHOOK_SECRET,
                                                                   "X-Gitlab-Event": "Push Hook"})
            http.post(f"{base}/webhook", content=b"{}", headers={"X-Gitlab-Token": WEBHOOK_SECRET + "x"})
            http.post(f"{base}/webhook", content=b"{}", headers={"X-Hub-Signature-256": f"sha256={WEBHOOK_SECRET}"})
            # a fetch that fails: the git server stops accepting the token
            git_http.set_password("x-access-token", "another-password")
            remote.commit({"jobs/extra.kit": '[job.extra]\njob_type = "base"\ncommand = "/bin/true"\n'})
            os.kill(agent.pid, signal.SIGHUP)
            wait_until(lambda: _status(http, base)["last_result"] == "error", timeout=60, what="the failed fetch")
            outputs += [http.get(f"{base}/status").text, http.get(f"{base}/metrics").text, http.get(f"{base}/").text]
            status = _status(http, base)
            assert "401" in status["last_message"] or "Authentication" in status["last_message"], status
        except AssertionError:
            print(log_path.read_text()[-6000:])
            raise
        finally:
            http.close()
            agent.send_signal(signal.SIGTERM)
            try:
                agent.wait(timeout=60)
            except subprocess.TimeoutExpired:
                agent.kill()
                agent.wait()
        for command in (["status", "--config", "gitsync.toml"], ["history", "--config", "gitsync.toml"],
                        ["status", "--config", "gitsync.toml", "--format", "json"]):
            ran = gitsync(*command, cwd=tmp_path)
            outputs += [ran.stdout, ran.stderr]
        logged = log_path.read_text()
    assert "HTTP Request" in logged, "httpx's request log was not exercised"
    assert leaks(logged) == [], [line for line in logged.splitlines() if leaks(line)][:5]
    assert [leaks(text) for text in outputs if leaks(text)] == []
    assert leaking_files(tmp_path / "state") == []
    assert leaks("\n".join(remote.log(fmt="%B"))) == []  # the history a push-back wrote


def test_no_api_key_reaches_the_output_or_the_state_even_when_it_is_refused(tmp_path: Path) -> None:
    remote = RemoteRepo(tmp_path / "repo")
    remote.seed_from(SAMPLE_REPO)
    key_file = tmp_path / "api-key"
    key_file.write_text(API_KEY + "\n")
    config = JobsServiceConfig(save_location=tmp_path / "job-definitions", api_key=Secret(API_KEY))
    with RunningJobsService(config, host="127.0.0.1", port=0) as service:
        url = service.base_url + config.url_prefix
        (tmp_path / "gitsync.toml").write_text(
            f'[repo]\nurl = "{remote.url}"\npath = "jobs"\n'
            f'[target]\nkind = "jobs-api"\nurl = "{url}"\napi_key_file = "{key_file}"\n'
            f'[state]\ndir = "{tmp_path / "state"}"\n')
        outputs = []
        good = gitsync("sync", "--once", "--config", "gitsync.toml", cwd=tmp_path)
        outputs += [good.stdout, good.stderr]
        assert good.returncode == 0, good.stderr
        key_file.write_text(WRONG_API_KEY)
        remote.commit({"jobs/hello-world.kit": None}, "drop hello")
        refused = gitsync("sync", "--once", "--config", "gitsync.toml", cwd=tmp_path)
        outputs += [refused.stdout, refused.stderr]
        assert refused.returncode == 1 and "403" in refused.stderr, refused.stderr
        for command in (["status", "--config", "gitsync.toml"], ["history", "--config", "gitsync.toml"]):
            ran = gitsync(*command, cwd=tmp_path)
            outputs += [ran.stdout, ran.stderr]
    assert [leaks(text) for text in outputs if leaks(text)] == []
    assert leaking_files(tmp_path / "state") == []


def _get(http: httpx.Client, url: str) -> int:
    try:
        return http.get(url).status_code
    except httpx.TransportError:
        return 0


def _status(http: httpx.Client, base: str) -> dict[str, object]:
    data: dict[str, object] = http.get(f"{base}/status").json()
    return data


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
