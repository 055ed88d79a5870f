"""`gitsync rollback COMMIT` and `gitsync rollback --to COMMIT`: undo in git, then sync.

A rollback is a new commit on the branch, so every other agent and every clone sees it, and the
history says who undid what. `rollback COMMIT` reverts one commit with git's own three-way merge
(`merge-tree`, the ort merge `git revert` runs), without a work tree; `--to COMMIT` makes one
commit whose tree is COMMIT's, which reverts everything after it and can never conflict. The
result is validated like any sync before it is pushed: a rollback that Farm would refuse is not
pushed. It is pushed as `push.mode` says (`pull-request`: as a pull request; otherwise straight to
the branch), and then synced. Beside a running agent it takes the agent's turn (session.py).
"""

from __future__ import annotations

import argparse
import secrets
import time
from dataclasses import dataclass

from gitsync.cli import EXIT_CONFLICT, EXIT_OK, EXIT_REFUSED, settings_from
from gitsync.commands.pull import sync_exit_code
from gitsync.commands.session import forge_for, session
from gitsync.config import Settings
from gitsync.errors import ConfigError, GitError
from gitsync.gitrepo import EMPTY_TREE, GitMirror, Identity, PushRejected
from gitsync.sync import Syncer

ATTEMPTS = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("commit", nargs="?", metavar="COMMIT", help="the commit to revert")
    parser.add_argument("--to", metavar="COMMIT", help="revert every commit after COMMIT, in one commit")
    parser.add_argument("--allow-mass-delete", action="store_true",
                        help="allow a rollback that removes more than sync.max_delete_share of the files")


@dataclass(frozen=True)
class Revert:
    """What a rollback would commit on top of `head`: a tree and a message, or the paths that conflict."""

    head: str
    tree: str
    message: str
    conflicts: tuple[str, ...] = ()


@dataclass(frozen=True)
class Outcome:
    code: int
    line: str


def run(args: argparse.Namespace) -> int:
    if bool(args.commit) == bool(args.to):
        raise ConfigError("give the commit to revert (`gitsync rollback COMMIT`) or where to roll back to "
                          "(`gitsync rollback --to COMMIT`), not both")
    settings = settings_from(args)
    with session(settings) as work:
        outcome = rollback(work.syncer, settings, commit=args.commit, to=args.to,
                           allow_mass_delete=args.allow_mass_delete)
    print(outcome.line)
    return outcome.code


def rollback(syncer: Syncer, settings: Settings, *, commit: str | None = None, to: str | None = None,
             allow_mass_delete: bool = False) -> Outcome:
    mirror = syncer.mirror
    author = Identity(settings.push_author_name, settings.push_author_email)
    committer = Identity(settings.push_committer_name or settings.push_author_name,
                         settings.push_committer_email or settings.push_author_email)
    for _ in range(ATTEMPTS):
        head = mirror.fetch()
        revert = make_revert(mirror, head, commit=commit, to=to, helper=committer)
        if revert.conflicts:
            return Outcome(EXIT_CONFLICT, f"rollback: reverting {commit} conflicts with later changes to "
                           f"{', '.join(revert.conflicts)}; nothing was changed. Revert it by hand in a clone, or "
                           "roll back further with --to")
        if revert.tree == mirror.tree_of(head):
            return Outcome(EXIT_OK, f"nothing to roll back: branch {settings.repo_branch} at {head[:12]} already "
                           "has that content")
        sha = mirror.commit_tree(revert.tree, [head], revert.message, author, committer)
        prepared = syncer.prepare(sha, allow_mass_delete=allow_mass_delete)
        errors = [p for p in prepared.problems if p.severity == "error"]
        if prepared.refusal or (errors and settings.sync_on_invalid == "refuse"):
            why = prepared.refusal or f"{errors[0].format()}"
            return Outcome(EXIT_REFUSED, f"rollback refused, nothing was pushed: the result would not be applied: "
                           f"{why}")
        if settings.push_mode == "pull-request":
            return _propose(mirror, settings, sha, revert)
        try:
            mirror.push(sha, settings.repo_branch)
        except PushRejected:
            continue  # someone pushed in between: revert again on the new head
        break
    else:
        raise GitError(f"rollback gave up after {ATTEMPTS} attempts: branch {settings.repo_branch!r} keeps moving")
    result = syncer.sync(allow_mass_delete=allow_mass_delete)
    line = (f"rolled back with {sha[:12]} ({revert.message.splitlines()[0]}), pushed to {settings.repo_branch}; "
            f"sync: {result.result}, {len(result.written)} written, {len(result.removed)} removed")
    if settings.repo_ref:
        line += f"; repo.ref pins the directory at {settings.repo_ref} until it is unset"
    if result.message:
        line += f": {result.message}"
    return Outcome(sync_exit_code(result), line)


def make_revert(mirror: GitMirror, head: str, *, commit: str | None, to: str | None, helper: Identity) -> Revert:
    named = to or commit or ""
    target = mirror.find_in_history(named)  # a shallow mirror is deepened to find an older commit
    if not target:
        raise ConfigError(f"{named!r} is not a commit in branch {mirror.branch!r} (fetched just now); give a commit "
                          "id from `git log` or `gitsync history`")
    if not mirror.is_ancestor(target, head):
        raise ConfigError(f"commit {target[:12]} is not in the history of branch {mirror.branch!r} at {head[:12]}")
    mirror.reach(target, head)  # a shallow mirror: the history the revert's merge and count read
    if to:
        if target == head:
            return Revert(head, mirror.tree_of(head), "")
        count = mirror.count_commits(target, head)
        message = (f"Roll back to {target[:12]}: {mirror.subject(target)}\n\nReverts the {count} commit(s) after "
                   f"{target} up to {head}, in one commit (gitsync rollback --to).")
        return Revert(head, mirror.tree_of(target), message)
    parent = mirror.first_parent(target)
    # A helper commit whose parent is the commit to revert and whose tree is that commit's parent's: merging it
    # into head has exactly `target` as merge base, which is what `git revert` computes (ours = head, theirs =
    # target's parent). The helper is never pushed; maintenance deletes it after the grace period.
    helper_commit = mirror.commit_tree(mirror.tree_of(parent) if parent else EMPTY_TREE, [target],
                                       f"gitsync rollback helper for {target}", helper, helper)
    tree, conflicts = mirror.merge_trees(head, helper_commit)
    message = f'Revert "{mirror.subject(target)}"\n\nThis reverts commit {target} (gitsync rollback).'
    return Revert(head, tree, message, tuple(conflicts))


def _propose(mirror: GitMirror, settings: Settings, sha: str, revert: Revert) -> Outcome:
    forge = forge_for(settings)
    branch = f"gitsync/rollback/{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{secrets.token_hex(2)}"
    mirror.push(sha, branch)
    title, _, body = revert.message.partition("\n\n")
    pr = forge.open_pr(branch, settings.repo_branch, title, body + "\n\nOpened by `gitsync rollback`; merging it "
                       "applies the rollback.")
    return Outcome(EXIT_OK, f"rollback proposed as pull request {pr.url} (branch {branch}); it is applied once "
                   "merged")
