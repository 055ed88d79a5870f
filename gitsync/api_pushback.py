"""Push-back from a jobs service: changes others made through `/save` or `/remove` become commits.

The same rules as the directory target, by reusing its machinery (pushback.py): the outbox, the
push modes (direct, pull request, off), conflict branches, backoff and the recognition of a push
that landed before a crash. What differs is the unit: a jobs service holds definitions, not files,
so an outbox entry is one job name (`api_capture.py` fills it) holding the definition as `/load`
returned it, and carrying it onto git works per definition:

- the entry's definition is first written into the git file it was in step with (its *base*, found
  through the applied record), with tomlkit (kitedit.py), so the *local* version differs from the
  base in that one definition only; then the usual three-way carry (rebase.py) puts it onto the
  branch head, keeping comments and the other jobs of the file, and detects a conflict when git
  changed the same definition. Several entries for one file are carried one after the other;
- a new definition becomes `push.new_file_dir/<name>.kit`, where the directory target would put
  it; that place must be one this target syncs (under `repo.path` and `target.include`), or the
  change is *blocked* in the outbox with the fix, never pushed somewhere the pull would not see;
- settling an entry records the service's version in the applied record (api_store.py), so the
  next poll does not see it again and the next pull saves git's text only where it differs.

One object per jobs-api target: it takes that target's settings, its client and its record.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gitsync import defset, kitedit
from gitsync.api_capture import GitVersion, definition_of, poll
from gitsync.api_plan import Applied, Wanted
from gitsync.api_sync import ApiSyncer, matches
from gitsync.gitrepo import TreeEntry
from gitsync.outbox import Entry, Outbox
from gitsync.problems import Problem
from gitsync.pushback import PushBack, Step
from gitsync.rebase import Carried, carry

log = logging.getLogger("gitsync.push")


@dataclass(frozen=True)
class ApiStep(Step):
    """A step whose local side is the base file with the service's definition written in."""

    local: bytes | None = None

    @property
    def local_text(self) -> bytes | None:
        return carry(self.local, self.base, self.head, self.repo_path, prefer_local=True).text


class ApiPushBack(PushBack):
    """Poll one jobs service and push what others changed there to git."""

    def __init__(self, syncer: ApiSyncer, outbox: Outbox, forge: Any = None,
                 guard: Callable[[], None] | None = None) -> None:
        super().__init__(syncer.settings, syncer.state, syncer.mirror, None, outbox, forge=forge)
        self.syncer = syncer
        self.client = syncer.target.client
        self.record = syncer.target.record
        if guard is not None:  # PushBack._push runs it right before every push (HA: only the leader pushes)
            self.guard = guard
        self._definitions: dict[str, dict[str, Wanted]] = {}
        self._reverting = False  # mode off and `outbox drop`: changes go to conflict branches only

    # -- capture ------------------------------------------------------------------------------------
    def capture(self) -> list[str]:
        """One poll of `/load`: stable changes go to the outbox (see api_capture.py)."""
        self._definitions = {}
        return poll(self.client, self.record, self.outbox, self._git_version,
                    max_delete_share=self.settings.sync_max_delete_share, settle=self.settings.push_debounce)

    def _git_version(self, name: str, mine: Applied | None) -> GitVersion | None:
        """The git file a change to `name` is carried onto, and the blob it was in step with: the version
        gitsync saved (found by its fingerprint at the applied commit or the fetched head); for a
        definition gitsync never saved, git's own (at the applied commit: a real base; only at the head:
        no base, so a differing one is a conflict); otherwise a new file."""
        commits: list[str] = []
        for key in ("applied_commit", "head_commit"):
            commit = self.state.get(key)
            if commit and commit not in commits and self.mirror.has_commit(commit):
                commits.append(commit)
        in_git = frozenset(w.fingerprint for w in (self._defined_in(c).get(name) for c in commits) if w is not None)
        for at, commit in enumerate(commits):
            found = self._defined_in(commit).get(name)
            if found is None or (mine is not None and found.fingerprint != mine.fingerprint):
                continue
            blob = self.mirror.entries(commit, [found.repo_path])[found.repo_path].blob
            return GitVersion(found.repo_path, blob if at == 0 or mine is not None else None, found.fingerprint,
                              in_git)
        if mine is not None:  # git no longer has what gitsync saved: the file at the applied commit is the base
            for commit in commits:
                item = self.mirror.entries(commit, [mine.repo_path]).get(mine.repo_path)
                if item is not None:
                    return GitVersion(mine.repo_path, item.blob, None, in_git)
            return GitVersion(mine.repo_path, None, None, in_git)
        return GitVersion(self._new_path(f"{name}.kit"), None, None, in_git)

    def _defined_in(self, commit: str) -> dict[str, Wanted]:
        if commit not in self._definitions:
            self._definitions[commit] = self.syncer.definitions(commit).wanted
        return self._definitions[commit]

    # -- carrying onto git (the hooks PushBack calls) ------------------------------------------------
    def _carry_all(self, entries: list[Entry], head: str) -> list[Step]:
        listing, delta = self._relevant_listing(entries, head)
        steps: list[Step] = []
        heads: dict[str, bytes | None] = {}  # a file's head text with the earlier entries for it carried on
        for entry in entries:
            repo_path = entry.repo_path or self._new_path(f"{entry.target}.kit")
            if repo_path in heads:
                head_text = heads[repo_path]
            else:
                item = listing.get(repo_path)
                head_text = self.mirror.read_blob(item.blob) if item else None
            if not self._reverting and not self._synced(repo_path):
                self._block_placement(entry, repo_path)
                continue
            base = self.mirror.read_blob(entry.base_blob) if entry.base_blob else None
            local: bytes | None = None
            problem = None
            try:
                local = _local_text(base, entry.target, definition_of(entry.content))
            except ValueError as exc:  # a layout kitedit cannot edit safely (e.g. jobs as dotted keys)
                problem = Problem(repo_path, 1, 1, "error", f"cannot write job {entry.target!r} into the git "
                                  f"file: {exc}", "make this change in git directly")
            carried = Carried(head_text, (), (), (problem,)) if problem else carry(local, base, head_text, repo_path)
            steps.append(ApiStep(entry, repo_path, base, head_text, carried, local=local))
            if not carried.problems:
                heads[repo_path] = carried.text
        return self._check_against_head(steps, listing, head, delta)

    def _revert_only(self, entries: list[Entry]) -> bool:
        self._reverting = True  # a conflict branch may hold a file this target does not sync
        try:
            return super()._revert_only(entries)
        finally:
            self._reverting = False

    def _relevant_listing(self, entries: list[Entry], head: str) \
            -> tuple[dict[str, TreeEntry], dict[str, TreeEntry | None] | None]:
        """The definition files this target syncs (duplicate job names are checked among these only: two
        targets may each define a job of the same name)."""
        listing = self.mirror.list_tree(head, self.settings.repo_path)
        return {p: e for p, e in listing.items()
                if not defset.is_definition_path(p) or self._synced(p)}, None

    def _names_of(self, path: str, blob: str) -> tuple[str, ...]:
        return self.syncer.names_in(path, blob)  # the pull's validation cache: parsed once per blob

    def _synced(self, repo_path: str) -> bool:
        folder = self.settings.repo_path.strip("/")
        prefix = f"{folder}/" if folder else ""
        return repo_path.startswith(prefix) and matches(repo_path[len(prefix):], self.syncer.include)

    def _block_placement(self, entry: Entry, repo_path: str) -> None:
        """A new definition whose file this target would not sync: pushed there, the next pull would remove it
        from the service. It waits, blocked, until push.new_file_dir is fixed (then `gitsync outbox retry`)."""
        error = (f"not pushed: job {entry.target!r} would go to {repo_path}, which this target does not sync "
                 "(outside repo.path or target.include); set push.new_file_dir to a folder under repo.path that "
                 "target.include covers, then run `gitsync outbox retry`")
        if entry.status != "blocked" or entry.error != error:
            log.error("%s", error)
        self.outbox.mark([entry.target], "blocked", error=error)

    def _acknowledge(self, settled: list[tuple[Entry, str | None, str | None]]) -> None:
        """Settled: the service's version is now what gitsync holds for that name, so the next poll does not
        see it again, and the next pull saves git's text only where git ended up different."""
        for entry, repo_path, _git_blob in settled:
            if entry.local_blob is None:
                self.record.forget(entry.target)
            else:
                self.record.saved(entry.target, Applied(repo_path or entry.repo_path or "", entry.local_blob))

    def _place(self) -> str:
        return self.client.shown_url


def _local_text(base: bytes | None, name: str, definition: dict[str, Any] | None) -> bytes | None:
    """The base file with `name` as the service holds it (None: removed); None when no job is left."""
    text = base.decode("utf-8") if base is not None else None
    if definition is None:
        left = kitedit.remove_definition(text, name) if text is not None else None
        return left.encode("utf-8") if left is not None else None
    if text is None:
        return kitedit.new_definition_file(name, definition).encode("utf-8")
    return kitedit.update_definition(text, name, definition).encode("utf-8")
