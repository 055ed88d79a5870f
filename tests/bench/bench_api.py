#!/usr/bin/env python3
"""Benchmark the jobs-api target: HTTP calls and time for a one-definition commit, and HA failover.

    python tests/bench/bench_api.py [--definitions 1000] [--runs 5] [--ttl 3] [--failovers 3]

Sets up, in a temp dir, a real redis-server, the Farm-compatible jobs service as its own process on
its RedisJobStore (`python -m gitsync.jobs_service`), and a bare git repo with --definitions small
definitions in 20 folders under jobs/. Then:

  (1) initial sync of every definition through the API (ApiSyncer, as `gitsync run` builds it):
      time and HTTP calls.
  (2) incremental: a commit changing one definition, then one sync, --runs times; best of the runs,
      each interleaved with the baseline, a single GET /load round trip of the same service (what
      any client must pay to learn the service's state). Targets: 1 /load and 1 /save per sync.
  (3) failover: two `gitsync run` replicas with ha.redis_url and ha.lease_ttl = --ttl; the leader is
      killed with SIGKILL, a commit is pushed, and the time until the follower holds the lease and
      until the commit is on the service is measured, --failovers times (the survivor of one round
      is the leader of the next). Target: takeover within 2 × TTL. Every run also counts the /save
      calls the service received: exactly one per changed definition (no double apply).

A report: PASS/FAIL per target; exit status non-zero only if the benchmark itself could not run.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import benchenv
import httpx
from benchenv import BenchError, isolate_environment

REPO_ROOT = Path(__file__).resolve().parents[2]
API_KEY = "bench-api-key-3c9e"
LEASE = "bench:leader"


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def git(*args: str, cwd: Path) -> str:
    done = subprocess.run(["git", "-c", "user.name=Bench", "-c", "user.email=bench@example.com", "-c",
                           "commit.gpgsign=false", *args], cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise BenchError(f"git {' '.join(args)} failed: {done.stderr}")
    return done.stdout.strip()


def wait_for(condition: Callable[[], Any], timeout: float, what: str, poll: float = 0.01) -> Any:
    return benchenv.wait_for(condition, timeout, what, poll)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def definition(index: int, value: str = "v0") -> str:
    name = f"job-{index:05d}"
    return (f"# definition {index}\n[job.{name}]\njob_type = \"base\"\nname = \"{name}\"\n"
            f"command = \"/opt/tools/run-{index % 7}\"\nargs = [\"--id\", \"{index}\", \"--value\", \"{value}\"]\n"
            f"success_return_codes = [0, 3]\n[job.{name}.env]\nMODE = \"batch\"\nQUEUE = \"q{index % 5}\"\n"
            f"[job.{name}.allowed_args.scene]\narg = \"--scene\"\ndefault = \"default.usd\"\n")


class Site:
    def __init__(self, root: Path, count: int) -> None:
        self.root = root
        self.count = count
        self.procs: list[subprocess.Popen[bytes]] = []

    # -- set-up ---------------------------------------------------------------------------------------
    def start(self) -> None:
        from gitsync.testing.redis_server import RedisServer

        self.redis = RedisServer(self.root / "redis")
        self.redis_url = self.redis.start()
        farm = self.root / "farm"
        farm.mkdir()
        (farm / "farm-jobs.toml").write_text(
            "[settings.nv.svc.farm.jobs]\n"
            'store_class = "nv.svc.farm.services.jobs.facilities.store.redis.RedisJobStore"\n'
            f'store_args.connection_string = "{self.redis_url}/0"\napi_key = "{API_KEY}"\n', encoding="utf-8")
        port = free_port()
        self.service_log = farm / "jobs-service.log"
        with self.service_log.open("wb") as out:
            self.procs.append(subprocess.Popen([sys.executable, "-m", "gitsync.jobs_service", "--config",
                                                str(farm / "farm-jobs.toml"), "--host", "127.0.0.1", "--port",
                                                str(port)], stdout=out, stderr=subprocess.STDOUT))
        self.url = f"http://127.0.0.1:{port}/queue/management/jobs"
        self.http = httpx.Client(trust_env=False, timeout=60)

        def answers() -> bool:
            try:
                return self.http.get(f"{self.url}/status").status_code == 200
            except httpx.TransportError:
                return False

        wait_for(answers, 60, "the jobs service")
        self.key_file = self.root / "api-key"
        self.key_file.write_text(API_KEY)
        self.bare = self.root / "remote.git"
        self.work = self.root / "work"
        git("init", "-q", "--bare", "--initial-branch=main", str(self.bare), cwd=self.root)
        git("clone", "-q", str(self.bare), str(self.work), cwd=self.root)
        git("checkout", "-q", "-B", "main", cwd=self.work)
        for i in range(self.count):
            folder = self.work / "jobs" / f"group-{i % 20:02d}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"job-{i:05d}.kit").write_text(definition(i), encoding="utf-8")
        git("add", "-A", cwd=self.work)
        git("commit", "-q", "-m", "definitions", cwd=self.work)
        git("push", "-q", "origin", "main", cwd=self.work)
        self.changes = 0
        self.values: dict[int, str] = {}

    def change_one(self, index: int) -> None:
        self.changes += 1
        path = self.work / "jobs" / f"group-{index % 20:02d}" / f"job-{index:05d}.kit"
        self.values[index] = f"v{self.changes}"
        path.write_text(definition(index, self.values[index]), encoding="utf-8")
        git("commit", "-q", "-am", f"change job-{index:05d}", cwd=self.work)
        git("push", "-q", "origin", "main", cwd=self.work)

    def value_on_service(self, index: int) -> str:
        args = self.http.get(f"{self.url}/load").json()[f"job-{index:05d}"]["args"]
        return str(args[-1])

    def saves_received(self) -> int:
        return sum(1 for line in self.service_log.read_text().splitlines()
                   if "POST /queue/management/jobs/save" in line)

    def config(self, name: str, ttl: float) -> Path:
        path = self.root / name / "gitsync.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        port = free_port()
        path.write_text(f'[repo]\nurl = "{self.bare}"\npath = "jobs"\n'
                        f'[target]\nkind = "jobs-api"\nurl = "{self.url}"\napi_key_file = "{self.key_file}"\n'
                        f'[state]\ndir = "{self.root / name / "state"}"\n[sync]\ninterval = 3600\n'
                        f'[push]\nmode = "off"\n[ha]\nredis_url = "{self.redis_url}/1"\nlease_ttl = {ttl}\n'
                        f'key = "{LEASE}"\n[server]\nlisten = "127.0.0.1:{port}"\n', encoding="utf-8")
        return path

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        self.redis.stop()


# -- phases -------------------------------------------------------------------------------------------
def incremental(site: Site, runs: int) -> tuple[dict[str, float], bool]:
    from gitsync.api_sync import ApiSyncer
    from gitsync.config import load_settings

    settings = load_settings(None, {"repo.url": str(site.bare), "repo.path": "jobs", "target.kind": "jobs-api",
                                    "target.url": site.url, "target.api_key_file": str(site.key_file),
                                    "state.dir": str(site.root / "bench-state")}, environ={})
    syncer = ApiSyncer.from_settings(settings)
    ok = True
    try:
        started = time.perf_counter()
        result = syncer.sync()
        initial = time.perf_counter() - started
        if result.result != "synced" or len(result.written) != site.count:
            raise BenchError(f"initial sync: {result.result} {result.message}")
        calls = dict(syncer.target.client.calls)
        print(f"(1) initial sync of {site.count} definitions: {initial:.2f} s, calls {calls}")
        best_sync, best_load, calls_seen = float("inf"), float("inf"), []
        for run in range(runs):
            index = (run * 37) % site.count
            site.change_one(index)
            syncer.target.client.calls.clear()
            started = time.perf_counter()
            result = syncer.sync()
            took = time.perf_counter() - started
            calls_seen.append(dict(syncer.target.client.calls))
            if result.written != [f"job-{index:05d}"] or site.value_on_service(index) != f"v{site.changes}":
                raise BenchError(f"incremental sync did not save job-{index:05d}: {result.result} {result.message}")
            best_sync = min(best_sync, took)
            started = time.perf_counter()
            site.http.get(f"{site.url}/load").raise_for_status()
            best_load = min(best_load, time.perf_counter() - started)
        want = {"load": 1, "save": 1}
        ok = all(c == want for c in calls_seen)
        print(f"(2) one changed definition of {site.count}, best of {runs}: sync {best_sync * 1000:.0f} ms, "
              f"baseline one GET /load {best_load * 1000:.0f} ms, ratio {best_sync / best_load:.1f}x; "
              f"calls per sync {calls_seen[0]} -> {'PASS' if ok else 'FAIL'} (target {want})")
        return {"initial": initial, "sync": best_sync, "load": best_load}, ok
    finally:
        syncer.close()


def failover(site: Site, ttl: float, rounds: int) -> bool:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GITSYNC_")}

    def spawn(name: str) -> tuple[subprocess.Popen[bytes], str]:
        config = site.config(name, ttl)
        out = (config.parent / "gitsync.log").open("ab")
        proc = subprocess.Popen([sys.executable, "-m", "gitsync", "run", "--config", str(config)], env=env,
                                stdout=out, stderr=subprocess.STDOUT)
        out.close()
        site.procs.append(proc)
        port = config.read_text().rsplit("127.0.0.1:", 1)[1].split('"')[0]
        return proc, f"http://127.0.0.1:{port}"

    def role(base: str) -> str | None:
        try:
            return str(site.http.get(f"{base}/status", timeout=5).json()["ha"]["role"])
        except (httpx.TransportError, ValueError, KeyError):
            return None

    import redis

    lease = redis.Redis.from_url(f"{site.redis_url}/1")
    leader, leader_url = spawn("replica-0")
    wait_for(lambda: role(leader_url) == "leader", 60, "the first leader")
    all_ok = True
    for n in range(1, rounds + 1):
        follower, follower_url = spawn(f"replica-{n}")
        wait_for(lambda: role(follower_url) == "follower", 60, "the follower")  # noqa: B023
        wait_for(lambda: site.value_on_service(0) == site.values.get(0, "v0"), 60, "the service in step")
        before = site.saves_received()
        leader.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        leader.wait()
        site.change_one(0)
        token = f"{socket.gethostname()}:{follower.pid}:".encode()
        wait_for(lambda: (lease.get(LEASE) or b"").startswith(token), 10 * ttl, "the takeover")  # noqa: B023
        took_over = time.monotonic() - killed
        wait_for(lambda: site.value_on_service(0) == site.values[0], 60, "the commit on the service")
        applied = time.monotonic() - killed
        saves = site.saves_received() - before
        ok = took_over <= 2 * ttl and saves == 1
        all_ok &= ok
        print(f"(3) failover {n}: lease taken {took_over:.2f} s after SIGKILL, commit on the service after "
              f"{applied:.2f} s; TTL {ttl:g} s, ratio {took_over / ttl:.2f}x TTL; saves for the change: {saves} "
              f"-> {'PASS' if ok else 'FAIL'} (target <= 2x TTL, exactly 1 save)")
        leader, leader_url = follower, follower_url
    lease.close()
    return all_ok


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--definitions", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5, help="(2) interleaved runs, best taken")
    parser.add_argument("--ttl", type=float, default=3.0, help="(3) ha.lease_ttl of the replicas")
    parser.add_argument("--failovers", type=int, default=3)
    args = parser.parse_args(argv)
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    sys.path.insert(0, str(REPO_ROOT))
    with tempfile.TemporaryDirectory(prefix="bench-api-") as tmp:
        root = Path(tmp)
        isolate_environment(root / "home")
        site = Site(root, args.definitions)
        try:
            site.start()
            _, ok_calls = incremental(site, args.runs)
            ok_failover = failover(site, args.ttl, args.failovers)
        except BenchError as exc:
            print(f"benchmark could not run: {exc}", file=sys.stderr)
            return 2
        finally:
            site.stop()
    print(f"summary: calls {'PASS' if ok_calls else 'FAIL'}, failover {'PASS' if ok_failover else 'FAIL'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
