"""Pinning (`repo.ref`): hold the job directory at a tag or a commit instead of the branch head.

An operator pins to stop a bad change from spreading while it is fixed in git, or to hold a site
at a release tag. The branch stays the source of truth for everything else: while pinned, local
changes are captured into the outbox and wait there (the pull leaves their files alone), and are
pushed to the branch once the pin is removed, so nothing saved while pinned is lost.
"""

from __future__ import annotations

import re

from gitsync.errors import ConfigError
from gitsync.gitrepo import GitMirror
from gitsync.secrets import redact_url

_HEX = re.compile(r"^[0-9a-fA-F]{7,40}$")


def fetch_target(mirror: GitMirror, ref: str) -> str:
    """The commit a pull applies: the branch head, or the commit the pinned tag or commit id names."""
    if not ref:
        return mirror.fetch()
    if _HEX.match(ref):
        found = _commit(mirror, ref)
        if found is None:
            mirror.fetch()  # the pinned commit is most likely in the branch's history
            found = _commit(mirror, ref)
        if found is None and len(ref) == 40 and mirror.fetch_commit(ref):
            found = ref
        if found is None:  # an abbreviated id below a shallow mirror's boundary: deepen the branch to find it
            found = mirror.find_in_history(ref)
        if found is not None:
            return found
    tagged = mirror.fetch_tag(ref)
    if tagged is None:
        raise ConfigError(f"repo.ref {ref!r} is neither a tag of {redact_url(mirror.url)} nor a commit in branch "
                          f"{mirror.branch!r}; set it to an existing tag or commit id, or unset it to follow the "
                          "branch")
    return tagged


def _commit(mirror: GitMirror, ref: str) -> str | None:
    found = mirror.find_commit(ref)
    return found if found and mirror.has_commit(found) else None
