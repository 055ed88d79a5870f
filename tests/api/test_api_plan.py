"""The pure half of the jobs-api target: normalising definitions and planning saves and removes."""

from __future__ import annotations

import pytest

from gitsync.api_plan import Applied, Wanted, fingerprint, normalise, plan_api, wanted_from_kit
from gitsync.farm import as_job_definition


def want(name: str, command: str = "/bin/echo", path: str = "") -> Wanted:
    definition = normalise(name, {"job_type": "base", "command": command})
    return Wanted(path or f"jobs/{name}.kit", definition, fingerprint(definition))


def fp(name: str, command: str = "/bin/echo") -> str:
    return want(name, command).fingerprint


def test_farm_defaults_and_store_fields_do_not_count_as_a_change() -> None:
    from_git = wanted_from_kit("jobs/a.kit", b'[job.a]\njob_type = "base"\ncommand = "x"\n')["a"]
    loaded = {**as_job_definition("a", {"job_type": "base", "command": "x"}),
              "job_spec_path": "/srv/farm/a.kit", "extension_paths": [], "unresolved_command_path": None}
    assert fingerprint(normalise("a", loaded)) == from_git.fingerprint
    assert fingerprint(normalise("a", {**loaded, "args": ["-v"]})) != from_git.fingerprint


def test_the_save_body_has_no_nulls_and_no_job_spec_path() -> None:
    body = normalise("a", {"job_type": "base", "command": "x", "job_spec_path": "/elsewhere.kit",
                           "working_directory": None, "unknown": 1})
    assert None not in body.values()
    assert "job_spec_path" not in body and "unknown" not in body and body["name"] == "a"


def test_toml_dates_become_strings_the_api_can_carry() -> None:
    found = wanted_from_kit("jobs/a.kit", b'[job.a]\njob_type = "base"\ncommand = "x"\n'
                                          b'[job.a.allowed_args.day]\narg = "--day"\ndefault = 2026-11-29\n')
    assert found["a"].definition["allowed_args"]["day"]["default"] == "2026-11-29"


@pytest.mark.parametrize(("desired", "actual", "recorded", "prune", "actions", "findings"), [
    # new in git
    ({"a": want("a")}, {}, {}, "owned", [("save", "a")], []),
    # already there with git's content: adopted, no call
    ({"a": want("a")}, {"a": fp("a")}, {}, "owned", [("adopt", "a")], []),
    # unchanged and recorded: nothing at all
    ({"a": want("a")}, {"a": fp("a")}, {"a": Applied("jobs/a.kit", fp("a"))}, "owned", [], []),
    # changed in git, service still holds what gitsync saved
    ({"a": want("a", "new")}, {"a": fp("a")}, {"a": Applied("jobs/a.kit", fp("a"))}, "owned", [("save", "a")], []),
    # changed on the service since gitsync saved it: drift
    ({"a": want("a", "new")}, {"a": fp("a", "local")}, {"a": Applied("jobs/a.kit", fp("a"))}, "owned", [],
     [("drift", "a")]),
    # someone else's definition under git's name: foreign, unless git owns everything
    ({"a": want("a")}, {"a": fp("a", "theirs")}, {}, "owned", [], [("foreign", "a")]),
    ({"a": want("a")}, {"a": fp("a", "theirs")}, {}, "all", [("save", "a")], []),
    # deleted in git: removed only if gitsync saved it and nobody changed it since
    ({}, {"a": fp("a")}, {"a": Applied("jobs/a.kit", fp("a"))}, "owned", [("remove", "a")], []),
    ({}, {"a": fp("a", "local")}, {"a": Applied("jobs/a.kit", fp("a"))}, "owned", [], [("drift", "a")]),
    ({}, {"x": fp("x")}, {}, "owned", [], []),
    ({}, {"x": fp("x")}, {}, "all", [("remove", "x")], []),
    # already gone: forget the record
    ({}, {}, {"a": Applied("jobs/a.kit", fp("a"))}, "owned", [("forget", "a")], []),
    # saves first, then removes, each sorted: a rename never leaves a gap
    ({"z": want("z"), "b": want("b")}, {"a": fp("a")}, {"a": Applied("jobs/a.kit", fp("a"))}, "owned",
     [("save", "b"), ("save", "z"), ("remove", "a")], []),
])
def test_plan(desired: dict[str, Wanted], actual: dict[str, str], recorded: dict[str, Applied], prune: str,
              actions: list[tuple[str, str]], findings: list[tuple[str, str]]) -> None:
    plan = plan_api(desired, actual, recorded, prune=prune)  # type: ignore[arg-type]
    assert [(a.kind, a.name) for a in plan.actions] == actions
    assert [(f.kind, f.target) for f in plan.findings] == findings


def test_held_and_pending_names_are_left_alone() -> None:
    plan = plan_api({"a": want("a", "new")}, {"a": fp("a"), "b": fp("b")},
                    {"a": Applied("jobs/a.kit", fp("a")), "b": Applied("jobs/b.kit", fp("b"))},
                    hold={"a": "invalid"}, pending={"b": "on its way to git"})
    assert plan.actions == ()
    assert [(f.kind, f.target) for f in plan.findings] == [("held", "a"), ("pending", "b")]
