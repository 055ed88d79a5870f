"""``gitsync jobs-service``: run the Farm-compatible stand-in in the foreground until Ctrl-C.

The lead's CLI adds these arguments to its sub-parser and calls ``run``; ``python -m
gitsync.jobs_service`` does the same on its own. Ctrl-C and SIGTERM are a normal stop (exit 0):
the server runs on a background thread and the main thread only waits for a signal, so uvicorn
never installs its own handlers (which would re-raise the signal after shutting down).
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from pathlib import Path
from types import FrameType

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the jobs-service options to ``parser`` (a sub-command parser or a standalone one)."""
    parser.add_argument(
        "--config",
        metavar="FILE",
        type=Path,
        help="a Farm settings file ([settings.nv.svc.farm.jobs], [settings.nv.svc.server.http]); "
        "without it: a directory store with Farm's defaults",
    )
    parser.add_argument("--host", help="address to listen on (default: the config's, 127.0.0.1)")
    parser.add_argument(
        "--port",
        type=int,
        help="port to listen on; 0 picks a free one (default: the config's, 8222)",
    )
    parser.add_argument(
        "--max-body-size",
        type=int,
        metavar="BYTES",
        help="refuse /save and /remove bodies over this size with 413 (default: the config's max_body_size, 1 MiB)",
    )
    parser.add_argument(
        "--save-location",
        metavar="DIR",
        type=Path,
        help="directory store: where /save creates new .kit files (also scanned)",
    )


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM; return 0. Raises ConfigError / JobsServiceStartError.

    Call it from the main thread: only the main thread can install signal handlers.
    """
    from gitsync.jobs_service.config import load_config
    from gitsync.jobs_service.server import RunningJobsService

    config = load_config(args.config)
    if args.save_location is not None and config.uses_redis:
        log.warning("--save-location is ignored: the configured store is Redis")
    config = config.with_overrides(host=args.host, port=args.port, save_location=args.save_location,
                                   max_body_size=args.max_body_size)

    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        log.info("Received %s, stopping the jobs service", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with RunningJobsService(config, access_log=True):
            stop.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
