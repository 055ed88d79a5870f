"""`gitsync status` and `gitsync history`: read the state database, touch nothing else."""

from __future__ import annotations

import argparse
import json
import time

from gitsync.cli import settings_from
from gitsync.report import render_text, status_report
from gitsync.state import State


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=["text", "json"], default="text")


def add_history_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--limit", type=int, default=20)


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    state = State(settings.state_path)
    try:
        report = status_report(settings, state)
    finally:
        state.close()
    print(json.dumps(report, indent=2) if args.format == "json" else render_text(report))
    return 0 if report["last_result"] in ("synced", "noop", None) else 1


def run_history(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    state = State(settings.state_path)
    try:
        rows = state.history(args.limit)
    finally:
        state.close()
    for row in rows:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row.started))
        span = f"{(row.from_commit or 'empty')[:12]}..{(row.to_commit or '?')[:12]}"
        print(f"{stamp}  {row.result:<8} {span:<26} +{row.written} -{row.removed}  {row.duration:.2f}s  {row.message}")
    return 0
