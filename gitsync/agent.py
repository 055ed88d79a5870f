"""The long-running agent: triggers ask for work, one worker thread does it.

Timer, webhook and SIGHUP only *request* a sync through a one-slot queue (requests made while
one is pending coalesce), and a single worker owns git and the target. So two syncs never run
at once, and a burst of webhooks costs one fetch.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from gitsync.capture import capture
from gitsync.commit_status import StatusPoster
from gitsync.config import Settings
from gitsync.cycle import STEPS, Steps
from gitsync.dirty import DirtySet
from gitsync.maintenance import Maintenance, describe_state
from gitsync.metrics import Metrics
from gitsync.outbox import Outbox
from gitsync.pushback import PushBack
from gitsync.quiet import Heartbeat
from gitsync.report import status_report
from gitsync.sync import Syncer, SyncResult
from gitsync.target_set import SharedFetch, Unit
from gitsync.turn import turn
from gitsync.watch import Debouncer, DirectoryWatcher

if TYPE_CHECKING:
    from gitsync.api_sync import ApiSyncer
    from gitsync.ha import Elector

log = logging.getLogger("gitsync.agent")

#: The longest an idle worker sleeps without being woken (a safety net: every trigger wakes it at once).
IDLE_WAKE = 60.0

class Agent:
    """Each cycle (`run_once`): recover, capture, flush, pull, record. Pushing before pulling means the pull
    that follows already brings git's version of what was just saved.

    Several targets (`[[target]]`): each one is a `Unit` with its own syncer, state and push-back; a cycle
    runs recover, capture and flush for each, then one fetch that every target's pull and record share. Each
    target's steps have their own error boundaries, so one target failing never stops the others."""

    def __init__(self, settings: Settings, syncer: Syncer | ApiSyncer, metrics: Metrics | None = None,
                 pushback: PushBack | None = None, elector: Elector | None = None, *,
                 units: Sequence[Unit] = ()) -> None:
        self.settings = settings
        #: The targets, the first one built from `syncer` and `pushback`.
        self.units: list[Unit] = [Unit(settings.targets()[0] if units else settings, syncer, pushback), *units]
        #: High availability: only the replica holding the lease runs cycles; the others stand by.
        self.elector = elector
        #: False when a Replica (replica.py) runs the elector and this agent only while it leads.
        self.owns_elector = True
        self.metrics = metrics or Metrics()
        if elector is not None:
            self.metrics.add_ha()
        for unit in self.units:
            self.metrics.add_target(unit.name)
            unit.conflicts_seen = _newest_conflict(unit.syncer.state.get("conflicts", []))
        self.ready = threading.Event()
        self.last_result: SyncResult | None = None
        self._wake: queue.Queue[str] = queue.Queue(maxsize=1)
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._loop, name="gitsync-worker", daemon=True)
        self._scheduler: Any = None
        self._server: Any = None
        self.syncs_done = 0
        self._cycle_started: float | None = None  # monotonic start of the cycle in progress, for /healthz
        self._done = threading.Condition()
        self._current_step = ""
        self.upkeep = Maintenance(settings, syncer.state, syncer.mirror)
        self.upkeep.other_states = lambda: [u.syncer.state for u in self.units[1:]]
        self.heartbeat = Heartbeat(settings.log_heartbeat)

    @property
    def syncer(self) -> Syncer | ApiSyncer:
        """The first target's syncer (the only one with a single `[target]`)."""
        return self.units[0].syncer

    @property
    def pushback(self) -> Any:
        return self.units[0].pushback

    @property
    def status_poster(self) -> StatusPoster | None:
        return self.units[0].status_poster

    @status_poster.setter
    def status_poster(self, poster: StatusPoster | None) -> None:
        self.units[0].status_poster = poster

    # -- triggers -----------------------------------------------------------------------------------
    def request_sync(self, reason: str) -> None:
        with contextlib.suppress(queue.Full):  # a sync is already pending; it will see the newest commit
            self._wake.put_nowait(reason)

    def wait_for_syncs(self, count: int, timeout: float) -> bool:
        """Block until `count` syncs have finished since start (for tests and the demo)."""
        with self._done:
            return self._done.wait_for(lambda: self.syncs_done >= count, timeout)

    # -- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> None:
        log.info("starting: %s", self.settings.describe())
        if self.elector is not None and self.owns_elector:
            self.elector.start()
        for unit in self.units:  # watching before the first cycle: its full scan misses nothing
            if unit.pushback is not None and isinstance(unit.syncer, Syncer):
                unit.debouncer = Debouncer(self.settings.push_debounce, lambda: self.request_sync("local change"))
                unit.dirty = DirtySet(root=unit.syncer.target.directory)
                unit.watcher = DirectoryWatcher(unit.syncer.target.directory, unit.debouncer.poke, dirty=unit.dirty)
                unit.watcher.start()
        self._worker.start()
        self.request_sync("start")
        self._start_scheduler()
        if self.settings.server_listen:
            self._start_server()

    def stop(self, timeout: float = 25.0) -> bool:
        """Finish the step in progress, then stop everything, within `timeout` seconds in total (Kubernetes
        sends SIGKILL 30 s after SIGTERM). Returns False when the worker was still busy at the deadline: the
        database and the mirror are then left open under it (closing them under a running step is what would
        corrupt things; the process exiting is no worse than a SIGKILL, which the journal covers)."""
        deadline = time.monotonic() + timeout
        self._stop.set()
        self.request_sync("stop")
        for unit in self.units:
            if unit.watcher is not None:
                unit.watcher.stop()
            if unit.debouncer is not None:
                unit.debouncer.close()
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
        if self._worker.is_alive():
            self._worker.join(max(0.1, deadline - time.monotonic() - 1.0))
        if self.elector is not None and self.owns_elector and not self._worker.is_alive():
            self.elector.stop()  # hands the lease over at once: a follower need not wait for the TTL
        if self._server is not None:
            self._server.stop()
        if self._worker.is_alive():  # the lease, if any, expires on its own: nobody applies over this step
            log.warning("stopping while a %s step is still running; it is abandoned, and the next start "
                        "recovers what it left", self._current_step or "cycle")
            return False
        for unit in reversed(self.units):  # the first one owns the mirror and the lock: closed last
            unit.syncer.close()
        return True

    @property
    def server_port(self) -> int | None:
        return self._server.port if self._server is not None else None

    def _start_scheduler(self) -> None:
        from apscheduler.schedulers.background import BackgroundScheduler
        from apscheduler.triggers.cron import CronTrigger
        from apscheduler.triggers.interval import IntervalTrigger

        s = self.settings
        logging.getLogger("apscheduler").setLevel(logging.WARNING)  # it logs every job run at INFO
        jitter = s.sync_jitter or None
        if s.sync_cron:
            trigger = CronTrigger.from_crontab(s.sync_cron)
            trigger.jitter = jitter  # from_crontab() takes no jitter argument in APScheduler 3
        else:
            trigger = IntervalTrigger(seconds=s.sync_interval, jitter=jitter)
        grace = max(1, int(s.sync_interval))  # APScheduler's default of 1 s silently drops a late run
        self._scheduler = BackgroundScheduler(daemon=True)
        self._scheduler.add_job(self.request_sync, trigger, args=["schedule"], id="sync", coalesce=True,
                                max_instances=1, misfire_grace_time=grace)
        polled = [u.settings.target_poll_interval for u in self.units
                  if u.pushback is not None and not isinstance(u.syncer, Syncer)]
        if polled:  # a jobs service sends no events: look at its /load on a timer (the shortest of them)
            every = min(polled)
            self._scheduler.add_job(self.request_sync, IntervalTrigger(seconds=every), args=["poll"], id="poll",
                                    coalesce=True, max_instances=1, misfire_grace_time=max(1, int(every)))
        self._scheduler.start()

    def _start_server(self) -> None:
        from gitsync.credentials import read_secret, secret_reader
        from gitsync.http_thread import ServerThread, split_listen
        from gitsync.server import build_app

        secret_file = self.settings.server_webhook_secret_file
        if not read_secret(secret_file, "", "webhook secret"):  # checked now, re-read for every delivery
            log.warning("webhook has no secret (server.webhook_secret_file): anyone who can reach it can "
                        "trigger a fetch")
        app = build_app(status=self.status, ready=self.is_ready, trigger=self.request_sync,
                        metrics=self.metrics, webhook_secret=secret_reader(secret_file, "", "webhook secret"),
                        max_body=self.settings.server_webhook_max_body, branch=self.settings.repo_branch,
                        page=self.status_page, health=self.health, cycle_ok=self.cycle_ok)
        host, port = split_listen(self.settings.server_listen)
        self._server = ServerThread(app, host, port, name="gitsync-http", limit_concurrency=64).start()
        log.info("serving /healthz /readyz /status /metrics and POST /webhook on http://%s:%d", host,
                 self._server.port)

    def status(self) -> dict[str, Any]:
        from gitsync.report import targets_report

        report = status_report(self.settings, self.syncer.state) if len(self.units) == 1 else \
            targets_report(self.settings, [(u.settings, u.syncer.state) for u in self.units])
        if self.elector is not None:
            report["ha"] = self.elector.status()
            if not self.elector.is_leader:
                report["role"] = "standby"
        return report

    def status_page(self) -> str:
        from gitsync.outbox import Outbox
        from gitsync.status_page import PageInputs, render

        history = sorted((row for u in self.units for row in u.syncer.state.history(15)), key=lambda h: -h.started)
        pending = [entry for u in self.units for entry in Outbox(u.syncer.state).entries()]
        return render(PageInputs(self.status(), history[:15], pending, self.next_sync(), time.time()))

    def next_sync(self) -> float | None:
        """When the scheduler fires next (epoch seconds), if it runs."""
        job = self._scheduler.get_job("sync") if self._scheduler is not None else None
        when = getattr(job, "next_run_time", None)
        return when.timestamp() if when is not None else None

    # -- health and readiness -------------------------------------------------------------------------
    def is_ready(self) -> bool:
        """Ready whenever the job directory holds a good commit: after a restart while the branch head is
        broken, Farm's definitions are still the last good ones, so readiness must not drop."""
        if self.elector is not None and not self.elector.is_leader:
            return True  # a follower is ready: it serves, and takes over when the leader goes
        return all(unit.syncer.state.get("applied_commit") is not None for unit in self.units)

    def health(self) -> tuple[bool, str]:
        """Alive: the worker thread runs and no cycle has been going for more than twice sync.timeout."""
        if not self._worker.is_alive() and not self._stop.is_set():
            return False, "the sync worker is not running"
        started = self._cycle_started
        limit = 2 * self.settings.sync_timeout
        if started is not None and time.monotonic() - started > limit:
            return False, (f"a sync cycle has been running for {time.monotonic() - started:.0f} s, more than "
                           f"twice sync.timeout ({limit:.0f} s)")
        return True, "ok"

    # -- the worker ----------------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                reason = self._wake.get(timeout=self._until_retry())
            except queue.Empty:
                if not self._push_retry_due():
                    continue
                reason = "push retry"
            if self._stop.is_set():
                break
            self.run_once(reason)

    def run_once(self, reason: str) -> SyncResult:
        """One cycle, then upkeep. The whole of it holds the turn on the state directory, so a command beside
        the agent (rollback, plan, outbox drop) waits for its end instead of fighting for the state lock."""
        with turn(self.settings.state_path):
            result = self._cycle(reason)
            self._between_cycles(result)
        with self._done:
            self.syncs_done += 1
            self._done.notify_all()
        return result

    def _cycle(self, reason: str) -> SyncResult:
        """One cycle: each target's recover, capture and flush, one fetch, each target's pull and record. Every
        step of every target has its own error boundary: a step that fails is recorded and the next one still
        runs, so definitions keep arriving from git whatever push-back or another target runs into."""
        log.debug("cycle requested by %s", reason)
        if self.elector is not None:
            self.metrics.add_ha().set(1 if self.elector.is_leader else 0)
            if not self.elector.is_leader:
                return self._stand_by()
        self._cycle_started = time.monotonic()
        fetch = SharedFetch(self.syncer.mirror, self.settings.repo_ref) if len(self.units) > 1 else None
        started: list[tuple[Unit, Steps, float, str | None]] = []
        results: list[SyncResult] = []
        try:
            for unit in self.units:
                steps = Steps(seen=unit.tracebacks)
                wall, applied = time.time(), unit.syncer.state.get("applied_commit")
                self._push_side(unit, steps)
                started.append((unit, steps, wall, applied))
            if self._stop.is_set():  # shutting down: the pull and the record wait for the next start
                for unit, *_ in started:
                    if unit.dirty is not None:
                        unit.dirty.everything()
                return SyncResult("error", applied=self.syncer.state.get("applied_commit"),
                                  message="the pull did not run")
            for unit, steps, wall, applied in started:
                results.append(self._pull_side(unit, steps, wall, applied, fetch))
        finally:
            self._cycle_started = None
            self._current_step = ""
        return results[0] if len(results) == 1 else combined(results)

    def _push_side(self, unit: Unit, steps: Steps) -> None:
        """A target's recover, capture and flush (for a directory, of what its watcher saw change)."""
        syncer, pushback = unit.syncer, unit.pushback
        local = self._local_changes(unit)  # only these target files are looked at (None: all of them)
        if isinstance(syncer, Syncer):
            syncer.dirty = lambda: local
        with steps.step("recover"):  # before anything looks at the directory: an interrupted apply is ours
            self._current_step = "recover"
            syncer.recover()
        if pushback is not None and not self._stop.is_set():
            with steps.step("capture"):  # stable local changes -> outbox
                self._current_step = "capture"
                if isinstance(syncer, Syncer):
                    capture(syncer.target, syncer.state, pushback.outbox, self.settings.sync_max_delete_share,
                            names=local, settle=self.settings.push_debounce,
                            max_file_size=self.settings.sync_max_file_size)
                    if unit.debouncer is not None and syncer.state.get("absent_local"):
                        unit.debouncer.poke()  # a missing file is a deletion only if still missing next cycle
                elif callable(getattr(pushback, "capture", None)):  # another kind's push-back brings its own
                    pushback.capture()
            if not self.settings.repo_ref:  # pinned (repo.ref): local changes wait in the outbox
                with steps.step("flush"):  # outbox -> git (its own backoff; never blocks the pull)
                    self._current_step = "flush"
                    pushback.flush()

    def _pull_side(self, unit: Unit, steps: Steps, wall: float, applied: str | None,
                   fetch: SharedFetch | None) -> SyncResult:
        """A target's pull (from the cycle's shared fetch) and record, then what it reports."""
        syncer = unit.syncer
        result = SyncResult("error", applied=applied, message="the pull did not run")
        with steps.step("pull"):  # git -> target, always
            self._current_step = "pull"
            result = syncer.pull(fetch=fetch)
        with steps.step("record"):
            self._current_step = "record"
            syncer.record(result, wall, previous=applied, failures=steps.failures)
        unit.tracebacks = steps.seen
        if steps.failures and unit.dirty is not None:  # what this cycle was told may not have been handled
            unit.dirty.everything()
        if unit.status_poster is not None:
            unit.status_poster.after_sync(result)
        self._observe(unit, result)
        return result

    def _local_changes(self, unit: Unit) -> set[str] | None:
        """What the watcher saw change, including every change made before this cycle began."""
        if unit.dirty is None:
            return None
        if unit.watcher is not None and not unit.watcher.settle():
            unit.dirty.everything()
        return unit.dirty.take()

    def _stand_by(self) -> SyncResult:
        """A follower's cycle: nothing. It is ready (it serves, and takes over when the leader goes)."""
        result = SyncResult("noop", message="standing by: another replica holds the HA lease")
        self.last_result = result
        self.ready.set()
        with self._done:
            self.syncs_done += 1
            self._done.notify_all()
        return result

    def _retry_in(self) -> list[float | None]:
        """Seconds until each waiting push retry is due (negative: overdue); None where the state could not be
        read (a state read failing here is reported by the next cycle's steps)."""
        found: list[float | None] = []
        for unit in self.units:
            if unit.pushback is None:
                continue
            try:
                due = unit.pushback.retry_due()
            except Exception:
                found.append(None)
                continue
            if due is not None:
                found.append(due - unit.pushback.clock())
        return found

    def _until_retry(self) -> float:
        """How long the idle worker may sleep: until the earliest push retry is due, at most IDLE_WAKE seconds.
        Everything else (timer, webhook, watcher, signal, stop) wakes it through the queue, so an idle agent
        does not wake twice a second to look at its database."""
        waits = self._retry_in()
        if None in waits:
            return 0.5
        return max(min([IDLE_WAKE, *(w for w in waits if w is not None)]), 0.01)

    def _push_retry_due(self) -> bool:
        """Push retries keep their own timer: with `sync.interval = 600` a retry due in 2 s still runs in 2 s."""
        return any(wait is not None and wait <= 0 for wait in self._retry_in())

    def cycle_ok(self) -> bool:
        """/syncz: a cycle has succeeded, and the latest one failed in no step for any target (for monitors, not
        for Kubernetes readiness: a failing push-back must not take Farm's API out of its Service)."""
        return self.ready.is_set() and all(u.last_result is not None and u.last_result.ok for u in self.units)

    def _between_cycles(self, result: SyncResult) -> None:
        """Upkeep off the sync path: after the cycle, still holding the turn and so never during a fetch or push."""
        self.heartbeat.observe(result.result)
        try:
            if self.upkeep.run_if_due(active=result.result != "noop") is not None:
                for unit in self.units[1:]:  # the mirror is shared (done above); each target has its own database
                    unit.syncer.state.prune_validation(self.settings.state_validation_cache)
                    unit.syncer.state.checkpoint()
            self.heartbeat.beat_if_due(lambda: "; ".join(
                (f"{u.name}: " if len(self.units) > 1 else "") + describe_state(u.syncer.state) for u in self.units))
        except Exception:  # upkeep must never take the agent down
            log.exception("maintenance crashed (this is a bug in gitsync); syncing goes on")

    def _observe(self, unit: Unit, result: SyncResult) -> None:
        """A target's cycle in the metrics (each series labelled with the target's name)."""
        unit.last_result = result
        self.last_result = result if len(self.units) == 1 else combined([u.last_result for u in self.units
                                                                         if u.last_result is not None])
        m, name, state = self.metrics, unit.name, unit.syncer.state
        m.syncs.labels(result.result, name).inc()
        m.duration.labels(name).observe(result.duration)
        if result.ok:
            m.last_success.labels(name).set(time.time())
        if all(u.last_result is not None and u.last_result.ok for u in self.units):
            self.ready.set()
        failing = {f.step for f in result.failures}
        for step in STEPS:
            m.step_failing.labels(step, name).set(1 if step in failing else 0)
        for step in failing:
            m.step_failures.labels(step, name).inc()
        with contextlib.suppress(Exception):  # the metrics must not turn a recorded failure into a crash
            m.failures.labels(name).set(int(state.get("consecutive_failures", 0)))
            if isinstance(unit.syncer, Syncer):
                m.owned.labels(name).set(state.owned_count())  # a count, not 10,000 rows loaded every cycle
            else:  # a jobs service: the definitions gitsync saved there
                m.owned.labels(name).set(unit.syncer.target.record.count())
            if unit.pushback is not None:
                entries = unit.pushback.outbox.entries()
                m.outbox.labels(name).set(len(entries))
                for status in ("queued", "in_pr", "blocked"):
                    m.outbox_entries.labels(status, name).set(sum(e.status == status for e in entries))
                # `queued` was `pending` until 2026-11: still exported for existing dashboards (deprecated).
                m.outbox_entries.labels("pending", name).set(sum(e.status == "queued" for e in entries))
                m.outbox_oldest.labels(name).set(time.time() - min(e.created for e in entries) if entries else 0)
            conflicts = state.get("conflicts", [])  # the latest 50, each with its time
            m.conflicts.labels(name).inc(sum(1 for c in conflicts if float(c.get("at", 0)) > unit.conflicts_seen))
            unit.conflicts_seen = max(unit.conflicts_seen, _newest_conflict(conflicts))
            m.conflict_branches.labels(name).set(len(conflicts))
            m.commit.labels(name).info({"applied": state.get("applied_commit") or "",
                                        "head": state.get("head_commit") or ""})
            counts = _problem_counts(unit, result)  # reads the state database: inside the guard too
            for severity in ("error", "warning"):
                m.problems.labels(severity, name).set(counts[severity])


def _problem_counts(unit: Unit, result: SyncResult) -> Counter[str]:
    """Problems by severity at the last commit looked at. A pull that judged only the changed files reports
    theirs and the errors: the other files' are counted inside the state database, once per pull that judged
    something (an idle cycle counts nothing again)."""
    if result.judged is None or not isinstance(unit.syncer, Syncer):
        return Counter(p.severity for p in result.problems)
    if result.judged or result.result != "noop" or unit.problem_counts is None:
        state = unit.syncer.state
        counts = Counter(state.problem_counts())  # the stored ones, then the judged paths' as the pull found them
        counts.subtract(p.severity for found in state.problems_of(result.judged).values() for p in found)
        counts.update(p.severity for p in result.problems if p.path in result.judged)
        unit.problem_counts = counts
    return unit.problem_counts


def _newest_conflict(conflicts: list[dict[str, Any]]) -> float:
    return max((float(c.get("at", 0)) for c in conflicts), default=0.0)


def combined(results: Sequence[SyncResult]) -> SyncResult:
    """Several targets' results as one, for what reads a cycle as a whole (upkeep, the heartbeat, /syncz): the
    worst result, each failing target's message, and every target's written and removed files."""
    worst = max(results, key=lambda r: RESULT_RANK[r.result])
    return SyncResult(worst.result, head=worst.head, applied=worst.applied,
                      written=[w for r in results for w in r.written], removed=[x for r in results for x in r.removed],
                      problems=[p for r in results for p in r.problems],
                      findings=[f for r in results for f in r.findings],
                      message="; ".join(r.message for r in results if r.message and not r.ok),
                      duration=sum(r.duration for r in results), failures=[f for r in results for f in r.failures])


#: How bad a result is, for the worst of several targets.
RESULT_RANK = {"noop": 0, "synced": 1, "partial": 2, "invalid": 3, "refused": 4, "error": 5}


def build_agent(settings: Settings, metrics: Metrics | None = None, *, elector: Elector | None = None) -> Agent:
    """The agent for every target, sharing one mirror and one lock: a directory target with push-back (every
    push mode uses it; `off` reverts instead of committing), a jobs-api target pull only; optionally one of
    several replicas behind a Redis lease."""
    from gitsync.target_set import close_all, open_syncers

    syncers = open_syncers(settings)
    given = elector is not None  # a Replica's (replica.py): it starts and stops the elector itself
    try:
        elector = elector or _elector(settings)
        forge = _forge(settings)
        units = [_unit(target, syncer, elector, forge) for target, syncer in zip(settings.targets(), syncers,
                                                                                  strict=True)]
    except BaseException:
        close_all(syncers)
        raise
    agent = Agent(settings, units[0].syncer, metrics, units[0].pushback, elector, units=units[1:])
    agent.owns_elector = not given
    for unit, built in zip(agent.units, units, strict=True):
        unit.status_poster = built.status_poster
        if built.pushback is not None and hasattr(built.pushback, "on_push"):
            built.pushback.on_push = _counter(agent.metrics, unit.name)
    if elector is not None and not given:
        elector.on_change = lambda leading: agent.request_sync("became leader") if leading else None
    return agent


def _counter(metrics: Metrics, name: str) -> Any:
    return lambda result: metrics.pushes.labels(result, name).inc()


def _forge(settings: Settings) -> Any:
    """The forge API client, for pull-request mode and commit statuses (None when neither is on)."""
    if settings.push_mode != "pull-request" and not settings.sync_commit_status:
        return None
    from gitsync.forge import make_forge, token_reader

    token = token_reader(settings.push_forge_token_file or None, settings.push_forge_token_env or None)
    return make_forge(settings.push_forge, settings.push_forge_api_url,  # type: ignore[arg-type]
                      settings.push_forge_repository, token)


def _elector(settings: Settings) -> Elector | None:
    if not settings.ha_redis_url:
        return None
    from gitsync.ha import Elector, Lease
    from gitsync.secrets import Secret

    return Elector(Lease(Secret(settings.ha_redis_url), key=settings.ha_key, ttl=settings.ha_lease_ttl))


def _unit(settings: Settings, syncer: Syncer | ApiSyncer, elector: Elector | None, forge: Any) -> Unit:
    """One target's wiring: its push-back (a directory target's PushBack, a jobs-api target's ApiPushBack), its
    commit-status poster, and the HA guard before every write."""
    from gitsync.commit_status import context_for

    unit = Unit(settings, syncer)
    if elector is not None:
        syncer.guard = elector.check  # right before every apply, /save and /remove
    if isinstance(syncer, Syncer):
        outbox = Outbox(syncer.state)
        unit.pushback = PushBack(settings, syncer.state, syncer.mirror, syncer.target, outbox,
                                 forge=forge if settings.push_mode == "pull-request" else None)
        if elector is not None:
            unit.pushback.guard = elector.check  # right before every push
        syncer.pending = outbox.held_targets
        if settings.sync_commit_status and forge is not None:
            unit.status_poster = StatusPoster(forge, syncer.state, settings.target_directory, context_for(settings))
    else:  # a jobs service: push-back polls its /load (api_pushback.py), the capture step of the cycle
        from gitsync.api_pushback import ApiPushBack

        outbox = Outbox(syncer.state)
        unit.pushback = ApiPushBack(syncer, outbox, forge=forge if settings.push_mode == "pull-request" else None,
                                    guard=elector.check if elector is not None else None)
        syncer.pending = outbox.held_targets  # the pull leaves a definition alone while its change is on its way
    return unit
