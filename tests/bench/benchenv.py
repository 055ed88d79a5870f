"""What every benchmark sets up first: a process environment no user or system git config leaks into."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def isolate_environment(home: Path) -> None:
    """No user or system git config and no GITSYNC_* settings, for this process and every child."""
    for key in [k for k in os.environ if k.startswith(("GIT_", "GITSYNC_"))]:
        del os.environ[key]
    home.mkdir(parents=True, exist_ok=True)
    (home / ".gitconfig").write_text("[user]\n\tname = Bench\n\temail = bench@example.com\n"
                                     "[init]\n\tdefaultBranch = main\n[protocol \"file\"]\n\tallow = always\n")
    os.environ.update(HOME=str(home), GIT_CONFIG_NOSYSTEM="1")
    os.environ.pop("XDG_CONFIG_HOME", None)


class BenchError(Exception):
    """The benchmark itself could not run (not a missed target)."""


def wait_for(condition: Callable[[], Any], timeout: float, what: str, poll: float) -> Any:
    """Poll `condition` every `poll` s until it is truthy (and return it); BenchError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(poll)
