"""What is worth a log line: an agent that runs for weeks writes a few lines an hour when idle.

A cycle that changes nothing logs at DEBUG; so does a good result repeated from the previous
cycle (a file still held). INFO carries changes and results that differ from the previous cycle,
and a heartbeat line once an interval says the agent is alive, with counts, so "no lines" never
has to mean "nothing running". A failing cycle logs its one ERROR line every time.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

log = logging.getLogger("gitsync.agent")


def sync_line_level(result: str, ok: bool, message: str, previous_result: str | None,
                    previous_message: str | None, changed: bool = False) -> int:
    """The level of a cycle's one-line summary; `changed`: the cycle wrote or removed files."""
    if not ok:
        return logging.ERROR  # a failing cycle says so every time: one line each, never silenced
    if result == "synced" or changed:
        return logging.INFO  # something was applied: always worth a line
    if result == "noop" and previous_result in (None, "noop", "synced"):
        return logging.DEBUG
    if (result, message) == (previous_result, previous_message):
        return logging.DEBUG  # the same outcome again (a file still held): said once already
    return logging.INFO


def fresh(current: Iterable[Any], previous: Iterable[Mapping[str, Any]]) -> list[Any]:
    """Findings (held, foreign, drift, pending) not already reported by the previous cycle."""
    seen = {(p.get("kind"), p.get("target"), p.get("detail")) for p in previous}
    return [f for f in current if (f.kind, f.target, f.detail) not in seen]


class Heartbeat:
    """Counts cycles by result and logs them once an interval at INFO."""

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self.counts: Counter[str] = Counter()
        self._since = clock()

    def observe(self, result: str) -> None:
        self.counts[result] += 1

    def beat_if_due(self, describe: Callable[[], str]) -> bool:
        if self.interval <= 0 or self.clock() - self._since < self.interval:
            return False
        minutes = (self.clock() - self._since) / 60
        counted = ", ".join(f"{n} {result}" for result, n in sorted(self.counts.items())) or "none"
        log.info("alive: %d cycle(s) in the last %.0f min (%s); %s", sum(self.counts.values()), minutes, counted,
                 describe())
        self.counts.clear()
        self._since = self.clock()
        return True
