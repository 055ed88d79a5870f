"""Notice local changes in the target (jobs/save, jobs/remove, hand edits) and put them in the outbox.

Watcher events are only hints; this compares the files with what gitsync last wrote or
acknowledged, so its own writes, editor temp files and duplicate events cost nothing.
Farm saves by truncating and rewriting in place (or delete, create empty, write), so an empty
or unparsable file is "not settled yet": it is skipped now and looked at again later, never
mistaken for a deletion or committed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

import toml

from gitsync import faults
from gitsync.companion import is_companion_target
from gitsync.outbox import Outbox
from gitsync.state import State
from gitsync.target_dir import DirectoryTarget, FileTooLarge, Seen, blob_id

log = logging.getLogger("gitsync.capture")

ORIGIN_SAVE = "jobs/save"
ORIGIN_EDIT = "hand edit"
ORIGIN_DELETE = "jobs/remove or hand delete"


def origin_of(content: bytes | None) -> str:
    """Farm's save re-dumps the whole file with `toml.dumps`; a person's edit is almost never byte-for-byte
    what `toml.dumps` would write for the same data."""
    if content is None:
        return ORIGIN_DELETE
    try:
        text = content.decode("utf-8")
        return ORIGIN_SAVE if toml.dumps(toml.loads(text)) == text else ORIGIN_EDIT
    except (UnicodeDecodeError, toml.TomlDecodeError, IndexError, ValueError, TypeError):
        return ORIGIN_EDIT


def settled(content: bytes) -> bool:
    if not content.strip():
        return False
    try:
        toml.loads(content.decode("utf-8"))
    except (UnicodeDecodeError, toml.TomlDecodeError, IndexError, ValueError, TypeError):
        return False
    return True


def capture(target: DirectoryTarget, state: State, outbox: Outbox, max_delete_share: float = 0.5,
            names: set[str] | None = None, *, settle: float = 0.0,
            sleep: Callable[[float], None] = time.sleep, max_file_size: int = 1024 * 1024) -> list[str]:
    """Record every stable local change; returns the targets captured. `names`: only these files (and the
    outbox's) may have changed, as the watcher saw; None looks at every file.

    A change is captured only if it looks the same at two looks `settle` seconds apart: a cycle can
    start at any instant (timer, webhook, SIGHUP), and one sampled between Farm's delete and its write
    would otherwise commit a deletion. A file that changed between the looks is left for a later cycle.
    A deletion needs more: the file must also have been missing at an earlier cycle (`absent_local` in the
    state; the caller runs a follow-up cycle while it is not empty). A save stalled between Farm's delete
    and its create for longer than `settle` (a loaded machine, a descheduled jobs service) was otherwise
    pushed as a deletion, and every other site deleted the definition until the save came through.
    Content over `max_file_size` is never stored. Files inside companion folders are plain bytes: any content
    (binary, empty) is a change once stable; only the files gitsync wrote there are looked at.
    """
    if not target.directory.is_dir():
        log.warning("job directory %s does not exist; not looking for local changes", target.directory)
        return []
    pending = {e.target: e for e in outbox.entries()}
    baseline = outbox.baseline()
    absent_before: dict[str, float] = state.get("absent_local", {})
    absent: dict[str, float] = {}
    if names is None or baseline is None:
        owned = state.manifest()
        seen = target.scan(owned)
        total = sum(1 for t in owned if not is_companion_target(t))
        looked: set[str] | None = None
    else:
        looked = names | set(pending) | set(absent_before)
        owned = state.owned(looked)
        seen = target.scan_names(looked, owned)
        total = -1  # counted only if needed
    baseline = _foreign_baseline(outbox, baseline, seen, owned, pending, target, looked)
    unreadable: list[str] = []
    vanished = [t for t in owned if t not in seen and t not in pending]
    definitions = sum(1 for t in vanished if not is_companion_target(t))  # the guard counts definitions
    if definitions > 1 and total < 0:
        total = state.owned_count()
    if definitions > 1 and definitions > max_delete_share * total:
        log.error("%d of %d managed files vanished from %s at once; not pushing that as deletions (an unmounted "
                  "volume?). Delete them in git if it was intended", definitions, total, target.directory)
        owned = {t: o for t, o in owned.items() if t not in vanished}
    candidates: dict[str, bytes | None] = {}
    for name in sorted(set(owned) | set(seen) | set(pending)):
        entry, mine, have = pending.get(name), owned.get(name), seen.get(name)
        current = have.blob if have else None
        if entry is not None:
            reference: str | None = entry.local_blob
        elif mine is not None:
            reference = mine.blob
        elif is_companion_target(name):
            continue  # inside a companion folder only the files gitsync wrote are pushed back, never new ones
        elif current is None or baseline.get(name) == current:
            continue  # nothing there, or an operator's own file as it was when gitsync first looked
        else:
            reference = None
        if current == reference:
            continue
        if current is None and name not in absent_before:  # missing for the first time: a save may be under way
            absent[name] = time.time()
            log.debug("%s is missing; a deletion once it is still missing at the next cycle", name)
            continue
        try:
            content = target.read(name) if current else None
            if content is not None and len(content) > max_file_size:
                raise FileTooLarge(name, len(content), max_file_size)
        except FileTooLarge as exc:  # never read whole, never stored in the outbox
            if name not in state.get("unreadable_local", {}):
                log.warning("%s", exc)  # once, not every cycle
            unreadable.append(name)
            continue
        if content is not None and not is_companion_target(name) and not settled(content):
            log.debug("%s is being written or cannot be parsed; looking again later", name)
            unreadable.append(name)
            continue
        candidates[name] = content
    if candidates and settle > 0:
        sleep(settle)
    captured: list[str] = []
    for name, content in candidates.items():
        try:
            again = target.read(name)
        except FileTooLarge:
            again = b""  # it grew past the limit meanwhile: not stable, looked at again next cycle
        if again != content:
            log.debug("%s changed while gitsync looked; captured once it is stable", name)
            if again is None:
                absent[name] = absent_before.get(name, time.time())
            continue
        mine = owned.get(name)
        outbox.put(name, repo_path=mine.repo_path if mine else None, base_blob=mine.base if mine else None,
                   local_blob=blob_id(content) if content is not None else None, content=content,
                   origin=ORIGIN_DELETE if content is None else ORIGIN_EDIT if is_companion_target(name)
                   else origin_of(content))
        faults.reached("capture.put")
        captured.append(name)
    _remember_unreadable(state, unreadable, looked)
    if absent != absent_before:
        state.set(absent_local=absent)
    if captured:
        log.info("captured local change(s) to %s", ", ".join(captured))
    return captured


def _foreign_baseline(outbox: Outbox, baseline: dict[str, str] | None, seen: Mapping[str, Seen],
                      owned: Mapping[str, object], pending: Mapping[str, object], target: DirectoryTarget,
                      looked: set[str] | None) -> dict[str, str]:
    """The operator's own files: taken at the first look, keyed by content and pruned. A file stays foreign only
    while it holds the content it had then; once it is deleted (or saved over through jobs/save) its name is
    free, so a definition later created under that name is pushed like any other. `looked`: the names this
    look covered (None: all), so files not looked at are not taken for deleted."""
    if baseline is None:
        baseline = {t: s.blob for t, s in seen.items() if t not in owned and t not in pending}
        outbox.take_baseline(baseline)
        if baseline:
            log.info("%d .kit file(s) already in %s are not gitsync's; they are never pushed or touched while "
                     "unchanged: %s", len(baseline), target.directory, ", ".join(sorted(baseline)[:10]))
        return baseline
    gone = [t for t, blob in baseline.items() if (looked is None or t in looked)
            and (t not in seen or seen[t].blob != blob)]
    if gone:
        outbox.prune_baseline(gone)
    return {t: blob for t, blob in baseline.items() if t not in gone}


def _remember_unreadable(state: State, names: list[str], looked: set[str] | None) -> None:
    """Files that did not parse at this look. Most are a save in progress and gone by the next cycle; one
    that stays (Farm's own toml.dump can write "C:\\x..." it cannot read back) shows in `gitsync status`.
    `looked`: the names this look covered (None: all); a file it did not look at keeps its entry (a look at
    only what the watcher named since must not forget a file that is still unreadable)."""
    before: dict[str, float] = state.get("unreadable_local", {})
    now = time.time()
    after = {name: since for name, since in before.items() if looked is not None and name not in looked}
    after.update({name: before.get(name, now) for name in names})
    if after != before:
        state.set(unreadable_local=after)

