"""Run the stand-in with uvicorn on a background thread, for tests, ``gitsync demo`` and the CLI.

The listening socket is bound here, before uvicorn starts, so that port 0 yields a known free
port with no race, and "address in use" becomes a clear error instead of a ``sys.exit`` inside
uvicorn's thread. Start-up waits until ``/status`` answers, by polling with a deadline.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from types import TracebackType

import httpx
import uvicorn

from gitsync.errors import GitsyncError
from gitsync.jobs_service.app import create_app
from gitsync.jobs_service.config import JobsServiceConfig
from gitsync.jobs_service.store import JobStore, StoreError, build_store

log = logging.getLogger(__name__)


class JobsServiceStartError(GitsyncError):
    """The jobs service could not listen, reach its store, or answer /status in time."""


class RunningJobsService:
    """A jobs service running in this process until ``stop()``; also a context manager.

    ``host``/``port`` override the config's; port 0 picks a free port (see ``.port``).
    ``store`` replaces the one the config names (tests inject one to inspect it).
    """

    def __init__(
        self,
        config: JobsServiceConfig,
        *,
        host: str | None = None,
        port: int | None = None,
        store: JobStore | None = None,
        startup_timeout: float = 10.0,
        access_log: bool = False,
    ) -> None:
        self.config = config.with_overrides(host=host, port=port)
        self._store = store
        self._startup_timeout = startup_timeout
        self._access_log = access_log
        self._socket: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None
        self.port = self.config.port

    @property
    def base_url(self) -> str:
        """``http://host:port`` as a client on this machine should use it."""
        return f"http://{_client_host(self.config.host)}:{self.port}"

    @property
    def url(self) -> str:
        """The jobs API root, prefix included: append ``/load``, ``/save``, ..."""
        return self.base_url + self.config.url_prefix

    @property
    def store(self) -> JobStore:
        if self._store is None:
            raise RuntimeError("the jobs service has not been started")
        return self._store

    def start(self) -> RunningJobsService:
        if self._thread is not None:
            return self
        self._socket = _listen(self.config.host, self.config.port)
        self.port = self._socket.getsockname()[1]
        try:
            if self._store is None:
                self._store = build_store(self.config)
            self._store.start()
        except StoreError as exc:
            self._close_socket()
            raise JobsServiceStartError(f"jobs service store: {exc}") from exc

        uv_config = uvicorn.Config(
            create_app(self.config, self._store),
            host=self.config.host,
            port=self.port,
            lifespan="off",
            log_config=None,  # leave the host process's logging alone
            access_log=self._access_log,
            timeout_graceful_shutdown=5,
        )
        self._server = uvicorn.Server(uv_config)
        self._thread = threading.Thread(target=self._serve, name="jobs-service-http", daemon=True)
        self._thread.start()
        try:
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise
        log.info(
            "Farm-compatible jobs service (a stand-in for development, not Farm) at %s; %s",
            self.url,
            self.config.describe(),
        )
        return self

    def stop(self) -> None:
        """Stop serving, then stop the store's watcher threads; safe to call twice."""
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=10)
            if self._thread.is_alive():
                self._server.force_exit = True
                self._thread.join(timeout=5)
        self._server = None
        self._thread = None
        if self._store is not None:
            self._store.stop()
        self._close_socket()

    def __enter__(self) -> RunningJobsService:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _serve(self) -> None:
        assert self._server is not None and self._socket is not None
        try:
            self._server.run(sockets=[self._socket])
        except BaseException as exc:  # noqa: BLE001 - uvicorn reports start-up failure by SystemExit
            self._failure = exc

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + self._startup_timeout
        delay = 0.01
        with httpx.Client(trust_env=False, verify=False, timeout=2.0) as client:
            while True:
                assert self._thread is not None
                if not self._thread.is_alive():
                    raise JobsServiceStartError(
                        f"jobs service on {self.base_url} stopped while starting: {self._failure!r}"
                    )
                try:
                    response = client.get(f"{self.url}/status")
                    if response.status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() >= deadline:
                    raise JobsServiceStartError(
                        f"jobs service on {self.base_url} did not answer /status within {self._startup_timeout:g} s"
                    )
                time.sleep(delay)  # poll interval, backing off; not a wait for readiness
                delay = min(delay * 2, 0.2)

    def _close_socket(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _listen(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise JobsServiceStartError(f"cannot listen on {host}:{port}: {exc}") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise JobsServiceStartError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    return sock


def _client_host(host: str) -> str:
    """Where a local client connects to reach a server bound to ``host``."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host
