"""The HTTP plumbing under the forge adapters: one call path that retries what is worth retrying.

httpx's own `retries=` only covers failed connections; forges answer load with 5xx, 429 and
(GitHub) 403 + Retry-After, so those are retried here, with a bounded, capped backoff. Every
failure becomes a `ForgeError` naming the forge, method, path and status, never the token.
"""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from gitsync.errors import ForgeError
from gitsync.secrets import Secret, install_redaction, redact_text

# httpx logs every request's full URL at INFO, credentials in `push.forge_api_url` included.
install_redaction(logging.getLogger("httpx"), handlers=False)


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


class ForgeApi:
    """One forge's HTTP session: base URL and auth headers, bounded retries, redacted errors."""

    def __init__(self, forge: str, client: httpx.Client, token: Secret | Callable[[], Secret],
                 retry: RetryPolicy) -> None:
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
        detail = error_detail(response)
        if detail:
            text += f": {detail}"
        if attempts > 1:
            text += f" (after {attempts} attempts)"
        if status in (401, 403):
            text += " - check that the forge token is valid and may write to the repository"
        return self._error(text, status)

    def _error(self, text: str, status: int | None = None) -> ForgeError:
        token = self._token
        if callable(token):
            try:
                token = token()
            except Exception:  # noqa: BLE001 - the secret is unreadable; nothing of it can be in the text
                token = Secret("")
        return ForgeError(redact_text(text, token), status)


def error_detail(response: httpx.Response) -> str:
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


def as_items(data: Any) -> list[dict[str, Any]]:
    return [item for item in data if isinstance(item, dict)] if isinstance(data, list) else []


def short_description(description: str) -> str:
    # GitHub rejects status descriptions over 140 characters with 422.
    return description if len(description) <= 140 else description[:139] + "…"
