"""Decide what to `/save` and `/remove` on a jobs service so it holds one commit's definitions. Pure.

The jobs API knows definitions, not files, so the unit here is a job name and "unchanged" means
"equal after Farm's defaults": a definition in git that leaves out `args` equals one the service
returns with `args = []`. Both sides go through the same `normalise`, so a field Farm fills in never
looks like a change and a field someone changed through `/save` always does.

The rules mirror the directory target's (plan.py):
- a definition is saved when it is new, or changed in git while the service still holds exactly
  what gitsync put there;
- one changed in the service since gitsync saved it is *drift*, left alone (`--force` overwrites);
- a definition gitsync did not put there is *foreign*: never overwritten nor removed, unless
  `prune = "all"` says git owns the whole service;
- a definition deleted in git is removed only if gitsync put it there (`prune = "all"`: anything
  git does not have), and only while it is unchanged.
Saves come before removes (a rename never leaves a gap), each group sorted by name.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from gitsync import farm
from gitsync.plan import Finding

Prune = Literal["owned", "all"]
ApiActionKind = Literal["save", "remove", "adopt", "forget"]


@dataclass(frozen=True)
class Wanted:
    """A definition the commit wants on the service, normalised, with the file it came from."""

    repo_path: str
    definition: dict[str, Any]
    fingerprint: str


@dataclass(frozen=True)
class Applied:
    """What gitsync last put on the service under one name (its record; see api_store.py)."""

    repo_path: str
    fingerprint: str


@dataclass(frozen=True)
class ApiAction:
    kind: ApiActionKind
    name: str
    repo_path: str
    reason: str


@dataclass(frozen=True)
class ApiPlan:
    actions: tuple[ApiAction, ...]
    findings: tuple[Finding, ...]

    def of(self, *kinds: ApiActionKind) -> list[ApiAction]:
        return [a for a in self.actions if a.kind in kinds]

    @property
    def changes_target(self) -> bool:
        return any(a.kind in ("save", "remove") for a in self.actions)


# -- normalising ---------------------------------------------------------------------------------------
#: Fields a `.kit` file cannot set, so they never travel in either direction. `active`: Farm's directory
#: store never reads it from a file (a definition loaded from a file is always active), so git cannot say
#: `active = false`. Sending it to `/save` would make the same repository disable a job on a jobs-api
#: target that the directory target serves as active; leaving it out lets `/save` apply Farm's default
#: (true), exactly what Farm does with the file. An `active` changed through `/save` on the service is
#: likewise not a change push-back could commit.
NOT_FROM_FILES = frozenset({"active"})


def normalise(name: str, definition: Mapping[str, Any]) -> dict[str, Any]:
    """The definition as `/save` takes it and `/load` gives it back: Farm's fields only, defaults and
    Farm's `value or default` coercions applied, store-only fields (`job_spec_path`, ...) and fields
    no file can set (`active`) dropped, None values dropped (`/save` refuses an explicit null) and TOML
    dates turned into strings."""
    known = {k: _jsonable(v) for k, v in definition.items()
             if k in farm.DEFINITION_DEFAULTS and k not in farm.STORE_ONLY_FIELDS}
    full = farm.as_job_definition(name, known)
    return {k: v for k, v in sorted(full.items())
            if k not in farm.STORE_ONLY_FIELDS and k not in NOT_FROM_FILES and v is not None}


def fingerprint(definition: Mapping[str, Any]) -> str:
    """A short, stable digest of a normalised definition: what the record keeps and plans compare."""
    text = json.dumps(definition, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def wanted_from_kit(repo_path: str, data: bytes) -> dict[str, Wanted]:
    """Every `[job.<key>]` of a validated `.kit` file, keyed by the table key (the identity the directory
    store uses; the validator warns when a `name` field disagrees), sent to `/save` under that name."""
    tables = tomllib.loads(data.decode("utf-8")).get("job", {})
    found: dict[str, Wanted] = {}
    for key, table in tables.items():
        if isinstance(table, dict):
            definition = normalise(key, table)
            found[key] = Wanted(repo_path, definition, fingerprint(definition))
    return found


def actual_fingerprints(loaded: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """`/load`'s answer, reduced to what the planner compares."""
    return {name: fingerprint(normalise(name, definition)) for name, definition in loaded.items()}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    return value


# -- planning ------------------------------------------------------------------------------------------
def plan_api(desired: Mapping[str, Wanted], actual: Mapping[str, str], recorded: Mapping[str, Applied], *,
             prune: Prune = "owned", hold: Mapping[str, str] | None = None,
             pending: Mapping[str, str] | None = None, force: bool = False) -> ApiPlan:
    """`actual` maps every name on the service to its fingerprint; `recorded` is what gitsync put there;
    `hold` names to leave as they are (invalid in this commit) with the reason; `pending` likewise for
    changes made on the service that are on their way to git."""
    hold = hold or {}
    pending = pending or {}
    names = set(desired) | set(recorded) | set(hold) | set(pending)
    if prune == "all":
        names |= set(actual)
    saves: list[ApiAction] = []
    removes: list[ApiAction] = []
    findings: list[Finding] = []
    for name in sorted(names):
        if name in pending:
            findings.append(Finding("pending", name, pending[name]))
            continue
        if name in hold:
            findings.append(Finding("held", name, hold[name]))
            continue
        want, mine, have = desired.get(name), recorded.get(name), actual.get(name)
        if want is not None:
            action, finding = _wanted(name, want, mine, have, prune, force)
            saves += [action] if action else []
        else:
            action, finding = _unwanted(name, mine, have, prune, force)
            removes += [action] if action else []
        findings += [finding] if finding else []
    return ApiPlan(tuple(saves + removes), tuple(findings))


def _wanted(name: str, want: Wanted, mine: Applied | None, have: str | None, prune: Prune,
            force: bool) -> tuple[ApiAction | None, Finding | None]:
    if have == want.fingerprint:
        if mine is None or mine != Applied(want.repo_path, want.fingerprint):
            # Already what git wants (a save that finished before a crash, or the same definition): own it.
            return ApiAction("adopt", name, want.repo_path, "already matches git"), None
        return None, None
    if have is None and mine is None:
        return ApiAction("save", name, want.repo_path, f"new in git ({want.repo_path})"), None
    if mine is None:
        if prune == "all":
            return ApiAction("save", name, want.repo_path, "replaces a definition gitsync did not save "
                             "(prune = all)"), None
        return None, Finding("foreign", name, f"{name} is on the jobs service but was not saved by gitsync; "
                             f"{want.repo_path} is not synced until it is removed there (or set prune = \"all\")")
    if have == mine.fingerprint:
        return ApiAction("save", name, want.repo_path, f"changed in git ({want.repo_path})"), None
    what = "removed" if have is None else "changed"
    if force:
        return ApiAction("save", name, want.repo_path, f"restored over a {what} definition (--force)"), None
    return None, Finding("drift", name, f"{name} was {what} on the jobs service since gitsync saved it; left "
                         "alone (run with --force to restore git's version)")


def _unwanted(name: str, mine: Applied | None, have: str | None, prune: Prune,
              force: bool) -> tuple[ApiAction | None, Finding | None]:
    if mine is None:
        if have is not None and prune == "all":
            return ApiAction("remove", name, "", "not in git (prune = all)"), None
        return None, None
    if have is None:
        return ApiAction("forget", name, mine.repo_path, "already gone from the jobs service"), None
    if have == mine.fingerprint or prune == "all" or force:
        return ApiAction("remove", name, mine.repo_path, f"removed from git ({mine.repo_path})"), None
    return None, Finding("drift", name, f"{name} was removed from git but changed on the jobs service; left "
                         "alone (run with --force to remove it)")


def mass_remove_refusal(plan: ApiPlan, on_service: int, max_share: float, allowed: bool) -> str | None:
    """Why this plan must not run without `--allow-mass-delete`, or None: emptying a jobs service takes
    every job away from the Farm at once, and is far more often a mistake than an intent."""
    removes = len(plan.of("remove"))
    if allowed or removes == 0 or on_service == 0:
        return None
    if removes >= on_service and not plan.of("save", "adopt"):
        return (f"this commit would remove every definition on the jobs service ({removes}); refusing. "
                "If that is intended, run with --allow-mass-delete")
    if removes / on_service > max_share:
        return (f"this commit would remove {removes} of {on_service} definitions on the jobs service (more than "
                f"{max_share:.0%}); refusing. If intended, run with --allow-mass-delete or raise "
                "sync.max_delete_share")
    return None
