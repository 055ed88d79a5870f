"""Real transports end to end: ssh:// through a loopback OpenSSH server, http:// through git http-backend.

Every test goes through the real git and ssh clients, so what is checked is what production
does: host-key verification, key and token authentication, never prompting, and keeping
credentials out of output, logs, status, the mirror, and every process's command line.
Commands that could prompt are run in a pseudo-terminal of their own (`run_in_terminal`),
because ssh and git prompt on /dev/tty, which a test runner usually does not have.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import pwd
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gitsync.agent import build_agent
from gitsync.cli import main
from gitsync.config import load_settings
from gitsync.errors import GitError
from gitsync.gitrepo import Credentials, GitMirror, Identity, PushRejected
from gitsync.secrets import Secret
from gitsync.testing.repos import RemoteRepo
from gitsync.testing.transports import (
    GitHttpServer,
    RedirectServer,
    SshServer,
    StalledServer,
    TransportUnavailable,
    basic,
    free_port,
    generate_key,
    public_key,
    run_in_terminal,
)

SAMPLE_REPO = Path(__file__).resolve().parent.parent / "sample-repo"
SAMPLE_TARGETS = sorted(p.name for p in SAMPLE_REPO.rglob("*.kit"))
TOKEN = "glpat-Zq8vTransp0rtTok3n"
WRONG_TOKEN = "ghp-wr0ngT0kenValue77"
ALICE_PASSWORD = "al1ce-inl1ne-S3cret"
ME = Identity("Transport Test", "transport@example.com")
#: The longest a command that must not hang may take: a generous bound for a loaded CI machine;
#: a prompt is caught at once by the terminal, so this only matters for a stall.
NO_HANG_TIMEOUT = 30.0


@pytest.fixture(autouse=True)
def _hermetic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No ./gitsync.toml, no ssh agent, no GITSYNC_* settings from the runner."""
    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.startswith("GITSYNC_")] + ["SSH_AUTH_SOCK", "DISPLAY"]:
        monkeypatch.delenv(name, raising=False)


def _real_known_hosts() -> Path:
    """ssh reads and writes ~/.ssh of the account (from the password database), not of $HOME."""
    return Path(pwd.getpwuid(os.getuid()).pw_dir) / ".ssh" / "known_hosts"


@pytest.fixture(autouse=True)
def _real_ssh_dir_untouched() -> Iterator[None]:
    """Every test gives ssh its own known_hosts file; none may add to the account's real one."""
    path = _real_known_hosts()
    before = path.read_bytes() if path.exists() else None
    yield
    after = path.read_bytes() if path.exists() else None
    assert after == before, f"a test changed {path}"


@dataclass
class Run:
    code: int
    out: str
    err: str


def gitsync(capfd: pytest.CaptureFixture[str], *args: str) -> Run:
    """Run the CLI in this process; output is captured at the file-descriptor level (git's included)."""
    capfd.readouterr()
    code = main(list(args))
    out, err = capfd.readouterr()
    return Run(code, out, err)


def sync_args(url: str, tmp_path: Path, *extra: str) -> list[str]:
    return ["sync", "--once", "--repo", url, "--path", "jobs", "--target", str(tmp_path / "target"),
            "--state-dir", str(tmp_path / "state"), *extra]


def status_json(capfd: pytest.CaptureFixture[str], url: str, tmp_path: Path) -> tuple[str, dict[str, Any]]:
    run = gitsync(capfd, "status", "--format", "json", "--repo", url, "--target", str(tmp_path / "target"),
                  "--state-dir", str(tmp_path / "state"))
    return run.out, json.loads(run.out)


def synced(tmp_path: Path) -> list[str]:
    target = tmp_path / "target"
    return sorted(p.name for p in target.glob("*.kit")) if target.is_dir() else []


def files_containing(root: Path, *needles: str) -> list[str]:
    """Every file under `root` holding one of `needles` (state database, mirror config, FETCH_HEAD, ...)."""
    hits = []
    for path in sorted(root.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            hits += [f"{path.relative_to(root)} holds {n!r}" for n in needles if n.encode() in data]
    return hits


def cli_command() -> list[str]:
    return [sys.executable, "-m", "gitsync"]


def cli_env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GITSYNC_", "SSH_AUTH_SOCK", "DISPLAY"))}
    env.update(settings)
    return env


@dataclass(frozen=True)
class GitCall:
    argv: tuple[str, ...]
    env: dict[str, str]


@pytest.fixture
def git_calls(monkeypatch: pytest.MonkeyPatch) -> list[GitCall]:
    """Every git process gitsync starts in this test (as a plain subprocess or through GitPython), with its
    argv and the environment it was given."""
    import subprocess

    import git.cmd

    calls: list[GitCall] = []
    real, real_popen = git.cmd.safer_popen, subprocess.Popen

    def recording(command: Any, *args: Any, **kwargs: Any) -> Any:
        argv = (command,) if isinstance(command, str) else tuple(str(c) for c in command)
        calls.append(GitCall(argv, dict(kwargs.get("env") or {})))
        return real(command, *args, **kwargs)

    def recording_popen(command: Any, *args: Any, **kwargs: Any) -> Any:
        argv = (command,) if isinstance(command, str) else tuple(str(c) for c in command)
        if argv and os.path.basename(argv[0]) == "git":
            calls.append(GitCall(argv, dict(kwargs.get("env") or {})))
        return real_popen(command, *args, **kwargs)

    monkeypatch.setattr(git.cmd, "safer_popen", recording)
    monkeypatch.setattr(subprocess, "Popen", recording_popen)
    return calls


def network_calls(calls: list[GitCall]) -> list[GitCall]:
    return [c for c in calls if len(c.argv) > 1 and c.argv[1] in ("fetch", "ls-remote", "push")]


# == ssh ============================================================================================


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    server = SshServer(tmp_path_factory.mktemp("sshd"))
    try:
        server.start()
    except (TransportUnavailable, OSError, subprocess.SubprocessError) as exc:
        pytest.skip(f"cannot run a loopback sshd here: {exc}")
    yield server
    server.stop()


@pytest.fixture
def known_hosts(tmp_path: Path, sshd: SshServer) -> Path:
    """A known_hosts file holding the test server's real host key."""
    path = tmp_path / "known_hosts"
    path.write_text(sshd.known_hosts_line(), encoding="utf-8")
    return path


def accepted_logins(sshd: SshServer) -> int:
    return sshd.log_text().count(f"Accepted publickey for {sshd.user}")


def test_ssh_sync_with_key_and_known_hosts_from_gitsync_toml(
    sshd: SshServer, sample_remote: RemoteRepo, known_hosts: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "gitsync.toml"
    config.write_text(
        f'[repo]\nurl = "{sshd.url(sample_remote.bare)}"\npath = "jobs"\n'
        f'ssh_key_file = "{sshd.client_key}"\nknown_hosts_file = "{known_hosts}"\n'
        f'[target]\ndirectory = "{tmp_path / "target"}"\n[state]\ndir = "{tmp_path / "state"}"\n',
        encoding="utf-8")
    logins = accepted_logins(sshd)
    known_before = known_hosts.read_text(encoding="utf-8")

    run = gitsync(capfd, "sync", "--once", "--config", str(config))

    assert (run.code, run.err) == (0, ""), run.err
    assert synced(tmp_path) == SAMPLE_TARGETS
    _, status = status_json(capfd, sshd.url(sample_remote.bare), tmp_path)
    assert status["applied_commit"] == sample_remote.head()
    assert status["last_result"] == "synced"
    assert accepted_logins(sshd) > logins, "the fetch did not go through sshd"
    assert known_hosts.read_text(encoding="utf-8") == known_before


def test_ssh_sync_with_key_from_environment_then_incremental(
    sshd: SshServer, sample_remote: RemoteRepo, known_hosts: Path, tmp_path: Path,
    capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GITSYNC_REPO_SSH_KEY_FILE", str(sshd.client_key))
    monkeypatch.setenv("GITSYNC_REPO_KNOWN_HOSTS_FILE", str(known_hosts))
    url = sshd.url(sample_remote.bare)

    assert gitsync(capfd, *sync_args(url, tmp_path)).code == 0
    assert synced(tmp_path) == SAMPLE_TARGETS

    text = (SAMPLE_REPO / "jobs/hello-world.kit").read_text(encoding="utf-8").replace("Hello from", "Hi from")
    sample_remote.commit({"jobs/hello-world.kit": text, "jobs/ops/gpu-checks.kit": None}, "edit over ssh")
    run = gitsync(capfd, *sync_args(url, tmp_path))

    assert run.code == 0, run.err
    assert (tmp_path / "target/hello-world.kit").read_text(encoding="utf-8") == text
    assert "gpu-checks.kit" not in synced(tmp_path)


def test_ssh_wrong_host_key_is_refused_and_nothing_applied(
    sshd: SshServer, sample_remote: RemoteRepo, tmp_path: Path, capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch
) -> None:
    impostor = generate_key(tmp_path / "impostor_host_key")
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(sshd.known_hosts_line(public_key(impostor)), encoding="utf-8")
    before = known_hosts.read_text(encoding="utf-8")
    monkeypatch.setenv("GITSYNC_REPO_SSH_KEY_FILE", str(sshd.client_key))
    monkeypatch.setenv("GITSYNC_REPO_KNOWN_HOSTS_FILE", str(known_hosts))
    url = sshd.url(sample_remote.bare)

    run = gitsync(capfd, *sync_args(url, tmp_path))

    assert run.code == 1
    first = run.err.splitlines()[0]
    assert first.startswith(f"gitsync: error: git fetch failed for {url}: "), run.err
    assert "Host key verification failed" in run.err
    assert len(run.err.splitlines()) == 1, run.err  # ssh's banner stays at debug level: one line per error
    assert synced(tmp_path) == []
    assert known_hosts.read_text(encoding="utf-8") == before
    _, status = status_json(capfd, url, tmp_path)
    assert (status["last_result"], status["applied_commit"]) == ("error", None)
    assert "Host key verification failed" in status["last_message"]


def test_ssh_unknown_host_is_refused_when_known_hosts_file_is_set(
    sshd: SshServer, sample_remote: RemoteRepo, tmp_path: Path, capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """A known_hosts file that vouches for other hosts only: strict checking must refuse this one."""
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"git.example.com {sshd.host_public_key}\n", encoding="utf-8")
    before = known_hosts.read_text(encoding="utf-8")
    monkeypatch.setenv("GITSYNC_REPO_SSH_KEY_FILE", str(sshd.client_key))
    monkeypatch.setenv("GITSYNC_REPO_KNOWN_HOSTS_FILE", str(known_hosts))

    run = gitsync(capfd, *sync_args(sshd.url(sample_remote.bare), tmp_path))

    assert known_hosts.read_text(encoding="utf-8") == before, "the unknown host key was added to known_hosts"
    assert run.code == 1
    assert "Host key verification failed" in run.err
    assert synced(tmp_path) == []


def test_ssh_without_a_key_fails_fast_with_an_authentication_error(
    sshd: SshServer, sample_remote: RemoteRepo, known_hosts: Path, tmp_path: Path
) -> None:
    url = sshd.url(sample_remote.bare)
    run = run_in_terminal([*cli_command(), *sync_args(url, tmp_path)], cwd=tmp_path, timeout=NO_HANG_TIMEOUT,
                          env=cli_env(GITSYNC_REPO_KNOWN_HOSTS_FILE=str(known_hosts)))

    assert not run.prompted, f"prompted on the terminal: {run.tty!r}"
    assert not run.timed_out, f"still running after {NO_HANG_TIMEOUT} s: {run.stderr}"
    assert run.returncode == 1, run.stderr
    assert f"gitsync: error: git fetch failed for {url}: " in run.stderr
    assert "Permission denied (publickey)" in run.stderr
    assert "Traceback" not in run.stderr
    assert synced(tmp_path) == []


def test_ssh_passphrase_protected_key_is_not_prompted_for(
    sshd: SshServer, sample_remote: RemoteRepo, known_hosts: Path, tmp_path: Path
) -> None:
    """BatchMode: ssh must not ask for the key's passphrase on the terminal, it must fail.

    The key is authorised, because ssh only asks for a passphrase once the server accepts the
    public half; without BatchMode this test sees "Enter passphrase for key" on the terminal."""
    locked = generate_key(tmp_path / "locked_key", passphrase="correct horse battery staple")
    sshd.authorize(locked)
    url = sshd.url(sample_remote.bare)
    run = run_in_terminal([*cli_command(), *sync_args(url, tmp_path)], cwd=tmp_path, timeout=NO_HANG_TIMEOUT,
                          env=cli_env(GITSYNC_REPO_KNOWN_HOSTS_FILE=str(known_hosts),
                                      GITSYNC_REPO_SSH_KEY_FILE=str(locked)))

    assert not run.prompted, f"prompted on the terminal: {run.tty!r}"
    assert not run.timed_out, f"still running after {NO_HANG_TIMEOUT} s: {run.stderr}"
    assert run.returncode == 1, run.stderr
    assert "Permission denied (publickey)" in run.stderr
    assert synced(tmp_path) == []


def test_ssh_push_back_through_git_mirror(
    sshd: SshServer, sample_remote: RemoteRepo, known_hosts: Path, tmp_path: Path
) -> None:
    creds = Credentials(ssh_key_file=str(sshd.client_key), known_hosts_file=str(known_hosts))
    mirror = GitMirror(tmp_path / "mirror.git", sshd.url(sample_remote.bare), "main", credentials=creds, timeout=20)
    try:
        head = mirror.fetch()
        assert head == sample_remote.head()
        sha = mirror.build_commit(head, {"jobs/pushed.kit": b'[job.pushed]\njob_type = "base"\nname = "pushed"\n'
                                         b'command = "/bin/true"\n', "jobs/ops/gpu-checks.kit": None},
                                  "Pushed over ssh", ME, ME)
        mirror.push(sha, "main")

        assert sample_remote.remote_head() == sha
        assert sample_remote.log()[0] == "Pushed over ssh"
        assert 'name = "pushed"' in sample_remote.show("jobs/pushed.kit")
        # a second push of a commit built on the old head loses the race: PushRejected, not a generic error
        stale = mirror.build_commit(head, {"jobs/other.kit": b"# x\n"}, "stale", ME, ME)
        with pytest.raises(PushRejected):
            mirror.push(stale, "main")
    finally:
        mirror.close()


def test_ssh_agent_cycle_pushes_a_hand_edit(
    sshd: SshServer, sample_remote: RemoteRepo, known_hosts: Path, tmp_path: Path
) -> None:
    url = sshd.url(sample_remote.bare)
    settings = load_settings(None, {"repo.url": url, "repo.path": "jobs", "target.directory": str(tmp_path / "target"),
                                    "state.dir": str(tmp_path / "state")},
                             environ={"GITSYNC_REPO_SSH_KEY_FILE": str(sshd.client_key),
                                      "GITSYNC_REPO_KNOWN_HOSTS_FILE": str(known_hosts),
                                      "GITSYNC_SERVER_LISTEN": "", "GITSYNC_SYNC_TIMEOUT": "20"})
    (tmp_path / "target").mkdir()  # Farm's job directory exists before the agent starts
    agent = build_agent(settings)
    try:
        assert agent.run_once("start").result == "synced"
        edited = (tmp_path / "target/hello-world.kit").read_text(encoding="utf-8").replace(
            "Hello from Omniverse Farm", "Edited by hand on the farm")
        (tmp_path / "target/hello-world.kit").write_text(edited, encoding="utf-8")

        result = agent.run_once("local change")

        assert result.ok, result.message
        assert "Edited by hand on the farm" in sample_remote.show("jobs/hello-world.kit")
        assert sample_remote.log()[0] == "Update hello-world from hand edit"
        assert agent.syncer.state.get("applied_commit") == sample_remote.remote_head()
    finally:
        agent.syncer.close()


def test_ssh_key_path_with_a_space(
    sshd: SshServer, sample_remote: RemoteRepo, known_hosts: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = tmp_path / "deploy keys"
    keys.mkdir()
    key = keys / "id ed25519"
    key.write_bytes(sshd.client_key.read_bytes())
    key.chmod(0o600)
    monkeypatch.setenv("GITSYNC_REPO_SSH_KEY_FILE", str(key))
    monkeypatch.setenv("GITSYNC_REPO_KNOWN_HOSTS_FILE", str(known_hosts))

    run = gitsync(capfd, *sync_args(sshd.url(sample_remote.bare), tmp_path))

    assert run.code == 0, run.err
    assert synced(tmp_path) == SAMPLE_TARGETS


# == smart HTTP =====================================================================================


@pytest.fixture
def http(sample_remote: RemoteRepo) -> Iterator[GitHttpServer]:
    """git http-backend over the sample remote; push enabled; accounts for the token and for alice."""
    GitHttpServer.enable_push(sample_remote.bare)
    server = GitHttpServer(sample_remote.root, {"x-access-token": TOKEN, "oauth2": TOKEN, "alice": ALICE_PASSWORD},
                           watch_argv=[TOKEN, WRONG_TOKEN])
    with server:
        yield server


def b64_needles(user: str, password: str) -> tuple[str, str]:
    """The secret and its form on the wire, either of which would leak it."""
    return password, base64.b64encode(f"{user}:{password}".encode()).decode()


def token_file(tmp_path: Path, value: str) -> Path:
    path = tmp_path / "token"
    path.write_text(value + "\n", encoding="utf-8")  # mounted secrets often end in a newline
    return path


def test_http_sync_with_token_file_sends_basic_auth_and_keeps_it_off_argv(
    http: GitHttpServer, sample_remote: RemoteRepo, tmp_path: Path, capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch, git_calls: list[GitCall]
) -> None:
    monkeypatch.setenv("GITSYNC_REPO_TOKEN_FILE", str(token_file(tmp_path, TOKEN)))
    url = http.url(sample_remote.bare)

    run = gitsync(capfd, *sync_args(url, tmp_path))

    assert (run.code, run.err) == (0, ""), run.err
    assert synced(tmp_path) == SAMPLE_TARGETS
    assert http.requests, "git never reached the HTTP server"
    assert all(r.user == "x-access-token" and r.status == 200 for r in http.requests), http.requests
    assert set(http.authorization_headers) == {basic("x-access-token", TOKEN)}
    assert http.backend_errors == []
    # the token travels in git's environment (as config), never on a command line
    needles = b64_needles("x-access-token", TOKEN)
    fetches = network_calls(git_calls)
    assert fetches
    for call in fetches:
        assert call.env["GIT_CONFIG_VALUE_0"] == f"Authorization: {basic('x-access-token', TOKEN)}"
        assert call.env["GIT_CONFIG_KEY_0"] == "http.extraHeader"
        assert call.env["GIT_TERMINAL_PROMPT"] == "0"
    assert [c.argv for c in git_calls if any(n in " ".join(c.argv) for n in needles)] == []
    assert http.argv_scans > 0 or not Path("/proc").is_dir()
    assert http.argv_hits == [], "a process had the token on its command line while git talked to the server"
    assert files_containing(tmp_path / "state", *needles) == []
    assert "extraheader" not in (tmp_path / "state/mirror.git/config").read_text(encoding="utf-8").lower()


def test_http_token_from_environment_with_gitlab_username(
    http: GitHttpServer, sample_remote: RemoteRepo, tmp_path: Path, capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MY_REPO_TOKEN", TOKEN)
    monkeypatch.setenv("GITSYNC_REPO_TOKEN_ENV", "MY_REPO_TOKEN")
    monkeypatch.setenv("GITSYNC_REPO_USERNAME", "oauth2")

    run = gitsync(capfd, *sync_args(http.url(sample_remote.bare), tmp_path))

    assert run.code == 0, run.err
    assert synced(tmp_path) == SAMPLE_TARGETS
    assert set(http.authorization_headers) == {basic("oauth2", TOKEN)}


def test_http_without_a_token_fails_fast_naming_url_and_authentication(
    http: GitHttpServer, sample_remote: RemoteRepo, tmp_path: Path
) -> None:
    url = http.url(sample_remote.bare)
    run = run_in_terminal([*cli_command(), *sync_args(url, tmp_path)], cwd=tmp_path, timeout=NO_HANG_TIMEOUT,
                          env=cli_env())

    assert not run.prompted, f"prompted on the terminal: {run.tty!r}"
    assert not run.timed_out, f"still running after {NO_HANG_TIMEOUT} s: {run.stderr}"
    assert run.returncode == 1, run.stderr
    assert f"gitsync: error: git fetch failed for {url}: " in run.stderr
    assert "Authentication failed" in run.stderr
    assert "Traceback" not in run.stderr
    assert {r.status for r in http.requests} == {401}
    assert synced(tmp_path) == []


def test_http_wrong_token_fails_and_is_never_shown(
    http: GitHttpServer, sample_remote: RemoteRepo, tmp_path: Path, capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch, git_calls: list[GitCall]
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("GITSYNC_REPO_TOKEN_FILE", str(token_file(tmp_path, WRONG_TOKEN)))
    url = http.url(sample_remote.bare)

    run = gitsync(capfd, *sync_args(url, tmp_path))
    status_text, status = status_json(capfd, url, tmp_path)
    history = gitsync(capfd, "history", "--state-dir", str(tmp_path / "state"), "--repo", url)

    assert run.code == 1
    assert f"gitsync: error: git fetch failed for {url}: " in run.err
    assert "Authentication failed" in run.err
    assert basic("x-access-token", WRONG_TOKEN) in http.authorization_headers, "the wrong token was never sent"
    assert all(r.status == 401 for r in http.requests)
    assert synced(tmp_path) == []
    assert (status["last_result"], status["applied_commit"]) == ("error", None)
    assert "Authentication failed" in status["last_message"]
    needles = b64_needles("x-access-token", WRONG_TOKEN)
    shown = {"stdout": run.out, "stderr": run.err, "log": caplog.text, "status --format json": status_text,
             "history": history.out + history.err}
    assert {where: n for where, text in shown.items() for n in needles if n in text} == {}
    mirror_config = (tmp_path / "state/mirror.git/config").read_text(encoding="utf-8")
    assert [n for n in needles if n in mirror_config] == []
    assert files_containing(tmp_path / "state", *needles) == []  # the state database and all of the mirror
    assert [c.argv for c in git_calls if any(n in " ".join(c.argv) for n in needles)] == []
    assert http.argv_hits == []


def test_http_inline_credentials_work_and_are_redacted(
    http: GitHttpServer, sample_remote: RemoteRepo, tmp_path: Path, capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    plain = http.url(sample_remote.bare)
    url = plain.replace("http://", f"http://alice:{ALICE_PASSWORD}@")

    run = gitsync(capfd, *sync_args(url, tmp_path))
    status_text, status = status_json(capfd, url, tmp_path)

    assert (run.code, run.err) == (0, ""), run.err
    assert synced(tmp_path) == SAMPLE_TARGETS
    assert basic("alice", ALICE_PASSWORD) in http.authorization_headers
    assert status["repository"] == plain.replace("http://", "http://alice:****@")
    needles = b64_needles("alice", ALICE_PASSWORD)
    shown = {"stdout": run.out, "stderr": run.err, "log": caplog.text, "status --format json": status_text}
    assert {where: n for where, text in shown.items() for n in needles if n in text} == {}
    mirror_config = (tmp_path / "state/mirror.git/config").read_text(encoding="utf-8")
    assert [n for n in needles if n in mirror_config] == []
    assert files_containing(tmp_path / "state", *needles) == []  # FETCH_HEAD and the state database too


def test_http_inline_credentials_are_redacted_in_errors(
    http: GitHttpServer, sample_remote: RemoteRepo, tmp_path: Path, capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    plain = http.url(sample_remote.bare)
    url = plain.replace("http://", f"http://alice:{ALICE_PASSWORD}@")
    bad_password = "n0t-al1ces-Passw0rd"

    missing_branch = gitsync(capfd, *sync_args(url, tmp_path, "--branch", "release"))
    wrong_password = gitsync(capfd, *sync_args(url.replace(ALICE_PASSWORD, bad_password), tmp_path / "second"))
    status_text, status = status_json(capfd, url, tmp_path)

    assert missing_branch.code == 1
    assert (f"branch 'release' does not exist in {plain.replace('http://', 'http://alice:****@')} "
            "(branches: main)") in missing_branch.err
    assert wrong_password.code == 1
    assert "Authentication failed" in wrong_password.err
    assert "****" in status["repository"]
    shown = {"missing branch": missing_branch.out + missing_branch.err,
             "wrong password": wrong_password.out + wrong_password.err,
             "log": caplog.text, "status --format json": status_text}
    needles = (*b64_needles("alice", ALICE_PASSWORD), *b64_needles("alice", bad_password))
    assert {where: n for where, text in shown.items() for n in needles if n in text} == {}
    assert files_containing(tmp_path / "state", *needles) == []
    assert files_containing(tmp_path / "second", *needles) == []


def test_http_push_back_with_token(
    http: GitHttpServer, sample_remote: RemoteRepo, tmp_path: Path, git_calls: list[GitCall]
) -> None:
    mirror = GitMirror(tmp_path / "mirror.git", http.url(sample_remote.bare), "main",
                       credentials=Credentials(token=Secret(TOKEN)), timeout=20)
    try:
        head = mirror.fetch()
        sha = mirror.build_commit(head, {"jobs/hello-world.kit": None}, "Remove hello-world over HTTP", ME, ME)
        mirror.push(sha, "main")
    finally:
        mirror.close()

    assert sample_remote.remote_head() == sha
    assert sample_remote.log()[0] == "Remove hello-world over HTTP"
    pushes = [r for r in http.requests if r.path.endswith("/git-receive-pack") and r.method == "POST"]
    assert [(r.user, r.status) for r in pushes] == [("x-access-token", 200)]
    assert [c.argv for c in git_calls if any(n in " ".join(c.argv) for n in b64_needles("x-access-token", TOKEN))] == []
    assert http.argv_hits == []


def test_http_push_without_a_token_is_an_authentication_error(
    http: GitHttpServer, sample_remote: RemoteRepo, tmp_path: Path
) -> None:
    url = http.url(sample_remote.bare)
    with_token = GitMirror(tmp_path / "mirror.git", url, "main", credentials=Credentials(token=Secret(TOKEN)))
    head = with_token.fetch()
    sha = with_token.build_commit(head, {"jobs/new.kit": b"# new\n"}, "anonymous push", ME, ME)
    with_token.close()
    anonymous = GitMirror(tmp_path / "mirror.git", url, "main", timeout=20)
    try:
        with pytest.raises(GitError) as caught:
            anonymous.push(sha, "main")
    finally:
        anonymous.close()

    assert not isinstance(caught.value, PushRejected)
    assert f"git push failed for {url}" in str(caught.value)
    assert "Authentication failed" in str(caught.value)
    assert sample_remote.remote_head() == head


def test_http_token_is_not_sent_to_another_host_after_a_redirect(
    sample_remote: RemoteRepo, tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = GitHttpServer(sample_remote.root, {"x-access-token": TOKEN})
    with elsewhere, RedirectServer(f"http://localhost:{elsewhere.port}") as redirect:
        monkeypatch.setenv("GITSYNC_REPO_TOKEN_FILE", str(token_file(tmp_path, TOKEN)))
        gitsync(capfd, *sync_args(redirect.url("remote.git"), tmp_path))

    assert redirect.authorization == [basic("x-access-token", TOKEN)], "the configured host got the token"
    assert basic("x-access-token", TOKEN) not in elsewhere.authorization_headers, \
        "the token configured for 127.0.0.1 was sent to localhost"


# == the harness itself =============================================================================


def test_terminal_harness_catches_a_prompt(http: GitHttpServer, sample_remote: RemoteRepo, tmp_path: Path) -> None:
    """Control: without gitsync's environment git does prompt on the terminal, and the harness sees it."""
    env = cli_env(GIT_TERMINAL_PROMPT="1")
    env.pop("GIT_ASKPASS", None)
    env.pop("SSH_ASKPASS", None)
    run = run_in_terminal(["git", "ls-remote", http.url(sample_remote.bare)], cwd=tmp_path, timeout=10, env=env)

    assert run.prompted
    assert "Username for" in run.tty


# == a remote that hangs ============================================================================


@pytest.mark.parametrize("scheme", ["http", "ssh"])
def test_a_stalled_remote_times_out_with_a_clear_redacted_error(
    scheme: str, tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """sync.timeout bounds a fetch whose server accepts the connection and then says nothing."""
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("GITSYNC_SYNC_TIMEOUT", "1.5")
    with StalledServer() as stalled:
        url = (f"http://alice:{ALICE_PASSWORD}@127.0.0.1:{stalled.port}/remote.git" if scheme == "http"
               else f"ssh://git@127.0.0.1:{stalled.port}/srv/remote.git")
        started = time.monotonic()
        run = gitsync(capfd, *sync_args(url, tmp_path))
        took = time.monotonic() - started

    assert stalled.connections >= 1
    assert run.code == 1
    assert "did not complete in 1.5 secs" in run.err, run.err
    assert took < 15, f"a 1.5 s timeout took {took:.1f} s"
    assert ALICE_PASSWORD not in run.err + run.out + caplog.text
    assert files_containing(tmp_path / "state", ALICE_PASSWORD) == []
    assert synced(tmp_path) == []


def test_operators_git_ssh_command_is_honoured_without_ssh_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, git_calls: list[GitCall]
) -> None:
    """Checked on the environment git gets: nothing listens on the port, so no ssh ever talks to a server
    (a real connection with gitsync's accept-new and no known_hosts file would write to ~/.ssh)."""
    operator = (f"ssh -o BatchMode=yes -o ConnectTimeout=5 -i {tmp_path}/deploy_key "
                f"-o UserKnownHostsFile={tmp_path}/known_hosts -o StrictHostKeyChecking=yes")
    monkeypatch.setenv("GIT_SSH_COMMAND", operator)
    mirror = GitMirror(tmp_path / "mirror.git", f"ssh://git@127.0.0.1:{free_port()}/srv/remote.git", "main",
                       timeout=10)
    try:
        with pytest.raises(GitError, match="Connection refused"):
            mirror.fetch()
    finally:
        mirror.close()

    fetch = network_calls(git_calls)[0]
    assert {**os.environ, **fetch.env}["GIT_SSH_COMMAND"] == operator
