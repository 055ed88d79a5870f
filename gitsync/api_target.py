"""A jobs service as a sync target: plan against `/load`, apply call by call, record every call.

The API has no transactions. So the whole commit is validated before the first call (by the
caller, api_sync.py), the calls go out in the plan's deterministic order, each one that succeeds
is recorded at once (api_store.py), and the first failure stops the apply with one line saying
what was done and what was not. The next run plans from a fresh `/load` and converges.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from gitsync.api_plan import (
    ApiPlan,
    Applied,
    Prune,
    Wanted,
    actual_fingerprints,
    mass_remove_refusal,
    plan_api,
)
from gitsync.api_store import Record
from gitsync.errors import GitsyncError
from gitsync.jobs_api import JobsApiClient

log = logging.getLogger("gitsync.api")


def _no_guard() -> None:
    return None


@dataclass
class ApiOutcome:
    """What one apply did: the names saved and removed, in order, and why it stopped early (if it did)."""

    plan: ApiPlan
    on_service: int
    saved: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    refusal: str | None = None
    error: str = ""

    @property
    def done(self) -> bool:
        return not self.error and not self.refusal


class ApiTarget:
    """One jobs service reached through its HTTP API, and gitsync's record of what it put there."""

    def __init__(self, name: str, client: JobsApiClient, record: Record, *, prune: Prune = "owned") -> None:
        self.name = name
        self.client = client
        self.record = record
        self.prune: Prune = prune

    def describe(self) -> str:
        return self.client.shown_url

    def plan(self, desired: Mapping[str, Wanted], *, hold: Mapping[str, str] | None = None,
             pending: Mapping[str, str] | None = None, force: bool = False) -> tuple[ApiPlan, int]:
        """The plan against what the service holds now (one `/load`), and how many definitions it holds."""
        actual = actual_fingerprints(self.client.load())
        plan = plan_api(desired, actual, self.record.applied(), prune=self.prune, hold=hold, pending=pending,
                        force=force)
        return plan, len(actual)

    def apply(self, desired: Mapping[str, Wanted], *, hold: Mapping[str, str] | None = None,
              pending: Mapping[str, str] | None = None, force: bool = False, allow_mass_delete: bool = False,
              max_delete_share: float = 0.5, guard: Callable[[], None] = _no_guard) -> ApiOutcome:
        """Plan, then carry the plan out in order. `guard` runs right before every call that changes the
        service and raises to stop (high availability: a replica that lost its lease must not write)."""
        plan, on_service = self.plan(desired, hold=hold, pending=pending, force=force)
        outcome = ApiOutcome(plan, on_service)
        outcome.refusal = mass_remove_refusal(plan, on_service, max_delete_share, allow_mass_delete)
        if outcome.refusal:
            return outcome
        for action in plan.actions:
            try:
                if action.kind == "adopt":
                    want = desired[action.name]
                    self.record.saved(action.name, Applied(want.repo_path, want.fingerprint))
                elif action.kind == "forget":
                    self.record.forget(action.name)
                elif action.kind == "save":
                    want = desired[action.name]
                    guard()
                    self.client.save(want.definition)
                    self.record.saved(action.name, Applied(want.repo_path, want.fingerprint))
                    outcome.saved.append(action.name)
                else:
                    guard()
                    self.client.remove(action.name)  # False (already gone) is as good as removed
                    self.record.forget(action.name)
                    outcome.removed.append(action.name)
            except GitsyncError as exc:
                left = len(plan.of("save", "remove")) - len(outcome.saved) - len(outcome.removed)
                outcome.error = (f"{exc} ({len(outcome.saved)} saved and {len(outcome.removed)} removed before it, "
                                 f"{left} call(s) left for the next sync)")
                return outcome
        return outcome
