"""Error boundaries for the steps of one cycle (recover, capture, flush, pull).

A step that fails is recorded and the cycle goes on with the next step: a push-back problem
never stops definitions arriving from git. An expected failure (a `GitsyncError` or an
`OSError` from the disk) is one line; anything else is a bug, logged with its traceback the
first time it happens and as one line in the cycle's summary after that.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from gitsync.errors import GitsyncError

log = logging.getLogger("gitsync.cycle")

STEPS = ("recover", "capture", "flush", "pull", "record")


@dataclass(frozen=True)
class StepFailure:
    step: str
    message: str
    bug: bool = False  # not an error gitsync raises on purpose

    def format(self) -> str:
        return f"{self.step} failed: {self.message}"


@dataclass
class Steps:
    """Runs each step in its own boundary. `seen` holds the failures whose traceback was already logged, so
    a step that keeps failing the same way logs its traceback once, not every cycle."""

    seen: set[str] = field(default_factory=set)
    failures: list[StepFailure] = field(default_factory=list)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        try:
            yield
        except GitsyncError as exc:
            self.failures.append(StepFailure(name, str(exc)))
        except OSError as exc:
            where = f" ({exc.filename})" if exc.filename else ""
            self.failures.append(StepFailure(name, f"{exc.strerror or exc}{where}"))
        except Exception as exc:  # a bug: record it, keep the agent and the other steps running
            signature = f"{name}:{type(exc).__name__}:{exc}"
            if signature not in self.seen:
                self.seen.add(signature)
                log.exception("%s step crashed (a bug in gitsync; reported once, then summarised each cycle)",
                              name)
            self.failures.append(StepFailure(name, f"{type(exc).__name__}: {exc} (a bug in gitsync)", bug=True))
        else:
            self.seen = {s for s in self.seen if not s.startswith(name + ":")}  # log it again if it comes back
