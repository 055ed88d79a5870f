"""Values that must never reach a log, a status page, a metric or an exception text."""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

REDACTED = "****"


@dataclass(frozen=True)
class Secret:
    """A secret whose ``str()`` and ``repr()`` are redacted, so printing it by accident is safe.

    Only ``reveal()`` returns the value; grep for it to audit every use.
    """

    _value: str

    def __post_init__(self) -> None:
        remember(self._value)

    def reveal(self) -> str:
        return self._value

    def __str__(self) -> str:
        return REDACTED if self._value else ""

    def __repr__(self) -> str:
        return f"Secret({REDACTED!r})" if self._value else "Secret('')"

    def __bool__(self) -> bool:
        return bool(self._value)


def redact_url(url: str) -> str:
    """Hide the password (or token) in ``scheme://user:pass@host/...``; other URLs are unchanged."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if not parts.password and not (parts.username and "@" in parts.netloc and parts.scheme in ("http", "https")):
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    # https://TOKEN@host (no password) is a common way to pass a token as the user name
    netloc = f"{user}:{REDACTED}@{host}" if parts.password else f"{REDACTED}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


_URL_IN_TEXT = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'\"]+")


def redact_text(text: str, *secrets: Secret | str) -> str:
    """Redact every URL credential and each given secret value found in free text (git stderr, ...)."""
    text = _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)
    for secret in secrets:
        value = secret.reveal() if isinstance(secret, Secret) else secret
        if value and len(value) >= 4:
            text = text.replace(value, REDACTED)
    return text



def redact_failure(url: Secret, exc: BaseException) -> str:
    """`<url>: <error>` with the URL's password (also when the error text repeats it) redacted: how a
    failure to reach a server named by a secret URL is shown (the HA lease and the HA record in Redis)."""
    password = urlsplit(url.reveal()).password or ""
    return f"{redact_url(url.reveal())}: {redact_text(str(exc), url, password)}"

#: Every secret value this process has loaded, so log lines can be scrubbed of them wherever they come from.
_KNOWN: set[str] = set()
_KNOWN_LOCK = threading.Lock()


def remember(value: str) -> None:
    """Register a secret value for `RedactingFilter` (values under 4 characters would redact noise)."""
    if len(value) >= 4:
        with _KNOWN_LOCK:
            _KNOWN.add(value)


class RedactingFilter(logging.Filter):
    """Scrub URL credentials and known secret values from every record, gitsync's or a library's.

    httpx logs each request's full URL (`https://user:token@host/...`) at INFO; a filter on the handler
    catches it and anything else a library writes, tracebacks included.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = scrub(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text)
        return True


def scrub(text: str) -> str:
    """`redact_text` with every secret value this process has loaded."""
    with _KNOWN_LOCK:
        known = sorted(_KNOWN, key=len, reverse=True)
    return redact_text(text, *known)


def install_redaction(*loggers: logging.Logger, handlers: bool = True) -> None:
    """Add the redacting filter to the given loggers and (`handlers`) every root handler, once each."""
    targets: list[logging.Filterer] = [*(logging.getLogger().handlers if handlers else []), *loggers]
    for target in targets:
        if not any(isinstance(f, RedactingFilter) for f in target.filters):
            target.addFilter(RedactingFilter())
