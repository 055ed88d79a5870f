"""The bad-input corpus: every file under tests/data/bad/ is one hostile or broken input and the exact
message or status it must produce. Adding a case is adding a file (see tests/data/bad/README.md).

Three kinds of case:
- `commit`: a commit (or a repository operation) reaches one shared, running agent; its status must say
  exactly what the case expects, and afterwards the last good definitions are still in the job directory,
  the agent answers /healthz and nothing was written outside the target.
- `cli`: a `gitsync` command with a configuration or a damaged state directory; exact exit code and last
  line of stderr.
- `http`: a raw HTTP request to the shared agent; exact status, and the agent still answers.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import shutil
import socket
import subprocess
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from pull_helpers import gitsync, snapshot, work_dir

from gitsync.agent import Agent
from gitsync.config import load_settings
from gitsync.sync import Syncer
from gitsync.testing.repos import RemoteRepo, git
from gitsync.testing.waiting import wait_until

CORPUS = Path(__file__).resolve().parent / "data" / "bad"
SAMPLE_REPO = Path(__file__).resolve().parent.parent / "sample-repo"
WEBHOOK_SECRET = "corpus-hook-secret"
CASES = sorted(CORPUS.rglob("*.toml"))


def _load(path: Path) -> dict[str, Any]:
    return tomllib.loads(path.read_text(encoding="utf-8"))


def test_the_corpus_is_large_enough_and_every_case_names_what_it_expects() -> None:
    assert len(CASES) >= 60, len(CASES)
    for path in CASES:
        case = _load(path)
        assert case.get("kind") in ("commit", "cli", "http"), path
        assert case.get("expect"), f"{path} expects nothing"


# -- the shared agent --------------------------------------------------------------------------------------

@dataclass
class Farm:
    root: Path
    remote: RemoteRepo
    agent: Agent
    good: str
    baseline: dict[str, Any]
    outside: set[str]

    @property
    def target(self) -> Path:
        return self.root / "defs"

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.agent.server_port}{path}"

    def sync(self) -> None:
        done = self.agent.syncs_done
        self.agent.request_sync("corpus")
        assert self.agent.wait_for_syncs(done + 1, timeout=30), "the agent did not sync"
        # a request that arrived during that cycle is still queued: let it run too, so the next case starts clean
        wait_until(lambda: self.agent._wake.empty(), timeout=30, what="the sync queue to drain")
        assert self.agent.wait_for_syncs(self.agent.syncs_done, timeout=30)

    def restore(self) -> None:
        """Put the branch back on the good commit (force) and wait until the agent has it applied."""
        git("push", "--quiet", "--force", "origin", f"{self.good}:refs/heads/main", cwd=self.remote.work)
        git("reset", "--quiet", "--hard", self.good, cwd=self.remote.work)
        git("clean", "-qfdx", cwd=self.remote.work)
        self.sync()
        wait_until(lambda: self.agent.status()["applied_commit"] == self.good, timeout=30,
                   what="the good commit to be applied again")

    def entries_outside(self) -> set[str]:
        return {str(p) for p in (self.root.iterdir())} | {str(p) for p in self.root.parent.iterdir()}

    def check_unharmed(self, target_unchanged: bool = True) -> None:
        if target_unchanged:
            assert snapshot(self.target) == self.baseline, "the last good definitions were changed"
        assert httpx.get(self.url("/healthz"), timeout=10).status_code == 200
        assert self.entries_outside() == self.outside, "something was written outside the target"


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Farm]:
    with pytest.MonkeyPatch.context() as mp, work_dir(tmp_path_factory.mktemp("corpus")) as base:
        root = base / "farm"
        home = base / "home"
        home.mkdir()
        (home / ".gitconfig").write_text("[user]\n\tname = Test Author\n\temail = author@example.com\n"
                                         "[init]\n\tdefaultBranch = main\n[protocol \"file\"]\n\tallow = always\n")
        mp.setenv("HOME", str(home))
        mp.setenv("GIT_CONFIG_NOSYSTEM", "1")
        for name in [n for n in os.environ if n.startswith("GITSYNC_")]:
            mp.delenv(name)
        remote = RemoteRepo(root / "repo")
        good = remote.seed_from(SAMPLE_REPO)
        (root / "hook-secret").write_text(WEBHOOK_SECRET)
        settings = load_settings(None, {
            "repo.url": remote.url, "repo.path": "jobs", "target.directory": str(root / "defs"),
            "state.dir": str(root / "state"), "sync.interval": 3600.0, "server.listen": "127.0.0.1:0",
            "server.webhook_secret_file": str(root / "hook-secret"), "server.webhook_max_body": 65536}, environ={})
        agent = Agent(settings, Syncer.from_settings(settings))
        agent.start()
        try:
            assert agent.wait_for_syncs(1, timeout=30)
            wait_until(lambda: agent.status()["applied_commit"] == good, timeout=30, what="the first sync")
            farm = Farm(root, remote, agent, good, snapshot(root / "defs"), set())
            farm.outside = farm.entries_outside()
            yield farm
        finally:
            agent.stop()


# -- commit cases ------------------------------------------------------------------------------------------

def _apply_repo_ops(farm: Farm, case: dict[str, Any]) -> None:
    work = farm.remote.work
    for rel, text in case.get("files", {}).items():
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / rel).write_text(text, encoding="utf-8")
    for rel, data in case.get("binary", {}).items():
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / rel).write_bytes(base64.b64decode(data))
    for rel, dest in case.get("symlinks", {}).items():
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(dest, work / rel)
    for rel in case.get("remove", []):
        git("rm", "-r", "--quiet", "--", rel, cwd=work)
    git("add", "-A", cwd=work)
    for rel, hexname in case.get("raw_paths", {}).items():  # names git stores but no str can spell
        blob = git("hash-object", "-w", "--", rel, cwd=work)
        name = bytes.fromhex(hexname)
        subprocess.run(["git", "update-index", "--add", "--cacheinfo", f"100644,{blob},".encode() + name],
                       cwd=work, check=True, capture_output=True)
        git("rm", "--cached", "--quiet", "--", rel, cwd=work)
    for rel in case.get("submodules", []):
        sub = farm.root / "repo" / "sub.git"
        if not sub.exists():
            helper = RemoteRepo(farm.root / "repo" / "subrepo")
            helper.commit({"README": "x"})
            sub = helper.bare
        git("submodule", "--quiet", "add", str(sub), rel, cwd=work)
    op = case.get("op", "commit")
    if op == "commit":
        git("commit", "--quiet", "--allow-empty", "-m", case.get("message", "corpus case"), cwd=work)
        git("push", "--quiet", "origin", "HEAD:refs/heads/main", cwd=work)
    elif op == "amend-force-push":
        git("commit", "--quiet", "--amend", "--allow-empty", "-m", "rewritten", cwd=work)
        git("push", "--quiet", "--force", "origin", "HEAD:refs/heads/main", cwd=work)
    elif op == "delete-branch":
        git("config", "receive.denyDeleteCurrent", "ignore", cwd=farm.remote.bare)
        git("push", "--quiet", "origin", "HEAD:refs/heads/other", cwd=work)
        git("push", "--quiet", "origin", ":refs/heads/main", cwd=work)
    else:
        raise AssertionError(f"unknown op {op!r}")


def _fill(text: str, **values: str) -> str:
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    return text


def run_commit_case(farm: Farm, case: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    expect = case["expect"]
    try:
        with caplog.at_level(logging.INFO, logger="gitsync"):
            _apply_repo_ops(farm, case)
            head = git("rev-parse", "HEAD", cwd=farm.remote.work)
            farm.sync()
        status = farm.agent.status()
        values = {"good": farm.good[:12], "head": head[:12], "remote": farm.remote.url, "root": str(farm.root)}
        assert status["last_result"] == expect["result"], status["last_message"]
        if "message" in expect:
            assert status["last_message"] == _fill(expect["message"], **values)
        if "problem" in expect:
            lines = [f"{p['path']}:{p['line']}:{p['col']}: {p['severity']}: {p['message']} — {p['fix']}"
                     for p in status["problems"]]
            assert _fill(expect["problem"], **values) in lines, lines
        if "finding" in expect:
            assert _fill(expect["finding"], **values) in [f["detail"] for f in status["findings"]], status["findings"]
        if "log" in expect:
            assert _fill(expect["log"], **values) in caplog.text
        applied = status["applied_commit"]
        assert applied == (head if expect.get("applied") else farm.good)
        farm.check_unharmed(expect.get("target_unchanged", True))
    finally:
        farm.restore()
    farm.check_unharmed()


# -- cli cases ---------------------------------------------------------------------------------------------

def _cli_setup(root: Path, step: str, remote: RemoteRepo) -> None:
    state = root / "state"
    if step == "sync":
        assert gitsync_main(["sync", "--once", "--repo", remote.url, "--path", "jobs", "--target", str(root / "defs"),
                             "--state-dir", str(state)]) == 0
    elif step == "garbage-state-db":
        state.mkdir(parents=True, exist_ok=True)
        (state / "state.sqlite3").write_bytes(b"this is not a database\n" * 100)
    elif step == "truncate-state-db":
        for extra in state.glob("state.sqlite3-*"):
            extra.unlink()
        with open(state / "state.sqlite3", "r+b") as handle:
            handle.truncate(4096 + 100)
    elif step == "delete-state-db":
        for db in state.glob("state.sqlite3*"):
            db.unlink()
    elif step == "state-dir-is-file":
        root.mkdir(parents=True, exist_ok=True)
        state.write_text("a file")
    elif step == "garbage-mirror-head":
        (state / "mirror.git" / "HEAD").write_text("garbage\n")
    elif step == "garbage-mirror-config":
        (state / "mirror.git" / "config").write_text("[[[ not git config\n")
    elif step == "corrupt-mirror-objects":
        for obj in (state / "mirror.git" / "objects").rglob("*"):
            if obj.is_file() and obj.parent.name not in ("info",):
                obj.chmod(0o644)
                data = bytearray(obj.read_bytes())
                data[len(data) // 2: len(data) // 2 + 16] = os.urandom(16)
                obj.write_bytes(bytes(data))
    elif step == "delete-target":
        shutil.rmtree(root / "defs")
    elif step == "new-commit":
        remote.commit({"jobs/corpus-new.kit": '[job.corpus-new]\njob_type = "base"\ncommand = "/bin/true"\n'})
    elif step == "force-push":
        git("commit", "--quiet", "--amend", "--allow-empty", "-m", "rewritten", cwd=remote.work)
        git("push", "--quiet", "--force", "origin", "HEAD:refs/heads/main", cwd=remote.work)
    elif step == "directory-in-the-way":  # where the next commit's new file should go
        (root / "defs" / "corpus-new.kit").mkdir()
    elif step == "fifo-in-the-way":
        os.mkfifo(root / "defs" / "corpus-new.kit")
    elif step == "local-edit":
        with open(root / "defs" / "hello-world.kit", "a", encoding="utf-8") as handle:
            handle.write("# edited by hand\n")
    else:
        raise AssertionError(f"unknown setup step {step!r}")


def gitsync_main(argv: list[str]) -> int:
    from gitsync.cli import main

    return main(argv)


def run_cli_case(case: dict[str, Any], tmp: Path, capsys: pytest.CaptureFixture[str],
                 monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    root = tmp / "case"
    root.mkdir()
    monkeypatch.chdir(root)
    for name in [n for n in os.environ if n.startswith("GITSYNC_")]:
        monkeypatch.delenv(name)
    remote = RemoteRepo(tmp / "repo")
    if not case.get("empty_remote"):
        remote.seed_from(SAMPLE_REPO)
    marker = tmp / "pwned"  # a command smuggled in through the input would create it
    values = {"root": str(root), "remote": remote.url, "defs": str(root / "defs"), "state": str(root / "state"),
              "marker": str(marker), "before": "" if case.get("empty_remote") else remote.remote_head()[:12]}
    for key, value in case.get("env", {}).items():
        monkeypatch.setenv(key, _fill(value, **values))
    for rel, text in case.get("files", {}).items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(_fill(text, **values), encoding="utf-8")
    for step in case.get("setup", []):
        _cli_setup(root, step, remote)
    values["head"] = remote.remote_head()[:12] if not case.get("empty_remote") else ""
    keep = case["expect"].get("target_unchanged", True)
    before = snapshot(root / "defs") if keep and (root / "defs").is_dir() else None
    ran = gitsync(capsys, *[_fill(a, **values) for a in case["args"]])
    expect = case["expect"]
    assert ran.code == expect["exit"], ran.err
    lines = ran.err.strip().splitlines()
    if "stderr" in expect:
        assert lines and lines[-1] == _fill(expect["stderr"], **values), ran.err
        assert not any("Traceback" in line for line in lines), ran.err
    if "stderr_starts" in expect:  # for messages whose tail is curl's or ssh's own wording, which varies
        assert lines and lines[-1].startswith(_fill(expect["stderr_starts"], **values)), ran.err
    for secret in expect.get("never_printed", []):
        assert secret not in ran.err + ran.out + caplog.text, ran.err
    if "log_contains" in expect:  # the log goes to stderr when run as a command, to pytest's handler here
        assert _fill(expect["log_contains"], **values) in ran.err + caplog.text, ran.err
    if "stdout_contains" in expect:
        assert _fill(expect["stdout_contains"], **values) in ran.out, ran.out
    if expect.get("one_line", True) and ran.code == 1:
        errors = [line for line in lines if line.startswith("gitsync: error:")]
        assert len(errors) == 1, ran.err
    if before is not None:
        assert snapshot(root / "defs") == before, "the last good definitions were changed"
    assert not marker.exists(), "a command from the input ran"
    for step in case.get("then", []):
        ran = gitsync(capsys, *[_fill(a, **values) for a in step["args"]])
        assert ran.code == step["exit"], ran.err
        if "stdout_contains" in step:
            assert _fill(step["stdout_contains"], **values) in ran.out, ran.out



# -- http cases --------------------------------------------------------------------------------------------

def run_http_case(farm: Farm, case: dict[str, Any]) -> None:
    body = case.get("body", "").encode("latin-1")
    signature = "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    head = _fill(case["request"], signature=signature, length=str(len(body)))
    if case.get("pad_header_bytes"):  # one huge header line after the request line
        first, rest = head.split("\r\n", 1)
        head = f"{first}\r\nX-Padding: {'a' * int(case['pad_header_bytes'])}\r\n{rest}"
    chunks = [c.encode("latin-1") for c in case.get("chunks", [])]
    repeat = int(case.get("repeat_chunks", 1))
    with socket.create_connection(("127.0.0.1", int(farm.agent.server_port or 0)), timeout=20) as sock:
        try:
            sock.sendall(head.encode("latin-1") + body)
            for _ in range(repeat):
                for chunk in chunks:
                    sock.sendall(chunk)
        except OSError:
            pass  # answered and closed while we were still sending
        reply = b""
        while b"\r\n" not in reply:
            data = sock.recv(65536)
            if not data:
                break
            reply += data
    status = int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/") else 0
    assert status == case["expect"]["status"], reply[:300]
    farm.check_unharmed()


# -- the one parametrized test -----------------------------------------------------------------------------

@pytest.mark.parametrize("path", CASES, ids=[str(p.relative_to(CORPUS).with_suffix("")) for p in CASES])
def test_bad_input(path: Path, request: pytest.FixtureRequest, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                   monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    case = _load(path)
    if case["kind"] == "cli":
        with work_dir(tmp_path) as tmp, caplog.at_level(logging.INFO, logger="gitsync"):
            run_cli_case(case, tmp, capsys, monkeypatch, caplog)
        return
    farm: Farm = request.getfixturevalue("farm")
    if case["kind"] == "commit":
        run_commit_case(farm, case, caplog)
    else:
        run_http_case(farm, case)
