"""One pull sync into a jobs service: fetch, read the commit's definitions, validate all of them, apply.

The same shape as sync.py's directory sync, with definitions instead of files: every `.kit` file
under `repo.path` (and the target's `include` globs) is checked exactly as for a directory, and with
`sync.on_invalid = refuse` (the default) a commit with any error makes no call at all. Validation
results are cached by blob id, so a sync after a one-file commit parses one file.
"""

from __future__ import annotations

import fnmatch
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from gitsync import defset
from gitsync.api_plan import Wanted, wanted_from_kit
from gitsync.api_target import ApiTarget
from gitsync.config import Settings
from gitsync.cycle import StepFailure, Steps
from gitsync.errors import ConfigError, GitsyncError
from gitsync.gitrepo import GitMirror
from gitsync.jobs_api import JobsApiClient
from gitsync.kit import check_kit
from gitsync.model import HistoryRow
from gitsync.problems import Problem
from gitsync.secrets import Secret
from gitsync.state import State, StateLock
from gitsync.sync import SyncResult, fail_on_steps, status_fields

log = logging.getLogger("gitsync.api")


@dataclass(frozen=True)
class _Checked:
    names: tuple[str, ...]
    problems: tuple[Problem, ...]
    wanted: Mapping[str, Wanted]


@dataclass(frozen=True)
class CommitDefinitions:
    """A commit's definitions for one target, after validating all of them."""

    wanted: dict[str, Wanted]
    problems: tuple[Problem, ...]
    invalid: frozenset[str]  # repo paths with an error
    invalid_names: frozenset[str]  # job names those files define (when they parse)


def matches(path: str, include: tuple[str, ...]) -> bool:
    """`include` globs are relative to repo.path; `*` and `**` both cross folders. No globs: everything."""
    return not include or any(fnmatch.fnmatchcase(path, pattern) for pattern in include)


class ApiSyncer:
    """Pulls one branch of one repo into one jobs service."""

    def __init__(self, settings: Settings, state: State, mirror: GitMirror, target: ApiTarget, *,
                 include: tuple[str, ...] = ()) -> None:
        self.settings = settings
        self.state = state
        self.mirror = mirror
        self.target = target
        self.include = include
        #: Runs right before every call that changes the service; raises to stop (see ha.py).
        self.guard: Callable[[], None] = lambda: None
        #: Names whose change on the service is on its way to git; the pull leaves them alone.
        self.pending: Callable[[], Mapping[str, str]] = dict
        self._cache: dict[str, _Checked] = {}
        self._lock: StateLock | None = None
        self._owns_mirror = True

    @classmethod
    def from_settings(cls, settings: Settings, *, lock: bool = True, mirror: GitMirror | None = None) -> ApiSyncer:
        """The syncer `gitsync sync`, `plan` and `run` use for `target.kind = "jobs-api"`. `lock=False`: the
        caller holds the state directory (another target of the same process), or opens the state beside a
        running agent and takes its turn (turn.py); `mirror`: the mirror another target opened (several
        targets share one fetch), closed by its owner."""
        from gitsync.api_store import ApiRecord, Record, SharedRecord
        from gitsync.credentials import credentials_from
        from gitsync.outbox import Outbox
        from gitsync.state import StateLock
        from gitsync.sync import _normalise_url
        from gitsync.target_set import target_state_dir

        settings.require("repo.url", "target.url")
        if not (settings.target_api_key_file or settings.target_api_key_env):
            raise ConfigError("target.kind = jobs-api needs the jobs service's api_key: set target.api_key_file "
                              "(GITSYNC_TARGET_API_KEY_FILE) or target.api_key_env (GITSYNC_TARGET_API_KEY_ENV)")
        state_dir = settings.state_path
        held = StateLock(state_dir) if lock else None
        shared = mirror is not None
        name = settings.target_name
        try:
            if mirror is None:
                mirror = GitMirror(state_dir / "mirror.git", _normalise_url(settings.repo_url), settings.repo_branch,
                                   credentials=credentials_from(settings), timeout=settings.sync_timeout,
                                   depth=settings.repo_fetch_depth)
            state = State(target_state_dir(settings))
            _claim(state, settings.target_url)
            client = JobsApiClient(settings.target_url, api_key_reader(settings), timeout=settings.target_timeout)
            record: Record = ApiRecord(state, name)
            if settings.ha_redis_url:  # replicas share what they saved, so a successor neither re-saves nor balks
                record = SharedRecord(ApiRecord(state, name), Secret(settings.ha_redis_url), settings.ha_key)
            target = ApiTarget(name, client, record, prune="all" if settings.target_prune == "all" else "owned")
            syncer = cls(settings, state, mirror, target, include=settings.include)
        except BaseException:
            if held is not None:
                held.release()
            raise
        syncer._lock = held
        syncer._owns_mirror = not shared
        syncer.pending = Outbox(state).held_targets  # changes made on the service on their way to git: not drift
        return syncer

    def close(self) -> None:
        self.target.client.close()
        close_record = getattr(self.target.record, "close", None)
        if close_record is not None:
            close_record()
        if self._owns_mirror:
            self.mirror.close()
        self.state.close()
        if self._lock is not None:
            self._lock.release()

    # -- reading the commit ---------------------------------------------------------------------------
    def definitions(self, head: str) -> CommitDefinitions:
        s = self.settings
        if not self.mirror.path_exists(head, s.repo_path):
            raise ConfigError(f"repo.path {s.repo_path!r} does not exist in commit {head[:12]}; "
                              "set repo.path to the folder that holds the .kit files")
        prefix = f"{s.repo_path.rstrip('/')}/" if s.repo_path else ""
        checked: dict[str, _Checked] = {}
        for path, entry in self.mirror.list_tree(head, s.repo_path).items():
            if not defset.is_definition_path(path) or not matches(path[len(prefix):], self.include):
                continue
            if entry.mode == "120000":
                checked[path] = _Checked((), (defset.symlink_problem(path),), {})
            elif entry.mode != "160000":
                checked[path] = self._check(path, entry.blob)
        problems: dict[str, list[Problem]] = {p: [x.at(p) for x in c.problems] for p, c in checked.items()}
        by_name: dict[str, list[str]] = {}
        for path, c in checked.items():
            for name in c.names:
                by_name.setdefault(name, []).append(path)
        for name, paths in by_name.items():
            if len(paths) > 1:
                for path in paths:
                    other = next(p for p in sorted(paths) if p != path)
                    problems[path].append(Problem(path, 1, 1, "error", f"job name {name!r} is also defined in "
                                                  f"{other}; the jobs service would keep only one",
                                                  "rename or remove one of the definitions"))
        invalid = frozenset(defset.error_paths(problems))
        wanted = {n: w for p, c in checked.items() if p not in invalid for n, w in c.wanted.items()}
        invalid_names = frozenset(n for p in invalid for n in checked[p].names)
        flat = tuple(sorted(x for found in problems.values() for x in found))
        return CommitDefinitions(wanted, flat, invalid, invalid_names)

    def names_in(self, path: str, blob: str) -> tuple[str, ...]:
        """The job names one file version defines (from the validation cache: each blob is parsed once)."""
        return self._check(path, blob).names

    def _check(self, path: str, blob: str) -> _Checked:
        cached = self._cache.get(blob)
        if cached is None:
            s = self.settings
            data = self.mirror.read_blob(blob)
            report = check_kit(data, path, strict=s.sync_strict, max_size=s.sync_max_file_size)
            cached = _Checked(report.names, report.problems, wanted_from_kit(path, data) if report.ok else {})
            self._cache[blob] = cached
        if any(w.repo_path != path for w in cached.wanted.values()):  # the same content at another path
            cached = _Checked(cached.names, cached.problems,
                              {n: Wanted(path, w.definition, w.fingerprint) for n, w in cached.wanted.items()})
        return cached

    # -- syncing (the same steps as sync.Syncer, so the agent's cycle drives either) -------------------
    def sync(self, *, force: bool = False, allow_mass_delete: bool = False,
             fetch: Callable[[], str] | None = None) -> SyncResult:
        """One cycle without push-back (`gitsync sync --once`): pull, record."""
        wall, applied, steps = time.time(), self.state.get("applied_commit"), Steps()
        result = SyncResult("error", applied=applied, message="the pull did not run")
        with steps.step("pull"):
            result = self.pull(force=force, allow_mass_delete=allow_mass_delete, fetch=fetch)
        self.record(result, wall, previous=applied, failures=steps.failures)
        return result

    def recover(self) -> None:
        """Nothing to finish: an apply cut short is completed by the next plan, which starts from `/load` and
        the per-call record (see api_store.py)."""

    def pull(self, *, force: bool = False, allow_mass_delete: bool = False,
             fetch: Callable[[], str] | None = None) -> SyncResult:
        """`fetch`: the cycle's one fetch shared by several targets (target_set.SharedFetch)."""
        started = time.monotonic()
        applied = self.state.get("applied_commit")
        try:
            head = fetch() if fetch is not None else self.mirror.fetch()
            result = self._apply(head, applied, force=force, allow_mass_delete=allow_mass_delete)
        except GitsyncError as exc:  # git, or the jobs service: down, wrong key, refused a definition
            result = SyncResult("error", applied=applied, message=str(exc))
        result.duration = time.monotonic() - started
        return result

    def _apply(self, head: str, applied: str | None, *, force: bool, allow_mass_delete: bool) -> SyncResult:
        s = self.settings
        found = self.definitions(head)
        result = SyncResult("noop", head=head, applied=applied, problems=list(found.problems))
        if found.invalid and s.sync_on_invalid == "refuse":
            errors = [x for x in found.problems if x.severity == "error"]
            result.result = "invalid"
            result.message = (f"commit {head[:12]} not applied: {len(errors)} error(s) in {len(found.invalid)} "
                              f"file(s); {(applied or 'nothing')[:12]} stays in place. First: {errors[0].format()}")
            return result
        recorded = self.target.record.applied()
        hold = {n: f"{r.repo_path} is invalid; the last good version stays" for n, r in recorded.items()
                if r.repo_path in found.invalid}
        hold.update({n: "its file is invalid; the last good version stays" for n in found.invalid_names})
        outcome = self.target.apply(found.wanted, hold=hold, pending=self.pending(), force=force,
                                    allow_mass_delete=allow_mass_delete, max_delete_share=s.sync_max_delete_share,
                                    guard=self.guard)
        result.findings = list(outcome.plan.findings)
        result.written, result.removed = outcome.saved, outcome.removed
        if outcome.refusal:
            result.result, result.message = "refused", outcome.refusal
        elif outcome.error:
            result.result, result.message = "error", outcome.error
        else:
            self.state.set(applied_commit=head)
            result.applied = head
            held = [f for f in outcome.plan.findings if f.kind in ("held", "foreign")]
            result.result = "partial" if held else ("synced" if outcome.saved or outcome.removed or head != applied
                                                    else "noop")
        return result

    def record(self, r: SyncResult, wall: float, previous: str | None,
               failures: list[StepFailure] | tuple[StepFailure, ...] = ()) -> None:
        """What the operator sees in status, history and one log line; any failed step fails the cycle. As for
        a directory (quiet.py): an idle cycle, which push-back's poll runs every few seconds, logs at DEBUG."""
        from gitsync import quiet

        before = (self.state.get("last_result"), self.state.get("last_message"), self.state.get("findings", []))
        fail_on_steps(r, failures)
        self.state.set(**status_fields(r, wall, self.state, self.mirror))
        if r.result != "noop":
            self.state.add_history(HistoryRow(wall, r.duration, previous, r.head, r.result, len(r.written),
                                              len(r.removed), r.message))
        span = (previous or "nothing")[:12] if r.head in (None, previous) else \
            f"{(previous or 'empty')[:12]}..{(r.head or '')[:12]}"
        line = (f"sync {span} -> {self.target.describe()}: {r.result}, {len(r.written)} saved, "
                f"{len(r.removed)} removed ({r.duration:.2f} s)")
        if r.message:
            line += f": {r.message}"
        log.log(quiet.sync_line_level(r.result, r.ok, r.message, before[0], before[1],
                                      changed=bool(r.written or r.removed)), line)
        for finding in quiet.fresh(r.findings, before[2]):
            log.warning("%s: %s", finding.kind, finding.detail)


def api_key_reader(settings: Settings) -> Callable[[], Secret]:
    """Reads the API key again on every call (a rotated secret needs no restart); warns once about Farm's
    well-known default key."""
    from gitsync import farm
    from gitsync.credentials import read_secret

    warned = False

    def read() -> Secret:
        nonlocal warned
        key = read_secret(settings.target_api_key_file, settings.target_api_key_env, "jobs service API key")
        if key.reveal() == farm.DEFAULT_API_KEY and not warned:
            warned = True
            log.warning("the jobs service's api_key is Farm's default %r: anyone who can reach it can save and "
                        "remove job definitions; set a real key on the service and in target.api_key_file",
                        farm.DEFAULT_API_KEY)
        return key

    return read


def _claim(state: State, url: str) -> None:
    """One state directory per target: a second jobs service must not inherit this one's record."""
    from gitsync.secrets import redact_url

    shown = redact_url(url.rstrip("/"))  # what is stored must be safe to show
    recorded = state.get("target_url")
    if recorded is None:
        state.set(target_url=shown)
    elif recorded != shown:
        raise ConfigError(f"state directory {state.path.parent} belongs to jobs service {recorded}, not {shown}; "
                          "use another --state-dir for this target")
