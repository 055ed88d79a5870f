"""Flush the outbox to git: direct commits, a pull request, or (mode off) conflict branches only.

Nothing leaves the outbox until its change is in git, on a conflict branch, or dropped because
its pull request was closed unmerged. While the remote is down the outbox waits with
exponential backoff; a push that loses a race (non-fast-forward) is rebuilt on the new head.
"""

from __future__ import annotations

import logging
import re
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from gitsync import defset, faults
from gitsync.companion import is_companion_target
from gitsync.config import Settings
from gitsync.errors import ConfigError, ForgeError, GitError
from gitsync.gitrepo import GitMirror, Identity, PushRejected, TreeEntry
from gitsync.kit import check_kit
from gitsync.model import Owned
from gitsync.outbox import Entry, OpenPullRequest, Outbox
from gitsync.rebase import Carried, carry, jobs_of
from gitsync.state import State
from gitsync.target_dir import DirectoryTarget, blob_id

log = logging.getLogger("gitsync.push")

MAX_REBASES = 5
PR_REF = "refs/gitsync/pr"
CONFLICT_REF = "refs/gitsync/conflict"


@dataclass(frozen=True)
class Step:
    """One outbox entry carried onto a head commit."""

    entry: Entry
    repo_path: str
    base: bytes | None
    head: bytes | None
    carried: Carried

    @property
    def local_text(self) -> bytes | None:
        """Head with every local change on it, conflicts included: what a conflict branch holds."""
        return carry(self.entry.content, self.base, self.head, self.repo_path, prefer_local=True).text

    @property
    def ok(self) -> bool:
        return not self.carried.problems


class PushBack:
    def __init__(self, settings: Settings, state: State, mirror: GitMirror, target: DirectoryTarget | None,
                 outbox: Outbox, forge: Any = None, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.state = state
        self.mirror = mirror
        self.target = target
        self.outbox = outbox
        self.forge = forge
        self.clock = clock
        self._conflict_errors: list[str] = []
        check_message_template(settings.push_message)
        self.identity = Identity(settings.push_author_name, settings.push_author_email)
        self.committer = Identity(settings.push_committer_name or settings.push_author_name,
                                  settings.push_committer_email or settings.push_author_email)
        #: Told the result of every push ("pushed", "rejected", "failed"), for the gitsync_pushes metric.
        self.on_push: Callable[[str], None] = lambda result: None
        #: Runs right before every push; raises to stop it (high availability: a replica without the lease).
        self.guard: Callable[[], None] = lambda: None

    def _push(self, sha: str, branch: str, *, force: bool = False) -> None:
        self.guard()
        try:
            self.mirror.push(sha, branch, force=force)
        except PushRejected:
            self.on_push("rejected")
            raise
        except GitError:
            self.on_push("failed")
            raise
        self.on_push("pushed")

    # -- entry point --------------------------------------------------------------------------------
    def flush(self) -> bool:
        """Push what is pending; returns True when git changed (the caller then pulls)."""
        if self.settings.push_mode == "pull-request":
            self._follow_pull_request()
        pending = self.outbox.entries("queued")
        if not pending:
            if self.state.get("push_failures", 0):
                self.state.set(push_failures=0, push_next_attempt=0, push_last_error="")
            return False
        due = float(self.state.get("push_next_attempt", 0))
        if self.clock() < due:  # still failing: say so every cycle until the retry succeeds
            raise GitError(f"push-back waits for its retry in {due - self.clock():.0f} s; "
                           f"{len(pending)} change(s) kept in the outbox. Last error: "
                           f"{self.state.get('push_last_error', '')}")
        self._conflict_errors = []
        try:
            changed = {"direct": self._direct, "pull-request": self._pull_request, "off": self._revert_only}[
                self.settings.push_mode](pending)
            if self._conflict_errors:  # the rest settled; these stay in the outbox and back off like any push
                raise GitError(f"could not push the conflict branch of {'; '.join(self._conflict_errors)}")
        except (GitError, ForgeError) as exc:
            raise GitError(self._back_off(exc)) from exc
        self.state.set(push_failures=0, push_next_attempt=0, push_last_error="")
        return changed

    def retry_due(self) -> float | None:
        """When the next push retry is due (a `clock()` time), or None when no retry is waiting."""
        if int(self.state.get("push_failures", 0)) == 0:
            return None
        return float(self.state.get("push_next_attempt", 0))

    def _back_off(self, exc: Exception) -> str:
        failures = int(self.state.get("push_failures", 0)) + 1
        delay = min(self.settings.push_max_backoff, 2.0 ** min(failures, 16))
        self.state.set(push_failures=failures, push_next_attempt=self.clock() + delay, push_last_error=str(exc))
        return (f"push-back failed ({failures} in a row), {len(self.outbox.entries())} change(s) kept in the "
                f"outbox, next try in {delay:.0f} s: {exc}")

    # -- modes ---------------------------------------------------------------------------------------
    def _direct(self, entries: list[Entry]) -> bool:
        branch = self.settings.repo_branch
        for _ in range(MAX_REBASES):
            head = self.mirror.fetch()
            if self._recognise_landed_push(head):
                entries = self.outbox.entries("queued")
                if not entries:
                    return True
            steps = self._carry_all(entries, head)
            files = self._files(steps)
            if files:
                shown = _in_commit(steps, files)  # the words name only what the commit holds, not what was blocked
                sha = self.mirror.build_commit(head, files, self._message(shown), self.identity, self.committer)
                self._note_push(sha, steps)
                faults.reached("flush.committed")
                try:
                    self._push(sha, branch)
                except PushRejected:
                    # the remote refused it, so it did not land: nothing for _recognise_landed_push to look for (on a
                    # shallow mirror that would deepen the history to prove a commit is absent)
                    self.state.set(push_in_flight=None)
                    log.info("branch %s moved on while pushing; rebasing the local change(s)", branch)
                    continue
                faults.reached("flush.pushed")
                log.info("pushed %s to %s: %s", sha[:12], branch, self._summary(shown))
            failed = self._conflict_branches([s for s in steps if s.carried.conflicts], head)
            self._settle([s for s in steps if s not in failed])
            self.state.set(push_in_flight=None)
            return bool(files)
        raise GitError(f"gave up after {MAX_REBASES} attempts: branch {branch!r} keeps moving; will retry")

    def _note_push(self, sha: str, steps: list[Step]) -> None:
        """Persist what a push carries before it starts: if gitsync dies while the remote runs receive-pack, the
        push may still land, and the next start must recognise that commit as its own (see below)."""
        self.state.set(push_in_flight={"commit": sha, "entries": [
            [s.entry.target, s.entry.local_blob, s.repo_path, _blob(s.carried.text)] for s in steps if s.ok]})

    def _recognise_landed_push(self, head: str) -> bool:
        """A push gitsync started before a crash that landed anyway is settled as if gitsync had seen it land:
        its entries leave the outbox, and an entry saved again since is rebased onto what was pushed, so the
        later save simply wins instead of conflicting with gitsync's own commit. Returns True if one landed."""
        flight = self.state.get("push_in_flight")
        if not flight:
            return False
        if not self.mirror.is_ancestor(flight["commit"], head):  # a shallow mirror deepens to tell
            return False  # not (yet) in the branch: a receive-pack may still be running; decided on the next try
        current = {e.target: e for e in self.outbox.entries()}
        settled: list[tuple[Entry, str | None, str | None]] = []
        for target, local_blob, repo_path, git_blob in flight["entries"]:
            entry = current.get(target)
            if entry is None:
                continue
            if entry.local_blob == local_blob:
                settled.append((entry, repo_path, git_blob))
            else:
                self.outbox.rebase(target, git_blob, repo_path=repo_path)
        self._acknowledge(settled)
        self.outbox.remove(e for e, _, _ in settled)
        self.state.set(push_in_flight=None)
        log.warning("push %s landed although gitsync stopped before recording it; %d change(s) recorded as "
                    "pushed", flight["commit"][:12], len(flight["entries"]))
        return True

    def drop(self, entries: list[Entry]) -> None:
        """An operator gives up on these changes (`gitsync outbox drop`): each is kept on a conflict branch,
        so nothing is lost, and git's version returns to the directory with the next pull."""
        self._revert_only(entries)

    def _revert_only(self, entries: list[Entry]) -> bool:
        """Strict GitOps: keep a copy of each local change on a conflict branch, then let git win."""
        head = self.mirror.fetch()
        steps = self._carry_all(entries, head)
        failed = self._conflict_branches([s for s in steps if s.carried.changed or s.carried.conflicts], head)
        self._settle([s for s in steps if s not in failed], keep_git=True)
        return False

    def _pull_request(self, entries: list[Entry]) -> bool:
        assert self.forge is not None
        head = self.mirror.fetch()
        open_pr = self.outbox.pull_request()
        in_pr = self.outbox.entries("in_pr") if open_pr else []
        steps = self._carry_all([*in_pr, *entries], head)
        clashing = [s for s in steps if s.carried.conflicts]  # whole entry to a conflict branch, not the PR
        failed = self._conflict_branches(clashing, head)
        self._settle([s for s in clashing if s not in failed], keep_git=True)
        steps = [s for s in steps if not s.carried.conflicts]
        files = self._files(steps)
        ready = [s for s in steps if s.ok]
        if files:
            if open_pr is None:
                open_pr = OpenPullRequest(f"gitsync/changes/{_stamp(self.clock())}", None, "")
                self.outbox.plan_pull_request(open_pr.branch)  # before the push: a restart reuses the name
            shown = _in_commit(steps, files)
            sha = self.mirror.build_commit(head, files, self._message(shown), self.identity, self.committer)
            self._push(sha, open_pr.branch, force=True)
            faults.reached("pr.pushed")
            title = self._summary(shown)
            body = self._details(shown) + "\n\nOpened by gitsync; merging it makes the change permanent, " \
                "closing it reverts the jobs service to git's version."
            if open_pr.number is not None:
                pr = self.forge.update_pr(open_pr.number, title, body)
            else:  # idempotent: "already exists" (a crash before we recorded it) adopts the open one
                pr = self.forge.open_pr(open_pr.branch, self.settings.repo_branch, title, body)
            faults.reached("pr.opened")
            self.outbox.record_pull_request(pr.number, pr.url, [s.entry for s in ready if s.carried.changed])
            faults.reached("pr.recorded")
            log.info("pull request %s updated with %s", pr.url, title)
            if pr.state != "open":  # merged or closed while we pushed: what it holds is decided by content
                self._pull_request_ended(pr.state, pr.url)
                return False
        self._settle([s for s in ready if not s.carried.changed])  # nothing left to propose: git has it
        return False

    def _follow_pull_request(self) -> None:
        """Merged: the pull takes over. Closed unmerged: the local change is dropped, git's version returns."""
        open_pr = self.outbox.pull_request()
        if open_pr is None or self.forge is None:
            return
        if open_pr.number is None:  # a crash came between the push to its branch and the forge's answer
            pushed = self.mirror.fetch_branch(open_pr.branch, PR_REF)
            if pushed is not None and self.mirror.is_ancestor(pushed, self.mirror.fetch()):
                self._pull_request_ended("merged", open_pr.branch, unrecorded=True)
            return
        try:
            pr = self.forge.get_pr(open_pr.number)
        except ForgeError as exc:
            log.warning("cannot read pull request %s: %s", open_pr.url, exc)
            return
        if pr.state != "open":
            self._pull_request_ended(pr.state, pr.url)

    def _pull_request_ended(self, state: str, url: str, *, unrecorded: bool = False) -> None:
        """Settle the outbox after the pull request was merged or closed.

        Merged: each entry is carried onto the merged head; one with nothing left to propose is settled
        against the blob there, and one that still differs (saved again after the last update, or proposed
        after the merge) goes back to pending with the merged blob as its base, so it is proposed again
        rather than dropped or taken for a conflict with gitsync's own merged proposal. Closed unmerged:
        what it proposed is dropped and git's version returns; later saves go back to pending."""
        ours = [e for e in self.outbox.entries()  # unrecorded: every entry may be on the branch
                if unrecorded or e.status == "in_pr" or e.pr_number is not None]
        if state == "merged":
            head = self.mirror.fetch()
            steps = self._carry_all(ours, head)
            done = [s for s in steps if s.ok and not s.carried.changed and not s.carried.conflicts]
            self._acknowledge([(s.entry, s.repo_path, _blob(s.head)) for s in done])
            self.outbox.remove(s.entry for s in done)
            for s in steps:
                if s not in done:
                    self.outbox.rebase(s.entry.target, _blob(s.head), repo_path=s.repo_path)
            faults.reached("pr.settled")
            self.outbox.mark([s.entry.target for s in steps if s not in done], "queued")
        else:
            proposed = [e for e in ours if e.status == "in_pr"]
            self._acknowledge([(e, e.repo_path, e.base_blob) for e in proposed])
            self.outbox.remove(proposed)
            self.outbox.mark([e.target for e in ours if e.status != "in_pr"], "queued")
        self.outbox.end_pull_request()
        what = "merged: the pull applies it" if state == "merged" else "closed unmerged: reverting to git's version"
        log.info("pull request %s was %s", url, what)

    # -- building blocks -----------------------------------------------------------------------------
    def _carry_all(self, entries: list[Entry], head: str) -> list[Step]:
        listing, delta = self._relevant_listing(entries, head)
        by_target = {defset.target_name(p): p for p in listing if defset.is_definition_path(p)}
        bases = {b for b, size in self.mirror.blob_sizes_present(
            sorted({e.base_blob for e in entries if e.base_blob})).items() if size >= 0}
        steps = []
        for entry in entries:
            repo_path = entry.repo_path or by_target.get(entry.target) or self._new_path(entry.target)
            item = listing.get(repo_path)
            head_text = self.mirror.read_blob(item.blob) if item else None
            base = self.mirror.read_blob(entry.base_blob) if entry.base_blob in bases else None
            if entry.base_blob and base is None:  # pruned before maintenance could keep it: nothing lost
                log.warning("the git version %s of %s that the local change was made against is no longer in the "
                            "mirror; every job git also has counts as changed on both sides, so the local "
                            "version goes to a conflict branch", entry.base_blob[:12], entry.target)
            steps.append(Step(entry, repo_path, base, head_text, carry(entry.content, base, head_text, repo_path)))
        return self._check_against_head(steps, listing, head, delta)

    def _folders(self) -> list[str]:
        synced, new_dir = self.settings.repo_path.strip("/"), self.settings.push_new_file_dir.strip("/")
        if synced and new_dir and new_dir != synced and not new_dir.startswith(synced + "/"):
            return [synced, new_dir]  # new files go outside the synced folder
        return [synced]

    def _since_applied(self, head: str) -> dict[str, TreeEntry | None] | None:
        """Definition files that differ between the applied commit (whose names the state indexes) and `head`,
        or None when that cannot be told (nothing applied, or the applied commit is gone)."""
        applied = self.state.get("applied_commit")
        if not applied or not self.mirror.has_commit(applied):
            return None
        delta: dict[str, TreeEntry | None] = {}
        for folder in self._folders():
            for change in self.mirror.diff(applied, head, folder):
                if defset.is_definition_path(change.path):
                    delta[change.path] = TreeEntry(change.mode, change.blob) if change.blob else None
        return delta

    def _relevant_listing(self, entries: list[Entry], head: str) \
            -> tuple[dict[str, TreeEntry], dict[str, TreeEntry | None] | None]:
        """The head's entries for the files these changes land on: through the state's index and the diff since
        the applied commit, not a listing of the whole tree (a listing only when the index cannot say)."""
        delta = self._since_applied(head)
        if delta is None:
            listing: dict[str, TreeEntry] = {}
            for folder in self._folders():
                listing.update(self.mirror.list_tree(head, folder))
            return listing, None
        targets = {e.target for e in entries}
        paths = {e.repo_path for e in entries if e.repo_path}
        paths |= {p for found in self.state.paths_landing(targets).values() for p in found}
        paths |= {p for p in delta if defset.target_name(p) in targets}
        return self.mirror.entries(head, paths), delta

    def _check_against_head(self, steps: list[Step], listing: dict[str, TreeEntry], head: str,
                            delta: dict[str, TreeEntry | None] | None) -> list[Step]:
        """Block changes that would break the branch as a whole (a job name another file already defines):
        every agent's next pull would refuse that commit. Only the files sharing a job or file name with
        the changes are looked at."""
        carried = {s.repo_path for s in steps if s.ok and s.carried.touches(s.head)}
        texts = {s.repo_path: tuple(jobs_of(s.carried.text)) for s in steps
                 if s.repo_path in carried and s.carried.text is not None and not is_companion_target(s.entry.target)}
        if delta is not None:  # the head's files that share a name with the changes, through the index
            names = {n for found in texts.values() for n in found}
            targets = {defset.target_name(p) for p in carried}
            near = {p for found in self.state.paths_named(names).values() for p in found}
            near |= {p for found in self.state.paths_landing(targets).values() for p in found}
            listing = self.mirror.entries(head, (near | set(delta)) - carried)
        cached = self.state.tree_rows(p for p in listing if defset.is_definition_path(p))
        files: dict[str, defset.Checked] = {}
        for path, item in listing.items():
            if defset.is_definition_path(path) and path not in carried:
                record = cached.get(path)
                names_here = record.names if record and record.blob == item.blob else \
                    self._names_of(path, item.blob)
                files[path] = defset.Checked(path, names_here, ())
        for path, jobs in texts.items():
            files[path] = defset.Checked(path, jobs, ())
        problems = defset.check_set(files.values(), changed=carried)
        checked = []
        for step in steps:
            errors = tuple(p for p in problems.get(step.repo_path, []) if p.severity == "error") \
                if step.repo_path in carried else ()
            checked.append(replace(step, carried=replace(step.carried, problems=errors)) if errors else step)
        return checked

    def _names_of(self, path: str, blob: str) -> tuple[str, ...]:
        """The job names a head file the state does not index defines."""
        return check_kit(self.mirror.read_blob(blob), path).names

    def _new_path(self, target: str) -> str:
        folder = (self.settings.push_new_file_dir or self.settings.repo_path).strip("/")
        return f"{folder}/{target}" if folder else target

    def _files(self, steps: list[Step]) -> dict[str, bytes | None]:
        files: dict[str, bytes | None] = {}
        for step in steps:
            if step.carried.problems:
                first = step.carried.problems[0]
                self.outbox.mark([step.entry.target], "blocked",
                                 error=f"not pushed, the saved definition is invalid: {first.message} — {first.fix}")
                log.error("local change to %s not pushed: %s", step.entry.target, first.format())
            elif step.carried.touches(step.head):
                files[step.repo_path] = step.carried.text
        return files

    def _conflict_branches(self, steps: list[Step], head: str) -> list[Step]:
        """Push each step's local version to its conflict branch; returns the steps whose push failed (they stay
        in the outbox for the next try, and never stop the others from settling)."""
        failed: list[Step] = []
        for step in steps:
            jobs = step.carried.conflicts or step.carried.changed
            if not jobs:
                continue
            text = step.local_text
            branch = conflict_branch(jobs[0], text)
            message = (f"Local version of {', '.join(jobs)} ({step.entry.origin}), kept by gitsync\n\n"
                       f"Git changed {'these definitions' if len(jobs) > 1 else 'this definition'} too, so git's "
                       f"version stays in the jobs service. Merge this branch to use the local one instead.\n\n"
                       f"Gitsync-Origin: {self._origin([step])}")
            try:
                if self.mirror.fetch_branch(branch, CONFLICT_REF) is None:  # a retry finds it already pushed
                    sha = self.mirror.build_commit(head, {step.repo_path: text}, message, self.identity,
                                                   self.committer)
                    self._push(sha, branch)
                    faults.reached("flush.conflict_pushed")
            except GitError as exc:
                log.error("could not push the local version of %s to %s (kept in the outbox, retried later): %s",
                          ", ".join(jobs), branch, exc)
                failed.append(step)
                continue
            keep = self.settings.state_conflicts_limit - 1
            conflicts = [c for c in self.state.get("conflicts", []) if c["branch"] != branch][-keep:] if keep else []
            conflicts.append({"branch": branch, "jobs": list(jobs), "at": self.clock()})
            self.state.set(conflicts=conflicts)
            log.warning("conflict on %s: git changed it too; git's version stays, the local one is on branch %s",
                        ", ".join(jobs), branch)
        self._conflict_errors += [f"{', '.join(s.carried.conflicts or s.carried.changed)}" for s in failed]
        return failed

    def _settle(self, steps: list[Step], keep_git: bool = False) -> None:
        """Done with these entries: own what was saved and let the next pull put git's text in its place.

        `keep_git`: git's head version wins (conflicts, mode off), not the carried text."""
        done = [s for s in steps if s.ok or keep_git]
        self._acknowledge([(s.entry, s.repo_path, _blob(s.head if keep_git else s.carried.text)) for s in done])
        faults.reached("flush.acknowledged")
        self.outbox.remove(s.entry for s in done)

    def _acknowledge(self, settled: list[tuple[Entry, str | None, str | None]]) -> None:
        owned: dict[str, Owned | None] = {}
        for entry, repo_path, git_blob in settled:
            if entry.local_blob is None or repo_path is None:
                owned[entry.target] = None
            else:
                names = () if is_companion_target(entry.target) else tuple(jobs_of(entry.content))
                owned[entry.target] = Owned(repo_path, entry.local_blob, names, "", git_blob or "")
        self.state.record_apply(tree=None, owned=owned, meta={})

    # -- words ---------------------------------------------------------------------------------------
    def _summary(self, steps: list[Step]) -> str:
        jobs = sorted({j for s in steps for j in s.carried.changed})
        origins = sorted({s.entry.origin for s in steps if s.carried.changed})
        shown = ", ".join(jobs[:3]) + (f" and {len(jobs) - 3} more" if len(jobs) > 3 else "")
        return f"Update {shown} from {' and '.join(origins)}"

    def _details(self, steps: list[Step]) -> str:
        lines = []
        for s in steps:
            for job in s.carried.changed:
                gone = s.carried.text is None if is_companion_target(s.entry.target) \
                    else job not in jobs_of(s.carried.text)
                verb = "removed" if gone else "saved"
                lines.append(f"- {job}: {verb} in {s.repo_path} ({s.entry.origin})")
        return "\n".join(lines)

    def _place(self) -> str:
        """Where local changes come from, for `{directory}` and the `Gitsync-Origin` trailer."""
        return str(self.target.directory) if self.target is not None else ""

    def _origin(self, steps: list[Step]) -> str:
        return f"{socket.gethostname()}:{self._place()}"

    def _message(self, steps: list[Step]) -> str:
        jobs = sorted({j for s in steps for j in s.carried.changed})
        return self.settings.push_message.replace("\\n", "\n").format(
            summary=self._summary(steps), details=self._details(steps), origin=self._origin(steps),
            jobs=", ".join(jobs), host=socket.gethostname(), directory=self._place())


def _in_commit(steps: list[Step], files: dict[str, bytes | None]) -> list[Step]:
    """The steps whose change is in the commit being built (a blocked one is not)."""
    return [s for s in steps if s.repo_path in files and not s.carried.problems]


MESSAGE_PLACEHOLDERS = ("summary", "details", "origin", "jobs", "host", "directory")


def check_message_template(template: str) -> None:
    """Refuse a `push.message` that would fail on the first save (an unknown `{placeholder}`, a stray brace)."""
    import string

    allowed = ", ".join("{" + p + "}" for p in MESSAGE_PLACEHOLDERS)
    try:
        fields = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise ConfigError(f"push.message {template!r} is not a valid template ({exc}); write literal braces as "
                          f"{{{{ and }}}}. Placeholders: {allowed}") from None
    unknown = [f for f in fields if f not in MESSAGE_PLACEHOLDERS]
    if unknown:
        raise ConfigError(f"push.message uses unknown placeholder {{{unknown[0]}}}; use only {allowed}")


def _blob(data: bytes | None) -> str | None:
    return blob_id(data) if data is not None else None


def conflict_branch(job: str, text: bytes | None) -> str:
    """`gitsync/conflict/<job>-<content id>`: a valid ref whatever the job is called (`[job."night build"]`),
    and the same for the same local version, so a retry pushes to the branch it already made."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", job).strip("-")[:40] or "job"
    return f"gitsync/conflict/{slug}-{(_blob(text) or blob_id(b''))[:12]}"


def _stamp(now: float) -> str:
    """A branch-name suffix: readable time plus a little randomness, so two in one second never collide."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now)) + "-" + secrets.token_hex(2)
