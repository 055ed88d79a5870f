"""Exceptions gitsync raises on purpose.

    GitsyncError            anything a user can act on; printed as one line, exit 1
    ├── ConfigError         bad gitsync.toml / env / flags
    ├── GitError            a git operation failed (text already redacted)
    ├── ValidationFailed    a definition set has errors; carries the problems
    ├── TargetError         the target (directory or jobs service) refused or failed
    ├── StateError          the state directory or database is unusable (damaged, full disk, not a folder)
    └── ForgeError          GitHub / GitLab / Gitea refused or failed a pull-request call

Anything else escaping to the CLI is a bug and gets exit 3 with a traceback.
"""

from __future__ import annotations


class GitsyncError(Exception):
    """An error the user can fix; its text says what to do."""


class ConfigError(GitsyncError):
    pass


class GitError(GitsyncError):
    """Its text is one line (git's first `fatal:` line); `detail` keeps git's whole stderr for classifying."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail or message


class TargetError(GitsyncError):
    pass


class StateError(GitsyncError):
    """The state database cannot be used; the text names the file and the fix (usually: move it away)."""


class ValidationFailed(GitsyncError):
    def __init__(self, message: str, problems: list[object] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


class ForgeError(GitsyncError):
    """The forge's REST API failed; the text names forge, method, path and status, never the token.

    ``status`` is the HTTP status (None for a connection failure), so callers can tell
    "already exists" (409/422) from real failures without parsing the text.
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
