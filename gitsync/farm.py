"""What Omniverse Farm 2.x itself defines about job definitions, in one place.

Both the validator and the Farm-compatible jobs service read these, so the two can never
disagree about a field type, a default or a name rule. Source: ../shared/farm-jobs.md
(read from Farm's own code).
"""

from __future__ import annotations

import re
from typing import Any, Final

#: Field name -> (accepted Python types as parsed from TOML, human name for messages).
FIELD_TYPES: Final[dict[str, tuple[tuple[type, ...], str]]] = {
    "job_type": ((str,), "a string"),
    "command": ((str,), "a string"),
    "name": ((str,), "a string"),
    "args": ((list,), "an array of strings"),
    "allowed_args": ((dict,), "a table of { arg = string or integer, default = any }"),
    "task_function": ((str,), "a string"),
    "env": ((dict,), "a table of strings"),
    "log_to_stdout": ((bool,), "true or false"),
    "headless": ((bool,), "true or false"),
    "active": ((bool,), "true or false"),
    "success_return_codes": ((list,), "an array of integers"),
    "working_directory": ((str,), "a string"),
    "container": ((str,), "a string"),
    "capacity_requirements": ((dict,), "a table"),
    "extension_paths": ((list,), "an array of strings"),
    "job_spec_path": ((str,), "a string"),
    "unresolved_command_path": ((str,), "a string"),
}

REQUIRED_FIELDS: Final = ("job_type", "command")
#: Farm's job types registry (nv/svc/farm/services/jobs/job_types): an executable, a Kit app run with the
#: file merged in as its config, and a Kit service whose ``task_function`` is called.
JOB_TYPES: Final = ("base", "kit", "kit-service")

#: Fields the directory store reads from a file (``DirectoryJobStore._generate_job_definition``);
#: anything else in a ``[job.<key>]`` table is ignored by the loader.
LOADED_FIELDS: Final = ("job_type", "command", "args", "task_function", "headless", "env", "log_to_stdout",
                        "allowed_args", "success_return_codes", "capacity_requirements", "working_directory",
                        "container")

#: Fields the store fills in itself; they mean nothing in git and are never committed.
STORE_ONLY_FIELDS: Final = frozenset({"job_spec_path", "unresolved_command_path", "extension_paths"})

#: The JSON shape of a definition on the jobs service API (`/load`, `/save`), with Farm's defaults.
DEFINITION_DEFAULTS: Final[dict[str, Any]] = {
    "name": None,
    "job_type": None,
    "command": None,
    "args": [],
    "task_function": None,
    "env": {},
    "log_to_stdout": True,
    "extension_paths": [],
    "allowed_args": {},
    "job_spec_path": None,
    "headless": True,
    "active": True,
    "unresolved_command_path": None,
    "success_return_codes": [0],
    "capacity_requirements": {},
    "working_directory": None,
    "container": None,
}

MAX_NAME_LENGTH: Final = 32  # tasks reference definitions by task_type, limited to 32
DEFAULT_API_KEY: Final = "change-me"
DEFAULT_URL_PREFIX: Final = "/queue/management/jobs"
DEFAULT_PORT: Final = 8222

DIRECTORY_STORE_CLASS: Final = "nv.svc.farm.services.jobs.facilities.store.directory.DirectoryJobStore"
REDIS_STORE_CLASS: Final = "nv.svc.farm.services.jobs.facilities.store.redis.RedisJobStore"

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


def name_problem(name: str) -> str | None:
    """Why Farm's `jobs/save` would reject this job name, or None if it is acceptable."""
    if not name:
        return "the job name is empty"
    if "_" in name:
        return f"job name {name!r} contains '_', which Farm rejects; use '-' instead"
    if len(name) > MAX_NAME_LENGTH:
        return f"job name {name!r} is {len(name)} characters; Farm allows at most {MAX_NAME_LENGTH}"
    return None


def with_defaults(name: str, definition: dict[str, Any]) -> dict[str, Any]:
    """A definition as Farm's store hands it out: every known field present, defaults filled in."""
    merged: dict[str, Any] = {k: _copy(v) for k, v in DEFINITION_DEFAULTS.items()}
    for key, value in definition.items():
        if value is not None:
            merged[key] = value
    merged["name"] = name
    return merged


#: Farm's ``JobDefinition`` constructor replaces a falsy value (None, "", [], {}) of these fields
#: with these (``self.container = container or ""``), so a real jobs service never returns None for
#: them, and ``jobs/save`` writes ``task_function = ""`` and ``container = ""`` into .kit files.
#: Source: nv/svc/farm/services/jobs/definitions.py.
JOB_DEFINITION_COERCIONS: Final[dict[str, Any]] = {
    "args": [],
    "task_function": "",
    "env": {},
    "extension_paths": [],
    "allowed_args": {},
    "success_return_codes": [0],
    "capacity_requirements": {},
    "container": "",
}


def as_job_definition(name: str, definition: dict[str, Any]) -> dict[str, Any]:
    """A definition exactly as Farm's ``JobDefinition`` holds it: ``with_defaults``, then Farm's
    ``value or default`` coercions. This is what a real jobs service returns from ``/load``."""
    merged = with_defaults(name, definition)
    for key, default in JOB_DEFINITION_COERCIONS.items():
        if not merged[key]:
            merged[key] = _copy(default)
    return merged


#: The key path Farm walks for ``${job}`` extension folders (``DirectoryJobStore._resolve_extension_paths``).
EXTENSION_FOLDERS_KEY: Final = ("settings", "app", "exts", "folders", "++")


def extension_folder_problems(doc: dict[str, Any]) -> list[tuple[tuple[str, ...], str, bool]]:
    """What is wrong with a parsed file's ``[settings.app.exts.folders] "++"``, as (key path, reason, aborts).

    Farm walks the key path tolerating only a missing key, iterates the value and formats each entry with
    ``str.format(job=<folder>)``, all outside its per-definition error handling: whatever raises there
    aborts the whole directory rescan (``aborts`` is True). ``aborts`` False marks what Farm accepts but
    reads wrongly (a string without braces becomes one folder per character): gitsync's stricter rule.
    """
    node: Any = doc
    walked: tuple[str, ...] = ()
    for chunk in EXTENSION_FOLDERS_KEY:
        if not isinstance(node, dict):
            return [(walked, f"'{'.'.join(walked)}' is {kind(node)}, not a table", True)]
        if chunk not in node:
            return []
        node = node[chunk]
        walked = (*walked, chunk)
    where = 'extension folders "++"'
    if isinstance(node, str):
        if "{" in node or "}" in node:
            return [(walked, f"{where} is the string {node!r}; Farm reads it character by character and the "
                             "lone brace raises", True)]
        return [(walked, f"{where} is the string {node!r}; Farm reads it as one folder per character", False)]
    if isinstance(node, dict):
        return [(walked, f"{where} is a table; Farm reads its keys as folders", False)]
    if not isinstance(node, list):
        return [(walked, f"{where} is {kind(node)}, which Farm cannot iterate", True)]
    found: list[tuple[tuple[str, ...], str, bool]] = []
    for entry in node:
        if not isinstance(entry, str):
            found.append((walked, f"{where} holds {kind(entry)} {entry!r}, not a string", True))
            continue
        try:
            entry.format(job="/x")
        except Exception as exc:  # noqa: BLE001 - whatever str.format raises, Farm's rescan dies of it
            found.append((walked, f"{where} entry {entry!r} breaks str.format ({type(exc).__name__}: {exc})",
                          True))
    return found


def job_folders(doc: dict[str, Any]) -> list[tuple[str, str]]:
    """The folders next to the file that ``[settings.app.exts.folders] "++"`` names through ``{job}``, as
    (entry as written, path relative to the file's folder). Entries that break Farm are left to
    ``extension_folder_problems``."""
    if extension_folder_problems(doc):
        return []
    entries = doc.get("settings", {}).get("app", {}).get("exts", {}).get("folders", {}).get("++", [])
    mark = "\0job\0"
    found: list[tuple[str, str]] = []
    for entry in entries if isinstance(entries, list) else []:
        resolved = entry.format(job=mark)
        resolved = resolved[1:] if resolved.startswith("$") else resolved  # Farm strips one leading '$'
        if resolved.startswith(mark) and mark not in resolved[len(mark):]:
            found.append((entry, resolved[len(mark):].lstrip("/") or "."))
    return found


def kind(value: Any) -> str:
    """A TOML value's kind, for messages."""
    if isinstance(value, bool):
        return "a boolean"
    return {int: "an integer", float: "a float", str: "a string", list: "an array",
            dict: "a table"}.get(type(value), f"a {type(value).__name__}")


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, list):
        return list(value)
    return value
