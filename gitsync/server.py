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


def build_app(*, status: Callable[[], dict[str, Any]], ready: Callable[[], bool], trigger: Callable[[str], None],
              metrics: Metrics, webhook_secret: Secret) -> Starlette:
    async def healthz(_: Request) -> Response:
        return PlainTextResponse("ok")

    async def readyz(_: Request) -> Response:
        ok = ready()
        return PlainTextResponse("ready" if ok else "no successful sync yet", status_code=200 if ok else 503)

    async def status_page(_: Request) -> Response:
        return JSONResponse(status())

    async def metrics_page(_: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def webhook(request: Request) -> Response:
        body = await request.body()
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
    signature = request.headers.get("x-hub-signature-256", "")
    if signature:
        expected = "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(signature, expected)
    gitea = request.headers.get("x-gitea-signature", "")
    if gitea:
        return hmac.compare_digest(gitea, hmac.new(key, body, hashlib.sha256).hexdigest())
    token = request.headers.get("x-gitlab-token", "")
    return bool(token) and hmac.compare_digest(token.encode(), key)
