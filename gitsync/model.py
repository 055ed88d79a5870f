"""The domain's values: what a tree record, an owned file and a history row are.

Pure data, no storage: the decision modules (`plan`, `defset`, `rebase`) and the tests build
these directly, and `state.py` only maps them to and from SQLite rows.

Words used for blob ids, one meaning each:

    git_blob     the blob id of a file's content as it is in git (a tree entry)
    local_blob   the blob id of a file's content as it is in the job directory
    base         the git blob a local file was last in step with (what a local change is "against")
"""

from __future__ import annotations

from dataclasses import dataclass

from gitsync.problems import Problem


@dataclass(frozen=True, slots=True)
class TreeRecord:
    """One definition file of the applied commit, with its cached validation (keyed by its git blob id)."""

    blob: str
    names: tuple[str, ...]
    problems: tuple[Problem, ...]
    #: ``${job}`` companion folders the file names, with the line of its ``"++"`` key (companion.py).
    folders: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True, slots=True)
class Owned:
    """A target file gitsync owns: where it came from and the blob id of the content it wrote.

    After a push-back, `blob` is the content a person saved (acknowledged: it is in git now, in
    git's own formatting) and `git_blob` the git version it corresponds to; otherwise they agree.
    """

    repo_path: str
    blob: str
    names: tuple[str, ...]
    stat: str = ""
    git_blob: str = ""

    @property
    def base(self) -> str:
        return self.git_blob or self.blob


@dataclass(frozen=True)
class HistoryRow:
    """One sync that changed something (or failed), as `gitsync history` lists it."""

    started: float
    duration: float
    from_commit: str | None
    to_commit: str | None
    result: str
    written: int
    removed: int
    message: str
    repeats: int = 1  # the same verdict seen again by later cycles (a commit refused every cycle is one row)
    last_seen: float | None = None  # when it was last seen, if more than once


@dataclass(frozen=True, slots=True)
class JournalRow:
    """One file of an apply in progress: what gitsync found there (`old_blob`, None for absent) and what it
    is writing (`new_blob`, None for a delete). Written before the target is touched and cleared in the
    transaction that records the apply, so after a crash capture can tell gitsync's own half-applied
    writes from a person's edits."""

    target: str
    repo_path: str
    old_blob: str | None
    new_blob: str | None
    names: tuple[str, ...] = ()
