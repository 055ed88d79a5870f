"""Read and rewrite one ``.kit`` file the way Farm's DirectoryJobStore does, quirks included.

Farm parses with the old ``toml`` package and rewrites with ``toml.dump``: comments and layout are
lost, other top-level tables are kept, ``None`` values vanish. It writes by truncating the file and
writing the new text (no temp file), so a watcher can see an empty file in between. gitsync must
cope with all of that, so the stand-in does exactly the same.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import toml

from gitsync import farm, kitname
from gitsync.jobs_service.store import Definition, RescanAborted, StoreError

log = logging.getLogger(__name__)

#: The fields Farm reads from a file; `name`, `active` and `job_spec_path` there are ignored
#: (the table key is the name, `active` is always true, the path is where the file is).
LOADED_FIELDS = tuple(f for f in farm.LOADED_FIELDS if f not in farm.REQUIRED_FIELDS)
_EXTENSION_FOLDERS_KEY = ("settings", "app", "exts", "folders", "++")


def is_kit_file(path: str) -> bool:
    """Farm's test: a regular file whose extension is exactly ``.kit`` (case-sensitive)."""
    return kitname.farm_loads(os.path.basename(path)) and os.path.isfile(path)


def read_definitions(path: str) -> dict[str, Definition]:
    """The definitions in one file, keyed by ``[job.<key>]`` table key, Farm's defaults filled in.

    An unparsable file yields nothing (warned); a definition without job_type or command is
    skipped (warned) while the others load. A file whose structure breaks Farm's file-level code
    (``job`` not a table, a bad ``${job}`` folder entry) raises RescanAborted, because in Farm that
    exception escapes and aborts the whole directory scan.
    """
    config = _safe_load(path)
    folder = os.path.dirname(path)
    try:
        jobs = config.get("job", {})
        if not jobs:
            log.warning("No job configurations found in %s", path)
        extension_paths = _extension_paths(config, folder)
        entries = list(jobs.items())
    except Exception as exc:  # noqa: BLE001 - mirrors Farm: anything here aborts the scan
        raise RescanAborted(
            f"{path}: {type(exc).__name__}: {exc} (Farm aborts the whole directory scan on this)"
        ) from exc

    found: dict[str, Definition] = {}
    for key, params in entries:
        problem = _definition_problem(params)
        if problem:
            log.warning("Skipped job definition %r in %s: %s", key, path, problem)
            continue
        fields = {field: params[field] for field in LOADED_FIELDS if field in params}
        fields.update(job_type=params["job_type"], command=params["command"])
        definition = farm.as_job_definition(key, fields)
        definition.update(
            job_spec_path=path,
            extension_paths=list(extension_paths),
            unresolved_command_path=params["command"],
        )
        found[key] = definition
    return found


def save_definition(path: Path, definition: Definition) -> None:
    """Put ``definition`` under ``[job.<name>]`` in ``path`` and re-dump the whole file."""
    config = _load_for_rewrite(path) if path.exists() else {}
    jobs = config.get("job", {})
    if not isinstance(jobs, dict):
        raise StoreError(f"{path}: 'job' is not a table; cannot save into it")
    record = farm.as_job_definition(definition["name"], definition)
    # Farm writes the command as it was before path resolution, so a client that changes
    # `command` but posts back a stale `unresolved_command_path` gets the old command written.
    if record["unresolved_command_path"]:
        record["command"] = record["unresolved_command_path"]
    record.pop("unresolved_command_path")
    record.pop("extension_paths")
    jobs[definition["name"]] = record
    config["job"] = jobs
    _rewrite(path, config)


def remove_definition(path: Path, name: str) -> None:
    """Drop ``[job.<name>]`` from a file that holds other definitions, re-dumping the file."""
    config = _load_for_rewrite(path)
    jobs = config.get("job", {})
    if isinstance(jobs, dict):
        jobs.pop(name, None)
    _rewrite(path, config)


def _rewrite(path: Path, config: dict[str, Any]) -> None:
    text = toml.dumps(config)  # render first: a failure must not leave the file truncated
    try:
        # Truncate and write in place, as Farm does; deliberately not temp-file-and-rename.
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
    except OSError as exc:
        raise StoreError(f"cannot write {path}: {exc.strerror}") from exc


def _load_for_rewrite(path: Path) -> dict[str, Any]:
    try:
        return toml.load(str(path))
    except (OSError, toml.TomlDecodeError) as exc:
        raise StoreError(f"{path} cannot be read as TOML, so it cannot be rewritten: {exc}") from exc


def _safe_load(path: str) -> dict[str, Any]:
    try:
        return toml.load(path)
    except Exception as exc:  # noqa: BLE001 - Farm skips a file for any load failure
        log.warning("Failed to load TOML configuration from %s: %s - %s", path, type(exc).__name__, exc)
        return {}


def _definition_problem(params: object) -> str | None:
    if not isinstance(params, dict):
        return "it is not a table"
    missing = [field for field in farm.REQUIRED_FIELDS if field not in params]
    if missing:
        return "it has no " + " and no ".join(missing)
    return None


def _extension_paths(config: dict[str, Any], folder: str) -> list[str]:
    """Farm's ``${job}`` expansion of ``[settings.app.exts.folders] "++"``, errors and all.

    Only a missing key is tolerated; a non-string entry or a ``{...}`` other than ``{job}``
    raises, exactly where Farm's ``str.format(job=...)`` would.
    """
    settings: Any = config
    try:
        for chunk in _EXTENSION_FOLDERS_KEY:
            settings = settings[chunk]
    except KeyError:
        return []
    paths: list[str] = []
    for entry in settings:
        resolved = entry.format(job=folder)
        paths.append(resolved[1:] if resolved.startswith("$") else resolved)
    return paths
