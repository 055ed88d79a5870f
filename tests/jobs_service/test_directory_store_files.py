"""The directory store as Farm's: which files it loads, and exactly what /save and /remove do to
them on disk (the behaviour gitsync has to cope with)."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import toml
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from .helpers import JobsApi, postable

HELLO_KIT = """\
# Maintained in git: hello-world prints a greeting.
[package]
title = "Hello"  # shown in the launcher

[job.hello-world]
job_type = "base"
command = "echo"   # the command
args = ["hello"]
"""

MULTI_KIT = """\
# Two jobs in one file.
[package]
title = "Renders"
version = "1.0.0"

[job.create-render]
job_type = "kit-service"
command = "kit"
task_function = "render.run"

[job.check-gpu]
job_type = "base"
command = "nvidia-smi"
"""


def farm_record(name: str, job_spec_path: str | None = None, **fields: Any) -> dict[str, Any]:
    """What Farm's jobs/save writes under [job.<name>], in Farm's key order, None omitted."""
    record: dict[str, Any] = {
        "name": name,
        "job_type": "base",
        "command": "echo",
        "args": [],
        "task_function": "",
        "env": {},
        "log_to_stdout": True,
        "allowed_args": {},
        "job_spec_path": job_spec_path,
        "headless": True,
        "active": True,
        "success_return_codes": [0],
        "capacity_requirements": {},
        "container": "",
    }
    record.update(fields)
    return {key: value for key, value in record.items() if value is not None}


def test_save_new_definition_creates_name_kit_in_save_location(dir_api: JobsApi) -> None:
    dir_api.save({"name": "hello-world", "job_type": "base", "command": "echo"}).raise_for_status()

    path = dir_api.save_location / "hello-world.kit"
    assert path.is_file()
    assert toml.load(path)["job"]["hello-world"]["command"] == "echo"
    assert dir_api.load().json()["hello-world"]["job_spec_path"] == str(path)


def test_save_new_definition_file_is_exactly_what_toml_dump_writes(dir_api: JobsApi) -> None:
    dir_api.save({"name": "hello-world", "job_type": "base", "command": "echo", "args": ["a", "b"]}).raise_for_status()

    text = (dir_api.save_location / "hello-world.kit").read_text()
    # A new definition carries no job_spec_path, so Farm writes none (None values are dropped).
    expected = toml.dumps({"job": {"hello-world": farm_record("hello-world", args=["a", "b"])}})
    assert text == expected
    assert 'args = [ "a", "b",]' in text
    assert "[job.hello-world.env]" in text


def test_save_new_definition_replaces_an_existing_name_kit_in_save_location(
    dir_api: JobsApi, write_kit: Callable[..., Path]
) -> None:
    path = write_kit("hello-world.kit", MULTI_KIT)  # holds other definitions: they are lost

    dir_api.save({"name": "hello-world", "job_type": "base", "command": "echo"}).raise_for_status()

    assert set(toml.load(path)["job"]) == {"hello-world"}
    assert "package" not in toml.load(path)
    assert dir_api.names() == {"hello-world"}


def test_save_existing_single_definition_file_rewrites_it_in_place(
    dir_api: JobsApi, write_kit: Callable[..., Path]
) -> None:
    path = write_kit("hello.kit", HELLO_KIT)
    loaded = dir_api.load().json()["hello-world"]
    inode = os.stat(path).st_ino

    loaded["args"] = ["hello", "world"]
    dir_api.save(postable(loaded)).raise_for_status()

    assert os.stat(path).st_ino == inode  # truncate and write, not a new file renamed over it
    assert not (dir_api.save_location / "hello-world.kit").exists()
    record = farm_record("hello-world", args=["hello", "world"], job_spec_path=str(path))
    assert path.read_text() == toml.dumps({"package": {"title": "Hello"}, "job": {"hello-world": record}})
    assert dir_api.load().json()["hello-world"]["args"] == ["hello", "world"]


def test_saved_file_loses_comments_and_gains_job_spec_path_and_defaults(
    dir_api: JobsApi, write_kit: Callable[..., Path]
) -> None:
    path = write_kit("hello.kit", HELLO_KIT)

    dir_api.save(postable(dir_api.load().json()["hello-world"])).raise_for_status()

    text = path.read_text()
    assert "#" not in text
    assert f'job_spec_path = "{path}"' in text
    assert "active = true" in text
    assert 'name = "hello-world"' in text
    assert "success_return_codes = [ 0,]" in text
    assert "working_directory" not in text  # None is dropped
    assert "unresolved_command_path" not in text and "extension_paths" not in text


def test_save_definition_in_multi_definition_file_keeps_the_other_table_and_package(
    dir_api: JobsApi, write_kit: Callable[..., Path]
) -> None:
    path = write_kit("renders.kit", MULTI_KIT)
    check_gpu = dir_api.load().json()["check-gpu"]

    check_gpu["env"] = {"CUDA_VISIBLE_DEVICES": "0"}
    dir_api.save(postable(check_gpu)).raise_for_status()

    written = toml.load(path)
    assert written["package"] == {"title": "Renders", "version": "1.0.0"}
    assert written["job"]["create-render"] == {
        "job_type": "kit-service",
        "command": "kit",
        "task_function": "render.run",
    }
    assert written["job"]["check-gpu"]["env"] == {"CUDA_VISIBLE_DEVICES": "0"}
    assert list(written["job"]) == ["create-render", "check-gpu"]
    assert "[job.check-gpu.env]" in path.read_text()
    assert set(dir_api.names()) == {"create-render", "check-gpu"}


def test_save_round_trips_through_the_file_and_load(dir_api: JobsApi) -> None:
    sent = {
        "name": "create-render",
        "job_type": "kit-service",
        "command": "kit",
        "args": ["--no-window"],
        "task_function": "render.run",
        "env": {"A": "1"},
        "allowed_args": {"frames": {"arg": "--frames", "default": 10}},
        "success_return_codes": [0, 3],
        "capacity_requirements": {"resource_limits": {"nvidia.com/gpu": 1}},
        "working_directory": "/tmp",
        "container": "nvcr.io/nvidia/omniverse/kit:105",
        "headless": False,
        "log_to_stdout": False,
    }
    dir_api.save(sent).raise_for_status()

    loaded = dir_api.load().json()["create-render"]

    assert {key: loaded[key] for key in sent} == sent


def test_save_with_a_stale_unresolved_command_path_writes_the_old_command(
    dir_api: JobsApi, write_kit: Callable[..., Path]
) -> None:
    # Farm writes unresolved_command_path over command: a client must update or drop it.
    path = write_kit("hello.kit", HELLO_KIT)
    loaded = dir_api.load().json()["hello-world"]

    dir_api.save(postable({**loaded, "command": "printf"})).raise_for_status()
    assert toml.load(path)["job"]["hello-world"]["command"] == "echo"

    dir_api.save(postable({**loaded, "command": "printf", "unresolved_command_path": None})).raise_for_status()
    assert toml.load(path)["job"]["hello-world"]["command"] == "printf"


def test_remove_from_single_definition_file_deletes_the_file(dir_api: JobsApi, write_kit: Callable[..., Path]) -> None:
    path = write_kit("hello.kit", HELLO_KIT)
    assert dir_api.names() == {"hello-world"}  # Farm removes from the file map of its last load

    dir_api.remove("hello-world").raise_for_status()

    assert not path.exists()
    assert dir_api.names() == set()


def test_remove_from_multi_definition_file_rewrites_it_without_that_table(
    dir_api: JobsApi, write_kit: Callable[..., Path]
) -> None:
    path = write_kit("renders.kit", MULTI_KIT)
    dir_api.names()  # Farm removes from the file map of its last load

    dir_api.remove("check-gpu").raise_for_status()

    assert path.read_text() == toml.dumps(
        {
            "package": {"title": "Renders", "version": "1.0.0"},
            "job": {
                "create-render": {
                    "job_type": "kit-service",
                    "command": "kit",
                    "task_function": "render.run",
                }
            },
        }
    )
    assert dir_api.names() == {"create-render"}


def test_kit_file_dropped_in_by_hand_appears_in_load(
    dir_api: JobsApi, write_kit: Callable[..., Path], poll: Callable[..., Any]
) -> None:
    assert dir_api.names() == set()

    write_kit("hello.kit", HELLO_KIT)

    poll(lambda: "hello-world" in dir_api.names(), what="hello-world in /load")


def test_kit_file_deleted_by_hand_disappears_from_load(
    dir_api: JobsApi, write_kit: Callable[..., Path], poll: Callable[..., Any]
) -> None:
    path = write_kit("hello.kit", HELLO_KIT)
    assert dir_api.names() == {"hello-world"}

    path.unlink()

    poll(lambda: dir_api.names() == set(), what="hello-world gone from /load")


def test_unparsable_file_is_skipped_while_other_files_load(
    dir_api: JobsApi, write_kit: Callable[..., Path], caplog: pytest.LogCaptureFixture
) -> None:
    write_kit("broken.kit", '[job.broken]\njob_type = "base"\ncommand = "C:\\tools\\x"\n')
    write_kit("hello.kit", HELLO_KIT)

    with caplog.at_level(logging.WARNING):
        assert dir_api.names() == {"hello-world"}

    assert "broken.kit" in caplog.text


def test_file_valid_in_toml_1_0_but_not_for_the_toml_package_is_skipped(
    dir_api: JobsApi, write_kit: Callable[..., Path]
) -> None:
    # A heterogeneous array is valid TOML 1.0 (tomllib reads it) but not TOML 0.5 (toml).
    write_kit("mixed.kit", '[job.mixed]\njob_type = "base"\ncommand = "x"\nargs = ["a", 1]\n')

    assert dir_api.names() == set()


def test_definition_missing_command_is_skipped_while_others_in_the_file_load(
    dir_api: JobsApi, write_kit: Callable[..., Path], caplog: pytest.LogCaptureFixture
) -> None:
    write_kit(
        "two.kit",
        '[job.no-command]\njob_type = "base"\n\n[job.hello-world]\njob_type = "base"\ncommand = "echo"\n',
    )

    with caplog.at_level(logging.WARNING):
        assert dir_api.names() == {"hello-world"}

    assert "no-command" in caplog.text and "command" in caplog.text


def test_files_in_subdirectories_are_not_loaded(dir_api: JobsApi, write_kit: Callable[..., Path]) -> None:
    write_kit("hello.kit", HELLO_KIT, directory=dir_api.save_location / "team-a")

    assert dir_api.names() == set()


@pytest.mark.parametrize("file_name", ["hello.KIT", "hello.kit.bak", "hello.toml", ".kit"])
def test_only_files_whose_extension_is_exactly_kit_are_loaded(
    dir_api: JobsApi, write_kit: Callable[..., Path], file_name: str
) -> None:
    write_kit(file_name, HELLO_KIT)

    assert dir_api.names() == set()


def test_job_directories_glob_loads_each_matching_directory_flat(
    start_service: Callable[..., JobsApi], tmp_path: Path, write_kit: Callable[..., Path]
) -> None:
    teams = tmp_path / "teams"
    write_kit("a.kit", '[job.team-a-job]\njob_type = "base"\ncommand = "a"\n', teams / "a")
    write_kit("b.kit", '[job.team-b-job]\njob_type = "base"\ncommand = "b"\n', teams / "b")
    write_kit("deep.kit", '[job.too-deep]\njob_type = "base"\ncommand = "c"\n', teams / "b" / "x")
    write_kit("top.kit", '[job.top-level]\njob_type = "base"\ncommand = "d"\n', teams)

    api = start_service(job_directories=(str(teams / "*"),))

    assert api.names() == {"team-a-job", "team-b-job"}
    assert not (teams / "*").exists()  # a glob pattern is not created as a directory


def test_directory_matching_a_glob_after_start_is_loaded(
    start_service: Callable[..., JobsApi], tmp_path: Path, write_kit: Callable[..., Path]
) -> None:
    api = start_service(job_directories=(str(tmp_path / "teams" / "*"),))

    write_kit("c.kit", '[job.team-c-job]\njob_type = "base"\ncommand = "c"\n', tmp_path / "teams" / "c")

    assert api.names() == {"team-c-job"}


def test_table_key_not_the_name_field_is_the_identity(dir_api: JobsApi, write_kit: Callable[..., Path]) -> None:
    write_kit(
        "hello.kit",
        '[job.hello-omniverse]\nname = "simple-hello-omniverse-job"\njob_type = "base"\ncommand = "echo"\n',
    )

    loaded = dir_api.load().json()

    assert set(loaded) == {"hello-omniverse"}
    assert loaded["hello-omniverse"]["name"] == "hello-omniverse"


def test_active_false_in_a_file_is_not_read_back(dir_api: JobsApi, write_kit: Callable[..., Path]) -> None:
    write_kit("hello.kit", HELLO_KIT + "active = false\n")

    assert dir_api.load().json()["hello-world"]["active"] is True


def test_duplicate_name_in_save_location_wins_over_job_directories(
    start_service: Callable[..., JobsApi], tmp_path: Path, write_kit: Callable[..., Path]
) -> None:
    extra = tmp_path / "extra"
    write_kit("hello.kit", HELLO_KIT, extra)
    write_kit("zz-hello.kit", HELLO_KIT.replace('"echo"', '"printf"'))

    api = start_service(job_directories=(str(extra),))

    assert api.load().json()["hello-world"]["command"] == "printf"


def test_job_folder_placeholder_resolves_to_the_files_directory(
    dir_api: JobsApi, write_kit: Callable[..., Path]
) -> None:
    path = write_kit("hello.kit", HELLO_KIT + '\n[settings.app.exts.folders]\n"++" = ["${job}/exts"]\n')

    assert dir_api.load().json()["hello-world"]["extension_paths"] == [f"{path.parent}/exts"]


def test_bad_folder_placeholder_aborts_the_scan_and_load_fails_as_in_farm(
    dir_api: JobsApi, write_kit: Callable[..., Path]
) -> None:
    write_kit("a-hello.kit", HELLO_KIT)
    write_kit(
        "b-bad.kit",
        '[job.bad]\njob_type = "base"\ncommand = "x"\n\n[settings.app.exts.folders]\n"++" = ["${kit}/exts"]\n',
    )

    response = dir_api.load()

    assert response.status_code == 500
    assert "b-bad.kit" in response.json()["detail"]


def test_save_into_an_unparsable_job_spec_path_fails_without_touching_it(
    dir_api: JobsApi, write_kit: Callable[..., Path]
) -> None:
    broken = write_kit("broken.kit", "[job.hello-world\n")

    response = dir_api.save(
        {"name": "hello-world", "job_type": "base", "command": "echo", "job_spec_path": str(broken)}
    )

    assert response.status_code == 500
    assert broken.read_text() == "[job.hello-world\n"


@pytest.mark.parametrize("spec_path", ["relative/hello.kit", "/etc/hosts"])
def test_save_refuses_a_job_spec_path_that_is_not_an_absolute_kit_file(dir_api: JobsApi, spec_path: str) -> None:
    response = dir_api.save({"name": "hello-world", "job_type": "base", "command": "echo", "job_spec_path": spec_path})

    assert response.status_code == 422


class _Recorder(FileSystemEventHandler):
    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.events: list[str] = []
        self.lock = threading.Lock()

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.src_path == self.path and event.event_type in (
            "created",
            "deleted",
            "modified",
            "moved",
        ):
            with self.lock:
                self.events.append(event.event_type)

    def seen(self) -> list[str]:
        with self.lock:
            return list(self.events)


def test_save_of_a_new_definition_is_seen_as_delete_create_modify(
    dir_api: JobsApi, write_kit: Callable[..., Path], poll: Callable[..., Any]
) -> None:
    path = write_kit("hello-world.kit", HELLO_KIT)
    recorder = _Recorder(path)
    observer = Observer()
    observer.schedule(recorder, str(path.parent), recursive=False)
    observer.start()
    try:
        dir_api.save({"name": "hello-world", "job_type": "base", "command": "echo"}).raise_for_status()

        def ordered() -> bool:
            events = recorder.seen()
            return (
                "deleted" in events
                and "created" in events[events.index("deleted") :]
                and "modified" in events[events.index("created") :]
            )

        poll(ordered, what="deleted, created, modified events")
        assert "moved" not in recorder.seen()
    finally:
        observer.stop()
        observer.join()
