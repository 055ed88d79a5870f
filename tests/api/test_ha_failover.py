"""Two real `gitsync run` replicas for one jobs service, one lease in a real redis-server: the leader is
killed with SIGKILL, the follower takes over within 2 × TTL, nothing is lost and nothing applied twice."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import redis

from gitsync.testing.repos import RemoteRepo
from gitsync.testing.waiting import wait_until

from .conftest import ReplicaProcess, ServiceProcess, free_port, redis_store_lines, spawn_jobs_service
from .test_api_target import HELLO, seed

TTL = 3.0
LEASE = "test:failover"


class Replica(ReplicaProcess):
    def __init__(self, root: Path, remote: RemoteRepo, service: ServiceProcess, key_file: Path, ha_url: str) -> None:
        super().__init__(root,
                         f'[repo]\nurl = "{remote.url}"\npath = "jobs"\n'
                         f'[target]\nkind = "jobs-api"\nurl = "{service.url}"\napi_key_file = "{key_file}"\n'
                         f'[state]\ndir = "{root / "state"}"\n[sync]\ninterval = 3600\n[push]\nmode = "off"\n'
                         f'[ha]\nredis_url = "{ha_url}"\nlease_ttl = {TTL}\nkey = "{LEASE}"\n', free_port())


def saves_received(service_log: Path) -> int:
    return sum(1 for line in service_log.read_text().splitlines() if "POST /queue/management/jobs/save" in line)


def test_the_follower_takes_over_a_killed_leader_without_losing_or_repeating_a_save(
        tmp_path: Path, remote: RemoteRepo, redis_server: str, redis_url: str, key_file: Path,
        replicas: list[Replica]) -> None:
    seed(remote)
    service = spawn_jobs_service(tmp_path / "farm", redis_store_lines(redis_url))
    try:
        ha_url = f"{redis_server}/1"
        redis.Redis.from_url(ha_url).flushdb()
        a = Replica(tmp_path / "a", remote, service, key_file, ha_url)
        replicas.append(a)
        first = remote.head()
        wait_until(lambda: a.role() == "leader" and (a.status() or {}).get("applied_commit") == first, 60,
                   "replica a to lead and sync")
        b = Replica(tmp_path / "b", remote, service, key_file, ha_url)
        replicas.append(b)
        wait_until(lambda: b.role() == "follower", 60, "replica b to stand by")
        loaded = httpx.get(f"{service.url}/load", trust_env=False).json()
        assert set(loaded) == {"hello", "render", "check-gpu"}
        assert saves_received(tmp_path / "farm" / "jobs-service.log") == 3

        remote.commit({"jobs/hello.kit": HELLO.replace('"hi"', '"after failover"')}, "change hello")
        a.process.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        a.process.wait()
        lease = redis.Redis.from_url(ha_url)
        wait_until(lambda: (lease.get(LEASE) or b"").startswith(b"%s:%d:" % (os.uname().nodename.encode(),
                                                                             b.process.pid)),
                   4 * TTL, "replica b to take the lease")
        took_over = time.monotonic() - killed
        lease.close()
        assert took_over < 2 * TTL, f"takeover took {took_over:.1f} s with a {TTL} s lease"

        def applied() -> bool:
            return httpx.get(f"{service.url}/load", trust_env=False).json()["hello"]["args"] == ["after failover"]

        wait_until(applied, 30, "the new leader to apply the commit pushed while the old one was dead")
        wait_until(lambda: (b.status() or {}).get("applied_commit") == remote.head(), 30, "b to record its sync")
        # Three saves by a, one by b: b did not save again what a had saved.
        assert saves_received(tmp_path / "farm" / "jobs-service.log") == 4
    finally:
        service.stop()
