"""Farm's jobs HTTP API, point by point, against the stand-in over real HTTP.

Follows ``nv/svc/farm/services/jobs/router.py`` (``_create_dynamic_model``/``JobDefinitionModel``,
``save_job_definition``, ``remove_job_definition``, ``load_job_Definitions``, ``_sanitize_filter``),
``nv/svc/core/main.py`` (``ServicesCore._on_startup``: the root probes) and the stores' ``save_job`` and
``delete_job``. Where the stand-in is deliberately stricter than Farm (safe names, body size), the
test says so.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from jobs_service.helpers import JobsApi, postable

HELLO = {"name": "hello-world", "job_type": "base", "command": "echo"}


# --- /save: the body model (router.py: _create_dynamic_model over JobDefinition's defaults) ----------

def test_every_save_field_is_optional_with_the_job_definitions_defaults(dir_api: JobsApi) -> None:
    response = dir_api.save({})

    assert response.status_code == 200
    assert response.json() == {"job-name": "job-name", "success": True}
    saved = dir_api.load().json()["job-name"]
    assert (saved["job_type"], saved["command"]) == ("base,kit,kit-service", "command")


def test_an_explicit_null_is_422_as_pydantic_says_it(dir_api: JobsApi) -> None:
    response = dir_api.save({**HELLO, "working_directory": None})

    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert (error["loc"], error["msg"], error["type"]) == (
        ["body", "working_directory"], "Input should be a valid string", "string_type")
    assert dir_api.names() == set()


@pytest.mark.parametrize("value", ["true", "yes", 1, "on"])
def test_booleans_accept_what_pydantic_coerces(dir_api: JobsApi, value: Any) -> None:
    dir_api.save({**HELLO, "headless": value}).raise_for_status()

    assert dir_api.load().json()["hello-world"]["headless"] is True


def test_unknown_keys_are_dropped(dir_api: JobsApi) -> None:
    dir_api.save({**HELLO, "colour": "blue"}).raise_for_status()

    assert "colour" not in dir_api.load().json()["hello-world"]


def test_an_empty_job_spec_path_means_not_set_as_nvidias_upload_script_sends_it(dir_api: JobsApi) -> None:
    # DirectoryJobStore.save_job: `if not job_spec_path` creates <save_location>/<name>.kit.
    dir_api.save({**HELLO, "job_spec_path": ""}).raise_for_status()

    assert (dir_api.save_location / "hello-world.kit").is_file()


def test_a_load_answer_posted_back_without_its_nulls_is_accepted(dir_api: JobsApi) -> None:
    dir_api.save(HELLO).raise_for_status()
    loaded = dir_api.load().json()["hello-world"]

    assert dir_api.save(loaded).status_code == 422  # working_directory is null in /load
    assert dir_api.save(postable(loaded)).status_code == 200


def test_names_farm_refuses_get_farms_own_messages(dir_api: JobsApi) -> None:
    under = dir_api.save({**HELLO, "name": "a_b"}).json()["detail"][0]
    long = dir_api.save({**HELLO, "name": "x" * 33}).json()["detail"][0]

    assert under["msg"] == "Value error, Job name cannot contain underscore."
    assert long["msg"] == "Value error, Job name cannot exceed 32 characters."


# --- the key: ApiKeyHeader runs after FastAPI decoded the JSON, before it validated the model --------

def test_malformed_json_with_a_bad_key_is_422_not_403(dir_api: JobsApi) -> None:
    response = dir_api.http.post(f"{dir_api.url}/save", content=b"{nope",
                                 headers={"X-API-KEY": "wrong", "Content-Type": "application/json"})

    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "json_invalid"


def test_a_body_failing_the_model_with_a_bad_key_is_403(dir_api: JobsApi) -> None:
    response = dir_api.save({**HELLO, "working_directory": None}, key="wrong")

    assert response.status_code == 403
    assert response.json() == {"detail": "Not authenticated"}


# --- the service core's probes (ServicesCore._on_startup) --------------------------------------------

@pytest.mark.parametrize("probe", ["/health", "/ready", "/startup", "/status"])
def test_the_root_probes_farms_helm_chart_uses_answer_ok(dir_api: JobsApi, probe: str) -> None:
    response = dir_api.http.get(f"{dir_api.service.base_url}{probe}")

    assert (response.status_code, response.json()) == (200, "OK")


# --- /load?filter= (router.py: _sanitize_filter, then re.search) -------------------------------------

@pytest.fixture
def three_jobs(dir_api: JobsApi) -> JobsApi:
    for name in ("hello-world", "check-gpu", "create-render"):
        dir_api.save({**HELLO, "name": name}).raise_for_status()
    return dir_api


@pytest.mark.parametrize("given, matched", [
    ("hello-world", set()),                      # reduced to "helloworld"
    ("^check", {"check-gpu"}),                   # reduced to "check"
    ("render$", {"create-render"}),
    ("c.*r", {"create-render"}),
    ("e.*d", {"hello-world", "create-render"}),
    ("gpu|hello", set()),                        # reduced to "gpuhello"
])
def test_the_filter_is_reduced_to_alphanumerics_dots_and_stars_before_matching(
        three_jobs: JobsApi, given: str, matched: set[str]) -> None:
    assert set(three_jobs.load(filter=given).json()) == matched


def test_a_filter_that_reduces_to_a_bad_regex_is_a_500_as_in_farm(three_jobs: JobsApi) -> None:
    assert three_jobs.load(filter="*").status_code == 500


def test_a_backtracking_filter_cannot_stall_the_service(three_jobs: JobsApi) -> None:
    # Stricter than Farm, whose re.search backtracks for minutes on this: a linear-time matcher.
    nasty = ".*" * 40 + "X"
    three_jobs.save({**HELLO, "name": "a" * 32}).raise_for_status()

    assert three_jobs.load(filter=nasty).json() == {}
    assert three_jobs.http.get(f"{three_jobs.url}/status").status_code == 200


# --- /remove (DirectoryJobStore.delete_job, RedisJobStore.delete_job) --------------------------------

def test_remove_works_from_the_file_map_of_the_last_load(dir_api: JobsApi, write_kit: Callable[..., Path]) -> None:
    assert dir_api.names() == set()
    # Moved into place as gitsync does: no event Farm handles, so the file is not in the map yet.
    temp = write_kit(".late.tmp", '[job.late]\njob_type = "base"\ncommand = "echo"\n')
    path = temp.with_name("late.kit")
    os.replace(temp, path)

    response = dir_api.remove("late")

    assert response.json() == {"job-name": "late", "success": True}  # 200 although nothing was removed
    assert path.exists()
    dir_api.names()  # a load refreshes the file map
    dir_api.remove("late").raise_for_status()
    assert not path.exists()


def test_remove_of_a_missing_name_is_404_on_the_redis_store(redis_api: JobsApi) -> None:
    response = redis_api.remove("never-was")

    assert (response.status_code, response.json()) == (404, {"detail": "Job does not exist."})


def test_a_redis_save_that_fails_still_answers_200(redis_api: JobsApi, redis_client: redis.Redis) -> None:
    # RedisJobStore.save_job is asyncio.ensure_future(...): a failure never reaches the client.
    redis_client.config_set("min-replicas-to-write", 1)  # a real Redis refusing every write
    try:
        response = redis_api.save(HELLO)
    finally:
        redis_client.config_set("min-replicas-to-write", 0)

    assert response.json() == {"job-name": "hello-world", "success": True}
    assert redis_api.names() == set()


# --- stricter than Farm, for safety (issue 8) --------------------------------------------------------

@pytest.mark.parametrize("name", ["../x", "../../x", "/etc/evil", "a/b", "a\\b", ".hidden", "..", "x\ny"])
def test_a_name_that_is_not_one_plain_file_is_422_and_writes_nothing(
        dir_api: JobsApi, tmp_path: Path, name: str) -> None:
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))

    response = dir_api.save({**HELLO, "name": name})

    assert response.status_code == 422
    assert "stricter than Farm" in response.json()["detail"][0]["msg"]
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


@pytest.mark.parametrize("where", ["/etc/evil.kit", "{tmp}/elsewhere/x.kit", "relative.kit", "{save}/x.txt"])
def test_a_job_spec_path_outside_the_job_directories_is_422(dir_api: JobsApi, tmp_path: Path, where: str) -> None:
    (tmp_path / "elsewhere").mkdir()
    spec = where.format(tmp=tmp_path, save=dir_api.save_location)

    response = dir_api.save({**HELLO, "job_spec_path": spec})

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "job_spec_path"]
    assert not Path(spec).exists()


@pytest.fixture
def small_limit_api(start_service: Callable[..., JobsApi]) -> JobsApi:
    return start_service(max_body_size=1000)


def test_a_body_over_the_limit_is_413_before_the_key_or_json_is_looked_at(small_limit_api: JobsApi) -> None:
    response = small_limit_api.http.post(f"{small_limit_api.url}/save", content=b"x" * 1001,
                                         headers={"X-API-KEY": "wrong"})

    assert response.status_code == 413


def test_a_chunked_body_is_cut_off_at_the_limit(small_limit_api: JobsApi) -> None:
    def endless() -> Iterator[bytes]:
        for _ in range(10_000):  # 100 MB if it were all read
            yield b"y" * 10_000

    try:
        response = small_limit_api.http.post(f"{small_limit_api.url}/save", content=endless())
        assert response.status_code == 413
    except httpx.WriteError:
        pass  # the server answered 413 and closed while the client was still sending
    assert small_limit_api.http.get(f"{small_limit_api.url}/status").status_code == 200


def test_the_linear_matcher_answers_exactly_as_re_search() -> None:
    import itertools
    import re

    from gitsync.jobs_service.app import name_filter

    names = ["hello-world", "check-gpu", "create-render", "a", "", "aaa", "abcabc", "x.y", "line\nbreak", "A1b2"]
    alphabet = ["a", "b", "c", ".", "*", "1", "x"]
    checked = 0
    for size in range(1, 5):
        for chars in itertools.product(alphabet, repeat=size):
            pattern = "".join(chars)
            try:
                compiled = re.compile(pattern)
            except re.error:
                with pytest.raises(re.error):
                    name_filter(pattern)
                continue
            matches = name_filter(pattern)
            for name in names:
                assert matches(name) == bool(compiled.search(name)), (pattern, name)
                checked += 1
    assert checked > 10_000
