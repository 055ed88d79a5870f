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
from collections.abc import Callable
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
from gitsync.turn import turn
from gitsync.watch import Debouncer, DirectoryWatcher

if TYPE_CHECKING:
    from gitsync.api_sync import ApiSyncer
    from gitsync.ha import Elector

log = logging.getLogger("gitsync.agent")

class Agent:
    """Each cycle (`run_once`): recover, capture, flush, pull, record. Pushing before pulling means the pull
    that follows already brings git's version of what was just saved."""

    def __init__(self, settings: Settings, syncer: Syncer | ApiSyncer, metrics: Metrics | None = None,
                 pushback: PushBack | None = None, elector: Elector | None = None) -> None:
        self.settings = settings
        self.syncer = syncer
        #: High availability: only the replica holding the lease runs cycles; the others stand by.
        self.elector = elector
        self.metrics = metrics or Metrics()
        if elector is not None:
            self.metrics.add_ha()
        self.pushback = pushback
        #: jobs-api push-back: one poll of the service's /load into the outbox (the capture step).
        self.poll: Callable[[], object] | None = None
        self._watcher: DirectoryWatcher | None = None
        self._dirty: DirtySet | None = None  # what the watcher saw change; None: no watcher, scan everything
        self._debouncer: Debouncer | None = None
        self.ready = threading.Event()
        self.last_result: SyncResult | None = None
        self._wake: queue.Queue[str] = queue.Queue(maxsize=1)
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._loop, name="gitsync-worker", daemon=True)
        self._scheduler: Any = None
        self._server: Any = None
        self.syncs_done = 0
        self._cycle_started: float | None = None  # monotonic start of the cycle in progress, for /healthz
        #: Time of the newest conflict branch counted; those from before a start were counted by an earlier process.
        self._conflicts_seen = _newest_conflict(syncer.state.get("conflicts", []))
        self.status_poster: StatusPoster | None = None
        self._done = threading.Condition()
        self._tracebacks_logged: set[str] = set()
        self._current_step = ""
        self.upkeep = Maintenance(settings, syncer.state, syncer.mirror)
        self.heartbeat = Heartbeat(settings.log_heartbeat)

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
        if self.elector is not None:
            self.elector.start()
        if self.pushback is not None and isinstance(self.syncer, Syncer):  # watching before the first cycle
            self._debouncer = Debouncer(self.settings.push_debounce, lambda: self.request_sync("local change"))
            self._dirty = DirtySet()
            self._watcher = DirectoryWatcher(self.syncer.target.directory, self._debouncer.poke, dirty=self._dirty)
            self._watcher.start()
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
        if self._watcher is not None:
            self._watcher.stop()
        if self._debouncer is not None:
            self._debouncer.close()
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
        if self._worker.is_alive():
            self._worker.join(max(0.1, deadline - time.monotonic() - 1.0))
        if self.elector is not None and not self._worker.is_alive():
            self.elector.stop()  # hands the lease over at once: a follower need not wait for the TTL
        if self._server is not None:
            self._server.stop()
        if self._worker.is_alive():  # the lease, if any, expires on its own: nobody applies over this step
            log.warning("stopping while a %s step is still running; it is abandoned, and the next start "
                        "recovers what it left", self._current_step or "cycle")
            return False
        self.syncer.close()
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
        if self.poll is not None:  # a jobs service sends no events: look at its /load on a timer
            every = s.target_poll_interval
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
        report = status_report(self.settings, self.syncer.state)
        if self.elector is not None:
            report["ha"] = self.elector.status()
        return report

    def status_page(self) -> str:
        from gitsync.outbox import Outbox
        from gitsync.status_page import PageInputs, render

        state = self.syncer.state
        return render(PageInputs(self.status(), state.history(15), Outbox(state).entries(), self.next_sync(),
                                 time.time()))

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
        return self.syncer.state.get("applied_commit") is not None

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
                reason = self._wake.get(timeout=0.5)
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
        """One cycle, each step in its own error boundary: a step that fails is recorded and the next one
        still runs, so definitions keep arriving from git whatever push-back runs into."""
        log.debug("cycle requested by %s", reason)
        if self.elector is not None:
            self.metrics.ha_leader.set(1 if self.elector.is_leader else 0)
            if not self.elector.is_leader:
                return self._stand_by()
        wall, applied = time.time(), self.syncer.state.get("applied_commit")
        steps = Steps(seen=self._tracebacks_logged)
        result = SyncResult("error", applied=applied, message="the pull did not run")
        self._cycle_started = time.monotonic()
        local = self._local_changes()  # only these target files are looked at (None: all of them)
        if isinstance(self.syncer, Syncer):
            self.syncer.dirty = lambda: local
        try:
            with steps.step("recover"):  # before anything looks at the directory: an interrupted apply is ours
                self._current_step = "recover"
                self.syncer.recover()
            if self.pushback is not None and not self._stop.is_set():
                with steps.step("capture"):  # stable local changes -> outbox
                    self._current_step = "capture"
                    if self.poll is not None:  # a jobs service: what others changed through /save, /remove
                        self.poll()
                    else:
                        assert isinstance(self.syncer, Syncer)
                        capture(self.syncer.target, self.syncer.state, self.pushback.outbox,
                                self.settings.sync_max_delete_share, names=local,
                                settle=self.settings.push_debounce, max_file_size=self.settings.sync_max_file_size)
                if not self.settings.repo_ref:  # pinned (repo.ref): local changes wait in the outbox
                    with steps.step("flush"):  # outbox -> git (its own backoff; never blocks the pull)
                        self._current_step = "flush"
                        self.pushback.flush()
            if self._stop.is_set():  # shutting down: the pull and the record wait for the next start
                if self._dirty is not None:
                    self._dirty.everything()
                return result
            with steps.step("pull"):  # git -> directory, always
                self._current_step = "pull"
                result = self.syncer.pull()
            with steps.step("record"):
                self._current_step = "record"
                self.syncer.record(result, wall, previous=applied, failures=steps.failures)
        finally:
            self._cycle_started = None
            self._current_step = ""
        self._tracebacks_logged = steps.seen
        if steps.failures and self._dirty is not None:  # what this cycle was told may not have been handled
            self._dirty.everything()
        if self.status_poster is not None:
            self.status_poster.after_sync(result)
        self._observe(result)
        return result

    def _local_changes(self) -> set[str] | None:
        """What the watcher saw change, including every change made before this cycle began."""
        if self._dirty is None:
            return None
        if self._watcher is not None and not self._watcher.settle():
            self._dirty.everything()
        return self._dirty.take()

    def _stand_by(self) -> SyncResult:
        """A follower's cycle: nothing. It is ready (it serves, and takes over when the leader goes)."""
        result = SyncResult("noop", message="standing by: another replica holds the HA lease")
        self.last_result = result
        self.ready.set()
        with self._done:
            self.syncs_done += 1
            self._done.notify_all()
        return result

    def _push_retry_due(self) -> bool:
        """Push retries keep their own timer: with `sync.interval = 600` a retry due in 2 s still runs in 2 s."""
        if self.pushback is None:
            return False
        try:
            due = self.pushback.retry_due()
        except Exception:  # a state read failing here is reported by the next cycle's steps
            return False
        return due is not None and self.pushback.clock() >= due

    def cycle_ok(self) -> bool:
        """/syncz: a cycle has succeeded, and the latest one failed in no step (for monitors, not for Kubernetes
        readiness: a failing push-back must not take Farm's API out of its Service)."""
        return self.ready.is_set() and self.last_result is not None and self.last_result.ok

    def _between_cycles(self, result: SyncResult) -> None:
        """Upkeep off the sync path: after the cycle, still holding the turn and so never during a fetch or push."""
        self.heartbeat.observe(result.result)
        try:
            self.upkeep.run_if_due(active=result.result != "noop")
            self.heartbeat.beat_if_due(lambda: describe_state(self.syncer.state))
        except Exception:  # upkeep must never take the agent down
            log.exception("maintenance crashed (this is a bug in gitsync); syncing goes on")

    def _observe(self, result: SyncResult) -> None:
        self.last_result = result
        m = self.metrics
        m.syncs.labels(result.result).inc()
        m.duration.observe(result.duration)
        if result.ok:
            m.last_success.set(time.time())
            self.ready.set()
        failing = {f.step for f in result.failures}
        for step in STEPS:
            m.step_failing.labels(step).set(1 if step in failing else 0)
        for step in failing:
            m.step_failures.labels(step).inc()
        with contextlib.suppress(Exception):  # the metrics must not turn a recorded failure into a crash
            m.failures.set(int(self.syncer.state.get("consecutive_failures", 0)))
            if isinstance(self.syncer, Syncer):
                m.owned.set(self.syncer.state.owned_count())  # a count, not 10,000 rows loaded every cycle
            else:  # a jobs service: the definitions gitsync saved there
                m.owned.set(self.syncer.target.record.count())
            if self.pushback is not None:
                entries = self.pushback.outbox.entries()
                m.outbox.set(len(entries))
                for status in ("pending", "in_pr", "blocked"):
                    m.outbox_entries.labels(status).set(sum(e.status == status for e in entries))
                m.outbox_oldest.set(time.time() - min(e.created for e in entries) if entries else 0)
            conflicts = self.syncer.state.get("conflicts", [])  # the latest 50, each with its time
            m.conflicts.inc(sum(1 for c in conflicts if float(c.get("at", 0)) > self._conflicts_seen))
            self._conflicts_seen = max(self._conflicts_seen, _newest_conflict(conflicts))
            m.conflict_branches.set(len(conflicts))
            m.commit.info({"applied": self.syncer.state.get("applied_commit") or "",
                           "head": self.syncer.state.get("head_commit") or ""})
        for severity in ("error", "warning"):
            m.problems.labels(severity).set(sum(p.severity == severity for p in result.problems))


def _newest_conflict(conflicts: list[dict[str, Any]]) -> float:
    return max((float(c.get("at", 0)) for c in conflicts), default=0.0)


def build_agent(settings: Settings, metrics: Metrics | None = None) -> Agent:
    """The agent with push-back wired in (every push mode uses it; `off` reverts instead of committing)."""
    if settings.target_kind == "jobs-api":
        return _build_api_agent(settings, metrics)
    syncer = Syncer.from_settings(settings)
    outbox = Outbox(syncer.state)
    forge = _forge(settings) if settings.push_mode == "pull-request" or settings.sync_commit_status else None
    pushback = PushBack(settings, syncer.state, syncer.mirror, syncer.target, outbox,
                        forge=forge if settings.push_mode == "pull-request" else None)
    syncer.pending = outbox.held_targets
    agent = Agent(settings, syncer, metrics, pushback)
    pushback.on_push = lambda result: agent.metrics.pushes.labels(result).inc()
    if settings.sync_commit_status and forge is not None:
        agent.status_poster = StatusPoster(forge, syncer.state, settings.target_directory)
    return agent


def _forge(settings: Settings) -> Any:
    from gitsync.forge import make_forge, token_reader

    token = token_reader(settings.push_forge_token_file or None, settings.push_forge_token_env or None)
    return make_forge(settings.push_forge, settings.push_forge_api_url,  # type: ignore[arg-type]
                      settings.push_forge_repository, token)


def _build_api_agent(settings: Settings, metrics: Metrics | None) -> Agent:
    """A jobs-api target: pull, and push-back by polling the service's `/load` (api_pushback.py), optionally
    one of several replicas behind a Redis lease (only the leader runs cycles, and it checks its lease
    right before every /save, /remove and push)."""
    from gitsync.api_pushback import ApiPushBack
    from gitsync.api_sync import ApiSyncer

    syncer = ApiSyncer.from_settings(settings)
    elector = None
    if settings.ha_redis_url:
        from gitsync.ha import Elector, Lease
        from gitsync.secrets import Secret

        try:
            elector = Elector(Lease(Secret(settings.ha_redis_url), key=settings.ha_key, ttl=settings.ha_lease_ttl))
        except BaseException:
            syncer.close()
            raise
        syncer.guard = elector.check  # right before every /save and /remove
    try:
        outbox = Outbox(syncer.state)
        pushback = ApiPushBack(syncer, outbox, forge=_forge(settings) if settings.push_mode == "pull-request" else None,
                               guard=elector.check if elector is not None else None)
    except BaseException:
        syncer.close()
        raise
    syncer.pending = outbox.held_targets  # the pull leaves a definition alone while its change is on its way
    agent = Agent(settings, syncer, metrics, pushback, elector)
    agent.poll = pushback.capture
    pushback.on_push = lambda result: agent.metrics.pushes.labels(result).inc()
    if elector is not None:
        elector.on_change = lambda leading: agent.request_sync("became leader") if leading else None
    return agent
