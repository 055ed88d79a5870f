"""The pull: fetch, diff, validate, plan, apply; and the recovery and record steps around it.

Crash safety: before an apply touches the target it writes a journal (per file: what was
there, what it is writing) and the transaction that records the apply clears it. A journal
found at start-up means a crash interrupted an apply; `recover()` then owns exactly the files
that hold what the apply wrote, before capture looks at the directory, so gitsync's own
half-applied writes are never mistaken for a person's edits and pushed back.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeVar

from gitsync import companion, companion_sync, defset, faults, progress, quiet
from gitsync.config import Settings
from gitsync.cycle import StepFailure, Steps
from gitsync.errors import ConfigError, GitError, StateError, TargetError
from gitsync.gitrepo import APPLIED_REF, Change, GitMirror
from gitsync.kit import check_kit, too_large
from gitsync.model import HistoryRow, JournalRow, Owned, TreeRecord
from gitsync.outbox import Outbox
from gitsync.pinning import fetch_target
from gitsync.plan import Desired, Finding, Plan, make_plan, mass_delete_refusal
from gitsync.problems import Problem
from gitsync.state import State, StateLock, Validation, problems_json
from gitsync.target_config import included
from gitsync.target_dir import DirectoryTarget, FileTooLarge, Fingerprint, Seen

if TYPE_CHECKING:
    from concurrent.futures import ProcessPoolExecutor

_T = TypeVar("_T")
log = logging.getLogger("gitsync.sync")

Result = Literal["synced", "partial", "noop", "invalid", "refused", "error"]
_PARALLEL_PARSE_THRESHOLD = 400
_RELEASE_AFTER = 1000  # files a sync touched before it hands memory back (see _release_memory)
_BATCH = 2000  # blobs read and checked at a time: bounds memory on a 100,000-file first sync
_KEEP_READ = 64  # up to this many blobs validated in a pull are kept for its apply
LOOK_KEY = "target_look"  # the state's meta key of the last look at the target without a watcher (_remember_look)
_MAX_OPEN = 1000  # more targets left open than this: the next sync compares every file instead
UNKNOWN = "?"  # a looked-at target that existed but was not seen as a file: its stat key was not taken


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
    #: Every problem of the paths whose problems were worked out again (an empty tuple: none any more).
    path_problems: Mapping[str, tuple[Problem, ...]] = field(default_factory=dict)
    #: Without a watcher: the target directory's fingerprint when it was looked at, and the targets looked at
    #: (see `_remember_look`); None when the directory was not fingerprinted.
    fingerprint: int | None = None
    #: target -> its stat key when looked at (None: it did not exist; `UNKNOWN`: it existed, not as a file looked at)
    looked: Mapping[str, str | None] = field(default_factory=dict)
    #: The repo paths whose problems were worked out again; `problems` then holds theirs and every error, not the
    #: warnings of the other files (State.current_problems merges). None: `problems` lists everything.
    judged: frozenset[str] | None = None


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
    #: See Prepared.judged: the paths `problems` is complete for, when it does not list every file's.
    judged: frozenset[str] | None = None
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
        #: Target files that may have changed locally since the last look (the agent's watcher), or None when
        #: nobody watched: then every file is `stat`ed and compared with the manifest.
        self.dirty: Callable[[], set[str] | None] = nobody_watched
        self._lock: StateLock | None = None
        #: Changed git paths that are not UTF-8 (set by the last diff); the commit is not applied while any exist.
        self.unusable_names: tuple[Problem, ...] = ()
        self._pool: ProcessPoolExecutor | None = None
        self._leftovers_removed = False
        self._read: dict[str, bytes] = {}  # blob -> bytes read for validation in this pull (small changes only)
        self._owns_mirror = True
        #: Runs right before an apply touches the target; raises to stop it (high availability, see ha.py).
        self.guard: Callable[[], None] = lambda: None
        #: Where the mirror records this target's applied commit (one ref per target; see target_set.py).
        self.applied_ref = APPLIED_REF
        #: target.include as globs relative to repo.path (empty: every .kit file under it).
        self.include = settings.include
        self._other_changes: list[Change] = []  # changed files under repo.path that are not definitions
        self._roots_seen: tuple[str, dict[str, bool]] = ("", {})  # (commit, companion root -> exists in it)
        self._early_look: EarlyLook | None = None  # the directory's fingerprint, taken while git fetches
        self._check_state_matches_target()

    @classmethod
    def from_settings(cls, settings: Settings, *, lock: bool = True, mirror: GitMirror | None = None) -> Syncer:
        """`lock=False` opens the state beside a running agent: only for a command that takes its turn
        (turn.py) or only reads. `mirror`: the mirror another target of this process opened (several
        targets share one mirror and one fetch); the caller closes it."""
        from gitsync.credentials import credentials_from
        from gitsync.target_set import applied_ref, target_state_dir

        settings.require("repo.url", "target.directory")
        state_dir = settings.state_path
        shared = mirror is not None
        if mirror is None:
            mirror = GitMirror(state_dir / "mirror.git", _normalise_url(settings.repo_url), settings.repo_branch,
                               credentials=credentials_from(settings), timeout=settings.sync_timeout,
                               depth=settings.repo_fetch_depth)
        held = StateLock(state_dir) if lock else None
        try:
            target = DirectoryTarget(Path(settings.target_directory), file_mode=settings.file_mode,
                                     gid=settings.file_gid, max_file_size=settings.sync_max_file_size)
            syncer = cls(settings, State(target_state_dir(settings)), mirror, target)
        except BaseException:
            if held is not None:
                held.release()
            raise
        syncer._lock = held
        syncer._owns_mirror = not shared
        syncer.applied_ref = applied_ref(settings)
        syncer.pending = Outbox(syncer.state).held_targets  # an agent's unpushed changes are not drift
        return syncer

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        if self._owns_mirror:
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
        """Decide what `head` means for the target, reading only what the change touches (see `dirty` for the
        local side). A first sync, a new repo.path, a lost applied commit or changed rules check everything."""
        s = self.settings
        applied = self.state.get("applied_commit")
        rules = self._validation_key()
        vanished = not self.mirror.path_exists(head, s.repo_path)
        if vanished and not (self.state.has_tree() and self.state.get("applied_path", s.repo_path) == self._scope()):
            raise ConfigError(f"repo.path {s.repo_path!r} does not exist in commit {head[:12]}; "
                              "set repo.path to the folder that holds the .kit files")
        changes, whole_tree = self._changes(applied, head)
        rechecking = whole_tree is not None or self.state.get("validated_with") != rules
        if rechecking and whole_tree is None:
            whole_tree = self.state.tree()
        fresh: dict[str, TreeRecord | None] = {}
        to_parse: list[tuple[str, str]] = []
        for change in changes:
            if change.blob is None:
                fresh[change.path] = None
            elif change.mode == "120000":
                fresh[change.path] = TreeRecord(change.blob, (), (defset.symlink_problem(change.path),))
            elif change.mode != "160000":
                to_parse.append((change.path, change.blob))
        if rechecking:  # the rules changed (--strict, size) or nothing is known: check every file again
            assert whole_tree is not None
            parsing = {path for path, _ in to_parse} | set(fresh)
            to_parse += [(path, rec.blob) for path, rec in whole_tree.items()
                         if path not in parsing and not defset.is_symlink_record(rec)]
        blobs = dict(to_parse)
        for path, (names, found, folders) in self._check_blobs(to_parse).items():
            fresh[path] = TreeRecord(blobs[path], names, tuple(p.at(path) for p in found) + defset.name_problems(path),
                                     folders)
        if whole_tree is not None:
            prepared = self._prepare_whole(head, applied, changes, whole_tree, fresh, force, allow_mass_delete)
        else:
            prepared = self._prepare_change(head, applied, changes, fresh, force, allow_mass_delete)
        if prepared.refusal and vanished:  # say why everything would go: the folder itself is gone from git
            why = (f"repo.path {s.repo_path!r} no longer exists in commit {head[:12]} (moved or deleted in git? "
                   "if moved, set repo.path to its new folder)")
            return replace(prepared, refusal=f"{why}, so {prepared.refusal}")
        return prepared

    def _prepare_whole(self, head: str, applied: str | None, changes: list[Change], old_tree: Mapping[str, TreeRecord],
                       fresh: Mapping[str, TreeRecord | None], force: bool, allow_mass_delete: bool) -> Prepared:
        """Everything checked and planned: the first sync, and after the rules changed."""
        tree = {p: r for p, r in {**old_tree, **fresh}.items() if r is not None}
        owned = self.state.manifest()
        present = self._present_roots(head, tree.items())
        problems = defset.check_set((defset.Checked(p, r.names, r.problems, r.folders) for p, r in tree.items()),
                                    changed=_not_in_place(tree, owned), present_roots=present)
        for path, found in companion_sync.missing_folder_problems(tree, present).items():
            problems[path] += found
        side = self._companions(head, {p: r for p, r in tree.items() if r.folders}, problems,
                                whole=companion_sync.folders_of(tree.values()) |
                                {companion.folder_of(t) for t in owned if companion.is_companion_target(t)})
        known = self._known(owned)
        seen = self.target.scan(known)
        seen.update(self.target.scan_names(side.scope - set(seen), known))
        foreign = self._refresh_foreign(seen, owned, tree, set(seen) | set(self.state.foreign_files()))[0]
        plan, refusal = self._plan(tree, problems, owned, seen, foreign, force, allow_mass_delete,
                                   lambda: sum(1 for t in owned if not companion.is_companion_target(t)), side)
        stale = {path: () for path in self.state.problem_paths() if path not in tree and path not in problems}
        return Prepared(head, applied, tuple(changes), tree, _flat(problems), frozenset(defset.error_paths(problems)),
                        plan, refusal, seen, frozenset(tree) | set(old_tree) | set(fresh),
                        {**stale, **{path: tuple(found) for path, found in problems.items()}})

    def _companions(self, head: str, records: Mapping[str, TreeRecord], problems: dict[str, list[Problem]], *,
                    whole: Iterable[str], files: Mapping[str, set[str]] | None = None) -> companion_sync.Companions:
        """The companion folders' part of the plan; their problems are merged into `problems`. A folder named only
        by invalid definitions (now, or held from an earlier commit) keeps its last good files."""
        stored = self.state.problems_of(p for p in records if p not in problems)
        invalid = defset.error_paths(problems) | defset.error_paths({p: list(found) for p, found in stored.items()})
        side = companion_sync.work_out(self.mirror, self.state, head, records, invalid,
                                       whole=whole, files=files or {}, max_size=self.settings.sync_max_file_size,
                                       problems_under=self.state.problem_paths_under,
                                       present_roots=self._present_roots(head, records.items()))
        for path, found in side.problems.items():
            if path in records:
                problems[path] = [*problems.get(path, []), *found]
            else:
                problems[path] = found
        return side

    def _present_roots(self, head: str, records: Iterable[tuple[str, TreeRecord]]) -> set[str]:
        """The companion folders these definitions name that exist in `head` (one git process for those not
        asked about before in this commit): a folder that is not in git lands nothing and clashes with nothing."""
        roots = {companion.root(p, folder) for p, r in records for folder, _ in r.folders}
        if self._roots_seen[0] != head:
            self._roots_seen = (head, {})
        known = self._roots_seen[1]
        asked = roots - set(known)
        if asked:
            present = self.mirror.folders_present(head, asked)
            known.update({r: r in present for r in asked})
        return {r for r in roots if known[r]}

    def _prepare_change(self, head: str, applied: str | None, changes: list[Change],
                        fresh: Mapping[str, TreeRecord | None], force: bool, allow_mass_delete: bool) -> Prepared:
        """Only the changed files, the files sharing a job or file name with them, and the targets these, the
        outbox, open findings and local changes name: rows are read by index, never the whole tree."""
        state = self.state
        old = state.tree_rows(fresh)
        tree: dict[str, TreeRecord] = {p: r for p, r in fresh.items() if r is not None}

        def load(paths: Iterable[str]) -> None:
            missing = {p for p in paths if p not in tree and p not in fresh}
            tree.update(state.tree_rows(missing))

        def group_members(records: Iterable[tuple[str, TreeRecord]],
                          everyone_naming: set[str]) -> tuple[set[str], frozenset[str]]:
            """The stored files that share a job name or a landing place with `records`, with every definition
            naming a companion folder in `everyone_naming`; and, for their other folders, one definition per folder
            in git (root) naming it: enough to judge a clash between roots, and judged only for that."""
            names: set[str] = set()
            targets: set[str] = set()
            folders: set[str] = set()
            for path, rec in records:
                names.update(rec.names)
                targets.add(defset.target_name(path))
                folders.update(folder for folder, _ in rec.folders)
            stored = {p for found in state.paths_named(names).values() for p in found}
            # a companion folder lands where a definition file of its name does, and the other way round
            stored |= {p for found in state.paths_landing(targets | folders).values() for p in found}
            stored |= {p for found in state.paths_referencing(targets | (folders & everyone_naming)).values()
                       for p in found}
            kept = {p for p in stored if fresh.get(p, True) is not None}  # not the ones deleted now
            return kept, state.root_representatives(folders - everyone_naming)

        # Companion folders whose naming changed (a definition naming them added, removed or renamed, or naming
        # another folder now) or that gained or lost files in git are worked out whole, and every definition
        # naming them is judged again (clashes between folders, a folder appearing or going). A definition edited
        # without touching its ${job} entries changes nothing about its folders.
        moved = {folder for path in fresh for folder in _folder_names(old.get(path)) ^ _folder_names(fresh[path])}
        whole, files = self._companion_changes(moved)
        # A: files whose problems may change; B: every file sharing a name with one of A, to judge A completely.
        members, _ = group_members([*old.items(), *tree.items()], whole)
        affected = set(tree) | members
        affected |= {p for found in state.paths_referencing(whole).values() for p in found
                     if fresh.get(p, True) is not None}
        load(affected)
        members, representatives = group_members(((p, tree[p]) for p in affected), whole)
        judged = affected | members | {p for p in representatives if fresh.get(p, True) is not None}
        load(judged)
        owned_judged = state.owned({defset.target_name(p) for p in judged})
        present = self._present_roots(head, ((p, tree[p]) for p in judged))
        checked = defset.check_set((defset.Checked(p, tree[p].names, tree[p].problems, tree[p].folders)
                                    for p in judged),
                                   changed=_not_in_place({p: tree[p] for p in judged}, owned_judged),
                                   present_roots=present)
        for path, found in companion_sync.missing_folder_problems({p: tree[p] for p in affected}, present).items():
            checked[path] += found
        # A definition that turns valid or invalid decides whether its folders' files move: those are planned.
        stored_errors = defset.error_paths({p: list(f) for p, f in state.problems_of(affected).items()})
        flipped = {p for p in affected if (p in stored_errors) != any(x.severity == "error" for x in checked[p])}
        whole |= companion_sync.folders_of(tree[p] for p in flipped)
        local = self.dirty()
        fingerprint: int | None = None
        drifted: set[str] = set()
        # The fingerprint sums the directory's own entries: blind to an edit inside a companion folder, so a target
        # with companion files is compared file by file.
        companions = state.has_companions()
        if local is None and not companions:  # nobody watched (`sync --once`): has anything changed since?
            last = state.get(LOOK_KEY)
            fingerprint = (self._early_look.result() if self._early_look else self.target.fingerprint()) \
                if last else None
            if fingerprint is not None and fingerprint == last["fingerprint"]:
                local = set()  # no entry changed since: only what was still open then needs a look
                drifted = set(last["open"])
        if local is None:  # stat every file, compared with the manifest without loading it whole
            known = self._known(state.owned_stats())
            counted = Fingerprint()
            everything = self.target.scan(known, counted)
            fingerprint = counted.value if self.target.directory.is_dir() and not companions else None
            drifted = {t for t, have in everything.items() if t not in known or known[t] != have}
            drifted |= {t for t in known if t not in everything}
        for target in (local or set()) | drifted:
            if companion.is_companion_target(target):
                files.setdefault(companion.folder_of(target), set()).add(target)
        naming = {p for found in state.paths_referencing(whole | set(files)).values() for p in found
                  if fresh.get(p, True) is not None}
        load(naming)
        with_problems = {p: list(checked[p]) if p in tree else [] for p in affected | set(fresh)}
        side = self._companions(head, {p: tree[p] for p in naming | affected if p in tree and tree[p].folders},
                                with_problems, whole=whole, files=files)
        path_problems = {p: tuple(found) for p, found in with_problems.items()}
        problems = {p: list(found) for p, found in state.error_problems().items()}  # what stops the commit
        problems.update({p: list(found) for p, found in path_problems.items()})
        problems = {p: found for p, found in problems.items() if found}

        scope = {defset.target_name(p) for p in affected | set(fresh)}
        scope |= set(self.pending()) | {f["target"] for f in state.get("findings", [])} | set(state.get("replan") or ())
        scope |= drifted
        scope = {t for t in scope if t.endswith(defset.KIT_SUFFIX) or companion.is_companion_target(t)}
        scope |= set(local or ()) | side.scope

        def look(targets: set[str]) -> tuple[dict[str, Owned], dict[str, Seen]]:
            mine = state.owned(targets)
            if local is None:
                found = {t: everything[t] for t in targets if t in everything}
                unknown = {t for t in targets if t not in everything and companion.is_companion_target(t)}
                found.update(self.target.scan_names(unknown, {}))  # a file of someone else's in a companion folder
                return mine, found
            return mine, self.target.scan_names(targets, self._known(mine, targets))

        owned, seen = look(scope)
        foreign, renamed = self._refresh_foreign(seen, owned, {}, scope)
        extra = {defset.target_name(p) for found in state.paths_named(renamed).values() for p in found} - scope
        if extra:  # targets whose job names a foreign file took or gave back
            more_owned, more_seen = look(extra)
            owned.update(more_owned)
            seen.update(more_seen)
            scope |= extra
        landing = {target: set(paths) for target, paths in state.paths_landing(scope).items()}
        for path, rec in fresh.items():
            target = defset.target_name(path)
            if rec is None:
                landing.get(target, set()).discard(path)
            elif target in scope:
                landing.setdefault(target, set()).add(path)
        load(p for found in landing.values() for p in found)
        planned = {p: tree[p] for found in landing.values() for p in found if p in tree}
        plan, refusal = self._plan(planned, problems, owned, seen, foreign, force, allow_mass_delete,
                                   state.owned_count, side)
        return Prepared(head, applied, tuple(changes), tree, _flat(problems), frozenset(defset.error_paths(problems)),
                        plan, refusal, seen, frozenset(fresh), path_problems, fingerprint,
                        self._looked(scope, seen) if fingerprint is not None else {}, frozenset(path_problems))

    def _plan(self, tree: Mapping[str, TreeRecord], problems: Mapping[str, list[Problem]],
              owned: Mapping[str, Owned], seen: Mapping[str, Seen], foreign: Mapping[str, str], force: bool,
              allow_mass_delete: bool, owned_count: Callable[[], int],
              side: companion_sync.Companions) -> tuple[Plan, str | None]:
        invalid = defset.error_paths(problems)
        desired = {defset.target_name(p): Desired(p, r.blob, r.names) for p, r in tree.items() if p not in invalid}
        hold = {defset.target_name(p): f"{p} is invalid; the last good version stays" for p in tree if p in invalid}
        hold.update(_foreign_clashes(desired, foreign))
        desired.update(side.desired)
        hold.update(side.hold)
        hold.update(self.target.obstructed(t for t in desired if t not in seen))
        plan = make_plan(desired, owned, {t: v.blob for t, v in seen.items()}, hold=hold, pending=self.pending(),
                         force=force)
        if not any(not companion.is_companion_target(a.target) for a in plan.of("delete")):
            return plan, None  # removing companion files alone is never a mass delete of definitions
        return plan, mass_delete_refusal(plan, owned_count(), self.settings.sync_max_delete_share, allow_mass_delete)

    def _known(self, owned: Mapping[str, Owned | Seen], targets: Iterable[str] | None = None) -> dict[str, Seen]:
        """What each target file (or each of `targets`) held when last looked at (owned, or foreign and
        remembered), by stat."""
        known = {t: Seen(blob, stat) for t, (stat, blob, _) in self.state.foreign_files(targets).items()}
        known.update({t: Seen(o.blob, o.stat) for t, o in owned.items()})
        return known

    def _refresh_foreign(self, seen: Mapping[str, Seen], owned: Mapping[str, Owned],
                         tree: Mapping[str, TreeRecord], scope: Iterable[str]) -> tuple[dict[str, str], set[str]]:
        """Job name -> foreign file defining it, re-parsing only the foreign files in `scope` whose stat changed.
        Also returns the job names that moved (a foreign file came, went or changed)."""
        remembered = self.state.foreign_files()
        wanted = {defset.target_name(p): r.blob for p, r in tree.items()}
        changes: dict[str, tuple[str, str, tuple[str, ...]] | None] = {}
        moved: set[str] = set()
        for name in scope:
            if companion.is_companion_target(name):
                continue  # a file inside a companion folder defines no job
            have, before = seen.get(name), remembered.get(name)
            if have is None or name in owned or wanted.get(name) == have.blob:
                if before is not None:
                    changes[name] = None
                    moved.update(before[2])
                continue
            if before is not None and before[0] == have.stat:
                continue
            try:
                data = self.target.read(name)
            except FileTooLarge:
                data = None  # over the size limit: defines nothing Farm would load either
            names = check_kit(data, name).names if data is not None else ()
            changes[name] = (have.stat, have.blob, names)
            moved.update(names)
            moved.update(before[2] if before else ())
        self.state.remember_foreign(changes)
        remembered.update(changes)  # type: ignore[arg-type]
        foreign = {job: target for target, row in remembered.items() if row is not None for job in row[2]}
        return foreign, moved

    def _scope(self) -> str:
        """What the stored tree covers: repo.path, and the include globs when there are any (a change of either
        compares whole trees, as a first sync does)."""
        path = self.settings.repo_path
        return f"{path} include={','.join(self.include)}" if self.include else path

    def _included(self, path: str) -> bool:
        """A repo path this target gets (target.include, relative to repo.path)."""
        if not self.include:
            return True
        prefix = f"{self.settings.repo_path.rstrip('/')}/" if self.settings.repo_path else ""
        return included(path[len(prefix):], self.include)

    def _validation_key(self) -> str:
        return f"strict={self.settings.sync_strict} max_file_size={self.settings.sync_max_file_size} index=3"

    def recover(self) -> None:
        """Finish the books of an apply a crash interrupted: a journalled file that holds what the apply was
        writing is gitsync's (whatever the branch holds now); one it was deleting and that is gone is
        forgotten; anything else was not touched by the apply, or was changed by someone since, and capture
        judges it against the manifest as usual."""
        if not self._leftovers_removed:  # only a crash leaves temp files, and a crash means a new process
            self.target.remove_leftovers()
            self._leftovers_removed = True
        journal = self.state.journal()
        if not journal and not self.state.get("apply_in_progress"):
            return
        known = self.state.manifest()
        seen = self.target.scan(known)
        seen.update(self.target.scan_names((t for t in journal if companion.is_companion_target(t)), known))
        owned: dict[str, Owned | None] = {}
        for row in journal.values():
            have = seen.get(row.target)
            if row.new_blob is not None and have is not None and have.blob == row.new_blob:
                owned[row.target] = Owned(row.repo_path, row.new_blob, row.names, have.stat, row.new_blob)
            elif row.new_blob is None and have is None:
                owned[row.target] = None
        self.state.record_apply(tree=None, owned=owned, meta={"replan": sorted(journal)}, end_apply=True)
        log.warning("recovered an apply a crash interrupted: %d of %d file(s) it had touched are gitsync's",
                    len(owned), len(journal))

    def adopt_after_state_loss(self, head: str) -> None:
        """After the state database was lost or moved away: own what gitsync evidently wrote, so the sync
        carries on from there instead of calling every file foreign.

        The mirror still records the last applied commit (APPLIED_REF). A target file equal to git's version
        there or at `head` is adopted; one that matches neither is owned as of the applied commit, so the plan
        reports it as drift. Without that record (the mirror was lost too) only exact matches are adopted.
        """
        if self.state.get("applied_commit") or self.state.owned_count():
            return
        seen = self.target.scan({})
        if not seen:
            return
        try:
            last: str | None = self.mirror.resolve(self.applied_ref)
        except GitError:
            return  # no evidence gitsync ever wrote here: the plan adopts exact matches, the rest is foreign
        path = self.settings.repo_path
        trees = {commit: {p: e for p, e in self.mirror.list_tree(commit, path).items() if self._included(p)}
                 for commit in dict.fromkeys([last, head]) if commit}
        owned: dict[str, Owned | None] = {}
        adopted = drift = 0
        for tree in trees.values():
            for repo_path, entry in tree.items():
                target = defset.target_name(repo_path)
                have = seen.get(target)
                if have is None or target in owned or not defset.is_definition_path(repo_path) \
                        or entry.mode not in ("100644", "100755") or have.blob != entry.blob:
                    continue
                names = check_kit(self.mirror.read_blob(entry.blob), repo_path).names
                owned[target] = Owned(repo_path, entry.blob, names, have.stat)
                adopted += 1
        for repo_path, entry in trees[str(last)].items():
            target = defset.target_name(repo_path)
            if target in seen and target not in owned and defset.is_definition_path(repo_path):
                owned[target] = Owned(repo_path, entry.blob, (), "")
                drift += 1
        recovered = {"at": time.time(), "commit": last, "adopted": adopted, "drift": drift}
        self.state.record_apply(tree=None, owned=owned, meta={"recovered": recovered})
        log.warning("the state database was empty but the job directory holds files gitsync wrote: adopted %d "
                    "equal to git's version (last applied commit %s, or %s), %d differing from both reported "
                    "as drift", adopted, str(last)[:12], head[:12], drift)

    def _changes(self, applied: str | None, head: str) -> tuple[list[Change], dict[str, TreeRecord] | None]:
        """The definition files that differ from the applied tree; the whole stored tree too when git's diff
        cannot say (first sync, a new repo.path, the applied commit gone), else None."""
        path = self.settings.repo_path
        same_path = self.state.get("applied_path", path) == self._scope()
        if applied == head and same_path:
            return [], None
        old_tree = None
        if applied and same_path and self.mirror.has_commit(applied):
            changes = self.mirror.diff(applied, head, path)
        else:  # first sync, a new repo.path, or the applied commit is gone: compare whole trees by blob id
            old_tree = self.state.tree()
            now = {p: e for p, e in self.mirror.list_tree(head, path).items() if self._included(p)}
            changes = [Change("M", p, e.blob, e.mode) for p, e in now.items()
                       if p not in old_tree or old_tree[p].blob != e.blob]
            changes += [Change("D", p, None, "") for p in old_tree if p not in now]
        #: Other files that changed under repo.path: those inside a companion folder are synced (companion.py).
        self._other_changes = [c for c in changes if not defset.is_definition_path(c.path) and _valid_name(c.path)]
        changes = [c for c in changes if defset.is_definition_path(c.path) and self._included(c.path)]
        self.unusable_names = tuple(_name_problem(c.path) for c in changes if c.blob and not _valid_name(c.path))
        return [c for c in changes if _valid_name(c.path)], old_tree

    def _companion_changes(self, named: set[str]) -> tuple[set[str], dict[str, set[str]]]:
        """Companion folders to work out whole (those `named` by changed definitions, and those that gained or lost
        a file)
        and, for the rest, the targets of the files that changed in git, found through the stored roots."""
        whole, files = set(named), dict[str, set[str]]()
        others = self._other_changes
        rooted = self.state.folders_rooted({a for c in others for a in companion.ancestors(c.path)}) if others else {}
        for change in others:
            for root in companion.ancestors(change.path):
                folder = rooted.get(root)
                if folder is None:
                    continue
                if change.blob is None or change.status == "A":  # the folder may appear or go: judged again
                    whole.add(folder)
                else:
                    files.setdefault(folder, set()).add(companion.target_of(folder, root, change.path))
        return whole, files

    def _check_blobs(self, items: list[tuple[str, str]]) -> dict[str, Validation]:
        """Each file's job names and own problems (with an empty path), from the validation cache where this blob
        was checked under these rules before; the rest are read in batches and checked, over all cores when many."""
        rules = self._validation_key()
        known = self.state.validations({blob for _, blob in items}, rules)
        todo = list(dict.fromkeys(blob for _, blob in items if blob not in known))
        try:
            for at in range(0, len(todo), _BATCH):
                found = self._validate(todo[at:at + _BATCH], len(todo))
                self.state.remember_validations(rules, found)
                known.update(found)
        finally:
            if self._pool is not None:  # idle workers would hold memory until the next first-sync-sized change
                self._pool.shutdown()
                self._pool = None
        return {path: known[blob] for path, blob in items}

    def _contents(self, blobs: list[str]) -> Iterator[tuple[str, bytes]]:
        """The blobs' bytes in order: kept from validation for a small change, else one `cat-file --batch`."""
        read, self._read = self._read, {}
        if all(blob in read for blob in blobs):
            return ((blob, read[blob]) for blob in blobs)
        return self.mirror.read_blobs(blobs)

    def _validate(self, blobs: list[str], total: int) -> dict[str, Validation]:
        s = self.settings
        sizes = self.mirror.blob_sizes(blobs)  # sizes first: content over the limit is never read
        over = {blob: too_large(sizes[blob], "", s.sync_max_file_size) for blob in blobs
                if sizes[blob] > s.sync_max_file_size}
        blobs = [blob for blob in blobs if blob not in over]
        jobs = [(blob, data, s.sync_strict, s.sync_max_file_size) for blob, data in self.mirror.read_blobs(blobs)]
        if total <= _KEEP_READ:  # a small change: its apply writes these same bytes, without reading them again
            self._read = {blob: data for blob, data, _, _ in jobs}
        if total < _PARALLEL_PARSE_THRESHOLD or (os.cpu_count() or 1) < 2:
            reports = [check_kit(data, "", strict=strict, max_size=size) for _, data, strict, size in jobs]
        else:
            from gitsync import validation_pool

            if self._pool is None:
                self._pool = validation_pool.start()
            reports = validation_pool.check_all(self._pool, jobs)
        found = {job[0]: (report.names, report.problems, report.folders)
                 for job, report in zip(jobs, reports, strict=True)}
        found.update({blob: (report.names, report.problems, report.folders) for blob, report in over.items()})
        return found

    # -- doing --------------------------------------------------------------------------------------
    def sync(self, *, force: bool = False, allow_mass_delete: bool = False,
             fetch: Callable[[], str] | None = None) -> SyncResult:
        """One cycle without push-back (`gitsync sync --once`): recover, pull, record."""
        wall, applied, steps = time.time(), self.state.get("applied_commit"), Steps()
        result = SyncResult("error", applied=applied, message="the pull did not run")
        with steps.step("recover"):
            self.recover()
        with steps.step("pull"):
            result = self.pull(force=force, allow_mass_delete=allow_mass_delete, fetch=fetch)
        self.record(result, wall, previous=applied, failures=steps.failures)
        return result

    def pull(self, *, force: bool = False, allow_mass_delete: bool = False,
             fetch: Callable[[], str] | None = None) -> SyncResult:
        """Fetch, diff, validate, plan and apply; failures git or the disk can produce become an "error"
        result (the last good state stays), anything else is raised to the caller's step boundary. `fetch`:
        the cycle's one fetch shared by several targets (target_set.SharedFetch); default: fetch here."""
        started = time.monotonic()
        applied = self.state.get("applied_commit")
        # Nobody watched (`sync --once`) and the last look was remembered: the directory's fingerprint is taken
        # on a thread while git fetches (a stat per entry, ~40 ms for 10,000 files, otherwise added to the wait).
        self._early_look = EarlyLook(self.target.fingerprint) \
            if self.dirty is nobody_watched and self.state.get(LOOK_KEY) and not self.state.has_companions() else None
        try:
            progress.step(f"fetching {self.settings.repo_ref or self.settings.repo_branch}")
            head = fetch() if fetch is not None else fetch_target(self.mirror, self.settings.repo_ref)
            faults.reached("pull.fetched")
            if applied and not force and not self.target.directory.is_dir():
                raise TargetError(f"the job directory {self.target.directory} is gone (deleted or unmounted?); "
                                  "nothing was written: restore or mount it, or run with --force to recreate it "
                                  "with git's definitions")
            # is_ancestor deepens a shallow mirror as far as needed (the applied commit may be missing from it
            # after a re-clone, or below the boundary after a long stop), so missing history is never a force-push
            if applied and applied != head and not self.settings.repo_ref \
                    and not self.mirror.is_ancestor(applied, head):
                if self.settings.sync_on_force_push == "refuse":
                    raise GitError(f"branch {self.settings.repo_branch} was rewritten (force-push): {applied[:12]} "
                                   f"is not in the history of {head[:12]}; refusing (sync.on_force_push = refuse): "
                                   f"push a commit on top of {applied[:12]} or set sync.on_force_push = apply")
                log.warning("branch %s was rewritten (force-push): %s is no longer in its history; syncing to %s",
                            self.settings.repo_branch, applied[:12], head[:12])
            untrusted = self._untrusted(head)
            if untrusted:
                result = SyncResult("refused", head=head, applied=applied, message=untrusted)
            else:
                self.adopt_after_state_loss(head)
                self.unusable_names = ()
                progress.step(f"validating {head[:12]}")
                prepared = self.prepare(head, force=force, allow_mass_delete=allow_mass_delete)
                faults.reached("pull.validated")
                if self.unusable_names:  # cannot be stored, written or named to Farm: the commit is held back
                    bad = self.unusable_names
                    result = SyncResult("invalid", head=head, applied=applied, problems=list(bad),
                                        message=f"commit {head[:12]} not applied: {bad[0].format()}")
                else:
                    progress.step("writing", 0, len(prepared.plan.of("write")))
                    result = self._apply(prepared)
                if len(prepared.touched) > _RELEASE_AFTER:
                    del prepared
                    self.state.shrink_memory()
                    _release_memory()
        except (GitError, ConfigError, TargetError, StateError) as exc:
            result = SyncResult("error", applied=applied, message=str(exc))
        except OSError as exc:  # the target: missing permissions, full disk, a file where a folder should be
            where = exc.filename or self.target.directory
            result = SyncResult("error", applied=applied,
                                message=f"cannot update the job directory ({where}): {exc.strerror or exc}")
        result.duration = time.monotonic() - started
        return result

    def _untrusted(self, head: str) -> str | None:
        """Why `head` may not be applied under sync.require_signed (None: it may)."""
        s = self.settings
        if not s.sync_require_signed:
            return None
        from gitsync.signatures import TrustedKeys, untrusted_reason

        return untrusted_reason(self.mirror, head, TrustedKeys(s.sync_allowed_signers_file, s.sync_gpg_keyring_file))

    def _apply(self, p: Prepared) -> SyncResult:
        base = SyncResult("noop", head=p.head, applied=p.applied, problems=list(p.problems),
                          findings=list(p.plan.findings), judged=p.judged)
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
            self.guard()
            self.state.begin_apply(p.head, [
                JournalRow(a.target, a.repo_path, p.seen[a.target].blob if a.target in p.seen else None,
                           a.blob, _names(p, a.repo_path) if a.blob else ())
                for a in [*writes, *deletes]])
            faults.reached("apply.journalled")
        planned = {t: seen.stat for t, seen in p.seen.items()}
        contents = self._contents([str(a.blob) for a in writes])
        stats = self.target.write_many(((a.target, data) for a, (_, data) in _counted(
            zip(writes, contents, strict=True), "writing", len(writes))), planned, batch=len(writes) > 64) \
            if writes else {}
        for a in writes:
            if a.target in stats:
                owned[a.target] = Owned(a.repo_path, str(a.blob), _names(p, a.repo_path), stats[a.target])
        for a in p.plan.of("adopt"):
            owned[a.target] = Owned(a.repo_path, str(a.blob), _names(p, a.repo_path), p.seen[a.target].stat)
        deleted = set(self.target.delete((a.target for a in deletes), planned))
        for a in [*(d for d in deletes if d.target in deleted), *p.plan.of("forget")]:
            owned[a.target] = None
        changed_meanwhile = [a.target for a in [*writes, *deletes] if a.target not in stats and a.target not in deleted
                             and a.target not in self.target.refused]
        for target, why in self.target.refused.items():
            base.findings.append(Finding("held", target, f"{target} was not written: {why}"))
        if changed_meanwhile:
            log.warning("%s changed while syncing; left as they are for the next cycle", ", ".join(changed_meanwhile))
        if writes or deletes:
            faults.reached("apply.written")
        self.state.record_apply(tree={path: p.tree.get(path) for path in p.touched}, owned=owned, meta={
            "applied_commit": p.head, "applied_path": self._scope(),
            "validated_with": self._validation_key(), "replan": None}, end_apply=True, problems=p.path_problems)
        if writes or deletes:
            faults.reached("apply.recorded")
        self._remember_look(p)
        self.mirror.update_ref(self.applied_ref, p.head)
        base.applied = p.head
        base.written = [a.target for a in writes if a.target in stats]
        base.removed = [a.target for a in deletes if a.target in deleted]
        held = [f for f in base.findings if f.kind in ("held", "foreign")]
        base.result = "partial" if held else ("synced" if writes or deletes or p.head != p.applied else "noop")
        return base

    def _remember_look(self, p: Prepared) -> None:
        """Without a watcher, the next `sync --once` learns whether anything changed locally from one stat per
        entry (the fingerprint) instead of comparing every file with the manifest. Stored: the fingerprint the
        directory has after this apply (the one before with the looked-at entries' changes folded in) and the
        targets whose stat differs from what the state records for them (drift, files equal to git's version
        after a `touch`, ...), which the next sync looks at again. Every other entry holds what the state records,
        so while the fingerprint stays equal, only those need a look. Any write to the manifest or the foreign
        files drops the record (triggers in state.py), and a look that cannot be summed up is not stored."""
        if p.fingerprint is None or UNKNOWN in p.looked.values() \
                or any(companion.is_companion_target(t) for t in p.looked):
            return  # a companion file is not a directory entry the fingerprint sums
        now = self.target.stat_keys(p.looked)
        after = Fingerprint(p.fingerprint)
        for target, before in p.looked.items():
            after.replace(target, before, now[target])
        recorded = self.state.recorded_stats(p.looked)
        still_open = sorted(t for t in p.looked if now[t] != recorded.get(t))
        if len(still_open) <= _MAX_OPEN:
            self.state.set(**{LOOK_KEY: {"fingerprint": after.value, "open": still_open}})

    def _looked(self, scope: Iterable[str], seen: Mapping[str, Seen]) -> dict[str, str | None]:
        """The stat key each looked-at target had, as the fingerprint counted it (see `Prepared.looked`)."""
        return {t: seen[t].stat if t in seen else (UNKNOWN if os.path.lexists(self.target.directory / t) else None)
                for t in scope}

    def record(self, r: SyncResult, wall: float, previous: str | None,
               failures: list[StepFailure] | tuple[StepFailure, ...] = ()) -> None:
        """The record step: what the operator sees in status, history and one log line. A failure of any
        step makes the cycle a failure, even when the pull itself applied a commit."""
        before = (self.state.get("last_result"), self.state.get("last_message"), self.state.get("findings", []))
        fail_on_steps(r, failures)
        span = f"{(r.head or previous or 'nothing')[:12]}" if r.head in (None, previous) else \
            f"{(previous or 'empty')[:12]}..{(r.head or '')[:12]}"
        meta = status_fields(r, wall, self.state, self.mirror, commit_info=True)
        faults.reached("record.state")
        self.state.set(**meta)
        if r.result != "noop":
            self.state.add_history(HistoryRow(wall, r.duration, previous, r.head, r.result,
                                              len(r.written), len(r.removed), r.message),
                                   keep=self.settings.state_history_limit)
        line = (f"sync {span}: {r.result}, {len(r.written)} written, {len(r.removed)} removed, "
                f"{sum(1 for f in r.findings if f.kind == 'held')} held ({r.duration:.2f} s)")
        if r.message:
            line += f": {r.message}"
        log.log(quiet.sync_line_level(r.result, r.ok, r.message, before[0], before[1],
                                      changed=bool(r.written or r.removed)), line)
        for finding in quiet.fresh(r.findings, before[2]):
            log.warning("%s: %s", finding.kind, finding.detail)


def fail_on_steps(r: SyncResult, failures: list[StepFailure] | tuple[StepFailure, ...]) -> None:
    """A failure of any step makes the cycle a failure, even when the pull itself applied a commit; the
    message names every failed step before the pull's own. Shared by the directory and API syncers."""
    r.failures = list(failures)
    if r.failures and r.ok:
        r.pulled, r.result = r.result, "error"
    r.message = "; ".join([*(f.format() for f in r.failures), *([r.message] if r.message else [])])


def status_fields(r: SyncResult, wall: float, state: State, mirror: GitMirror, *,
                  commit_info: bool = False) -> dict[str, object]:
    """The state fields one recorded cycle sets (what status and /status show), shared by the directory
    and API syncers; `commit_info` adds the applied and fetched commits' details (directory syncer)."""
    meta: dict[str, object] = {
        "last_attempt_at": wall, "last_result": r.result, "last_message": r.message,
        "failing_steps": {f.step: f.message for f in r.failures},
        "head_commit": r.head or state.get("head_commit"),
        "consecutive_failures": 0 if r.ok else int(state.get("consecutive_failures", 0)) + 1}
    if r.head is not None:  # the pull reached git: what it found about the definitions is news
        meta.update(problems=problems_json(r.problems), findings=[f.__dict__ for f in r.findings],
                    problems_looked=sorted(r.judged) if r.judged is not None else None)
    if r.ok:
        meta["last_success_at"] = wall
    if r.applied_now or (r.ok and state.get("applied_at") is None):
        meta["applied_at"] = wall
        if commit_info:  # one `git log` for both: the summary is the info's subject and author
            info = mirror.commit_info(r.applied) if r.applied else None
            meta["applied_commit_info"] = info
            meta["applied_summary"] = f"{info['subject']} ({info['author']})".strip() if info else ""
        else:
            meta["applied_summary"] = mirror.commit_summary(r.applied) if r.applied else ""
    if commit_info and r.head and r.head != r.applied:
        meta["head_commit_info"] = mirror.commit_info(r.head)
    return meta


def _counted(items: Iterable[_T], phase: str, total: int) -> Iterator[_T]:
    """`items`, reporting each one to the progress line (a no-op unless a terminal shows one)."""
    for done, item in enumerate(items, 1):
        progress.step(phase, done, total)
        yield item


def _not_in_place(tree: Mapping[str, TreeRecord], owned: Mapping[str, Owned]) -> set[str]:
    """Repo files whose version is not the one in the target yet: a clash is blamed on these, so the
    definitions already serving jobs keep serving them."""
    fresh = set()
    for path, record in tree.items():
        mine = owned.get(defset.target_name(path))
        if mine is None or mine.repo_path != path or mine.base != record.blob:
            fresh.add(path)
    return fresh


def _foreign_clashes(desired: Mapping[str, Desired], foreign: Mapping[str, str]) -> dict[str, str]:
    """Repo files whose job names a file gitsync does not own already defines: Farm would keep one."""
    clashes: dict[str, str] = {}
    for target, want in desired.items():
        for job in want.names:
            other = foreign.get(job)
            if other and other != target:
                clashes[target] = (f"job {job!r} is already defined by {other}, which gitsync does not own; "
                                   f"{want.repo_path} is not synced until one of them is renamed or removed")
    return clashes


def _names(p: Prepared, repo_path: str) -> tuple[str, ...]:
    """A written file's job names (a companion file has none)."""
    record = p.tree.get(repo_path)
    return record.names if record is not None else ()


def nobody_watched() -> set[str] | None:
    """The default `Syncer.dirty`: no watcher, so every file may have changed."""
    return None


class EarlyLook:
    """A look at the target directory run on a thread, so it overlaps with the fetch that precedes its use. A
    change made after it is seen by the next sync: the fingerprint it stores sums what was looked at."""

    def __init__(self, look: Callable[[], int | None]) -> None:
        self._value: int | None = None
        self._thread = threading.Thread(target=self._run, args=(look,), name="gitsync-look", daemon=True)
        self._thread.start()

    def _run(self, look: Callable[[], int | None]) -> None:
        self._value = look()

    def result(self) -> int | None:
        self._thread.join()
        return self._value


def _folder_names(record: TreeRecord | None) -> set[str]:
    return {folder for folder, _ in record.folders} if record is not None else set()


def _flat(problems: Mapping[str, list[Problem]]) -> tuple[Problem, ...]:
    return tuple(sorted(p for found in problems.values() for p in found))

def _valid_name(path: str) -> bool:
    """Git paths are bytes; one that is not UTF-8 (decoded with surrogates) cannot be a Farm job file name."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _name_problem(path: str) -> Problem:
    shown = path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return Problem(shown, 1, 1, "error", "file name is not valid UTF-8",
                   "rename the file in git to a UTF-8 name (the job directory and Farm need one)")


def _release_memory() -> None:
    """After a sync that handled thousands of files, give the freed heap back to the system: glibc keeps it
    otherwise, and an idle agent would hold tens of MB it never uses again."""
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _normalise_url(url: str) -> str:
    """A local directory that is a work tree (not bare) is fetched like any other remote."""
    if "://" not in url and not url.startswith("git@") and Path(url).expanduser().exists():
        return str(Path(url).expanduser().resolve())
    return url
