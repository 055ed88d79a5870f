"""Pull requests and commit statuses on GitHub, GitLab and Gitea, over their REST APIs.

In "pull-request" push mode gitsync pushes to a branch and keeps one pull request open for
it. This module is the only place that knows the three forges' URL layouts, field names and
quirks. Every call goes through `_Api.call`, which retries 5xx and 429 (httpx's `retries=`
only covers failed connections) and turns any failure into a `ForgeError` whose text names
the forge, method, path and status, and never the token.
"""

from __future__ import annotations

import email.utils
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Protocol
from urllib.parse import quote

import httpx

from gitsync.errors import ConfigError, ForgeError
from gitsync.secrets import Secret, redact_text

ForgeKind = Literal["github", "gitlab", "gitea"]
PrState = Literal["open", "merged", "closed"]
StatusState = Literal["pending", "success", "failure", "error"]


@dataclass(frozen=True)
class PullRequest:
    """A pull (GitLab: merge) request, reduced to what the push loop decides on."""

    number: int  # GitLab's project-scoped iid, not its global id
    url: str  # the page a human opens
    state: PrState
    head: str  # source branch
    base: str  # target branch


class Forge(Protocol):
    def find_open_pr(self, head: str, base: str) -> PullRequest | None: ...

    def open_pr(self, head: str, base: str, title: str, body: str) -> PullRequest: ...

    def update_pr(self, number: int, title: str, body: str) -> PullRequest: ...

    def get_pr(self, number: int) -> PullRequest: ...

    def set_commit_status(
        self, sha: str, state: StatusState, description: str, context: str = "gitsync"
    ) -> None: ...


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with exponential backoff; `sleep` is injectable so tests never wait."""

    attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 10.0  # also caps Retry-After: a sync must not stall for an hour
    sleep: Callable[[float], None] = time.sleep

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based)."""
        wanted = _parse_retry_after(retry_after)
        if wanted is None:
            wanted = self.base_delay * 2 ** (attempt - 1)
        return max(0.0, min(wanted, self.max_delay))


def _parse_retry_after(value: str | None) -> float | None:
    """Retry-After is either delay-seconds or an HTTP date (RFC 9110 section 10.2.3)."""
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return when.timestamp() - time.time()


def _retryable(response: httpx.Response) -> bool:
    # GitHub's secondary rate limit may answer 403 instead of 429, always with Retry-After.
    status = response.status_code
    return status >= 500 or status == 429 or (status == 403 and "retry-after" in response.headers)


class _Api:
    """One forge's HTTP session: base URL and auth headers, bounded retries, redacted errors."""

    def __init__(self, forge: str, client: httpx.Client, token: Secret, retry: RetryPolicy) -> None:
        self.forge = forge
        self.client = client
        self._token = token
        self._retry = retry
        self._prefix = client.base_url.raw_path.decode("ascii").rstrip("/")

    def call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int] | None = None,
        json: Any = None,
    ) -> Any:
        """The decoded JSON answer (None for an empty body), or ForgeError after the retries."""
        where = f"{self.forge}: {method} {self._prefix}{path}"
        for attempt in range(1, self._retry.attempts + 1):
            last = attempt == self._retry.attempts
            try:
                response = self.client.request(method, path, params=params, json=json)
            except httpx.TransportError as exc:
                if last:
                    raise self._error(
                        f"{where} failed after {attempt} attempt(s): {type(exc).__name__}: {exc}"
                    ) from exc
                self._retry.sleep(self._retry.delay(attempt))
                continue
            if response.is_success:
                return self._decode(where, response)
            if last or not _retryable(response):
                raise self._http_error(where, response, attempt)
            self._retry.sleep(self._retry.delay(attempt, response.headers.get("retry-after")))
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _decode(self, where: str, response: httpx.Response) -> Any:
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise self._error(
                f"{where}: HTTP {response.status_code} with a body that is not JSON",
                response.status_code,
            ) from None

    def _http_error(self, where: str, response: httpx.Response, attempts: int) -> ForgeError:
        status = response.status_code
        text = f"{where} failed: HTTP {status} {response.reason_phrase}"
        detail = _detail(response)
        if detail:
            text += f": {detail}"
        if attempts > 1:
            text += f" (after {attempts} attempts)"
        if status in (401, 403):
            text += " - check that the forge token is valid and may write to the repository"
        return self._error(text, status)

    def _error(self, text: str, status: int | None = None) -> ForgeError:
        return ForgeError(redact_text(text, self._token), status)


def _detail(response: httpx.Response) -> str:
    """The forge's own explanation: `message` (all three), `error`, GitHub's `errors[]`."""
    try:
        data = response.json()
    except ValueError:
        return response.text.strip()[:200]
    if not isinstance(data, dict):
        return ""
    parts = [str(data[key]) for key in ("message", "error") if data.get(key)]
    for err in data.get("errors") or []:
        if isinstance(err, dict) and err.get("message"):
            parts.append(str(err["message"]))
        elif isinstance(err, str):
            parts.append(err)
    return "; ".join(parts)[:300]


def _items(data: Any) -> list[dict[str, Any]]:
    return [item for item in data if isinstance(item, dict)] if isinstance(data, list) else []


def _short(description: str) -> str:
    # GitHub rejects status descriptions over 140 characters with 422.
    return description if len(description) <= 140 else description[:139] + "…"


class _HttpForge(ABC):
    """What the three adapters share: the session, and an idempotent `open_pr`."""

    def __init__(self, api: _Api) -> None:
        self._api = api

    def close(self) -> None:
        self._api.client.close()

    def __enter__(self) -> _HttpForge:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def open_pr(self, head: str, base: str, title: str, body: str) -> PullRequest:
        try:
            return self._create_pr(head, base, title, body)
        except ForgeError as exc:
            # "Already exists" (GitHub 422, GitLab and Gitea 409): an earlier run, or the first
            # try of a retried POST whose answer was lost, opened it. That one is the answer.
            if exc.status not in (409, 422):
                raise
            existing = self.find_open_pr(head, base)
            if existing is None:
                raise
            return existing

    def _bad_json(self, what: str, exc: Exception) -> ForgeError:
        return ForgeError(f"{self._api.forge}: unexpected {what} in the answer ({exc!r})")

    @abstractmethod
    def find_open_pr(self, head: str, base: str) -> PullRequest | None: ...

    @abstractmethod
    def _create_pr(self, head: str, base: str, title: str, body: str) -> PullRequest: ...


class _GitHub(_HttpForge):
    def __init__(self, api: _Api, repository: str) -> None:
        super().__init__(api)
        self._owner = repository.split("/")[0]
        self._repo = f"/repos/{repository}"

    def find_open_pr(self, head: str, base: str) -> PullRequest | None:
        params = {"state": "open", "head": f"{self._owner}:{head}", "base": base}
        return _matching(
            self._parse_list(self._api.call("GET", f"{self._repo}/pulls", params=params)),
            head,
            base,
        )

    def _create_pr(self, head: str, base: str, title: str, body: str) -> PullRequest:
        payload = {"head": head, "base": base, "title": title, "body": body}
        return self._parse(self._api.call("POST", f"{self._repo}/pulls", json=payload))

    def update_pr(self, number: int, title: str, body: str) -> PullRequest:
        payload = {"title": title, "body": body}
        return self._parse(self._api.call("PATCH", f"{self._repo}/pulls/{number}", json=payload))

    def get_pr(self, number: int) -> PullRequest:
        return self._parse(self._api.call("GET", f"{self._repo}/pulls/{number}"))

    def set_commit_status(
        self, sha: str, state: StatusState, description: str, context: str = "gitsync"
    ) -> None:
        payload = {"state": state, "description": _short(description), "context": context}
        self._api.call("POST", f"{self._repo}/statuses/{sha}", json=payload)

    def _merged(self, data: dict[str, Any]) -> bool:
        # List items carry no `merged` flag; `merged_at` is in both list and single answers.
        return data.get("merged_at") is not None

    def _parse(self, data: Any) -> PullRequest:
        try:
            state: PrState = "open" if data["state"] == "open" else "closed"
            if self._merged(data):
                state = "merged"
            return PullRequest(
                number=int(data["number"]),
                url=str(data["html_url"]),
                state=state,
                head=str(data["head"]["ref"]),
                base=str(data["base"]["ref"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise self._bad_json("pull request", exc) from exc

    def _parse_list(self, data: Any) -> list[PullRequest]:
        return [self._parse(item) for item in _items(data)]


class _Gitea(_GitHub):
    _PAGE_SIZE = 50
    _MAX_PAGES = 20  # 1000 open pull requests is far beyond any jobs repository

    def find_open_pr(self, head: str, base: str) -> PullRequest | None:
        # Gitea's list endpoint cannot filter by head or base, so page through the open ones.
        # Stop on an empty page, not a short one: the server may cap `limit` below ours.
        for page in range(1, self._MAX_PAGES + 1):
            params: dict[str, str | int] = {"state": "open", "page": page, "limit": self._PAGE_SIZE}
            found = self._parse_list(self._api.call("GET", f"{self._repo}/pulls", params=params))
            if not found:
                return None
            match = _matching(found, head, base)
            if match is not None:
                return match
        return None

    def _merged(self, data: dict[str, Any]) -> bool:
        return bool(data.get("merged"))


#: GitLab "locked" is the transient state while a merge is running; it is still open.
_GITLAB_PR_STATES: dict[str, PrState] = {
    "opened": "open",
    "locked": "open",
    "merged": "merged",
    "closed": "closed",
}
#: GitLab has no "error"; "canceled" would read as someone chose to stop, so both map to failed.
_GITLAB_STATUS: dict[str, str] = {
    "pending": "pending",
    "success": "success",
    "failure": "failed",
    "error": "failed",
}


class _GitLab(_HttpForge):
    def __init__(self, api: _Api, repository: str) -> None:
        super().__init__(api)
        # The project may be named by its full path; GitLab wants it as one encoded segment.
        self._project = f"/projects/{quote(repository, safe='')}"

    def find_open_pr(self, head: str, base: str) -> PullRequest | None:
        params = {"state": "opened", "source_branch": head, "target_branch": base}
        found = self._api.call("GET", f"{self._project}/merge_requests", params=params)
        return _matching([self._parse(item) for item in _items(found)], head, base)

    def _create_pr(self, head: str, base: str, title: str, body: str) -> PullRequest:
        payload = {
            "source_branch": head,
            "target_branch": base,
            "title": title,
            "description": body,
        }
        return self._parse(self._api.call("POST", f"{self._project}/merge_requests", json=payload))

    def update_pr(self, number: int, title: str, body: str) -> PullRequest:
        payload = {"title": title, "description": body}
        path = f"{self._project}/merge_requests/{number}"
        return self._parse(self._api.call("PUT", path, json=payload))

    def get_pr(self, number: int) -> PullRequest:
        return self._parse(self._api.call("GET", f"{self._project}/merge_requests/{number}"))

    def set_commit_status(
        self, sha: str, state: StatusState, description: str, context: str = "gitsync"
    ) -> None:
        payload = {
            "state": _GITLAB_STATUS[state],
            "name": context,
            "description": _short(description),
        }
        try:
            self._api.call("POST", f"{self._project}/statuses/{sha}", json=payload)
        except ForgeError as exc:
            # Posting the state a status already has is a 400 "Cannot transition status via
            # :enqueue from :pending": https://gitlab.com/gitlab-org/gitlab-foss/-/issues/25807
            if exc.status == 400 and "Cannot transition status" in str(exc):
                return
            raise

    def _parse(self, data: Any) -> PullRequest:
        try:
            return PullRequest(
                number=int(data["iid"]),
                url=str(data["web_url"]),
                state=_GITLAB_PR_STATES[data["state"]],
                head=str(data["source_branch"]),
                base=str(data["target_branch"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise self._bad_json("merge request", exc) from exc


def _matching(prs: list[PullRequest], head: str, base: str) -> PullRequest | None:
    # Filter again even where the server filtered: a forge that ignores an unknown query
    # parameter would otherwise hand back somebody else's pull request.
    return next((pr for pr in prs if (pr.head, pr.base, pr.state) == (head, base, "open")), None)


_API_ROOT_SUFFIX: dict[str, str] = {"github": "", "gitlab": "/api/v4", "gitea": "/api/v1"}


def _auth_headers(kind: str, token: Secret) -> dict[str, str]:
    if kind == "github":
        return {
            "Authorization": f"Bearer {token.reveal()}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
        }
    if kind == "gitea":
        return {"Authorization": f"token {token.reveal()}", "Accept": "application/json"}
    return {"PRIVATE-TOKEN": token.reveal(), "Accept": "application/json"}


def make_forge(
    kind: ForgeKind,
    api_url: str,
    repository: str,
    token: Secret,
    *,
    timeout: float = 10.0,
    transport: httpx.BaseTransport | None = None,
    retry: RetryPolicy | None = None,
) -> Forge:
    """An adapter for one repository on one forge.

    `api_url` is the API root: ``https://api.github.com`` (GitHub Enterprise:
    ``https://HOST/api/v3``); for GitLab and Gitea the bare host works too, ``/api/v4`` or
    ``/api/v1`` is added when missing. `repository` is ``owner/name`` (GitLab: the full
    project path, subgroups included, or the numeric project id). The returned object also
    has ``close()`` and works as a context manager.
    """
    if kind not in _API_ROOT_SUFFIX:
        raise ConfigError(f"unknown forge {kind!r}: expected github, gitlab or gitea")
    if not api_url.startswith(("http://", "https://")):
        raise ConfigError(f"{kind}: api_url {redact_text(api_url)!r} is not an http(s) URL")
    parts = repository.strip("/").split("/")
    if not all(parts) or (len(parts) != 2 and kind != "gitlab"):
        raise ConfigError(f"{kind}: repository {repository!r} is not in the form owner/name")
    if not token:
        raise ConfigError(f"{kind}: the forge token is empty")
    root = api_url.rstrip("/")
    suffix = _API_ROOT_SUFFIX[kind]
    if suffix and not root.endswith(suffix):
        root += suffix
    client = httpx.Client(
        base_url=root,
        headers={**_auth_headers(kind, token), "User-Agent": "gitsync"},
        timeout=timeout,
        # Connection failures only; `_Api.call` retries 5xx and 429 itself.
        transport=transport or httpx.HTTPTransport(retries=2),
    )
    api = _Api(kind, client, token, retry or RetryPolicy())
    repository = "/".join(parts)
    if kind == "github":
        return _GitHub(api, repository)
    if kind == "gitea":
        return _Gitea(api, repository)
    return _GitLab(api, repository)


def load_token(token_file: str | None, token_env: str | None) -> Secret:
    """The forge token: the file's content stripped if a file is configured, else the variable.

    A file is preferred (a mounted secret stays out of ``/proc/*/environ`` and
    ``docker inspect``); a configured but missing source is an error, never a silent fallback.
    """
    if token_file:
        try:
            value = Path(token_file).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            raise ConfigError(f"forge token file {token_file} does not exist") from None
        except OSError as exc:
            raise ConfigError(
                f"cannot read forge token file {token_file}: {exc.strerror}"
            ) from None
        if not value:
            raise ConfigError(f"forge token file {token_file} is empty")
        return Secret(value)
    if token_env:
        value = os.environ.get(token_env, "").strip()
        if not value:
            raise ConfigError(
                f"environment variable {token_env} (the forge token) is not set or empty"
            )
        return Secret(value)
    raise ConfigError("pull-request mode needs a forge token: set token_file or token_env")
