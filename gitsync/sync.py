"""The pull: fetch, diff, validate, plan, apply; and the recovery and record steps around it.

Crash safety: before an apply touches the target it writes a journal (per file: what was
there, what it is writing) and the transaction that records the apply clears it. A journal
found at start-up means a crash interrupted an apply; `recover()` then owns exactly the files
that hold what the apply wrote, before capture looks at the directory, so gitsync's own
half-applied writes are never mistaken for a person's edits and pushed back.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from gitsync import defset, faults
from gitsync.config import Settings
from gitsync.cycle import StepFailure, Steps
from gitsync.errors import ConfigError, GitError
from gitsync.gitrepo import APPLIED_REF, Change, GitMirror
from gitsync.kit import KitReport, check_kit
from gitsync.model import HistoryRow, JournalRow, Owned, TreeRecord
from gitsync.outbox import Outbox
from gitsync.plan import Desired, Finding, Plan, make_plan, mass_delete_refusal
from gitsync.problems import Problem
from gitsync.state import State, StateLock, problems_json
from gitsync.target_dir import DirectoryTarget, Seen

log = logging.getLogger("gitsync.sync")

Result = Literal["synced", "partial", "noop", "invalid", "refused", "error"]
_PARALLEL_PARSE_THRESHOLD = 400


@dataclass(frozen=True)
class Prepared:
    """Everything decided for one commit, before anything is touched (what `gitsync plan` shows)."""

    head: str
    applied: str | None
    changed: tuple[Change, ...]
    tree: dict[str, TreeRecord]
    problems: tuple[Problem, ...]
    invalid: frozenset[str]
    plan: Plan
    refusal: str | None
    seen: dict[str, Seen]
    touched: frozenset[str]  # tree rows that differ from the stored tree (changed in git or checked again)


@dataclass
class SyncResult:
    result: Result
    head: str | None = None
    applied: str | None = None
    written: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    message: str = ""
    duration: float = 0.0
    failures: list[StepFailure] = field(default_factory=list)  # steps of the cycle that failed
    pulled: Result | None = None  # what the pull did when another step's failure made the cycle an "error"

    @property
    def ok(self) -> bool:
        return self.result in ("synced", "noop", "partial")

    @property
    def applied_now(self) -> bool:
        """The pull applied a commit (whatever else in the cycle failed)."""
        return (self.pulled or self.result) in ("synced", "partial")


class Syncer:
    """Pulls one branch of one repo into one job directory."""

    def __init__(self, settings: Settings, state: State, mirror: GitMirror, target: DirectoryTarget) -> None:
        self.settings = settings
        self.state = state
        self.mirror = mirror
        self.target = target
        #: Targets whose local change is on its way to git (push-back); the pull leaves them alone.
        self.pending: Callable[[], Mapping[str, str]] = dict
        self._lock: StateLock | None = None
        self._check_state_matches_target()

    @classmethod
    def from_settings(cls, settings: Settings) -> Syncer:
        from gitsync.credentials import credentials_from

        settings.require("repo.url", "target.directory")
        state_dir = settings.state_path
        mirror = GitMirror(state_dir / "mirror.git", _normalise_url(settings.repo_url), settings.repo_branch,
                           credentials=credentials_from(settings), timeout=settings.sync_timeout,
                           depth=settings.repo_fetch_depth)
        lock = StateLock(state_dir)
        try:
            syncer = cls(settings, State(state_dir), mirror, DirectoryTarget(Path(settings.target_directory)))
        except BaseException:
            lock.release()
            raise
        syncer._lock = lock
        syncer.pending = Outbox(syncer.state).held_targets  # an agent's unpushed changes are not drift
        return syncer

    def close(self) -> None:
        self.mirror.close()
        self.state.close()
        if self._lock is not None:
            self._lock.release()

    def _check_state_matches_target(self) -> None:
        directory = str(self.target.directory.resolve())
        recorded = self.state.get("target_directory")
        if recorded is None:
            self.state.set(target_directory=directory)
        elif recorded != directory:
            raise ConfigError(f"state directory {self.state.path.parent} belongs to target {recorded}, not "
                              f"{directory}; use another --state-dir for this target")

    # -- deciding -----------------------------------------------------------------------------------
    def prepare(self, head: str, *, force: bool = False, allow_mass_delete: bool = False) -> Prepared:
        s = self.settings
        applied = self.state.get("applied_commit")
        old_tree = self.state.tree()
        if not old_tree and not self.mirror.path_exists(head, s.repo_path):
            raise ConfigError(f"repo.path {s.repo_path!r} does not exist in commit {head[:12]}; "
                              "set repo.path to the folder that holds the .kit files")
        changes = self._changes(applied, head, old_tree)
        tree = dict(old_tree)
        to_parse: list[tuple[str, str]] = []
        for change in changes:
            if change.blob is None:
                tree.pop(change.path, None)
            elif change.mode == "120000":
                tree[change.path] = TreeRecord(change.blob, (), (defset.symlink_problem(change.path),))
            elif change.mode != "160000":
                to_parse.append((change.path, change.blob))
        if self.state.get("validated_with", self._validation_key()) != self._validation_key():
            parsing = {path for path, _ in to_parse}  # the rules changed (--strict, size): check every file again
            to_parse += [(path, rec.blob) for path, rec in tree.items() if path not in parsing and rec.names]
        blobs = dict(to_parse)
        for path, report in self._check_blobs(to_parse).items():
            tree[path] = TreeRecord(blobs[path], report.names, tuple(p.at(path) for p in report.problems))
        owned = self.state.manifest()
        problems = defset.check_set((defset.Checked(p, r.names, r.problems) for p, r in tree.items()),
                                    changed=_not_in_place(tree, owned))
        invalid = frozenset(defset.error_paths(problems))
        seen = self.target.scan(owned)
        desired = {defset.target_name(p): Desired(p, r.blob, r.names) for p, r in tree.items() if p not in invalid}
        hold = {defset.target_name(p): f"{p} is invalid; the last good version stays" for p in invalid}
        hold.update(self._foreign_clashes(desired, owned, seen))
        plan = make_plan(desired, owned, {t: v.blob for t, v in seen.items()}, hold=hold, pending=self.pending(),
                         force=force)
        refusal = mass_delete_refusal(plan, len(owned), s.sync_max_delete_share, allow_mass_delete)
        flat = tuple(sorted(p for found in problems.values() for p in found))
        touched = frozenset(path for path, _ in to_parse) | {c.path for c in changes}
        return Prepared(head, applied, tuple(changes), tree, flat, invalid, plan, refusal, seen, touched)

    def _validation_key(self) -> str:
        return f"strict={self.settings.sync_strict} max_file_size={self.settings.sync_max_file_size}"

    def recover(self) -> None:
        """Finish the books of an apply a crash interrupted: a journalled file that holds what the apply was
        writing is gitsync's (whatever the branch holds now); one it was deleting and that is gone is
        forgotten; anything else was not touched by the apply, or was changed by someone since, and capture
        judges it against the manifest as usual."""
        self.target.remove_leftovers()
        journal = self.state.journal()
        if not journal and not self.state.get("apply_in_progress"):
            return
        seen = self.target.scan(self.state.manifest())
        owned: dict[str, Owned | None] = {}
        for row in journal.values():
            have = seen.get(row.target)
            if row.new_blob is not None and have is not None and have.blob == row.new_blob:
                owned[row.target] = Owned(row.repo_path, row.new_blob, row.names, have.stat, row.new_blob)
            elif row.new_blob is None and have is None:
                owned[row.target] = None
        self.state.record_apply(tree=None, owned=owned, meta={}, end_apply=True)
        log.warning("recovered an apply a crash interrupted: %d of %d file(s) it had touched are gitsync's",
                    len(owned), len(journal))

    def _changes(self, applied: str | None, head: str, old_tree: Mapping[str, TreeRecord]) -> list[Change]:
        path = self.settings.repo_path
        same_path = self.state.get("applied_path", path) == path
        if applied == head and same_path:
            return []
        if applied and same_path and self.mirror.has_commit(applied):
            changes = self.mirror.diff(applied, head, path)
        else:  # first sync, a new repo.path, or the applied commit is gone: compare whole trees by blob id
            now = self.mirror.list_tree(head, path)
            changes = [Change("M", p, e.blob, e.mode) for p, e in now.items()
                       if p not in old_tree or old_tree[p].blob != e.blob]
            changes += [Change("D", p, None, "") for p in old_tree if p not in now]
        return [c for c in changes if defset.is_definition_path(c.path)]

    def _check_blobs(self, items: list[tuple[str, str]]) -> dict[str, KitReport]:
        s = self.settings
        contents = [(path, self.mirror.read_blob(blob)) for path, blob in items]
        if len(contents) < _PARALLEL_PARSE_THRESHOLD or (os.cpu_count() or 1) < 2:
            return {path: check_kit(data, path, strict=s.sync_strict, max_size=s.sync_max_file_size)
                    for path, data in contents}
        workers = min(os.cpu_count() or 2, 8)
        chunk = max(1, len(contents) // (workers * 4))
        with ProcessPoolExecutor(workers) as pool:
            reports = pool.map(_check_one, ((p, d, s.sync_strict, s.sync_max_file_size) for p, d in contents),
                               chunksize=chunk)
            return {path: report for (path, _), report in zip(contents, reports, strict=True)}

    def _foreign_clashes(self, desired: Mapping[str, Desired], owned: Mapping[str, Owned],
                         seen: Mapping[str, Seen]) -> dict[str, str]:
        """Repo files whose job names a file gitsync does not own already defines: Farm would keep one."""
        foreign_names: dict[str, str] = {}
        for name in seen:
            if name in owned or (name in desired and desired[name].blob == seen[name].blob):
                continue
            data = self.target.read(name)
            if data is not None:
                for job in check_kit(data, name).names:
                    foreign_names[job] = name
        clashes: dict[str, str] = {}
        for target, want in desired.items():
            for job in want.names:
                other = foreign_names.get(job)
                if other and other != target:
                    clashes[target] = (f"job {job!r} is already defined by {other}, which gitsync does not own; "
                                       f"{want.repo_path} is not synced until one of them is renamed or removed")
        return clashes

    # -- doing --------------------------------------------------------------------------------------
    def sync(self, *, force: bool = False, allow_mass_delete: bool = False) -> SyncResult:
        """One cycle without push-back (`gitsync sync --once`): recover, pull, record."""
        wall, applied, steps = time.time(), self.state.get("applied_commit"), Steps()
        result = SyncResult("error", applied=applied, message="the pull did not run")
        with steps.step("recover"):
            self.recover()
        with steps.step("pull"):
            result = self.pull(force=force, allow_mass_delete=allow_mass_delete)
        self.record(result, wall, previous=applied, failures=steps.failures)
        return result

    def pull(self, *, force: bool = False, allow_mass_delete: bool = False) -> SyncResult:
        """Fetch, diff, validate, plan and apply; failures git or the disk can produce become an "error"
        result (the last good state stays), anything else is raised to the caller's step boundary."""
        started = time.monotonic()
        applied = self.state.get("applied_commit")
        try:
            head = self.mirror.fetch()
            faults.reached("pull.fetched")
            if applied and applied != head and self.mirror.has_commit(applied) \
                    and not self.mirror.is_ancestor(applied, head):
                log.warning("branch %s was rewritten (force-push): %s is no longer in its history; syncing to %s",
                            self.settings.repo_branch, applied[:12], head[:12])
            prepared = self.prepare(head, force=force, allow_mass_delete=allow_mass_delete)
            faults.reached("pull.validated")
            result = self._apply(prepared)
        except (GitError, ConfigError) as exc:
            result = SyncResult("error", applied=applied, message=str(exc))
        except OSError as exc:  # the target: missing permissions, full disk, a file where a folder should be
            where = exc.filename or self.target.directory
            result = SyncResult("error", applied=applied,
                                message=f"cannot update the job directory ({where}): {exc.strerror or exc}")
        result.duration = time.monotonic() - started
        return result

    def _apply(self, p: Prepared) -> SyncResult:
        base = SyncResult("noop", head=p.head, applied=p.applied, problems=list(p.problems),
                          findings=list(p.plan.findings))
        if p.invalid and self.settings.sync_on_invalid == "refuse":
            errors = [x for x in p.problems if x.severity == "error"]
            base.result = "invalid"
            base.message = (f"commit {p.head[:12]} not applied: {len(errors)} error(s) in {len(p.invalid)} file(s); "
                            f"{(p.applied or 'nothing')[:12]} stays in place. First: {errors[0].format()}")
            return base
        if p.refusal:
            base.result, base.message = "refused", p.refusal
            return base
        writes = p.plan.of("write")
        deletes = p.plan.of("delete")
        owned: dict[str, Owned | None] = {}
        if writes or deletes:
            self.state.begin_apply(p.head, [
                JournalRow(a.target, a.repo_path, p.seen[a.target].blob if a.target in p.seen else None,
                           a.blob, p.tree[a.repo_path].names if a.blob else ())
                for a in [*writes, *deletes]])
            faults.reached("apply.journalled")
        planned = {t: seen.stat for t, seen in p.seen.items()}
        stats = self.target.write_many(((a.target, self.mirror.read_blob(str(a.blob))) for a in writes), planned,
                                       batch=len(writes) > 64) if writes else {}
        for a in writes:
            if a.target in stats:
                owned[a.target] = Owned(a.repo_path, str(a.blob), p.tree[a.repo_path].names, stats[a.target])
        for a in p.plan.of("adopt"):
            owned[a.target] = Owned(a.repo_path, str(a.blob), p.tree[a.repo_path].names, p.seen[a.target].stat)
        deleted = set(self.target.delete((a.target for a in deletes), planned))
        for a in [*(d for d in deletes if d.target in deleted), *p.plan.of("forget")]:
            owned[a.target] = None
        changed_meanwhile = [a.target for a in [*writes, *deletes] if a.target not in stats and a.target not in deleted]
        if changed_meanwhile:
            log.warning("%s changed while syncing; left as they are for the next cycle", ", ".join(changed_meanwhile))
        faults.reached("apply.written")
        self.state.record_apply(tree={path: p.tree.get(path) for path in p.touched}, owned=owned, meta={
            "applied_commit": p.head, "applied_path": self.settings.repo_path,
            "validated_with": self._validation_key()}, end_apply=True)
        faults.reached("apply.recorded")
        self.mirror.update_ref(APPLIED_REF, p.head)
        base.applied = p.head
        base.written = [a.target for a in writes if a.target in stats]
        base.removed = [a.target for a in deletes if a.target in deleted]
        held = [f for f in p.plan.findings if f.kind in ("held", "foreign")]
        base.result = "partial" if held else ("synced" if writes or deletes or p.head != p.applied else "noop")
        return base

    def record(self, r: SyncResult, wall: float, previous: str | None,
               failures: list[StepFailure] | tuple[StepFailure, ...] = ()) -> None:
        """The record step: what the operator sees in status, history and one log line. A failure of any
        step makes the cycle a failure, even when the pull itself applied a commit."""
        r.failures = list(failures)
        if r.failures and r.ok:
            r.pulled, r.result = r.result, "error"
        r.message = "; ".join([*(f.format() for f in r.failures), *([r.message] if r.message else [])])
        span = f"{(r.head or previous or 'nothing')[:12]}" if r.head in (None, previous) else \
            f"{(previous or 'empty')[:12]}..{(r.head or '')[:12]}"
        failing = {f.step: f.message for f in r.failures}
        meta: dict[str, object] = {
            "last_attempt_at": wall, "last_result": r.result, "last_message": r.message,
            "failing_steps": failing, "head_commit": r.head or self.state.get("head_commit"),
            "consecutive_failures": 0 if r.ok else int(self.state.get("consecutive_failures", 0)) + 1}
        if r.head is not None:  # the pull reached git: what it found about the definitions is news
            meta.update(problems=problems_json(r.problems), findings=[f.__dict__ for f in r.findings])
        if r.ok:
            meta["last_success_at"] = wall
        if r.applied_now or (r.ok and self.state.get("applied_at") is None):
            meta["applied_at"] = wall
            meta["applied_summary"] = self.mirror.commit_summary(r.applied) if r.applied else ""
        self.state.set(**meta)
        if r.result != "noop":
            self.state.add_history(HistoryRow(wall, r.duration, previous, r.head, r.result,
                                              len(r.written), len(r.removed), r.message))
        line = (f"sync {span}: {r.result}, {len(r.written)} written, {len(r.removed)} removed, "
                f"{sum(1 for f in r.findings if f.kind == 'held')} held ({r.duration:.2f} s)")
        if r.message:
            line += f": {r.message}"
        (log.info if r.ok else log.error)(line)
        for finding in r.findings:
            log.warning("%s: %s", finding.kind, finding.detail)


def _not_in_place(tree: Mapping[str, TreeRecord], owned: Mapping[str, Owned]) -> set[str]:
    """Repo files whose version is not the one in the target yet: a clash is blamed on these, so the
    definitions already serving jobs keep serving them."""
    fresh = set()
    for path, record in tree.items():
        mine = owned.get(defset.target_name(path))
        if mine is None or mine.repo_path != path or mine.base != record.blob:
            fresh.add(path)
    return fresh


def _check_one(args: tuple[str, bytes, bool, int]) -> KitReport:
    path, data, strict, max_size = args
    return check_kit(data, path, strict=strict, max_size=max_size)


def _normalise_url(url: str) -> str:
    """A local directory that is a work tree (not bare) is fetched like any other remote."""
    if "://" not in url and not url.startswith("git@") and Path(url).expanduser().exists():
        return str(Path(url).expanduser().resolve())
    return url
