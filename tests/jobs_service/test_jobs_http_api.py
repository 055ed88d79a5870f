"""The jobs service HTTP API, over real HTTP: every route and every error answer."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest

from .helpers import API_KEY, JobsApi

HELLO = {"name": "hello-world", "job_type": "base", "command": "echo", "args": ["hello"]}


def definition(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "job_type": "base", "command": "echo", **fields}


def test_status_answers_ok(dir_api: JobsApi) -> None:
    response = dir_api.http.get(f"{dir_api.url}/status")

    assert response.status_code == 200
    assert response.json() == "OK"


def test_load_on_an_empty_store_returns_an_empty_object(dir_api: JobsApi) -> None:
    response = dir_api.load()

    assert response.status_code == 200
    assert response.json() == {}


def test_load_returns_saved_definition_with_every_farm_field(dir_api: JobsApi) -> None:
    dir_api.save(HELLO).raise_for_status()

    loaded = dir_api.load().json()

    assert loaded == {
        "hello-world": {
            "name": "hello-world",
            "job_type": "base",
            "command": "echo",
            "args": ["hello"],
            "task_function": "",
            "env": {},
            "log_to_stdout": True,
            "extension_paths": [],
            "allowed_args": {},
            "job_spec_path": str(dir_api.save_location / "hello-world.kit"),
            "headless": True,
            "active": True,
            "unresolved_command_path": "echo",
            "success_return_codes": [0],
            "capacity_requirements": {},
            "working_directory": None,
            "container": "",
        }
    }


def test_save_answers_with_the_job_name_and_success(dir_api: JobsApi) -> None:
    response = dir_api.save(HELLO)

    assert response.status_code == 200
    assert response.json() == {"job-name": "hello-world", "success": True}


@pytest.mark.parametrize("key", [None, "", "wrong-key", API_KEY + "x", "clé-ünïcode"])
@pytest.mark.parametrize("route", ["save", "remove"])
def test_write_routes_without_the_right_api_key_are_403_not_authenticated(
    dir_api: JobsApi, route: str, key: str | None
) -> None:
    dir_api.save(HELLO).raise_for_status()
    headers = {b"X-API-KEY": key.encode()} if key is not None else {}
    body: dict[str, Any] = HELLO if route == "save" else {"job_definition_name": "hello-world"}

    response = dir_api.http.post(f"{dir_api.url}/{route}", json=body, headers=headers)

    assert response.status_code == 403
    assert response.json() == {"detail": "Not authenticated"}
    assert "hello-world" in dir_api.names()


def test_api_key_is_checked_before_the_body(dir_api: JobsApi) -> None:
    response = dir_api.save({"name": "bad_name"}, key="wrong")

    assert response.status_code == 403


@pytest.mark.parametrize(
    "name, words",
    [
        ("hello_world", "Value error, Job name cannot contain underscore."),  # Farm's own words
        ("x" * 33, "Value error, Job name cannot exceed 32 characters."),
        ("", "not a file name"),  # Farm would write ".kit"; the stand-in is stricter
    ],
)
def test_save_rejects_names_farm_rejects_with_422(dir_api: JobsApi, name: str, words: str) -> None:
    response = dir_api.save(definition(name))

    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail[0]["loc"] == ["body", "name"]
    assert words in detail[0]["msg"]
    assert dir_api.names() == set()


def test_save_accepts_a_name_of_exactly_32_characters(dir_api: JobsApi) -> None:
    assert dir_api.save(definition("x" * 32)).status_code == 200


@pytest.mark.parametrize(
    "field, value",
    [("args", "echo hi"), ("env", ["A=1"]), ("headless", "maybe"), ("command", True)],
)
def test_save_with_a_field_of_the_wrong_type_is_422(dir_api: JobsApi, field: str, value: Any) -> None:
    response = dir_api.save(definition("hello-world", **{field: value}))

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", field]


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b'"hello-world"'])
def test_save_with_a_body_that_is_not_a_json_object_is_422(dir_api: JobsApi, body: bytes) -> None:
    response = dir_api.http.post(
        f"{dir_api.url}/save",
        content=body,
        headers={"X-API-KEY": API_KEY, "Content-Type": "application/json"},
    )

    assert response.status_code == 422


def test_save_drops_fields_farm_does_not_know(dir_api: JobsApi) -> None:
    dir_api.save(definition("hello-world", colour="blue")).raise_for_status()

    assert "colour" not in dir_api.load().json()["hello-world"]
    text = (dir_api.save_location / "hello-world.kit").read_text()
    assert "colour" not in text


def test_remove_answers_with_the_job_name_and_success(dir_api: JobsApi) -> None:
    dir_api.save(HELLO).raise_for_status()

    response = dir_api.remove("hello-world")

    assert response.status_code == 200
    assert response.json() == {"job-name": "hello-world", "success": True}
    assert dir_api.names() == set()


def test_remove_of_an_unknown_name_succeeds_with_the_directory_store(dir_api: JobsApi) -> None:
    response = dir_api.remove("never-was")

    assert response.status_code == 200
    assert response.json() == {"job-name": "never-was", "success": True}


@pytest.mark.parametrize("body", [{}, {"job_definition_name": 5}, {"name": "hello-world"}])
def test_remove_without_a_job_definition_name_is_422(dir_api: JobsApi, body: dict[str, Any]) -> None:
    response = dir_api.http.post(f"{dir_api.url}/remove", json=body, headers={"X-API-KEY": API_KEY})

    assert response.status_code == 422


def test_url_prefix_from_the_config_is_where_the_routes_live(
    start_service: Callable[..., JobsApi],
) -> None:
    api = start_service(url_prefix="/farm/jobs")

    assert api.url.endswith("/farm/jobs")
    assert api.http.get(f"{api.url}/status").json() == "OK"
    assert api.http.get(f"{api.service.base_url}/queue/management/jobs/status").status_code == 404


def test_api_key_never_reaches_the_log(start_service: Callable[..., JobsApi], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    api = start_service()
    api.save(HELLO).raise_for_status()
    api.save(HELLO, key="wrong-key")
    api.remove("hello-world").raise_for_status()
    api.service.stop()

    assert API_KEY not in caplog.text
    assert "****" in caplog.text  # the start-up line shows the key redacted
