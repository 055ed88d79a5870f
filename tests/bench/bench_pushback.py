#!/usr/bin/env python3
"""Benchmark gitsync's push-back path: a `jobs/save` reaching git, one at a time and in a burst.

    python tests/bench/bench_pushback.py [--samples 30] [--burst 1000] [--debounce 1.0]

Sets up, in a temp dir, what a Farm site runs: a bare remote seeded from sample-repo/, the
Farm-compatible jobs service as its own process (`python -m gitsync.jobs_service`, a directory
store whose save location is gitsync's target, API key from a Farm-style settings file) and
`gitsync run` as its own process beside it. Once the agent's first sync is done it measures:

  (1) latency: POST /save of a one-field change to an existing definition (alternating among
      a few) until the commit is on the remote's main, --samples times, one at a time; against
      a baseline measured in the same run, `git commit` + `git push` of a one-line change from
      a clone into the same bare repo. Target: p50 <= debounce + 300 ms.
  (2) burst: --burst saves (round by round over --burst-defs new definitions) from a pool of
      --workers threads, as fast as the jobs service takes them; then the time until every
      definition's last value is in git and the outbox is empty, and the number of commits
      gitsync made for it. Targets: all in git, <= 20 commits.

It is a report: PASS/FAIL is printed per target and the exit status is non-zero only when the
benchmark itself could not run (a process would not start, a save was never committed, the
agent did not stop cleanly). The agent runs at --agent-log-level DEBUG so its log lines give a
breakdown of every sample; a missed latency target is also profiled in-process (cProfile of
capture + flush, the part of a cycle before the commit is on the remote).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import math
import os
import pstats
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
import tomllib
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import benchenv
import httpx
from benchenv import BenchError, isolate_environment

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_REPO = REPO_ROOT / "sample-repo"
BRANCH = "main"
#: (1): the save is on the remote at most this long after the debounce, at the median.
TARGET_MARGIN = 0.3
#: (2): a burst of saves is committed in at most this many commits.
TARGET_COMMITS = 20
#: Definitions of sample-repo/ that (1) alternates among: one per file, a kit-service job and a
#: definition that shares its file with another one.
LATENCY_DEFINITIONS = ("hello-world", "usd-render", "check-gpu", "render-k8s")
CLK_TCK = os.sysconf("SC_CLK_TCK")
#: `python -m gitsync ARGS`, except that watchdog's own DEBUG lines stay out of the log: at DEBUG it logs
#: every inotify event, and the stand-in's rescans (which read every file on each save) cause hundreds of
#: them per save, so the log itself would cost the agent CPU the benchmark means to measure.
_QUIET_WATCHDOG = ("import logging, runpy, sys; logging.getLogger('watchdog').setLevel(logging.INFO); "
                   "sys.argv[0] = 'gitsync'; runpy.run_module('gitsync', run_name='__main__', alter_sys=True)")


# -- helpers ------------------------------------------------------------------------------------


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(cmd: Sequence[str | Path], cwd: Path | None = None, check: bool = True,
        stdin: bytes | None = None) -> str:
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, input=stdin)
    if check and done.returncode != 0:
        raise BenchError(f"command failed ({done.returncode}): {' '.join(map(str, cmd))}\n"
                         f"{done.stdout.decode(errors='replace')[-2000:]}{done.stderr.decode(errors='replace')[-4000:]}")
    return done.stdout.decode("utf-8", errors="replace")


def git(*args: str | Path, cwd: Path | None = None) -> str:
    return run(["git", "-c", "user.name=Bench", "-c", "user.email=bench@example.com", "-c", "commit.gpgsign=false",
                *args], cwd=cwd).strip()


def use_this_checkout() -> str:
    """Run the gitsync of the tree this script is in, in this process and in every child, even when the
    editable install points at another checkout; returns where `gitsync` is imported from."""
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    sys.path.insert(0, str(REPO_ROOT))
    found = run([sys.executable, "-c", "import gitsync; print(gitsync.__file__)"]).strip()
    if not found.startswith(str(REPO_ROOT)):
        raise BenchError(f"children import gitsync from {found}, not from {REPO_ROOT}")
    return str(Path(found).parent)


def wait_for(condition: Callable[[], Any], timeout: float, what: str, poll: float = 0.02) -> Any:
    return benchenv.wait_for(condition, timeout, what, poll)


def percentile(values: Sequence[float], share: float) -> float:
    """Nearest-rank percentile (p95 of 30 samples is the 29th smallest)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)] if ordered else float("nan")


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def secs(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if abs(seconds) < 1 else f"{seconds:.2f} s"


def cpu_of(pid: int) -> float:
    """User + system CPU seconds of a process and of the children it has waited for (git commands)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return float("nan")
    fields = text[text.rindex(")") + 2:].split()
    return sum(int(f) for f in fields[11:15]) / CLK_TCK


def short_paths(text: str) -> str:
    for prefix, short in ((sysconfig.get_paths()["purelib"] + "/", ""), (str(REPO_ROOT) + "/", ""),
                          (sysconfig.get_paths()["stdlib"] + "/", "")):
        text = text.replace(prefix, short)
    return text


def top_cumulative(stats: pstats.Stats, limit: int = 25) -> str:
    entries = sorted(stats.stats.items(), key=lambda kv: kv[1][3], reverse=True)  # type: ignore[attr-defined]
    lines = [f"{stats.total_tt:.3f} s profiled; top {limit} by cumulative time",  # type: ignore[attr-defined]
             f"{'ncalls':>10} {'tottime':>8} {'cumtime':>8}  function"]
    for (file, line, func), (primitive, calls, tottime, cumtime, _callers) in entries[:limit]:
        where = func if file == "~" else f"{file}:{line}({func})"
        count = str(calls) if calls == primitive else f"{calls}/{primitive}"
        lines.append(f"{count:>10} {tottime:8.3f} {cumtime:8.3f}  {short_paths(where)}")
    return "\n".join(lines)


# -- the agent's log ----------------------------------------------------------------------------

#: "%(asctime)s %(levelname)-7s %(name)s: %(message)s", gitsync's format (cli.py).
_LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) (\w+)\s+([\w.]+): (.*)$")
_POPEN = re.compile(r"^Popen\(\['git', '([^']+)'")


@dataclass(frozen=True)
class LogLine:
    at: float  # epoch seconds, millisecond resolution
    level: str
    logger: str
    message: str


class LogFile:
    """A child's log file, read incrementally by byte offset."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def text(self, start: int = 0) -> str:
        with open(self.path, "rb") as handle:
            handle.seek(start)
            return handle.read().decode("utf-8", errors="replace")

    def lines(self, start: int = 0) -> list[LogLine]:
        found = []
        for raw in self.text(start).splitlines():
            match = _LOG_LINE.match(raw)
            if match:
                stamp = time.mktime(time.strptime(match[1], "%Y-%m-%d %H:%M:%S")) + int(match[2]) / 1000
                found.append(LogLine(stamp, match[3], match[4], match[5]))
        return found

    def tail(self, chars: int = 3000) -> str:
        return self.text()[-chars:] if self.path.exists() else "(no log)"


def first(lines: Sequence[LogLine], after: float, logger: str, prefix: str) -> LogLine | None:
    return next((ln for ln in lines if ln.at >= after and ln.logger == logger and ln.message.startswith(prefix)),
                None)


# -- the processes ------------------------------------------------------------------------------


class Child:
    """A child process with its output in a log file; stopped with SIGTERM, killed if it hangs."""

    def __init__(self, name: str, cmd: Sequence[str | Path], log_path: Path, env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> None:
        self.name = name
        self.log = LogFile(log_path)
        self.launched = time.time()
        with open(log_path, "ab") as out:
            self.proc = subprocess.Popen([str(c) for c in cmd], stdout=out, stderr=subprocess.STDOUT, env=env,
                                         cwd=cwd)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            raise BenchError(f"{self.name} exited with {self.proc.returncode}:\n{self.log.tail()}")

    def wait_for_line(self, pattern: str, timeout: float = 60) -> re.Match[str]:
        regex = re.compile(pattern)

        def found() -> re.Match[str] | None:
            self.check_alive()
            return regex.search(self.log.text())

        return wait_for(found, timeout, f"{self.name} to log /{pattern}/", poll=0.05)  # type: ignore[no-any-return]

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM and wait; the exit code, or None when it had to be killed."""
        if self.proc.poll() is not None:
            return self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None


class RefWatch:
    """The branch head of the bare repo, read straight from its loose ref file (a push replaces that file
    atomically): polling it every few ms costs nothing, unlike spawning `git rev-parse` each time."""

    def __init__(self, bare: Path, branch: str = BRANCH) -> None:
        self.bare = bare
        self.ref = bare / "refs" / "heads" / branch
        self.branch = branch

    def read(self) -> str:
        try:
            return self.ref.read_text().strip()
        except FileNotFoundError:  # packed (nothing here packs, but stay correct)
            return git("rev-parse", f"refs/heads/{self.branch}", cwd=self.bare)

    def wait_change(self, before: str, timeout: float, poll: float = 0.01) -> tuple[str, float]:
        deadline = time.monotonic() + timeout
        while True:
            now = self.read()
            if now != before:
                return now, time.time()
            if time.monotonic() > deadline:
                raise BenchError(f"refs/heads/{self.branch} did not move within {timeout:g} s")
            time.sleep(poll)

    def count(self, ref: str | None = None) -> int:
        return int(git("rev-list", "--count", ref or f"refs/heads/{self.branch}", cwd=self.bare))


# -- the report ---------------------------------------------------------------------------------


@dataclass
class Row:
    case: str
    value: str
    target: str = ""
    passed: bool | None = None
    note: str = ""


def render(rows: list[Row]) -> str:
    width = max(len(r.case) for r in rows) + 2
    header = f"{'case':<{width}} {'measured':>22}  {'target':>12}  result"
    lines = [header, "-" * len(header)]
    for row in rows:
        result = "info" if row.passed is None else ("PASS" if row.passed else "FAIL")
        lines.append(f"{row.case:<{width}} {row.value:>22}  {row.target:>12}  {result}")
        if row.note:
            lines.append(f"{'':<6}{row.note}")
    return "\n".join(lines)


# -- the bench ----------------------------------------------------------------------------------


@dataclass
class Sample:
    index: int
    name: str
    t0: float  # epoch, just before the POST
    posted: float  # POST answered
    seen: float  # commit seen on the remote
    sha: str
    agent_cpu: float

    @property
    def latency(self) -> float:
        return self.seen - self.t0


@dataclass
class Bench:
    root: Path
    args: argparse.Namespace
    rows: list[Row] = field(default_factory=list)
    sections: list[tuple[str, str]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.debounce: float = self.args.debounce
        self.remote = self.root / "remote"
        self.bare = self.remote / "remote.git"
        self.seed = self.remote / "work"
        self.site = self.root / "site"
        self.target = self.site / "job-definitions"
        self.state = self.site / "state"
        self.ref = RefWatch(self.bare)
        self.api_key = "bench-" + secrets.token_hex(12)
        self.http = httpx.Client(trust_env=False, timeout=60,
                                 limits=httpx.Limits(max_connections=self.args.workers + 4,
                                                     max_keepalive_connections=self.args.workers + 4))
        self.jobs: Child | None = None
        self.jobs_url = ""
        self.agent: Child | None = None
        self.agent_url = ""
        self.agent_starts = 0

    # -- setup ------------------------------------------------------------------------------------
    def build_remote(self) -> None:
        git("init", "--quiet", "--bare", f"--initial-branch={BRANCH}", self.bare)
        git("clone", "--quiet", self.bare, self.seed)
        git("checkout", "--quiet", "-B", BRANCH, cwd=self.seed)
        for item in SAMPLE_REPO.iterdir():
            if item.is_dir():
                shutil.copytree(item, self.seed / item.name)
            else:
                shutil.copy2(item, self.seed / item.name)
        git("add", "-A", cwd=self.seed)
        git("commit", "--quiet", "-m", "Import job definitions", cwd=self.seed)
        git("push", "--quiet", "origin", f"HEAD:refs/heads/{BRANCH}", cwd=self.seed)
        files = git("ls-tree", "-r", "--name-only", BRANCH, "--", "jobs", cwd=self.bare).split()
        log(f"bare remote {self.bare} seeded from sample-repo: {len(files)} files under jobs/")

    def start_jobs_service(self) -> None:
        self.site.mkdir(parents=True, exist_ok=True)
        config = self.site / "farm-jobs.toml"
        config.write_text("[settings.nv.svc.farm.jobs]\n"
                          'store_class = "nv.svc.farm.services.jobs.facilities.store.directory.DirectoryJobStore"\n'
                          f"store_args.new_job_definition_save_location = '{self.target}'\n"
                          f'api_key = "{self.api_key}"\n\n'
                          "[settings.nv.svc.server.http]\n"
                          'host = "127.0.0.1"\nport = 0\n', encoding="utf-8")
        self.jobs = Child("the jobs service", [sys.executable, "-m", "gitsync.jobs_service", "--config", config,
                                               "--port", "0"], self.site / "jobs-service.log", cwd=self.root)
        match = self.jobs.wait_for_line(r"jobs service \(.*?\) at (http://\S+);")
        self.jobs_url = match[1]
        wait_for(lambda: self.http.get(f"{self.jobs_url}/status").status_code == 200, 30, "jobs service /status")
        log(f"jobs service pid {self.jobs.pid} at {self.jobs_url}, saving into {self.target}")

    def start_agent(self) -> None:
        env = dict(os.environ, GITSYNC_PUSH_DEBOUNCE=str(self.debounce))
        launch = ["-c", _QUIET_WATCHDOG] if self.args.agent_log_level == "DEBUG" else ["-m", "gitsync"]
        cmd = [sys.executable, *launch, "--log-level", self.args.agent_log_level, "run",
               "--repo", self.bare, "--path", "jobs", "--target", self.target, "--state-dir", self.state,
               "--interval", "3600", "--listen", "127.0.0.1:0"]
        self.agent_starts += 1
        self.agent = Child("gitsync run", cmd, self.site / f"agent-{self.agent_starts}.log", env=env, cwd=self.root)
        match = self.agent.wait_for_line(r"serving .* on (http://[\d.]+:\d+)")
        self.agent_url = match[1]

        def ready() -> bool:
            self.agent.check_alive()  # type: ignore[union-attr]
            return self.http.get(f"{self.agent_url}/readyz").status_code == 200

        wait_for(ready, 120, "gitsync run's first sync (/readyz)", poll=0.05)
        took = time.time() - self.agent.launched
        wait_for(lambda: all(n in self.load() for n in LATENCY_DEFINITIONS), 30,
                 "the jobs service to serve the synced definitions")
        self.wait_quiet()
        log(f"gitsync run pid {self.agent.pid} at {self.agent_url}: first sync done {took:.1f} s after launch "
            f"(debounce {self.debounce:g} s, log level {self.args.agent_log_level})")

    def stop_agent(self) -> None:
        if self.agent is None:
            return
        agent, self.agent = self.agent, None
        code = agent.stop()
        if code != 0:
            self.problems.append(f"gitsync run exited {code} after SIGTERM (log {agent.log.path})")

    def stop_all(self) -> None:
        with contextlib.suppress(Exception):
            self.stop_agent()
        if self.jobs is not None:
            code = self.jobs.stop(15)
            if code not in (0, -signal.SIGTERM):
                self.problems.append(f"the jobs service exited {code} after SIGTERM (log {self.jobs.log.path})")
            self.jobs = None
        self.http.close()

    # -- talking to them --------------------------------------------------------------------------
    def load(self) -> dict[str, dict[str, Any]]:
        response = self.http.get(f"{self.jobs_url}/load")
        response.raise_for_status()
        loaded: dict[str, dict[str, Any]] = response.json()
        return loaded

    def save(self, definition: dict[str, Any]) -> httpx.Response:
        return self.http.post(f"{self.jobs_url}/save", json=definition, headers={"X-API-KEY": self.api_key})

    def status(self) -> dict[str, Any]:
        found: dict[str, Any] = self.http.get(f"{self.agent_url}/status").json()
        return found

    def wait_quiet(self, window: float | None = None, timeout: float = 120) -> None:
        """Until the outbox is empty and the agent has neither finished a cycle nor logged anything for
        `window` s: the follow-up cycle its own pull triggers (a debounce later) must not meet the next save."""
        window = window if window is not None else self.debounce + 0.75
        assert self.agent is not None
        deadline = time.monotonic() + timeout
        last: tuple[Any, ...] = ()
        since = time.monotonic()
        while True:
            self.agent.check_alive()
            status = self.status()
            key = (status.get("last_attempt_at"), status.get("outbox_length"), self.agent.log.size())
            now = time.monotonic()
            if key != last:
                last, since = key, now
            elif status.get("outbox_length") == 0 and now - since >= window:
                return
            if now > deadline:
                raise BenchError(f"the agent did not go quiet within {timeout:g} s (outbox "
                                 f"{status.get('outbox_length')}, last error {status.get('push_last_error')!r})")
            time.sleep(0.05)

    # -- (1) latency ------------------------------------------------------------------------------
    def latency(self) -> list[Sample]:
        loaded = self.load()
        names = [n for n in LATENCY_DEFINITIONS if n in loaded]
        base_args = {n: list(loaded[n].get("args") or []) for n in names}
        samples: list[Sample] = []
        assert self.agent is not None
        for i in range(-1, self.args.samples):  # -1: a warm-up, not counted
            name = names[i % len(names)]
            definition = self.load()[name]  # fresh: job_spec_path, and git's text after the last pull
            value = f"--bench-sample={i}"
            definition["args"] = [*base_args[name], value]
            before = self.ref.read()
            cpu_before = cpu_of(self.agent.pid)
            t0 = time.time()
            response = self.save(definition)
            posted = time.time()
            if response.status_code != 200:
                raise BenchError(f"POST /save of {name}: {response.status_code} {response.text}")
            sha, seen = self.ref.wait_change(before, timeout=60)
            new = self.ref.count(f"{before}..{sha}")
            patch = git("show", "--format=%an", sha, cwd=self.bare)
            if new != 1 or f'"{value}"' not in patch or not patch.startswith("gitsync"):
                raise BenchError(f"sample {i}: expected one gitsync commit carrying {value} for {name}, got {new}:\n"
                                 + patch[:2000])
            self.wait_quiet()
            sample = Sample(i, name, t0, posted, seen, sha, cpu_of(self.agent.pid) - cpu_before)
            log(f"(1) {'warm-up' if i < 0 else f'sample {i + 1}/{self.args.samples}'}: {name} "
                f"{secs(sample.latency)} (POST {ms(posted - t0)}), agent cpu {ms(sample.agent_cpu)}")
            if i >= 0:
                samples.append(sample)
        return samples

    def baseline(self, runs: int) -> tuple[list[float], list[float]]:
        """`git commit -a` + `git push` of a one-line change from a clone, and the same after a `git fetch`."""
        clone = self.root / "baseline-clone"
        shutil.rmtree(clone, ignore_errors=True)
        git("clone", "--quiet", "--branch", BRANCH, self.bare, clone)
        readme = clone / "README.md"
        plain: list[float] = []
        fetched: list[float] = []
        ident = ["-c", "user.name=Bench", "-c", "user.email=bench@example.com", "-c", "commit.gpgsign=false"]
        for r in range(-1, 2 * runs):  # -1: warm-up
            with_fetch = r >= runs
            lines = readme.read_text().splitlines()
            lines[-1] = f"Benchmark line {r}."
            readme.write_text("\n".join(lines) + "\n")
            started = time.perf_counter()
            if with_fetch:
                run(["git", "fetch", "--quiet", "origin"], cwd=clone)
            run(["git", *ident, "commit", "--quiet", "-am", f"Baseline change {r}"], cwd=clone)
            run(["git", "push", "--quiet", "origin", f"HEAD:refs/heads/{BRANCH}"], cwd=clone)
            took = time.perf_counter() - started
            if r >= 0:
                (fetched if with_fetch else plain).append(took)
        return plain, fetched

    def latency_breakdown(self, samples: list[Sample], lines: list[LogLine]) -> str:
        """Where each sample's time went, from the agent's DEBUG log lines (ms resolution)."""
        parts: dict[str, list[float]] = defaultdict(list)
        git_time: dict[str, list[float]] = defaultdict(list)
        git_calls: dict[str, list[int]] = defaultdict(list)
        missing = 0
        for s in samples:
            window = [ln for ln in lines if s.t0 - 0.005 <= ln.at <= s.seen + 0.5]
            fired = first(window, s.t0 - 0.005, "gitsync.agent", "sync requested by local change")
            pushed = first(window, s.t0, "gitsync.push", "pushed ")
            if fired is None or pushed is None:
                missing += 1
                continue
            captured = first(window, fired.at, "gitsync.capture", "captured local change")
            parts["POST /save answered"].append(s.posted - s.t0)
            parts["save -> debouncer fires (sync requested)"].append(fired.at - s.t0)
            parts["  of which over the debounce"].append(fired.at - s.t0 - self.debounce)
            if captured is not None:
                parts["fires -> change captured (capture)"].append(captured.at - fired.at)
                parts["captured -> 'pushed' logged (flush)"].append(pushed.at - captured.at)
            parts["fires -> 'pushed' logged"].append(pushed.at - fired.at)
            parts["'pushed' logged -> ref seen by the poller"].append(s.seen - pushed.at)
            parts["total: save -> commit on the remote"].append(s.latency)
            cycle = [ln for ln in window if fired.at <= ln.at <= pushed.at]
            per_cmd: dict[str, float] = defaultdict(float)
            calls: dict[str, int] = defaultdict(int)
            for here, nxt in zip(cycle, cycle[1:], strict=False):
                match = _POPEN.match(here.message) if here.logger == "git.cmd" else None
                if match:
                    per_cmd[match[1]] += nxt.at - here.at
                    calls[match[1]] += 1
            for cmd in set(per_cmd) | set(git_time):
                git_time[cmd].append(per_cmd.get(cmd, 0.0))
                git_calls[cmd].append(calls.get(cmd, 0))
        if not parts:
            return ("no breakdown: the agent's log has no DEBUG lines (run with --agent-log-level DEBUG)"
                    if self.args.agent_log_level != "DEBUG" else "no breakdown: log lines not found")
        out = [f"{'step (medians over ' + str(len(samples) - missing) + ' samples)':<48} {'p50':>8} {'min':>8} "
               f"{'max':>8}"]
        for key, values in parts.items():
            out.append(f"{key:<48} {ms(median(values)):>8} {ms(min(values)):>8} {ms(max(values)):>8}")
        if git_time:
            out.append("")
            out.append("git commands between 'sync requested' and 'pushed' (Popen logged -> next log line, so each "
                       "includes the Python work up to the next call):")
            total = 0.0
            for cmd, values in sorted(git_time.items(), key=lambda kv: -median(kv[1])):
                total += median(values)
                out.append(f"  git {cmd:<14} {ms(median(values)):>8} p50 per sample, {median(git_calls[cmd]):.0f} "
                           "call(s)")
            out.append(f"  {'sum of medians':<18} {ms(total):>8}")
        cpu = [s.agent_cpu for s in samples]
        out.append("")
        out.append(f"agent CPU per sample (whole cycle incl. the pull and the follow-up cycle, git children "
                   f"included): p50 {ms(median(cpu))}")
        return "\n".join(out)

    # -- in-process profile of one push-back cycle ----------------------------------------------------
    def profile_cycle(self, count: int) -> None:
        """Stop the agent, build the same agent in this process and time/profile capture + flush directly
        (no watcher, no debounce): the part of a cycle that stands between the debounce and the commit."""
        from gitsync.agent import build_agent
        from gitsync.capture import capture
        from gitsync.config import load_settings

        self.stop_agent()
        settings = load_settings(None, {"repo.url": str(self.bare), "repo.path": "jobs",
                                        "target.directory": str(self.target), "state.dir": str(self.state),
                                        "sync.interval": 3600.0, "server.listen": ""},
                                 environ={"GITSYNC_PUSH_DEBOUNCE": str(self.debounce)})
        agent = build_agent(settings)
        assert agent.pushback is not None
        syncer, pushback = agent.syncer, agent.pushback
        profiler = cProfile.Profile()
        timings: dict[str, list[float]] = defaultdict(list)
        loaded = self.load()
        try:
            agent.run_once("bench warm-up")
            for i in range(2 * count):
                profiled = i >= count
                name = LATENCY_DEFINITIONS[i % len(LATENCY_DEFINITIONS)]
                definition = self.load()[name]
                definition["args"] = [*(loaded[name].get("args") or []), f"--bench-profile={i}"]
                before = self.ref.read()
                if self.save(definition).status_code != 200:
                    raise BenchError(f"POST /save of {name} failed while profiling")
                steps: list[tuple[str, Callable[[], object]]] = [
                    ("capture", lambda: capture(syncer.target, syncer.state, pushback.outbox,
                                                settings.sync_max_delete_share)),
                    ("flush", pushback.flush)]
                for step, action in steps:
                    started = time.perf_counter()
                    if profiled:
                        profiler.enable()
                    action()
                    if profiled:
                        profiler.disable()
                    timings[f"{step}{' (profiled)' if profiled else ''}"].append(time.perf_counter() - started)
                if self.ref.read() == before:
                    raise BenchError(f"in-process flush of {name} made no commit")
                started = time.perf_counter()
                syncer.sync()
                timings[f"pull{' (profiled run)' if profiled else ''}"].append(time.perf_counter() - started)
        finally:
            syncer.close()
        lines = [f"{count} cycles unprofiled, then {count} under cProfile; medians: "
                 + ", ".join(f"{k} {ms(median(v))}" for k, v in timings.items())]
        self.sections.append(("(1) capture + flush in-process (the agent's code between debounce and commit), "
                              "cProfile", "\n".join(lines) + "\n" + top_cumulative(pstats.Stats(profiler))))
        self.start_agent()

    # -- (2) burst --------------------------------------------------------------------------------
    def burst(self) -> dict[str, Any]:
        total, defs, workers = self.args.burst, min(self.args.burst_defs, self.args.burst), self.args.workers
        names = [f"burst-{i:04d}" for i in range(1, defs + 1)]
        plan = [(j, names[j % defs], f"save-{j:04d}") for j in range(total)]
        rounds = [plan[k:k + defs] for k in range(0, total, defs)]
        assert self.agent is not None and self.jobs is not None
        before = self.ref.read()
        commits_before = self.ref.count()
        log_offset = self.agent.log.size()
        agent_cpu, jobs_cpu = cpu_of(self.agent.pid), cpu_of(self.jobs.pid)
        results: list[tuple[int, str, str, int, float, float]] = []

        def one(item: tuple[int, str, str]) -> tuple[int, str, str, int, float, float]:
            j, name, value = item
            started = time.time()
            try:
                code = self.save({"name": name, "job_type": "base", "command": "/bin/echo", "args": [value]}) \
                    .status_code
            except httpx.HTTPError:
                code = 0
            return j, name, value, code, started, time.time()

        log(f"(2) burst: {total} saves over {defs} new definitions ({len(rounds)} round(s), each definition saved "
            f"once per round, rounds in order), {workers} client threads")
        started = time.time()
        with ThreadPoolExecutor(workers) as pool:
            for number, batch in enumerate(rounds):
                results += pool.map(one, batch)
                log(f"(2) round {number + 1}/{len(rounds)} done: {len(results)} saves, "
                    f"{len(results) / (time.time() - started):.1f} saves/s so far")
        ended = time.time()
        failed = [r for r in results if r[3] != 200]
        last: dict[str, str] = {}
        for _j, name, value, code, _s, _e in sorted(results):
            if code == 200:
                last[name] = value
        log(f"(2) burst done in {ended - started:.1f} s ({total / (ended - started):.1f} saves/s, {len(failed)} "
            "failed); waiting for git")

        deadline = time.monotonic() + self.args.burst_timeout
        in_git: dict[str, str | None] = {}
        done_at: float | None = None
        while time.monotonic() < deadline:
            in_git = self.git_values(names)
            if all(in_git.get(n) == v for n, v in last.items()) and self.status().get("outbox_length") == 0:
                done_at = time.time()
                break
            self.agent.check_alive()
            time.sleep(0.25)
        complete = done_at is not None
        if done_at is not None:
            log(f"(2) every definition's last value in git {done_at - ended:.1f} s after the last save")
        else:
            log(f"(2) gave up after {self.args.burst_timeout:g} s: "
                f"{sum(in_git.get(n) == v for n, v in last.items())}/{len(last)} in git")
        with contextlib.suppress(BenchError):
            self.wait_quiet(window=max(2.0, self.debounce + 1.0), timeout=120)
        after = self.ref.read()
        commits = self.ref.count() - commits_before
        authors = git("log", "--format=%an", f"{before}..{after}", cwd=self.bare).split()
        status_cli = json.loads(run([sys.executable, "-m", "gitsync", "status", "--format", "json", "--repo",
                                     self.bare, "--path", "jobs", "--target", self.target, "--state-dir", self.state],
                                    check=False) or "{}")
        loaded = self.load()
        served = sum(loaded.get(n, {}).get("args") == [v] for n, v in last.items())
        final_git = self.git_values(names)
        return {
            "total": total, "defs": defs, "rounds": len(rounds), "workers": workers, "started": started,
            "ended": ended, "done_at": done_at, "failed": len(failed), "complete": complete,
            "in_git": sum(final_git.get(n) == v for n, v in last.items()), "expected": len(last),
            "commits": commits, "gitsync_commits": authors.count("gitsync"), "before": before, "after": after,
            "outbox_cli": status_cli.get("outbox_length"), "served": served, "results": results,
            "agent_cpu": cpu_of(self.agent.pid) - agent_cpu, "jobs_cpu": cpu_of(self.jobs.pid) - jobs_cpu,
            "log_offset": log_offset,
        }

    def git_values(self, names: list[str]) -> dict[str, str | None]:
        """args[0] of each burst definition as committed on main (one ls-tree and one cat-file --batch)."""
        wanted = {f"jobs/{n}.kit": n for n in names}
        tree = git("ls-tree", "-r", f"refs/heads/{BRANCH}", "--", "jobs", cwd=self.bare)
        blobs: dict[str, str] = {}
        for line in tree.splitlines():
            meta, path = line.split("\t", 1)
            if path in wanted:
                blobs[meta.split()[2]] = wanted[path]
        if not blobs:
            return {}
        out = subprocess.run(["git", "cat-file", "--batch"], cwd=self.bare, input="\n".join(blobs).encode() + b"\n",
                             capture_output=True, check=True).stdout
        values: dict[str, str | None] = {}
        view = memoryview(out)
        pos = 0
        while pos < len(out):
            end = out.index(b"\n", pos)
            sha, _kind, size = out[pos:end].decode().split()
            body = bytes(view[end + 1:end + 1 + int(size)])
            pos = end + 1 + int(size) + 1
            name = blobs[sha]
            try:
                job = tomllib.loads(body.decode()).get("job", {}).get(name, {})
                args = job.get("args") or [None]
                values[name] = args[0]
            except (tomllib.TOMLDecodeError, UnicodeDecodeError):
                values[name] = None
        return values

    def burst_timeline(self, b: dict[str, Any]) -> str:
        """Each agent cycle during the burst, from its log, with the files in each commit it pushed."""
        assert self.agent is not None
        lines = self.agent.log.lines(b["log_offset"])
        files_by_sha: dict[str, int] = {}
        for sha in git("rev-list", "--reverse", f"{b['before']}..{b['after']}", cwd=self.bare).split():
            files_by_sha[sha[:12]] = len(git("show", "--format=", "--name-only", sha, cwd=self.bare).split())
        t0 = b["started"]
        rows = [f"{'cycle':>5} {'requested':>10} {'by':<13} {'captured':>9} {'pushed':>8} {'files':>5} "
                f"{'cycle end':>9} {'pull':>6} {'drift':>5}   (seconds from the first save; burst ended at "
                f"{b['ended'] - t0:.1f} s; drift: saved after the capture, left for the next cycle)"]
        cycle: dict[str, Any] = {}
        count = 0
        flush_git: dict[str, float] = defaultdict(float)
        flush_calls: dict[str, int] = defaultdict(int)
        flush_files = 0
        flush_total = 0.0
        in_flush: LogLine | None = None
        previous: LogLine | None = None

        def flush_row() -> None:
            nonlocal count
            if not cycle:
                return
            count += 1

            def at(key: str) -> str:
                return f"{cycle[key] - t0:.1f}" if key in cycle else "-"

            rows.append(f"{count:>5} {at('req'):>10} {cycle.get('by', ''):<13} {at('cap'):>9} {at('push'):>8} "
                        f"{cycle.get('files', ''):>5} {at('end'):>9} {cycle.get('pull', ''):>6} "
                        f"{cycle.get('drift', 0):>5}")
            cycle.clear()

        for ln in lines:
            if in_flush is not None and previous is not None and previous.logger == "git.cmd":
                match = _POPEN.match(previous.message)
                if match:  # a git command started at `previous`; the next line comes after it finished
                    flush_git[match[1]] += ln.at - previous.at
                    flush_calls[match[1]] += 1
            previous = ln
            if ln.logger == "gitsync.agent" and ln.message.startswith("sync requested by "):
                flush_row()
                cycle.update(req=ln.at, by=ln.message.removeprefix("sync requested by ")[:13])
            elif ln.logger == "gitsync.capture" and ln.message.startswith("captured local change"):
                cycle["cap"] = ln.at
                in_flush = ln
            elif ln.logger == "gitsync.push" and ln.message.startswith("pushed "):
                cycle["push"] = ln.at
                cycle["files"] = files_by_sha.get(ln.message.split()[1][:12], "?")
                if in_flush is not None:
                    flush_total += ln.at - in_flush.at
                    flush_files += cycle["files"] if isinstance(cycle["files"], int) else 0
                in_flush = None
            elif ln.logger == "gitsync.sync" and ln.message.startswith("drift: "):
                cycle["drift"] = cycle.get("drift", 0) + 1
            elif ln.logger == "gitsync.sync" and ln.message.startswith("sync "):
                cycle["end"] = ln.at
                found = re.search(r"\((\d+\.\d+) s\)", ln.message)
                cycle["pull"] = f"{float(found[1]):.2f}" if found else ""
        flush_row()
        if flush_total and flush_files:
            rows += ["", f"flushes ('captured' -> 'pushed') of the burst: {flush_files} files in {flush_total:.1f} s, "
                         f"{ms(flush_total / flush_files)} per file; git commands started in them (Popen logged -> "
                         "next log line, so each includes the Python work up to the next call):"]
            for cmd, spent in sorted(flush_git.items(), key=lambda kv: -kv[1]):
                rows.append(f"  git {cmd:<14} {flush_calls[cmd]:>6} calls {spent:7.2f} s "
                            f"({ms(spent / flush_calls[cmd])} each)")
        return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--samples", type=int, default=30, help="(1) latency samples (default 30, plus a warm-up)")
    parser.add_argument("--burst", type=int, default=1000, help="(2) saves in the burst (default 1000)")
    parser.add_argument("--burst-defs", type=int, default=200,
                        help="(2) distinct new definitions the burst saves round by round (default 200, i.e. 5 "
                             "saves each; --burst-defs 1000 = one save each)")
    parser.add_argument("--workers", type=int, default=8, help="(2) client threads (default 8)")
    parser.add_argument("--debounce", type=float, default=1.0, help="push.debounce of the agent (default 1.0 s)")
    parser.add_argument("--baseline-runs", type=int, default=10, help="(1) baseline commit+push runs (default 10)")
    parser.add_argument("--burst-timeout", type=float, default=600.0,
                        help="(2) seconds after the last save to wait for git (default 600)")
    parser.add_argument("--phases", default="12", help="which of 1 (latency) and 2 (burst) to run (default 12)")
    parser.add_argument("--agent-log-level", default="DEBUG", choices=["DEBUG", "INFO"],
                        help="the agent's log level; DEBUG (default) gives the per-step breakdown")
    profile = parser.add_mutually_exclusive_group()
    profile.add_argument("--profile", action="store_const", const="always", dest="profile", default="missed",
                         help="profile capture+flush in-process even if (1) meets its target")
    profile.add_argument("--no-profile", action="store_const", const="never", dest="profile")
    parser.add_argument("--profile-cycles", type=int, default=5, help="cycles to profile (default 5)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, repos) and print its path")
    parser.add_argument("--tmp", type=Path, default=None, help="parent of the temp dir (default: system temp)")
    args = parser.parse_args(argv)
    if args.samples < 1 or args.burst < 1 or args.burst_defs < 1 or args.debounce <= 0:
        parser.error("--samples, --burst and --burst-defs must be at least 1, --debounce more than 0")

    root = Path(tempfile.mkdtemp(prefix="gitsync-bench-push-", dir=args.tmp)).resolve()
    isolate_environment(root / "home")
    os.chdir(root)  # no ./gitsync.toml can leak in
    bench = Bench(root, args)
    started_at, load_at_start = time.monotonic(), os.getloadavg()[0]
    target_p50 = args.debounce + TARGET_MARGIN
    failed = False
    source = "?"
    try:
        source = use_this_checkout()
        log(f"temp dir {root}; {os.cpu_count()} CPUs; {sys.executable}; gitsync from {source}")
        bench.build_remote()
        bench.start_jobs_service()
        bench.start_agent()
        if "1" in args.phases:
            samples = bench.latency()
            lat = [s.latency for s in samples]
            p50 = median(lat)
            log(f"(1) p50 {secs(p50)}; baseline: {args.baseline_runs} x git commit + git push")
            plain, fetched = bench.baseline(args.baseline_runs)
            base = median(plain)
            margin = p50 - args.debounce
            bench.rows += [
                Row(f"(1) save -> commit on remote, p50 of {len(lat)}", secs(p50), f"<= {secs(target_p50)}",
                    p50 <= target_p50, note=f"p95 {secs(percentile(lat, 0.95))}, max {secs(max(lat))}, "
                                            f"min {secs(min(lat))}; POST /save p50 "
                                            f"{ms(median([s.posted - s.t0 for s in samples]))}"),
                Row("    margin over the debounce (p50 - debounce)", ms(margin), f"<= {ms(TARGET_MARGIN)}",
                    margin <= TARGET_MARGIN),
                Row("    p95 / max", f"{secs(percentile(lat, 0.95))} / {secs(max(lat))}"),
                Row(f"    baseline: git commit -a + git push, median of {len(plain)}", ms(base),
                    note=f"min {ms(min(plain))}, max {ms(max(plain))}; with a git fetch first: "
                         f"{ms(median(fetched))}"),
                Row("    (p50 - debounce) / baseline", f"{margin / base:.1f}x",
                    note=f"vs fetch + commit + push: {margin / median(fetched):.1f}x"),
            ]
            assert bench.agent is not None
            lines = bench.agent.log.lines()
            bench.sections.append(("(1) latency: where each sample's time goes (agent DEBUG log, ms resolution)",
                                   bench.latency_breakdown(samples, lines)))
            bench.sections.append(("(1) samples (s): " + ", ".join(f"{s.latency:.3f}" for s in samples), ""))
            if args.profile == "always" or (args.profile == "missed" and p50 > target_p50):
                log("(1) profiling capture + flush in-process")
                bench.profile_cycle(args.profile_cycles)
        if "2" in args.phases:
            b = bench.burst()
            wall = b["ended"] - b["started"]
            durations = sorted(r[5] - r[4] for r in b["results"])
            tenth = max(1, len(b["results"]) // 10)
            by_start = sorted(b["results"], key=lambda r: r[4])
            early = by_start[:tenth]
            late = by_start[-tenth:]
            rate_early = len(early) / max(1e-9, early[-1][5] - early[0][4])
            rate_late = len(late) / max(1e-9, late[-1][5] - late[0][4])
            shape = f"{b['defs']} defs x {b['total'] // b['defs']}" if b["total"] % b["defs"] == 0 else \
                f"{b['defs']} defs, {b['rounds']} rounds"
            done = b["done_at"]
            bench.rows += [
                Row(f"(2) burst: {b['total']} POST /save ({shape}), {b['workers']} threads", secs(wall),
                    note=f"{b['total'] / wall:.1f} saves/s overall; first tenth {rate_early:.1f}/s, last tenth "
                         f"{rate_late:.1f}/s (the stand-in scans its whole directory on each save); POST p50 "
                         f"{ms(median(durations))}, p95 {ms(percentile(durations, 0.95))}; {b['failed']} failed"),
                Row("    first save -> all last values in git, outbox 0",
                    secs(done - b["started"]) if done else f"> {secs(wall + args.burst_timeout)}",
                    note=(f"{secs(done - b['ended'])} after the last save answered" if done else "timed out")),
                Row(f"    all {b['expected']} definitions' last values in git", f"{b['in_git']}/{b['expected']}",
                    "all", b["complete"] and b["in_git"] == b["expected"] and b["failed"] == 0,
                    note=f"outbox per `gitsync status`: {b['outbox_cli']}; /load serves the last value for "
                         f"{b['served']}/{b['expected']}"),
                Row("    commits gitsync made for the burst", str(b["commits"]), f"<= {TARGET_COMMITS}",
                    1 <= b["commits"] <= TARGET_COMMITS,
                    note=f"{b['gitsync_commits']} authored by gitsync; debouncer: {args.debounce:g} s quiet or "
                         f"{10 * args.debounce:g} s after the first change, so a {wall:.0f} s burst needs about "
                         f"{math.ceil(wall / (10 * args.debounce))}+"),
                Row("    CPU during the burst: agent / jobs service", f"{b['agent_cpu']:.1f} s / {b['jobs_cpu']:.1f} s",
                    note="user+sys, the agent's git children included"),
            ]
            bench.sections.append(("(2) burst: the agent's cycles (from its log)", bench.burst_timeline(b)))
    except BenchError as exc:
        print(f"bench_pushback: {exc}", file=sys.stderr)
        failed = True
    except KeyboardInterrupt:
        print("bench_pushback: interrupted", file=sys.stderr)
        failed = True
    finally:
        bench.stop_all()
        os.chdir(REPO_ROOT)
        if args.keep or failed:
            log(f"kept {root} (logs under site/)")
        else:
            shutil.rmtree(root, ignore_errors=True)

    if bench.rows:
        print()
        commit = run(["git", "-C", REPO_ROOT, "rev-parse", "--short", "HEAD"], check=False).strip()
        dirty = run(["git", "-C", REPO_ROOT, "status", "--porcelain", "--", "gitsync"], check=False).strip()
        print(f"gitsync {commit}{' + uncommitted changes' if dirty else ''}: push-back benchmark, debounce "
              f"{args.debounce:g} s, {os.cpu_count()} CPUs, git {run(['git', '--version']).split()[-1]}, Python "
              f"{sys.version.split()[0]} ({time.monotonic() - started_at:.0f} s in all)")
        print(f"gitsync imported from {source}; load average {load_at_start:.1f} at start, "
              f"{os.getloadavg()[0]:.1f} at end; agent log level {args.agent_log_level}")
        print(render(bench.rows))
        missed = [r.case.strip() for r in bench.rows if r.passed is False]
        print()
        print("targets: " + ("all met" if not missed else f"{len(missed)} missed: " + "; ".join(missed)))
        for title, text in bench.sections:
            print()
            print(f"== {title}")
            if text:
                print(text)
    for problem in bench.problems:
        print(f"bench_pushback: {problem}", file=sys.stderr)
    return 1 if failed or bench.problems else 0


if __name__ == "__main__":
    sys.exit(main())
