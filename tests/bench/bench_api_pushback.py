#!/usr/bin/env python3
"""Benchmark push-back from a jobs-api target: what an idle poll costs, and how long a /save takes to
become a commit.

    python tests/bench/bench_api_pushback.py [--definitions 1000] [--runs 5] [--poll 1]

Sets up what bench_api.py does (a real redis-server, the Farm-compatible jobs service as its own
process on its RedisJobStore, a bare repo with --definitions definitions under jobs/), then:

  (1) idle poll: one push-back poll (`ApiPushBack.capture`: one GET /load, every definition normalised
      and compared with the applied record) when nothing changed, best of --runs, each interleaved with
      the baseline, a single GET /load of the same service. Target: at most 3x the baseline (the poll
      runs every target.poll_interval seconds, 15 by default).
  (2) /save -> commit: `gitsync run` with target.poll_interval = --poll and the default push.debounce
      (1 s); a definition is changed through POST /save, and the time until the commit is on the remote
      is measured --runs times (p50 and worst). Baseline in the same run: `git commit` + `git push` of the
      same one-line change from a work clone. Expected: about poll/2 + debounce + the push. Every run
      also checks that exactly one commit was made (no echo).

A report: PASS/FAIL per target; exit status non-zero only if the benchmark itself could not run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench_api import API_KEY, REPO_ROOT, Site, free_port, git, log, wait_for
from benchenv import BenchError, isolate_environment


def idle_poll(site: Site, runs: int) -> bool:
    from gitsync.api_pushback import ApiPushBack
    from gitsync.api_sync import ApiSyncer
    from gitsync.config import load_settings
    from gitsync.outbox import Outbox

    settings = load_settings(None, {"repo.url": str(site.bare), "repo.path": "jobs", "target.kind": "jobs-api",
                                    "target.url": site.url, "target.api_key_file": str(site.key_file),
                                    "state.dir": str(site.root / "poll-state")}, environ={})
    syncer = ApiSyncer.from_settings(settings)
    try:
        result = syncer.sync()
        if result.result != "synced":
            raise BenchError(f"initial sync: {result.result} {result.message}")
        pushback = ApiPushBack(syncer, Outbox(syncer.state))
        pushback.capture()  # the first look takes the baseline
        best_poll, best_load = float("inf"), float("inf")
        for _ in range(runs):
            started = time.perf_counter()
            captured = pushback.capture()
            best_poll = min(best_poll, time.perf_counter() - started)
            if captured:
                raise BenchError(f"an idle poll captured {captured}: gitsync's own saves came back as changes")
            started = time.perf_counter()
            site.http.get(f"{site.url}/load").raise_for_status()
            best_load = min(best_load, time.perf_counter() - started)
        ratio = best_poll / best_load
        ok = ratio <= 3.0
        print(f"(1) idle poll of {site.count} definitions, best of {runs}: {best_poll * 1000:.0f} ms, baseline one "
              f"GET /load {best_load * 1000:.0f} ms, ratio {ratio:.1f}x -> {'PASS' if ok else 'FAIL'} (target <= 3x)")
        return ok
    finally:
        syncer.close()


def save_to_commit(site: Site, runs: int, poll: float) -> bool:
    import httpx

    port = free_port()
    config = site.root / "agent" / "gitsync.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(f'[repo]\nurl = "{site.bare}"\npath = "jobs"\n'
                      f'[target]\nkind = "jobs-api"\nurl = "{site.url}"\napi_key_file = "{site.key_file}"\n'
                      f'poll_interval = {poll}\n[state]\ndir = "{site.root / "agent" / "state"}"\n'
                      f'[sync]\ninterval = 3600\n[push]\nmode = "direct"\n[server]\nlisten = "127.0.0.1:{port}"\n',
                      encoding="utf-8")
    out = (site.root / "agent" / "gitsync.log").open("wb")
    agent = subprocess.Popen([sys.executable, "-m", "gitsync", "run", "--config", str(config)], stdout=out,
                             stderr=subprocess.STDOUT)
    site.procs.append(agent)

    def synced() -> bool:
        try:
            status = httpx.get(f"http://127.0.0.1:{port}/status", trust_env=False, timeout=5).json()
        except httpx.TransportError:
            return False
        return bool(status.get("applied_commit"))

    wait_for(synced, 600, "the agent's first sync", poll=0.2)
    head = git("rev-parse", "refs/heads/main", cwd=site.bare)
    latencies: list[float] = []
    baselines: list[float] = []
    ok = True
    for run in range(runs):
        name = f"job-{(run * 53) % site.count:05d}"
        body = {k: v for k, v in site.http.get(f"{site.url}/load").json()[name].items()
                if v is not None and k != "job_spec_path"}
        body["args"] = [*body["args"][:-1], f"saved-{run}"]
        started = time.perf_counter()
        site.http.post(f"{site.url}/save", json=body, headers={"X-API-KEY": API_KEY}).raise_for_status()
        wait_for(lambda old=head: git("rev-parse", "refs/heads/main", cwd=site.bare) != old, 60,
                 f"the commit of {name}", poll=0.01)
        latencies.append(time.perf_counter() - started)
        commits = git("rev-list", f"{head}..refs/heads/main", cwd=site.bare).split()
        ok = ok and len(commits) == 1
        head = commits[0]
        # baseline: the same kind of change committed and pushed by hand
        git("pull", "-q", "--rebase", "origin", "main", cwd=site.work)
        path = next((site.work / "jobs").rglob(f"{name}.kit"))
        path.write_text(path.read_text(encoding="utf-8") + f"# baseline {run}\n", encoding="utf-8")
        started = time.perf_counter()
        git("commit", "-q", "-am", f"baseline {run}", cwd=site.work)
        git("push", "-q", "origin", "main", cwd=site.work)
        baselines.append(time.perf_counter() - started)
        head = git("rev-parse", "refs/heads/main", cwd=site.bare)
        time.sleep(poll * 2)  # let the agent pull the baseline commit before the next save
    p50 = statistics.median(latencies)
    print(f"(2) /save -> commit on the remote, poll {poll:g} s, push.debounce 1 s, {runs} runs: p50 {p50:.2f} s, "
          f"worst {max(latencies):.2f} s; baseline git commit + push p50 {statistics.median(baselines) * 1000:.0f} ms;"
          f" one commit per save (no echo): {'PASS' if ok else 'FAIL'}")
    return ok


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--definitions", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--poll", type=float, default=1.0)
    args = parser.parse_args(argv)
    os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    sys.path.insert(0, str(REPO_ROOT))
    with tempfile.TemporaryDirectory(prefix="bench-api-pushback-") as tmp:
        isolate_environment(Path(tmp) / "home")
        site = Site(Path(tmp), args.definitions)
        try:
            log(f"setting up {args.definitions} definitions on a Redis-backed jobs service")
            site.start()
            results = [idle_poll(site, args.runs), save_to_commit(site, args.runs, args.poll)]
        except BenchError as exc:
            print(f"benchmark could not run: {exc}", file=sys.stderr)
            return 2
        finally:
            site.stop()
    print("all targets met" if all(results) else "some targets missed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
