"""`gitsync sync --once` (the CronJob mode) and `gitsync plan` (the dry run)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from gitsync.cli import EXIT_CHANGES_PENDING, settings_from
from gitsync.errors import GitsyncError
from gitsync.sync import Prepared, Syncer

if TYPE_CHECKING:
    from gitsync.api_sync import ApiSyncer
    from gitsync.config import Settings


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
    settings = settings_from(args)
    syncer: Syncer | ApiSyncer
    if settings.target_kind == "jobs-api":
        from gitsync.api_sync import ApiSyncer

        syncer = ApiSyncer.from_settings(settings)
    else:
        syncer = Syncer.from_settings(settings)
    from gitsync.progress import Progress

    try:
        with Progress():
            result = syncer.sync(force=args.force, allow_mass_delete=args.allow_mass_delete)
        from gitsync.commit_status import make_poster

        poster = make_poster(settings, syncer.state)
        if poster is not None:  # the CronJob reports to the pull request too
            poster.after_sync(result)
    finally:
        syncer.close()
    for problem in result.problems:
        print(problem.format(), file=sys.stderr)
    if result.result in ("synced", "noop"):
        return 0
    if result.result == "partial":
        left = [f"{f.target} ({f.kind})" for f in result.findings if f.kind in ("held", "foreign")]
        raise GitsyncError(f"applied {result.head and result.head[:12]} except {len(left)} file(s) left as they "
                           f"are: {', '.join(left)}")
    raise GitsyncError(result.message)


def run_plan(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    if settings.target_kind == "jobs-api":
        return _run_api_plan(settings, args)
    syncer = Syncer.from_settings(settings)
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


def _run_api_plan(settings: Settings, args: argparse.Namespace) -> int:
    """`gitsync plan` for a jobs service: validate the commit, one `/load`, and the calls a sync would make."""
    from gitsync.api_plan import mass_remove_refusal
    from gitsync.api_sync import ApiSyncer

    syncer = ApiSyncer.from_settings(settings)
    try:
        head = syncer.mirror.fetch()
        applied = syncer.state.get("applied_commit")
        found = syncer.definitions(head)
        hold = {n: "its file is invalid" for n in found.invalid_names}
        plan, on_service = syncer.target.plan(found.wanted, hold=hold, force=args.force)
    finally:
        syncer.close()
    lines = [f"commit {applied[:12] if applied else 'nothing applied'} -> {head[:12]}: {len(found.wanted)} "
             f"definition(s) for {syncer.target.describe()}, which holds {on_service}"]
    lines += [f"  {a.kind:<7} {a.name:<40} {a.reason}" for a in plan.actions if a.kind != "forget"]
    lines += [f"  {f.kind:<7} {f.target:<40} {f.detail}" for f in plan.findings]
    lines += [f"  {p.format()}" for p in found.problems]
    refusal = mass_remove_refusal(plan, on_service, settings.sync_max_delete_share, args.allow_mass_delete)
    blocked = bool(refusal) or bool(found.invalid and settings.sync_on_invalid == "refuse")
    if found.invalid and settings.sync_on_invalid == "refuse":
        lines.append(f"refused: {len(found.invalid)} invalid file(s); nothing would be saved "
                     "(sync.on_invalid = refuse)")
    elif refusal:
        lines.append(f"refused: {refusal}")
    elif not plan.changes_target:
        lines.append("no changes to the jobs service")
    print("\n".join(lines))
    if blocked:
        return 1
    return EXIT_CHANGES_PENDING if plan.changes_target or head != applied else 0
