"""A test seam for the fault-injection suite (tests/faults/), inert unless asked for.

`GITSYNC_FAULT_POINT=<name>:<n>` makes the process SIGKILL itself the n-th time (1-based) it
reaches the point called <name>, so a test can stop gitsync at an exact place (between a push
and its record, half way through an apply...) without racing a timer. Unset, `reached()` is
one comparison against None. Points are named `<step>.<where>`; `points()` lists the ones this
process has passed, which tests/faults uses to check that every point is exercised.
"""

from __future__ import annotations

import os
import signal

_WANTED = os.environ.get("GITSYNC_FAULT_POINT") or None
_counts: dict[str, int] = {}


def reached(name: str) -> None:
    """Called at each fault point; kills this process if it is the requested point and count."""
    if _WANTED is None:
        return
    _counts[name] = _counts.get(name, 0) + 1
    point, _, nth = _WANTED.partition(":")
    if name == point and _counts[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
