"""Which webhook deliveries should start a sync: pure, so every forge's shape is a table-driven test.

Forges send many events to one hook URL (pings, pushes to every branch, tags, pull requests,
issues). Only a push to the tracked branch changes what gitsync would apply; everything else is
answered and ignored, so a busy repository cannot make the agent fetch on every comment.

- GitHub: `X-GitHub-Event: push` (`ping` when the hook is created), body `ref`.
- Gitea: `X-Gitea-Event: push` (it also sends X-GitHub-Event, so it is checked first), body `ref`.
- GitLab: `X-Gitlab-Event: Push Hook`, body `ref`.
- No event header at all: a plain trigger (`curl -X POST`, a CI job), which always syncs.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

Outcome = Literal["sync", "ping", "ignored", "bad_payload"]


@dataclass(frozen=True)
class Decision:
    outcome: Outcome
    reason: str

    @property
    def status_code(self) -> int:
        return {"sync": 202, "ping": 200, "ignored": 202, "bad_payload": 400}[self.outcome]


def decide(headers: Mapping[str, str], body: bytes, branch: str) -> Decision:
    """What to do with a delivery whose signature (if any is configured) already checked out."""
    lowered = {k.lower(): v for k, v in headers.items()}
    for header, forge, push_name in (("x-gitea-event", "gitea", "push"), ("x-gitlab-event", "gitlab", "push hook"),
                                     ("x-github-event", "github", "push")):
        event = lowered.get(header)
        if event is None:
            continue
        event = event.strip().lower()
        if event == "ping":
            return Decision("ping", f"{forge} ping answered")
        if event != push_name:
            return Decision("ignored", f"{forge} {event!r} event does not change the branch")
        ref = _ref(body)
        if ref is None:
            return Decision("bad_payload", f"{forge} push event without a JSON 'ref'")
        if ref != f"refs/heads/{branch}":
            return Decision("ignored", f"{forge} push to {ref}, not refs/heads/{branch}")
        return Decision("sync", f"{forge} push to {ref}")
    return Decision("sync", "plain trigger")


def _ref(body: bytes) -> str | None:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    ref = data.get("ref") if isinstance(data, dict) else None
    return ref if isinstance(ref, str) else None
