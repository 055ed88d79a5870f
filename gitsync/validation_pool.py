"""Checking many definition files at once over all cores, for a first sync or changed rules.

The workers are *spawned* (a fresh interpreter each), never forked from gitsync: a forked worker
inherits every descriptor of a threaded process, the state lock among them, and after a SIGKILL of
the sync it would live on holding that lock, so every later sync failed with "in use by gitsync
pid N". Each worker also asks Linux to kill it when its parent dies, so a killed sync leaves no
helper behind. This module imports only what a worker needs.
"""

from __future__ import annotations

import contextlib
import os
from concurrent.futures import ProcessPoolExecutor

from gitsync.kit import KitReport, check_kit, use_compiled_parser

#: One job: (blob id, content, strict, max size). Problems come back without a path (the cache is per blob).
Job = tuple[str, bytes, bool, int]


def workers() -> int:
    return min(os.cpu_count() or 2, 8)


def start() -> ProcessPoolExecutor:
    import multiprocessing

    return ProcessPoolExecutor(workers(), mp_context=multiprocessing.get_context("spawn"),
                               initializer=_start_worker, initargs=(os.getpid(),))


def check_one(job: Job) -> KitReport:
    _blob, data, strict, max_size = job
    return check_kit(data, "", strict=strict, max_size=max_size)


def check_all(pool: ProcessPoolExecutor, jobs: list[Job]) -> list[KitReport]:
    return list(pool.map(check_one, jobs, chunksize=max(1, len(jobs) // (workers() * 4))))


def _die_with_parent(parent: int) -> None:
    """PR_SET_PDEATHSIG: SIGKILL this worker when the sync that started it dies, however it dies."""
    import ctypes
    import signal

    with contextlib.suppress(OSError, AttributeError):  # not Linux: it ends when its queue breaks instead
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)
    if os.getppid() != parent:  # the sync died while this worker was starting, before the line above
        os._exit(1)


def _start_worker(parent: int) -> None:
    _die_with_parent(parent)
    use_compiled_parser()  # a worker checks thousands of files
