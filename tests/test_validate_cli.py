"""`gitsync validate`: the CI gate for a definitions repo, run on files written into tmp_path."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pull_helpers import PROBLEM_LINE, Ran, gitsync, kit

SAMPLE_REPO = Path(__file__).resolve().parent.parent / "sample-repo"


@dataclass(frozen=True)
class Link:
    """A symbolic link to another file of the case."""

    to: str


@dataclass(frozen=True)
class Expect:
    """One printed finding: the file it names, its line, severity and text."""

    file: str
    line: int
    severity: str
    says: str


@dataclass(frozen=True)
class Case:
    files: dict[str, str | bytes | Link]
    expect: list[Expect]
    code: int
    flags: list[str] = field(default_factory=list)


BASE = 'job_type = "base"\ncommand = "/bin/true"\n'

CASES = {
    "toml syntax error (unterminated string)": Case(
        {"broken.kit": '[job.broken]\njob_type = "base"\ncommand = "/bin/true\n'},
        [Expect("broken.kit", 3, "error", "invalid TOML")], 1),
    "windows path in a basic string": Case(
        {"win.kit": '[job.win]\njob_type = "base"\ncommand = "C:\\path\\kit.exe"\n'},
        [Expect("win.kit", 3, "error", "invalid TOML: Unescaped '\\' in a string")], 1),
    "array mixing strings and numbers (only Farm's parser rejects it)": Case(
        {"mixed.kit": '[job.mixed]\n' + BASE + 'args = ["--fps", 24]\n'},
        [Expect("mixed.kit", 4, "error", "Farm's TOML parser (toml 0.10) rejects this file")], 1),
    # `env . PATH` is a dotted key to TOML 1.0, but toml 0.10.2 keeps the space: Farm sees a field
    # called "env " and never sets the environment.
    "dotted key with spaces that Farm's parser reads differently": Case(
        {"dotted.kit": '[job.dotted]\n' + BASE + 'env . PATH = "/usr/bin"\n'},
        [Expect("dotted.kit", 4, "error", "Farm's TOML parser reads 'job.dotted.env' differently")], 1),
    "time with fractional seconds that Farm's parser truncates": Case(
        {"frac.kit": '[package]\nbuilt = 07:32:00.5\n\n[job.frac]\n' + BASE},
        [Expect("frac.kit", 2, "error", "Farm's TOML parser reads 'package.built' differently")], 1),
    "definition without command": Case(
        {"nocmd.kit": '# a comment first\n[job.nocmd]\njob_type = "base"\n'},
        [Expect("nocmd.kit", 2, "error", "job.nocmd has no 'command', so Farm skips it")], 1),
    "definition without job_type": Case(
        {"notype.kit": '[job.notype]\ncommand = "/bin/true"\n'},
        [Expect("notype.kit", 1, "error", "job.notype has no 'job_type'")], 1),
    "unknown job_type": Case(
        {"docker.kit": '[job.docker]\njob_type = "docker"\ncommand = "/bin/true"\n'},
        [Expect("docker.kit", 2, "error",
                "job.docker.job_type is 'docker'; Farm's job types are 'base', 'kit', 'kit-service'")], 1),
    "args that are not strings": Case(
        {"numargs.kit": '[job.numargs]\n' + BASE + 'args = [1, 2]\n'},
        [Expect("numargs.kit", 4, "error", "job.numargs.args must be an array of strings")], 1),
    "env value that is not a string (inline table)": Case(
        {"envnum.kit": '[job.envnum]\n' + BASE + 'env = { RETRIES = 3 }\n'},
        [Expect("envnum.kit", 4, "error", "job.envnum.env must be a table of strings")], 1),
    "env value that is not a string (sub-table)": Case(
        {"envtable.kit": '[job.envtable]\n' + BASE + '\n[job.envtable.env]\nRETRIES = 3\n'},
        [Expect("envtable.kit", 5, "error", "job.envtable.env must be a table of strings")], 1),
    "nan, which both parsers read alike, is fine": Case(
        {"nan.kit": '[package]\nthreshold = nan\n\n[job.nan]\n' + BASE}, [], 0),
    "success_return_codes that are not integers": Case(
        {"codes.kit": '[job.codes]\n' + BASE + 'success_return_codes = ["0", "3"]\n'},
        [Expect("codes.kit", 4, "error", "job.codes.success_return_codes must be an array of integers")], 1),
    "job name with an underscore": Case(
        {"under.kit": '\n[job.render_job]\n' + BASE},
        [Expect("under.kit", 2, "error", "job name 'render_job' contains '_'")], 1),
    "job name longer than 32 characters": Case(
        {"long.kit": f"[job.{'x' * 33}]\n" + BASE},
        [Expect("long.kit", 1, "error", "is 33 characters; Farm allows at most 32")], 1),
    "name field different from the table key is a warning": Case(
        {"hello.kit": '[job.hello-omniverse]\njob_type = "base"\nname = "simple-hello-omniverse-job"\n'
                      'command = "/bin/echo"\n'},
        [Expect("hello.kit", 3, "warning", "registers it as 'hello-omniverse', jobs/save as")], 0),
    "name field different from the table key is an error with --strict": Case(
        {"hello.kit": '[job.hello-omniverse]\njob_type = "base"\nname = "simple-hello-omniverse-job"\n'
                      'command = "/bin/echo"\n'},
        [Expect("hello.kit", 3, "error", "registers it as 'hello-omniverse', jobs/save as")], 1,
        ["--strict"]),
    "unknown field is a warning": Case(
        {"typo.kit": '[job.typo]\n' + BASE + 'log_to_stduot = true\n'},
        [Expect("typo.kit", 4, "warning", "job.typo.log_to_stduot is not a field Farm knows")], 0),
    "one job name in two files": Case(
        {"render/a.kit": kit("render"), "ops/b.kit": kit("render")},
        [Expect("ops/b.kit", 1, "error", "job name 'render' is also defined in {tmp}/render/a.kit"),
         Expect("render/a.kit", 1, "error", "job name 'render' is also defined in {tmp}/ops/b.kit")], 1),
    "two files with one base name in different folders": Case(
        {"render/job.kit": kit("one"), "ops/job.kit": kit("two")},
        [Expect("ops/job.kit", 1, "error", "both land as job.kit in the flat job directory"),
         Expect("render/job.kit", 1, "error", "both land as job.kit in the flat job directory")], 1),
    "{kit} placeholder in the extension folders": Case(
        {"exts.kit": '[job.exts]\n' + BASE + '\n[settings.app.exts.folders]\n"++" = ["${job}/exts", "${kit}/exts"]\n'},
        [Expect("exts.kit", 6, "error", "entry '${kit}/exts' breaks str.format (KeyError: 'kit'); "
                                        "Farm's rescan of the whole job directory aborts on it")],
        1),
    "file that is not UTF-8": Case(
        {"latin1.kit": b'[job.latin1]\njob_type = "base"\ncommand = "/opt/caf\xe9/run"\n'},
        [Expect("latin1.kit", 3, "error", "file is not valid UTF-8")], 1),
    "file over --max-file-size": Case(
        {"big.kit": '[job.big]\n' + BASE + "# padding\n" * 20},
        [Expect("big.kit", 1, "error", "over the 100-byte limit")], 1, ["--max-file-size", "100"]),
    "definition file that is a symbolic link": Case(
        {"real.kit": kit("real"), "alias.kit": Link("real.kit")},
        [Expect("alias.kit", 1, "error", "definition file is a symbolic link")], 1),
    "near-miss suffix job.KIT is a warning": Case(
        {"job.KIT": kit("upper")},
        [Expect("job.KIT", 1, "warning", "Farm loads only files ending exactly in '.kit' — rename it to job.kit")],
        0),
}


def write_case(root: Path, files: dict[str, str | bytes | Link]) -> None:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Link):
            path.symlink_to(content.to)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")


def problem_lines(ran: Ran) -> list[dict[str, str]]:
    """Every finding printed; the summary line is the only other line allowed."""
    *findings, summary = ran.out.splitlines()
    assert "file(s)" in summary and "definition(s)" in summary
    parsed = []
    for line in findings:
        match = PROBLEM_LINE.match(line)
        assert match, f"not in the form path:line:col: severity: message — fix: {line!r}"
        parsed.append(match.groupdict())
    return parsed


@pytest.mark.parametrize("case", list(CASES.values()), ids=list(CASES))
def test_validate_reports_each_mistake_where_it_is(
    case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_case(tmp_path, case.files)

    ran = gitsync(capsys, "validate", *case.flags, str(tmp_path))

    assert ran.code == case.code, ran.out
    found = problem_lines(ran)
    assert len(found) == len(case.expect), ran.out
    for got, want in zip(found, case.expect, strict=True):
        assert got["path"] == str(tmp_path / want.file)
        assert got["severity"] == want.severity
        assert want.says.replace("{tmp}", str(tmp_path)) in f"{got['message']} — {got['fix']}"
        assert int(got["line"]) == want.line, got


def test_all_valid_files_give_a_clean_summary_and_exit_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_case(tmp_path, {"a.kit": kit("alpha"), "nested/b.kit": kit("beta") + "\n" + kit("gamma"),
                          "README.md": "not a definition", ".drafts/wip.kit": "not [valid"})

    ran = gitsync(capsys, "validate", str(tmp_path))

    assert ran.code == 0
    assert ran.out == "2 file(s), 3 definition(s): all valid\n"


def test_a_hidden_definition_file_is_an_error_because_gitsync_never_syncs_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_case(tmp_path, {".hidden.kit": kit("hidden")})

    ran = gitsync(capsys, "validate", str(tmp_path))

    assert ran.code == 1
    [found] = problem_lines(ran)
    assert "file name '.hidden.kit' starts with '.'" in found["message"]
    assert "stricter than Farm" in found["message"]


def test_errors_and_warnings_are_counted_in_the_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_case(tmp_path, {**CASES["definition without job_type"].files, **CASES["unknown field is a warning"].files})

    ran = gitsync(capsys, "validate", str(tmp_path))

    assert ran.code == 1
    assert ran.out.splitlines()[-1] == "2 file(s), 2 definition(s): 1 error(s), 1 warning(s)"


def test_json_format_has_every_field_for_ci_annotations(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_case(tmp_path, {**CASES["definition without job_type"].files, **CASES["unknown field is a warning"].files})

    ran = gitsync(capsys, "validate", "--format", "json", str(tmp_path))

    assert ran.code == 1
    problems = json.loads(ran.out)
    assert [(p["path"], p["line"], p["severity"]) for p in problems] == [
        (str(tmp_path / "notype.kit"), 1, "error"), (str(tmp_path / "typo.kit"), 4, "warning")]
    for problem in problems:
        assert set(problem) == {"path", "line", "col", "severity", "message", "fix"}
        assert problem["col"] >= 1 and problem["message"] and problem["fix"]


def test_json_format_with_only_warnings_exits_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_case(tmp_path, CASES["unknown field is a warning"].files)

    ran = gitsync(capsys, "validate", "--format", "json", str(tmp_path))

    assert ran.code == 0
    assert [p["severity"] for p in json.loads(ran.out)] == ["warning"]


def test_files_named_on_the_command_line_are_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_case(tmp_path, {"good.kit": kit("good"), **CASES["unknown job_type"].files})

    assert gitsync(capsys, "validate", str(tmp_path / "good.kit")).code == 0
    assert gitsync(capsys, "validate", str(tmp_path / "good.kit"), str(tmp_path / "docker.kit")).code == 1


def test_a_path_that_does_not_exist_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "no-such-folder"

    ran = gitsync(capsys, "validate", str(missing))

    assert ran.code == 1
    [found] = problem_lines(ran)
    assert (found["path"], found["message"]) == (str(missing), "no such file or folder")


def test_the_sample_repo_is_valid(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(SAMPLE_REPO)

    ran = gitsync(capsys, "validate")

    assert ran.code == 0
    # usd-render.kit names ${job}/exts and the folder is beside it: synced, so nothing to warn about.
    assert problem_lines(ran) == []
    assert ran.out.splitlines()[-1] == "7 file(s), 8 definition(s): all valid"


def test_validate_dev_zero_is_one_error_line_not_a_hang_or_a_crash(capsys: pytest.CaptureFixture[str]) -> None:
    ran = gitsync(capsys, "validate", "/dev/zero")

    assert ran.code == 1
    [found] = problem_lines(ran)
    assert (found["path"], found["message"]) == ("/dev/zero", "not a regular file; Farm loads only regular .kit files")


def test_a_fifo_named_like_a_definition_is_one_error_line_not_a_hang(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    os.mkfifo(tmp_path / "x.kit")  # nobody ever writes to it: opening it for reading would block forever

    ran = gitsync(capsys, "validate", str(tmp_path))

    assert ran.code == 1
    [found] = problem_lines(ran)
    assert found["path"] == str(tmp_path / "x.kit") and "not a regular file" in found["message"]


def test_deeply_nested_toml_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "deep.kit").write_text("a = " + "[" * 100_000 + "]" * 100_000 + "\n")

    ran = gitsync(capsys, "validate", str(tmp_path))

    assert ran.code == 1
    [found] = problem_lines(ran)
    assert "nests arrays or tables too deeply" in found["message"]


def test_a_file_name_too_long_for_gitsyncs_temp_name_is_an_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    name = "x" * 242 + ".kit"  # 246 characters: a valid file name, but not with ".gitsync-tmp-" and ".tmp" around it
    (tmp_path / name).write_text(kit("long-file"))

    ran = gitsync(capsys, "validate", str(tmp_path))

    assert ran.code == 1
    [found] = problem_lines(ran)
    assert "at most 238 bytes fit with gitsync's temp prefix and suffix" in found["message"]


@pytest.mark.parametrize("key", ['"../../evil"', '"/etc/evil"', '"a/b"', "'a\\b'", '"."', '".hidden"'])
def test_a_job_name_that_is_not_a_plain_file_name_is_an_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], key: str) -> None:
    (tmp_path / "evil.kit").write_text(f"[job.{key}]\n" + BASE)

    ran = gitsync(capsys, "validate", str(tmp_path))

    assert ran.code == 1
    assert any("stricter than Farm" in p["message"] for p in problem_lines(ran)), ran.out


EXTS = '\n[settings.app.exts.folders]\n"++" = ["${job}/exts"]\n'


def test_a_job_folder_missing_next_to_the_file_is_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_case(tmp_path, {"render/usd.kit": kit("usd") + EXTS})

    ran = gitsync(capsys, "validate", str(tmp_path))

    assert ran.code == 0
    [found] = problem_lines(ran)
    assert (found["severity"], found["line"]) == ("warning", "8")
    assert "does not exist beside this file; Farm does not check" in found["message"]


def test_a_job_folder_beside_the_file_travels_with_it_so_it_is_no_warning(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_case(tmp_path, {"render/usd.kit": kit("usd") + EXTS, "render/exts/omni.x/extension.toml": "[package]\n"})

    ran = gitsync(capsys, "validate", str(tmp_path))

    assert ran.code == 0
    assert problem_lines(ran) == []  # a companion folder: synced beside the flattened file
