"""A soak run: `gitsync run` as its own process under steady load, sampled for growth.

Used by `tests/bench/bench_soak.py` (10 minutes) and by a one-minute test in the default run.
Each second one commit lands on the remote (changing one of the first half of the definitions)
and one `POST /save` reaches the Farm-compatible jobs service (changing one of the second half),
so the two never conflict and "nothing lost" has an exact meaning: at the end the job directory
holds every definition's last committed value and git holds every definition's last saved value.
Samples come from /proc (RSS, file descriptors, threads, descendant processes), the state
directory's size on disk (allocated blocks, as `du` counts them) and `git count-objects`.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from gitsync.testing.repos import RemoteRepo, git
from gitsync.testing.waiting import wait_until


@dataclass(frozen=True)
class Sample:
    at: float  # seconds since the load started
    rss_kib: int
    fds: int
    children: int
    threads: int
    state_kib: int
    objects: int
    loose: int

    HEADERS = ("t (s)", "RSS KiB", "fds", "children", "threads", "state KiB", "objects", "loose")

    def row(self) -> tuple[float | int, ...]:
        return (round(self.at), self.rss_kib, self.fds, self.children, self.threads, self.state_kib, self.objects,
                self.loose)


@dataclass
class SoakResult:
    samples: list[Sample]
    commits: int
    saves: int
    lost: list[str]
    compactions: int
    idle_seconds: float
    idle_lines: int
    log_path: Path
    info_noop_lines: int
    exit_code: int | None
    load_end: Sample
    status: dict[str, Any] = field(default_factory=dict)
    #: KiB on disk of a fresh bare clone of the remote after the first minute and at the end of the load:
    #: the least any mirror of that history takes, so its growth is the repository's own, not gitsync's.
    history_kib: tuple[int, int] = (0, 0)

    @property
    def idle_lines_per_hour(self) -> float:
        return self.idle_lines * 3600 / self.idle_seconds if self.idle_seconds else 0.0

    def baseline(self, after: float = 60.0) -> Sample:
        """The first sample at or after `after` seconds of load (the growth figures start there)."""
        return next((s for s in self.samples if s.at >= after), self.samples[-1])

    def median(self, name: str, start: float, end: float) -> int:
        """The median of one metric over the samples taken from `start` to `end` seconds: the state directory
        is a saw-tooth (loose objects and the SQLite log grow, then are packed and folded in), so one reading
        says more about where in a tooth it fell than about growth."""
        values = sorted(getattr(s, name) for s in self.samples if start <= s.at < end)
        return values[len(values) // 2] if values else 0

    def growth(self, after: float = 60.0) -> dict[str, tuple[int, int, float]]:
        """metric -> (value after the first minute, value at the end of the load, growth in %)."""
        first, last = self.baseline(after), self.load_end
        out = {}
        for name in ("rss_kib", "fds", "children", "threads", "state_kib", "objects", "loose"):
            a, b = getattr(first, name), getattr(last, name)
            out[name] = (a, b, (b - a) * 100.0 / a if a else 0.0)
        return out


def kit_text(name: str, value: str) -> str:
    """A definition of a realistic size (about 1.5 KB, comments and all), so the mirror's growth is too."""
    env = "".join(f'{key} = "{value_}"\n' for key, value_ in (
        ("RENDER_QUALITY", "high"), ("OUTPUT_BUCKET", f"s3://renders/{name}"), ("LOG_LEVEL", "info"),
        ("OMNI_USER", "farm-agent"), ("CACHE_DIR", "/var/cache/omni"), ("MAX_FRAMES", "2400"),
        ("NUCLEUS_SERVER", "omniverse://nucleus.example.com"), ("TEMP_DIR", f"/scratch/{name}"),
        ("RETRY_LIMIT", "3"), ("NOTIFY", "pipeline-team@example.com")))
    return (f"# {name}: a soak-test definition.\n# Renders a sequence with the settings below; owned by the "
            f"pipeline team.\n# Changes go through review in git; jobs/save changes come back as commits.\n"
            f"# Ask in #render-farm before changing the capacity requirements: they decide which agents\n"
            f"# pick the job up, and a typo here leaves the job queued forever.\n\n"
            f"[job.{name}]\nname = \"{name}\"\njob_type = \"kit-service\"\n"
            f"command = \"/opt/nvidia/omniverse/kit/kit\"\n"
            f"args = [\"{value}\"]\n"
            f"allowed_args = {{ \"--/app/renderer/resolution\" = {{ arg = \"--/app/renderer/resolution\", "
            f"separator = \"=\" }}, \"--frames\" = {{ arg = \"--frames\", separator = \" \" }}, "
            f"\"--scene\" = {{ arg = \"--scene\", separator = \" \" }} }}\n"
            f"task_function = \"render.run\"\nheadless = true\nlog_to_stdout = true\n"
            f"# Renders the {name} sequence at full quality for review, one frame range per task.\n\n"
            f"[job.{name}.env]\n{env}\n"
            f"[job.{name}.capacity_requirements]\n\"resource_limits\" = {{ cpu = 4, memory = \"16Gi\" }}\n\n"
            f"# Extensions this job loads, with the folder Farm looks them up in.\n"
            f"[settings.app.exts.folders]\n\"++\" = [\"${{job}}/exts\"]\n\n"
            f"[settings.app.exts.enabled]\n\"++\" = [\"omni.kit.renderer.core\", \"omni.services.render\", "
            f"\"omni.kit.window.viewport\"]\n")


def run_soak(workdir: Path, *, seconds: float, idle: float = 0.0, definitions: int = 200, interval: float = 2.0,
             sample_every: float = 5.0, settings: Mapping[str, str] | None = None,
             progress: Callable[[str], None] = lambda _: None) -> SoakResult:
    from gitsync.jobs_service.config import JobsServiceConfig
    from gitsync.jobs_service.server import RunningJobsService
    from gitsync.secrets import Secret

    remote = RemoteRepo(workdir / "repo")
    half = definitions // 2
    names = [f"soak-{i:03d}" for i in range(definitions)]
    remote.commit({f"jobs/{n}.kit": kit_text(n, "initial") for n in names}, "Import soak definitions")
    target, state_dir, log_path = workdir / "defs", workdir / "state", workdir / "agent.log"
    target.mkdir()
    api_key = secrets.token_hex(8)
    service = RunningJobsService(JobsServiceConfig(save_location=target, api_key=Secret(api_key)), port=0).start()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(settings or {})}
    command = [sys.executable, "-m", "gitsync", "run", "--repo", remote.url, "--path", "jobs", "--target",
               str(target), "--state-dir", str(state_dir), "--interval", str(interval), "--listen", ""]
    log_file = log_path.open("wb")
    agent = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=workdir)
    http = httpx.Client(timeout=30)
    samples: list[Sample] = []
    committed: dict[str, str] = {}
    saved: dict[str, str] = {}
    exit_code: int | None = None
    try:
        wait_until(lambda: len(list(target.glob("*.kit"))) == definitions, timeout=60, what="the first sync")
        wait_until(lambda: len(_load(http, service.url)) == definitions, timeout=30, what="the jobs service")
        progress(f"first sync done; load for {seconds:.0f} s")
        loaded = _load(http, service.url)
        started = time.monotonic()
        next_sample = 0.0
        tick = 0
        history_first = 0
        while (now := time.monotonic() - started) < seconds:
            if now >= next_sample:
                samples.append(_sample(agent.pid, state_dir, now))
                if not history_first and now >= min(60.0, seconds / 2):
                    history_first = _clone_kib(remote, workdir / "history-first")
                next_sample += sample_every
            name = names[tick % half]
            committed[name] = f"commit {tick}"
            remote.commit_as_a_person({f"jobs/{name}.kit": kit_text(name, committed[name])}, f"soak commit {tick}")
            saved_name = names[half + tick % (definitions - half)]
            saved[saved_name] = f"save {tick}"
            # What a Farm client sends back: the loaded definition without its nulls (Farm's /save model refuses
            # them), one field changed.
            body = {**{k: v for k, v in loaded[saved_name].items() if v is not None}, "args": [saved[saved_name]]}
            http.post(f"{service.url}/save", json=body, headers={"X-API-KEY": api_key}).raise_for_status()
            tick += 1
            time.sleep(max(0.0, started + tick - time.monotonic()))  # one commit and one save per second
        progress(f"{tick} commits and {tick} saves; waiting for everything to settle")
        lost = _settle(remote, target, committed, saved)
        load_end = _sample(agent.pid, state_dir, time.monotonic() - started)
        samples.append(load_end)
        history = (history_first, _clone_kib(remote, workdir / "history-end"))
        idle_lines = 0
        if idle > 0:
            progress(f"idle for {idle:.0f} s")
            mark = log_path.stat().st_size
            idle_start = time.monotonic()
            while (left := idle - (time.monotonic() - idle_start)) > 0:
                time.sleep(min(sample_every, left))
                samples.append(_sample(agent.pid, state_dir, time.monotonic() - started))
            with log_path.open("rb") as f:
                f.seek(mark)
                idle_lines = len(f.read().splitlines())
        status = _status(state_dir)
    finally:
        http.close()
        if agent.poll() is None:
            agent.send_signal(signal.SIGTERM)
            try:
                exit_code = agent.wait(timeout=60)
            except subprocess.TimeoutExpired:
                agent.kill()
                agent.wait()
        else:
            exit_code = agent.returncode
        log_file.close()
        service.stop()
    text = log_path.read_text(encoding="utf-8", errors="replace")
    info_noop = sum(1 for line in text.splitlines() if " INFO " in line and ": noop," in line)
    return SoakResult(samples, tick, tick, lost, int((status.get("maintenance") or {}).get("compactions", 0)),
                      idle, idle_lines, log_path, info_noop, exit_code, load_end, status, history)


def _clone_kib(remote: RemoteRepo, where: Path) -> int:
    subprocess.run(["git", "clone", "--quiet", "--bare", "--no-local", str(remote.bare), str(where)], check=True,
                   capture_output=True)
    try:
        return _disk_kib(where)
    finally:
        shutil.rmtree(where, ignore_errors=True)


def _load(http: httpx.Client, url: str) -> dict[str, Any]:
    answer = http.get(f"{url}/load")
    answer.raise_for_status()
    found: dict[str, Any] = answer.json()
    return found


def _settle(remote: RemoteRepo, target: Path, committed: Mapping[str, str], saved: Mapping[str, str]) -> list[str]:
    """Wait until both directions carried their last value; return what did not arrive."""
    def missing() -> list[str]:
        in_git = _files_at_head(remote.bare, [f"jobs/{n}.kit" for n in saved])
        lost = [f"commit of {n} ({v}) not in the job directory" for n, v in committed.items()
                if f'"{v}"' not in _read(target / f"{n}.kit")]
        lost += [f"save of {n} ({v}) not in git" for n, v in saved.items()
                 if f'"{v}"' not in in_git.get(f"jobs/{n}.kit", "")]
        return lost

    try:
        wait_until(lambda: not missing(), timeout=120, what="every commit and save to arrive")
    except AssertionError:
        return missing()
    return []


def _files_at_head(bare: Path, paths: list[str]) -> dict[str, str]:
    """Several files of the branch head in one `git cat-file --batch` (a poll loop calls this)."""
    head = git("rev-parse", "refs/heads/main", cwd=bare)
    request = "".join(f"{head}:{p}\n" for p in paths).encode()
    out = subprocess.run(["git", "cat-file", "--batch"], cwd=bare, input=request, capture_output=True).stdout
    found: dict[str, str] = {}
    for path in paths:
        header, _, out = out.partition(b"\n")
        if header.endswith(b"missing"):
            continue
        size = int(header.split()[2])
        found[path] = out[:size].decode("utf-8", "replace")
        out = out[size + 1:]
    return found


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return ""


def _status(state_dir: Path) -> dict[str, Any]:
    """The agent's state, read directly (read-only) from its database."""
    db = sqlite3.connect(f"file:{state_dir / 'state.sqlite3'}?mode=ro", uri=True)
    try:
        return {key: json.loads(value) for key, value in db.execute("SELECT key, value FROM meta")}
    finally:
        db.close()


def _sample(pid: int, state_dir: Path, at: float) -> Sample:
    proc = Path(f"/proc/{pid}")
    status = dict(line.split(":", 1) for line in (proc / "status").read_text().splitlines() if ":" in line)
    counts = _count_objects(state_dir / "mirror.git")
    # A git fetch or push of the cycle in progress is a child and a few descriptors for a moment: the least of
    # three readings 0.1 s apart counts what the agent keeps.
    fds, children = len(os.listdir(proc / "fd")), len(_descendants(pid))
    for _ in range(2):
        time.sleep(0.1)
        fds, children = min(fds, len(os.listdir(proc / "fd"))), min(children, len(_descendants(pid)))
    return Sample(at, int(status["VmRSS"].split()[0]), fds, children, int(status["Threads"]), _disk_kib(state_dir),
                  counts.get("count", 0) + counts.get("in-pack", 0), counts.get("count", 0))


def _descendants(pid: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [pid]
    while frontier:
        children = [p for p, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def _disk_kib(root: Path) -> int:
    total = 0
    for folder, _dirs, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_blocks * 512
            except OSError:
                continue  # removed while walking (a repack, a checkpoint)
    return total // 1024


def _count_objects(mirror: Path) -> dict[str, int]:
    if not (mirror / "HEAD").exists():
        return {}
    out = subprocess.run(["git", "count-objects", "-v"], cwd=mirror, capture_output=True, text=True).stdout
    return {k.strip(): int(v) for k, v in (line.split(":", 1) for line in out.splitlines()) if v.strip().isdigit()}


def table(rows: list[tuple[Any, ...]], headers: tuple[str, ...]) -> str:
    widths = [max(len(str(x)) for x in column) for column in zip(headers, *rows, strict=False)]
    lines = ["  ".join(str(h).rjust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(str(x).rjust(w) for x, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)
