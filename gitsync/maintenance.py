"""Keeping the state directory bounded: the mirror packed, the state database's log checkpointed and
its validation cache trimmed.

A sidecar fetches and commits many times a day. Each small fetch and each push-back commit
leaves loose objects in the mirror (at least 4 KiB on disk each, however small), and the
mirror's config turns git's automatic gc off so that no fetch ever stops to repack. So gitsync
maintains the mirror itself, between cycles (the worker calls `run_if_due` after a cycle, still
holding its turn, so never during a fetch or a push), with git's own repack, prune and gc:
started on an exact count of loose objects and packs, not git's estimate from one of its 256
object folders, which never fires on a small mirror. Unreachable objects (rejected pushes,
conflict commits) are deleted once older than a grace period.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from gitsync.config import Settings
from gitsync.errors import GitError
from gitsync.gitrepo import GitMirror, ObjectCounts
from gitsync.state import State

log = logging.getLogger("gitsync.maintenance")

Work = Literal["none", "pack", "gc"]


def decide(counts: ObjectCounts, *, loose_limit: int, max_packs: int) -> Work:
    """Pure: what the mirror needs. Too many packs: a full gc folds them into one. Too many loose
    objects: pack them into one more pack (cheap: it only reads the loose ones)."""
    if counts.packs > max_packs:
        return "gc"
    if counts.loose >= loose_limit:
        return "pack"
    return "none"


@dataclass(frozen=True)
class Upkeep:
    """What one maintenance run found and did."""

    work: Work
    before: ObjectCounts
    after: ObjectCounts
    wal_bytes: int  # the state database's log after the checkpoint
    seconds: float

    @property
    def compacted(self) -> bool:
        return self.work != "none" and (self.after.loose < self.before.loose or self.after.packs < self.before.packs)


class Maintenance:
    def __init__(self, settings: Settings, state: State, mirror: GitMirror,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.state = state
        self.mirror = mirror
        self.clock = clock
        self._next = clock() + settings.maintenance_interval
        #: The databases of the other targets sharing this mirror (several `[[target]]` tables): their outbox
        #: bases and held versions are kept from pruning too.
        self.other_states: Callable[[], list[State]] = lambda: []

    def due(self) -> bool:
        return self.settings.maintenance_interval > 0 and self.clock() >= self._next

    def run_if_due(self, active: bool = False) -> Upkeep | None:
        """Called after each cycle. The full pass on its timer; and after a cycle that fetched or pushed
        something (`active`), at once: a count of loose objects costs one listing of the object folders, so
        a burst of commits never piles them up, and the state database's log is folded in."""
        if self.settings.maintenance_interval <= 0:
            return None
        if self.due():
            return self.run()
        return self.run(full=False) if active else None

    def run(self, full: bool = True) -> Upkeep | None:
        """One maintenance pass; a failure is logged and retried later, never raised. `full`: also trim the
        validation cache and record the pass even when there was nothing to do."""
        s = self.settings
        if full:
            self._next = self.clock() + s.maintenance_interval
        started = time.monotonic()
        try:
            before = self.mirror.count_objects()
            work = decide(before, loose_limit=s.maintenance_loose_objects, max_packs=s.maintenance_max_packs)
            after = before
            if work != "none":  # before anything is pruned: what the outbox and held files need stays
                self.mirror.keep(blob for state in (self.state, *self.other_states())
                                 for blob in state.blobs_outside_tree())
            if work == "pack":
                self.mirror.pack_loose(prune_grace=s.maintenance_prune_grace)
                after = self.mirror.count_objects()
                if after.loose >= s.maintenance_loose_objects:
                    # Unreachable objects still within their grace period: packed as they are (git's own
                    # loose-objects task), and dropped by the next full gc once their grace has passed.
                    self.mirror.pack_all_loose()
                    after = self.mirror.count_objects()
            elif work == "gc":
                self.mirror.gc(prune_grace=s.maintenance_prune_grace)
                after = self.mirror.count_objects()
        except GitError as exc:
            log.warning("mirror maintenance failed, will try again later: %s", exc)
            return None
        if full:
            dropped = self.state.prune_validation(s.state_validation_cache)
            if dropped:
                log.debug("dropped %d cached validation result(s) of file versions no longer applied", dropped)
        # SQLite checkpoints by itself only every 1,000 pages and never shrinks its log: a busy cycle leaves
        # it folded in and truncated (a few milliseconds), so the log holds at most one cycle's writes.
        upkeep = Upkeep(work, before, after, self.state.checkpoint(), time.monotonic() - started)
        if full or work != "none":
            self._record(upkeep)
        return upkeep

    def _record(self, u: Upkeep) -> None:
        previous = self.state.get("maintenance", {}) or {}
        now = time.time()
        self.state.set(maintenance={
            "checked_at": now, "compactions": int(previous.get("compactions", 0)) + int(u.compacted),
            "compacted_at": now if u.compacted else previous.get("compacted_at"),
            "loose_objects": u.after.loose, "packs": u.after.packs, "objects": u.after.objects,
            "mirror_kib": u.after.loose_kib + u.after.pack_kib})
        if u.compacted:
            log.info("mirror compacted (%s) in %.1f s: %d loose object(s) -> %d, %d pack(s), %d KiB", u.work,
                     u.seconds, u.before.loose, u.after.loose, u.after.packs, u.after.loose_kib + u.after.pack_kib)
        else:
            log.debug("mirror checked: %d loose object(s), %d pack(s); nothing to do", u.after.loose, u.after.packs)


def describe_state(state: State) -> str:
    """The heartbeat's counts: what is applied, what waits, how big the mirror is."""
    from gitsync.outbox import Outbox

    applied = str(state.get("applied_commit") or "nothing")[:12]
    summary = Outbox(state).summary()
    upkeep = state.get("maintenance") or {}
    text = (f"applied {applied}, last result {state.get('last_result')}, {state.owned_count()} file(s) owned, "
            f"outbox {summary['outbox_length']}")
    if upkeep:
        text += f", mirror {upkeep.get('objects', 0)} objects ({upkeep.get('loose_objects', 0)} loose)"
    if state.get("consecutive_failures", 0):
        text += f", failing {state.get('consecutive_failures')} cycle(s) in a row: {state.get('last_message', '')}"
    return text
