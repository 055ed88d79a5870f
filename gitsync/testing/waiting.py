"""Waiting for something to become true, for tests and benchmarks: poll with a deadline, never sleep blind."""

from __future__ import annotations

import subprocess
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


def stop_process(process: subprocess.Popen[Any], grace: float = 10.0) -> None:
    """Ask a child to stop (SIGTERM), and kill it if it has not within `grace` seconds: a test's servers must
    never outlive it, and a SIGKILL cannot be ignored, so the last wait always returns."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
