"""The jobs service over Farm's Redis store, against a real redis-server."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import pytest
import redis

from gitsync import farm
from gitsync.jobs_service.config import JobsServiceConfig
from gitsync.jobs_service.server import JobsServiceStartError, RunningJobsService
from gitsync.secrets import Secret

from .helpers import JobsApi, free_port

HELLO = {"name": "hello-world", "job_type": "base", "command": "echo", "args": ["hello"]}


def test_save_stores_the_definition_json_under_job_spec_name(redis_api: JobsApi, redis_client: redis.Redis) -> None:
    response = redis_api.save(HELLO)

    assert response.json() == {"job-name": "hello-world", "success": True}
    assert redis_client.type("job_spec_hello-world") == b"string"
    stored = json.loads(redis_client.get("job_spec_hello-world") or b"")
    assert stored["command"] == "echo"
    assert stored["args"] == ["hello"]
    assert set(stored) == set(farm.DEFINITION_DEFAULTS)


def test_load_returns_saved_definitions_with_farm_defaults(redis_api: JobsApi) -> None:
    redis_api.save(HELLO).raise_for_status()
    redis_api.save({**HELLO, "name": "check-gpu", "active": False}).raise_for_status()

    loaded = redis_api.load().json()

    assert set(loaded) == {"hello-world", "check-gpu"}
    assert loaded["hello-world"]["success_return_codes"] == [0]
    assert loaded["hello-world"]["job_spec_path"] is None
    assert loaded["check-gpu"]["active"] is False  # unlike the directory store, Redis keeps it


def test_load_filter_applies_to_redis_names(redis_api: JobsApi) -> None:
    redis_api.save(HELLO).raise_for_status()
    redis_api.save({**HELLO, "name": "check-gpu"}).raise_for_status()

    assert set(redis_api.load(filter="^check").json()) == {"check-gpu"}


def test_load_skips_damaged_json_with_a_warning(
    redis_api: JobsApi, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    redis_api.save(HELLO).raise_for_status()
    redis_client.set("job_spec_broken", "{not json")
    redis_client.set("job_spec_not-an-object", "[1, 2]")

    with caplog.at_level(logging.WARNING):
        assert redis_api.names() == {"hello-world"}

    assert "job_spec_broken" in caplog.text
    assert "job_spec_not-an-object" in caplog.text


def test_load_ignores_other_keys_and_non_string_job_spec_keys(redis_api: JobsApi, redis_client: redis.Redis) -> None:
    redis_client.set("something_else", json.dumps(HELLO))
    redis_client.rpush("job_spec_a-list", "x")

    assert redis_api.names() == set()


def test_definition_written_to_redis_by_another_service_appears_in_load(
    redis_api: JobsApi, redis_client: redis.Redis
) -> None:
    redis_client.set("job_spec_from-farm", json.dumps({**HELLO, "name": "from-farm"}))

    assert redis_api.load().json()["from-farm"]["args"] == ["hello"]


def test_remove_deletes_the_key(redis_api: JobsApi, redis_client: redis.Redis) -> None:
    redis_api.save(HELLO).raise_for_status()

    response = redis_api.remove("hello-world")

    assert response.json() == {"job-name": "hello-world", "success": True}
    assert redis_client.exists("job_spec_hello-world") == 0
    assert redis_api.names() == set()


def test_remove_of_an_unknown_name_is_404_with_redis(redis_api: JobsApi) -> None:
    response = redis_api.remove("never-was")

    assert response.status_code == 404
    assert response.json() == {"detail": "Job does not exist."}


def test_save_with_wrong_key_is_403_with_redis(redis_api: JobsApi) -> None:
    response = redis_api.save(HELLO, key="nope")

    assert response.status_code == 403
    assert redis_api.names() == set()


def test_unreachable_redis_fails_start_without_showing_the_password(
    start_service: Callable[..., JobsApi],
) -> None:
    url = f"redis://:hunter2-secret@127.0.0.1:{free_port()}/0"
    config = JobsServiceConfig(store_class=farm.REDIS_STORE_CLASS, connection_string=Secret(url), api_key=Secret("k"))

    with pytest.raises(JobsServiceStartError) as caught:
        RunningJobsService(config, port=0).start()

    assert "redis" in str(caught.value)
    assert "hunter2-secret" not in str(caught.value)
