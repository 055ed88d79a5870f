"""What a commit wants in the job directory's ``${job}`` companion folders (see companion.py for the rules).

A pull works a folder out in one of two ways. *Whole*: a definition naming it changed (or the folder lost
files, or nothing is known yet), so the folder is listed from git (only that folder) and every file gitsync
owns under it is planned. *Files only*: files inside it changed in git or in the directory, so only those
are looked up. Either way the cost follows the folder or the change, never the repository.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable, Mapping
from dataclasses import dataclass, field

from gitsync import companion
from gitsync.gitrepo import GitMirror, TreeEntry
from gitsync.model import TreeRecord
from gitsync.plan import Desired
from gitsync.problems import Problem
from gitsync.state import State

#: Git modes copied as files; symbolic links and submodules inside a companion folder are not copied.
FILE_MODES = ("100644", "100755")


@dataclass
class Companions:
    """The companion part of one plan."""

    desired: dict[str, Desired] = field(default_factory=dict)
    hold: dict[str, str] = field(default_factory=dict)
    scope: set[str] = field(default_factory=set)  # targets to plan (desired, owned, changed)
    #: Problems worked out again, by repo path (an empty list clears a path): missing folders on the definitions
    #: naming them, size errors on the companion files.
    problems: dict[str, list[Problem]] = field(default_factory=dict)


def work_out(mirror: GitMirror, state: State, head: str, records: Mapping[str, TreeRecord], invalid: set[str], *,
             whole: Iterable[str], files: Mapping[str, set[str]], max_size: int,
             problems_under: Callable[[Iterable[str]], frozenset[str]], present_roots: Container[str]) -> Companions:
    """`records`: every definition naming one of the folders (at `head`); `whole`: folders to work out whole;
    `files`: folder -> targets inside it to look up; `problems_under`: the repo paths with stored problems inside
    some folders (cleared when under a folder worked out whole and no longer found); `present_roots`: the named
    folders that exist in `head` (the others land nothing; see `missing_folder_problems`)."""
    out = Companions()
    by_folder = companion.roots_by_folder((p, r.folders) for p, r in records.items())
    whole = set(whole)
    listed: dict[str, TreeEntry] = {}
    wanted: dict[str, str] = {}  # target -> repo path
    for folder in sorted(whole | set(files)):
        named = by_folder.get(folder, {})
        roots = {r: kits for r, kits in named.items() if r in present_roots}
        usable = {r: kits for r, kits in roots.items() if any(k not in invalid for k in kits)}
        if folder in whole:
            owned = state.owned_under(folder)
            out.scope |= set(owned)
            old_roots = {companion.root(o.repo_path, folder) for o in owned.values()} | set(roots)
            out.problems.update({p: [] for p in problems_under(old_roots)})
        targets = set(files.get(folder, ()))
        out.scope |= targets
        if len(roots) > 1 or (roots and not usable):
            why = ("named by definitions in different folders" if len(roots) > 1 else
                   f"named only by invalid definitions ({', '.join(sorted(k for ks in roots.values() for k in ks))})")
            for target in out.scope:
                if companion.folder_of(target) == folder and companion.is_companion_target(target):
                    out.hold[target] = f"companion folder {folder}/ is held: {why}; the last good files stay"
            continue
        if not usable:
            continue  # no definition names it any more: what gitsync owns there is removed
        root = next(iter(usable))
        if folder in whole:
            found = mirror.list_tree(head, root)
        else:
            found = mirror.entries(head, (root + t[len(folder):] for t in targets))
        for repo_path, entry in found.items():
            if entry.mode in FILE_MODES and companion.usable(repo_path[len(root) + 1:]):
                target = companion.target_of(folder, root, repo_path)
                listed[target] = entry
                wanted[target] = repo_path
    sizes = mirror.blob_sizes(sorted({e.blob for e in listed.values()})) if listed else {}
    for target, entry in listed.items():
        repo_path = wanted[target]
        out.scope.add(target)
        out.problems.setdefault(repo_path, [])
        if sizes.get(entry.blob, 0) > max_size:
            out.problems[repo_path].append(Problem(
                repo_path, 1, 1, "error", f"file is {sizes[entry.blob]} bytes, over the {max_size}-byte limit "
                "(sync.max_file_size, for companion files as for definitions)",
                "make it smaller, or raise sync.max_file_size"))
            out.hold[target] = f"{repo_path} is over sync.max_file_size; the last good version stays"
            continue
        out.desired[target] = Desired(repo_path, entry.blob, ())
    return out


def missing_folder_problems(records: Mapping[str, TreeRecord],
                            present_roots: Container[str]) -> dict[str, list[Problem]]:
    """Pure: a warning on each definition for each ``${job}`` folder it names that is not in the commit (NVIDIA's
    own samples name folders they do not ship; Farm does not check, the job runs without it)."""
    found: dict[str, list[Problem]] = {}
    for kit, record in records.items():
        for folder, line in record.folders:
            root = companion.root(kit, folder)
            if root not in present_roots:
                found.setdefault(kit, []).append(Problem(
                    kit, line, 1, "warning", f"companion folder '${{job}}/{folder}' ({root}) is not in the "
                    "repository; Farm does not check, and the job runs without it",
                    "add the folder beside the file, or remove the entry"))
    return found


def folders_of(records: Iterable[TreeRecord]) -> set[str]:
    return {folder for rec in records for folder, _ in rec.folders}
