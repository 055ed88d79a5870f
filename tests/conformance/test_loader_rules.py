"""Farm's directory loader, file by file, checked against the stand-in's store AND gitsync's validator.

Follows ``nv/svc/farm/services/jobs/facilities/store/directory.py``: ``DirectoryJobStore._load_configuration``
(parse with toml 0.10, ``job`` table, per-definition ``try``), ``_resolve_extension_paths`` (the
``settings.app.exts.folders.++`` walk and ``str.format(job=...)``, outside any ``try``) and
``_generate_job_definition`` (the fields read from a file). For every case the stand-in must do
what Farm does, and ``gitsync validate`` must say so before the file reaches a job directory.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gitsync.cli import EXIT_REFUSED, main
from gitsync.jobs_service.directory_store import DirectoryJobStore
from gitsync.jobs_service.store import RescanAborted
from gitsync.kit import check_kit
from gitsync.problems import Problem
from gitsync.testing.repos import RemoteRepo

GOOD = '[job.good]\njob_type = "base"\ncommand = "/bin/true"\n'
JOB = '[job.x]\njob_type = "base"\ncommand = "/bin/true"\n'

#: Files on which Farm's _load_configuration raises outside its per-definition try: the rescan aborts.
RESCAN_ABORTS = {
    '"++" a string with a brace': JOB + '[settings.app.exts.folders]\n"++" = "${job}/exts"\n',
    "folders an array, not a table": JOB + '[settings.app.exts]\nfolders = ["${job}/exts"]\n',
    "settings an integer": "settings = 5\n" + JOB,
    "app not a table": JOB + '[settings]\napp = "x"\n',
    "exts not a table": JOB + "[settings.app]\nexts = [1]\n",
    "placeholder {job.x}": JOB + '[settings.app.exts.folders]\n"++" = ["{job.x}/exts"]\n',
    "placeholder {0}": JOB + '[settings.app.exts.folders]\n"++" = ["{0}/exts"]\n',
    "placeholder {root}": JOB + '[settings.app.exts.folders]\n"++" = ["{root}/exts"]\n',
    "unbalanced brace": JOB + '[settings.app.exts.folders]\n"++" = ["${job/exts"]\n',
    '"++" holding a non-string': JOB + '[settings.app.exts.folders]\n"++" = [5]\n',
    '"++" an integer': JOB + '[settings.app.exts.folders]\n"++" = 5\n',
    "job an empty array": "job = []\n",
    "job an empty string": 'job = ""\n',
    "job an integer": "job = 5\n",
}


def store_over(tmp_path: Path, files: dict[str, str]) -> DirectoryJobStore:
    directory = tmp_path / "defs"
    directory.mkdir(exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text, encoding="utf-8")
    return DirectoryJobStore(directory, watch_events=False, rescan_interval=3600)


def validate(text: str, path: str = "bad.kit") -> list[Problem]:
    return list(check_kit(text.encode(), path).problems)


@pytest.mark.parametrize("text", list(RESCAN_ABORTS.values()), ids=list(RESCAN_ABORTS))
def test_a_file_that_aborts_farms_rescan_aborts_the_standins_and_is_a_validator_error(
        tmp_path: Path, text: str) -> None:
    # Farm: DirectoryJobStore._load_configuration / _resolve_extension_paths raise; _load_jobs stops.
    store = store_over(tmp_path, {"a-good.kit": GOOD, "bad.kit": text})

    with pytest.raises(RescanAborted):
        store.rescan()
    assert store.snapshot() == {}  # the whole directory vanished, good.kit included

    errors = [p for p in validate(text) if p.severity == "error"]
    assert errors, "gitsync validate must refuse a file that takes Farm's job directory offline"
    assert all(p.path == "bad.kit" for p in errors)
    assert any("aborts" in p.message for p in errors), [p.message for p in errors]


def test_a_braceless_folder_string_becomes_one_folder_per_character_and_the_validator_refuses_it(
        tmp_path: Path) -> None:
    # Farm: _resolve_extension_paths iterates a string character by character.
    text = JOB + '[settings.app.exts.folders]\n"++" = "ab"\n'
    store = store_over(tmp_path, {"x.kit": text})

    store.rescan()

    assert store.snapshot()["x"]["extension_paths"] == ["a", "b"]
    [problem] = validate(text)
    assert problem.severity == "error" and "one folder per character" in problem.message
    assert "stricter than Farm" in problem.message


def test_an_abort_in_a_later_directory_keeps_the_directories_published_before_it(tmp_path: Path) -> None:
    # Farm: _load_jobs clears, then _load_job_configurations publishes each directory after all its files.
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    (first / "one.kit").write_text(GOOD.replace("good", "one"))
    (second / "a-two.kit").write_text(GOOD.replace("good", "two"))
    (second / "b-bad.kit").write_text(RESCAN_ABORTS["job an integer"])
    store = DirectoryJobStore(tmp_path / "save", [str(first), str(second)], watch_events=False,
                              rescan_interval=3600)

    with pytest.raises(RescanAborted):
        store.rescan()

    assert set(store.snapshot()) == {"one"}  # two.kit loaded before the bad file, but never published


def test_a_job_type_kit_definition_loads_and_is_valid(tmp_path: Path) -> None:
    # Farm: nv/svc/farm/services/jobs/job_types registers "base", "kit" and "kit-service".
    text = '[job.kit-app]\njob_type = "kit"\ncommand = "kit/kit"\n'
    store = store_over(tmp_path, {"kit-app.kit": text})
    store.rescan()

    assert store.snapshot()["kit-app"]["job_type"] == "kit"
    assert validate(text) == []


def test_positional_allowed_args_load_and_are_valid(tmp_path: Path) -> None:
    # Farm: an allowed_args entry whose arg is an integer or a digit string is a positional argument.
    text = JOB + 'allowed_args.input = { arg = 1, default = "in.usd" }\nallowed_args.output = { arg = "2" }\n'
    store = store_over(tmp_path, {"x.kit": text})
    store.rescan()

    assert store.snapshot()["x"]["allowed_args"]["input"]["arg"] == 1
    assert validate(text) == []


@pytest.mark.parametrize("line, field, loaded", [
    ("active = false", "active", True),
    ('extension_paths = ["/elsewhere"]', "extension_paths", []),
    ('unresolved_command_path = "/other"', "unresolved_command_path", "/bin/true"),
])
def test_fields_the_loader_never_reads_are_ignored_and_warned_about(
        tmp_path: Path, line: str, field: str, loaded: object) -> None:
    # Farm: _generate_job_definition reads a fixed list of fields; active, extension_paths and
    # unresolved_command_path in a file are never read.
    text = JOB + line + "\n"
    store = store_over(tmp_path, {"x.kit": text})
    store.rescan()

    assert store.snapshot()["x"][field] == loaded
    [problem] = validate(text)
    assert (problem.severity, problem.line) == ("warning", 4)
    assert field in problem.message


def test_an_empty_job_table_loads_nothing_and_is_a_warning(tmp_path: Path) -> None:
    # Farm: _load_configuration logs "No job configurations found" for an empty [job] table.
    store = store_over(tmp_path, {"empty.kit": "[job]\n"})
    store.rescan()

    assert store.snapshot() == {}
    [problem] = validate("[job]\n")
    assert problem.severity == "warning" and "empty" in problem.message


def test_a_definition_without_command_is_skipped_while_the_others_load(tmp_path: Path) -> None:
    # Farm: _load_configuration wraps each _generate_job_definition in try/except and logs a warning.
    text = GOOD + '[job.broken]\njob_type = "base"\n'
    store = store_over(tmp_path, {"two.kit": text})
    store.rescan()

    assert set(store.snapshot()) == {"good"}
    [problem] = validate(text)
    assert problem.severity == "error" and "so Farm skips it" in problem.message


def test_a_file_farms_parser_rejects_is_skipped_whole_and_is_a_validator_error(tmp_path: Path) -> None:
    # Farm: _safe_load_config catches any toml.load error, logs a warning and returns {}.
    text = GOOD + 'args = ["--fps", 24]\n'  # a mixed array: TOML 1.0 accepts it, toml 0.10 does not
    store = store_over(tmp_path, {"mixed.kit": text, "other.kit": GOOD.replace("good", "other")})
    store.rescan()

    assert set(store.snapshot()) == {"other"}
    [problem] = validate(text)
    assert problem.severity == "error" and "toml 0.10" in problem.message


@pytest.mark.parametrize("text", [
    "a = " + "[" * 5000 + "]" * 5000 + "\n",
    "a = " + "{b = " * 3000 + "1" + "}" * 3000 + "\n",
])
def test_deeply_nested_toml_is_one_error_never_a_crash(text: str) -> None:
    [problem] = validate(text)

    assert problem.severity == "error"
    assert "\n" not in problem.format()


@pytest.mark.parametrize("case", ["settings an integer", "app not a table", "exts not a table", "placeholder {job.x}",
                                  '"++" a string with a brace'])
def test_a_sync_refuses_a_file_that_would_abort_farms_rescan_with_one_line(
        remote: RemoteRepo, tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str) -> None:
    # Before: gitsync itself crashed on some of these (exit 3), or synced them into the job directory.
    remote.commit({"jobs/good.kit": GOOD, "jobs/bad.kit": RESCAN_ABORTS[case]})

    code = main(["sync", "--once", "--repo", remote.url, "--path", "jobs", "--target", str(tmp_path / "target"),
                 "--state-dir", str(tmp_path / "state")])

    assert code == EXIT_REFUSED
    out = capsys.readouterr()
    assert "jobs/bad.kit" in out.out + out.err and "Traceback" not in out.out + out.err
    assert not (tmp_path / "target" / "bad.kit").exists()
