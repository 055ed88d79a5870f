"""`gitsync status` and `gitsync history`: read the state database, touch nothing else.

Neither takes the state directory lock nor the agent's turn, so both answer at once while
`gitsync run` works (SQLite's write-ahead log lets readers see the last committed state).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from gitsync.cli import settings_from
from gitsync.config import Settings
from gitsync.errors import GitsyncError
from gitsync.model import HistoryRow
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
    if settings.several_targets:
        report = _targets_report(settings)
    else:
        state = _open(settings)
        try:
            report = status_report(settings, state)
        finally:
            state.close()
    print(json.dumps(report, indent=2) if args.format == "json" else render_text(report))
    return 0 if report["last_result"] in ("synced", "noop", None) and not report.get("failing_targets") else 1


def _targets_report(settings: Settings) -> dict[str, Any]:
    """Every target's report; a target with no state yet shows as never synced (read from an empty database)."""
    import tempfile
    from pathlib import Path

    from gitsync.report import targets_report
    from gitsync.target_set import reading_state_dir

    places = {t.target_name: reading_state_dir(t) for t in settings.targets()}
    if not any(places.values()):
        raise GitsyncError(f"no gitsync state in {settings.state_path}: check --state-dir (or state.dir), or run "
                           "`gitsync sync --once` first")
    opened: list[tuple[Settings, State]] = []
    with tempfile.TemporaryDirectory(prefix="gitsync-status-") as empty:
        try:
            for target in settings.targets():
                where = places[target.target_name] or Path(empty) / target.target_name
                opened.append((target, State(where)))
            return targets_report(settings, opened)
        finally:
            for _, state in opened:
                state.close()


def run_history(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    rows: list[tuple[str, HistoryRow]] = []
    if settings.several_targets:  # every target's rows, newest first, each with its target's name
        from gitsync.target_set import reading_state_dir

        places = [(t.target_name, reading_state_dir(t)) for t in settings.targets()]
        if not any(where for _, where in places):
            _open(settings).close()  # says there is no state, and where it looked
        for name, where in places:
            if where is not None:
                state = State(where)
                try:
                    rows += [(name, row) for row in state.history(args.limit)]
                finally:
                    state.close()
        rows = sorted(rows, key=lambda r: -r[1].started)[:args.limit]
    else:
        state = _open(settings)
        try:
            rows = [(settings.target_name, row) for row in state.history(args.limit)]
        finally:
            state.close()
    if args.format == "json":
        print(json.dumps([{**row.__dict__, "target": name} for name, row in rows], indent=2))
        return 0
    for name, row in rows:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row.started))
        span = f"{(row.from_commit or 'empty')[:12]}..{(row.to_commit or '?')[:12]}"
        column = f"{name:<12} " if settings.several_targets else ""
        again = ""
        if row.repeats > 1 and row.last_seen:
            last = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row.last_seen))
            again = f"  seen {row.repeats} times, last {last}"
        print(f"{stamp}  {column}{row.result:<8} {span:<26} +{row.written} -{row.removed}  {row.duration:.2f}s{again}  "
              f"{row.message}")
    return 0
