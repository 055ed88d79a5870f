"""Pull sync end to end: `gitsync sync --once` / `plan` / `status` / `history` against a real bare
remote, writing into a real job directory. Each test is a scenario an operator would describe."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pull_helpers import SAMPLE_COMPANION_FILES, SAMPLE_TARGETS, Ran, gitsync, kit, kit_files, snapshot
from pull_helpers import isolated as isolated  # fixtures by import: tmpfs tmp_path, cwd + env isolation
from pull_helpers import ram_tmp_path as ram_tmp_path

from gitsync.cli import EXIT_DRIFT, EXIT_HELD, EXIT_REFUSED
from gitsync.target_dir import TEMP_PREFIX, TEMP_SUFFIX, DirectoryTarget
from gitsync.testing.repos import RemoteRepo, git

SAMPLE_JOBS = Path(__file__).resolve().parent.parent / "sample-repo" / "jobs"
BROKEN = '[job.hello-world]\njob_type = "base"\nname = "hello-world"\ncommand = "/bin/echo\n'


@dataclass
class Farm:
    """One job directory synced from one remote, driven through the CLI."""

    remote: RemoteRepo
    target: Path
    state: Path
    capsys: pytest.CaptureFixture[str]
    root: Path
    config: Path | None = None
    path: str = "jobs"

    def args(self, command: str, *extra: str) -> list[str]:
        args = [command, "--repo", self.remote.url, "--path", self.path, "--target", str(self.target),
                "--state-dir", str(self.state)]
        if self.config is not None:
            args += ["--config", str(self.config)]
        return args + list(extra)

    def sync(self, *extra: str) -> Ran:
        return gitsync(self.capsys, *self.args("sync", "--once", *extra))

    def plan(self, *extra: str) -> Ran:
        return gitsync(self.capsys, *self.args("plan", *extra))

    def status(self) -> dict[str, Any]:
        ran = gitsync(self.capsys, *self.args("status", "--format", "json"))
        return dict(json.loads(ran.out))

    def status_text(self) -> Ran:
        return gitsync(self.capsys, *self.args("status"))

    def history(self) -> list[str]:
        return gitsync(self.capsys, *self.args("history")).out.splitlines()

    def configure(self, text: str) -> None:
        self.config = self.root / "gitsync.toml"
        self.config.write_text(text, encoding="utf-8")

    def head_definitions(self) -> dict[str, bytes]:
        """What the target must hold for the remote's head: every .kit under the path, flattened."""
        ref = f"refs/heads/{self.remote.branch}"
        listing = git("ls-tree", "-r", "--name-only", ref, "--", self.path, cwd=self.remote.bare).splitlines()
        return {Path(p).name: subprocess.run(["git", "cat-file", "blob", f"{ref}:{p}"], cwd=self.remote.bare,
                                             check=True, capture_output=True).stdout
                for p in listing if p.endswith(".kit")}

    def contents(self) -> dict[str, bytes]:
        return {name: (self.target / name).read_bytes() for name in kit_files(self.target)}


@pytest.fixture
def farm(sample_remote: RemoteRepo, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Farm:
    return Farm(sample_remote, tmp_path / "job-definitions", tmp_path / "state", capsys, tmp_path)


@pytest.fixture
def synced(farm: Farm) -> Farm:
    """The sample definitions, applied once."""
    assert farm.sync().code == 0
    return farm


def sample_bytes(name: str) -> bytes:
    return next(SAMPLE_JOBS.rglob(name)).read_bytes()


def untouched(before: dict[str, Any], after: dict[str, Any], names: set[str]) -> None:
    for name in names:
        assert after[name] == before[name], f"{name} was rewritten"


# -- applying commits ---------------------------------------------------------------------------


def test_first_sync_writes_exactly_the_sample_definitions_flattened(farm: Farm) -> None:
    ran = farm.sync()

    assert ran.code == 0, ran.err
    assert kit_files(farm.target) == list(SAMPLE_TARGETS)
    # no temp files; the one folder is usd-render.kit's ${job}/exts companion folder
    assert sorted(p.name for p in farm.target.iterdir()) == sorted([*SAMPLE_TARGETS, "exts"])
    for name in SAMPLE_TARGETS:
        assert (farm.target / name).read_bytes() == sample_bytes(name)
    assert farm.contents() == farm.head_definitions()


def test_a_second_sync_of_the_same_commit_rewrites_nothing(synced: Farm) -> None:
    before = snapshot(synced.target)

    assert synced.sync().code == 0

    assert snapshot(synced.target) == before


def test_adding_a_file_writes_only_that_file(synced: Farm) -> None:
    before = snapshot(synced.target)
    synced.remote.commit({"jobs/render/thumbnail.kit": kit("thumbnail")})

    assert synced.sync().code == 0

    after = snapshot(synced.target)
    assert set(after) == set(before) | {"thumbnail.kit"}
    assert after["thumbnail.kit"].data == kit("thumbnail").encode()
    untouched(before, after, set(before))


def test_modifying_a_file_rewrites_only_that_file(synced: Farm) -> None:
    before = snapshot(synced.target)
    changed = kit("hello-world", args=("Hello again",))
    synced.remote.commit({"jobs/hello-world.kit": changed})

    assert synced.sync().code == 0

    after = snapshot(synced.target)
    assert after["hello-world.kit"].data == changed.encode()
    untouched(before, after, set(before) - {"hello-world.kit"})


def test_deleting_a_file_removes_only_that_file(synced: Farm) -> None:
    before = snapshot(synced.target)
    synced.remote.commit({"jobs/render/render-k8s.kit": None})

    assert synced.sync().code == 0

    after = snapshot(synced.target)
    assert set(after) == set(before) - {"render-k8s.kit"}
    untouched(before, after, set(after))


def test_renaming_a_file_replaces_it_under_the_new_name(synced: Farm) -> None:
    before = snapshot(synced.target)
    git("mv", "jobs/hello-world.kit", "jobs/hello.kit", cwd=synced.remote.work)
    synced.remote.commit({}, "rename hello-world.kit")

    assert synced.sync().code == 0

    after = snapshot(synced.target)
    assert set(after) == set(before) - {"hello-world.kit"} | {"hello.kit"}
    assert after["hello.kit"].data == sample_bytes("hello-world.kit")
    untouched(before, after, set(before) - {"hello-world.kit"})


def test_moving_a_file_to_another_folder_rewrites_nothing(synced: Farm) -> None:
    before = snapshot(synced.target)
    git("mv", "jobs/hello-world.kit", "jobs/ops/hello-world.kit", cwd=synced.remote.work)
    synced.remote.commit({}, "move hello-world into ops/")

    assert synced.sync().code == 0

    assert snapshot(synced.target) == before
    assert synced.status()["applied_commit"] == synced.remote.head()


# -- invalid commits --------------------------------------------------------------------------------


def test_an_invalid_commit_is_kept_out_until_the_next_commit_fixes_it(synced: Farm) -> None:
    before = snapshot(synced.target)
    good = synced.status()["applied_commit"]
    bad = synced.remote.commit({"jobs/hello-world.kit": BROKEN, "jobs/extra.kit": kit("extra")})

    ran = synced.sync()

    assert ran.code == EXIT_REFUSED
    last = ran.err.splitlines()[-1]
    assert last.startswith(f"gitsync: error: commit {bad[:12]} not applied: 1 error(s) in 1 file(s); "
                           f"{good[:12]} stays in place. First: jobs/hello-world.kit:4:")
    assert snapshot(synced.target) == before
    status = synced.status()
    assert (status["applied_commit"], status["head_commit"], status["last_result"]) == (good, bad, "invalid")
    assert [(p["path"], p["line"], p["severity"]) for p in status["problems"]] == [
        ("jobs/hello-world.kit", 4, "error")]
    text = synced.status_text()
    assert text.code == 1
    assert "error        jobs/hello-world.kit:4: invalid TOML" in text.out
    assert synced.status()["consecutive_failures"] == 1

    fixed = kit("hello-world", args=("fixed",))
    head = synced.remote.commit({"jobs/hello-world.kit": fixed})
    assert synced.sync().code == 0

    assert (synced.target / "hello-world.kit").read_text() == fixed
    assert (synced.target / "extra.kit").read_text() == kit("extra")
    status = synced.status()
    assert (status["applied_commit"], status["last_result"], status["problems"]) == (head, "synced", [])
    assert status["consecutive_failures"] == 0


def test_on_invalid_skip_applies_the_valid_files_and_keeps_the_last_good_version(synced: Farm) -> None:
    synced.configure('[sync]\non_invalid = "skip"\n')
    before = snapshot(synced.target)
    head = synced.remote.commit({"jobs/hello-world.kit": BROKEN, "jobs/extra.kit": kit("extra"),
                                 "jobs/ops/gpu-checks.kit": kit("check-gpu")})

    ran = synced.sync()

    assert ran.code == EXIT_HELD
    assert ran.err.splitlines()[-1] == (f"gitsync: error: applied {head[:12]} except 1 file(s) left as they are: "
                                        "hello-world.kit (held)")
    after = snapshot(synced.target)
    assert after["hello-world.kit"] == before["hello-world.kit"]
    assert after["extra.kit"].data == kit("extra").encode()
    assert after["gpu-checks.kit"].data == kit("check-gpu").encode()
    status = synced.status()
    assert (status["applied_commit"], status["last_result"]) == (head, "partial")
    assert status["findings"] == [{"kind": "held", "target": "hello-world.kit",
                                   "detail": "jobs/hello-world.kit is invalid; the last good version stays"}]

    fixed = kit("hello-world", args=("fixed",))
    synced.remote.commit({"jobs/hello-world.kit": fixed})
    assert synced.sync().code == 0
    assert (synced.target / "hello-world.kit").read_text() == fixed


def test_on_invalid_skip_reports_a_new_invalid_file_as_held(synced: Farm) -> None:
    synced.configure('[sync]\non_invalid = "skip"\n')
    synced.remote.commit({"jobs/extra.kit": BROKEN.replace("hello-world", "extra")})

    ran = synced.sync()

    assert ran.code == EXIT_HELD
    assert ran.err.splitlines()[-1].endswith("except 1 file(s) left as they are: extra.kit (held)")
    assert "extra.kit" not in kit_files(synced.target)
    status = synced.status()
    assert status["last_result"] == "partial"
    assert [(f["kind"], f["target"]) for f in status["findings"]] == [("held", "extra.kit")]


def test_on_invalid_skip_never_puts_two_files_with_one_job_name_in_the_target(farm: Farm) -> None:
    farm.configure('[sync]\non_invalid = "skip"\n')
    farm.remote.commit({"jobs/a.kit": kit("render"), "jobs/c.kit": kit("c"), "jobs/d.kit": kit("d")})
    assert farm.sync().code == 0
    farm.remote.commit({"jobs/b.kit": kit("render")})  # clashes with a.kit: must be held
    farm.sync()
    farm.sync()
    farm.remote.commit({"jobs/a.kit": kit("render", args=("changed",))})

    farm.sync()

    defining = [n for n in kit_files(farm.target) if "[job.render]" in (farm.target / n).read_text()]
    assert defining == ["a.kit"]
    assert (farm.target / "a.kit").read_text() == kit("render")  # the version already serving jobs


def test_a_symlinked_definition_in_git_is_kept_out(synced: Farm) -> None:
    before = snapshot(synced.target)
    link = synced.remote.work / "jobs" / "alias.kit"
    link.symlink_to("hello-world.kit")
    git("add", "jobs/alias.kit", cwd=synced.remote.work)
    synced.remote.commit({}, "add a link")

    ran = synced.sync()

    assert ran.code == EXIT_REFUSED
    assert "jobs/alias.kit:1:1: error: definition file is a symbolic link" in ran.err
    assert snapshot(synced.target) == before


def test_turning_on_strict_mode_checks_the_files_already_applied(farm: Farm) -> None:
    farm.remote.commit({"jobs/hello.kit": '[job.hello-omniverse]\njob_type = "base"\n'
                                          'name = "simple-hello-omniverse-job"\ncommand = "/bin/echo"\n'})
    assert farm.sync().code == 0  # name != key is only a warning

    ran = farm.sync("--strict")

    assert ran.code == EXIT_REFUSED
    assert [p["severity"] for p in farm.status()["problems"]] == ["error"]


def test_the_ci_gate_and_the_sync_agree_on_a_definition_in_a_hidden_folder(remote: RemoteRepo, tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    remote.commit({"jobs/good.kit": kit("good"), "jobs/.drafts/half-done.kit": '[job.half-done]\njob_type = "base"\n'})
    farm = Farm(remote, tmp_path / "defs", tmp_path / "state", capsys, tmp_path)

    gate = gitsync(capsys, "validate", str(remote.work / "jobs"))
    synced = farm.sync()

    assert (gate.code, synced.code) in ((0, 0), (1, 1)), (gate.out, synced.err)


# -- the remote changing under us ---------------------------------------------------------------


def test_a_force_push_syncs_to_the_rewritten_head(synced: Farm, caplog: pytest.LogCaptureFixture) -> None:
    synced.remote.commit({"jobs/doomed.kit": kit("doomed")})
    assert synced.sync().code == 0
    assert "doomed.kit" in kit_files(synced.target)
    old = synced.status()["applied_commit"]
    git("reset", "--quiet", "--hard", "HEAD~1", cwd=synced.remote.work)
    synced.remote.commit({"jobs/survivor.kit": kit("survivor")}, push=False)
    synced.remote.push(force=True)

    assert synced.sync().code == 0

    assert synced.contents() == synced.head_definitions()
    assert "doomed.kit" not in kit_files(synced.target) and "survivor.kit" in kit_files(synced.target)
    assert synced.status()["applied_commit"] == synced.remote.remote_head()
    assert f"{old[:12]} is no longer in its history" in caplog.text


def test_a_deleted_branch_is_a_clear_error_and_the_target_is_untouched(synced: Farm) -> None:
    before = snapshot(synced.target)
    git("push", "--quiet", "origin", "HEAD:refs/heads/release", cwd=synced.remote.work)
    git("symbolic-ref", "HEAD", "refs/heads/release", cwd=synced.remote.bare)
    git("update-ref", "-d", "refs/heads/main", cwd=synced.remote.bare)

    ran = synced.sync()

    assert ran.code == 1
    assert ran.err.splitlines() == [
        f"gitsync: error: branch 'main' does not exist in {synced.remote.url} (branches: release); "
        "set repo.branch to one of them"]
    assert snapshot(synced.target) == before
    status = synced.status()
    assert status["last_result"] == "error" and "branch 'main' does not exist" in status["last_message"]
    assert status["owned_files"] == len(SAMPLE_TARGETS)


def test_an_empty_repository_is_a_clear_error(remote: RemoteRepo, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    farm = Farm(remote, tmp_path / "defs", tmp_path / "state", capsys, tmp_path)

    ran = farm.sync()

    assert ran.code == 1
    assert ran.err.splitlines() == [f"gitsync: error: repository {remote.url} is empty: push a first commit to "
                                    "branch 'main'"]
    assert kit_files(farm.target) == []


def test_a_wrong_path_is_a_clear_error(farm: Farm) -> None:
    farm.path = "definitions"

    ran = farm.sync()

    assert ran.code == 1
    head = farm.remote.head()
    assert ran.err.splitlines() == [f"gitsync: error: repo.path 'definitions' does not exist in commit {head[:12]}; "
                                    "set repo.path to the folder that holds the .kit files"]
    assert not farm.target.exists() or kit_files(farm.target) == []


def test_narrowing_the_path_leaves_only_that_folders_definitions(synced: Farm) -> None:
    synced.path = "jobs/render"

    refused = synced.sync()
    assert refused.code == EXIT_REFUSED and "would remove 4 of 7 definition files" in refused.err
    assert kit_files(synced.target) == list(SAMPLE_TARGETS)

    assert synced.sync("--allow-mass-delete").code == 0

    assert kit_files(synced.target) == ["create-render.kit", "render-k8s.kit", "usd-render.kit"]
    assert synced.contents() == synced.head_definitions()
    assert synced.sync().code == 0 and synced.status()["last_result"] == "noop"


# -- files gitsync does not own -----------------------------------------------------------------


def test_foreign_files_are_never_touched(farm: Farm) -> None:
    farm.target.mkdir()
    (farm.target / "local-only.kit").write_text(kit("local-only"))
    (farm.target / "README.txt").write_text("hand-made notes")
    (farm.target / "hello-world.kit.bak").write_text("an editor backup")
    foreign = {"local-only.kit", "README.txt", "hello-world.kit.bak"}
    before = snapshot(farm.target)

    assert farm.sync().code == 0
    farm.remote.commit({"jobs": None}, "remove every definition")
    assert farm.sync().code == EXIT_REFUSED  # refused: mass deletion
    assert farm.sync("--allow-mass-delete").code == 0

    after = snapshot(farm.target)
    assert set(after) == foreign
    untouched(before, after, foreign)


def test_a_foreign_file_defining_a_repo_job_name_holds_the_repo_file(farm: Farm) -> None:
    farm.target.mkdir()
    manual = kit("hello-world", args=("hand-written",))
    (farm.target / "manual.kit").write_text(manual)

    ran = farm.sync()

    assert ran.code == EXIT_HELD
    assert ran.err.splitlines()[-1].endswith("except 1 file(s) left as they are: hello-world.kit (held)")
    assert kit_files(farm.target) == sorted({*SAMPLE_TARGETS, "manual.kit"} - {"hello-world.kit"})
    assert (farm.target / "manual.kit").read_text() == manual
    [finding] = farm.status()["findings"]
    assert finding["kind"] == "held" and finding["target"] == "hello-world.kit"
    assert "job 'hello-world' is already defined by manual.kit, which gitsync does not own" in finding["detail"]

    (farm.target / "manual.kit").unlink()
    assert farm.sync().code == 0
    assert farm.contents() == farm.head_definitions()


def test_a_foreign_file_with_a_repo_file_name_is_not_overwritten(farm: Farm, caplog: pytest.LogCaptureFixture) -> None:
    farm.target.mkdir()
    mine = kit("hello-world", args=("someone else's",))
    (farm.target / "hello-world.kit").write_text(mine)

    farm.sync()

    assert (farm.target / "hello-world.kit").read_text() == mine
    assert kit_files(farm.target) == list(SAMPLE_TARGETS)
    [finding] = farm.status()["findings"]
    assert finding["kind"] == "foreign" and finding["target"] == "hello-world.kit"
    assert "was not written by gitsync" in finding["detail"]
    assert "hello-world.kit exists but was not written by gitsync" in caplog.text

    (farm.target / "hello-world.kit").unlink()
    assert farm.sync().code == 0
    assert farm.contents() == farm.head_definitions()


def test_a_repo_file_kept_out_by_a_foreign_file_of_the_same_name_is_not_reported_as_synced(farm: Farm) -> None:
    farm.target.mkdir()
    (farm.target / "hello-world.kit").write_text(kit("hello-world", args=("someone else's",)))

    ran = farm.sync()

    assert farm.status()["last_result"] == "partial"
    assert ran.code == EXIT_HELD


def test_a_hand_edited_managed_file_is_reported_left_alone_and_restored_with_force(
    synced: Farm, caplog: pytest.LogCaptureFixture
) -> None:
    edited = sample_bytes("gpu-checks.kit") + b"# tuned on the box\n"
    (synced.target / "gpu-checks.kit").write_bytes(edited)

    caplog.clear()
    assert synced.sync().code == EXIT_DRIFT

    assert (synced.target / "gpu-checks.kit").read_bytes() == edited
    assert "drift: gpu-checks.kit was changed in the target since gitsync wrote it" in caplog.text
    [finding] = synced.status()["findings"]
    assert (finding["kind"], finding["target"]) == ("drift", "gpu-checks.kit")
    assert "drift        gpu-checks.kit was changed in the target" in synced.status_text().out
    assert synced.plan().code == 0  # nothing would be written without --force

    assert synced.sync("--force").code == 0

    assert (synced.target / "gpu-checks.kit").read_bytes() == sample_bytes("gpu-checks.kit")
    assert synced.status()["findings"] == []


def test_a_managed_file_deleted_by_hand_is_reported(synced: Farm, caplog: pytest.LogCaptureFixture) -> None:
    (synced.target / "hello-world.kit").unlink()

    caplog.clear()
    assert synced.sync().code == EXIT_DRIFT

    assert "hello-world.kit" not in kit_files(synced.target)
    assert "drift: hello-world.kit was deleted in the target since gitsync wrote it" in caplog.text
    assert [f["kind"] for f in synced.status()["findings"]] == ["drift"]

    assert synced.sync("--force").code == 0
    assert synced.contents() == synced.head_definitions()


def test_a_job_directory_removed_by_hand_is_an_error_not_a_noop(synced: Farm) -> None:
    shutil.rmtree(synced.target)

    ran = synced.sync()

    assert ran.code == 1
    assert ran.err.splitlines()[-1] == (
        f"gitsync: error: the job directory {synced.target} is gone (deleted or unmounted?); nothing was "
        "written: restore or mount it, or run with --force to recreate it with git's definitions")
    assert synced.status()["last_result"] == "error"
    assert not synced.target.exists()

    assert synced.sync("--force").code == 0
    assert synced.contents() == synced.head_definitions()


def test_a_definitions_folder_without_kit_files_yet_syncs_nothing(remote: RemoteRepo, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    remote.commit({"jobs/README.md": "definitions will go here"})
    farm = Farm(remote, tmp_path / "defs", tmp_path / "state", capsys, tmp_path)

    ran = farm.sync()

    assert ran.code == 0, ran.err
    assert kit_files(farm.target) == []


def test_a_target_that_is_not_a_directory_is_a_clear_error(farm: Farm) -> None:
    farm.target.write_text("not a directory")

    ran = farm.sync()

    assert ran.code == 1
    assert ran.err.splitlines() == [f"gitsync: error: cannot update the job directory ({farm.target}): File exists"]
    assert farm.status()["last_result"] == "error"
    assert farm.target.read_text() == "not a directory"


# -- guards -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("removed", "refusal"), [
    (list(SAMPLE_TARGETS), "repo.path 'jobs' no longer exists in commit {head} (moved or deleted in git? if "
                           "moved, set repo.path to its new folder), so this commit would remove every definition "
                           "(7 files); refusing"),
    (["hello-world.kit", "gpu-checks.kit", "asset-validate.kit", "render-k8s.kit"],
     "this commit would remove 4 of 7 definition files (more than 50%); refusing"),
], ids=["every file", "more than half"])
def test_a_mass_deletion_is_refused_unless_allowed(synced: Farm, removed: list[str], refusal: str) -> None:
    before = snapshot(synced.target)
    paths = {str(next(SAMPLE_JOBS.rglob(n)).relative_to(SAMPLE_JOBS.parent)): None for n in removed}
    if len(removed) == len(SAMPLE_TARGETS):
        paths["jobs/render/exts"] = None  # with usd-render.kit's companion folder: jobs/ is gone
    refusal = refusal.format(head=synced.remote.commit(paths, "clean up")[:12])

    ran = synced.sync()

    assert ran.code == EXIT_REFUSED
    assert ran.err.splitlines()[-1].startswith(f"gitsync: error: {refusal}")
    assert "--allow-mass-delete" in ran.err
    assert snapshot(synced.target) == before
    assert synced.status()["last_result"] == "refused"
    planned = synced.plan()
    assert planned.code == EXIT_REFUSED and planned.out.splitlines()[-1].startswith(f"refused: {refusal}")

    assert synced.sync("--allow-mass-delete").code == 0
    assert kit_files(synced.target) == sorted(set(SAMPLE_TARGETS) - set(removed))


def test_deleting_less_than_half_of_the_files_needs_no_permission(synced: Farm) -> None:
    synced.remote.commit({"jobs/hello-world.kit": None, "jobs/ops/gpu-checks.kit": None,
                          "jobs/ops/asset-validate.kit": None})

    assert synced.sync().code == 0
    assert len(kit_files(synced.target)) == 4


class PowerCut(BaseException):
    """The process dies here: nothing catches it, nothing after it runs."""


@pytest.mark.parametrize("where", ["write", "delete"])
def test_a_crash_during_apply_is_completed_by_the_next_sync(synced: Farm, monkeypatch: pytest.MonkeyPatch,
                                                            where: str) -> None:
    head = synced.remote.commit({
        "jobs/hello-world.kit": kit("hello-world", args=("v2",)), "jobs/ops/gpu-checks.kit": kit("check-gpu"),
        "jobs/new-one.kit": kit("new-one"), "jobs/new-two.kit": kit("new-two"),
        "jobs/render/render-k8s.kit": None, "jobs/windows/win-kit-batch.kit": None})
    real_write, real_delete = DirectoryTarget.write_many, DirectoryTarget.delete

    def write_some(self: DirectoryTarget, files: Any, expected: Any, **options: Any) -> dict[str, str]:
        files = list(files)
        real_write(self, files[:2], expected, **options)  # two files replaced, then the power goes
        (self.directory / f"{TEMP_PREFIX}{files[2][0]}{TEMP_SUFFIX}").write_bytes(files[2][1][:10])
        raise PowerCut

    def delete_some(self: DirectoryTarget, names: Any, expected: Any) -> None:
        real_delete(self, list(names)[:1], expected)
        raise PowerCut

    with monkeypatch.context() as patched, pytest.raises(PowerCut):
        if where == "write":
            patched.setattr(DirectoryTarget, "write_many", write_some)
        else:
            patched.setattr(DirectoryTarget, "delete", delete_some)
        synced.sync()
    assert synced.status()["interrupted_apply"] == head
    assert "interrupted  an apply of" in synced.status_text().out

    ran = synced.sync()

    assert ran.code == 0, ran.err
    assert sorted(p.name for p in synced.target.iterdir() if p.is_file()) == sorted(synced.head_definitions())
    assert synced.contents() == synced.head_definitions()
    status = synced.status()
    assert (status["applied_commit"], status["interrupted_apply"], status["findings"]) == (head, None, [])
    assert status["owned_files"] == len(synced.head_definitions())
    assert synced.sync().code == 0 and synced.status()["last_result"] == "noop"


def test_a_crash_then_a_revert_before_the_restart_leaves_only_the_new_heads_definitions(
    synced: Farm, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced.remote.commit({"jobs/hello-world.kit": kit("hello-world", args=("v2",)), "jobs/new-one.kit": kit("new-one")})
    real_write = DirectoryTarget.write_many

    def write_then_die(self: DirectoryTarget, files: Any, expected: Any, **options: Any) -> dict[str, str]:
        real_write(self, files, expected, **options)
        raise PowerCut

    with monkeypatch.context() as patched, pytest.raises(PowerCut):
        patched.setattr(DirectoryTarget, "write_many", write_then_die)
        synced.sync()
    git("revert", "--no-edit", "HEAD", cwd=synced.remote.work)
    synced.remote.push()

    assert synced.sync().code == 0

    assert synced.contents() == synced.head_definitions()


# -- plan, status, history ----------------------------------------------------------------------


def test_plan_lists_the_pending_writes_and_deletes_and_changes_nothing(synced: Farm) -> None:
    applied = synced.status()["applied_commit"]
    synced.remote.commit({"jobs/hello-world.kit": kit("hello-world", args=("v2",)),
                          "jobs/render/thumbnail.kit": kit("thumbnail"), "jobs/ops/gpu-checks.kit": None})
    before = snapshot(synced.target)

    ran = synced.plan()

    assert ran.code == 4
    lines = [line.split(None, 2) for line in ran.out.splitlines()[1:]]
    assert lines == [
        ["delete", "gpu-checks.kit", "removed from git (jobs/ops/gpu-checks.kit)"],
        ["write", "hello-world.kit", "changed in git (jobs/hello-world.kit)"],
        ["write", "thumbnail.kit", "new in git (jobs/render/thumbnail.kit)"],
    ]
    assert ran.out.splitlines()[0] == (f"commit {applied[:12]} -> {synced.remote.head()[:12]}: "
                                       "3 definition file(s) changed in git")
    assert snapshot(synced.target) == before
    assert synced.status()["applied_commit"] == applied

    assert synced.sync().code == 0
    in_sync = synced.plan()
    assert in_sync.code == 0
    assert in_sync.out.splitlines()[-1] == "no changes to the target"


def test_plan_before_the_first_sync_lists_every_file(farm: Farm) -> None:
    ran = farm.plan()

    assert ran.code == 4
    assert ran.out.splitlines()[0] == (f"commit nothing applied -> {farm.remote.head()[:12]}: "
                                       "7 definition file(s) changed in git")
    assert [line.split()[:2] for line in ran.out.splitlines()[1:]] == [
        ["write", n] for n in sorted([*SAMPLE_TARGETS, *SAMPLE_COMPANION_FILES])]
    assert kit_files(farm.target) == []


def test_plan_of_an_invalid_commit_says_it_would_be_refused(synced: Farm) -> None:
    synced.remote.commit({"jobs/hello-world.kit": BROKEN})

    ran = synced.plan()

    assert ran.code == EXIT_REFUSED
    assert "jobs/hello-world.kit:4:" in ran.out
    assert ran.out.splitlines()[-1] == "refused: 1 invalid file(s); nothing would be applied (sync.on_invalid = refuse)"


def test_status_before_any_sync_says_there_is_no_state_yet(farm: Farm) -> None:
    ran = farm.status_text()

    assert ran.code == 1
    assert ran.err.startswith(f"gitsync: error: no gitsync state in {farm.state}")
    assert not (farm.state / "state.sqlite3").exists()


def test_status_json_has_every_field(farm: Farm) -> None:

    assert farm.sync().code == 0
    status = farm.status()

    assert set(status) >= {"repository", "branch", "path", "target", "applied_commit", "applied_summary",
                           "applied_at", "head_commit", "last_attempt_at", "last_success_at", "last_result",
                           "last_message", "consecutive_failures", "interrupted_apply", "owned_files",
                           "definitions", "problems", "findings"}
    head = farm.remote.head()
    assert status["repository"] == farm.remote.url
    assert (status["branch"], status["path"], status["target"]) == ("main", "jobs", str(farm.target))
    assert (status["applied_commit"], status["head_commit"]) == (head, head)
    assert status["applied_summary"] == "Import job definitions (Test Author)"
    assert (status["last_result"], status["consecutive_failures"], status["interrupted_apply"]) == ("synced", 0, None)
    assert (status["owned_files"], status["definitions"]) == (7, 8)
    assert (status["problems"], status["findings"]) == ([], [])
    assert status["applied_at"] == status["last_success_at"] == status["last_attempt_at"]


def test_history_lists_each_sync_newest_first(synced: Farm) -> None:
    first = synced.remote.head()
    synced.sync()  # noop: not worth a history line
    second = synced.remote.commit({"jobs/hello-world.kit": None})
    synced.sync()
    third = synced.remote.commit({"jobs/hello-world.kit": BROKEN})
    synced.sync()

    rows = [line.split()[2:6] for line in synced.history()]

    assert rows == [
        ["invalid", f"{second[:12]}..{third[:12]}", "+0", "-0"],
        ["synced", f"{first[:12]}..{second[:12]}", "+0", "-1"],
        ["synced", f"empty..{first[:12]}", f"+{len(SAMPLE_TARGETS) + len(SAMPLE_COMPANION_FILES)}", "-0"],
    ]


def test_a_refused_commit_is_one_history_row_however_many_cycles_refuse_it(synced: Farm) -> None:
    applied = synced.remote.head()
    bad = synced.remote.commit({"jobs/hello-world.kit": BROKEN})
    for cycle in (1, 2, 3):
        assert synced.sync().code == EXIT_REFUSED
        status = synced.status()  # every cycle still says so where an operator looks
        assert (status["last_result"], status["consecutive_failures"]) == ("invalid", cycle)
        assert status["last_message"].startswith(f"commit {bad[:12]} not applied")

    rows = json.loads(gitsync(synced.capsys, *synced.args("history", "--format", "json")).out)
    assert [(r["result"], r["to_commit"], r.get("repeats", 1)) for r in rows] == [
        ("invalid", bad, 3), ("synced", applied, 1)]
    assert rows[0]["last_seen"] > rows[0]["started"]
    assert "seen 3 times, last " in synced.history()[0]

    worse = synced.remote.commit({"jobs/extra.kit": BROKEN})  # another commit: another verdict, another row
    assert synced.sync().code == EXIT_REFUSED
    fixed = synced.remote.commit({"jobs/hello-world.kit": kit("hello-world"), "jobs/extra.kit": kit("extra")})
    assert synced.sync().code == 0
    rows = json.loads(gitsync(synced.capsys, *synced.args("history", "--format", "json")).out)
    assert [(r["result"], r["to_commit"], r.get("repeats", 1)) for r in rows] == [
        ("synced", fixed, 1), ("invalid", worse, 1), ("invalid", bad, 3), ("synced", applied, 1)]


def test_a_state_dir_refuses_a_different_target(synced: Farm) -> None:
    other = synced.root / "other-definitions"
    original = synced.target
    synced.target = other

    ran = synced.sync()

    assert ran.code == 1
    assert ran.err.splitlines() == [f"gitsync: error: state directory {synced.state} belongs to target "
                                    f"{original}, not {other}; use another --state-dir for this target"]
    assert not other.exists()


def test_a_url_with_credentials_never_shows_the_secret(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    url = "https://user:secret@127.0.0.1:1/x.git"
    base = ["--repo", url, "--target", str(tmp_path / "defs"), "--state-dir", str(tmp_path / "state")]

    ran = gitsync(capsys, "sync", "--once", *base)
    planned = gitsync(capsys, "plan", *base)
    status_json = gitsync(capsys, "status", "--format", "json", *base)
    status_text = gitsync(capsys, "status", *base)
    history = gitsync(capsys, "history", *base)

    assert ran.code == 1 and planned.code == 1
    assert ran.err.startswith("gitsync: error: git fetch failed for https://user:****@127.0.0.1:1/x.git: ")
    assert json.loads(status_json.out)["repository"] == "https://user:****@127.0.0.1:1/x.git"
    assert json.loads(status_json.out)["last_result"] == "error"
    for shown in (ran.out, ran.err, planned.out, planned.err, status_json.out, status_text.out, history.out,
                  caplog.text):
        assert "secret" not in shown
    assert "git fetch failed" in caplog.text
