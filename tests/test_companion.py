"""``${job}`` companion folders end to end: a folder a definition names through ``${job}/...`` travels
beside the flattened file, against a real bare remote, the real CLI, the real agent and its watcher.

Farm fills ``{job}`` with the folder holding the .kit file (``DirectoryJobStore._resolve_extension_paths``);
gitsync writes ``jobs/render/render.kit`` as ``<target>/render.kit``, so ``jobs/render/exts`` must land as
``<target>/exts``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pull_helpers import Ran, gitsync, kit
from pull_helpers import isolated as isolated  # fixtures by import: tmpfs tmp_path, cwd + env isolation
from pull_helpers import ram_tmp_path as ram_tmp_path
from pushback_support import Sites, changed_files, commit_count, conflict_branches, git_bytes, message, wait_until
from pushback_support import sites as sites  # fixture by import

from gitsync.cli import EXIT_REFUSED
from gitsync.testing.repos import RemoteRepo

EXTS = '[settings.app.exts.folders]\n"++" = ["${job}/exts"]\n'
RENDER = kit("render", extra=EXTS)
EXT_TOML = '[package]\nversion = "1.0.0"\ntitle = "Render helpers"\n'
EXT_PY = "def run():\n    return 'render'\n"
ICON = bytes(range(256)) * 4  # a binary file: synced byte for byte


def render_repo(remote: RemoteRepo) -> str:
    return remote.commit({
        "jobs/render/render.kit": RENDER,
        "jobs/render/exts/omni.render/config/extension.toml": EXT_TOML,
        "jobs/render/exts/omni.render/omni/render/__init__.py": EXT_PY,
        "jobs/render/exts/omni.render/data/icon.png": ICON,
        "jobs/render/notes/readme.md": "not named by any ${job} entry\n",
        "jobs/hello.kit": kit("hello"),
    }, "render job with its extension folder")


class Cli:
    def __init__(self, remote: RemoteRepo, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.remote, self.target, self.state, self.capsys = remote, root / "target", root / "state", capsys

    def args(self, command: str, *extra: str) -> list[str]:
        return [command, "--repo", self.remote.url, "--path", "jobs", "--target", str(self.target),
                "--state-dir", str(self.state), *extra]

    def sync(self, *extra: str) -> Ran:
        return gitsync(self.capsys, *self.args("sync", "--once", *extra))

    def status(self) -> dict[str, Any]:
        return dict(json.loads(gitsync(self.capsys, *self.args("status", "--format", "json")).out))

    def files(self) -> dict[str, bytes]:
        """Every file under the target, by relative path (gitsync's temp files would show here too)."""
        found = {}
        for folder, _, names in os.walk(self.target):
            for name in names:
                path = Path(folder, name)
                found[path.relative_to(self.target).as_posix()] = path.read_bytes()
        return found


@pytest.fixture
def cli(remote: RemoteRepo, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(remote, tmp_path, capsys)


def test_a_companion_folder_is_synced_beside_the_flattened_definition(cli: Cli, remote: RemoteRepo) -> None:
    render_repo(remote)

    ran = cli.sync()

    assert ran.code == 0, ran.err
    assert cli.files() == {
        "render.kit": RENDER.encode(), "hello.kit": kit("hello").encode(),
        "exts/omni.render/config/extension.toml": EXT_TOML.encode(),
        "exts/omni.render/omni/render/__init__.py": EXT_PY.encode(),
        "exts/omni.render/data/icon.png": ICON,
    }  # not notes/: no definition names it


def test_a_changed_companion_file_is_rewritten_and_a_removed_one_deleted(cli: Cli, remote: RemoteRepo) -> None:
    render_repo(remote)
    assert cli.sync().code == 0
    untouched = os.stat(cli.target / "exts/omni.render/data/icon.png").st_ino

    remote.commit({"jobs/render/exts/omni.render/omni/render/__init__.py": "def run():\n    return 2\n",
                   "jobs/render/exts/omni.render/config/extension.toml": None,
                   "jobs/render/exts/omni.render/omni/render/extra.py": "X = 1\n"}, "edit the extension")
    ran = cli.sync()

    assert ran.code == 0, ran.err
    files = cli.files()
    assert files["exts/omni.render/omni/render/__init__.py"] == b"def run():\n    return 2\n"
    assert files["exts/omni.render/omni/render/extra.py"] == b"X = 1\n"
    assert "exts/omni.render/config/extension.toml" not in files
    assert not (cli.target / "exts/omni.render/config").exists()  # the folder it left empty goes too
    assert os.stat(cli.target / "exts/omni.render/data/icon.png").st_ino == untouched  # only what changed


def test_removing_the_reference_or_the_folder_in_git_removes_it_from_the_target(cli: Cli, remote: RemoteRepo) -> None:
    render_repo(remote)
    assert cli.sync().code == 0
    stranger = cli.target / "exts" / "someone-elses.txt"
    stranger.write_text("not gitsync's\n", encoding="utf-8")

    remote.commit({"jobs/render/render.kit": kit("render")}, "render no longer names its extension folder")
    ran = cli.sync()

    assert ran.code == 0, ran.err
    assert sorted(cli.files()) == ["exts/someone-elses.txt", "hello.kit", "render.kit"]  # only what gitsync owned

    remote.commit({"jobs/render/render.kit": RENDER}, "named again")
    assert cli.sync().code == 0
    assert "exts/omni.render/data/icon.png" in cli.files()
    remote.commit({f"jobs/render/exts/omni.render/{p}": None for p in (
        "config/extension.toml", "omni/render/__init__.py", "data/icon.png")}, "the folder goes from git")
    ran = cli.sync()
    assert ran.code == 0, ran.err
    assert sorted(cli.files()) == ["exts/someone-elses.txt", "hello.kit", "render.kit"]
    assert [(p["path"], p["line"], p["severity"]) for p in cli.status()["problems"]] == [
        ("jobs/render/render.kit", 7, "warning")]  # named but not in git any more


def test_two_companion_folders_landing_on_one_path_are_an_error_naming_both(cli: Cli, remote: RemoteRepo) -> None:
    render_repo(remote)
    assert cli.sync().code == 0
    before = cli.files()

    remote.commit({"jobs/bake/bake.kit": kit("bake", extra=EXTS), "jobs/bake/exts/omni.bake/x.py": "B = 1\n"},
                  "a second exts folder")
    ran = cli.sync()

    assert ran.code == EXIT_REFUSED
    problems = [p for p in cli.status()["problems"] if p["severity"] == "error"]
    assert [(p["path"], p["line"]) for p in problems] == [("jobs/bake/bake.kit", 7)]  # blamed on the new file
    assert "jobs/bake/exts/" in problems[0]["message"] and "jobs/render/exts/" in problems[0]["message"]
    assert "jobs/render/render.kit" in problems[0]["message"]
    assert cli.files() == before  # nothing applied


def test_a_companion_folder_named_like_a_definition_file_is_an_error(cli: Cli, remote: RemoteRepo) -> None:
    remote.commit({"jobs/a/a.kit": kit("a", extra='[settings.app.exts.folders]\n"++" = ["${job}/b.kit"]\n'),
                   "jobs/a/b.kit/x.py": "X = 1\n", "jobs/b/b.kit": kit("b")}, "a folder named b.kit")

    ran = cli.sync()

    assert ran.code == EXIT_REFUSED
    errors = [p for p in cli.status()["problems"] if p["severity"] == "error"]
    assert {p["path"] for p in errors} == {"jobs/a/a.kit", "jobs/b/b.kit"}
    assert all("b.kit/" in p["message"] and "jobs/b/b.kit" in p["message"] for p in errors)


def test_a_companion_folder_missing_from_the_repository_is_a_warning(cli: Cli, remote: RemoteRepo) -> None:
    remote.commit({"jobs/render/render.kit": RENDER}, "names a folder it does not ship (as NVIDIA's samples do)")

    ran = cli.sync()

    assert ran.code == 0, ran.err
    assert sorted(cli.files()) == ["render.kit"]
    (problem,) = cli.status()["problems"]
    assert (problem["path"], problem["line"], problem["severity"]) == ("jobs/render/render.kit", 7, "warning")
    assert "jobs/render/exts" in problem["message"] and "Farm does not check" in problem["message"]


def test_folders_of_one_name_missing_from_the_repository_clash_with_nothing(cli: Cli, remote: RemoteRepo) -> None:
    """Found by the issue-10 benchmark: definitions in twenty folders each naming a ``${job}/exts`` none of them
    ships were refused as a clash, so a repository of NVIDIA-style samples never synced."""
    remote.commit({"jobs/render/render.kit": RENDER, "jobs/bake/bake.kit": kit("bake", extra=EXTS)},
                  "two folders naming an exts folder neither ships")

    ran = cli.sync()

    assert ran.code == 0, ran.err
    assert sorted(cli.files()) == ["bake.kit", "render.kit"]
    problems = cli.status()["problems"]
    assert sorted((p["path"], p["severity"]) for p in problems) == [
        ("jobs/bake/bake.kit", "warning"), ("jobs/render/render.kit", "warning")]
    assert all("is not in the repository" in p["message"] for p in problems)


def test_sync_once_prints_the_warnings_of_the_files_a_commit_changed_not_every_files(
        cli: Cli, remote: RemoteRepo) -> None:
    """A CronJob running every minute printed every open warning of the repository on each run."""
    remote.commit({f"jobs/{g}/{g}.kit": kit(g, extra=EXTS) for g in ("render", "bake", "check")}, "three folders")
    assert cli.sync().err.count("is not in the repository") == 3

    remote.commit({"jobs/bake/bake.kit": kit("bake", args=("again",), extra=EXTS)}, "one file")
    ran = cli.sync()

    assert ran.code == 0, ran.err
    assert [line.split(":")[0] for line in ran.err.splitlines() if "warning" in line] == ["jobs/bake/bake.kit"]
    assert len(cli.status()["problems"]) == 3  # status still lists every file's


def test_a_shipped_folder_and_a_missing_one_of_the_same_name_do_not_clash(cli: Cli, remote: RemoteRepo) -> None:
    render_repo(remote)
    remote.commit({"jobs/bake/bake.kit": kit("bake", extra=EXTS)}, "names an exts folder it does not ship")

    ran = cli.sync()

    assert ran.code == 0, ran.err
    assert "exts/omni.render/config/extension.toml" in cli.files() and "bake.kit" in cli.files()
    (problem,) = cli.status()["problems"]
    assert (problem["path"], problem["severity"]) == ("jobs/bake/bake.kit", "warning")


def test_plan_shows_the_companion_files(cli: Cli, remote: RemoteRepo) -> None:
    render_repo(remote)

    ran = gitsync(cli.capsys, *cli.args("plan", "--format", "json"))

    actions = {a["target"]: a["kind"] for a in json.loads(ran.out)["actions"]}
    assert actions["exts/omni.render/data/icon.png"] == "write"
    assert actions["exts/omni.render/config/extension.toml"] == "write"
    assert not any(t.startswith("notes") for t in actions)


def test_validate_reports_a_companion_clash_and_a_missing_folder_at_file_and_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = tmp_path / "repo"
    for path, text in {"jobs/render/render.kit": RENDER, "jobs/render/exts/a.py": "A = 1\n",
                       "jobs/bake/bake.kit": kit("bake", extra=EXTS), "jobs/bake/exts/b.py": "B = 1\n",
                       "jobs/solo/solo.kit": kit("solo", extra=EXTS.replace("${job}/exts", "${job}/tools"))}.items():
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_text(text, encoding="utf-8")

    ran = gitsync(capsys, "validate", str(repo / "jobs"))

    assert ran.code == 1
    lines = [line for line in ran.out.splitlines() if ": error: " in line or ": warning: " in line]
    bake, render, solo = (str(repo / "jobs" / p) for p in ("bake/bake.kit", "render/render.kit", "solo/solo.kit"))
    assert [line.split(": ", 2)[:2] for line in lines] == [
        [f"{bake}:7:1", "error"], [f"{render}:7:1", "error"], [f"{solo}:7:1", "warning"]]
    assert "both land as exts/" in lines[0] and render in lines[0]
    assert "does not exist beside this file" in lines[2]


def test_validate_finds_no_clash_between_folders_that_do_not_exist(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("render", "bake"):
        (tmp_path / name).mkdir()
        (tmp_path / name / f"{name}.kit").write_text(kit(name, extra=EXTS), encoding="utf-8")

    ran = gitsync(capsys, "validate", str(tmp_path))

    assert ran.code == 0, ran.out
    assert ran.out.count("does not exist beside this file") == 2 and "both land as" not in ran.out


def test_an_apply_killed_half_way_is_recovered_and_the_companion_files_stay_gitsyncs(
        cli: Cli, remote: RemoteRepo) -> None:
    render_repo(remote)
    env = {**os.environ, "GITSYNC_FAULT_POINT": "apply.written:1", "PYTHONPATH": os.pathsep.join(sys.path)}
    killed = subprocess.run([sys.executable, "-m", "gitsync", *cli.args("sync", "--once")], env=env,
                            capture_output=True, timeout=120)
    assert killed.returncode == -9  # SIGKILLed after writing, before recording
    assert "exts/omni.render/data/icon.png" in cli.files()

    ran = cli.sync()

    assert ran.code == 0, ran.err  # recovered: its own files, not drift
    remote.commit({"jobs/render/render.kit": kit("render")}, "drop the folder")
    assert cli.sync().code == 0
    assert sorted(cli.files()) == ["hello.kit", "render.kit"]  # owned, so removed


def test_a_one_file_change_inside_a_companion_folder_lists_only_that_file(
        cli: Cli, remote: RemoteRepo, monkeypatch: pytest.MonkeyPatch) -> None:
    from gitsync.gitrepo import GitMirror

    render_repo(remote)
    assert cli.sync().code == 0
    calls: list[str] = []
    for name in ("list_tree", "entries", "path_exists"):
        original = getattr(GitMirror, name)

        def counted(self: GitMirror, *args: Any, _name: str = name, _original: Any = original) -> Any:
            calls.append(_name)
            return _original(self, *args)

        monkeypatch.setattr(GitMirror, name, counted)
    remote.commit({"jobs/render/exts/omni.render/omni/render/__init__.py": "def run():\n    return 3\n"}, "one file")

    assert cli.sync().code == 0

    assert (cli.target / "exts/omni.render/omni/render/__init__.py").read_bytes() == b"def run():\n    return 3\n"
    assert "list_tree" not in calls  # neither the repository nor the folder is listed
    assert calls.count("entries") == 1


# -- push-back through the real agent and its watcher ----------------------------------------------


def test_a_hand_edit_inside_a_companion_folder_becomes_a_commit_to_its_repo_path(
        sites: Sites, remote: RemoteRepo) -> None:
    render_repo(remote)
    site = sites.make(remote)
    edited = site.file("exts/omni.render/omni/render/__init__.py")
    assert edited.read_bytes() == EXT_PY.encode()
    before = commit_count(remote)

    edited.write_text("def run():\n    return 'edited on the farm'\n", encoding="utf-8")
    (site.directory / "exts/omni.render/omni/render/new-by-hand.py").write_text("N = 1\n", encoding="utf-8")

    wait_until(lambda: commit_count(remote) > before, what="the push-back commit")
    assert changed_files(remote) == ["jobs/render/exts/omni.render/omni/render/__init__.py"]  # not the new file
    assert git_bytes(remote, "jobs/render/exts/omni.render/omni/render/__init__.py") == \
        b"def run():\n    return 'edited on the farm'\n"
    assert "hand edit" in message(remote)

    icon = site.file("exts/omni.render/data/icon.png")
    before = commit_count(remote)
    icon.write_bytes(ICON[::-1])  # binary content is pushed back byte for byte
    wait_until(lambda: commit_count(remote) > before, what="the binary push-back")
    assert git_bytes(remote, "jobs/render/exts/omni.render/data/icon.png") == ICON[::-1]

    before = commit_count(remote)
    icon.unlink()
    wait_until(lambda: commit_count(remote) > before, what="the deletion's push-back")
    assert git_bytes(remote, "jobs/render/exts/omni.render/data/icon.png") is None
    site.cycle()
    assert site.outbox_length() == 0 and not conflict_branches(remote)
    assert (site.directory / "exts/omni.render/omni/render/new-by-hand.py").exists()  # never gitsync's to touch


def test_a_definition_file_named_like_an_existing_companion_folder_is_found_incrementally(
        cli: Cli, remote: RemoteRepo) -> None:
    render_repo(remote)
    assert cli.sync().code == 0

    remote.commit({"jobs/other/exts": "not a folder\n"}, "a plain file named exts: not a definition, no clash")
    assert cli.sync().code == 0
    remote.commit({"jobs/tools/tools.kit": kit("tools", extra=EXTS.replace("${job}/exts", "${job}/hello.kit")),
                   "jobs/tools/hello.kit/x.py": "X = 1\n"}, "a folder named like hello.kit")
    ran = cli.sync()

    assert ran.code == EXIT_REFUSED
    errors = [p for p in cli.status()["problems"] if p["severity"] == "error"]
    assert [(p["path"], p["line"]) for p in errors] == [("jobs/tools/tools.kit", 7)]  # the new file is blamed
    assert "jobs/hello.kit" in errors[0]["message"]


def test_the_watcher_names_a_changed_companion_file_by_its_path_in_the_job_directory(tmp_path: Path) -> None:
    from gitsync.dirty import DirtySet
    from gitsync.watch import DirectoryWatcher

    folder = tmp_path / "exts" / "omni.render"
    folder.mkdir(parents=True)
    dirty = DirtySet(root=tmp_path)
    assert dirty.take() is None
    watcher = DirectoryWatcher(tmp_path, lambda: None, dirty=dirty)
    watcher.start()
    try:
        (folder / "x.py").write_text("X = 1\n", encoding="utf-8")
        (folder / ".x.py.swp").write_text("editor", encoding="utf-8")
        (folder / "inner.kit").write_text(kit("inner"), encoding="utf-8")  # Farm loads no .kit in a folder
        (tmp_path / "a.kit").write_text(kit("a"), encoding="utf-8")
        assert watcher.settle(timeout=30)
        assert dirty.take() == {"exts/omni.render/x.py", "a.kit"}  # one stat each next cycle, not a scan
    finally:
        watcher.stop()


def test_a_companion_file_over_the_size_limit_holds_the_commit_like_a_definition(
        cli: Cli, remote: RemoteRepo, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITSYNC_SYNC_MAX_FILE_SIZE", "2000")
    render_repo(remote)
    assert cli.sync().code == 0
    before = cli.files()

    remote.commit({"jobs/render/exts/omni.render/data/big.bin": b"\0" * 2001}, "a file over the limit")
    ran = cli.sync()

    assert ran.code == EXIT_REFUSED
    (problem,) = cli.status()["problems"]
    assert (problem["path"], problem["severity"]) == ("jobs/render/exts/omni.render/data/big.bin", "error")
    assert "over the 2000-byte limit" in problem["message"]
    assert cli.files() == before

    remote.commit({"jobs/render/exts/omni.render/data/big.bin": b"\0" * 10}, "smaller")
    assert cli.sync().code == 0
    assert cli.files()["exts/omni.render/data/big.bin"] == b"\0" * 10
    assert cli.status()["problems"] == []


def test_a_companion_file_changed_in_git_and_by_hand_keeps_gits_and_saves_the_local_one_on_a_branch(
        sites: Sites, remote: RemoteRepo) -> None:
    render_repo(remote)
    site = sites.make(remote)
    path = "jobs/render/exts/omni.render/omni/render/__init__.py"
    local = site.file("exts/omni.render/omni/render/__init__.py")

    with site.paused():  # both changes happen before gitsync looks again
        remote.commit({path: "def run():\n    return 'git'\n"}, "changed in git")
        before = commit_count(remote)
        local.write_text("def run():\n    return 'farm'\n", encoding="utf-8")

    wait_until(lambda: conflict_branches(remote), what="a conflict branch")
    [branch] = conflict_branches(remote)
    assert git_bytes(remote, path, f"refs/heads/{branch}") == b"def run():\n    return 'farm'\n"
    assert commit_count(remote) == before  # nothing of the local side on main
    wait_until(lambda: local.read_bytes() == b"def run():\n    return 'git'\n", what="git's version in the target")
    assert site.outbox_length() == 0


def test_sync_once_reports_a_hand_edit_inside_a_companion_folder_as_drift(cli: Cli, remote: RemoteRepo) -> None:
    from gitsync.cli import EXIT_DRIFT

    render_repo(remote)
    assert cli.sync().code == 0
    assert cli.sync().code == 0  # a quiet look: the job directory's own entries are unchanged from here on
    edited = cli.target / "exts/omni.render/omni/render/__init__.py"
    edited.write_text("def run():\n    return 'edited'\n", encoding="utf-8")

    ran = cli.sync()

    assert ran.code == EXIT_DRIFT, ran.err
    assert [(f["kind"], f["target"]) for f in cli.status()["findings"]] == [
        ("drift", "exts/omni.render/omni/render/__init__.py")]
    assert edited.read_text(encoding="utf-8") == "def run():\n    return 'edited'\n"  # left alone
    assert cli.sync("--force").code == 0
    assert edited.read_bytes() == EXT_PY.encode()
