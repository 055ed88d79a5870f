"""Validate one `.kit` file the way Farm will read it, before it gets anywhere near a job directory.

Pure: bytes in, findings out. Farm's DirectoryJobStore parses with the old `toml` package and
skips a bad file with nothing but a log line, so every rule here exists to turn one of Farm's
silent failures into a loud, fixable error at review time.
"""

from __future__ import annotations

import contextlib
import json
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import toml

from gitsync import companion, farm, kitname
from gitsync.problems import Problem

#: The TOML 1.0 parser: the standard library's, or the same code compiled (`use_compiled_parser`).
_toml10: Any = tomllib


def use_compiled_parser() -> None:
    """Parse TOML 1.0 with tomli 2.2.1, the standard library's tomllib compiled with mypyc: the same verdicts
    at twice the speed, for processes that check thousands of files (the validation pool's workers). Loading
    it costs more than a few files' parsing, so a sync of a small change keeps tomllib."""
    global _toml10
    with contextlib.suppress(ImportError):  # a dependency; without it tomllib gives the same verdicts, slower
        import tomli

        _toml10 = tomli


MAX_FILE_SIZE = 1024 * 1024


@dataclass(frozen=True, slots=True)
class KitReport:
    """What a file defines (job names in file order) and every problem found in it."""

    names: tuple[str, ...]
    problems: tuple[Problem, ...]
    #: ``${job}`` companion folders the file names, with the line of its ``"++"`` key (companion.py).
    folders: companion.Folders = ()

    @property
    def ok(self) -> bool:
        return not any(p.severity == "error" for p in self.problems)


def check_kit(data: bytes, path: str, *, strict: bool = False, max_size: int = MAX_FILE_SIZE) -> KitReport:
    """Check a file's bytes; `path` is only used in messages. Never raises: whatever the bytes, the answer
    is a report (a file nested too deeply for the parsers is an error like any other)."""
    try:
        return _check_kit(data, path, strict=strict, max_size=max_size)
    except RecursionError:
        return _fail(path, "the file nests arrays or tables too deeply to be parsed",
                     "flatten the structure (Farm's parser would fail on it too)")


def too_large(size: int, path: str, max_size: int) -> KitReport:
    """The report for a file over the size limit, from its size alone (its content need never be read)."""
    return _fail(path, f"file is {size} bytes, over the {max_size}-byte limit",
                 "split it into smaller files or raise sync.max_file_size")


def _check_kit(data: bytes, path: str, *, strict: bool, max_size: int) -> KitReport:
    if len(data) > max_size:
        return too_large(len(data), path, max_size)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        return _fail(path, f"file is not valid UTF-8 (byte {exc.start})",
                     "save the file as UTF-8", line=line)
    doc, problem = _parse_both(text, path)
    if problem:
        return KitReport((), (problem,))
    assert doc is not None
    return _check_document(doc, _Locator(text, path), strict=strict)


def _fail(path: str, message: str, fix: str, line: int = 1, col: int = 1) -> KitReport:
    return KitReport((), (Problem(path, line, col, "error", message, fix),))


_TOMLLIB_POS = re.compile(r"\(at line (\d+), column (\d+)\)")


def _parse_both(text: str, path: str) -> tuple[dict[str, Any] | None, Problem | None]:
    """Parse as TOML 1.0 and as Farm does; both must accept the file and agree on its meaning."""
    try:
        strict_doc = _toml10.loads(text)
    except _toml10.TOMLDecodeError as exc:
        msg = str(exc)
        pos = _TOMLLIB_POS.search(msg)
        line, col = (int(pos.group(1)), int(pos.group(2))) if pos else (1, 1)
        return None, Problem(path, line, col, "error", f"invalid TOML: {_TOMLLIB_POS.sub('', msg).strip()}",
                             "fix the syntax (TOML 1.0)")
    try:
        farm_doc = toml.loads(text)
    except RecursionError:
        raise
    except Exception as exc:  # noqa: BLE001 - toml 0.10 raises many types; Farm skips the file for any of them
        line, col = getattr(exc, "lineno", 1), getattr(exc, "colno", 1)
        reason = getattr(exc, "msg", str(exc))
        return None, Problem(path, line, col, "error", f"Farm's TOML parser (toml 0.10) rejects this file: {reason}",
                             "use syntax both parsers accept (e.g. single-quoted literal strings for Windows paths)")
    if _plain(farm_doc) != _plain(strict_doc):
        keys = _first_difference(strict_doc, farm_doc)
        shown = f"'{'.'.join(keys)}'" if keys else "this file"
        return None, Problem(path, _Locator(text, path).key_path(keys), 1, "error",
                             f"Farm's TOML parser reads {shown} differently from TOML 1.0",
                             "rewrite the value in a simpler form (plain strings, no dotted keys in inline tables)")
    return strict_doc, None


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, float) and value != value:
        return "nan"  # nan != nan, but both parsers reading nan agree
    return value


def _first_difference(a: Any, b: Any, prefix: tuple[str, ...] = ()) -> tuple[str, ...]:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if _plain(a.get(key)) != _plain(b.get(key)):
                return _first_difference(a.get(key), b.get(key), (*prefix, key))
    return prefix


class _Locator:
    """Finds the line of a table header or key so messages point where the fix goes."""

    def __init__(self, text: str, path: str) -> None:
        self.lines = text.splitlines()
        self.path = path

    def table(self, key: str) -> int:
        header = re.compile(r"^\s*\[\s*job\s*\.\s*(\"%s\"|'%s'|%s)\s*\]" % ((re.escape(key),) * 3))
        for number, line in enumerate(self.lines, 1):
            if header.match(line):
                return number
        return 1

    def key_path(self, keys: tuple[str, ...]) -> int:
        """Best-effort line of a dotted key path such as ('job', 'x', 'command')."""
        if len(keys) >= 3 and keys[0] == "job":
            return self.field(keys[1], keys[2])
        if keys:
            pattern = re.compile(r"^\s*(\"%s\"|'%s'|%s)\s*[=.]" % ((re.escape(keys[-1]),) * 3))
            return next((n for n, line in enumerate(self.lines, 1) if pattern.match(line)), 1)
        return 1

    def field(self, key: str, field: str) -> int:
        start = self.table(key)
        sub_table = re.compile(r"^\s*\[\s*job\s*\.\s*(\"%s\"|'%s'|%s)\s*\.\s*(\"%s\"|'%s'|%s)\s*\]"
                               % ((re.escape(key),) * 3 + (re.escape(field),) * 3))
        for number, line in enumerate(self.lines, 1):
            if sub_table.match(line):
                return number
        pattern = re.compile(r"^\s*(\"%s\"|'%s'|%s)\s*[=.]" % ((re.escape(field),) * 3))
        for number in range(start, len(self.lines) + 1):
            line = self.lines[number - 1]
            if number > start and line.lstrip().startswith("[") and not line.lstrip().startswith(f"[job.{key}."):
                break
            if pattern.match(line):
                return number
        return start

    def problem(self, line: int | Callable[[], int], severity: str, message: str, fix: str) -> Problem:
        """`line` may be a function: finding a line costs regex work, so it is done only for real problems."""
        number = line() if callable(line) else line
        return Problem(self.path, number, 1, "error" if severity == "error" else "warning", message, fix)


STRICTER = "gitsync's rule, stricter than Farm"


def _check_document(doc: dict[str, Any], at: _Locator, *, strict: bool) -> KitReport:
    """Farm's ``DirectoryJobStore._load_configuration`` step by step: what aborts its rescan, what it skips,
    what it ignores; then gitsync's stricter rules, each saying so."""
    problems: list[Problem] = []
    folders, unsupported = companion.referenced(doc)
    line = at.key_path(farm.EXTENSION_FOLDERS_KEY) if folders or unsupported else 1
    for entry, why in unsupported:
        problems.append(at.problem(line, "warning", f"extension folder {entry!r} is not synced: {why}",
                                   'name a folder beside the file, as "${job}/exts"'))
    found = tuple((folder, line) for folder in folders)
    for keys, reason, aborts in farm.extension_folder_problems(doc):
        problems.append(at.problem(lambda keys=keys: at.key_path(keys), "error",  # type: ignore[misc]
                                   reason + ("; Farm's rescan of the whole job directory aborts on it" if aborts
                                             else f" ({STRICTER})"),
                                   'write [settings.app.exts.folders] "++" = ["${job}/exts"], an array of strings '
                                   "using only the ${job} placeholder"))
    if "job" not in doc:
        problems.append(at.problem(1, "warning", "file defines no [job.<name>] table; Farm ignores it",
                                   "add a [job.<name>] table or move the file out of the definitions path"))
        return KitReport((), tuple(problems), found)
    jobs = doc["job"]
    if not isinstance(jobs, dict):
        problems.append(at.problem(lambda: at.key_path(("job",)), "error",
                                   f"'job' is {farm.kind(jobs)}, not a table; Farm's rescan of the whole job "
                                   "directory aborts on it", "define jobs as [job.<name>] tables"))
        return KitReport((), tuple(problems), found)
    if not jobs:
        problems.append(at.problem(lambda: at.key_path(("job",)), "warning",
                                   "the [job] table is empty; Farm logs a warning and loads nothing from this file",
                                   "add a [job.<name>] table or remove the file"))
    names: list[str] = []
    for key, definition in jobs.items():
        names.append(key)
        problems += _check_definition(key, definition, at, strict=strict)
    return KitReport(tuple(names), tuple(problems), found)


def _check_definition(key: str, definition: Any, at: _Locator, *, strict: bool) -> list[Problem]:
    def head() -> int:
        return at.table(key)

    if not isinstance(definition, dict):
        return [at.problem(head, "error", f"job.{key} is {farm.kind(definition)}, not a table, so Farm skips it",
                           f"write it as a [job.{key}] table")]
    problems: list[Problem] = []
    unsafe = kitname.job_name_problem(key)
    if unsafe:
        problems.append(at.problem(head, "error", f"{unsafe} ({STRICTER}: it could not be saved as a file "
                                   "inside the job directory)", "rename the [job.<name>] table"))
    bad_name = farm.name_problem(key)
    if bad_name:
        problems.append(at.problem(head, "error", f"{bad_name} (jobs/save refuses it; tasks reference jobs by it)",
                                   "rename the [job.<name>] table (lowercase, '-', ≤ 32)"))
    for field in farm.REQUIRED_FIELDS:
        if field not in definition:
            problems.append(at.problem(head, "error", f"job.{key} has no '{field}', so Farm skips it",
                                       f"add {field} = \"...\" to [job.{key}]"))
    for field, value in definition.items():
        problems += _check_field(key, field, value, at)
    name = definition.get("name")
    if isinstance(name, str) and name != key:
        problems.append(at.problem(
            lambda: at.field(key, "name"), "error" if strict else "warning",
            f"job.{key} has name = {name!r}: the directory store registers it as {key!r}, jobs/save as {name!r}",
            "make the table key and the name field the same"))
    return problems


#: Fields the directory store never reads from a file, and what that means for the user.
_IGNORED = {
    "extension_paths": "Farm computes it from [settings.app.exts.folders]",
    "unresolved_command_path": "Farm sets it from 'command'",
}


def _check_field(key: str, field: str, value: Any, at: _Locator) -> list[Problem]:
    def line() -> int:
        return at.field(key, field)

    spec = farm.FIELD_TYPES.get(field)
    if spec is None:
        return [at.problem(line, "warning", f"job.{key}.{field} is not a field Farm knows; it is ignored",
                           "check the spelling or remove it")]
    if field in _IGNORED:
        return [at.problem(line, "warning", f"Farm's directory store ignores job.{key}.{field} in a file "
                           f"({_IGNORED[field]})", "remove it")]
    if field == "job_spec_path":
        return [at.problem(line, "warning", f"job.{key}.job_spec_path is set by the job store and means nothing in git",
                           "remove it")]
    if field == "active":
        if value is True:
            return []  # what jobs/save writes, and what Farm assumes anyway
        shown = json.dumps(value, default=str)
        return [at.problem(line, "warning", f"job.{key}.active = {shown} has no effect: Farm's directory store "
                           "never reads 'active' from a file, so the job stays active",
                           "remove the job (or its file) to retire it")]
    types, described = spec
    wrong = not isinstance(value, types) or (bool not in types and isinstance(value, bool))
    if not wrong:
        wrong = _element_problem(field, value)
    if wrong:
        return [at.problem(line, "error", f"job.{key}.{field} must be {described}, not {farm.kind(value)} "
                           f"({STRICTER}: Farm loads it and the job fails when it runs)",
                           f"write {field} as {described}")]
    if field == "job_type" and value not in farm.JOB_TYPES:
        known = ", ".join(repr(t) for t in farm.JOB_TYPES)
        return [at.problem(line, "error", f"job.{key}.job_type is {value!r}; Farm's job types are {known} "
                           f"({STRICTER}: Farm loads it and no agent can run it)", f"use one of {known}")]
    if field == "name" and farm.name_problem(value):
        return [at.problem(line, "error", f"{farm.name_problem(value)} (jobs/save refuses it)",
                           "rename it (lowercase, '-', ≤ 32)")]
    return []


def _element_problem(field: str, value: Any) -> bool:
    if field == "args":
        return not all(isinstance(v, str) for v in value)
    if field == "success_return_codes":
        return not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    if field == "env":
        return not all(isinstance(v, str) for v in value.values())
    if field == "allowed_args":
        return not all(isinstance(v, dict) and _is_arg(v.get("arg")) for v in value.values())
    return False


def _is_arg(arg: Any) -> bool:
    """An option name, or a position: an integer or a digit string (Farm passes it as a positional argument)."""
    return isinstance(arg, str) or (isinstance(arg, int) and not isinstance(arg, bool) and arg >= 0)
