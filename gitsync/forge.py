"""Pull requests and commit statuses on GitHub, GitLab and Gitea, over their REST APIs.

In "pull-request" push mode gitsync pushes to a branch and keeps one pull request open for
it. This module is the only place that knows the three forges' URL layouts, field names and
quirks. Every call goes through `ForgeApi.call`, which retries 5xx and 429 (httpx's `retries=`
only covers failed connections) and turns any failure into a `ForgeError` whose text names
the forge, method, path and status, and never the token.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Generator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Protocol
from urllib.parse import quote

import httpx

from gitsync.errors import ConfigError, ForgeError, GitsyncError
from gitsync.forge_http import ForgeApi, RetryPolicy, as_items, short_description
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


class _HttpForge(ABC):
    """What the three adapters share: the session, and an idempotent `open_pr`."""

    def __init__(self, api: ForgeApi) -> None:
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
    def __init__(self, api: ForgeApi, repository: str) -> None:
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
        payload = {"state": state, "description": short_description(description), "context": context}
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
        return [self._parse(item) for item in as_items(data)]


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
    def __init__(self, api: ForgeApi, repository: str) -> None:
        super().__init__(api)
        # The project may be named by its full path; GitLab wants it as one encoded segment.
        self._project = f"/projects/{quote(repository, safe='')}"

    def find_open_pr(self, head: str, base: str) -> PullRequest | None:
        params = {"state": "opened", "source_branch": head, "target_branch": base}
        found = self._api.call("GET", f"{self._project}/merge_requests", params=params)
        return _matching([self._parse(item) for item in as_items(found)], head, base)

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
            "description": short_description(description),
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


class _TokenAuth(httpx.Auth):
    """Sets the token headers on every request from a reader, so a rotated token file is used at once."""

    def __init__(self, kind: str, reader: Callable[[], Secret]) -> None:
        self._kind = kind
        self._reader = reader

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        try:
            token = self._reader()
        except GitsyncError as exc:  # the secret file vanished or emptied: a forge failure, retried later
            raise ForgeError(f"{self._kind}: {exc}") from None
        request.headers.update(_auth_headers(self._kind, token))
        yield request


def make_forge(
    kind: ForgeKind,
    api_url: str,
    repository: str,
    token: Secret | Callable[[], Secret],
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
    if not (token() if callable(token) else token):
        raise ConfigError(f"{kind}: the forge token is empty")
    root = api_url.rstrip("/")
    suffix = _API_ROOT_SUFFIX[kind]
    if suffix and not root.endswith(suffix):
        root += suffix
    reader = token if callable(token) else (lambda: token)
    client = httpx.Client(
        base_url=root,
        headers={"User-Agent": "gitsync"},
        auth=_TokenAuth(kind, reader),
        timeout=timeout,
        # Connection failures only; `ForgeApi.call` retries 5xx and 429 itself.
        transport=transport or httpx.HTTPTransport(retries=2),
    )
    api = ForgeApi(kind, client, reader, retry or RetryPolicy())
    repository = "/".join(parts)
    if kind == "github":
        return _GitHub(api, repository)
    if kind == "gitea":
        return _Gitea(api, repository)
    return _GitLab(api, repository)


def token_reader(token_file: str | None, token_env: str | None) -> Callable[[], Secret]:
    """The forge token, checked now and re-read before every request (it may rotate while the agent runs)."""
    load_token(token_file, token_env)
    return lambda: load_token(token_file, token_env)


def load_token(token_file: str | None, token_env: str | None) -> Secret:
    """The forge token (see `credentials.read_secret`); pull-request mode cannot work without one."""
    from gitsync.credentials import read_secret

    token = read_secret(token_file, token_env, "forge token")
    if not token:
        raise ConfigError("pull-request mode needs a forge token: set token_file or token_env")
    return token
