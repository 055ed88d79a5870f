"""The HA lease against a real redis-server: one leader, takeover, and fencing before every write."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from gitsync.ha import Elector, Lease, NotLeader
from gitsync.secrets import Secret
from gitsync.testing.waiting import wait_until


@pytest.fixture
def electors(redis_url: str) -> Iterator[list[Elector]]:
    made: list[Elector] = []
    yield made
    for elector in made:
        elector.stop()


def elector(redis_url: str, made: list[Elector], ttl: float = 0.6) -> Elector:
    e = Elector(Lease(Secret(redis_url), key="test:leader", ttl=ttl)).start()
    made.append(e)
    return e


def test_one_replica_leads_and_the_other_takes_over_when_it_stops(redis_url: str,
                                                                   electors: list[Elector]) -> None:
    a = elector(redis_url, electors)
    b = elector(redis_url, electors)
    assert a.is_leader and not b.is_leader
    a.check()
    with pytest.raises(NotLeader):
        b.check()
    assert b.status()["role"] == "follower" and b.status()["leader"] == a.lease.identity
    a.stop()
    wait_until(lambda: b.is_leader, 5, "the follower to take over")
    b.check()


def test_a_lease_nobody_renews_expires_within_its_ttl(redis_url: str, electors: list[Elector]) -> None:
    dead = Lease(Secret(redis_url), key="test:leader", ttl=0.5)
    assert dead.acquire()  # a leader that dies right after taking the lease: it never renews
    b = elector(redis_url, electors, ttl=0.5)
    assert not b.is_leader
    wait_until(lambda: b.is_leader, 5, "the follower to take the expired lease")
    dead.close()


def test_a_leader_that_lost_its_lease_stops_before_the_next_write(redis_url: str, electors: list[Elector]) -> None:
    a = elector(redis_url, electors, ttl=30)
    assert a.is_leader
    # What a long pause looks like from outside: the lease expired and another replica took it.
    client = redis.Redis.from_url(redis_url)
    client.set("test:leader", "other-host:1:token", px=30_000)
    client.close()
    assert a.is_leader  # its local view has not caught up yet ...
    with pytest.raises(NotLeader, match="nothing applied or pushed"):
        a.check()  # ... but the check right before a write has
    assert not a.is_leader


def test_the_redis_password_never_shows(redis_server: str) -> None:
    url = redis_server.replace("redis://", "redis://:hunter2-password@") + "/0"
    e = Elector(Lease(Secret(url), key="test:pw", ttl=1)).start()
    try:
        shown = repr(e.status())
        assert "hunter2-password" not in shown and "****" in shown
        assert "hunter2-password" not in e.last_error
    finally:
        e.stop()
