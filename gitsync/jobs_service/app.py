"""The HTTP face of the stand-in: Farm's four jobs-service routes under the configured prefix.

| route          | auth      | answer                                              |
|----------------|-----------|-----------------------------------------------------|
| GET  /load     | none      | ``{"<name>": {definition}}``, ``?filter=`` regex    |
| POST /save     | X-API-KEY | ``{"job-name": name, "success": true}``             |
| POST /remove   | X-API-KEY | ``{"job-name": name, "success": true}``             |
| GET  /status   | none      | ``"OK"``                                            |

A wrong or missing key is a 403 ``{"detail": "Not authenticated"}``, checked before the body,
as FastAPI's dependency does in Farm. The store is called in a worker thread because it does
blocking file and Redis I/O; its lifecycle (start/stop) belongs to the caller.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gitsync.jobs_service.config import JobsServiceConfig
from gitsync.jobs_service.definitions import (
    InvalidDefinition,
    error,
    parse_remove_body,
    parse_save_body,
)
from gitsync.jobs_service.store import DefinitionNotFound, JobStore, StoreError
from gitsync.secrets import Secret

log = logging.getLogger(__name__)

API_KEY_HEADER = "X-API-KEY"
_FORBIDDEN = {"detail": "Not authenticated"}


def create_app(config: JobsServiceConfig, store: JobStore) -> Starlette:
    """A Starlette app serving ``store`` under ``config.url_prefix``, writes guarded by the key."""
    api_key = config.api_key

    async def load(request: Request) -> Response:
        pattern = request.query_params.get("filter", ".*")
        try:
            regex = re.compile(pattern)
        except re.error as exc:
            raise InvalidDefinition(
                [error(["query", "filter"], f"filter is not a valid regular expression: {exc}")]
            ) from exc
        definitions = await run_in_threadpool(store.load)
        return JSONResponse({name: d for name, d in definitions.items() if regex.search(name)})

    async def save(request: Request) -> Response:
        if not _authorized(request, api_key):
            return JSONResponse(_FORBIDDEN, status_code=403)
        definition = parse_save_body(await _json_body(request))
        await run_in_threadpool(store.save, definition)
        return JSONResponse({"job-name": definition["name"], "success": True})

    async def remove(request: Request) -> Response:
        if not _authorized(request, api_key):
            return JSONResponse(_FORBIDDEN, status_code=403)
        name = parse_remove_body(await _json_body(request))
        await run_in_threadpool(store.remove, name)
        return JSONResponse({"job-name": name, "success": True})

    async def status(request: Request) -> Response:
        return JSONResponse("OK")

    prefix = config.url_prefix
    return Starlette(
        routes=[
            Route(f"{prefix}/load", load, methods=["GET"]),
            Route(f"{prefix}/save", save, methods=["POST"]),
            Route(f"{prefix}/remove", remove, methods=["POST"]),
            Route(f"{prefix}/status", status, methods=["GET"]),
        ],
        exception_handlers={
            InvalidDefinition: _unprocessable,
            DefinitionNotFound: _not_found,
            StoreError: _store_failed,
        },
    )


def _authorized(request: Request, api_key: Secret) -> bool:
    given = request.headers.get(API_KEY_HEADER)
    if not given or not api_key:
        return False
    # Constant-time, on bytes: compare_digest refuses non-ASCII str.
    return hmac.compare_digest(given.encode(), api_key.reveal().encode())


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise InvalidDefinition([error(["body"], f"the body is not valid JSON: {exc}", "json_invalid")]) from exc


async def _unprocessable(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, InvalidDefinition)
    return JSONResponse({"detail": exc.errors}, status_code=422)


async def _not_found(request: Request, exc: Exception) -> Response:
    return JSONResponse({"detail": str(exc)}, status_code=404)


async def _store_failed(request: Request, exc: Exception) -> Response:
    log.error("%s %s failed: %s", request.method, request.url.path, exc)
    return JSONResponse({"detail": str(exc)}, status_code=500)
