"""`gitsync sync --once` (the CronJob mode) and `gitsync plan` (the dry run)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from gitsync.cli import EXIT_CHANGES_PENDING, EXIT_DRIFT, EXIT_ERROR, EXIT_HELD, EXIT_OK, EXIT_REFUSED, settings_from
from gitsync.commands.session import session
from gitsync.pinning import fetch_target
from gitsync.state import State, problems_json
from gitsync.sync import Prepared, SyncResult

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
    parser.add_argument("--format", choices=["text", "json"], default="text")


def run_sync(args: argparse.Namespace) -> int:
    from gitsync.progress import Progress

    settings = settings_from(args)
    if settings.several_targets:
        return _sync_targets(settings, args)
    if settings.target_kind == "jobs-api":
        from gitsync.api_sync import ApiSyncer

        api = ApiSyncer.from_settings(settings)
        try:
            with Progress():
                result = api.sync(force=args.force, allow_mass_delete=args.allow_mass_delete)
            _post_status(settings, api.state, result)
        finally:
            api.close()
    else:
        with session(settings, exclusive=True) as work:
            with Progress():
                result = work.syncer.sync(force=args.force, allow_mass_delete=args.allow_mass_delete)
            _post_status(settings, work.syncer.state, result)
    for problem in result.problems:
        print(problem.format(), file=sys.stderr)
    code = sync_exit_code(result)
    if code != EXIT_OK:
        print(f"gitsync: error: {sync_outcome(result)}", file=sys.stderr)  # the CLI's one-line shape
    return code


def _sync_targets(settings: Settings, args: argparse.Namespace) -> int:
    """Several targets: one fetch, then each target's recover, pull and record; one failing never stops the
    others. Each target's outcome is one line; the exit code is the worst across targets."""
    from gitsync.commands.session import all_targets
    from gitsync.progress import Progress
    from gitsync.target_set import SharedFetch

    results: list[tuple[str, SyncResult]] = []
    with all_targets(settings, exclusive=True) as (syncers, _):
        fetch = SharedFetch(syncers[0].mirror, settings.repo_ref)
        for target, syncer in zip(settings.targets(), syncers, strict=True):
            with Progress():
                result = syncer.sync(force=args.force, allow_mass_delete=args.allow_mass_delete, fetch=fetch)
            _post_status(target, syncer.state, result)
            results.append((target.target_name, result))
    codes = []
    for name, result in results:
        for problem in result.problems:
            print(f"[{name}] {problem.format()}", file=sys.stderr)
        code = sync_exit_code(result)
        codes.append(code)
        if code != EXIT_OK:
            print(f"gitsync: error: target {name}: {sync_outcome(result)}", file=sys.stderr)
        else:
            print(f"target {name}: {result.result} at {(result.applied or '')[:12]}", file=sys.stderr)
    return worst_exit_code(codes)


#: Exit codes from the least to the most serious, for the worst of several targets.
_SEVERITY = (EXIT_OK, EXIT_CHANGES_PENDING, EXIT_DRIFT, EXIT_HELD, EXIT_REFUSED, EXIT_ERROR)


def worst_exit_code(codes: list[int]) -> int:
    """Pure: the most serious of several targets' exit codes (error > refused > held > drift > pending > ok)."""
    return max(codes, key=_SEVERITY.index, default=EXIT_OK)


def _post_status(settings: Settings, state: State, result: SyncResult) -> None:
    """The CronJob reports to the pull request too (sync.commit_status)."""
    if not settings.sync_commit_status:
        return
    from gitsync.commit_status import make_poster

    poster = make_poster(settings, state)
    if poster is not None:
        poster.after_sync(result)


def sync_exit_code(result: SyncResult) -> int:
    """Pure: 0 only when the directory holds the applied commit's definitions (the README's table)."""
    if result.result == "error":
        return EXIT_ERROR
    if result.result in ("invalid", "refused"):
        return EXIT_REFUSED
    if result.result == "partial" or any(f.kind in ("held", "foreign") for f in result.findings):
        return EXIT_HELD
    if any(f.kind in ("drift", "pending") for f in result.findings):
        return EXIT_DRIFT
    return EXIT_OK


def sync_outcome(result: SyncResult) -> str:
    """The one line that goes with a non-zero exit."""
    if result.result in ("error", "invalid", "refused"):
        return result.message
    left = [f"{f.target} ({f.kind})" for f in result.findings if f.kind in ("held", "foreign")]
    if left:
        return f"applied {(result.head or '')[:12]} except {len(left)} file(s) left as they are: {', '.join(left)}"
    drift = [f.target for f in result.findings if f.kind in ("drift", "pending")]
    return (f"applied {(result.head or '')[:12]}, but {len(drift)} file(s) changed locally were left in place: "
            f"{', '.join(drift[:10])}; `gitsync sync --once --force` restores git's version")


def run_plan(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    if settings.several_targets:
        return _plan_targets(settings, args)
    if settings.target_kind == "jobs-api":
        return _run_api_plan(settings, args)
    with session(settings) as work:  # beside a running agent: in its turn, between two cycles
        head = fetch_target(work.syncer.mirror, settings.repo_ref)
        prepared = work.syncer.prepare(head, force=args.force, allow_mass_delete=args.allow_mass_delete)
    if args.format == "json":
        print(json.dumps(plan_json(prepared, settings.sync_on_invalid), indent=2))
    else:
        print(render_plan(prepared, settings.sync_on_invalid))
    return plan_exit_code(prepared, settings.sync_on_invalid)


def plan_exit_code(p: Prepared, on_invalid: str) -> int:
    if p.refusal or (p.invalid and on_invalid == "refuse"):
        return EXIT_REFUSED
    return EXIT_CHANGES_PENDING if p.plan.changes_target else EXIT_OK


def plan_json(p: Prepared, on_invalid: str) -> dict[str, Any]:
    refused = (f"{len(p.invalid)} invalid file(s)" if p.invalid and on_invalid == "refuse" else p.refusal)
    return {"applied": p.applied, "head": p.head, "changed_in_git": len(p.changed),
            "actions": [{"kind": a.kind, "target": a.target, "repo_path": a.repo_path, "reason": a.reason}
                        for a in p.plan.actions if a.kind != "forget"],
            "findings": [dict(f.__dict__) for f in p.plan.findings],
            "problems": problems_json(p.problems), "refused": refused or None,
            "changes": p.plan.changes_target}


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


def _plan_targets(settings: Settings, args: argparse.Namespace) -> int:
    """Several targets: one fetch, each target's plan under its name; a target whose plan fails (its jobs
    service down) says so and the others are still shown. The exit code is the worst across targets."""
    from gitsync.api_sync import ApiSyncer
    from gitsync.commands.session import all_targets
    from gitsync.errors import GitsyncError

    texts: list[str] = []
    found: dict[str, Any] = {}
    codes: list[int] = []
    with all_targets(settings) as (syncers, _):  # beside a running agent: in its turn, between two cycles
        head = fetch_target(syncers[0].mirror, settings.repo_ref)
        for target, syncer in zip(settings.targets(), syncers, strict=True):
            name = target.target_name
            try:
                if isinstance(syncer, ApiSyncer):
                    code, text, found[name] = _api_plan(syncer, target, args, head)
                else:
                    prepared = syncer.prepare(head, force=args.force, allow_mass_delete=args.allow_mass_delete)
                    code, text = plan_exit_code(prepared, target.sync_on_invalid), \
                        render_plan(prepared, target.sync_on_invalid)
                    found[name] = plan_json(prepared, target.sync_on_invalid)
            except GitsyncError as exc:
                code, text = EXIT_ERROR, f"error: {exc}"
                found[name] = {"error": str(exc)}
            codes.append(code)
            texts.append(f"[target {name}] ({target.target_kind})\n" + "\n".join(f"  {line}"
                                                                                  for line in text.splitlines()))
    if args.format == "json":
        print(json.dumps({"head": head, "targets": found}, indent=2))
    else:
        print("\n\n".join(texts))
    return worst_exit_code(codes)


def _run_api_plan(settings: Settings, args: argparse.Namespace) -> int:
    """`gitsync plan` for a jobs service: validate the commit, one `/load`, and the calls a sync would make."""
    from gitsync.api_sync import ApiSyncer

    syncer = ApiSyncer.from_settings(settings)
    try:
        code, text, _ = _api_plan(syncer, settings, args, syncer.mirror.fetch())
    finally:
        syncer.close()
    print(text)
    return code


def _api_plan(syncer: ApiSyncer, settings: Settings, args: argparse.Namespace, head: str) \
        -> tuple[int, str, dict[str, Any]]:
    """A jobs service's plan: exit code, text and JSON (the same shape as a directory's, by job name)."""
    from gitsync.api_plan import mass_remove_refusal

    applied = syncer.state.get("applied_commit")
    found = syncer.definitions(head)
    hold = {n: "its file is invalid" for n in found.invalid_names}
    plan, on_service = syncer.target.plan(found.wanted, hold=hold, force=args.force)
    lines = [f"commit {applied[:12] if applied else 'nothing applied'} -> {head[:12]}: {len(found.wanted)} "
             f"definition(s) for {syncer.target.describe()}, which holds {on_service}"]
    lines += [f"  {a.kind:<7} {a.name:<40} {a.reason}" for a in plan.actions if a.kind != "forget"]
    lines += [f"  {f.kind:<7} {f.target:<40} {f.detail}" for f in plan.findings]
    lines += [f"  {p.format()}" for p in found.problems]
    refusal = mass_remove_refusal(plan, on_service, settings.sync_max_delete_share, args.allow_mass_delete)
    blocked = bool(refusal) or bool(found.invalid and settings.sync_on_invalid == "refuse")
    if found.invalid and settings.sync_on_invalid == "refuse":
        refusal = f"{len(found.invalid)} invalid file(s)"
        lines.append(f"refused: {refusal}; nothing would be saved (sync.on_invalid = refuse)")
    elif refusal:
        lines.append(f"refused: {refusal}")
    elif not plan.changes_target:
        lines.append("no changes to the jobs service")
    data = {"applied": applied, "head": head, "target": syncer.target.describe(), "on_service": on_service,
            "actions": [{"kind": a.kind, "name": a.name, "reason": a.reason} for a in plan.actions
                        if a.kind != "forget"],
            "findings": [dict(f.__dict__) for f in plan.findings], "problems": problems_json(found.problems),
            "refused": refusal or None, "changes": plan.changes_target}
    code = EXIT_REFUSED if blocked else (EXIT_CHANGES_PENDING if plan.changes_target else EXIT_OK)
    return code, "\n".join(lines), data
