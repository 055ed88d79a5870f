"""Run an ASGI app with uvicorn in a background thread, for the agent, the jobs service and tests."""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from typing import Any

from gitsync.errors import GitsyncError


@functools.cache
def _quiet_server_class() -> Any:
    """Built on first use: uvicorn is imported only by the commands that serve HTTP."""
    import asyncio

    import uvicorn

    class QuietServer(uvicorn.Server):
        """uvicorn's loop wakes every 0.1 s to see whether it should exit, which is most of what an idle agent
        spends. This one ticks once a second (the resolution of the Date header the tick refreshes) and is
        woken at once by `wake()`."""

        _event: asyncio.Event | None = None
        _loop: asyncio.AbstractEventLoop | None = None

        async def main_loop(self) -> None:
            self._loop, self._event = asyncio.get_running_loop(), asyncio.Event()
            counter = 0
            while not await self.on_tick(counter):
                counter = (counter + 10) % 864000  # on_tick refreshes the Date header when counter % 10 == 0
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._event.wait(), 1.0)

        def wake(self) -> None:
            if self._loop is not None and self._event is not None:
                with contextlib.suppress(RuntimeError):  # the loop already closed
                    self._loop.call_soon_threadsafe(self._event.set)

    return QuietServer


class ServerThread:
    """A uvicorn server on its own thread; `port=0` picks a free port (read it back from `.port`)."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, name: str = "http",
                 limit_concurrency: int | None = None) -> None:
        import uvicorn

        # `limit_concurrency` answers 503 beyond that many open connections, which bounds what
        # unauthenticated clients can make the server hold (each body is bounded by the app).
        # `log_config=None`: uvicorn's own logging config (logging.config.dictConfig) closes every handler
        # the process already has, so a log file set up before the server started went silent.
        self._server = _quiet_server_class()(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                                     log_config=None, lifespan="off", access_log=False,
                                                     limit_concurrency=limit_concurrency))
        self._thread = threading.Thread(target=self._server.run, name=name, daemon=True)
        self.host = host
        self.port = port

    def start(self, timeout: float = 10.0) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise GitsyncError(f"HTTP server could not listen on {self.host}:{self.port} "
                                   "(is the port in use? pick another)")
            time.sleep(0.01)
        sockets = [s for server in self._server.servers for s in server.sockets]
        self.port = int(sockets[0].getsockname()[1])
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._server.should_exit = True
        self._server.wake()
        self._thread.join(timeout)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def split_listen(listen: str) -> tuple[str, int]:
    """`host:port` (or `:port`) from settings."""
    host, _, port = listen.rpartition(":")
    try:
        return (host.strip("[]") or "127.0.0.1"), int(port)
    except ValueError:
        raise GitsyncError(f"server.listen must be host:port, got {listen!r}") from None
