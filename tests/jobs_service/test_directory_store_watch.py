"""The directory store keeps itself fresh without /load: watchdog events and the periodic rescan."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gitsync.jobs_service.directory_store import DirectoryJobStore

KIT = '[job.hello-world]\njob_type = "base"\ncommand = "echo"\n'


@pytest.fixture
def make_store(save_location: Path) -> Iterator[Callable[..., DirectoryJobStore]]:
    stores: list[DirectoryJobStore] = []

    def make(**options: Any) -> DirectoryJobStore:
        store = DirectoryJobStore(save_location, **options)
        store.start()
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.stop()


def _store_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "jobs-service-rescan"]


def test_new_file_is_picked_up_by_the_watcher_without_a_load(
    make_store: Callable[..., DirectoryJobStore], save_location: Path, poll: Callable[..., Any]
) -> None:
    store = make_store(rescan_interval=3600)  # only a watchdog event can explain a change

    (save_location / "hello.kit").write_text(KIT)

    poll(lambda: "hello-world" in store.snapshot(), what="the watcher to load hello.kit")


def test_editor_style_atomic_save_is_picked_up_by_the_watcher(
    make_store: Callable[..., DirectoryJobStore], save_location: Path, poll: Callable[..., Any]
) -> None:
    store = make_store(rescan_interval=3600)

    temporary = save_location / ".hello.kit.swp"
    temporary.write_text(KIT)
    temporary.rename(save_location / "hello.kit")

    poll(lambda: "hello-world" in store.snapshot(), what="the watcher to see the move")


def test_deleted_file_is_dropped_by_the_watcher_without_a_load(
    make_store: Callable[..., DirectoryJobStore], save_location: Path, poll: Callable[..., Any]
) -> None:
    save_location.mkdir(parents=True)
    (save_location / "hello.kit").write_text(KIT)
    store = make_store(rescan_interval=3600)
    assert "hello-world" in store.snapshot()

    (save_location / "hello.kit").unlink()

    poll(lambda: store.snapshot() == {}, what="the watcher to drop hello-world")


def test_periodic_rescan_picks_up_a_new_file_without_events(
    make_store: Callable[..., DirectoryJobStore], save_location: Path, poll: Callable[..., Any]
) -> None:
    store = make_store(rescan_interval=0.05, watch_events=False)

    (save_location / "hello.kit").write_text(KIT)

    poll(lambda: "hello-world" in store.snapshot(), what="the periodic rescan")


def test_file_in_a_subdirectory_is_not_loaded_by_the_watcher(
    make_store: Callable[..., DirectoryJobStore], save_location: Path, poll: Callable[..., Any]
) -> None:
    store = make_store(rescan_interval=3600)
    (save_location / "sub").mkdir()
    (save_location / "sub" / "hello.kit").write_text(KIT)
    (save_location / "flat.kit").write_text(KIT.replace("hello-world", "flat"))

    poll(lambda: "flat" in store.snapshot(), what="flat.kit")
    assert "hello-world" not in store.snapshot()


def test_stop_ends_the_rescan_thread(make_store: Callable[..., DirectoryJobStore]) -> None:
    before = len(_store_threads())
    store = make_store()
    assert len(_store_threads()) == before + 1

    store.stop()
    store.stop()  # twice is fine

    assert len(_store_threads()) == before
