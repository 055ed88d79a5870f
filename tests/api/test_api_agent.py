"""`gitsync run` with a jobs-api target: the agent's cycle, /status, and high availability (a leader that
lost its lease saves nothing), in-process against the stand-in on its Redis store."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from gitsync.agent import Agent, build_agent
from gitsync.config import load_settings
from gitsync.testing.repos import RemoteRepo

from .conftest import Service
from .test_api_target import HELLO, seed


@pytest.fixture
def start_agent(tmp_path: Path, key_file: Path, agents: list[Agent]) -> Callable[..., Agent]:
    def start(remote: RemoteRepo, url: str, name: str = "a", **options: Any) -> Agent:
        flags = {"repo.url": remote.url, "repo.path": "jobs", "target.kind": "jobs-api", "target.url": url,
                 "target.api_key_file": str(key_file), "state.dir": str(tmp_path / name / "state"),
                 "sync.interval": 3600.0, "server.listen": "127.0.0.1:0", "push.mode": "off", **options}
        agent = build_agent(load_settings(None, flags, environ={}))
        agents.append(agent)
        agent.start()
        assert agent.wait_for_syncs(1, 20), "the first cycle did not finish"
        return agent

    return start


def cycle(agent: Agent) -> None:
    done = agent.syncs_done
    agent.request_sync("test")
    assert agent.wait_for_syncs(done + 1, 20), "the requested cycle did not finish"


@pytest.mark.parametrize("service", ["redis"], indirect=True)
def test_the_agent_keeps_a_jobs_service_in_step_and_reports_it(
        remote: RemoteRepo, service: Service, start_agent: Callable[..., Agent]) -> None:
    seed(remote)
    agent = start_agent(remote, service.url)
    assert set(service.load()) == {"hello", "render", "check-gpu"}
    remote.commit({"jobs/hello.kit": HELLO.replace('"hi"', '"again"')}, "change hello")
    cycle(agent)
    assert service.load()["hello"]["args"] == ["again"]
    status = httpx.get(f"http://127.0.0.1:{agent.server_port}/status", trust_env=False).json()
    assert status["target"] == service.url and status["definitions"] == 3
    assert status["last_result"] == "synced" and status["applied_commit"] == remote.head()
    assert httpx.get(f"http://127.0.0.1:{agent.server_port}/readyz", trust_env=False).status_code == 200
    metrics = httpx.get(f"http://127.0.0.1:{agent.server_port}/metrics", trust_env=False).text
    assert 'gitsync_owned_files{target="default"} 3.0' in metrics


@pytest.mark.parametrize("service", ["redis"], indirect=True)
def test_a_follower_is_ready_but_idle_and_a_leader_that_lost_its_lease_saves_nothing(
        remote: RemoteRepo, service: Service, start_agent: Callable[..., Agent], redis_url: str) -> None:
    seed(remote)
    ha = {"ha.redis_url": redis_url, "ha.lease_ttl": 30.0, "ha.key": "test:lease"}
    leader = start_agent(remote, service.url, "a", **ha)
    follower = start_agent(remote, service.url, "b", **ha)
    assert set(service.load()) == {"hello", "render", "check-gpu"}
    status = httpx.get(f"http://127.0.0.1:{follower.server_port}/status", trust_env=False).json()
    assert status["ha"]["role"] == "follower" and status["ha"]["leader"] == leader.status()["ha"]["replica"]
    assert status["last_result"] is None  # it never synced: idle
    metrics = {port: httpx.get(f"http://127.0.0.1:{port}/metrics", trust_env=False).text
               for port in (leader.server_port, follower.server_port)}
    assert "gitsync_ha_leader 1.0" in metrics[leader.server_port]
    assert "gitsync_ha_leader 0.0" in metrics[follower.server_port]
    assert httpx.get(f"http://127.0.0.1:{follower.server_port}/readyz", trust_env=False).status_code == 200

    # The leader is paused past its TTL, and another replica took the lease meanwhile.
    client = redis.Redis.from_url(redis_url)
    client.set("test:lease", "elsewhere:1:token", px=30_000)
    client.close()
    remote.commit({"jobs/hello.kit": HELLO.replace('"hi"', '"from git"')}, "change hello")
    cycle(leader)
    assert service.load()["hello"]["args"] == ["hi"]  # fenced: nothing saved
    assert "does not hold the HA lease" in leader.status()["last_message"]
    assert leader.status()["ha"]["role"] == "follower"


@pytest.mark.parametrize("service", ["redis"], indirect=True)
def test_switching_ha_on_keeps_what_the_single_replica_saved_as_gitsyncs(
        remote: RemoteRepo, service: Service, start_agent: Callable[..., Agent], redis_url: str) -> None:
    seed(remote)
    single = start_agent(remote, service.url, "a")
    single.stop()
    remote.commit({"jobs/hello.kit": HELLO.replace('"hi"', '"with ha"')}, "change hello")
    replica = start_agent(remote, service.url, "a", **{"ha.redis_url": redis_url, "ha.key": "test:seed"})
    assert service.load()["hello"]["args"] == ["with ha"]  # saved, not held back as someone else's
    assert replica.status()["findings"] == []
    client = redis.Redis.from_url(redis_url)
    assert sorted(client.hkeys("test:seed:applied:default")) == [b"check-gpu", b"hello", b"render"]
    client.close()
