"""`gitsync status` and `gitsync history`: read the state database, touch nothing else.

Neither takes the state directory lock nor the agent's turn, so both answer at once while
`gitsync run` works (SQLite's write-ahead log lets readers see the last committed state).
"""

from __future__ import annotations

import argparse
import json
import time

from gitsync.cli import settings_from
from gitsync.config import Settings
from gitsync.errors import GitsyncError
from gitsync.report import render_text, status_report
from gitsync.state import State


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=["text", "json"], default="text")


def add_history_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--format", choices=["text", "json"], default="text")


def _open(settings: Settings) -> State:
    if not (settings.state_path / "state.sqlite3").is_file():
        raise GitsyncError(f"no gitsync state in {settings.state_path}: check --state-dir (or state.dir), or run "
                           "`gitsync sync --once` first")
    return State(settings.state_path)


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    state = _open(settings)
    try:
        report = status_report(settings, state)
    finally:
        state.close()
    print(json.dumps(report, indent=2) if args.format == "json" else render_text(report))
    return 0 if report["last_result"] in ("synced", "noop", None) else 1


def run_history(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    state = _open(settings)
    try:
        rows = state.history(args.limit)
    finally:
        state.close()
    if args.format == "json":
        print(json.dumps([dict(row.__dict__) for row in rows], indent=2))
        return 0
    for row in rows:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row.started))
        span = f"{(row.from_commit or 'empty')[:12]}..{(row.to_commit or '?')[:12]}"
        print(f"{stamp}  {row.result:<8} {span:<26} +{row.written} -{row.removed}  {row.duration:.2f}s  {row.message}")
    return 0
