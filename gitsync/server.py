"""The agent's small HTTP face: the status page, health, readiness, status, metrics and the webhook trigger."""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
from collections.abc import Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from gitsync.errors import GitsyncError
from gitsync.metrics import Metrics
from gitsync.secrets import Secret

#: Headers that carry a webhook's proof; a request with none of them is refused before its body is read.
_PROOF_HEADERS = ("x-hub-signature-256", "x-gitea-signature", "x-gitlab-token")
_EVENT_HEADERS = ("x-gitea-event", "x-gitlab-event", "x-github-event")
log = logging.getLogger("gitsync.server")
DEFAULT_MAX_BODY = 1024 * 1024


class _TooLarge(Exception):
    pass


async def _read_body(request: Request, limit: int) -> bytes:
    """The body, read at most `limit` bytes far: a declared or streamed larger body is refused while reading,
    so an unauthenticated client can never make the agent hold more than `limit` bytes for it."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise _TooLarge
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise _TooLarge
    return bytes(body)


class Coalescer:
    """A burst of webhooks becomes at most two sync requests per `window` seconds.

    The first request goes through at once (a push is synced without delay); any that arrive in the
    following window become one request when it ends, which sees the newest commit. A forge sending
    200 events for one push therefore costs one or two fetches, not one per event.
    """

    def __init__(self, trigger: Callable[[str], None], window: float = 1.0) -> None:
        self._trigger = trigger
        self._window = window
        self._lock = threading.Lock()
        self._open = False  # a window is running
        self._pending: str | None = None

    def __call__(self, reason: str) -> None:
        with self._lock:
            if self._open:
                self._pending = reason
                return
            self._open = True
        self._trigger(reason)
        self._start_window()

    def _start_window(self) -> None:
        timer = threading.Timer(self._window, self._close_window)
        timer.daemon = True
        timer.start()

    def _close_window(self) -> None:
        with self._lock:
            reason, self._pending = self._pending, None
            if reason is None:
                self._open = False
                return
        self._trigger(reason)
        self._start_window()


def build_app(*, status: Callable[[], dict[str, Any]], ready: Callable[[], bool], trigger: Callable[[str], None],
              metrics: Metrics, webhook_secret: Secret | Callable[[], Secret], max_body: int = DEFAULT_MAX_BODY,
              branch: str = "main", page: Callable[[], str] | None = None,
              health: Callable[[], tuple[bool, str]] | None = None,
              cycle_ok: Callable[[], bool] | None = None, webhook_window: float = 1.0) -> Starlette:
    """The HTTP face. `webhook_secret` may be a reader, called for every delivery (the secret may rotate);
    `health` says whether the worker is alive and not stuck; `page` renders the HTML status page."""
    secret_of = webhook_secret if callable(webhook_secret) else (lambda: webhook_secret)
    coalesced = Coalescer(trigger, webhook_window)

    async def healthz(_: Request) -> Response:
        ok, why = health() if health is not None else (True, "ok")
        return PlainTextResponse(why, status_code=200 if ok else 503)

    async def readyz(_: Request) -> Response:
        ok = ready()
        return PlainTextResponse("ready" if ok else "not ready: no good commit applied yet",
                                 status_code=200 if ok else 503)

    async def syncz(_: Request) -> Response:
        ok = (cycle_ok or ready)()
        text = "ok" if ok else "failing: no successful cycle yet, or the latest one failed in a step (see /status)"
        return PlainTextResponse(text, status_code=200 if ok else 503)

    async def status_json(_: Request) -> Response:
        return JSONResponse(status())

    def status_html(_: Request) -> Response:  # sync: starlette runs it in a worker thread, off the event loop
        if page is None:
            return RedirectResponse("/status")
        return HTMLResponse(page(), headers={"Cache-Control": "no-store"})

    async def metrics_page(_: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def rejected(request: Request, result: str, status_code: int, detail: str) -> Response:
        """Refuse a delivery: counted, and logged with who sent what, never with the secret or a signature."""
        metrics.webhooks.labels(result).inc()
        client = request.client.host if request.client else "unknown"
        event = next((f"{h}={request.headers[h]!r}" for h in _EVENT_HEADERS if h in request.headers), "no event")
        log.warning("webhook from %s refused (%s, HTTP %d): %s", client, event[:80], status_code, detail)
        return JSONResponse({"detail": detail}, status_code=status_code)

    async def webhook(request: Request) -> Response:
        from gitsync.webhook import decide

        try:
            secret = secret_of()
        except GitsyncError as exc:  # a rotated secret file that vanished: refuse rather than accept anyone
            return rejected(request, "error", 503, f"webhook secret unavailable: {exc}")
        if secret and not any(h in request.headers for h in _PROOF_HEADERS):
            return rejected(request, "unauthorized", 401, "bad or missing webhook signature")
        try:
            body = await _read_body(request, max_body)
        except _TooLarge:
            return rejected(request, "too_large", 413,
                            f"request body larger than {max_body} bytes (server.webhook_max_body)")
        if secret and not _signed(request, body, secret):
            return rejected(request, "unauthorized", 401, "bad or missing webhook signature")
        decision = decide(dict(request.headers), body, branch)
        if decision.outcome == "bad_payload":
            return rejected(request, "bad_payload", 400, decision.reason)
        metrics.webhooks.labels(decision.outcome).inc()
        log.info("webhook: %s", decision.reason)
        if decision.outcome == "sync":
            coalesced("webhook")
        answer: dict[str, Any] = {"queued": True} if decision.outcome == "sync" else {
            "queued": False, "detail": decision.reason}
        return JSONResponse(answer, status_code=decision.status_code)

    return Starlette(routes=[
        Route("/", status_html), Route("/healthz", healthz), Route("/readyz", readyz), Route("/syncz", syncz),
        Route("/status", status_json), Route("/metrics", metrics_page), Route("/webhook", webhook, methods=["POST"]),
    ])


def _signed(request: Request, body: bytes, secret: Secret) -> bool:
    """GitHub and Gitea sign the body (X-Hub-Signature-256); GitLab sends the secret as X-Gitlab-Token."""
    key = secret.reveal().encode()
    # Compared as the raw header bytes: `compare_digest` raises on non-ASCII str, which was a 500.
    raw = {k.decode("latin-1").lower(): v for k, v in request.headers.raw}
    signature = raw.get("x-hub-signature-256", b"")
    if signature:
        expected = b"sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest().encode()
        return hmac.compare_digest(signature, expected)
    gitea = raw.get("x-gitea-signature", b"")
    if gitea:
        return hmac.compare_digest(gitea, hmac.new(key, body, hashlib.sha256).hexdigest().encode())
    token = raw.get("x-gitlab-token", b"")
    return bool(token) and hmac.compare_digest(token, key)
