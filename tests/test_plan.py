"""The pure decisions: `make_plan`, `mass_delete_refusal` and the blame rules of `defset.check_set`,
as tables of what git wants, what gitsync owns and what is in the job directory."""

from __future__ import annotations

import pytest

from gitsync.defset import Checked, check_set, error_paths
from gitsync.model import Owned
from gitsync.plan import Action, Desired, Finding, Plan, make_plan, mass_delete_refusal
from gitsync.problems import Problem

A, B, C = "a" * 40, "b" * 40, "c" * 40  # blob ids


def want(blob: str, repo_path: str = "jobs/x.kit") -> Desired:
    return Desired(repo_path, blob, ("x",))


def mine(blob: str, repo_path: str = "jobs/x.kit") -> Owned:
    return Owned(repo_path, blob, ("x",))


# Each row: git wants (blob or None), gitsync owns (blob or None), the directory has (blob or None),
# force; then the expected action (kind, reason) and finding (kind, start of detail), None for none.
PLAN_ROWS = {
    "new in git": (A, None, None, False, ("write", "new in git (jobs/x.kit)"), None),
    "unchanged": (A, A, A, False, None, None),
    "changed in git": (B, A, A, False, ("write", "changed in git (jobs/x.kit)"), None),
    "already what git wants but not owned (write finished before a crash)":
        (A, None, A, False, ("adopt", "already matches git"), None),
    "owned under an older blob but already what git wants": (B, A, B, False, ("adopt", "already matches git"), None),
    "a foreign file with the same name": (A, None, B, False, None, ("foreign", "x.kit exists but was not written")),
    "a foreign file is not overwritten even with --force": (A, None, B, True, None, ("foreign", "x.kit exists")),
    "edited by hand": (A, A, B, False, None, ("drift", "x.kit was changed in the target since gitsync wrote it")),
    "edited by hand while git changed it too": (C, A, B, False, None, ("drift", "x.kit was changed in the target")),
    "edited by hand, --force": (A, A, B, True, ("write", "restored over a local change (--force)"), None),
    "deleted by hand": (A, A, None, False, None, ("drift", "x.kit was deleted in the target since gitsync")),
    "deleted by hand, --force": (A, A, None, True, ("write", "restored over a local delete (--force)"), None),
    "removed from git": (None, A, A, False, ("delete", "removed from git (jobs/x.kit)"), None),
    "removed from git and already gone": (None, A, None, False, ("forget", "already gone from the target"), None),
    "removed from git but edited by hand": (None, A, B, False, None, ("drift", "x.kit was removed from git but "
                                                                             "changed locally")),
    "removed from git but edited by hand, --force":
        (None, A, B, True, ("delete", "removed from git; local change dropped (--force)"), None),
    "not in git, not owned: a foreign file is not even looked at": (None, None, B, True, None, None),
}


@pytest.mark.parametrize(("git_blob", "owned_blob", "disk_blob", "force", "action", "finding"),
                         list(PLAN_ROWS.values()), ids=list(PLAN_ROWS))
def test_make_plan_decides_one_file(git_blob: str | None, owned_blob: str | None, disk_blob: str | None,
                                    force: bool, action: tuple[str, str] | None,
                                    finding: tuple[str, str] | None) -> None:
    desired = {"x.kit": want(git_blob)} if git_blob else {}
    owned = {"x.kit": mine(owned_blob)} if owned_blob else {}
    actual = {"x.kit": disk_blob} if disk_blob else {}

    plan = make_plan(desired, owned, actual, force=force)

    assert [(a.kind, a.reason) for a in plan.actions] == ([action] if action else [])
    assert len(plan.findings) == (1 if finding else 0)
    if finding:
        assert plan.findings[0].kind == finding[0] and plan.findings[0].target == "x.kit"
        assert plan.findings[0].detail.startswith(finding[1])
    for a in plan.actions:
        assert a.target == "x.kit"
        assert a.blob == (git_blob if a.kind in ("write", "adopt") else None)
    assert plan.changes_target == bool(action and action[0] in ("write", "delete"))


def test_a_moved_file_is_adopted_under_its_new_repo_path() -> None:
    plan = make_plan({"x.kit": want(A, "jobs/ops/x.kit")}, {"x.kit": mine(A, "jobs/x.kit")}, {"x.kit": A})

    assert plan.actions == (Action("adopt", "x.kit", "jobs/ops/x.kit", A, "already matches git"),)
    assert not plan.changes_target


@pytest.mark.parametrize("force", [False, True])
def test_a_held_file_is_left_alone_and_reported(force: bool) -> None:
    plan = make_plan({"x.kit": want(B)}, {"x.kit": mine(A)}, {"x.kit": A},
                     hold={"x.kit": "jobs/x.kit is invalid; the last good version stays"}, force=force)

    assert plan == Plan((), (Finding("held", "x.kit", "jobs/x.kit is invalid; the last good version stays"),))


def test_the_plan_is_sorted_and_the_same_for_the_same_inputs() -> None:
    desired = {n: Desired(f"jobs/{n}", A, (n[:-4],)) for n in ("zeta.kit", "alpha.kit", "mid.kit")}
    owned = {"beta.kit": Owned("jobs/beta.kit", B, ("beta",))}
    actual = {"beta.kit": B}

    plan = make_plan(desired, owned, actual)

    assert [(a.kind, a.target) for a in plan.actions] == [
        ("write", "alpha.kit"), ("delete", "beta.kit"), ("write", "mid.kit"), ("write", "zeta.kit")]
    assert make_plan(dict(reversed(desired.items())), owned, actual) == plan


def plan_of(writes: int = 0, deletes: int = 0, forgets: int = 0, adopts: int = 0) -> Plan:
    actions = [Action("write", f"w{i}.kit", "", A, "") for i in range(writes)]
    actions += [Action("delete", f"d{i}.kit", "", None, "") for i in range(deletes)]
    actions += [Action("forget", f"f{i}.kit", "", None, "") for i in range(forgets)]
    actions += [Action("adopt", f"a{i}.kit", "", A, "") for i in range(adopts)]
    return Plan(tuple(actions), ())


# Each row: the plan's counts (writes, deletes, forgets, adopts), files owned, max share, --allow-mass-delete,
# and the start of the refusal (None: allowed).
REFUSAL_ROWS = {
    "nothing deleted": ((3, 0, 0, 0), 7, 0.5, False, None),
    "nothing owned yet": ((3, 0, 0, 0), 0, 0.5, False, None),
    "a few files deleted": ((0, 3, 0, 0), 7, 0.5, False, None),
    "exactly half deleted": ((0, 1, 0, 0), 2, 0.5, False, None),
    "more than half deleted": ((0, 4, 0, 0), 7, 0.5, False, "this commit would remove 4 of 7 definition files "
                                                            "(more than 50%); refusing"),
    "more than half deleted, allowed": ((0, 4, 0, 0), 7, 0.5, True, None),
    "every file deleted": ((0, 7, 0, 0), 7, 0.5, False, "this commit would remove every definition (7 files)"),
    "every file deleted, allowed": ((0, 7, 0, 0), 7, 0.5, True, None),
    "the only file deleted": ((0, 1, 0, 0), 1, 1.0, False, "this commit would remove every definition (1 files)"),
    "every file deleted even with max share 1": ((0, 7, 0, 0), 7, 1.0, False, "this commit would remove every"),
    "every file renamed": ((7, 7, 0, 0), 7, 0.5, False, "this commit would remove 7 of 7 definition files"),
    "every file renamed with max share 1": ((7, 7, 0, 0), 7, 1.0, False, None),
    "the rest already gone by hand": ((0, 1, 6, 0), 7, 0.5, False, "this commit would remove every definition"),
    "a stricter share": ((0, 2, 0, 0), 10, 0.1, False, "this commit would remove 2 of 10 definition files "
                                                       "(more than 10%)"),
    "only forgets": ((0, 0, 7, 0), 7, 0.5, False, None),
}


@pytest.mark.parametrize(("counts", "owned", "share", "allowed", "refusal"), list(REFUSAL_ROWS.values()),
                         ids=list(REFUSAL_ROWS))
def test_mass_delete_refusal(counts: tuple[int, int, int, int], owned: int, share: float, allowed: bool,
                             refusal: str | None) -> None:
    found = mass_delete_refusal(plan_of(*counts), owned, share, allowed)

    if refusal is None:
        assert found is None
    else:
        assert found is not None and found.startswith(refusal)
        assert "--allow-mass-delete" in found


def checked(path: str, *names: str, problems: tuple[Problem, ...] = ()) -> Checked:
    return Checked(path, names, problems)


# Each row: the files (path, job names), the changed set (None: validate, which blames every file),
# and the paths that end up with an error.
BLAME_ROWS = {
    "no clash": ([("jobs/a.kit", ("a",)), ("jobs/b.kit", ("b",))], None, set()),
    "one name in two files, validate blames both": (
        [("jobs/a.kit", ("x",)), ("jobs/b.kit", ("x",))], None, {"jobs/a.kit", "jobs/b.kit"}),
    "the changed file takes the blame": (
        [("jobs/a.kit", ("x",)), ("jobs/b.kit", ("x",))], {"jobs/b.kit"}, {"jobs/b.kit"}),
    "both changed, both blamed": (
        [("jobs/a.kit", ("x",)), ("jobs/b.kit", ("x",))], {"jobs/a.kit", "jobs/b.kit"}, {"jobs/a.kit", "jobs/b.kit"}),
    "neither changed, both blamed": ([("jobs/a.kit", ("x",)), ("jobs/b.kit", ("x",))], set(),
                                     {"jobs/a.kit", "jobs/b.kit"}),
    "a changed file unrelated to the clash does not move the blame": (
        [("jobs/a.kit", ("x",)), ("jobs/b.kit", ("x",)), ("jobs/c.kit", ("c",))], {"jobs/c.kit"},
        {"jobs/a.kit", "jobs/b.kit"}),
    "one base name in two folders, the changed one blamed": (
        [("jobs/render/job.kit", ("one",)), ("jobs/ops/job.kit", ("two",))], {"jobs/ops/job.kit"},
        {"jobs/ops/job.kit"}),
    "one name twice in one file": ([("jobs/a.kit", ("x", "x"))], None, {"jobs/a.kit"}),
    "three files, one new": (
        [("jobs/a.kit", ("x",)), ("jobs/b.kit", ("x",)), ("jobs/c.kit", ("x",))], {"jobs/c.kit"}, {"jobs/c.kit"}),
}


@pytest.mark.parametrize(("files", "changed", "blamed"), list(BLAME_ROWS.values()), ids=list(BLAME_ROWS))
def test_check_set_blames_clashes_on_the_changed_file(files: list[tuple[str, tuple[str, ...]]],
                                                      changed: set[str] | None, blamed: set[str]) -> None:
    problems = check_set([checked(path, *names) for path, names in files], changed=changed)

    assert set(problems) == {path for path, _ in files}
    assert error_paths(problems) == blamed


def test_a_clash_names_the_other_file() -> None:
    problems = check_set([checked("jobs/a.kit", "x"), checked("jobs/b.kit", "x")], changed={"jobs/b.kit"})

    [problem] = problems["jobs/b.kit"]
    assert problem.message == "job name 'x' is also defined in jobs/a.kit; Farm would keep only one"
    assert (problem.path, problem.severity) == ("jobs/b.kit", "error")


def test_one_base_name_in_two_folders_names_both() -> None:
    problems = check_set([checked("jobs/render/job.kit", "one"), checked("jobs/ops/job.kit", "two")])

    assert [p.message for p in problems["jobs/ops/job.kit"]] == [
        "jobs/ops/job.kit and jobs/render/job.kit both land as job.kit in the flat job directory"]
    assert [p.message for p in problems["jobs/render/job.kit"]] == [
        "jobs/render/job.kit and jobs/ops/job.kit both land as job.kit in the flat job directory"]


def test_a_files_own_problems_are_kept() -> None:
    own = Problem("jobs/a.kit", 3, 1, "warning", "job.a.comand is not a field Farm knows; it is ignored", "fix")

    problems = check_set([checked("jobs/a.kit", "a", problems=(own,))])

    assert problems == {"jobs/a.kit": [own]}
    assert error_paths(problems) == set()
