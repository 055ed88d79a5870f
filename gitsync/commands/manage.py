"""`gitsync outbox` and `gitsync conflicts`: what waits to reach git, and what went to conflict branches.

Listing only reads the state database. Retrying, dropping and acknowledging change it, so they run
in a session (session.py): beside a running agent they take its turn between two cycles.
"""

from __future__ import annotations

import argparse
import json
import time
from contextlib import AbstractContextManager
from typing import Any

from gitsync.cli import EXIT_ERROR, EXIT_OK, settings_from
from gitsync.commands.session import ApiSession, Session, api_session, build_pushback, session
from gitsync.config import Settings
from gitsync.errors import ConfigError, GitsyncError
from gitsync.outbox import Entry, Outbox
from gitsync.state import State


def add_outbox_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", nargs="?", choices=["list", "retry", "drop"], default="list",
                        help="list (default); retry: push now, without waiting for the backoff; drop: give up on "
                        "a change (it is kept on a conflict branch, git's version returns)")
    parser.add_argument("targets", nargs="*", metavar="FILE", help="the .kit files to retry or drop (retry: all)")
    parser.add_argument("--format", choices=["text", "json"], default="text")
    _add_target_argument(parser)


def add_conflicts_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", nargs="?", choices=["list", "ack"], default="list",
                        help="list (default); ack: acknowledge, so they leave `gitsync status`")
    parser.add_argument("branches", nargs="*", metavar="BRANCH", help="conflict branches to acknowledge")
    parser.add_argument("--all", action="store_true", help="ack: every conflict branch")
    parser.add_argument("--format", choices=["text", "json"], default="text")
    _add_target_argument(parser)


def _add_target_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--target-name", dest="target_of", metavar="NAME", default="",
                        help="with several [[target]] tables: the name of the target whose outbox or conflicts to "
                        "work on (each target keeps its own)")


def _one_target(settings: Settings, args: argparse.Namespace) -> Settings:
    """The settings of the target the command works on: the one named by --target-name, or the only one."""
    targets = {t.target_name: t for t in settings.targets()}
    name = getattr(args, "target_of", "")
    if name:
        if name not in targets:
            raise ConfigError(f"no target named {name!r}; the configuration has: {', '.join(targets)}")
        return targets[name]
    if len(targets) > 1:
        raise ConfigError(f"the configuration has {len(targets)} targets ({', '.join(targets)}), each with its own "
                          "outbox and conflicts: name one with --target-name NAME")
    return settings


# -- outbox ---------------------------------------------------------------------------------------
def run_outbox(args: argparse.Namespace) -> int:
    settings = _one_target(settings_from(args), args)
    if args.action == "list":
        state = _open(settings)
        try:
            entries = Outbox(state).entries()
        finally:
            state.close()
        print(json.dumps([_entry_json(e) for e in entries], indent=2) if args.format == "json"
              else _render_entries(entries))
        return EXIT_OK
    if settings.repo_ref:
        raise ConfigError(f"repo.ref pins the directory at {settings.repo_ref}: local changes wait in the outbox "
                          "until the pin is removed")
    with _session(settings) as work:
        outbox = Outbox(work.syncer.state)
        chosen = _choose(outbox.entries(), args.targets, required=args.action == "drop")
        pushback = build_pushback(settings, work.syncer)
        if args.action == "drop":
            before = len(work.syncer.state.get("conflicts", []))
            pushback.drop(chosen)
            kept = work.syncer.state.get("conflicts", [])[before:]
            work.syncer.sync()
            where = ", ".join(c["branch"] for c in kept) or "nowhere: it matched git already"
            place = "the jobs service" if settings.target_kind == "jobs-api" else "the directory"
            print(f"dropped {len(chosen)} local change(s) ({', '.join(e.target for e in chosen)}); kept on {where}; "
                  f"{place} has git's version again")
            return EXIT_OK
        outbox.mark([e.target for e in chosen if e.status == "blocked"], "queued")  # checked again
        work.syncer.state.set(push_failures=0, push_next_attempt=0)
        pushback.flush()
        work.syncer.sync()
        left = [e for e in outbox.entries() if e.target in {c.target for c in chosen}]
        error = work.syncer.state.get("push_last_error", "")
    if not left:
        print(f"pushed {len(chosen)} local change(s); the outbox has {len(outbox_entries(settings))} left")
        return EXIT_OK
    reasons = "; ".join(f"{e.target}: {e.error or e.status}" for e in left[:5])
    print(f"{len(left)} of {len(chosen)} change(s) still waiting: {error or reasons}")
    return EXIT_ERROR


def _session(settings: Settings) -> AbstractContextManager[Session | ApiSession]:
    """The turn on the state directory, with the syncer of the configured target kind."""
    return api_session(settings) if settings.target_kind == "jobs-api" else session(settings)


def outbox_entries(settings: Settings) -> list[Entry]:
    state = _open(settings)
    try:
        return Outbox(state).entries()
    finally:
        state.close()


def _choose(entries: list[Entry], targets: list[str], *, required: bool) -> list[Entry]:
    if required and not targets:
        raise ConfigError("name the file(s) to drop, e.g. `gitsync outbox drop hello-world.kit`")
    by_target = {e.target: e for e in entries}
    unknown = [t for t in targets if t not in by_target]
    if unknown:
        waiting = ", ".join(by_target) or "none"
        raise ConfigError(f"not in the outbox: {', '.join(unknown)} (waiting: {waiting})")
    return [by_target[t] for t in targets] if targets else entries


def _entry_json(e: Entry) -> dict[str, Any]:
    return {"target": e.target, "status": e.status, "origin": e.origin, "repo_path": e.repo_path,
            "created": e.created, "age_s": round(time.time() - e.created, 1), "deleted": e.local_blob is None,
            "pull_request": e.pr_number, "error": e.error}


def _render_entries(entries: list[Entry]) -> str:
    if not entries:
        return "the outbox is empty: every local change is in git"
    lines = [f"{'file':<32} {'status':<8} {'age':>8}  origin"]
    for e in entries:
        age = int(time.time() - e.created)
        line = f"{e.target:<32} {e.status:<8} {age // 60:>5}m{age % 60:02d}s  {e.origin}"
        if e.pr_number:
            line += f" (pull request #{e.pr_number})"
        if e.error:
            line += f": {e.error}"
        lines.append(line)
    return "\n".join(lines)


# -- conflicts ------------------------------------------------------------------------------------
def run_conflicts(args: argparse.Namespace) -> int:
    settings = _one_target(settings_from(args), args)
    if args.action == "list":
        state = _open(settings)
        try:
            records = list(state.get("conflicts", []))
        finally:
            state.close()
        if args.format == "json":
            print(json.dumps(records, indent=2))
        else:
            print(_render_conflicts(records))
        return EXIT_OK
    if not args.branches and not args.all:
        raise ConfigError("name the conflict branch(es) to acknowledge, or give --all")
    with _session(settings) as work:
        records = list(work.syncer.state.get("conflicts", []))
        known = {c["branch"] for c in records}
        unknown = [b for b in args.branches if b not in known]
        if unknown:
            raise ConfigError(f"no such conflict branch: {', '.join(unknown)} (`gitsync conflicts` lists them)")
        chosen = known if args.all else set(args.branches)
        acked = [{**c, "acknowledged": True} if c["branch"] in chosen else c for c in records]
        work.syncer.state.set(conflicts=acked)
    print(f"acknowledged {len(chosen)} conflict branch(es); they no longer show in `gitsync status` (the branches "
          "stay on the remote until someone merges or deletes them)")
    return EXIT_OK


def _render_conflicts(records: list[dict[str, Any]]) -> str:
    if not records:
        return "no conflict branches"
    lines = []
    for c in records:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(c.get("at", 0)))
        mark = "acknowledged" if c.get("acknowledged") else "open"
        lines.append(f"{stamp}  {mark:<12} {c['branch']}  ({', '.join(c.get('jobs', []))})")
    return "\n".join(lines)


def _open(settings: Settings) -> State:
    """The target's state database, read without the lock (a named target's own, or the single-target one it
    takes over at its next sync)."""
    from gitsync.target_set import reading_state_dir

    place = reading_state_dir(settings)
    if place is None:
        raise GitsyncError(f"no gitsync state for target {settings.target_name!r} in {settings.state_path}: check "
                           "--state-dir (or state.dir), or run `gitsync sync --once` first")
    return State(place)
