"""`gitsync sync --once` (the CronJob mode) and `gitsync plan` (the dry run)."""

from __future__ import annotations

import argparse
import sys

from gitsync.cli import EXIT_CHANGES_PENDING, settings_from
from gitsync.errors import GitsyncError
from gitsync.sync import Prepared, Syncer


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--force", action="store_true",
                        help="restore managed files that were changed in the target (drift)")
    parser.add_argument("--allow-mass-delete", action="store_true",
                        help="allow a commit that removes more than sync.max_delete_share of the files")


def add_sync_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--once", action="store_true", help="sync once and exit (the default for this command)")
    _common(parser)


def add_plan_arguments(parser: argparse.ArgumentParser) -> None:
    _common(parser)


def run_sync(args: argparse.Namespace) -> int:
    syncer = Syncer.from_settings(settings_from(args))
    try:
        result = syncer.sync(force=args.force, allow_mass_delete=args.allow_mass_delete)
    finally:
        syncer.close()
    for problem in result.problems:
        print(problem.format(), file=sys.stderr)
    if result.result in ("synced", "noop"):
        return 0
    if result.result == "partial":
        held = [f.target for f in result.findings if f.kind == "held"]
        raise GitsyncError(f"applied {result.head and result.head[:12]} except {len(held)} held file(s): "
                           f"{', '.join(held)}")
    raise GitsyncError(result.message)


def run_plan(args: argparse.Namespace) -> int:
    syncer = Syncer.from_settings(settings_from(args))
    try:
        head = syncer.mirror.fetch()
        prepared = syncer.prepare(head, force=args.force, allow_mass_delete=args.allow_mass_delete)
    finally:
        syncer.close()
    print(render_plan(prepared, syncer.settings.sync_on_invalid))
    blocked = prepared.refusal or (prepared.invalid and syncer.settings.sync_on_invalid == "refuse")
    if blocked:
        return 1
    return EXIT_CHANGES_PENDING if prepared.plan.changes_target or prepared.head != prepared.applied else 0


def render_plan(p: Prepared, on_invalid: str) -> str:
    lines = [f"commit {p.applied[:12] if p.applied else 'nothing applied'} -> {p.head[:12]}: "
             f"{len(p.changed)} definition file(s) changed in git"]
    for action in p.plan.actions:
        if action.kind != "forget":
            lines.append(f"  {action.kind:<7} {action.target:<40} {action.reason}")
    for finding in p.plan.findings:
        lines.append(f"  {finding.kind:<7} {finding.target:<40} {finding.detail}")
    for problem in p.problems:
        lines.append(f"  {problem.format()}")
    if p.invalid and on_invalid == "refuse":
        lines.append(f"refused: {len(p.invalid)} invalid file(s); nothing would be applied (sync.on_invalid = refuse)")
    elif p.refusal:
        lines.append(f"refused: {p.refusal}")
    elif not p.plan.changes_target:
        lines.append("no changes to the target")
    return "\n".join(lines)
