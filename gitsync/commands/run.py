"""`gitsync run`: the sidecar. SIGHUP syncs now; SIGTERM/SIGINT finish the current step and exit."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from types import FrameType
from typing import Any

from gitsync.cli import settings_from


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--listen", dest="listen", metavar="HOST:PORT",
                        help="address for health, status, metrics and webhook (overrides server.listen)")


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    if args.listen is not None:
        from dataclasses import replace

        settings = replace(settings, server_listen=args.listen)
    from gitsync.agent import build_agent  # scheduler, watcher, HTTP server: only this command needs them
    from gitsync.replica import Replica, needs_shared_state

    # HA with a job directory: the replica opens the shared state only while it leads (replica.py).
    agent: Any = Replica(settings) if needs_shared_state(settings) else build_agent(settings)
    stopping = threading.Event()

    def on_stop(signum: int, _frame: FrameType | None) -> None:
        stopping.set()

    def on_hup(signum: int, _frame: FrameType | None) -> None:
        agent.request_sync("SIGHUP")

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_hup)
    agent.start()
    while not stopping.wait(1.0):
        pass
    # A step that outlives the grace period is abandoned: exit now rather than close files under it.
    if not agent.stop(settings.sync_shutdown_timeout):
        logging.shutdown()
        os._exit(0)
    return 0
