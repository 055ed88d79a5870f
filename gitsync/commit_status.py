"""A commit status on the forge after each apply or refusal, so a pull-request author sees whether the
merge reached Farm (GitHub, GitLab and Gitea; the adapters are in forge.py).

The decision is pure (`status_for`); posting is best effort: a forge that is down never fails or
delays the sync beyond the forge client's bounded retries, and each (commit, state) is posted once,
not on every idle cycle.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gitsync.errors import GitsyncError

if TYPE_CHECKING:  # the forge's HTTP client (httpx) is imported only when a status is to be posted
    from gitsync.config import Settings
    from gitsync.forge import Forge, StatusState
    from gitsync.state import State
    from gitsync.sync import SyncResult

log = logging.getLogger("gitsync.commit_status")

CONTEXT = "gitsync"


@dataclass(frozen=True)
class CommitStatus:
    sha: str
    state: StatusState
    description: str


def status_for(result: SyncResult, where: str) -> CommitStatus | None:
    """What to say about the branch head after one sync; None when the sync says nothing about it."""
    if not result.head:
        return None  # the fetch failed: nothing is known about any commit
    if result.result in ("synced", "noop") and result.applied == result.head:
        return CommitStatus(result.head, "success", f"applied to {where}")
    if result.result == "partial" and result.applied == result.head:
        held = sum(1 for f in result.findings if f.kind in ("held", "foreign"))
        return CommitStatus(result.head, "failure", f"applied to {where}, but {held} file(s) held back")
    if result.result in ("invalid", "refused"):
        return CommitStatus(result.head, "failure", f"not applied to {where}: {result.message}")
    return None


class StatusPoster:
    """Posts `status_for(result)` once per commit and state."""

    def __init__(self, forge: Forge, state: State, target_directory: str, context: str = CONTEXT) -> None:
        self.forge = forge
        self.state = state
        self.where = f"{socket.gethostname()}:{target_directory}"
        #: "gitsync", or "gitsync/<name>" for a named target: several targets' statuses sit side by side.
        self.context = context

    def after_sync(self, result: SyncResult) -> None:
        status = status_for(result, self.where)
        if status is None:
            return
        key = f"{status.sha}:{status.state}"
        if self.state.get("forge_status_posted") == key:
            return
        try:
            self.forge.set_commit_status(status.sha, status.state, status.description, self.context)
        except GitsyncError as exc:
            log.warning("could not post the %s status on %s to the forge (tried again next sync): %s",
                        status.state, status.sha[:12], exc)
            self.state.set(forge_status_error=str(exc))
            return
        self.state.set(forge_status_posted=key, forge_status_error="")
        log.info("forge status %s on %s", status.state, status.sha[:12])


def make_poster(settings: Settings, state: State) -> StatusPoster | None:
    """The poster `sync.commit_status` asks for (None when it is off), for the agent and `sync --once`."""
    if not settings.sync_commit_status:
        return None
    from gitsync.forge import make_forge, token_reader

    token = token_reader(settings.push_forge_token_file or None, settings.push_forge_token_env or None)
    forge = make_forge(settings.push_forge, settings.push_forge_api_url,  # type: ignore[arg-type]
                       settings.push_forge_repository, token)
    return StatusPoster(forge, state, settings.target_directory or settings.target_url, context_for(settings))


def context_for(settings: Settings) -> str:
    """The commit status context of a target: "gitsync" for the single one, "gitsync/<name>" for a named one."""
    from gitsync.config import DEFAULT_TARGET

    return CONTEXT if settings.target_name == DEFAULT_TARGET else f"{CONTEXT}/{settings.target_name}"
