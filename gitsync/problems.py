"""The one shape every validation finding takes, and how it is printed."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True, order=True)
class Problem:
    """One finding about one place in one file, printed as a single line an operator can act on."""

    path: str
    line: int
    col: int
    severity: Severity
    message: str
    fix: str

    def format(self) -> str:
        return f"{self.path}:{self.line}:{self.col}: {self.severity}: {self.message} — {self.fix}"

    def at(self, path: str) -> Problem:
        return replace(self, path=path)

    def as_error(self) -> Problem:
        return replace(self, severity="error")


def errors(problems: Iterable[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity == "error"]


def to_json(problems: Iterable[Problem]) -> str:
    return json.dumps([asdict(p) for p in problems], indent=2)


def from_dict(data: dict[str, object]) -> Problem:
    return Problem(
        path=str(data["path"]),
        line=int(data["line"]),  # type: ignore[call-overload]
        col=int(data["col"]),  # type: ignore[call-overload]
        severity="error" if data["severity"] == "error" else "warning",
        message=str(data["message"]),
        fix=str(data["fix"]),
    )
