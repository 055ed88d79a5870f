"""When Farm's directory store sees a change: watchdog events, the 10 s rescan, and every /load.

Follows ``nv/svc/farm/services/jobs/facilities/store/directory.py``: ``JobFileChangedHandler``
(created, modified and deleted ``*.kit`` events, any case, recursive watches; never moves),
``DirectoryJobStore._fetch_from_local`` (sleep 10 s, then rescan every 10 s) and ``_load_jobs``
(clear, then reload; also run by every ``/load``). Events are ordered, so a later event that
is seen proves an earlier one was handled: no test here waits a fixed time.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from gitsync.jobs_service.config import DEFAULT_RESCAN_INTERVAL
from gitsync.jobs_service.directory_store import DirectoryJobStore


def kit(name: str) -> str:
    return f'[job.{name}]\njob_type = "base"\ncommand = "echo"\n'


@pytest.fixture
def make_store(save_location: Path) -> Iterator[Callable[..., DirectoryJobStore]]:
    stores: list[DirectoryJobStore] = []

    def make(**options: Any) -> DirectoryJobStore:
        save_location.mkdir(parents=True, exist_ok=True)
        store = DirectoryJobStore(save_location, **options)
        store.start()
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.stop()


def test_farms_rescan_interval_is_ten_seconds() -> None:
    assert DEFAULT_RESCAN_INTERVAL == 10.0


def test_nothing_is_loaded_before_the_first_rescan_or_load(
        make_store: Callable[..., DirectoryJobStore], save_location: Path) -> None:
    (save_location / "early.kit").parent.mkdir(parents=True, exist_ok=True)
    (save_location / "early.kit").write_text(kit("early"))
    store = make_store(rescan_interval=3600)

    assert store.snapshot() == {}  # _fetch_from_local sleeps first
    assert set(store.load()) == {"early"}  # every /load rescans


def test_the_periodic_rescan_loads_without_events(
        make_store: Callable[..., DirectoryJobStore], save_location: Path, poll: Callable[..., Any]) -> None:
    store = make_store(rescan_interval=0.05, watch_events=False)

    (save_location / "late.kit").write_text(kit("late"))

    poll(lambda: "late" in store.snapshot(), what="the periodic rescan")


def test_a_created_file_is_loaded_by_its_event(
        make_store: Callable[..., DirectoryJobStore], save_location: Path, poll: Callable[..., Any]) -> None:
    store = make_store(rescan_interval=3600)
    store.load()  # the first rescan schedules the watches

    (save_location / "new.kit").write_text(kit("new"))

    poll(lambda: "new" in store.snapshot(), what="the created event")


def test_a_file_moved_into_place_is_ignored_until_the_next_rescan(
        make_store: Callable[..., DirectoryJobStore], save_location: Path, poll: Callable[..., Any]) -> None:
    # gitsync writes a temp file and os.replace()s it: Farm's handler has no on_moved.
    store = make_store(rescan_interval=3600)
    store.load()
    temp = save_location / ".gitsync-tmp-moved.kit.tmp"
    temp.write_text(kit("moved"))
    os.replace(temp, save_location / "moved.kit")

    (save_location / "barrier.kit").write_text(kit("barrier"))  # its event comes after the move's
    poll(lambda: "barrier" in store.snapshot(), what="the barrier's created event")

    assert "moved" not in store.snapshot()
    assert "moved" in store.load()


def test_a_deleted_file_is_dropped_by_its_event(
        make_store: Callable[..., DirectoryJobStore], save_location: Path, poll: Callable[..., Any]) -> None:
    (save_location / "gone.kit").parent.mkdir(parents=True, exist_ok=True)
    (save_location / "gone.kit").write_text(kit("gone"))
    store = make_store(rescan_interval=3600)
    assert set(store.load()) == {"gone"}

    (save_location / "gone.kit").unlink()

    poll(lambda: store.snapshot() == {}, what="the deleted event")


def test_an_event_in_a_subdirectory_loads_a_file_until_the_next_rescan_drops_it(
        make_store: Callable[..., DirectoryJobStore], save_location: Path, poll: Callable[..., Any]) -> None:
    # The watch is recursive and the pattern case-insensitive, but _load_jobs lists only the top level.
    store = make_store(rescan_interval=3600)
    store.load()
    (save_location / "sub").mkdir()

    (save_location / "sub" / "deep.KIT").write_text(kit("deep"))

    poll(lambda: "deep" in store.snapshot(), what="the created event in a subdirectory")
    assert "deep" not in store.load()


def test_stop_ends_the_rescan_thread(make_store: Callable[..., DirectoryJobStore]) -> None:
    def rescan_threads() -> int:
        return sum(t.name == "jobs-service-rescan" for t in threading.enumerate())

    before = rescan_threads()
    store = make_store()
    assert rescan_threads() == before + 1

    store.stop()
    store.stop()  # twice is fine
    assert rescan_threads() == before


def test_a_file_event_never_waits_for_the_store(
        make_store: Callable[..., DirectoryJobStore], save_location: Path, poll: Callable[..., Any]) -> None:
    # watchdog calls handlers under its observer lock; a rescan adding a watch holds the store lock and needs
    # the observer lock. A handler waiting for the store would deadlock the two, so it only queues the event.
    from watchdog.events import FileCreatedEvent

    store = make_store(rescan_interval=3600)
    store.load()
    handler = store._watch._handler  # the handler watchdog calls
    path = save_location / "queued.kit"
    path.write_text(kit("queued"))

    with store._lock:  # what a rescan holds
        caller = threading.Thread(target=handler.dispatch, args=(FileCreatedEvent(str(path)),))
        caller.start()
        caller.join(timeout=10)
        assert not caller.is_alive(), "the event handler blocked on the store"

    poll(lambda: "queued" in store.snapshot(), what="the queued event to be handled")
