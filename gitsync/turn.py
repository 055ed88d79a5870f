"""Taking turns on one state directory: the agent works in cycles, a command slips in between them.

`gitsync run` holds the state directory lock (state.py) for its whole life, so nothing else can
start a second agent on the same mirror. Work on the mirror and the directory is additionally
done *in turns*: the agent holds this lock for each cycle and lets go between cycles, and a
command that must change something while the agent runs (`rollback`, `outbox drop`, `plan`'s
fetch) waits for the agent's cycle to end, does its work, and hands the turn back. Nobody fights
for the state lock, and no two processes ever run git or apply at the same time.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gitsync.errors import GitsyncError

TURN_FILE = "turn"


class TurnTimeout(GitsyncError):
    pass


@contextmanager
def turn(state_dir: Path, timeout: float | None = None) -> Iterator[None]:
    """Hold the turn on `state_dir`; wait for it up to `timeout` seconds (None: as long as it takes)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(state_dir / TURN_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if timeout is None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        else:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise TurnTimeout(f"the agent on {state_dir} did not finish its cycle within {timeout:.0f} s;"
                                          " try again, or look at `gitsync status` for a stuck sync") from None
                    time.sleep(0.05)  # poll the lock; flock has no timed wait
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock, also when the process dies
