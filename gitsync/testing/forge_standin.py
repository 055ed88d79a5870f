"""An in-memory stand-in for the part of GitHub's REST API gitsync uses: pulls and statuses.

The forge adapter and pull-request mode are tested against it over real HTTP, so URL
building, headers, JSON shapes and error handling are exercised end to end without a
network. It copies GitHub where the adapter depends on the detail (list items carry
`merged_at` but no `merged` flag; a second open pull request for one head is 422; a wrong
token is 401) and nothing beyond that.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp

from gitsync.http_thread import ServerThread

STATUS_STATES = ("error", "failure", "pending", "success")


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: Any


@dataclass
class _Pull:
    number: int
    title: str
    body: str
    head: str
    base: str
    state: str = "open"  # GitHub's own field: open or closed; merged is closed + merged_at
    merged_at: str | None = None


_Handler = Callable[[Request, Any], Response]


class GitHubStandin:
    """State and routes for one repository; `app` is the ASGI app to serve."""

    def __init__(self, token: str, repository: str = "acme/jobs") -> None:
        self.token = token
        self.repository = repository
        self.owner = repository.split("/")[0]
        self._lock = threading.Lock()  # uvicorn's thread serves while the test thread inspects
        self._pulls: dict[int, _Pull] = {}
        self._statuses: dict[str, list[dict[str, Any]]] = {}
        self._requests: list[RecordedRequest] = []
        self._faults: list[tuple[int, dict[str, str]]] = []
        repo = f"/repos/{repository}"
        self.app = Starlette(
            routes=[
                Route(f"{repo}/pulls", self._endpoint(self._list_pulls), methods=["GET"]),
                Route(f"{repo}/pulls", self._endpoint(self._create_pull), methods=["POST"]),
                Route(
                    f"{repo}/pulls/{{number:int}}", self._endpoint(self._get_pull), methods=["GET"]
                ),
                Route(
                    f"{repo}/pulls/{{number:int}}",
                    self._endpoint(self._patch_pull),
                    methods=["PATCH"],
                ),
                Route(
                    f"{repo}/statuses/{{sha}}", self._endpoint(self._add_status), methods=["POST"]
                ),
                Route(
                    f"{repo}/commits/{{sha}}/statuses",
                    self._endpoint(self._list_statuses),
                    methods=["GET"],
                ),
            ]
        )

    # -- test-only helpers: what a human would do in the web UI, and what the test inspects --

    def merge(self, number: int) -> None:
        with self._lock:
            pull = self._pull(number)
            pull.state, pull.merged_at = "closed", _now()

    def close(self, number: int) -> None:
        with self._lock:
            self._pull(number).state = "closed"

    def pull(self, number: int) -> dict[str, Any]:
        """The pull request as GitHub's single-PR endpoint would show it."""
        with self._lock:
            return self._json(self._pull(number), "http://standin/", single=True)

    def statuses(self, sha: str) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(status) for status in self._statuses.get(sha, [])]

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def fail_next(self, status: int, times: int = 1, retry_after: str | None = None) -> None:
        """Answer the next `times` requests with `status`, before auth, as a flaky proxy would."""
        headers = {"Retry-After": retry_after} if retry_after is not None else {}
        with self._lock:
            self._faults.extend([(status, headers)] * times)

    # -- plumbing --

    def _pull(self, number: int) -> _Pull:
        if number not in self._pulls:
            raise ValueError(f"no pull request #{number} in the stand-in")
        return self._pulls[number]

    def _endpoint(self, handler: _Handler) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            raw = await request.body()
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                return _message(400, "Problems parsing JSON")
            with self._lock:
                self._requests.append(
                    RecordedRequest(
                        request.method,
                        request.url.path,
                        dict(request.query_params),
                        dict(request.headers),
                        body,
                    )
                )
                if self._faults:
                    status, headers = self._faults.pop(0)
                    return JSONResponse({"message": "injected fault"}, status, headers=headers)
                if request.headers.get("authorization") != f"Bearer {self.token}":
                    return _message(401, "Bad credentials")
                return handler(request, body)

        return endpoint

    def _json(self, pull: _Pull, base_url: str, *, single: bool) -> dict[str, Any]:
        data: dict[str, Any] = {
            "number": pull.number,
            "url": f"{base_url}repos/{self.repository}/pulls/{pull.number}",
            "html_url": f"{base_url}{self.repository}/pull/{pull.number}",
            "state": pull.state,
            "title": pull.title,
            "body": pull.body,
            "merged_at": pull.merged_at,
            "head": {"ref": pull.head, "label": f"{self.owner}:{pull.head}"},
            "base": {"ref": pull.base, "label": f"{self.owner}:{pull.base}"},
        }
        if single:  # GitHub sends `merged` only for a single pull request, not in lists
            data["merged"] = pull.merged_at is not None
        return data

    def _list_pulls(self, request: Request, _body: Any) -> Response:
        query = request.query_params
        state = query.get("state", "open")
        found = [
            self._json(pull, str(request.base_url), single=False)
            for pull in sorted(self._pulls.values(), key=lambda p: -p.number)
            if state in ("all", pull.state)
            and query.get("head") in (None, f"{self.owner}:{pull.head}")
            and query.get("base") in (None, pull.base)
        ]
        return JSONResponse(found)

    def _create_pull(self, request: Request, body: Any) -> Response:
        if not isinstance(body, dict) or not all(body.get(k) for k in ("title", "head", "base")):
            return _message(422, "Validation Failed", "title, head and base are required")
        head = str(body["head"]).split(":")[-1]
        if any(p.head == head and p.state == "open" for p in self._pulls.values()):
            return _message(
                422, "Validation Failed", f"A pull request already exists for {self.owner}:{head}."
            )
        number = len(self._pulls) + 1
        pull = _Pull(
            number, str(body["title"]), str(body.get("body") or ""), head, str(body["base"])
        )
        self._pulls[number] = pull
        return JSONResponse(self._json(pull, str(request.base_url), single=True), 201)

    def _get_pull(self, request: Request, _body: Any) -> Response:
        pull = self._pulls.get(request.path_params["number"])
        if pull is None:
            return _message(404, "Not Found")
        return JSONResponse(self._json(pull, str(request.base_url), single=True))

    def _patch_pull(self, request: Request, body: Any) -> Response:
        pull = self._pulls.get(request.path_params["number"])
        if pull is None:
            return _message(404, "Not Found")
        if not isinstance(body, dict):
            return _message(422, "Validation Failed", "a JSON object is required")
        if body.get("state") not in (None, "open", "closed"):
            return _message(422, "Validation Failed", "state must be open or closed")
        if body.get("state") == "open" and pull.merged_at is not None:
            return _message(422, "Validation Failed", "state cannot be changed, it is merged")
        pull.title = str(body.get("title", pull.title))
        pull.body = str(body.get("body", pull.body))
        pull.state = str(body.get("state", pull.state))
        return JSONResponse(self._json(pull, str(request.base_url), single=True))

    def _add_status(self, request: Request, body: Any) -> Response:
        if not isinstance(body, dict) or body.get("state") not in STATUS_STATES:
            return _message(422, "Validation Failed", f"state must be one of {STATUS_STATES}")
        if len(str(body.get("description") or "")) > 140:
            return _message(422, "Validation Failed", "description is too long (maximum is 140)")
        sha = request.path_params["sha"]
        status = {
            "id": sum(len(s) for s in self._statuses.values()) + 1,
            "state": body["state"],
            "description": body.get("description"),
            "context": body.get("context") or "default",
            "target_url": body.get("target_url"),
        }
        self._statuses.setdefault(sha, []).append(status)
        return JSONResponse(status, 201)

    def _list_statuses(self, request: Request, _body: Any) -> Response:
        # Newest first, as GitHub lists them.
        return JSONResponse(list(reversed(self._statuses.get(request.path_params["sha"], []))))


def _message(status: int, message: str, detail: str | None = None) -> JSONResponse:
    data: dict[str, Any] = {"message": message}
    if detail:
        data["errors"] = [{"resource": "PullRequest", "code": "custom", "message": detail}]
    return JSONResponse(data, status)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class RunningStandin:
    """Serve the stand-in on 127.0.0.1, on a free port (a thin face over the project's ServerThread)."""

    def __init__(self, app: ASGIApp, *, start_timeout: float = 10.0) -> None:
        self._server = ServerThread(app, "127.0.0.1", 0, name="forge-standin")
        self._start_timeout = start_timeout
        self._url: str | None = None

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``, without a trailing slash."""
        if self._url is None:
            raise RuntimeError("the stand-in is not running")
        return self._url

    def __enter__(self) -> RunningStandin:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        self._server.start(self._start_timeout)
        self._url = f"http://127.0.0.1:{self._server.port}"

    def stop(self) -> None:
        self._server.stop(timeout=10)
        self._url = None
