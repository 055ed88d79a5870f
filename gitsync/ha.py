"""High availability: several `gitsync run` replicas, one leader, elected with a lease in Redis.

Redis is what Farm itself relies on when it scales, so it is the one extra component HA needs.

- **Lease**: one key holding the leader's random token, set with `SET key token NX PX ttl` (only if
  nobody holds it) and kept alive with a compare-and-extend script (`PEXPIRE` only while the key
  still holds *our* token). A replica that dies stops renewing and the key expires after one TTL;
  a follower trying every TTL/3 takes over within 2 × TTL.
- **Fencing before every write**: a leader that was paused (GC, a stopped container, a slow disk)
  may have lost its lease without noticing. `Elector.check()` renews the lease in one round trip and
  raises `NotLeader` unless that worked; the agent calls it right before each apply and each push,
  so a replica that lost its lease stops before changing anything.
- Followers do everything a leader does except the cycle: they are ready (serving /healthz,
  /readyz, /status, /metrics) but idle, and `/status` says who leads.

The token is random per process; it never contains the Redis URL or its password, and the URL is
shown redacted wherever it is printed.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from gitsync.errors import GitsyncError
from gitsync.secrets import Secret, redact_failure, redact_url

log = logging.getLogger("gitsync.ha")

DEFAULT_KEY = "gitsync:leader"

# KEYS[1] = lease key, ARGV[1] = our token, ARGV[2] = TTL in ms. Extend only a lease we still hold.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
# Delete only a lease we still hold (never a successor's).
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


class NotLeader(GitsyncError):
    """This replica does not hold the lease (any more): it must not apply or push anything."""


class LeaseUnavailable(GitsyncError):
    """Redis could not be reached; the text is redacted."""


class Lease:
    """One lease key in Redis, held under a token unique to this process."""

    def __init__(self, redis_url: Secret, *, key: str = DEFAULT_KEY, ttl: float = 15.0,
                 client: Any = None) -> None:
        import redis

        self.key = key
        self.ttl = ttl
        self._url = redis_url
        self.identity = f"{socket.gethostname()}:{os.getpid()}"
        self.token = f"{self.identity}:{secrets.token_hex(8)}"
        timeout = max(0.5, min(5.0, ttl / 3))
        self._client = client or redis.Redis.from_url(redis_url.reveal(), socket_timeout=timeout,
                                                      socket_connect_timeout=timeout)
        self._renew = self._client.register_script(_RENEW)
        self._release = self._client.register_script(_RELEASE)

    @property
    def shown_url(self) -> str:
        return redact_url(self._url.reveal())

    def acquire(self) -> bool:
        return bool(self._call(lambda: self._client.set(self.key, self.token, nx=True, px=self._ttl_ms)))

    def renew(self) -> bool:
        return bool(self._call(lambda: self._renew(keys=[self.key], args=[self.token, self._ttl_ms])))

    def release(self) -> None:
        self._call(lambda: self._release(keys=[self.key], args=[self.token]))

    def holder(self) -> str | None:
        """Who holds the lease (host:pid), or None when nobody does."""
        value = self._call(lambda: self._client.get(self.key))
        if value is None:
            return None
        text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
        return text.rsplit(":", 1)[0]

    def shared_value(self, name: str, value: str) -> str:
        """A value all replicas agree on, kept beside the lease (`<key>:<name>`): the first one given is
        recorded, and every call returns the recorded one."""
        key = f"{self.key}:{name}"
        self._call(lambda: self._client.set(key, value, nx=True))
        found = self._call(lambda: self._client.get(key))
        return found.decode(errors="replace") if isinstance(found, bytes) else str(found)

    def close(self) -> None:
        self._client.close()

    @property
    def _ttl_ms(self) -> int:
        return max(1, int(self.ttl * 1000))

    def _call(self, operation: Callable[[], Any]) -> Any:
        import redis

        try:
            return operation()
        except redis.RedisError as exc:
            raise LeaseUnavailable(f"HA lease at {redact_failure(self._url, exc)}") from None


class Elector:
    """Keeps trying to hold the lease on a background thread and knows, conservatively, whether it does.

    A lease renewed at time t (taken *before* the request) is trusted locally until t + TTL: Redis
    counts its expiry from later than that, so the local view never outlives the real lease.
    """

    def __init__(self, lease: Lease, *, on_change: Callable[[bool], None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.lease = lease
        self.on_change = on_change
        self._clock = clock
        self._valid_until = 0.0
        self._leader = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gitsync-ha", daemon=True)
        self.last_error = ""
        self._resting_until = 0.0  # resign(): no campaigning before this clock() time

    # -- state -------------------------------------------------------------------------------------
    @property
    def is_leader(self) -> bool:
        with self._lock:
            return self._leader and self._clock() < self._valid_until

    def status(self) -> dict[str, Any]:
        """For /status: this replica's role and who leads (never the URL's password or the token)."""
        try:
            holder = self.lease.holder()
        except LeaseUnavailable as exc:
            holder, self.last_error = None, str(exc)
        return {"role": "leader" if self.is_leader else "follower", "leader": holder,
                "replica": self.lease.identity, "lease_ttl": self.lease.ttl, "redis": self.lease.shown_url,
                "error": self.last_error}

    def check(self) -> None:
        """Raise NotLeader unless this replica holds the lease right now (renewing it on the way).

        Called right before every apply and push: one Redis round trip, and the only proof that a
        replica paused for longer than the TTL has not been replaced meanwhile."""
        if not self._attempt(renew_only=True):
            raise NotLeader(f"this replica ({self.lease.identity}) does not hold the HA lease "
                            f"{self.lease.key!r}; nothing applied or pushed" +
                            (f" ({self.last_error})" if self.last_error else ""))

    def resign(self, seconds: float) -> None:
        """Give the lease up now and do not campaign for `seconds` (a replica that cannot lead lets another)."""
        with self._lock:
            self._resting_until = self._clock() + seconds
            leading = self._leader
        if leading:
            try:
                self.lease.release()
            except LeaseUnavailable as exc:
                log.warning("could not release the HA lease: %s", exc)
        self._set(False, 0.0)

    # -- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> Elector:
        self._attempt(renew_only=False)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop campaigning and hand the lease over at once (a successor need not wait for the TTL)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        if self.is_leader:
            try:
                self.lease.release()
            except LeaseUnavailable as exc:
                log.warning("could not release the HA lease: %s", exc)
        self._set(False, 0.0)
        self.lease.close()

    def _run(self) -> None:
        while not self._stop.wait(self.lease.ttl / 3):
            self._attempt(renew_only=False)

    def _attempt(self, *, renew_only: bool) -> bool:
        """Renew (if leading) or try to take the lease; update the local view; True if we lead now."""
        started = self._clock()
        with self._lock:
            if started < self._resting_until and not self._leader:
                return False
        try:
            with self._lock:
                leading = self._leader
            held = self.lease.renew() if leading or renew_only else self.lease.acquire()
            if not held and leading and not renew_only:
                held = self.lease.acquire()  # expired while we were slow, and nobody took it: take it again
            self.last_error = ""
        except LeaseUnavailable as exc:
            if exc.args[0] != self.last_error:
                log.warning("%s", exc)
            self.last_error = str(exc)
            with self._lock:  # keep leading until the lease we had runs out: Redis may come back in time
                return self._leader and self._clock() < self._valid_until
        self._set(held, started + self.lease.ttl if held else 0.0)
        return held

    def _set(self, leader: bool, valid_until: float) -> None:
        with self._lock:
            changed = leader != self._leader
            self._leader, self._valid_until = leader, valid_until
        if changed:
            if leader:
                log.info("this replica (%s) is now the leader (HA lease %r at %s)", self.lease.identity,
                         self.lease.key, self.lease.shown_url)
            else:
                log.warning("this replica (%s) is no longer the leader; standing by", self.lease.identity)
            if self.on_change is not None:
                self.on_change(leader)
