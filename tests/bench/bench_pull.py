#!/usr/bin/env python3
"""Benchmark gitsync's pull path against plain git, on a repo of N realistic `.kit` files.

    python tests/bench/bench_pull.py [--files 10000] [--repeat 3] [--profile]

Builds a bare repo in a temp dir, then measures (medians over --repeat runs, every figure
next to a baseline measured in the same run on the same repo):

  (a) initial sync: `gitsync sync --once` into an empty target and state dir, against
      `git clone --depth 1 --branch main file://... && cp` of the .kit files into one folder.
  (b) incremental sync of a one-file commit: `gitsync sync --once` as a subprocess (as a
      CronJob runs it; includes Python start-up) and `Syncer.sync()` in-process (as `gitsync
      run` does it), against `git fetch` + `git diff --name-only old new` in an existing clone.
  (c) idle RSS of `gitsync run` holding N definitions, started on a synced target and from
      scratch, read from /proc/<pid>/status once its first sync is done.

Wall times decide PASS/FAIL; CPU times (user+sys, children included) are shown too, as other
load on a shared machine disturbs them much less.

It is a report: PASS/FAIL is printed per target, but the exit status is non-zero only when
the benchmark itself could not run (a sync failed, a file came out wrong). A missed target is
profiled afterwards (cProfile top 15 cumulative, `-X importtime` for start-up; for memory:
import-only RSS, RSS after malloc_trim, tracemalloc by file); --profile profiles every phase,
--no-profile none.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import random
import re
import resource
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import textwrap
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchenv import BenchError
from benchenv import isolate_environment as isolate_git_environment

REPO_ROOT = Path(__file__).resolve().parents[2]
TARGET_INITIAL = 2.0
TARGET_INCREMENTAL = 1.5
TARGET_RSS_MIB = 80.0

# -- the generated definitions --------------------------------------------------------------------

#: (folder under jobs/, job name prefix, job type, team) -- 20 folders.
FOLDERS = [
    ("render", "usd-render", "kit-service", "render"), ("bake", "light-bake", "kit-service", "lighting"),
    ("sim", "physx-sim", "kit-service", "sim"), ("ops", "node-check", "base", "platform"),
    ("qa", "scene-qa", "kit-service", "qa"), ("ingest", "cad-ingest", "kit-service", "pipeline"),
    ("export", "usdz-export", "kit-service", "pipeline"), ("lighting", "relight", "kit-service", "lighting"),
    ("fx", "fx-cache", "kit-service", "fx"), ("crowd", "crowd-sim", "kit-service", "sim"),
    ("ml-train", "sdg-train", "base", "ml"), ("ml-infer", "sdg-infer", "base", "ml"),
    ("transcode", "transcode", "base", "media"), ("thumbnails", "thumbnail", "kit-service", "media"),
    ("validate", "asset-check", "kit-service", "qa"), ("publish", "publish", "base", "pipeline"),
    ("cache", "usd-cache", "kit-service", "pipeline"), ("layout", "layout-pass", "kit-service", "layout"),
    ("anim", "anim-bake", "kit-service", "anim"), ("lookdev", "lookdev-turn", "kit-service", "lookdev"),
]

_PADDING = [
    "# Frame ranges are split into tasks of 10 frames by the submitter, not by Farm.",
    "# Output goes to the project's Nucleus folder; the task argument --stage picks the scene.",
    "# Keep the resolution in step with the review preset in the pipeline config repo.",
    "# The container tag is pinned: bump it in a separate pull request so a rollback is one revert.",
    "# Agents without the capacity below never pick this job up; check the agent labels first.",
    "# Retries are handled by the submitter (three attempts), so a failure here is final for a task.",
    "# Logs go to stdout so the Farm dashboard shows them next to the task.",
    "# Ask in the farm channel before raising the memory request: it changes which nodes qualify.",
    "# Windows agents use a separate definition; this one runs on the Linux pool only.",
    "# Exit code 3 means 'nothing to do' (empty frame range) and counts as success.",
]


def _job(name: str, folder: str, prefix: str, job_type: str, rng: random.Random, compact: bool = False) -> str:
    kit = job_type == "kit-service"
    command = "/opt/nvidia/omniverse/kit/kit" if kit else rng.choice(["/usr/bin/python3", "/opt/farm/bin/run-task"])
    if compact:  # a small pre-flight check next to the main job
        return "\n".join([
            f"[job.{name}]",
            f'job_type = "{job_type}"',
            f'name = "{name}"',
            f'command = "{command}"',
            f'args = ["/opt/farm/checks/{folder}.py", "--gpus={rng.choice([1, 2, 4])}"]',
            "log_to_stdout = true",
            "",
            f"[job.{name}.capacity_requirements]",
            f"cpu_cores = {rng.choice([1, 2])}",
            f"gpu_count = {rng.choice([0, 1])}",
            "",
        ])
    width, height = rng.choice([(1920, 1080), (3840, 2160), (1280, 720), (2048, 858)])
    lines = [
        f"[job.{name}]",
        f'job_type = "{job_type}"',
        f'name = "{name}"',
        "# Farm 2.x does no token expansion in job fields: write the real path.",
        f'command = "{command}"',
        "args = [",
        '    "--no-window",' if kit else f'    "/opt/farm/tasks/{folder}/{prefix}.py",',
        f'    "--enable", "omni.services.{folder.replace("-", "_")}",' if kit else '    "--verbose",',
        f'    "--/app/renderer/resolution/width={width}",',
        f'    "--/app/renderer/resolution/height={height}",',
        "]",
    ]
    if kit:
        lines.append(f'task_function = "{prefix.replace("-", "_")}.run"')
    lines += [
        "headless = true",
        "log_to_stdout = true",
        "active = true",  # Farm never reads 'active = false' from a file; gitsync warns about it
        f"success_return_codes = [0{', 3' if rng.random() > 0.5 else ''}]",
        f'container = "nvcr.io/nvidia/omniverse/kit:105.1.{rng.randint(0, 9)}"',
        "",
        "# Secrets come from the agent, never from git.",
        f"[job.{name}.env]",
        f'OMNI_LOG_LEVEL = "{rng.choice(["info", "warn", "verbose"])}"',
        f'FARM_QUEUE = "{folder}"',
        f'CUDA_VISIBLE_DEVICES = "{rng.choice(["0", "0,1", "0,1,2,3"])}"',
        "",
        "# Arguments a task may override when it is submitted.",
        f"[job.{name}.allowed_args]",
        f'"--frames" = {{ arg = "--frames", default = "1-{rng.randint(24, 2400)}" }}',
        f'"--stage" = {{ arg = "--stage", default = "omniverse://nucleus/{folder}/{name}.usd" }}',
        "",
        "# What an agent must offer to take this job.",
        f"[job.{name}.capacity_requirements]",
        f"cpu_cores = {rng.choice([4, 8, 16, 32])}",
        f"memory_gb = {rng.choice([16, 32, 64, 128])}",
        f"gpu_count = {rng.choice([0, 1, 2, 4]) if not kit else rng.choice([1, 2])}",
        f"gpu_memory_gb = {rng.choice([16, 24, 48])}",
        "",
    ]
    return "\n".join(lines)


def definition(index: int, rng: random.Random) -> tuple[str, str]:
    """(repo path, text) of file number `index`; base names and job names are unique by construction."""
    folder, prefix, job_type, team = FOLDERS[index % len(FOLDERS)]
    name = f"{prefix}-{index:05d}"
    two_jobs = index % 10 == 7  # one file in ten also holds a pre-flight check, like gpu-checks.kit
    header = [f"# {name}: {folder} job of the {team} team <{team}-farm@example.com>.", "#"]
    body = [
        "",
        "[package]",
        f'title = "{prefix.replace("-", " ").title()} {index}"',
        f'version = "1.{rng.randint(0, 20)}.{rng.randint(0, 9)}"',
        f'keywords = ["farm", "{folder}", "{team}"]',
        "",
        _job(name, folder, prefix, job_type, rng),
    ]
    if two_jobs:
        body.append(_job(f"{name}-preflight", folder, prefix, "base", rng, compact=True))
    elif job_type == "kit-service":
        body += ["# ${job} is the folder holding this file; Farm knows no other placeholder here.",
                 "[settings.app.exts.folders]", '"++" = ["${job}/exts"]', ""]
    size = rng.randint(1500, 1720)
    pad = rng.randrange(len(_PADDING))
    while len("\n".join(header + body)) < size:
        header.append(_PADDING[pad % len(_PADDING)])
        pad += 1
    return f"jobs/{folder}/{name}.kit", "\n".join(header + body)


# -- helpers ------------------------------------------------------------------------------------


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(cmd: Sequence[str | Path], cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise BenchError(f"command failed ({done.returncode}): {' '.join(map(str, cmd))}\n"
                         f"{done.stdout[-2000:]}{done.stderr[-4000:]}")
    return done.stdout


def cpu_seconds() -> float:
    """User + system CPU of this process and of every child (and grandchild) it has waited for."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


@dataclass(frozen=True)
class Timing:
    """Wall time, and CPU time, which other load on a shared machine disturbs much less."""

    wall: float
    cpu: float


class Clock:
    def __enter__(self) -> Clock:
        self._wall, self._cpu = time.perf_counter(), cpu_seconds()
        return self

    def __exit__(self, *exc: object) -> None:
        self.timing = Timing(time.perf_counter() - self._wall, cpu_seconds() - self._cpu)


def timed(cmd: Sequence[str | Path], cwd: Path | None = None, env: dict[str, str] | None = None) -> Timing:
    with Clock() as clock:
        run(cmd, cwd=cwd, env=env)
    return clock.timing


def git(*args: str | Path, cwd: Path | None = None) -> str:
    return run(["git", "-c", "user.name=Bench", "-c", "user.email=bench@example.com", "-c", "commit.gpgsign=false",
                *args], cwd=cwd).strip()


def gitsync_command() -> list[str]:
    """The console script itself: a pyenv/asdf shim in front of it would add ~50 ms of bash to every run."""
    script = Path(sys.executable).parent / "gitsync"
    return [str(script)] if script.exists() else [sys.executable, "-m", "gitsync"]


def isolate_environment(home: Path, pycache: Path) -> None:
    """No user or system git config, no GITSYNC_* settings: the bench process and every child see this.

    Byte-code is cached under `pycache` even when PYTHONDONTWRITEBYTECODE is set: an installed
    gitsync has its .pyc files, and compiling every module at each start-up is not what a
    CronJob pays. PYTHONPYCACHEPREFIX keeps the cache out of the source tree.
    """
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = str(pycache)
    # Measure this checkout's gitsync even if the editable install is pointed somewhere else meanwhile.
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    if sys.path[:1] != [str(REPO_ROOT)]:
        sys.path.insert(0, str(REPO_ROOT))
    isolate_git_environment(home)


def count_kits(directory: Path) -> int:
    return sum(1 for e in os.scandir(directory) if e.name.endswith(".kit")) if directory.is_dir() else 0


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM, ... in kB from /proc/<pid>/status."""
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if (key.startswith(("Vm", "Rss")) and parts[1:] == ["kB"]) or key == "Threads":
            values[key] = int(parts[0])
    return values


def children_rss(pid: int) -> tuple[int, int]:
    """(number of child processes, their total VmRSS in kB): GitPython's `git cat-file --batch` helpers."""
    count = total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                count += 1
                total += proc_status(int(entry.name)).get("VmRSS", 0)
        except (OSError, ValueError, IndexError):
            continue
    return count, total


def read_meta(state_dir: Path) -> dict[str, str]:
    db = state_dir / "state.sqlite3"
    if not db.exists():
        return {}
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1.0)
        try:
            return dict(con.execute("SELECT key, value FROM meta").fetchall())
        finally:
            con.close()
    except sqlite3.Error:
        return {}


def short_paths(text: str) -> str:
    for prefix, short in ((str(REPO_ROOT) + "/", ""), (sysconfig.get_paths()["purelib"] + "/", "site-packages/"),
                          (sysconfig.get_paths()["stdlib"] + "/", "stdlib/")):
        text = text.replace(prefix, short)
    return text


#: Frames that only wrap the real work (interpreter start, runpy, import machinery, cli.main).
_WRAPPERS = re.compile(r"<frozen |builtins\.(exec|__import__)|<string>:1\(<module>\)|gitsync/__main__\.py|"
                       r"gitsync/cli\.py:\d+\(main(_entry)?\)")


def top_cumulative(stats: pstats.Stats, limit: int = 15) -> str:
    """The `limit` entries with the most cumulative time, wrappers (runpy, importlib, main) left out."""
    entries = sorted(stats.stats.items(), key=lambda kv: kv[1][3], reverse=True)  # type: ignore[attr-defined]
    total = stats.total_tt  # type: ignore[attr-defined]
    lines = [f"{total:.3f} s profiled; top {limit} by cumulative time (interpreter/import wrappers hidden)",
             f"{'ncalls':>12} {'tottime':>8} {'cumtime':>8}  function"]
    for (file, line, func), (primitive, calls, tottime, cumtime, _callers) in entries:
        where = func if file == "~" else f"{file}:{line}({func})"
        if _WRAPPERS.search(where):
            continue
        count = str(calls) if calls == primitive else f"{calls}/{primitive}"
        lines.append(f"{count:>12} {tottime:8.3f} {cumtime:8.3f}  {short_paths(where)}")
        if len(lines) >= limit + 2:
            break
    return "\n".join(lines)


def import_times(stderr: str, limit: int = 15) -> str:
    """`-X importtime` output: the slowest imports the program itself triggered (first two nesting levels)."""
    rows = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "imported package" in line:
            continue
        parts = line.removeprefix("import time:").split("|")
        self_us, cumulative_us, name = parts[0].strip(), parts[1].strip(), parts[2].rstrip()
        depth = (len(name) - len(name.lstrip())) // 2
        if depth <= 1:
            rows.append((int(cumulative_us), int(self_us), name))
    rows.sort(reverse=True)
    lines = [f"{'cumulative':>10} {'self':>8}  module (indented: imported from inside a top-level import)"]
    lines += [f"{c / 1000:8.1f}ms {s / 1000:6.1f}ms  {n}" for c, s, n in rows[:limit]]
    return "\n".join(lines)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


#: Runs `gitsync run` in-process; once its first sync is done and it has idled, reports memory and stops it.
#: "trim": RSS, then after gc.collect() and glibc's malloc_trim(0) (freed heap the allocator kept);
#: "trace": tracemalloc's live Python heap by file (tracing itself inflates RSS).
_MEMORY_HELPER = textwrap.dedent("""
    import ctypes, gc, os, signal, sqlite3, sys, threading, time, tracemalloc
    mode, state, idle, launched = sys.argv[1], sys.argv[2], float(sys.argv[3]), time.time()
    if mode == 'trace':
        tracemalloc.start(1)
        os.register_at_fork(after_in_child=tracemalloc.stop)  # pool workers parse at full speed
    def rss():
        for line in open('/proc/self/status'):
            if line.startswith('VmRSS'):
                return int(line.split()[1]) / 1024
    def watch():
        while True:
            try:
                con = sqlite3.connect(f'file:{state}/state.sqlite3?mode=ro', uri=True)
                row = con.execute("SELECT value FROM meta WHERE key = 'last_attempt_at'").fetchone()
                con.close()
                if row and float(row[0]) >= launched:
                    break
            except sqlite3.Error:
                pass
            time.sleep(0.1)
        time.sleep(idle)
        if mode == 'trim':
            idle_rss = rss()
            gc.collect()
            collected = rss()
            ctypes.CDLL('libc.so.6').malloc_trim(0)
            print(f'idle VmRSS {idle_rss:.1f} MiB; after gc.collect() {collected:.1f} MiB; after malloc_trim(0) '
                  f'{rss():.1f} MiB (the difference is freed memory the C allocator kept)')
        else:
            stats = tracemalloc.take_snapshot().statistics('filename')
            traced = sum(s.size for s in stats) / 2**20
            print(f'tracemalloc: live Python heap {traced:.1f} MiB (VmRSS {rss():.1f} MiB while tracing); by file:')
            for stat in stats[:15]:
                print(f'  {stat.size / 2**20:7.2f} MiB {stat.count:8d} blocks  {stat.traceback[0].filename}')
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGTERM)
    threading.Thread(target=watch, daemon=True).start()
    from gitsync.cli import main
    sys.exit(main(sys.argv[4:]))
""")


# -- the bench ----------------------------------------------------------------------------------


@dataclass
class Row:
    case: str
    samples: list[Timing] | list[float]  # timings, or MiB for memory rows
    baseline: list[Timing] | None = None
    target: float | None = None  # ratio target, or MiB for memory rows
    unit: str = "s"
    note: str = ""
    profile_key: str = ""

    @property
    def walls(self) -> list[float]:
        return [t.wall if isinstance(t, Timing) else t for t in self.samples]

    @property
    def value(self) -> float:
        return median(self.walls)

    @property
    def cpu(self) -> float | None:
        cpus = [t.cpu for t in self.samples if isinstance(t, Timing)]
        return median(cpus) if cpus else None

    @property
    def baseline_wall(self) -> float | None:
        return median([t.wall for t in self.baseline]) if self.baseline else None

    @property
    def baseline_cpu(self) -> float | None:
        return median([t.cpu for t in self.baseline]) if self.baseline else None

    @property
    def ratio(self) -> float | None:
        base = self.baseline_wall
        return self.value / base if base else None

    @property
    def cpu_ratio(self) -> float | None:
        cpu, base = self.cpu, self.baseline_cpu
        return cpu / base if cpu is not None and base else None

    @property
    def passed(self) -> bool | None:
        if self.target is None:
            return None
        measured = self.ratio if self.baseline is not None else self.value
        return measured is not None and measured <= self.target


@dataclass
class Bench:
    root: Path
    files: int
    repeat: int
    idle: float
    seed: int
    rows: list[Row] = field(default_factory=list)
    profiles: list[tuple[str, str]] = field(default_factory=list)
    counter: int = 0

    def __post_init__(self) -> None:
        self.bare = self.root / "remote.git"
        self.work = self.root / "work"
        self.url = f"file://{self.bare}"
        self.gitsync = gitsync_command()
        self.rng = random.Random(self.seed + 1)
        self.paths: list[str] = []
        self.agent: Any = None
        self.syncer: Any = None

    # -- setup ------------------------------------------------------------------------------------
    def build_repo(self) -> None:
        log(f"writing {self.files} definitions under {self.work}/jobs")
        rng = random.Random(self.seed)
        sizes = []
        for index in range(self.files):
            rel, text = definition(index, rng)
            path = self.work / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            self.paths.append(rel)
            sizes.append(len(text.encode()))
        (self.work / "README.md").write_text("Farm job definitions, synced by gitsync.\n")
        log(f"file sizes: min {min(sizes)} B, median {int(statistics.median(sizes))} B, max {max(sizes)} B, "
            f"{len(FOLDERS)} folders")
        git("init", "--quiet", "--bare", "--initial-branch=main", self.bare)
        git("init", "--quiet", "--initial-branch=main", cwd=self.work)
        git("add", "-A", cwd=self.work)
        git("commit", "--quiet", "-m", f"Import {self.files} job definitions", cwd=self.work)
        git("remote", "add", "origin", self.url, cwd=self.work)
        git("push", "--quiet", "origin", "main", cwd=self.work)
        log("bare repo ready: " + git("count-objects", "-vH", cwd=self.bare).replace("\n", ", "))

    def self_check(self, full: bool) -> None:
        """The generated files are valid (with --validate: all of them, through `gitsync validate`)."""
        from gitsync import defset
        from gitsync.kit import check_kit

        sample = self.paths if full else self.paths[:: max(1, len(self.paths) // 200)]
        if full:
            out = run([*self.gitsync, "validate", "--strict", "jobs"], cwd=self.work)
            log("gitsync validate: " + out.strip().splitlines()[-1])
            return
        problems = []
        for rel in sample:
            report = check_kit((self.work / rel).read_bytes(), rel, strict=True)
            problems += [p.format() for p in report.problems]
            problems += [p.format() for found in defset.check_set([defset.from_report(rel, report)]).values()
                         for p in found]
        if problems:
            raise BenchError("generated definitions are not valid:\n" + "\n".join(problems[:10]))
        log(f"checked {len(sample)} sample files with check_kit --strict: no problems")

    def sync_cmd(self, target: Path, state: Path) -> list[str]:
        return [*self.gitsync, "sync", "--once", "--repo", self.url, "--path", "jobs", "--target", str(target),
                "--state-dir", str(state)]

    def fresh(self, name: str) -> tuple[Path, Path]:
        base = self.root / "runs" / name
        if base.exists():
            shutil.rmtree(base)
        base.mkdir(parents=True)
        return base / "target", base / "state"

    def push_change(self) -> tuple[str, bytes]:
        """Commit a change to one random file and push it; returns (repo path, new content)."""
        self.counter += 1
        rel = self.rng.choice(self.paths)
        path = self.work / rel
        text = re.sub(r'^version = ".*"$', f'version = "9.{self.counter}.0"', path.read_text(), count=1,
                      flags=re.MULTILINE)
        path.write_text(text)
        git("commit", "--quiet", "-am", f"Bump {Path(rel).stem} to 9.{self.counter}.0", cwd=self.work)
        git("push", "--quiet", "origin", "main", cwd=self.work)
        return rel, text.encode()

    # -- (a) initial sync ---------------------------------------------------------------------------
    def initial(self) -> None:
        ours: list[Timing] = []
        base: list[Timing] = []
        base_durable: list[Timing] = []
        script = 'git clone -q --depth 1 --branch main "$1" "$2" && mkdir -p "$3" && ' \
                 'find "$2/jobs" -type f -name "*.kit" -exec cp -t "$3" {} +'
        for r in range(self.repeat):
            target, state = self.fresh(f"a{r}")
            os.sync()
            ours.append(timed(self.sync_cmd(target, state)))
            if count_kits(target) != self.files:
                raise BenchError(f"initial sync wrote {count_kits(target)} files, expected {self.files}")
            shutil.rmtree(target.parent)
            for variant, samples in (("", base), (" && sync", base_durable)):
                clone, flat = self.fresh(f"a{r}-clone")
                os.sync()
                samples.append(timed(["sh", "-c", script + variant, "sh", self.url, clone, flat]))
                if count_kits(flat) != self.files:
                    raise BenchError(f"baseline copied {count_kits(flat)} files, expected {self.files}")
                shutil.rmtree(clone.parent)
            log(f"(a) run {r + 1}: gitsync {ours[-1].wall:.2f} s (cpu {ours[-1].cpu:.2f} s), clone+cp "
                f"{base[-1].wall:.2f} s (cpu {base[-1].cpu:.2f} s), clone+cp+sync {base_durable[-1].wall:.2f} s, "
                f"load {os.getloadavg()[0]:.1f}")
        self.rows.append(Row(f"(a) initial sync, {self.files} files (sync --once)", ours, base, TARGET_INITIAL,
                             note="baseline: git clone --depth 1 && find | cp -t (no fsync)", profile_key="a"))
        self.rows.append(Row("    same, vs. clone+cp && sync (durable, like gitsync)", ours, base_durable,
                             note="info only"))

    def profile_initial(self) -> None:
        target, state = self.fresh("a-profile")
        out = self.root / "runs" / "a-profile" / "sync.prof"
        run([sys.executable, "-m", "cProfile", "-o", out, "-m", "gitsync", *self.sync_cmd(target, state)[
            len(self.gitsync):]])
        self.profiles.append(("(a) `gitsync sync --once` into an empty target, main process (validation runs in "
                              "ProcessPoolExecutor workers and shows up as waiting)",
                              top_cumulative(pstats.Stats(str(out)))))
        # What one worker spends per file: check_kit on a sample, single process.
        from gitsync.kit import check_kit

        sample = [(rel, (self.work / rel).read_bytes()) for rel in self.paths[:500]]
        started = time.process_time()
        for rel, data in sample:
            check_kit(data, rel)
        per_file = (time.process_time() - started) / len(sample)
        profiler = cProfile.Profile()
        profiler.enable()
        for rel, data in sample:
            check_kit(data, rel)
        profiler.disable()
        workers = min(os.cpu_count() or 1, 8)
        self.profiles.append((f"(a) check_kit, one process, {len(sample)} files: {per_file * 1000:.2f} ms CPU per file "
                              f"without the profiler, so ~{per_file * self.files:.0f} s of CPU for {self.files} files "
                              f"(~{per_file * self.files / workers:.0f} s on {workers} workers); profiled:",
                              top_cumulative(pstats.Stats(profiler))))
        shutil.rmtree(target.parent)

    # -- (b) incremental sync -----------------------------------------------------------------------
    def incremental(self) -> None:
        from gitsync.config import load_settings

        log("(b) setting up: subprocess target, in-process agent, baseline clone")
        sub_target, sub_state = self.fresh("b-sub")
        run(self.sync_cmd(sub_target, sub_state))
        in_target, in_state = self.fresh("b-inproc")
        settings = load_settings(None, {"repo.url": self.url, "repo.path": "jobs", "target.directory": str(in_target),
                                        "state.dir": str(in_state)}, environ={})
        try:  # the Syncer exactly as `gitsync run` wires it (push-back's pending files included)
            from gitsync.agent import build_agent

            self.agent = build_agent(settings)
            syncer = self.agent.syncer
        except ImportError:
            from gitsync.sync import Syncer

            self.agent, syncer = None, Syncer.from_settings(settings)
        self.syncer = syncer
        first = syncer.sync()
        if first.result != "synced":
            raise BenchError(f"in-process initial sync: {first.result} {first.message}")
        clone = self.root / "runs" / "b-clone"
        shutil.rmtree(clone, ignore_errors=True)
        git("clone", "--quiet", "--branch", "main", self.url, clone)

        def baseline(rel: str) -> Timing:
            old = git("rev-parse", "origin/main", cwd=clone)
            os.sync()
            with Clock() as clock:
                run(["git", "fetch", "--quiet", "origin"], cwd=clone)
                diff = run(["git", "diff", "--name-only", old, "origin/main"], cwd=clone)
            if diff.split() != [rel]:
                raise BenchError(f"baseline diff shows {diff!r}, expected {rel}")
            return clock.timing

        def in_process(action: Callable[[], object], name: str) -> Timing:
            with Clock() as clock:
                action()
            result = self.syncer.state.get("last_result")
            if result != "synced":
                raise BenchError(f"in-process sync of {name}: {result}: {self.syncer.state.get('last_message')}")
            return clock.timing

        names = ("fetch+diff", "subprocess", "in-process", "noop", "agent cycle")
        samples: dict[str, list[Timing]] = {n: [] for n in (*names, "fetch", "fetch+diff 2")}
        for r in range(self.repeat + 1):  # round 0 warms caches and is not counted
            rel, content = self.push_change()
            name = Path(rel).name
            t = {"fetch+diff": baseline(rel), "subprocess": timed(self.sync_cmd(sub_target, sub_state))}
            if (sub_target / name).read_bytes() != content:
                raise BenchError(f"subprocess sync did not write the new {name}")
            t["in-process"] = in_process(syncer.sync, name)
            with Clock() as clock:
                again = syncer.sync()
            if again.result != "noop":
                raise BenchError(f"second in-process sync: {again.result}, expected noop")
            t["noop"] = clock.timing
            t["fetch"] = timed(["git", "fetch", "--quiet", "origin"], cwd=clone)
            if self.agent is not None:  # a second commit for the agent's whole cycle
                rel, _ = self.push_change()
                t["fetch+diff 2"] = baseline(rel)
                t["agent cycle"] = in_process(lambda: self.agent.run_once("bench"), Path(rel).name)
                run(self.sync_cmd(sub_target, sub_state))  # not timed: its next timed sync sees one commit
            figures = ", ".join(f"{n} {t[n].wall * 1000:.0f} ms" for n in names if n in t)
            log(f"(b) {'warm-up' if r == 0 else f'run {r}'}: {figures}, load {os.getloadavg()[0]:.1f}")
            if r:
                for key, value in t.items():
                    samples[key].append(value)
        self.rows.append(Row("(b) incremental, 1 file: `sync --once` subprocess", samples["subprocess"],
                             samples["fetch+diff"], TARGET_INCREMENTAL, note="includes Python start-up and imports",
                             profile_key="b-sub"))
        self.rows.append(Row("(b) incremental, 1 file: Syncer.sync() in-process", samples["in-process"],
                             samples["fetch+diff"], TARGET_INCREMENTAL,
                             note="the long-lived Syncer of `gitsync run` (build_agent), pull only",
                             profile_key="b-in"))
        if samples["agent cycle"]:
            self.rows.append(Row("    same, whole Agent.run_once() cycle", samples["agent cycle"],
                                 samples["fetch+diff 2"], note="info only: capture + push-back + pull + metrics"))
        self.rows.append(Row("    no new commit: Syncer.sync() noop vs git fetch", samples["noop"], samples["fetch"],
                             note="info only"))

    def profile_incremental(self, which: str) -> None:
        if which == "b-sub":
            target, state = self.root / "runs" / "b-sub" / "target", self.root / "runs" / "b-sub" / "state"
            self.push_change()
            out = self.root / "runs" / "b-sub.prof"
            run([sys.executable, "-m", "cProfile", "-o", out, "-m", "gitsync",
                 *self.sync_cmd(target, state)[len(self.gitsync):]])
            self.profiles.append(("(b) `gitsync sync --once` of a one-file commit (subprocess, whole process "
                                  "including imports)", top_cumulative(pstats.Stats(str(out)))))
            self.push_change()
            done = subprocess.run([sys.executable, "-X", "importtime", "-m", "gitsync",
                                   *self.sync_cmd(target, state)[len(self.gitsync):]], capture_output=True, text=True)
            if done.returncode != 0:
                raise BenchError(f"sync under -X importtime failed: {done.stderr[-2000:]}")
            self.profiles.append(("(b) the same sync under `python -X importtime`: where start-up goes",
                                  short_paths(import_times(done.stderr))))
        else:
            self.push_change()
            profiler = cProfile.Profile()
            profiler.enable()
            result = self.syncer.sync()
            profiler.disable()
            if result.result != "synced":
                raise BenchError(f"profiled in-process sync: {result.result}")
            self.profiles.append(("(b) Syncer.sync() of a one-file commit, in-process",
                                  top_cumulative(pstats.Stats(profiler))))

    # -- (c) idle RSS -------------------------------------------------------------------------------
    def agent_rss(self, target: Path, state: Path, listen: bool) -> dict[str, float]:
        cmd = [*self.gitsync, "run", "--repo", self.url, "--path", "jobs", "--target", str(target),
               "--state-dir", str(state), "--interval", "30"]
        env = dict(os.environ)
        if listen:
            cmd += ["--listen", "127.0.0.1:0"]
        else:
            env["GITSYNC_SERVER_LISTEN"] = ""
        log_file = state.parent / f"agent-{time.time_ns()}.log"
        launched = time.time()
        with open(log_file, "wb") as err:
            proc = subprocess.Popen(cmd, stdout=err, stderr=subprocess.STDOUT, env=env, cwd=self.root)
        try:
            ready = self._wait_for_sync(proc, state, launched, log_file)
            time.sleep(self.idle)
            status = proc_status(proc.pid)
            kids, kids_kb = children_rss(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                raise BenchError(f"gitsync run did not stop within 30 s of SIGTERM; log: {log_file}") from None
        if code != 0:
            raise BenchError(f"gitsync run exited {code} after SIGTERM; log: {log_file}")
        report = run([*self.gitsync, "status", "--format", "json", "--repo", self.url, "--path", "jobs",
                      "--target", str(target), "--state-dir", str(state)])
        owned = int(re.search(r'"owned_files": (\d+)', report).group(1))  # type: ignore[union-attr]
        if owned != self.files or count_kits(target) != self.files:
            raise BenchError(f"agent holds {owned} files, target has {count_kits(target)}; expected {self.files}")
        return {"rss": status["VmRSS"] / 1024, "hwm": status["VmHWM"] / 1024, "ready": ready,
                "threads": status.get("Threads", 0), "kids": kids, "kids_mib": kids_kb / 1024}

    def _wait_for_sync(self, proc: subprocess.Popen[bytes], state: Path, launched: float, log_file: Path) -> float:
        """Seconds until the state shows a sync attempted after launch that succeeded."""
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise BenchError(f"gitsync run exited {proc.returncode}:\n{log_file.read_text()[-3000:]}")
            meta = read_meta(state)
            if float(meta.get("last_attempt_at", "0")) >= launched:
                result = meta.get("last_result", "").strip('"')
                if result not in ("synced", "noop"):
                    raise BenchError(f"gitsync run's first sync: {result}: {meta.get('last_message')}")
                return time.time() - launched
            time.sleep(0.1)
        raise BenchError("gitsync run did not finish its first sync within 900 s")

    def memory(self) -> None:
        synced_target, synced_state = self.fresh("c-synced")
        run(self.sync_cmd(synced_target, synced_state))
        cases = [("(c) idle RSS, `gitsync run` on a synced target", True, False, TARGET_RSS_MIB, "c-synced"),
                 ("(c) idle RSS, `gitsync run` from scratch", True, True, TARGET_RSS_MIB, "c-scratch"),
                 ("    idle RSS, synced target, no HTTP server", False, False, None, "")]
        for title, listen, scratch, target_mib, key in cases:
            figures = []
            for r in range(self.repeat):
                if scratch:
                    target, state = self.fresh(f"c-scratch{r}")
                else:
                    target, state = synced_target, synced_state
                figures.append(self.agent_rss(target, state, listen))
                log(f"{title.strip()} run {r + 1}: VmRSS {figures[-1]['rss']:.1f} MiB, VmHWM "
                    f"{figures[-1]['hwm']:.1f} MiB, first sync done after {figures[-1]['ready']:.1f} s")
                if scratch:
                    shutil.rmtree(target.parent)
            hwm = median([f["hwm"] for f in figures])
            ready = median([f["ready"] for f in figures])
            kids = figures[-1]
            self.rows.append(Row(title, [f["rss"] for f in figures], None, target_mib, unit="MiB",
                                 note=f"VmHWM {hwm:.0f} MiB, ready after {ready:.1f} s, {kids['threads']} threads; "
                                      f"+{kids['kids']} child git process(es) {kids['kids_mib']:.0f} MiB",
                                 profile_key=key))

    def profile_memory(self, key: str) -> None:
        """Where the idle agent's memory is: import-only RSS; what freeing the C heap gives back; tracemalloc."""
        rss_line = ("print(next(l.split()[1] for l in pathlib.Path('/proc/self/status').read_text().splitlines()"
                    " if l.startswith('VmRSS')))")
        bare_kb = int(run([sys.executable, "-c", f"import pathlib; {rss_line}"]))
        imports_kb = int(run([sys.executable, "-c", "import pathlib\nfrom gitsync.cli import build_parser; "
                              "build_parser()\nimport gitsync.agent, gitsync.server, gitsync.watch, git, uvicorn, "
                              f"apscheduler.schedulers.background, watchdog.observers\n{rss_line}"]))
        title = "synced target" if key == "c-synced" else "from scratch"
        lines = [f"bare `python -c pass`: {bare_kb / 1024:.1f} MiB; after importing what `gitsync run` imports, "
                 f"no data: {imports_kb / 1024:.1f} MiB"]
        for mode in ("trim", "trace"):
            if key == "c-scratch":
                target, state = self.fresh(f"c-profile-{mode}")
            else:
                target, state = self.root / "runs" / "c-synced" / "target", self.root / "runs" / "c-synced" / "state"
            lines.append(run([sys.executable, "-c", _MEMORY_HELPER, mode, str(state), str(self.idle), "run",
                              "--repo", self.url, "--path", "jobs", "--target", str(target), "--state-dir",
                              str(state), "--interval", "30", "--listen", "127.0.0.1:0"]).rstrip())
        self.profiles.append((f"(c) memory of an idle `gitsync run` ({title})", short_paths("\n".join(lines))))

    # -- reference and report -------------------------------------------------------------------------
    def startup(self) -> None:
        # Fill the byte-code cache first (see isolate_environment); these runs are not counted.
        run([*self.gitsync, "--version"])
        run([sys.executable, "-c", "import gitsync.cli, gitsync.sync, gitsync.agent, gitsync.server, "
             "gitsync.http_thread, gitsync.report, git, apscheduler.schedulers.background, "
             "apscheduler.triggers.interval, uvicorn, starlette.applications, cProfile"])
        python = [timed([sys.executable, "-c", "pass"]) for _ in range(max(3, self.repeat))]
        version = [timed([*self.gitsync, "--version"]) for _ in range(max(3, self.repeat))]
        self.rows.append(Row("    reference: python -c pass", python, note="interpreter start-up floor"))
        self.rows.append(Row("    reference: gitsync --version", version,
                             note="start-up + CLI imports, the floor of any subprocess figure"))


def source_version() -> tuple[str, str]:
    """HEAD of this checkout and the uncommitted diff of gitsync/ (to notice edits during a run)."""
    commit = run(["git", "-C", REPO_ROOT, "rev-parse", "--short", "HEAD"]).strip()
    return commit, run(["git", "-C", REPO_ROOT, "diff", "HEAD", "--", "gitsync"])


def fmt(value: float, unit: str) -> str:
    if unit == "MiB":
        return f"{value:.1f} MiB"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def render(rows: list[Row]) -> str:
    """Wall-clock columns decide PASS/FAIL; the CPU columns (user+sys, children included) are for a noisy box."""
    header = (f"{'case':<56} {'gitsync':>9} {'(min-max)':>19} {'baseline':>9} {'ratio':>7} {'target':>8}  "
              f"{'result':<6} | {'cpu':>8} {'base cpu':>8} {'cpu ratio':>9}")
    lines = [header, "-" * len(header)]
    for row in rows:
        walls = row.walls
        spread = f"({fmt(min(walls), row.unit)}-{fmt(max(walls), row.unit)})" if walls else ""
        baseline = fmt(row.baseline_wall, row.unit) if row.baseline_wall is not None else ""
        ratio = f"{row.ratio:.1f}x" if row.ratio is not None else ""
        if row.target is None:
            target, result = "", "info"
        else:
            target = f"<={row.target:g}x" if row.baseline is not None else f"<={row.target:g}MiB"
            result = "PASS" if row.passed else "FAIL"
        cpu = fmt(row.cpu, "s") if row.cpu is not None else ""
        base_cpu = fmt(row.baseline_cpu, "s") if row.baseline_cpu is not None else ""
        cpu_ratio = f"{row.cpu_ratio:.1f}x" if row.cpu_ratio is not None else ""
        lines.append(f"{row.case:<56} {fmt(row.value, row.unit):>9} {spread:>19} {baseline:>9} {ratio:>7} "
                     f"{target:>8}  {result:<6} | {cpu:>8} {base_cpu:>8} {cpu_ratio:>9}")
        if row.note:
            lines.append(f"{'':<6}{row.note}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--files", type=int, default=10_000, help="number of .kit files (default 10000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; medians are reported")
    parser.add_argument("--phases", default="abc", help="which of a, b, c to run (default abc)")
    parser.add_argument("--idle", type=float, default=5.0, help="seconds the agent idles before RSS is read")
    parser.add_argument("--seed", type=int, default=1)
    profile = parser.add_mutually_exclusive_group()
    profile.add_argument("--profile", action="store_const", const="always", dest="profile", default="missed",
                         help="profile every phase (default: only phases that miss their target)")
    profile.add_argument("--no-profile", action="store_const", const="never", dest="profile")
    parser.add_argument("--validate", action="store_true",
                        help="run `gitsync validate --strict` over all generated files (slow) instead of a sample")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir and print its path")
    parser.add_argument("--tmp", type=Path, default=None, help="parent of the temp dir (default: system temp)")
    args = parser.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="gitsync-bench-", dir=args.tmp)).resolve()
    isolate_environment(root / "home", root / "pycache")
    os.chdir(root)  # no ./gitsync.toml can leak in
    bench = Bench(root, args.files, max(1, args.repeat), args.idle, args.seed)
    started, load_at_start, version_at_start = time.monotonic(), os.getloadavg()[0], source_version()
    try:
        source = run([sys.executable, "-c", "import gitsync; print(gitsync.__file__)"]).strip()
        log(f"temp dir {root}; gitsync = {' '.join(bench.gitsync)} ({source}); {os.cpu_count()} CPUs")
        if not source.startswith(str(REPO_ROOT)):
            raise BenchError(f"subprocesses import gitsync from {source}, not from {REPO_ROOT}")
        bench.build_repo()
        bench.self_check(full=args.validate)
        bench.startup()
        if "a" in args.phases:
            bench.initial()
        if "b" in args.phases:
            bench.incremental()
        if "c" in args.phases:
            bench.memory()
        wanted: list[tuple[str, Callable[[], None]]] = []
        for row in bench.rows:
            if row.profile_key and (args.profile == "always" or (args.profile == "missed" and row.passed is False)):
                key = row.profile_key
                if key == "a":
                    wanted.append((key, bench.profile_initial))
                elif key.startswith("b"):
                    wanted.append((key, lambda k=key: bench.profile_incremental(k)))
                else:
                    wanted.append((key, lambda k=key: bench.profile_memory(k)))
        for key, action in wanted:
            log(f"profiling {key}")
            action()
    except BenchError as exc:
        print(f"bench_pull: {exc}", file=sys.stderr)
        return 1
    finally:
        if bench.syncer is not None:
            bench.syncer.close()
        os.chdir(REPO_ROOT)
        if args.keep:
            log(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)

    print()
    commit, dirty = source_version()
    print(f"gitsync {commit}{' + uncommitted changes' if dirty else ''}: pull benchmark, {args.files} files, "
          f"median of {bench.repeat} run(s), {os.cpu_count()} CPUs, "
          f"git {run(['git', '--version']).split()[-1]}, Python {sys.version.split()[0]} "
          f"({time.monotonic() - started:.0f} s in all)")
    print(f"load average {load_at_start:.1f} at start, {os.getloadavg()[0]:.1f} at end: other work on the machine "
          f"inflates wall times, the cpu columns (user+sys incl. children) much less")
    if (commit, dirty) != version_at_start:
        print("WARNING: gitsync's source changed while the benchmark ran; figures may mix versions")
    print(render(bench.rows))
    missed = [r for r in bench.rows if r.passed is False]
    print()
    print("targets: " + ("all met" if not missed else f"{len(missed)} missed: " + "; ".join(r.case.strip()
                                                                                          for r in missed)))
    if missed and args.profile == "never":
        print("rerun without --no-profile (or with --profile) to see where the time goes")
    for title, text in bench.profiles:
        print()
        print(f"== profile: {title}")
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
