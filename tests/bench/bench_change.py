"""Issue 10's figures: how fast a one-file commit reaches the job directory, next to plain git and
kubernetes/git-sync measured in the same run, plus the first sync, idle memory and idle CPU.

Every figure is the best of `--repeat` interleaved runs (gitsync, git-sync, baseline, gitsync, ...)
after one warm-up round that fills the page cache. See README.md in this folder.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pull import (  # noqa: E402
    BenchError,
    Clock,
    definition,
    git,
    gitsync_command,
    isolate_environment,
    log,
    proc_status,
    run,
    source_version,
)
from benchenv import wait_for  # noqa: E402

GIT_SYNC_BIN = os.environ.get("GIT_SYNC_BIN", "")  # read before the environment is cleaned of GIT_*
POLL = 0.002  # how often "is the new version there yet" is asked: a bound on every figure's resolution


@dataclass
class Figure:
    what: str
    values: list[float] = field(default_factory=list)
    unit: str = "ms"

    @property
    def best(self) -> float:
        return min(self.values) if self.values else float("nan")

    @property
    def p50(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")


@dataclass
class Result:
    what: str
    value: str
    baseline: str
    ratio: str
    target: str
    verdict: str


class Bench:
    def __init__(self, root: Path, files: int, repeat: int, samples: int, idle: float, cases: set[str],
                 compare: Path | None = None) -> None:
        self.root, self.files, self.repeat, self.samples, self.idle, self.cases = \
            root, files, repeat, samples, idle, cases
        self.compare = compare  # another checkout whose `sync --once` is timed in the same rounds
        self.cpu: dict[str, list[float]] = {}  # ms of CPU (children included) per figure, next to the wall times
        self.bare, self.work, self.clone = root / "remote.git", root / "work", root / "clone"
        self.url = f"file://{self.bare}"
        self.paths: list[str] = []
        self.edits = 0
        self.results: list[Result] = []
        self.gitsync = gitsync_command()
        self.agent: subprocess.Popen[bytes] | None = None
        self.gitsync_port = 0
        self.git_sync: subprocess.Popen[bytes] | None = None
        self.git_sync_bin = GIT_SYNC_BIN

    # -- set-up -----------------------------------------------------------------------------------
    def build(self) -> None:
        log(f"writing {self.files} definitions")
        rng = random.Random(1)
        for index in range(self.files):
            rel, text = definition(index, rng)
            path = self.work / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            self.paths.append(rel)
        git("init", "--quiet", "--bare", "--initial-branch=main", self.bare)
        git("init", "--quiet", "--initial-branch=main", cwd=self.work)
        git("add", "-A", cwd=self.work)
        git("commit", "--quiet", "-m", f"{self.files} definitions", cwd=self.work)
        git("remote", "add", "origin", self.url, cwd=self.work)
        git("push", "--quiet", "origin", "main", cwd=self.work)
        git("clone", "--quiet", self.url, self.clone)
        log("repo ready")

    def commit_one(self) -> tuple[str, bytes]:
        """A one-file commit on the remote (not timed); returns the file's target name and a marker in it."""
        self.edits += 1
        rel = self.paths[(self.edits * 7919) % len(self.paths)]
        marker = f"bench edit {self.edits}".encode()
        path = self.work / rel
        path.write_bytes(path.read_bytes().rstrip(b"\n") + b"\n# " + marker + b"\n")
        git("commit", "--quiet", "-am", f"edit {self.edits}", cwd=self.work)
        git("push", "--quiet", "origin", "main", cwd=self.work)
        os.sync()
        return rel, marker

    # -- the processes compared -------------------------------------------------------------------------
    def start_agent(self) -> None:
        target, state = self.root / "agent-target", self.root / "agent-state"
        err = open(self.root / "agent.log", "wb")  # noqa: SIM115 - open for the agent's lifetime
        started = time.perf_counter()
        self.agent = subprocess.Popen([*self.gitsync, "run", "--repo", self.url, "--path", "jobs", "--target",
                                       str(target), "--state-dir", str(state), "--interval", "3600",
                                       "--listen", "127.0.0.1:0"], stdout=err, stderr=err)
        self.agent_target = target
        found = wait(lambda: re.search(rb"http://127\.0\.0\.1:(\d+)", (self.root / "agent.log").read_bytes()),
                     600, "the agent's HTTP port")
        self.gitsync_port = int(found.group(1))
        wait(lambda: self.http("GET", "/readyz")[0] == 200, 3600, "the agent's first sync")
        took = time.perf_counter() - started
        self.results.append(Result(f"`gitsync run` from scratch until ready ({self.files} files written, one run)",
                                   f"{took:.1f} s", "", "", "", ""))
        log(f"agent ready on port {self.gitsync_port}: {len(os.listdir(target))} files")

    def http(self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) \
            -> tuple[int, bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.gitsync_port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            answer = conn.getresponse()
            return answer.status, answer.read()
        except OSError:
            return 0, b""
        finally:
            conn.close()

    def start_git_sync(self) -> None:
        if not self.git_sync_bin:
            return
        root = self.root / "git-sync"
        err = open(self.root / "git-sync.log", "wb")  # noqa: SIM115
        self.git_sync = subprocess.Popen([self.git_sync_bin, "--repo", self.url, "--ref", "main", "--root", str(root),
                                          "--link", "current", "--period", "1h", "--sync-on-signal", "SIGHUP",
                                          "--git-gc", "off"], stdout=err, stderr=err)
        self.git_sync_root = root
        wait(lambda: (root / "current" / self.paths[0]).exists(), 600, "git-sync's first sync")
        log("git-sync ready")

    def stop(self) -> None:
        for proc in (self.agent, self.git_sync):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()

    # -- measurements ---------------------------------------------------------------------------------
    def quiet(self) -> None:
        """Until the agent has gone idle: the cycle its own last write triggers (a debounce later) is over."""
        assert self.agent is not None
        pid = self.agent.pid
        time.sleep(1.2)
        ticks = [cpu_ticks(pid)]

        def settled() -> bool:
            ticks.append(cpu_ticks(pid))
            return len(ticks) > 2 and ticks[-1] == ticks[-3]
        wait(settled, 60, "the agent to go quiet", 0.2)

    def agent_applies(self, trigger: Callable[[], None]) -> float:
        self.quiet()
        rel, marker = self.commit_one()
        target = self.agent_target / os.path.basename(rel)
        started = time.perf_counter()
        trigger()
        wait(lambda: marker in read(target), 120, "the agent to apply the commit", POLL)
        return (time.perf_counter() - started) * 1000

    def sighup(self) -> float:
        assert self.agent is not None
        return self.agent_applies(lambda: self.agent.send_signal(signal.SIGHUP))  # type: ignore[union-attr]

    def webhook(self) -> float:
        body = json.dumps({"ref": "refs/heads/main"}).encode()

        def post() -> None:
            status, answer = self.http("POST", "/webhook", body, {"X-GitHub-Event": "push",
                                                                  "Content-Type": "application/json"})
            if status not in (200, 202):
                raise BenchError(f"webhook answered {status}: {answer[:200]!r}")
        return self.agent_applies(post)

    def git_sync_sighup(self) -> float:
        assert self.git_sync is not None
        rel, marker = self.commit_one()
        path = self.git_sync_root / "current" / rel
        started = time.perf_counter()
        self.git_sync.send_signal(signal.SIGHUP)
        wait(lambda: marker in read(path), 120, "git-sync to check out the commit", POLL)
        return (time.perf_counter() - started) * 1000

    def fetch_diff(self) -> float:
        """The floor: what any tool must do to learn which file changed (two git processes)."""
        self.commit_one()
        old = git("rev-parse", "HEAD", cwd=self.clone)
        with Clock() as clock:
            run(["git", "fetch", "--quiet", "origin"], cwd=self.clone)
            run(["git", "diff", "--name-only", old, "origin/main"], cwd=self.clone)
        git("merge", "--quiet", "--ff-only", "origin/main", cwd=self.clone)
        self.cpu.setdefault("fetch+diff", []).append(clock.timing.cpu * 1000)
        return clock.timing.wall * 1000

    def sync_once(self, source: Path | None = None) -> float:
        """`sync --once` after a one-file commit; `source`: of another checkout (`--compare`), own target and state."""
        tag = "once" if source is None else "compared"
        target, state = self.root / f"{tag}-target", self.root / f"{tag}-state"
        env = None if source is None else {**os.environ, "PYTHONPATH": str(source)}
        if not state.exists():
            run(self.once_cmd(target, state), env=env)
        rel, marker = self.commit_one()
        with Clock() as clock:
            run(self.once_cmd(target, state), env=env)
        if marker not in read(target / os.path.basename(rel)):
            raise BenchError("sync --once did not apply the commit")
        self.cpu.setdefault(tag, []).append(clock.timing.cpu * 1000)
        return clock.timing.wall * 1000

    def sync_once_compared(self) -> float:
        assert self.compare is not None
        return self.sync_once(self.compare)

    def once_cmd(self, target: Path, state: Path) -> list[str]:
        return [*self.gitsync, "sync", "--once", "--repo", self.url, "--path", "jobs", "--target", str(target),
                "--state-dir", str(state)]

    def floor_version(self) -> float:
        with Clock() as clock:
            run([*self.gitsync, "--version"])
        return clock.timing.wall * 1000

    def initial(self, source: Path | None = None) -> tuple[float, float]:
        """First syncs in seconds: gitsync's and clone + cp's; with `source` (another checkout) only its sync."""
        target, state = self.root / "first-target", self.root / "first-state"
        for path in (target, state):
            shutil.rmtree(path, ignore_errors=True)
        os.sync()
        with Clock() as ours:
            run(self.once_cmd(target, state), env=None if source is None else {**os.environ, "PYTHONPATH": str(source)})
        if len(os.listdir(target)) != self.files:
            raise BenchError(f"initial sync wrote {len(os.listdir(target))} of {self.files} files")
        if source is not None:
            return ours.timing.wall, float("nan")
        copy, checkout = self.root / "copy-target", self.root / "copy-clone"
        for path in (copy, checkout):
            shutil.rmtree(path, ignore_errors=True)
        copy.mkdir()
        os.sync()
        with Clock() as theirs:
            run(["sh", "-c", f"git clone --quiet --depth 1 --branch main {self.url} {checkout} && "
                             f"find {checkout}/jobs -name '*.kit' -exec cp -t {copy} {{}} +"])
        return ours.timing.wall, theirs.timing.wall

    def idle_agent(self) -> tuple[float, float, float]:
        """(RSS MiB, CPU ms over the idle window, the window in s) of the agent holding every definition."""
        assert self.agent is not None
        quiet = [cpu_ticks(self.agent.pid)]

        def settled() -> bool:  # the debounced cycle after the last apply (its own writes) has run and ended
            quiet.append(cpu_ticks(self.agent.pid))
            return len(quiet) > 3 and quiet[-1] == quiet[-3]
        wait(settled, 120, "the agent to go quiet", 1.0)
        before = cpu_ticks(self.agent.pid)
        started = time.monotonic()
        time.sleep(self.idle)
        ticks = cpu_ticks(self.agent.pid) - before
        window = time.monotonic() - started
        return proc_status(self.agent.pid)["VmRSS"] / 1024, ticks * 1000 / os.sysconf("SC_CLK_TCK"), window

    # -- the run --------------------------------------------------------------------------------------------
    def main(self) -> None:
        self.build()
        if "initial" in self.cases:
            ours, theirs, before = [], [], []
            for _ in range(self.repeat + 1):  # the first round warms the page cache and is dropped
                a, b = self.initial()
                ours.append(a)
                theirs.append(b)
                if self.compare is not None:
                    before.append(self.initial(self.compare)[0])
            self.add("initial sync, `sync --once` into an empty directory", min(ours[1:]), "s",
                     "`git clone --depth 1` + `cp`", min(theirs[1:]), 2.0)
            if before:
                self.add(f"  the same, `--compare` checkout {self.compare}", min(before[1:]), "s", "this checkout",
                         min(ours[1:]), None)
        self.start_agent()
        self.start_git_sync()
        hup, gsync, base, once, hook = Figure("sighup"), Figure("git-sync"), Figure("fetch+diff"), \
            Figure("once"), Figure("webhook")
        floor, compared = Figure("--version"), Figure("compared")
        for round_ in range(self.repeat + 1):
            measured = [(hup, self.sighup), (base, self.fetch_diff)]
            if self.git_sync is not None:
                measured.append((gsync, self.git_sync_sighup))
            if "once" in self.cases:
                measured += [(once, self.sync_once), (floor, self.floor_version)]
                if self.compare is not None:
                    measured.append((compared, self.sync_once_compared))
            for figure, how in measured:
                value = how()
                if round_:
                    figure.values.append(value)
            log(f"round {round_}: " + ", ".join(f"{f.what} {f.values[-1]:.0f} ms" for f, _ in measured
                                                 if round_ and f.values))
        self.add("running agent: one-file commit, SIGHUP → file applied", hup.best, "ms",
                 "`git fetch` + `git diff --name-only`", base.best, 1.5)
        if self.git_sync is not None:
            self.add("kubernetes/git-sync v4.4.3: same commit, SIGHUP → file checked out", gsync.best, "ms",
                     "", float("nan"), None)
            self.add("gitsync agent vs git-sync (same run)", hup.best, "ms", "git-sync", gsync.best, 0.5)
        else:
            self.results.append(Result("kubernetes/git-sync", "not run (set GIT_SYNC_BIN)", "", "", "≤ 0.5×", ""))
        if "once" in self.cases:
            self.add("`sync --once` after a one-file commit (new process)", once.best, "ms",
                     "`git fetch` + `git diff --name-only`", base.best, 3.0)
            self.add("  floor: `gitsync --version` (Python start-up)", floor.best, "ms", "", float("nan"), None)
            cpu = {tag: min(values) for tag, values in self.cpu.items()}
            self.results.append(Result("  CPU (user + sys, children included), best of the rounds",
                                       f"{cpu['once']:.0f} ms", f"fetch + diff: {cpu['fetch+diff']:.0f} ms",
                                       f"{cpu['once'] / cpu['fetch+diff']:.2f}×", "", ""))
            if self.compare is not None:
                self.add(f"  the same, `--compare` checkout {self.compare}", compared.best, "ms",
                         "this checkout", once.best, None)
                self.results.append(Result("  its CPU", f"{cpu['compared']:.0f} ms", f"this checkout: "
                                           f"{cpu['once']:.0f} ms", f"{cpu['compared'] / cpu['once']:.2f}×", "", ""))
        if "webhook" in self.cases:
            for _ in range(self.samples + 1):
                hook.values.append(self.webhook())
            hook.values = hook.values[1:]
            self.results.append(Result("webhook received → file applied, p50 (loopback)", f"{hook.p50:.0f} ms",
                                       f"min {hook.best:.0f} / max {max(hook.values):.0f} ms", "", "≤ 150 ms",
                                       "PASS" if hook.p50 <= 150 else "FAIL"))
        if "idle" in self.cases:
            rss, cpu, window = self.idle_agent()
            limit = 60 if self.files <= 10_000 else 250
            self.results.append(Result(f"idle `gitsync run` holding {self.files} definitions: RSS", f"{rss:.1f} MiB",
                                       "", "", f"≤ {limit} MB", "PASS" if rss * 1.048576 <= limit else "FAIL"))
            self.results.append(Result(f"  CPU between cycles over {window:.0f} s idle", f"{cpu:.0f} ms", "", "",
                                       "none measurable", "PASS" if cpu <= 20 else "FAIL"))

    def add(self, what: str, value: float, unit: str, baseline: str, base: float, limit: float | None) -> None:
        ratio = value / base if base == base and base > 0 else float("nan")
        shown = (lambda v: f"{v:.2f} s") if unit == "s" else (lambda v: f"{v:.0f} ms")
        self.results.append(Result(what, shown(value), f"{baseline}: {shown(base)}" if baseline else "",
                                   f"{ratio:.2f}×" if ratio == ratio else "",
                                   f"≤ {limit}×" if limit else "",
                                   ("PASS" if ratio <= limit else "FAIL") if limit and ratio == ratio else ""))


def read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime of every thread


def wait(condition: Callable[[], object], timeout: float, what: str, every: float = 0.05) -> object:
    return wait_for(condition, timeout, what, every)


def render(results: list[Result]) -> str:
    lines = ["| what | gitsync | baseline (same run) | ratio | target | result |", "|---|---|---|---|---|---|"]
    lines += [f"| {r.what} | {r.value} | {r.baseline} | {r.ratio} | {r.target} | {r.verdict} |" for r in results]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=10_000, help="definitions in the repo (default 10000)")
    parser.add_argument("--repeat", type=int, default=3, help="interleaved runs per figure; the best is shown")
    parser.add_argument("--samples", type=int, default=9, help="webhook samples for the p50 (default 9)")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds of idling measured for CPU (default 10)")
    parser.add_argument("--cases", default="initial,once,webhook,idle",
                        help="besides the agent's SIGHUP (always): initial, once, webhook, idle")
    parser.add_argument("--tmp", type=Path, default=None, help="parent of the temp dir")
    parser.add_argument("--compare", type=Path, default=None,
                        help="another gitsync checkout (e.g. a `git worktree` of an older commit) whose `sync --once` "
                             "is timed in the same rounds, for a before/after on a busy machine")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="gitsync-bench-change-", dir=args.tmp))
    isolate_environment(root / "home", root / "pycache")
    commit, dirty = source_version()
    bench = Bench(root, args.files, args.repeat, args.samples, args.idle, set(args.cases.split(",")),
                  args.compare.resolve() if args.compare else None)
    print(f"gitsync {commit}{' (dirty)' if dirty else ''}; {args.files} definitions; best of {args.repeat} "
          f"interleaved runs after a warm-up round; {os.cpu_count()} cores", flush=True)
    try:
        run([*bench.gitsync, "--version"])  # fill the byte-code cache before anything is timed
        bench.main()
    except BenchError as exc:
        print(f"bench failed: {exc}", file=sys.stderr)
        args.keep = True
        return 1
    finally:
        bench.stop()
        if args.keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    print(render(bench.results))
    if not bench.git_sync_bin:
        print("\nkubernetes/git-sync was not run: build v4.4.3 and set GIT_SYNC_BIN (see README.md); the floor "
              "above is what any tool pays to learn what changed.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
