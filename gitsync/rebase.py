"""Carry one captured local change onto the current head of the branch, definition by definition.

Pure: texts in, text out. For every job in the file it compares three versions: `base` (the
git version the local change was made against), `local` (what the person saved) and `head`
(git now). Only jobs the person changed are carried, with tomlkit, onto head's text, so their
comments and layout stay. A job that git *also* changed to something else is a conflict: git
keeps it, and the caller saves the local version on a conflict branch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import toml

from gitsync import kitedit
from gitsync.kit import check_kit
from gitsync.kitname import KIT_SUFFIX
from gitsync.problems import Problem

Jobs = dict[str, dict[str, Any]]


@dataclass(frozen=True)
class Carried:
    text: bytes | None  # the new git file; None: remove the file
    changed: tuple[str, ...]  # jobs whose change went onto head
    conflicts: tuple[str, ...]  # jobs git changed differently since base
    problems: tuple[Problem, ...]  # errors that stop this file from being committed

    def touches(self, head: bytes | None) -> bool:
        return self.text != head


def carry_bytes(local: bytes | None, base: bytes | None, head: bytes | None, repo_path: str, *,
                prefer_local: bool = False) -> Carried:
    """A companion file is plain bytes (text or binary): the local version replaces git's when git did not change
    the file since `base`; when git changed it too, git's stays and the local one is a conflict. Its "job" in
    messages and conflict branch names is its repo path."""
    label = (repo_path,)
    if local in (base, head):
        return Carried(head, (), (), ())  # not changed locally, or git already has it
    if head != base:
        return Carried(local if prefer_local else head, label if prefer_local else (), label, ())
    return Carried(local, label, (), ())


def jobs_of(content: bytes | None) -> Jobs:
    """Definitions as Farm's store reads them (the `toml` package), {} for no file."""
    if content is None:
        return {}
    jobs = toml.loads(content.decode("utf-8")).get("job", {})
    return {k: dict(v) for k, v in jobs.items() if isinstance(v, dict)}


def _same(a: dict[str, Any] | None, b: dict[str, Any] | None, key: str) -> bool:
    if a is None or b is None:
        return a is b
    return kitedit.definitions_equal(a, b, key=key)


def carry(local: bytes | None, base: bytes | None, head: bytes | None, repo_path: str, *,
          prefer_local: bool = False) -> Carried:
    """Put the local changes (relative to base) onto head; `prefer_local` takes the local side of conflicts
    too (used to build the conflict branch). A file inside a companion folder (never a .kit) is carried whole."""
    if not repo_path.endswith(KIT_SUFFIX):
        return carry_bytes(local, base, head, repo_path, prefer_local=prefer_local)
    local_jobs, base_jobs, head_jobs = jobs_of(local), jobs_of(base), jobs_of(head)
    text: str | None = head.decode("utf-8") if head is not None else None
    changed: list[str] = []
    conflicts: list[str] = []
    for key in sorted(set(local_jobs) | set(base_jobs)):
        mine, was, now = local_jobs.get(key), base_jobs.get(key), head_jobs.get(key)
        if _same(mine, was, key) or _same(mine, now, key):
            continue  # not changed locally, or git already has it
        if not _same(now, was, key):
            conflicts.append(key)
            if not prefer_local:
                continue
        changed.append(key)
        try:
            if mine is None:
                text = kitedit.remove_definition(text, key) if text is not None else None
            elif text is None:
                text = kitedit.new_definition_file(key, mine)
            else:
                text = kitedit.update_definition(text, key, mine)
        except ValueError as exc:  # a layout kitedit cannot edit safely (e.g. jobs as dotted keys)
            problem = Problem(repo_path, 1, 1, "error", f"cannot carry the change to job {key!r} onto the git "
                              f"file: {exc}", "make this change in git directly")
            return Carried(head, tuple(changed), tuple(conflicts), (problem,))
    data = text.encode("utf-8") if text is not None else None
    problems: tuple[Problem, ...] = ()
    if data is not None and changed:
        problems = tuple(p for p in check_kit(data, repo_path).problems if p.severity == "error")
    return Carried(data, tuple(changed), tuple(conflicts), problems)
