"""The HTTP face of the stand-in: Farm's jobs router and service core, on FastAPI as Farm is.

| route                                 | auth      | answer                                          |
|---------------------------------------|-----------|-------------------------------------------------|
| GET  <prefix>/load                    | none      | ``{"<name>": {definition}}``, ``?filter=``      |
| POST <prefix>/save                    | X-API-KEY | ``{"job-name": name, "success": true}``         |
| POST <prefix>/remove                  | X-API-KEY | ``{"job-name": name, "success": true}``         |
| GET  <prefix>/status                  | none      | ``"OK"``                                        |
| GET  /status /health /ready /startup  | none      | ``"OK"`` (Farm's service core; Helm probes)     |

Followed from Farm's ``nv/svc/farm/services/jobs/router.py`` and ``nv/svc/core/main.py``:
FastAPI decodes the JSON body before the key dependency runs (malformed JSON with a bad key is
422), the key dependency runs before the body is validated (a body failing the model with a bad
key is 403), the ``/load`` filter is reduced to ``[A-Za-z0-9.*]`` before matching.

Stricter than Farm, for safety: request bodies over ``max_body_size`` are refused with 413 while
being read; names that are not one plain file name and a ``job_spec_path`` outside the job
directories are 422; the reduced filter is matched by a linear-time automaton, so no filter can
stall the service (Farm's ``re.search`` can backtrack for minutes on ``.*.*.*…X``).
"""

from __future__ import annotations

import hmac
import json
import logging
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import HTTPException, RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from gitsync.jobs_service.config import JobsServiceConfig
from gitsync.jobs_service.definitions import JobDefinitionModel, JobDefinitionRemoveModel, as_definition
from gitsync.jobs_service.store import DefinitionNotFound, JobStore, StoreError
from gitsync.secrets import Secret

log = logging.getLogger(__name__)

API_KEY_HEADER = "X-API-KEY"
_UNSAFE_FILTER_CHARS = re.compile(r"[^a-zA-Z0-9.*]")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def create_app(config: JobsServiceConfig, store: JobStore) -> ASGIApp:
    """An ASGI app serving ``store`` under ``config.url_prefix``, writes guarded by the key."""
    api_key = config.api_key
    app = FastAPI(title="Farm-compatible jobs service (gitsync stand-in)", docs_url="/docs")

    async def require_key(request: Request) -> None:
        if not _authorized(request.headers.get(API_KEY_HEADER), api_key):
            raise HTTPException(status_code=403, detail="Not authenticated")

    async def status() -> str:
        return "OK"

    for path in ("/status", "/health", "/ready", "/startup"):
        app.add_api_route(path, status, methods=["GET"])

    prefix = config.url_prefix

    @app.get(f"{prefix}/load")
    async def load(filter: str = ".*") -> Response:  # noqa: A002 - Farm's query parameter name
        matches = name_filter(filter)

        def load_matching() -> dict[str, Any]:
            # In a worker thread, matching included: a long filter over many names must not hold the event loop.
            return {name: d for name, d in store.load().items() if matches(name)}

        return JSONResponse(await run_in_threadpool(load_matching))

    @app.post(f"{prefix}/save", dependencies=[Depends(require_key)])
    async def save(job_definition: JobDefinitionModel) -> Response:  # type: ignore[valid-type]
        definition = as_definition(job_definition)
        spec_path = definition.get("job_spec_path")
        problem = store.spec_path_problem(spec_path) if spec_path else None
        if problem:
            raise RequestValidationError([{"type": "value_error", "loc": ("body", "job_spec_path"),
                                           "msg": f"Value error, {problem} (gitsync's jobs service is stricter "
                                                  "than Farm)", "input": spec_path}])
        await run_in_threadpool(store.save, definition)
        return JSONResponse({"job-name": definition["name"], "success": True})

    @app.post(f"{prefix}/remove", dependencies=[Depends(require_key)])
    async def remove(job_definition_data: JobDefinitionRemoveModel) -> Response:
        name = job_definition_data.job_definition_name
        await run_in_threadpool(store.remove, name)
        return JSONResponse({"job-name": name, "success": True})

    app.add_api_route(f"{prefix}/status", status, methods=["GET"])

    @app.exception_handler(DefinitionNotFound)
    async def not_found(request: Request, exc: DefinitionNotFound) -> Response:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(StoreError)
    async def store_failed(request: Request, exc: StoreError) -> Response:
        log.error("%s %s failed: %s", request.method, request.url.path, exc)
        return JSONResponse({"detail": str(exc)}, status_code=500)

    @app.exception_handler(re.error)
    async def bad_filter(request: Request, exc: re.error) -> Response:
        # Farm's re.search raises on a reduced filter such as "*": an unhandled 500.
        return Response("Internal Server Error", status_code=500, media_type="text/plain")

    return BodyLimit(app, config.max_body_size)


def _authorized(given: str | None, api_key: Secret) -> bool:
    if not given or not api_key:
        return False
    # Constant-time, on bytes: compare_digest refuses non-ASCII str.
    return hmac.compare_digest(given.encode(errors="surrogateescape"), api_key.reveal().encode())


def name_filter(raw: str) -> Callable[[str], bool]:
    """Farm's ``/load`` filter: reduced to ``[A-Za-z0-9.*]``, then ``re.search`` semantics.

    Raises ``re.error`` where Farm's ``re.search`` would (a leading ``*``, ``**``). Matching runs
    on a Thompson automaton over the reduced pattern (literals, ``.`` and ``*``), in time linear in
    pattern times name, with the same answer as ``re.search``.
    """
    pattern = _UNSAFE_FILTER_CHARS.sub("", raw)
    re.compile(pattern)  # the same errors as Farm; compiling cannot backtrack
    tokens: list[tuple[str, bool]] = []  # (char or "." for any, starred)
    for char in pattern:
        if char == "*":
            tokens[-1] = (tokens[-1][0], True)  # re.compile refused a '*' with nothing before it
        else:
            tokens.append((char, False))

    def closure(states: set[int]) -> set[int]:
        # A starred token can be skipped: from state i we may also be at i + 1.
        result, todo = set(states), list(states)
        while todo:
            i = todo.pop()
            if i < len(tokens) and tokens[i][1] and i + 1 not in result:
                result.add(i + 1)
                todo.append(i + 1)
        return result

    def matches(name: str) -> bool:
        states = closure({0})
        for char in name:
            if len(tokens) in states:
                return True
            step: set[int] = {0}  # re.search: a match may start at any position
            for i in states:
                if i < len(tokens):
                    want, starred = tokens[i]
                    if want == char or (want == "." and char != "\n"):
                        step.add(i if starred else i + 1)
            states = closure(step)
        return len(tokens) in states

    return matches


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413, counting while reading, before any JSON or key work.

    A declared Content-Length over the limit is refused at once; a chunked body is buffered only up
    to the limit, so an unauthenticated client costs at most ``limit`` bytes of memory.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await _too_large(send, self.limit)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await _too_large(send, self.limit)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _too_large(send: Send, limit: int) -> None:
    body = json.dumps({"detail": f"Request body is over the {limit}-byte limit (gitsync's jobs service: "
                                 "max_body_size)"}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
