"""Values that must never reach a log, a status page, a metric or an exception text."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

REDACTED = "****"


@dataclass(frozen=True)
class Secret:
    """A secret whose ``str()`` and ``repr()`` are redacted, so printing it by accident is safe.

    Only ``reveal()`` returns the value; grep for it to audit every use.
    """

    _value: str

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
