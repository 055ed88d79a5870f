"""`gitsync demo`: the whole loop on one machine, narrated.

A bare git remote seeded from sample-repo/, the Farm-compatible jobs service over a job
directory, and the gitsync agent between them. It shows git -> jobs service (a commit appears
in /load seconds later) and jobs service -> git (a /save becomes a one-line commit).
"""

from __future__ import annotations

import argparse
import logging
import secrets
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from types import FrameType
from typing import Any

from gitsync.errors import GitsyncError

#: The sample definitions ship inside the package (gitsync/data/sample-repo, a link to the repository's
#: sample-repo/ that the wheel build resolves), so a non-editable install finds them too.
_SAMPLE_CANDIDATES = (Path(__file__).resolve().parents[1] / "data" / "sample-repo",
                      Path(__file__).resolve().parents[2] / "sample-repo", Path.cwd() / "sample-repo")
SAMPLE_REPO = next((p for p in _SAMPLE_CANDIDATES if (p / "jobs").is_dir()), _SAMPLE_CANDIDATES[0])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workspace", metavar="DIR", type=Path,
                        help="keep everything in DIR (default: a temporary folder, removed at exit)")
    parser.add_argument("--port", type=int, default=8222, help="jobs service port (0 = any free port)")
    parser.add_argument("--no-wait", action="store_true", help="exit after the narration instead of waiting "
                        "for Ctrl-C")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for each step")


def run(args: argparse.Namespace) -> int:
    if not (SAMPLE_REPO / "jobs").is_dir():
        raise GitsyncError(f"sample definitions not found at {SAMPLE_REPO}; run the demo from a clone of gitsync "
                           "(or from a folder that holds its sample-repo/)")
    for name in ("gitsync", "apscheduler", "watchdog", "uvicorn", "httpx", "gitsync.jobs_service"):
        logging.getLogger(name).setLevel(logging.WARNING)
    with ExitStack() as stack:
        workspace = args.workspace or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gitsync-demo-")))
        Demo(workspace.resolve(), args.port, args.timeout, stack).play()
        if not args.no_wait:
            _wait_for_ctrl_c()
        say("\nStopping the agent and the jobs service...")
    say("Done.")
    return 0


def say(text: str = "") -> None:
    print(text, flush=True)


def _wait_for_ctrl_c() -> None:
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    say("\nEverything keeps running: save through the API, commit to the repo, watch them meet. Ctrl-C stops.")
    while not stop.wait(0.5):
        pass


class Demo:
    def __init__(self, workspace: Path, port: int, timeout: float, stack: ExitStack) -> None:
        import httpx

        self.workspace = workspace
        self.timeout = timeout
        self.stack = stack
        self.port = port
        self.http = stack.enter_context(httpx.Client(timeout=10))
        self.api_key = "demo-" + secrets.token_hex(8)
        self.webhook_secret = secrets.token_hex(16)

    def play(self) -> None:
        from gitsync.testing.repos import RemoteRepo

        say(f"gitsync demo — workspace {self.workspace}\n")
        if (self.workspace / "definitions-repo" / "remote.git").is_dir():  # a re-run: carry on where it was
            remote = RemoteRepo.existing(self.workspace / "definitions-repo")
            say(f"1. The git repository of job definitions from the last run: {remote.bare}")
        else:
            remote = RemoteRepo(self.workspace / "definitions-repo")
            remote.seed_from(SAMPLE_REPO, "Import the sample job definitions")
            say(f"1. A git repository of job definitions: {remote.bare} (seeded from sample-repo/)")
        jobs = self._start_jobs_service()
        agent = self._start_agent(remote)
        self._wait(lambda: agent.syncs_done >= 1, "the first sync")
        loaded = self._load(jobs)
        say(f"\n3. After the first sync the jobs service serves {len(loaded)} definitions (GET {jobs}/load):")
        for name, definition in sorted(loaded.items()):
            say(f"     {name:<16} {definition['job_type']:<12} {definition['command']}")

        say("\n4. git -> jobs service: a developer commits a new definition and pushes it")
        remote.commit({"jobs/demo-echo.kit": _DEMO_JOB}, "Add the demo-echo job")
        started = time.monotonic()
        self._webhook(agent.server_port)  # as the forge would, on push
        self._wait(lambda: "demo-echo" in self._load(jobs), "demo-echo in /load")
        say(f"   demo-echo is in /load {time.monotonic() - started:.1f} s after the push (webhook-triggered sync)")

        self._refuse_a_broken_commit(remote, agent, jobs)

        say("\n6. jobs service -> git: an operator changes hello-world through POST /save")
        # /load shows unset fields as null, but Farm's /save model refuses an explicit null (422): drop them.
        hello = {k: v for k, v in self._load(jobs)["hello-world"].items() if v is not None}
        run = len([s for s in remote.log() if s == "Update hello-world from jobs/save"])
        hello["args"] = ["Hello from the demo: saved through jobs/save" + (f" (run {run + 1})" if run else "")]
        before = len(remote.log())
        started = time.monotonic()
        answer = self.http.post(f"{jobs}/save", json=hello, headers={"X-API-KEY": self.api_key})
        answer.raise_for_status()
        say(f"   /save answered {answer.json()}; Farm rewrote hello-world.kit (comments gone, defaults added)")
        self._wait(lambda: len(remote.log()) > before, "the push-back commit")
        say(f"   {time.monotonic() - started:.1f} s later gitsync had pushed this commit:\n")
        from gitsync.testing.repos import git

        say(_indent(git("show", "--format=%h %an: %s%n%n%b", "refs/heads/main", "--", "jobs/hello-world.kit",
                        cwd=remote.bare)))
        say("   Only the changed line; the file's comments and layout in git are untouched.")
        say(f"\nWhere things are:\n  jobs service   {jobs}  (X-API-KEY: {self.api_key})\n"
            f"  job directory  {self.workspace / 'job-definitions'}\n"
            f"  git remote     {remote.bare}\n  a clone        {remote.work}  (commit + `git push` to sync)\n"
            f"  agent          http://127.0.0.1:{agent.server_port}/status  /metrics  POST /webhook\n"
            f"  status page    http://127.0.0.1:{agent.server_port}/\n"
            f"  status         gitsync status --state-dir {self.workspace / 'state'} "
            f"--target {self.workspace / 'job-definitions'}")
        say("\nTry a save yourself (paste into a shell; it becomes a commit a moment later):\n")
        say(save_curl(jobs, self.api_key))

    def _refuse_a_broken_commit(self, remote: Any, agent: Any, jobs: str) -> None:
        say("\n5. A broken commit is refused: someone pushes a definition with an unterminated string")
        good = self._load(jobs)["usd-render"]
        before = remote.head()
        sync_log = logging.getLogger("gitsync.sync")
        level = sync_log.level
        sync_log.setLevel(logging.CRITICAL)  # the narration below says it once, in plain words
        try:
            self._broken_then_reverted(remote, agent, jobs, good, before)
        finally:
            sync_log.setLevel(level)

    def _broken_then_reverted(self, remote: Any, agent: Any, jobs: str, good: Any, before: str) -> None:
        remote.commit({"jobs/render/usd-render.kit": _BROKEN_JOB}, "Break usd-render (on purpose, by the demo)")
        self._webhook(agent.server_port)
        self._wait(lambda: agent.status().get("head_commit") == remote.head()
                   and agent.status().get("last_result") == "invalid", "the broken commit to be refused")
        status = agent.status()
        first = next((p for p in status["problems"] if p["severity"] == "error"), None)
        if first is not None:
            say(f"   refused: {first['path']}:{first['line']}: {first['message']}")
        served = "unchanged" if self._load(jobs)["usd-render"] == good else "CHANGED (this is a bug)"
        say(f"   nothing was applied: {status['applied_commit'][:12]} stays in place, /load serves usd-render "
            f"{served}, /readyz stays ready and the status page shows the error")
        remote.revert_head()
        self._webhook(agent.server_port)
        self._wait(lambda: agent.status().get("last_result") in ("synced", "noop")
                   and agent.status().get("head_commit") == remote.head(), "the revert to be applied")
        # The worker logs the refusal after recording it; the revert's cycle came later, so it is logged by now.
        say(f"   `git revert` of the bad commit (back to the content of {before[:12]}) syncs like any other commit")

    def _start_jobs_service(self) -> str:
        from gitsync.jobs_service.config import JobsServiceConfig
        from gitsync.jobs_service.server import RunningJobsService
        from gitsync.secrets import Secret

        config = JobsServiceConfig(save_location=self.workspace / "job-definitions", api_key=Secret(self.api_key))
        try:
            service = RunningJobsService(config, port=self.port).start()
        except GitsyncError:
            service = RunningJobsService(config, port=0).start()  # 8222 is taken (a real Farm, maybe)
        self.stack.callback(service.stop)
        say(f"2. The Farm-compatible jobs service (a stand-in for Farm's) at {service.url}, DirectoryJobStore "
            f"over {config.save_location}")
        return service.url

    def _webhook(self, port: int) -> None:
        """POST a push event signed like GitHub's (X-Hub-Signature-256)."""
        import hashlib
        import hmac

        body = b'{"ref": "refs/heads/main"}'
        signature = "sha256=" + hmac.new(self.webhook_secret.encode(), body, hashlib.sha256).hexdigest()
        self.http.post(f"http://127.0.0.1:{port}/webhook", content=body,
                       headers={"X-Hub-Signature-256": signature, "X-GitHub-Event": "push",
                                "Content-Type": "application/json"})

    def _start_agent(self, remote: Any) -> Any:
        from gitsync.agent import build_agent
        from gitsync.config import load_settings

        secret_file = self.workspace / "webhook-secret"
        secret_file.write_text(self.webhook_secret, encoding="utf-8")
        secret_file.chmod(0o600)
        settings = load_settings(None, {
            "repo.url": remote.url, "repo.path": "jobs", "target.directory": str(self.workspace / "job-definitions"),
            "state.dir": str(self.workspace / "state"), "sync.interval": 10.0,
        }, environ={"GITSYNC_SERVER_LISTEN": "127.0.0.1:0", "GITSYNC_SERVER_WEBHOOK_SECRET_FILE": str(secret_file)})
        agent = build_agent(settings)
        agent.start()
        self.stack.callback(agent.stop)
        say(f"   The gitsync agent syncs branch main, folder jobs/, every {settings.sync_interval:.0f} s, on "
            f"webhooks, and watches the directory for saves (debounce {settings.push_debounce:.0f} s)")
        return agent

    def _load(self, jobs: str) -> dict[str, Any]:
        response = self.http.get(f"{jobs}/load")
        response.raise_for_status()
        loaded: dict[str, Any] = response.json()
        return loaded

    def _wait(self, condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + self.timeout
        while not condition():
            if time.monotonic() > deadline:
                raise GitsyncError(f"demo: waited {self.timeout:.0f} s for {what}; see the log above")
            time.sleep(0.1)


def save_curl(jobs: str, api_key: str) -> str:
    """A ready-to-paste `curl` that saves a new definition through the jobs service's /save."""
    import json

    body = json.dumps({"name": "my-first-job", "job_type": "base", "command": "/bin/echo",
                       "args": ["saved with curl"]})
    return (f"  curl -sS -X POST '{jobs}/save' \\\n    -H 'X-API-KEY: {api_key}' -H 'Content-Type: application/json' "
            f"\\\n    -d '{body}'")


def _indent(text: str) -> str:
    return "\n".join("     " + line for line in text.splitlines())


_BROKEN_JOB = """\
[job.usd-render]
name = "usd-render"
job_type = "kit-service"
command = "/opt/nvidia/omniverse/kit/kit
"""

_DEMO_JOB = """\
# demo-echo: added by `gitsync demo` to show a commit reaching the jobs service.
[job.demo-echo]
name = "demo-echo"
job_type = "base"
command = "/bin/echo"
args = ["synced from git"]
"""
