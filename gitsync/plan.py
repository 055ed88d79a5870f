"""Decide what to do to the target, given what git wants, what gitsync owns and what is there.

Pure and deterministic: the same inputs always give the same, sorted plan, which is what
`gitsync plan` prints. Files are compared by git blob id, so "unchanged" is exact.

The one rule that keeps operators' work safe: a file is only written or deleted when its
current content is exactly what gitsync last wrote (or is already what git wants). Anything
else is drift or a foreign file, reported and left alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from gitsync.model import Owned

ActionKind = Literal["write", "delete", "adopt", "forget"]
FindingKind = Literal["drift", "foreign", "held", "pending"]


@dataclass(frozen=True, slots=True)
class Desired:
    """A file the applied commit wants in the target."""

    repo_path: str
    blob: str
    names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Action:
    kind: ActionKind
    target: str
    repo_path: str
    blob: str | None
    reason: str


@dataclass(frozen=True)
class Finding:
    """Something the plan will not touch and an operator should know about."""

    kind: FindingKind
    target: str
    detail: str


@dataclass(frozen=True)
class Plan:
    actions: tuple[Action, ...]
    findings: tuple[Finding, ...]

    def of(self, *kinds: ActionKind) -> list[Action]:
        return [a for a in self.actions if a.kind in kinds]

    @property
    def changes_target(self) -> bool:
        return any(a.kind in ("write", "delete") for a in self.actions)


def make_plan(desired: Mapping[str, Desired], owned: Mapping[str, Owned], actual: Mapping[str, str], *,
              hold: Mapping[str, str] | None = None, pending: Mapping[str, str] | None = None,
              force: bool = False) -> Plan:
    """`actual` maps every `.kit` file in the target to its blob id; `hold` maps targets to leave as they are
    to the reason why (invalid in this commit, clashing with a foreign file); `pending` likewise for local
    changes still on their way to git, which are not problems."""
    hold = hold or {}
    pending = pending or {}
    actions: list[Action] = []
    findings: list[Finding] = []
    for target in sorted(set(desired) | set(owned) | set(hold) | set(pending)):
        if target in pending:
            findings.append(Finding("pending", target, pending[target]))
            continue
        if target in hold:
            findings.append(Finding("held", target, hold[target]))
            continue
        want, mine, have = desired.get(target), owned.get(target), actual.get(target)
        if want is None and mine is None:
            continue  # a local file on its way to git, or a foreign one: nothing for the pull to do
        if want is not None:
            action, finding = _wanted(target, want, mine, have, force)
        else:
            assert mine is not None
            action, finding = _unwanted(target, mine, have, force)
        actions += [action] if action else []
        findings += [finding] if finding else []
    return Plan(tuple(actions), tuple(findings))


def _wanted(target: str, want: Desired, mine: Owned | None, have: str | None,
            force: bool) -> tuple[Action | None, Finding | None]:
    write = Action("write", target, want.repo_path, want.blob, "")
    if have == want.blob:
        if mine is None or mine.blob != want.blob or mine.repo_path != want.repo_path:
            # Already what git wants (a write that finished before a crash, or identical content): own it.
            return Action("adopt", target, want.repo_path, want.blob, "already matches git"), None
        return None, None
    if have is None and mine is None:
        return _with(write, f"new in git ({want.repo_path})"), None
    if mine is None:
        return None, Finding("foreign", target, f"{target} exists but was not written by gitsync; "
                                                f"{want.repo_path} is not synced until it is moved away")
    if have == mine.blob:
        return _with(write, f"changed in git ({want.repo_path})"), None
    what = "deleted" if have is None else "changed"
    if force:
        return _with(write, f"restored over a local {what[:-1]} (--force)"), None
    return None, Finding("drift", target, f"{target} was {what} in the target since gitsync wrote it; "
                                          "left alone (run with --force to restore git's version)")


def _unwanted(target: str, mine: Owned, have: str | None, force: bool) -> tuple[Action | None, Finding | None]:
    if have is None:
        return Action("forget", target, mine.repo_path, None, "already gone from the target"), None
    if have == mine.blob:
        return Action("delete", target, mine.repo_path, None, f"removed from git ({mine.repo_path})"), None
    if force:
        return Action("delete", target, mine.repo_path, None, "removed from git; local change dropped (--force)"), None
    return None, Finding("drift", target, f"{target} was removed from git but changed locally; left alone "
                                          "(run with --force to delete it)")


def _with(action: Action, reason: str) -> Action:
    return Action(action.kind, action.target, action.repo_path, action.blob, reason)


def mass_delete_refusal(plan: Plan, owned_count: int, max_share: float, allowed: bool) -> str | None:
    """Why this plan must not run without `--allow-mass-delete`, or None.

    A commit that empties the definitions path is far more often a bad merge or a wrong
    `repo.path` than an intent; it would take every job away from the Farm at once.
    """
    mine = [a for a in plan.actions if "/" not in a.target]  # definitions; companion files (a/b) do not count
    deletes = sum(a.kind == "delete" for a in mine)
    if allowed or deletes == 0 or owned_count == 0:
        return None
    remaining = owned_count - deletes - sum(a.kind == "forget" for a in mine)
    if remaining <= 0 and not any(a.kind in ("write", "adopt") for a in mine):
        return (f"this commit would remove every definition ({deletes} files); refusing. "
                "If that is intended, run with --allow-mass-delete")
    if deletes / owned_count > max_share:
        return (f"this commit would remove {deletes} of {owned_count} definition files "
                f"(more than {max_share:.0%}); refusing. If intended, run with --allow-mass-delete "
                "or raise sync.max_delete_share")
    return None
