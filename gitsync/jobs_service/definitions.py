"""Check a definition posted to ``/save`` as Farm's request model does, before a store sees it.

Farm validates the body with a pydantic model built from its ``JobDefinition`` fields: names with
``_`` or over 32 characters are refused with HTTP 422, unknown keys are dropped, and each field
must have the type of its default. Errors are reported in FastAPI's shape
(``{"detail": [{"loc": [...], "msg": ..., "type": ...}]}``) so a client written against this
stand-in also understands the real service.
"""

from __future__ import annotations

from pathlib import PurePath
from typing import Any

from gitsync import farm
from gitsync.errors import GitsyncError

#: The keys Farm's JobDefinition knows; anything else in a posted body is silently dropped.
KNOWN_FIELDS = frozenset(farm.DEFINITION_DEFAULTS)


class InvalidDefinition(GitsyncError):
    """A request body Farm would refuse with 422; carries FastAPI-style error entries."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("; ".join(str(error["msg"]) for error in errors))
        self.errors = errors


def error(loc: list[str | int], msg: str, kind: str = "value_error") -> dict[str, Any]:
    """One FastAPI-shaped validation error entry."""
    return {"loc": loc, "msg": msg, "type": kind}


def parse_save_body(body: object) -> dict[str, Any]:
    """The definition to store: known keys only, None values dropped, name and types checked.

    Raises InvalidDefinition with every problem found, not just the first.
    """
    if not isinstance(body, dict):
        raise InvalidDefinition([error(["body"], "the body must be a JSON object", "type_error")])
    definition = {k: v for k, v in body.items() if k in KNOWN_FIELDS and v is not None}
    problems: list[dict[str, Any]] = []

    name = definition.get("name")
    if not isinstance(name, str):
        problems.append(error(["body", "name"], "field required: the job name", "missing"))
    else:
        problem = farm.name_problem(name)
        if problem:
            problems.append(error(["body", "name"], problem))

    for required in farm.REQUIRED_FIELDS:
        if required not in definition:
            problems.append(error(["body", required], f"field required: {required}", "missing"))

    for key, value in definition.items():
        types, human = farm.FIELD_TYPES[key]
        # bool is an int subclass; no Farm field accepts a bool where it wants something else.
        wrong_bool = isinstance(value, bool) and bool not in types
        if not isinstance(value, types) or wrong_bool:
            problems.append(error(["body", key], f"{key} must be {human}", "type_error"))

    spec_path = definition.get("job_spec_path")
    if isinstance(spec_path, str) and not _is_kit_path(spec_path):
        # Farm writes wherever job_spec_path points; the stand-in only writes .kit files.
        problems.append(error(["body", "job_spec_path"], "job_spec_path must be an absolute path to a .kit file"))

    if problems:
        raise InvalidDefinition(problems)
    return definition


def parse_remove_body(body: object) -> str:
    """The name in ``{"job_definition_name": name}``; anything else is a 422."""
    name = body.get("job_definition_name") if isinstance(body, dict) else None
    if not isinstance(name, str):
        raise InvalidDefinition(
            [
                error(
                    ["body", "job_definition_name"],
                    "field required: job_definition_name",
                    "missing",
                )
            ]
        )
    return name


def _is_kit_path(path: str) -> bool:
    return PurePath(path).is_absolute() and path.endswith(".kit")
