"""High availability for job directories: replicas that share one state directory, and only the leader opens it.

A jobs service keeps its definitions itself, so jobs-api replicas each keep their own state (ha.py, and
the record in Redis). A job directory on a shared volume is different: what gitsync owns there, the
outbox of local changes on their way to git and the applied commit live in the state database, and a
successor that did not see them would call the leader's files foreign, or push its own stale view back.
So replicas serving a directory target share `state.dir` (on the same volume as the job directory), and:

- a follower does not open the state directory at all: it serves /healthz, /readyz, /status ("standby")
  and /metrics from a small server of its own, and waits for the lease;
- the replica that wins the lease builds the whole agent (which takes the state directory's lock, opens
  the mirror and every target's state) and runs cycles; its syncers check the lease right before every
  apply and every push (Elector.check), so a leader that lost its lease stops before writing anything;
- a leader that loses its lease stops its agent, which closes the state and releases the lock, and goes
  back to standing by; a leader that dies (SIGKILL) releases the lock with its process, and a follower
  takes over within 2 x ha.lease_ttl and carries on from the very state it left: the same applied commit,
  manifest and outbox, so nothing is applied twice and no captured save is lost.
- that the state directory really is shared is checked, not assumed: each state database has an id, and
  the first leader records it in Redis; a replica whose state has another id refuses to lead, with one line
  saying to share state.dir, and hands the lease on.
"""

from __future__ import annotations

import logging
import secrets
import threading
from typing import TYPE_CHECKING, Any

from gitsync.config import Settings
from gitsync.errors import GitsyncError
from gitsync.metrics import Metrics

if TYPE_CHECKING:
    from gitsync.agent import Agent
    from gitsync.ha import Elector
    from gitsync.http_thread import ServerThread

log = logging.getLogger("gitsync.replica")



def needs_shared_state(settings: Settings) -> bool:
    """HA with a job directory among the targets: replicas share the state directory (see above)."""
    return bool(settings.ha_redis_url) and any(t.target_kind == "directory" for t in settings.targets())


class Replica:
    """One `gitsync run` replica: a standby server while following, the whole agent while leading."""

    def __init__(self, settings: Settings) -> None:
        from gitsync.ha import Elector, Lease
        from gitsync.secrets import Secret

        self.settings = settings
        self.metrics = Metrics()
        self.metrics.add_ha()
        self.elector: Elector = Elector(Lease(Secret(settings.ha_redis_url), key=settings.ha_key,
                                              ttl=settings.ha_lease_ttl))
        self.agent: Agent | None = None
        self.error = ""
        self._standby: ServerThread | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gitsync-replica", daemon=True)

    def start(self) -> Replica:
        log.info("starting as an HA replica (lease %r, TTL %.0f s): %s", self.settings.ha_key,
                 self.settings.ha_lease_ttl, self.settings.describe())
        self.elector.on_change = lambda _leading: self._wake.set()
        self.elector.start()
        if not self.elector.is_leader:
            self._serve_standby()
        self._thread.start()
        self._wake.set()
        return self

    def stop(self, timeout: float = 25.0) -> bool:
        """Stop the agent (if leading), then hand the lease over; False if a step outlived the timeout."""
        self._stop.set()
        self._wake.set()
        self._thread.join(5)
        finished = True
        if self.agent is not None:
            finished = self.agent.stop(timeout)
        if finished:
            self.elector.stop()
        self._stop_standby()
        return finished

    def request_sync(self, reason: str) -> None:
        """SIGHUP: a leader syncs now; a follower has nothing to sync."""
        agent = self.agent
        if agent is not None:
            agent.request_sync(reason)

    @property
    def server_port(self) -> int | None:
        if self.agent is not None:
            return self.agent.server_port
        return self._standby.port if self._standby is not None else None

    # -- following and leading ------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                if self.elector.is_leader and self.agent is None:
                    self._lead()
                elif not self.elector.is_leader and self.agent is not None:
                    self._follow()
            except Exception as exc:  # the replica must keep serving whatever happens
                log.exception("HA replica: switching roles failed (a bug in gitsync); standing by")
                if self.agent is None and self.elector.is_leader:  # let another replica lead meanwhile
                    self._cannot_lead(f"{type(exc).__name__}: {exc} (a bug in gitsync)")

    def _lead(self) -> None:
        """Won the lease: open the shared state (taking its lock), check it is the shared one, and run."""
        from gitsync.agent import build_agent

        self._stop_standby()
        try:
            agent = build_agent(self.settings, self.metrics, elector=self.elector)
        except (GitsyncError, OSError) as exc:  # the state in use by a paused leader, a volume not mounted
            why = f"{exc.strerror} ({exc.filename})" if isinstance(exc, OSError) and exc.strerror else str(exc)
            return self._cannot_lead(f"cannot open the state directory to lead: {why}")
        try:
            self._check_shared(agent)
        except GitsyncError as exc:
            agent.stop()
            return self._cannot_lead(str(exc))
        self.error = ""
        self.agent = agent
        agent.start()
        log.info("leading: this replica applies and pushes for %d target(s)", len(agent.units))

    def _follow(self) -> None:
        """Lost the lease: stop the agent (closing the state, releasing its lock) and stand by."""
        assert self.agent is not None
        log.warning("lost the HA lease: stopping the agent and standing by")
        self.agent.stop(self.settings.sync_shutdown_timeout)
        self.agent = None
        self._serve_standby()

    def _cannot_lead(self, why: str) -> None:
        self.error = why
        rest = 2 * self.settings.ha_lease_ttl  # long enough for another replica to take the lease
        log.error("%s; handing the HA lease to another replica for %.0f s", why, rest)
        self.elector.resign(rest)
        self._serve_standby()

    def _check_shared(self, agent: Agent) -> None:
        """Every replica must use the same state directory: its id, recorded in Redis by the first leader."""
        state = agent.units[0].syncer.state
        mine = state.get("ha_state_id")
        if mine is None:
            mine = secrets.token_hex(8)
            state.set(ha_state_id=mine)
        recorded = self.elector.lease.shared_value("state", mine)
        if recorded != mine:
            raise GitsyncError(f"the state directory {self.settings.state_path} is not the one the other replicas use "
                               f"(its id is {mine}, theirs {recorded}): with a directory target every replica must "
                               f"share state.dir, on the same volume as the job directory (or, if it was replaced "
                               f"on purpose, delete Redis key {self.settings.ha_key}:state)")

    # -- the standby server ------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """/status of a follower: its role and who leads; the targets' state is the leader's to show."""
        return {"role": "standby", "ha": self.elector.status(), "error": self.error,
                "targets": {t.target_name: {"name": t.target_name, "target_kind": t.target_kind}
                            for t in self.settings.targets()},
                "last_result": None, "applied_commit": None}

    def _serve_standby(self) -> None:
        if self._standby is not None or not self.settings.server_listen:
            return
        from gitsync.http_thread import ServerThread, split_listen
        from gitsync.secrets import Secret
        from gitsync.server import build_app

        self.metrics.add_ha().set(0)
        app = build_app(status=self.status, ready=lambda: True, trigger=lambda _reason: None, metrics=self.metrics,
                        webhook_secret=Secret(""), branch=self.settings.repo_branch,
                        health=lambda: (True, "standby"), cycle_ok=lambda: True)
        host, port = split_listen(self.settings.server_listen)
        self._standby = ServerThread(app, host, port, name="gitsync-standby-http", limit_concurrency=64).start()
        log.info("standing by: serving /healthz /readyz /status /metrics on http://%s:%d", host, self._standby.port)

    def _stop_standby(self) -> None:
        if self._standby is not None:
            self._standby.stop()
            self._standby = None
