"""Waiting for something to become true, for tests and benchmarks: poll with a deadline, never sleep blind."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def wait_until(condition: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """The first truthy value of `condition()`; AssertionError (a test failure) after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(delay)  # poll interval, backing off; not a wait for the event itself
        delay = min(delay * 2, 0.05)
