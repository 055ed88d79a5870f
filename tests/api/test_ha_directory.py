"""HA for a job directory on a shared volume: two real `gitsync run` replicas share the job directory and the
state directory, one lease in a real redis-server. The follower opens nothing and says "standby"; the leader
is killed with SIGKILL, the follower takes over within 2 × TTL, carries on from the same state (nothing
written again), applies the new commit, and a save made in the directory reaches git exactly once."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import redis

from gitsync.config import load_settings
from gitsync.replica import Replica as InProcessReplica
from gitsync.testing.repos import RemoteRepo, git
from gitsync.testing.waiting import wait_until

from .conftest import ReplicaProcess, free_port

TTL = 3.0
LEASE = "test:directory-failover"
HELLO = '[job.hello]\njob_type = "base"\ncommand = "/bin/echo"\nargs = ["hi"]\n'
RENDER = '[job.render]\njob_type = "base"\ncommand = "kit"\n'


class Replica(ReplicaProcess):
    def __init__(self, root: Path, shared: Path, remote: RemoteRepo, ha_url: str, *, state: Path | None = None) -> None:
        super().__init__(root,
                         f'[repo]\nurl = "{remote.url}"\npath = "jobs"\n'
                         f'[target]\ndirectory = "{shared / "jobs"}"\n'
                         f'[state]\ndir = "{state or shared / "state"}"\n[sync]\ninterval = 3600\n'
                         f'[push]\nmode = "direct"\ndebounce = 0.5\n'
                         f'[ha]\nredis_url = "{ha_url}"\nlease_ttl = {TTL}\nkey = "{LEASE}"\n', free_port())


def test_a_follower_takes_over_a_killed_leader_of_a_shared_directory_from_the_same_state(
        tmp_path: Path, remote: RemoteRepo, redis_server: str, replicas: list[Replica]) -> None:
    remote.commit({"jobs/hello.kit": HELLO, "jobs/render.kit": RENDER}, "two definitions")
    shared = tmp_path / "shared-volume"
    (shared / "jobs").mkdir(parents=True)
    ha_url = f"{redis_server}/2"
    redis.Redis.from_url(ha_url).flushdb()
    a = Replica(tmp_path / "a", shared, remote, ha_url)
    replicas.append(a)
    wait_until(lambda: a.role() == "leader" and (a.status() or {}).get("applied_commit") == remote.head(), 60,
               "replica a to lead and sync")
    b = Replica(tmp_path / "b", shared, remote, ha_url)
    replicas.append(b)
    wait_until(lambda: b.role() == "follower", 60, "replica b to stand by")
    standby = b.status() or {}
    assert standby["role"] == "standby" and standby["applied_commit"] is None  # it opened no state
    render_written = (shared / "jobs" / "render.kit").stat().st_mtime_ns

    remote.commit({"jobs/hello.kit": HELLO.replace('"hi"', '"after failover"')}, "change hello")
    (shared / "jobs" / "render.kit").write_text(RENDER.replace('"kit"', '"saved on the farm"'))  # a jobs/save
    a.process.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    a.process.wait()
    lease = redis.Redis.from_url(ha_url)
    mine = b"%s:%d:" % (os.uname().nodename.encode(), b.process.pid)
    wait_until(lambda: (lease.get(LEASE) or b"").startswith(mine), 4 * TTL, "replica b to take the lease")
    took_over = time.monotonic() - killed
    lease.close()
    assert took_over < 2 * TTL, f"takeover took {took_over:.1f} s with a {TTL} s lease"

    wait_until(lambda: '"after failover"' in (shared / "jobs" / "hello.kit").read_text(), 60,
               "the new leader to apply the commit pushed while the old one was dead")
    wait_until(lambda: "saved on the farm" in remote.show("jobs/render.kit"), 60, "the save to reach git")
    status = b.status() or {}
    assert status["ha"]["role"] == "leader" and status["last_result"] in ("synced", "noop")
    assert status["owned_files"] == 2 and status["outbox_length"] == 0, "it carried on from the shared state"
    remote.pull()
    saves = git("log", "--format=%H", "-S", "saved on the farm", "--", "jobs/render.kit", cwd=remote.work)
    assert len(saves.splitlines()) == 1, "the save reached git exactly once"
    assert (shared / "jobs" / "render.kit").stat().st_mtime_ns != render_written  # the save, not a rewrite
    assert "adopted" not in b.log.read_text(), "it did not rebuild a state of its own"


def test_a_replica_with_its_own_state_directory_refuses_to_lead_and_says_to_share_it(
        tmp_path: Path, remote: RemoteRepo, redis_url: str) -> None:
    remote.commit({"jobs/hello.kit": HELLO}, "one definition")
    shared = tmp_path / "shared-volume"
    (shared / "jobs").mkdir(parents=True)

    def replica(state: Path) -> InProcessReplica:
        flags = {"repo.url": remote.url, "repo.path": "jobs", "target.directory": str(shared / "jobs"),
                 "state.dir": str(state), "ha.redis_url": redis_url, "ha.lease_ttl": TTL, "ha.key": LEASE,
                 "server.listen": "", "sync.interval": 3600.0, "push.mode": "off"}
        return InProcessReplica(load_settings(None, flags, environ={})).start()

    first = replica(shared / "state")
    try:
        wait_until(lambda: first.agent is not None and first.agent.syncs_done >= 1, 30, "the first replica to lead")
    finally:
        assert first.stop()
    written = (shared / "jobs" / "hello.kit").stat().st_mtime_ns
    second = replica(tmp_path / "local-state")
    try:
        wait_until(lambda: "is not the one the other replicas use" in second.error, 30, "the refusal")
        assert second.agent is None and not second.elector.is_leader
        assert "share state.dir" in second.error and "\n" not in second.error
        assert (shared / "jobs" / "hello.kit").stat().st_mtime_ns == written, "it wrote nothing"
    finally:
        second.stop()


def test_a_replica_that_wins_the_lease_while_the_old_leader_still_holds_the_state_hands_it_on_then_leads(
        tmp_path: Path, remote: RemoteRepo, redis_url: str) -> None:
    from gitsync.state import StateLock

    remote.commit({"jobs/hello.kit": HELLO}, "one definition")
    shared = tmp_path / "shared-volume"
    (shared / "jobs").mkdir(parents=True)
    held = StateLock(shared / "state")  # a leader paused past its lease still holds the state directory
    flags = {"repo.url": remote.url, "repo.path": "jobs", "target.directory": str(shared / "jobs"),
             "state.dir": str(shared / "state"), "ha.redis_url": redis_url, "ha.lease_ttl": 1.0, "ha.key": LEASE,
             "server.listen": "", "sync.interval": 3600.0, "push.mode": "off"}
    replica = InProcessReplica(load_settings(None, flags, environ={})).start()
    try:
        wait_until(lambda: "cannot open the state directory to lead" in replica.error, 30, "the hand-over")
        assert "is in use by" in replica.error and replica.agent is None
        assert not (shared / "jobs" / "hello.kit").exists()
        held.release()  # the old leader stopped: the lease comes back to this replica, which now leads
        wait_until(lambda: replica.agent is not None and replica.agent.syncs_done >= 1, 30, "the replica to lead")
        assert (shared / "jobs" / "hello.kit").read_text() == HELLO and replica.error == ""
    finally:
        held.release()
        replica.stop()
