"""The agent's small HTTP face: health, readiness, status, metrics and the webhook trigger."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from gitsync.metrics import Metrics
from gitsync.secrets import Secret

#: Headers that carry a webhook's proof; a request with none of them is refused before its body is read.
_PROOF_HEADERS = ("x-hub-signature-256", "x-gitea-signature", "x-gitlab-token")
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


def build_app(*, status: Callable[[], dict[str, Any]], ready: Callable[[], bool], trigger: Callable[[str], None],
              metrics: Metrics, webhook_secret: Secret, max_body: int = DEFAULT_MAX_BODY) -> Starlette:
    async def healthz(_: Request) -> Response:
        return PlainTextResponse("ok")

    async def readyz(_: Request) -> Response:
        ok = ready()
        text = "ready" if ok else "not ready: no successful cycle yet, or the latest one failed (see /status)"
        return PlainTextResponse(text, status_code=200 if ok else 503)

    async def status_page(_: Request) -> Response:
        return JSONResponse(status())

    async def metrics_page(_: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def webhook(request: Request) -> Response:
        if webhook_secret and not any(h in request.headers for h in _PROOF_HEADERS):
            return JSONResponse({"detail": "bad or missing webhook signature"}, status_code=401)
        try:
            body = await _read_body(request, max_body)
        except _TooLarge:
            return JSONResponse({"detail": f"request body larger than {max_body} bytes "
                                           "(server.webhook_max_body)"}, status_code=413)
        if webhook_secret and not _signed(request, body, webhook_secret):
            return JSONResponse({"detail": "bad or missing webhook signature"}, status_code=401)
        trigger("webhook")
        return JSONResponse({"queued": True}, status_code=202)

    return Starlette(routes=[
        Route("/healthz", healthz), Route("/readyz", readyz), Route("/status", status_page),
        Route("/metrics", metrics_page), Route("/webhook", webhook, methods=["POST"]),
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
