"""What the jobs API client retries and how it reports failures. Status codes the stand-in never sends
(503, 429) come from httpx's MockTransport; everything else is tested against the real stand-in."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from gitsync.forge_http import RetryPolicy
from gitsync.jobs_api import JobsApiClient, JobsApiError
from gitsync.secrets import Secret

KEY = "s3cret-key-value"


def client(answers: list[httpx.Response], seen: list[httpx.Request]) -> JobsApiClient:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answers.pop(0)

    return JobsApiClient("http://farm:8222/queue/management/jobs", lambda: Secret(KEY), transport=httpx.MockTransport(
        handle), retry=RetryPolicy(attempts=3, base_delay=0.0, sleep=lambda _s: None))


@pytest.mark.parametrize("status", [500, 503, 429])
def test_5xx_and_429_are_retried(status: int) -> None:
    seen: list[httpx.Request] = []
    api = client([httpx.Response(status), httpx.Response(200, json={"job-name": "a", "success": True})], seen)
    api.save({"name": "a", "job_type": "base", "command": "x", "job_spec_path": "/x.kit", "container": None})
    assert len(seen) == 2
    body = json.loads(seen[-1].content)
    assert "job_spec_path" not in body and "container" not in body  # never sent, no nulls
    assert seen[-1].headers["X-API-KEY"] == KEY


def test_422_is_reported_at_once_with_farms_reason() -> None:
    seen: list[httpx.Request] = []
    detail = {"detail": [{"loc": ["body", "name"], "msg": "name contains '_'", "type": "value_error"}]}
    api = client([httpx.Response(422, json=detail)], seen)
    with pytest.raises(JobsApiError) as caught:
        api.save({"name": "a_b", "job_type": "base", "command": "x"})
    assert len(seen) == 1 and caught.value.status == 422
    assert "name: name contains '_'" in str(caught.value) and "\n" not in str(caught.value)


def test_the_key_never_reaches_an_error_even_if_the_service_echoes_it() -> None:
    seen: list[httpx.Request] = []
    api = client([httpx.Response(400, json={"detail": f"bad key {KEY}"})], seen)
    with pytest.raises(JobsApiError) as caught:
        api.remove("a")
    assert KEY not in str(caught.value) and "****" in str(caught.value)


def test_remove_of_a_name_the_redis_store_does_not_hold_is_not_an_error() -> None:
    seen: list[httpx.Request] = []
    api = client([httpx.Response(404, json={"detail": "Job does not exist."})], seen)
    assert api.remove("gone") is False


def test_load_that_is_not_a_map_of_definitions_says_to_check_the_prefix() -> None:
    seen: list[httpx.Request] = []
    make: Callable[[], JobsApiClient] = lambda: client([httpx.Response(200, json="OK")], seen)  # noqa: E731
    with pytest.raises(JobsApiError, match="url_prefix"):
        make().load()
