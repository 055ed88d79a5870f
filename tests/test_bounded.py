"""Weeks without a restart (issue 13): the mirror is compacted, everything else gitsync keeps is bounded,
and an idle agent hardly logs. Real git, a real SQLite database, real agents."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pull_helpers import isolated as isolated  # fixtures by import: tmpfs tmp_path, cwd + env isolation
from pull_helpers import kit
from pull_helpers import ram_tmp_path as ram_tmp_path

from gitsync.agent import Agent
from gitsync.capture import capture
from gitsync.config import Settings, load_settings
from gitsync.gitrepo import Identity, ObjectCounts
from gitsync.maintenance import Maintenance, decide
from gitsync.outbox import Outbox
from gitsync.quiet import Heartbeat, sync_line_level
from gitsync.sync import Syncer
from gitsync.testing.repos import RemoteRepo
from gitsync.testing.soak import run_soak


def settings_for(remote: RemoteRepo, root: Path, **overrides: Any) -> Settings:
    flags: dict[str, Any] = {"repo.url": remote.url, "repo.path": "jobs", "target.directory": str(root / "defs"),
                             "state.dir": str(root / "state"), "sync.interval": 3600.0, "server.listen": ""}
    flags.update(overrides)
    return load_settings(None, flags, environ={})


@pytest.fixture
def syncer(sample_remote: RemoteRepo, tmp_path: Path) -> Iterator[Syncer]:
    s = Syncer.from_settings(settings_for(sample_remote, tmp_path, **{"maintenance.loose_objects": 20}))
    yield s
    s.close()


def counts(loose: int = 0, packs: int = 1) -> ObjectCounts:
    return ObjectCounts(loose, loose * 4, packs, 100, 50)


@pytest.mark.parametrize(("loose", "packs", "work"), [
    (0, 1, "none"), (99, 1, "none"), (100, 1, "pack"), (5000, 3, "pack"), (0, 21, "gc"), (500, 21, "gc")])
def test_maintenance_packs_on_the_exact_loose_count_and_gcs_on_too_many_packs(loose: int, packs: int,
                                                                             work: str) -> None:
    assert decide(counts(loose, packs), loose_limit=100, max_packs=20) == work


def test_small_commits_leave_loose_objects_that_maintenance_packs(syncer: Syncer, sample_remote: RemoteRepo) -> None:
    """What was found: the mirror sets gc.auto = 0 and nothing ever repacked it (405 -> 4,011 loose objects)."""
    for i in range(8):
        sample_remote.commit({f"jobs/extra/e{i}.kit": kit(f"e{i}")})
        assert syncer.sync().result == "synced"
    before = syncer.mirror.count_objects()
    assert before.loose >= 20

    upkeep = Maintenance(syncer.settings, syncer.state, syncer.mirror).run()

    assert upkeep is not None and upkeep.compacted
    after = syncer.mirror.count_objects()
    assert after.loose == 0 and after.objects >= before.objects
    assert syncer.state.get("maintenance")["compactions"] == 1
    sample_remote.commit({"jobs/extra/later.kit": kit("later")})
    assert syncer.sync().result == "synced"  # the packed mirror serves the next sync as before


def test_after_a_cycle_that_fetched_the_mirror_is_packed_without_waiting_for_the_timer(
        syncer: Syncer, sample_remote: RemoteRepo) -> None:
    upkeep = Maintenance(settings_for_syncer(syncer, **{"maintenance.interval": 3600.0}), syncer.state,
                         syncer.mirror)
    for i in range(8):
        sample_remote.commit({f"jobs/extra/e{i}.kit": kit(f"e{i}")})
        assert syncer.sync().result == "synced"

    assert upkeep.run_if_due(active=False) is None  # a noop cycle: only the timer
    done = upkeep.run_if_due(active=True)

    assert done is not None and done.compacted and done.wal_bytes == 0
    assert syncer.mirror.count_objects().loose < 20


@pytest.mark.parametrize(("grace", "kept"), [(3600.0, True), (0.0, False)])
def test_an_unreachable_commit_is_deleted_only_after_the_grace_period(syncer: Syncer, grace: float,
                                                                      kept: bool) -> None:
    assert syncer.sync().result == "synced"
    head = syncer.state.get("applied_commit")
    who = Identity("t", "t@example.com")
    rejected = syncer.mirror.build_commit(head, {"jobs/lost.kit": kit("lost").encode()}, "rejected push", who, who)
    settings = settings_for_syncer(syncer, **{"maintenance.prune_grace": grace, "maintenance.loose_objects": 1})

    Maintenance(settings, syncer.state, syncer.mirror).run()

    assert syncer.mirror.has_commit(rejected) is kept
    assert syncer.mirror.has_commit(head)


def settings_for_syncer(syncer: Syncer, **overrides: Any) -> Settings:
    from dataclasses import replace

    return replace(syncer.settings, **{k.replace(".", "_"): v for k, v in overrides.items()})


def test_the_state_database_log_is_checkpointed_to_nothing(syncer: Syncer) -> None:
    for i in range(300):
        syncer.state.set(filler=f"value {i}" * 50)
    wal = syncer.state.path.with_name("state.sqlite3-wal")
    assert wal.stat().st_size > 100_000

    assert syncer.state.checkpoint() == 0
    assert wal.stat().st_size == 0


def test_history_keeps_state_history_limit_rows(sample_remote: RemoteRepo, tmp_path: Path) -> None:
    s = Syncer.from_settings(settings_for(sample_remote, tmp_path, **{"state.history_limit": 3}))
    try:
        for i in range(5):
            sample_remote.commit({f"jobs/h{i}.kit": kit(f"h{i}")})
            assert s.sync().result == "synced"
        rows = s.state.history(100)
    finally:
        s.close()
    assert len(rows) == 3 and rows[0].to_commit == sample_remote.head()


def test_a_history_kept_before_rows_counted_repeats_is_read_and_counts_from_then_on(tmp_path: Path) -> None:
    from gitsync.model import HistoryRow
    from gitsync.state import SCHEMA_VERSION, State

    (tmp_path / "state").mkdir()
    old = sqlite3.connect(tmp_path / "state" / "state.sqlite3")
    old.executescript("""CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE history (id INTEGER PRIMARY KEY AUTOINCREMENT, started REAL NOT NULL, duration REAL NOT NULL,
        from_commit TEXT, to_commit TEXT, result TEXT NOT NULL, written INTEGER NOT NULL,
        removed INTEGER NOT NULL, message TEXT NOT NULL);
        INSERT INTO history (started, duration, from_commit, to_commit, result, written, removed, message)
        VALUES (1.0, 0.1, 'a', 'b', 'invalid', 0, 0, 'commit b not applied');""")
    old.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    old.commit()
    old.close()

    state = State(tmp_path / "state")
    try:
        state.add_history(HistoryRow(2.0, 0.1, "a", "b", "invalid", 0, 0, "commit b not applied"))
        rows = state.history()
    finally:
        state.close()
    assert [(r.to_commit, r.repeats, r.last_seen) for r in rows] == [("b", 2, 2.0)]


def test_the_validation_cache_keeps_the_applied_tree_and_drops_old_versions(sample_remote: RemoteRepo,
                                                                           tmp_path: Path) -> None:
    s = Syncer.from_settings(settings_for(sample_remote, tmp_path, **{"state.validation_cache": 3}))
    try:
        for i in range(8):  # eight versions of one file: seven are history
            sample_remote.commit({"jobs/v.kit": kit("v", args=(f"version {i}",))})
            assert s.sync().result == "synced"
        db = sqlite3.connect(s.state.path)
        before = db.execute("SELECT COUNT(*) FROM validation").fetchone()[0]

        Maintenance(s.settings, s.state, s.mirror).run()

        after = db.execute("SELECT COUNT(*) FROM validation").fetchone()[0]
        in_tree = db.execute("SELECT COUNT(*) FROM tree").fetchone()[0]
        sample_remote.commit({"jobs/v.kit": kit("v", args=("later",))})
        assert s.sync().result == "synced"  # the trimmed cache still serves the next sync
    finally:
        s.close()
    assert before >= in_tree + 7 and after <= in_tree


def test_a_local_file_over_the_size_limit_is_never_stored_in_the_outbox(syncer: Syncer) -> None:
    assert syncer.sync().result == "synced"
    big = syncer.target.directory / "hello-world.kit"
    big.write_text(big.read_text() + "#" * 5000 + "\n")
    outbox = Outbox(syncer.state)

    assert capture(syncer.target, syncer.state, outbox, max_file_size=4096) == []

    assert outbox.entries() == []
    assert "hello-world.kit" in syncer.state.get("unreadable_local", {})
    db = sqlite3.connect(syncer.state.path)
    assert db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0] == 0


def test_an_idle_agent_logs_no_noop_cycle_at_info(sample_remote: RemoteRepo, tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    """What was found: every idle cycle logged a `noop` line at INFO (about 43,000 lines a day)."""
    settings = settings_for(sample_remote, tmp_path)
    agent = Agent(settings, Syncer.from_settings(settings))
    caplog.set_level(logging.DEBUG, logger="gitsync")
    try:
        assert agent.run_once("start").result == "synced"
        for _ in range(5):
            assert agent.run_once("schedule").result == "noop"
        sample_remote.commit({"jobs/new.kit": kit("new")})
        assert agent.run_once("schedule").result == "synced"
    finally:
        agent.syncer.close()
    info = [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO and r.name == "gitsync.sync"]
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG and r.name == "gitsync.sync"]
    assert len(info) == 2 and all("synced" in line for line in info), info
    assert sum("noop" in line for line in debug) == 5


@pytest.mark.parametrize(("result", "previous", "message", "before", "level"), [
    ("noop", "noop", "", "", logging.DEBUG),
    ("synced", "synced", "", "", logging.INFO),
    ("noop", "error", "", "remote down", logging.INFO),  # recovered: worth saying
    ("error", "noop", "remote down", "", logging.ERROR),
    ("error", "error", "remote down", "remote down", logging.ERROR),  # a failure is never silenced
    ("error", "error", "auth failed", "remote down", logging.ERROR),
    ("partial", "partial", "held: x", "held: x", logging.DEBUG),
])
def test_a_cycle_logs_at_info_only_what_differs_from_the_previous_one(result: str, previous: str, message: str,
                                                                      before: str, level: int) -> None:
    ok = result in ("synced", "noop", "partial")
    assert sync_line_level(result, ok, message, previous, before) == level


def test_the_heartbeat_logs_counts_once_an_interval(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    beat = Heartbeat(3600, clock=lambda: now[0])
    caplog.set_level(logging.INFO, logger="gitsync")
    for _ in range(119):
        beat.observe("noop")
    beat.observe("synced")
    assert not beat.beat_if_due(lambda: "outbox 0")
    now[0] = 3600.0

    assert beat.beat_if_due(lambda: "outbox 0")
    assert not beat.beat_if_due(lambda: "outbox 0")
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["alive: 120 cycle(s) in the last 60 min (119 noop, 1 synced); outbox 0"]


def test_the_jobs_service_forgets_parses_of_files_that_are_gone(tmp_path: Path) -> None:
    from gitsync.jobs_service.directory_store import DirectoryJobStore

    store = DirectoryJobStore(tmp_path / "jobs", watch_events=False)
    for i in range(20):
        (tmp_path / "jobs" / f"j{i}.kit").write_text(kit(f"j{i}"))
    store.rescan()
    for i in range(15):
        (tmp_path / "jobs" / f"j{i}.kit").unlink()

    store.rescan()

    assert len(store._parsed) == 5
    assert sorted(store.snapshot()) == [f"j{i}" for i in range(15, 20)]


@pytest.mark.slow
def test_a_minute_of_commits_and_saves_loses_nothing_and_compacts_the_mirror(tmp_path: Path) -> None:
    """The soak benchmark's one-minute version: `gitsync run` as its own process, one commit and one save per
    second, default settings except a faster maintenance timer."""
    result = run_soak(tmp_path, seconds=55, definitions=60, sample_every=10,
                      settings={"GITSYNC_MAINTENANCE_INTERVAL": "10", "GITSYNC_MAINTENANCE_LOOSE_OBJECTS": "60"})

    assert result.lost == []
    assert result.compactions >= 1, result.log_path.read_text()[-3000:]
    assert result.info_noop_lines == 0
    assert result.exit_code == 0
