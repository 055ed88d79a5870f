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

import toml

from gitsync.outbox import Outbox
from gitsync.state import State
from gitsync.target_dir import DirectoryTarget, blob_id

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
            names: set[str] | None = None) -> list[str]:
    """Record every settled local change; returns the targets captured. `names`: only these files (and the
    outbox's) may have changed, as the watcher saw; None looks at every file."""
    if not target.directory.is_dir():
        log.warning("job directory %s does not exist; not looking for local changes", target.directory)
        return []
    pending = {e.target: e for e in outbox.entries()}
    baseline = outbox.baseline()
    if names is None or baseline is None:
        owned = state.manifest()
        seen = target.scan(owned)
        total = len(owned)
    else:
        owned = state.owned(names | set(pending))
        seen = target.scan_names(names | set(pending), owned)
        total = -1  # counted only if needed
    if baseline is None:
        baseline = {t: s.blob for t, s in seen.items() if t not in owned and t not in pending}
        outbox.take_baseline(baseline)
        if baseline:
            log.info("%d .kit file(s) already in %s are not gitsync's; they are never pushed or touched: %s",
                     len(baseline), target.directory, ", ".join(sorted(baseline)[:10]))
    captured: list[str] = []
    unreadable: list[str] = []
    vanished = [t for t in owned if t not in seen and t not in pending]
    if len(vanished) > 1 and total < 0:
        total = state.owned_count()
    if len(vanished) > 1 and len(vanished) > max_delete_share * total:
        log.error("%d of %d managed files vanished from %s at once; not pushing that as deletions (an unmounted "
                  "volume?). Delete them in git if it was intended", len(vanished), total, target.directory)
        owned = {t: o for t, o in owned.items() if t not in vanished}
    for name in sorted(set(owned) | set(seen) | set(pending)):
        entry, mine, have = pending.get(name), owned.get(name), seen.get(name)
        current = have.blob if have else None
        if entry is not None:
            reference: str | None = entry.local_blob
        elif mine is not None:
            reference = mine.blob
        elif name in baseline or current is None:
            continue  # an operator's own file, or nothing there
        else:
            reference = None
        if current == reference:
            continue
        content = target.read(name) if current else None
        if content is not None and not settled(content):
            log.debug("%s is being written or cannot be parsed; looking again later", name)
            unreadable.append(name)
            continue
        outbox.put(name, repo_path=mine.repo_path if mine else None, base_blob=mine.base if mine else None,
                   local_blob=blob_id(content) if content is not None else None, content=content,
                   origin=origin_of(content))
        captured.append(name)
    _remember_unreadable(state, unreadable)
    if captured:
        log.info("captured local change(s) to %s", ", ".join(captured))
    return captured


def _remember_unreadable(state: State, names: list[str]) -> None:
    """Files that did not parse at this look. Most are a save in progress and gone by the next cycle; one
    that stays (Farm's own toml.dump can write "C:\\x..." it cannot read back) shows in `gitsync status`."""
    before: dict[str, float] = state.get("unreadable_local", {})
    now = time.time()
    after = {name: before.get(name, now) for name in names}
    if after != before:
        state.set(unreadable_local=after)
