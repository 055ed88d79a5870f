"""A client for a Farm jobs service's HTTP API (`/load`, `/save`, `/remove`), for the `jobs-api` target.

A jobs service on a RedisJobStore has no directory to write into: its API is the only way in. The
API has no transactions, versions or single-definition reads, so this client stays small: three
calls, one retry loop, one error type.

- The API key is read from its file or environment variable before every write, so a rotated
  secret is picked up without a restart. It only ever travels in the `X-API-KEY` header: never in
  a log line, a status page or an exception text.
- Retries (exponential backoff) only where a second try can help: connection failures, 5xx, 429.
  A 403 (wrong key) or 422 (a definition Farm refuses) is reported at once, in one line that says
  what to fix; retrying would only hammer the service.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx

from gitsync.errors import TargetError
from gitsync.forge_http import RetryPolicy
from gitsync.secrets import Secret, redact_text, redact_url

API_KEY_HEADER = "X-API-KEY"
DEFAULT_TIMEOUT = 30.0


class JobsApiError(TargetError):
    """The jobs service failed or refused a call; ``status`` is the HTTP status (None: no answer)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class JobsApiClient:
    """One jobs service, reached at ``base_url`` (scheme, host, port and the ``url_prefix``)."""

    def __init__(self, base_url: str, api_key: Callable[[], Secret], *, timeout: float = DEFAULT_TIMEOUT,
                 retry: RetryPolicy | None = None, transport: httpx.BaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._retry = retry or RetryPolicy()
        # trust_env=False: an HTTP(S)_PROXY meant for the internet must not capture a cluster-local service.
        self._client = httpx.Client(timeout=timeout, transport=transport, trust_env=False)
        logging.getLogger("httpx").setLevel(logging.WARNING)  # it logs every request at INFO: 1,000 lines a sync
        #: Calls made, by route ("load", "save", "remove"), retries included: what tests and benchmarks count.
        self.calls: Counter[str] = Counter()

    def close(self) -> None:
        self._client.close()

    @property
    def shown_url(self) -> str:
        return redact_url(self.base_url)

    # -- the three calls ----------------------------------------------------------------------------
    def load(self) -> dict[str, dict[str, Any]]:
        """Every definition the service holds, by name, as `/load` returns them."""
        data = self._call("GET", "load")
        if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
            raise JobsApiError(f"jobs service {self.shown_url}: /load did not answer a JSON object of "
                               "definitions; check that the URL ends with the service's url_prefix "
                               "(default /queue/management/jobs)")
        return data

    def save(self, definition: dict[str, Any]) -> None:
        """Create or replace one definition. `job_spec_path` is never sent: on a directory store it would
        make Farm rewrite whatever file it names."""
        body = {k: v for k, v in definition.items() if k != "job_spec_path" and v is not None}
        self._call("POST", "save", json=body, what=f"definition {definition.get('name')!r}")

    def remove(self, name: str) -> bool:
        """Remove one definition; False when the service says it did not hold it (Redis store: 404)."""
        try:
            self._call("POST", "remove", json={"job_definition_name": name}, what=f"definition {name!r}")
        except JobsApiError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    # -- plumbing -----------------------------------------------------------------------------------
    def _call(self, method: str, route: str, *, json: Any = None, what: str = "") -> Any:
        where = f"jobs service {self.shown_url}: {method} /{route}" + (f" ({what})" if what else "")
        key = Secret("")
        for attempt in range(1, self._retry.attempts + 1):
            last = attempt == self._retry.attempts
            headers = {}
            if method == "POST":
                key = self._api_key()  # re-read every time: a rotated key works without a restart
                if key:
                    headers[API_KEY_HEADER] = key.reveal()
            self.calls[route] += 1
            try:
                response = self._client.request(method, f"{self.base_url}/{route}", json=json, headers=headers)
            except httpx.TransportError as exc:
                if last:
                    raise self._error(f"{where} failed after {attempt} attempt(s): {_describe(exc)}; is the "
                                      "jobs service running and the URL right?", None, key) from None
                self._retry.sleep(self._retry.delay(attempt))
                continue
            status = response.status_code
            if response.is_success:
                try:
                    return response.json()
                except ValueError:
                    raise self._error(f"{where}: HTTP {status} with a body that is not JSON", status, key) from None
            if last or not (status >= 500 or status == 429):
                raise self._error(_refusal(where, response, attempt), status, key)
            self._retry.sleep(self._retry.delay(attempt, response.headers.get("retry-after")))
        raise AssertionError("unreachable: the last attempt returns or raises")

    @staticmethod
    def _error(text: str, status: int | None, key: Secret) -> JobsApiError:
        return JobsApiError(redact_text(text, key), status)


def _refusal(where: str, response: httpx.Response, attempts: int) -> str:
    status = response.status_code
    if status in (401, 403):
        return (f"{where}: HTTP {status}, the jobs service refused the API key; set target.api_key_file or "
                "target.api_key_env to the service's api_key")
    detail = _detail(response)
    text = f"{where}: HTTP {status}" + (f": {detail}" if detail else "")
    if status == 422:
        text += " (Farm's /save model refuses it; fix the definition in git)"
    elif status == 404 and "/remove" not in where:
        text += "; check that the URL ends with the service's url_prefix (default /queue/management/jobs)"
    if attempts > 1:
        text += f" (after {attempts} attempts)"
    return text


def _detail(response: httpx.Response) -> str:
    """FastAPI's `detail`: a string, or a list of `{loc, msg}` validation errors."""
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        return response.text.strip()[:200]
    if isinstance(detail, list):
        parts = []
        for entry in detail:
            if isinstance(entry, dict):
                loc = ".".join(str(p) for p in entry.get("loc", []) if p != "body")
                parts.append(f"{loc}: {entry.get('msg')}" if loc else str(entry.get("msg")))
        return "; ".join(parts)[:300]
    return str(detail)[:300] if detail else ""


def _describe(exc: httpx.TransportError) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text != type(exc).__name__ else text
