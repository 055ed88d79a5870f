"""``${job}`` companion folders: the folders next to a definition that Farm resolves through ``${job}``.

Farm's ``DirectoryJobStore._resolve_extension_paths`` fills ``{job}`` in ``[settings.app.exts.folders]
"++"`` with the folder holding the .kit file. gitsync flattens the repository (``jobs/render/render.kit``
becomes ``render.kit``), so the folder holding the file is the job directory itself, and a folder kept
beside the definition in git (``jobs/render/exts``) must land beside the flattened file
(``<target>/exts``). This module holds the pure rules: which folder an entry names (its first path
component after ``${job}/``), where a companion folder sits in git (its *root*) and where its files land.

Companion files are managed like definitions (manifest rows, the apply journal, push-back), under a
target name that is a relative path (``exts/omni.render/config/extension.toml``). They are plain bytes:
gitsync never parses them; ``.kit`` files inside a companion folder stay definitions and are not copied.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from typing import Any

from gitsync import farm, kitname

#: (folder, line of the ``"++"`` key) for each folder a file names through ``${job}/<folder>/...``.
Folders = tuple[tuple[str, int], ...]


def referenced(doc: dict[str, Any]) -> tuple[list[str], list[tuple[str, str]]]:
    """The companion folders a parsed file names (first path component after ``${job}/``, in order, once
    each), and the entries gitsync cannot sync as (entry, reason): ``${job}`` itself (the job directory,
    which holds every definition) or a path leaving the file's folder."""
    folders: list[str] = []
    unsupported: list[tuple[str, str]] = []
    for entry, relative in farm.job_folders(doc):
        first = relative.split("/", 1)[0]
        if relative in ("", "."):
            unsupported.append((entry, "it names the definition's own folder, which gitsync flattens into the "
                                       "job directory"))
        elif first == ".." or "/../" in f"/{relative}/":
            unsupported.append((entry, "it leaves the definition's folder"))
        elif kitname.name_problem(first, "folder name") is not None:
            unsupported.append((entry, str(kitname.name_problem(first, "folder name"))))
        elif first not in folders:
            folders.append(first)
    return folders, unsupported


def root(kit_path: str, folder: str) -> str:
    """The companion folder's path in git: ``folder`` beside the definition file."""
    parent = posixpath.dirname(kit_path)
    return f"{parent}/{folder}" if parent else folder


def target_of(folder: str, root_path: str, repo_path: str) -> str:
    """Where a file under a companion folder lands in the job directory: ``<folder>/<path inside it>``."""
    return folder + repo_path[len(root_path):]


def is_companion_target(name: str) -> bool:
    """A target name inside a companion folder (a relative path), not a flat definition file."""
    return "/" in name


def folder_of(target: str) -> str:
    return target.split("/", 1)[0]


def usable(relative: str) -> bool:
    """A file of a companion folder that gitsync syncs: every component a plain, visible name (no hidden
    files or folders such as ``.git``, no control characters), and not a ``.kit`` file (those are
    definitions, flattened like any other)."""
    parts = relative.split("/")
    if kitname.farm_loads(parts[-1]) or parts[-1].lower().endswith(kitname.KIT_SUFFIX):
        return False
    return all(kitname.name_problem(part) is None for part in parts)


def is_safe_target(name: str) -> bool:
    """A relative path under the job directory that a watcher event or a manifest row may name."""
    return is_companion_target(name) and usable(name.split("/", 1)[1]) and \
        kitname.name_problem(folder_of(name)) is None


def ancestors(repo_path: str) -> list[str]:
    """Every folder above a repo path, nearest first: the roots a changed file may belong to."""
    found = []
    while "/" in repo_path:
        repo_path = repo_path.rsplit("/", 1)[0]
        found.append(repo_path)
    return found


def roots_by_folder(referrers: Iterable[tuple[str, Folders]]) -> dict[str, dict[str, list[str]]]:
    """Target folder -> companion root in git -> the definition files naming it."""
    found: dict[str, dict[str, list[str]]] = {}
    for kit_path, folders in referrers:
        for folder, _line in folders:
            found.setdefault(folder, {}).setdefault(root(kit_path, folder), []).append(kit_path)
    return found
