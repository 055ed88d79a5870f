"""Notice what others changed on a jobs service (`/save`, `/remove`) and put it in the outbox.

A jobs service sends no events, so push-back polls `/load` (every `target.poll_interval` seconds)
and compares each definition, after Farm's defaults (`api_plan.normalise`), with a reference:

- a definition waiting in the outbox: the version stored there;
- one gitsync saved: what it saved (the applied record), so its own saves never come back as
  changes, and neither do the fields Farm fills in on `/load` (`job_spec_path`, defaults);
- any other: the *baseline*, what the service held the first time gitsync looked. Those are the
  operator's (foreign) and are never pushed while they keep that content; a definition created
  later, or a foreign one saved over or removed, is an ordinary change, as for a directory target.

A change must look the same at two `/load`s `push.debounce` seconds apart before it is captured
(Farm's directory store rewrites a file in place, so one `/load` can miss a definition being
saved), and it is stored in the outbox (SQLite) before anything else happens. If most of the
definitions gitsync saved vanish at once (a flushed Redis, a rescan that failed), that is not
pushed as deletions.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gitsync import faults
from gitsync.api_plan import Applied, fingerprint, normalise
from gitsync.api_store import Record
from gitsync.jobs_api import JobsApiClient
from gitsync.outbox import Outbox

log = logging.getLogger("gitsync.capture")

ORIGIN_SAVE = "jobs/save"
ORIGIN_REMOVE = "jobs/remove"


@dataclass(frozen=True)
class GitVersion:
    """Where a definition lives in git and the blob a change to it is made against."""

    repo_path: str
    blob: str | None  # None: a definition git has not seen (a new file)
    fingerprint: str | None  # the definition's fingerprint in that blob (None: not defined there)
    in_git: frozenset[str] = frozenset()  # its fingerprints at the applied commit and the fetched head


#: `(name, what gitsync recorded for it or None)` -> its git version, or None when it has none.
GitLookup = Callable[[str, Applied | None], GitVersion | None]


def changed(current: Mapping[str, str], recorded: Mapping[str, Applied], pending: Mapping[str, str | None],
            baseline: Mapping[str, str]) -> dict[str, str | None]:
    """Pure: the names whose fingerprint on the service (None: gone) differs from their reference."""
    found: dict[str, str | None] = {}
    for name in sorted(set(current) | set(recorded) | set(pending)):
        have = current.get(name)
        if name in pending:
            reference = pending[name]
        elif name in recorded:
            reference = recorded[name].fingerprint
        elif have is None or baseline.get(name) == have:
            continue  # nothing there, or the operator's own definition as it was at the first look
        else:
            reference = None
        if have != reference:
            found[name] = have
    return found


def mass_vanish(found: Mapping[str, str | None], recorded: Mapping[str, Applied], pending: Mapping[str, object],
                max_share: float) -> list[str]:
    """Pure: the gitsync-saved names that vanished, when so many vanished at once that it is not a person's
    `/remove` but a store that lost its data; [] when the removals look deliberate."""
    vanished = [n for n, fp in found.items() if fp is None and n in recorded and n not in pending]
    if len(vanished) > 1 and len(vanished) > max_share * len(recorded):
        return vanished
    return []


def poll(client: JobsApiClient, record: Record, outbox: Outbox, git: GitLookup, *, max_delete_share: float = 0.5,
         settle: float = 0.0, sleep: Callable[[float], None] = time.sleep) -> list[str]:
    """One look at the service; stable changes go to the outbox. Returns the names captured."""
    loaded = _definitions(client.load())
    current = {name: fingerprint(d) for name, d in loaded.items()}
    recorded = record.applied()
    pending = {e.target: e.local_blob for e in outbox.entries()}
    baseline = _baseline(record, current, recorded, pending)
    found = changed(current, recorded, pending, baseline)
    lost = mass_vanish(found, recorded, pending, max_delete_share)
    if lost:
        log.error("%d of %d definitions gitsync saved vanished from the jobs service %s at once; not pushing that "
                  "as deletions (a store that lost its data?). Delete them in git if it was intended", len(lost),
                  len(recorded), client.shown_url)
        found = {n: fp for n, fp in found.items() if n not in lost}
    if found and settle > 0:
        sleep(settle)
        again = {name: fingerprint(d) for name, d in _definitions(client.load()).items()}
        moving = [n for n, fp in found.items() if again.get(n) != fp]
        for name in moving:
            log.debug("%s changed on the jobs service while gitsync looked; captured once it is stable", name)
        found = {n: fp for n, fp in found.items() if n not in moving}
    captured: list[str] = []
    for name, fp in found.items():
        version = git(name, recorded.get(name))
        if name not in pending and version is not None and fp in version.in_git:
            continue  # what git already has (a save of gitsync's own that a crash kept from the record): no change
        if version is None:  # only a definition gitsync saved has no placeable git version; keep it anyway
            mine = recorded.get(name)
            version = GitVersion(mine.repo_path if mine else "", None, None)
        content = None if fp is None else json.dumps(loaded[name], sort_keys=True, ensure_ascii=False).encode()
        outbox.put(name, repo_path=version.repo_path or None, base_blob=version.blob, local_blob=fp,
                   content=content, origin=ORIGIN_REMOVE if fp is None else ORIGIN_SAVE)
        faults.reached("capture.put")
        captured.append(name)
    if captured:
        log.info("captured change(s) made on the jobs service to %s", ", ".join(captured))
    return captured


def definition_of(content: bytes | None) -> dict[str, Any] | None:
    """An outbox entry's definition (as `poll` stored it), None for a removal."""
    if content is None:
        return None
    data = json.loads(content.decode("utf-8"))
    return data if isinstance(data, dict) else None


def _definitions(loaded: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    return {name: normalise(name, definition) for name, definition in loaded.items()}


def _baseline(record: Record, current: Mapping[str, str], recorded: Mapping[str, Applied],
              pending: Mapping[str, object]) -> dict[str, str]:
    """The operator's own definitions, taken at the first look (kept with the applied record, so HA replicas
    share it) and pruned: a name stays foreign only while it holds the content it had then."""
    baseline = record.baseline()
    if baseline is None:
        baseline = {n: fp for n, fp in current.items() if n not in recorded and n not in pending}
        record.take_baseline(baseline)
        if baseline:
            log.info("%d definition(s) already on the jobs service are not gitsync's; they are never pushed while "
                     "unchanged: %s", len(baseline), ", ".join(sorted(baseline)[:10]))
        return baseline
    gone = [n for n, fp in baseline.items() if current.get(n) != fp]
    if gone:
        record.prune_baseline(gone)
    return {n: fp for n, fp in baseline.items() if n not in gone}
