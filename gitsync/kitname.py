"""The one rule for "is this a definition file", and for which job and file names are safe.

Every place that decides whether a name is a definition file asks this module: the repository
scan, the target directory scan, the watcher, the validator and the jobs-service stand-in. Two
rules exist on purpose and are kept side by side so their difference stays visible:

* ``farm_loads(name)`` — what Farm's ``DirectoryJobStore._load_job_configurations`` loads: a
  regular file whose ``os.path.splitext`` extension is exactly ``.kit``. Hidden files such as
  ``.x.kit`` are loaded; a file named just ``.kit`` is not (its extension is empty).
* ``is_definition_name(name)`` — what gitsync manages: a name Farm loads that is also safe
  (``name_problem`` is None). gitsync never writes, captures or pushes anything else.

Names are checked against the file system's limit counting gitsync's temp prefix and suffix,
because every write goes through ``<TEMP_PREFIX><name><TEMP_SUFFIX>`` first.
"""

from __future__ import annotations

import os
import posixpath
import re

KIT_SUFFIX = ".kit"
#: gitsync's temp files: hidden, and not ending in `.kit`, so no job store ever loads one.
TEMP_PREFIX = ".gitsync-tmp-"
TEMP_SUFFIX = ".tmp"
#: NAME_MAX on Linux, macOS and Windows file systems, in bytes.
NAME_MAX = 255
MAX_FILE_NAME_BYTES = NAME_MAX - len(TEMP_PREFIX.encode()) - len(TEMP_SUFFIX.encode())


def farm_loads(name: str) -> bool:
    """Farm's own test on a directory entry's name (the entry must also be a regular file)."""
    return posixpath.splitext(name)[1] == KIT_SUFFIX


_ESCAPED_BYTE = re.compile(r"\\x[89a-f][0-9a-f]")


def name_problem(name: str, what: str = "file name", *, suffix: str = "") -> str | None:
    """Why ``name`` cannot be a file in a job directory (gitsync's rule, stricter than Farm), or None.

    Farm itself would write ``<name>.kit`` wherever a job name points (``../x`` escapes its folder);
    gitsync refuses anything that is not one plain, visible file name it can also write atomically.
    ``suffix`` is added before the length check (a job name becomes ``<name>.kit``).
    """
    if name in ("", ".", ".."):
        return f"{what} {name!r} is not a file name"
    if _ESCAPED_BYTE.search(name):  # how gitrepo.visible_path shows a name that is not UTF-8
        return f"{what} {name!r} is not valid UTF-8"
    if "/" in name or "\\" in name:
        return f"{what} {name!r} contains a path separator"
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return f"{what} {name!r} contains a control character"
    if name.startswith("."):
        return f"{what} {name!r} starts with '.' (a hidden file)"
    try:
        size = len((name + suffix).encode("utf-8"))
    except UnicodeEncodeError:
        return f"{what} {name!r} is not valid UTF-8"
    if size > MAX_FILE_NAME_BYTES:
        return (f"{what} {name[:40]!r}... makes a {size}-byte file name; at most {MAX_FILE_NAME_BYTES} bytes fit "
                "with gitsync's temp prefix and suffix")
    return None


def job_name_problem(name: str) -> str | None:
    """Why a job name cannot become ``<name>.kit`` safely, or None (gitsync's rule, stricter than Farm)."""
    return name_problem(name, "job name", suffix=KIT_SUFFIX)


def is_definition_name(name: str) -> bool:
    """A file in a job directory that gitsync manages: Farm loads it and the name is safe."""
    return farm_loads(name) and name_problem(name) is None


def is_definition_path(repo_path: str) -> bool:
    """A file in the repository that is a definition: one Farm would load, neither hidden itself nor in a
    hidden folder (``.github/``, ``.drafts/`` hold tooling and work in progress). Its name may still be
    unsafe (too long, a control character): it is a definition, and ``name_problem`` makes it an error,
    so a sync refuses it with one line instead of ignoring it or failing to write it."""
    parts = repo_path.split("/")
    if any(part.startswith(".") and part not in (".", "..") for part in parts):
        return False
    return farm_loads(parts[-1])


def is_definition_file(path: str) -> bool:
    """``is_definition_name`` for a path on disk, by its base name (for watchers and scans)."""
    return is_definition_name(os.path.basename(path))
