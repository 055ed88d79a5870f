"""Rules that span a whole definition set: the flat target layout and unique job names.

Farm scans a job directory non-recursively, so gitsync flattens the repo: `jobs/render/a.kit`
is written as `a.kit`. Two files with one base name, or two definitions with one job name
(Farm would keep one of them at random), are errors naming both files.
"""

from __future__ import annotations

import posixpath
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from gitsync import companion, kitname
from gitsync.kit import KitReport
from gitsync.kitname import KIT_SUFFIX as KIT_SUFFIX  # re-exported: one rule, in kitname
from gitsync.kitname import is_definition_path as is_definition_path
from gitsync.problems import Problem


@dataclass(frozen=True, slots=True)
class Checked:
    """One definition file of the set, after its own checks."""

    repo_path: str
    names: tuple[str, ...]
    problems: tuple[Problem, ...]
    folders: companion.Folders = ()  # ${job} companion folders, with the line naming them


class TreeLike(Protocol):
    @property
    def names(self) -> tuple[str, ...]: ...

    @property
    def problems(self) -> tuple[Problem, ...]: ...


def target_name(repo_path: str) -> str:
    """Where a repo file lands in the flat job directory."""
    return posixpath.basename(repo_path)


def suffix_problem(repo_path: str) -> Problem | None:
    """A near-miss like `job.KIT`, which a reviewer would expect to load but Farm never will."""
    base = posixpath.basename(repo_path)
    if base.lower().endswith(KIT_SUFFIX) and not base.endswith(KIT_SUFFIX):
        return Problem(repo_path, 1, 1, "warning", "Farm loads only files ending exactly in '.kit'",
                       f"rename it to {base[: -len(KIT_SUFFIX)]}.kit")
    return None


_SYMLINK = "definition file is a symbolic link"


def unsafe_name_problem(repo_path: str) -> Problem | None:
    """A file Farm would load but gitsync refuses to sync, because its name is not safe to write
    (hidden, a control character, too long for gitsync's temp name). gitsync's rule, stricter than Farm."""
    base = posixpath.basename(repo_path)
    problem = kitname.name_problem(base)
    if problem is None or not kitname.farm_loads(base):
        return None
    return Problem(repo_path, 1, 1, "error", f"{problem}; gitsync does not sync it (stricter than Farm)",
                   "rename the file to a plain, visible name")


def name_problems(repo_path: str) -> tuple[Problem, ...]:
    """``unsafe_name_problem`` as a tuple, to add to a file's own findings (they are cached by blob, without
    the name, so the name is checked where the path is known)."""
    problem = unsafe_name_problem(repo_path)
    return (problem,) if problem else ()


def symlink_problem(repo_path: str) -> Problem:
    return Problem(repo_path, 1, 1, "error", _SYMLINK,
                   "commit the file itself; links could point outside the definitions path")


def is_symlink_record(record: Checked | TreeLike) -> bool:
    """A symbolic link's row: nothing to parse again when the rules change."""
    return not record.names and any(p.message == _SYMLINK for p in record.problems)


def from_report(repo_path: str, report: KitReport) -> Checked:
    return Checked(repo_path, report.names, tuple(p.at(repo_path) for p in report.problems), report.folders)


def check_set(files: Iterable[Checked], changed: set[str] | None = None,
              present_roots: Container[str] | None = None) -> dict[str, list[Problem]]:
    """All problems per repo path, adding the cross-file ones.

    `changed` names the files that are new in this commit: a clash between a changed and an
    unchanged file is blamed on the changed one, so `on_invalid = "skip"` keeps the old file.
    `present_roots`: the companion folders (their paths in git) that exist; only those can clash (NVIDIA's
    own samples name ``${job}/exts`` folders they do not ship, so twenty folders of such files land nothing
    and clash with nothing). None: every folder named exists.
    """
    files = list(files)
    result: dict[str, list[Problem]] = {f.repo_path: list(f.problems) for f in files}
    by_target: dict[str, list[str]] = {}
    by_name: dict[str, list[str]] = {}
    for f in files:
        by_target.setdefault(target_name(f.repo_path), []).append(f.repo_path)
        for name in f.names:
            by_name.setdefault(name, []).append(f.repo_path)
    for target, paths in by_target.items():
        for path, other in _clashes(paths, changed):
            result[path].append(Problem(path, 1, 1, "error",
                                        f"{path} and {other} both land as {target} in the flat job directory",
                                        "give one of them another file name"))
    for name, paths in by_name.items():
        for path, other in _clashes(paths, changed):
            where = "also in this file" if other == path else f"also defined in {other}"
            result[path].append(Problem(path, 1, 1, "error", f"job name {name!r} is {where}; Farm would keep only one",
                                        "rename or remove one of the definitions"))
    _companion_clashes(files, by_target, changed, result, present_roots)
    return result


def _companion_clashes(files: list[Checked], by_target: Mapping[str, list[str]], changed: set[str] | None,
                       result: dict[str, list[Problem]], present_roots: Container[str] | None) -> None:
    """Companion folders land beside the flattened files: two folders of one name from different repo folders,
    or a folder named like a definition file, would land on one path in the job directory."""
    lines = {(f.repo_path, folder): line for f in files for folder, line in f.folders}
    for folder, named in companion.roots_by_folder((f.repo_path, f.folders) for f in files).items():
        roots = {r: kits for r, kits in named.items() if present_roots is None or r in present_roots}
        if not roots:
            continue
        referrers = sorted(p for paths in roots.values() for p in paths)
        if len(roots) > 1:
            for path, other in _clashes(referrers, changed):
                other = next(o for o in referrers if companion.root(o, folder) != companion.root(path, folder))
                result[path].append(Problem(
                    path, lines[(path, folder)], 1, "error",
                    f"companion folder {companion.root(path, folder)}/ (named by {path}) and "
                    f"{companion.root(other, folder)}/ (named by {other}) both land as {folder}/ in the job directory",
                    "give one of the folders another name (and its ${job}/ entry)"))
        for definition in by_target.get(folder, ()):
            for path, _ in _clashes(sorted({*referrers, definition}), changed):
                namer = path if path != definition else referrers[0]
                result[path].append(Problem(
                    path, lines.get((path, folder), 1), 1, "error",
                    f"companion folder {companion.root(namer, folder)}/ (named by {namer}) lands as {folder}/ where "
                    f"{definition} lands as {folder} in the job directory", "rename the folder or the file"))


def _clashes(paths: list[str], changed: set[str] | None) -> list[tuple[str, str]]:
    if len(paths) < 2:
        return []
    ordered = sorted(paths)
    blamed = [p for p in ordered if changed is None or p in changed] or ordered
    return [(p, next((o for o in ordered if o != p), p)) for p in dict.fromkeys(blamed)]


def error_paths(problems: Mapping[str, list[Problem]]) -> set[str]:
    return {path for path, found in problems.items() if any(p.severity == "error" for p in found)}
