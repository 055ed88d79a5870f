"""Settings: defaults < gitsync.toml < GITSYNC_* environment < flags, and mistakes that stop start-up
with a line naming the key, where it came from and what it should be."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from pull_helpers import gitsync, isolate

from gitsync.config import OPTIONS, load_settings, starter_file
from gitsync.errors import ConfigError
from gitsync.state import State


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    isolate(monkeypatch, tmp_path)


def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


@pytest.mark.parametrize(("in_file", "in_env", "in_flag", "expected"), [
    (False, False, False, 30.0),
    (True, False, False, 10.0),
    (True, True, False, 20.0),
    (True, True, True, 40.0),
    (False, True, True, 40.0),
    (True, False, True, 40.0),
    (False, True, False, 20.0),
], ids=["default", "file", "env over file", "flag over all", "flag over env", "flag over file", "env"])
def test_each_layer_overrides_the_one_below(tmp_path: Path, in_file: bool, in_env: bool, in_flag: bool,
                                            expected: float) -> None:
    config = write(tmp_path / "gitsync.toml", "[sync]\ninterval = 10\n") if in_file else None
    environ = {"GITSYNC_SYNC_INTERVAL": "20"} if in_env else {}
    flags = {"sync.interval": 40.0 if in_flag else None}

    settings = load_settings(config, flags, environ)

    assert settings.sync_interval == expected


def test_precedence_through_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "gitsync.toml", '[repo]\nurl = "/srv/from-file.git"\nbranch = "from-file"\npath = "file"\n'
                                     '[target]\ndirectory = "/srv/defs"\n[state]\ndir = "state"\n')
    monkeypatch.setenv("GITSYNC_REPO_BRANCH", "from-env")
    monkeypatch.setenv("GITSYNC_REPO_PATH", "env")

    State(tmp_path / "state").close()  # status reads an existing state database
    ran = gitsync(capsys, "status", "--format", "json", "--path", "flag")

    assert ran.code == 0, ran.err
    report = json.loads(ran.out)
    assert (report["repository"], report["branch"], report["path"], report["target"]) == (
        "/srv/from-file.git", "from-env", "flag", "/srv/defs")


def test_gitsync_config_env_names_the_file(tmp_path: Path) -> None:
    config = write(tmp_path / "elsewhere.toml", '[repo]\nbranch = "release"\n')

    assert load_settings(None, {}, {"GITSYNC_CONFIG": config}).repo_branch == "release"


def test_a_gitsync_toml_in_the_working_directory_is_read(tmp_path: Path) -> None:
    write(tmp_path / "gitsync.toml", '[sync]\non_invalid = "skip"\n')

    assert load_settings(None, {}, {}).sync_on_invalid == "skip"


@pytest.mark.parametrize(("text", "says"), [
    ('[repo]\nurl = "x"\nbrnach = "main"\n', "unknown key 'repo.brnach'; known keys in [repo]: url, branch, path"),
    ('[sink]\ninterval = 5\n', "unknown section [sink]; known sections: [ha], [log], [maintenance], [push], [repo]"),
    ('interval = 5\n', "unknown section [interval]"),
    ('[sync]\ninterval = "fast"\n', "sync.interval must be a number, got 'fast' (str)"),
    ('[repo]\nfetch_depth = 1.5\n', "repo.fetch_depth must be an integer, got 1.5 (float)"),
    ('[repo]\nfetch_depth = true\n', "repo.fetch_depth must be an integer, got True (bool)"),
    ('[sync]\nstrict = "yes"\n', "sync.strict must be true or false, got 'yes' (str)"),
    ('[repo]\nbranch = 5\n', "repo.branch must be a string, got 5 (int)"),
    ('[sync]\non_invalid = "ignore"\n', "sync.on_invalid must be one of refuse, skip, got 'ignore'"),
    ('[sync\ninterval = 5\n', "invalid TOML"),
], ids=["unknown key", "unknown section", "key outside a section", "string for a number", "float for an integer",
        "bool for an integer", "string for a bool", "integer for a string", "not a choice", "broken toml"])
def test_a_mistake_in_the_file_names_the_key_the_file_and_the_expected_type(tmp_path: Path, text: str,
                                                                            says: str) -> None:
    config = write(tmp_path / "settings.toml", text)

    with pytest.raises(ConfigError) as raised:
        load_settings(config, {}, {})

    message = str(raised.value)
    assert message.startswith(f"{config}: ")
    assert says in message


def test_an_integer_is_accepted_for_a_number(tmp_path: Path) -> None:
    config = write(tmp_path / "gitsync.toml", "[sync]\ninterval = 5\nmax_delete_share = 1\n")

    settings = load_settings(config, {}, {})

    assert (settings.sync_interval, settings.sync_max_delete_share) == (5.0, 1.0)
    assert isinstance(settings.sync_interval, float)


@pytest.mark.parametrize(("name", "value", "says"), [
    ("GITSYNC_SYNC_INTERVAL", "soon", "environment variable GITSYNC_SYNC_INTERVAL must be a number, got 'soon'"),
    ("GITSYNC_REPO_FETCH_DEPTH", "1.5", "environment variable GITSYNC_REPO_FETCH_DEPTH must be an integer"),
    ("GITSYNC_SYNC_STRICT", "maybe", "environment variable GITSYNC_SYNC_STRICT must be true or false"),
    ("GITSYNC_SYNC_ON_INVALID", "ignore", "environment variable GITSYNC_SYNC_ON_INVALID must be one of refuse, skip"),
])
def test_a_bad_environment_variable_is_named(name: str, value: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        load_settings(None, {}, {name: value})


@pytest.mark.parametrize(("text", "expected"), [("yes", True), ("ON", True), ("1", True), ("false", False),
                                                ("off", False), ("0", False)])
def test_boolean_environment_variables(text: str, expected: bool) -> None:
    assert load_settings(None, {}, {"GITSYNC_SYNC_STRICT": text}).sync_strict is expected


def test_a_missing_required_setting_names_every_way_to_give_it() -> None:
    settings = load_settings(None, {}, {})

    with pytest.raises(ConfigError) as raised:
        settings.require("repo.url", "target.directory")

    assert str(raised.value) == "repo.url is not set: give it with --repo, GITSYNC_REPO_URL or in gitsync.toml"


def test_sync_without_a_repo_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ran = gitsync(capsys, "sync", "--once", "--target", str(tmp_path / "defs"))

    assert ran.code == 1
    assert ran.err == "gitsync: error: repo.url is not set: give it with --repo, GITSYNC_REPO_URL or in gitsync.toml\n"


def test_gitsync_init_writes_a_file_that_loads(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    defaults = load_settings(None, {}, {})

    ran = gitsync(capsys, "init")

    assert ran.code == 0
    assert ran.out.startswith("wrote gitsync.toml: set repo.url and target.directory")
    assert load_settings(None, {}, {}) == defaults  # read from ./gitsync.toml
    assert load_settings(str(tmp_path / "gitsync.toml"), {}, {}) == defaults
    text = (tmp_path / "gitsync.toml").read_text()
    for option in OPTIONS:
        assert option.env in text and option.key.split(".")[1] in text

    again = gitsync(capsys, "init", str(tmp_path / "gitsync.toml"))
    assert again.code == 1 and "already exists; use --force" in again.err
    assert gitsync(capsys, "init", "--force", str(tmp_path / "gitsync.toml")).code == 0


def test_the_starter_file_with_its_commented_values_uncommented_still_loads(tmp_path: Path) -> None:
    setting = re.compile(r"^# [a-z_]+ = ")
    text = "\n".join(line[2:] if setting.match(line) else line for line in starter_file().splitlines())
    assert text.count("\n# ") < starter_file().count("\n# ")
    config = write(tmp_path / "starter.toml", text)

    assert load_settings(config, {}, {}) == load_settings(None, {}, {})


@pytest.mark.parametrize("expression", ["every five minutes", "*/5 * * *", "61 * * * *", "* * * * * *"])
def test_a_bad_cron_expression_is_refused(expression: str) -> None:
    with pytest.raises(ConfigError, match=r"sync.cron .* is not a 5-field cron expression"):
        load_settings(None, {"sync.cron": expression}, {})


def test_a_good_cron_expression_is_accepted() -> None:
    assert load_settings(None, {"sync.cron": "*/5 * * * 1-5"}, {}).sync_cron == "*/5 * * * 1-5"


@pytest.mark.parametrize("path", ["../other-repo", "/etc", "jobs/../../outside", ".."])
def test_a_repo_path_escaping_the_repo_is_refused(path: str) -> None:
    with pytest.raises(ConfigError, match="repo.path must be a folder inside the repo"):
        load_settings(None, {"repo.path": path}, {})


@pytest.mark.parametrize("path", ["jobs", "jobs/render", "", "jobs/"])
def test_a_repo_path_inside_the_repo_is_accepted(path: str) -> None:
    assert load_settings(None, {"repo.path": path}, {}).repo_path == path


@pytest.mark.parametrize(("key", "value", "says"), [
    ("sync.interval", 0.0, "sync.interval must be more than 0 seconds"),
    ("sync.max_delete_share", 0.0, "sync.max_delete_share must be in (0, 1]"),
    ("sync.max_delete_share", 1.5, "sync.max_delete_share must be in (0, 1]"),
])
def test_out_of_range_values_are_refused(key: str, value: float, says: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(None, {key: value}, {})
    assert says in str(raised.value)


def test_the_start_up_description_hides_the_password() -> None:
    settings = load_settings(None, {"repo.url": "https://bot:hunter2@git.example.com/jobs.git"}, {})

    described = settings.describe()

    assert "hunter2" not in described
    assert "repo.url='https://bot:****@git.example.com/jobs.git'" in described


@pytest.mark.parametrize("value", ["inf", "nan"])
def test_a_non_finite_interval_is_refused(value: str) -> None:
    with pytest.raises(ConfigError, match="sync.interval"):
        load_settings(None, {}, {"GITSYNC_SYNC_INTERVAL": value})
