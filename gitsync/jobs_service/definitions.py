"""The ``/save`` and ``/remove`` request bodies, as Farm's jobs router models them.

Farm builds its ``/save`` model with ``pydantic.create_model`` from a ``JobDefinition`` with default
values (``nv/svc/farm/services/jobs/router.py``, ``_create_dynamic_model``): every field optional
with the job definition's default, typed by that default (a field whose default is None is a
``str``), unknown keys dropped, and a validator on ``name``. Building the model the same way with
the same libraries is what makes the 422 bodies identical: an explicit ``null`` is "Input should be
a valid string", booleans accept ``"true"``, ``"yes"`` and ``1``, and so on.

gitsync's stand-in adds one rule of its own, stricter than Farm for safety: a name that would not
be one plain file inside the job directory (``../x``, ``a/b``, a control character) is refused.
"""

from __future__ import annotations

from typing import Any

import pydantic

from gitsync import farm, kitname

#: Farm's JobDefinition("job-name", "base,kit,kit-service", "command", working_directory=None,
#: unresolved_command_path=None, job_spec_path=None).to_dict(): the model's defaults.
MODEL_DEFAULTS: dict[str, Any] = {
    **farm.as_job_definition("job-name", {"job_type": "base,kit,kit-service", "command": "command"}),
}


def _check_name(value: str) -> str:
    # Farm's own rule (jobs/save): tasks reference a job by a 32-character task_type, and '_' breaks its URLs.
    if "_" in value:
        raise ValueError("Job name cannot contain underscore.")
    if len(value) > farm.MAX_NAME_LENGTH:
        raise ValueError("Job name cannot exceed 32 characters.")
    unsafe = kitname.job_name_problem(value)
    if unsafe:  # the stand-in's own rule, stricter than Farm
        raise ValueError(f"{unsafe}; it must be a plain file name (gitsync's jobs service is stricter than Farm)")
    return value


def _field(default: Any) -> tuple[Any, Any]:
    return (type(default), default) if default is not None else (str, None)


JobDefinitionModel: type[pydantic.BaseModel] = pydantic.create_model(  # type: ignore[call-overload]
    "JobDefinitionModel",
    __validators__={"name_validator": pydantic.field_validator("name")(_check_name)},
    **{key: _field(default) for key, default in MODEL_DEFAULTS.items()},
)


class JobDefinitionRemoveModel(pydantic.BaseModel):
    """Farm's ``/remove`` body."""

    job_definition_name: str = pydantic.Field(..., title="Job definition identifier",
                                              description="Identifier of the job definition to remove.")


def as_definition(model: pydantic.BaseModel) -> dict[str, Any]:
    """The posted definition as Farm's ``JobDefinition(**dict(model))`` holds it."""
    return farm.as_job_definition(str(model.name), dict(model))  # type: ignore[attr-defined]
