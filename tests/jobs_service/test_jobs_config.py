"""Reading a Farm settings file into JobsServiceConfig."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from gitsync import farm
from gitsync.errors import ConfigError
from gitsync.jobs_service.config import JobsServiceConfig, load_config
from gitsync.secrets import Secret

USERS_FARM_CONFIG = """\
[settings.nv.svc.server.http]
host = "0.0.0.0"
port = 8333

[settings.nv.svc.farm.jobs]
store_class = "nv.svc.farm.services.jobs.facilities.store.directory.DirectoryJobStore"
store_args.new_job_definition_save_location = '/srv/farm/job-definitions'
store_args.job_directories = ['/srv/farm/extra-defs', '~/defs/*']
api_key = "s3cret-key"
supported_instance_payload_versions = ["1.0"]

[settings.nv.svc.farm.jobs.k8s_manager]
jobs_namespace = "ov-farm"

[settings.nv.svc.farm.tasks]
url_prefix = "/queue/management/tasks"
"""


WriteConfig = Callable[[str], Path]


@pytest.fixture
def write_config(tmp_path: Path) -> WriteConfig:
    def write(text: str) -> Path:
        path = tmp_path / "farm-jobs.toml"
        path.write_text(text, encoding="utf-8")
        return path

    return write


def test_without_a_config_file_farms_defaults_apply() -> None:
    config = load_config(None)

    assert config.store_class == farm.DIRECTORY_STORE_CLASS
    assert config.host == "127.0.0.1"
    assert config.port == 8222
    assert config.url_prefix == "/queue/management/jobs"
    assert config.save_location == Path.home() / ".local/share/nv-svc-farm/job-definitions"
    assert config.job_directories == ()
    assert config.api_key.reveal() == "change-me"
    assert config.rescan_interval == 10.0


def test_users_farm_config_with_dotted_store_args_is_read_unchanged(
    write_config: WriteConfig,
) -> None:
    path = write_config(USERS_FARM_CONFIG)

    config = load_config(path)

    assert config.save_location == Path("/srv/farm/job-definitions")
    assert config.job_directories == ("/srv/farm/extra-defs", "~/defs/*")  # Farm does not expand '~'
    assert config.api_key.reveal() == "s3cret-key"
    assert config.host == "0.0.0.0"
    assert config.port == 8333
    assert config.url_prefix == "/queue/management/jobs"
    assert config.source == path
    assert not config.uses_redis


def test_farm_application_style_settings_root_with_dotted_keys_is_read(
    write_config: WriteConfig,
) -> None:
    path = write_config(
        "[settings]\n"
        'nv.svc.server.http.host = "127.0.0.2"\n'
        "nv.svc.server.http.port = 9001\n"
        'nv.svc.farm.jobs.url_prefix = "my/jobs/"\n'
        'nv.svc.farm.jobs.store_args = {new_job_definition_save_location = "/x/defs"}\n'
    )

    config = load_config(path)

    assert (config.host, config.port) == ("127.0.0.2", 9001)
    assert config.url_prefix == "/my/jobs"
    assert config.save_location == Path("/x/defs")


def test_redis_store_config_reads_the_connection_string(write_config: WriteConfig) -> None:
    path = write_config(
        "[settings.nv.svc.farm.jobs]\n"
        f'store_class = "{farm.REDIS_STORE_CLASS}"\n'
        "store_args.connection_string = 'redis://:pw@redis:6379/2'\n"
        'api_key = "k3y"\n'
    )

    config = load_config(path)

    assert config.uses_redis
    assert config.connection_string.reveal() == "redis://:pw@redis:6379/2"
    assert "pw" not in repr(config)
    assert "k3y" not in repr(config)


def test_redis_store_with_the_docs_http_url_is_a_clear_error(write_config: WriteConfig) -> None:
    path = write_config(
        "[settings.nv.svc.farm.jobs]\n"
        f'store_class = "{farm.REDIS_STORE_CLASS}"\n'
        "store_args.connection_string = 'http://redis:6379'\n"
    )

    with pytest.raises(ConfigError, match="redis://"):
        load_config(path)


def test_unknown_store_class_is_a_one_line_error_naming_the_file_and_accepted_values(
    write_config: WriteConfig,
) -> None:
    path = write_config(
        "[settings.nv.svc.farm.jobs]\n"
        'store_class = "nv.svc.farm.services.jobs.facilities.store.remote.RemoteJobStore"\n'
    )

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    message = str(caught.value)
    assert "\n" not in message
    assert str(path) in message
    assert "RemoteJobStore" in message
    assert farm.DIRECTORY_STORE_CLASS in message and farm.REDIS_STORE_CLASS in message


def test_invalid_toml_is_an_error_naming_the_file(write_config: WriteConfig) -> None:
    path = write_config("[settings.nv.svc.farm.jobs\n")

    with pytest.raises(ConfigError, match=str(path)):
        load_config(path)


def test_missing_config_file_is_an_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nope.toml"):
        load_config(tmp_path / "nope.toml")


@pytest.mark.parametrize(
    "line, words",
    [
        ("api_key = 12345", "api_key must be a string"),
        ("store_args.job_directories = '/one/dir'", "job_directories must be an array"),
        ("store_args.job_directories = [1]", "array of strings"),
        ("store_args = 'x'", "store_args must be a table"),
    ],
)
def test_wrong_types_are_errors_that_do_not_echo_the_value(write_config: WriteConfig, line: str, words: str) -> None:
    path = write_config(f"[settings.nv.svc.farm.jobs]\n{line}\n")

    with pytest.raises(ConfigError, match=words) as caught:
        load_config(path)

    assert "12345" not in str(caught.value)


def test_port_out_of_range_is_an_error(write_config: WriteConfig) -> None:
    path = write_config("[settings.nv.svc.server.http]\nport = 70000\n")

    with pytest.raises(ConfigError, match="port"):
        load_config(path)


def test_default_api_key_logs_a_warning(write_config: WriteConfig, caplog: pytest.LogCaptureFixture) -> None:
    path = write_config("[settings.nv.svc.farm.jobs]\n")

    with caplog.at_level(logging.WARNING, logger="gitsync.jobs_service"):
        load_config(path)

    assert "api_key is Farm's default" in caplog.text  # the value itself may be redacted: it is a Secret
    assert str(path) in caplog.text


def test_default_api_key_without_a_config_file_logs_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="gitsync.jobs_service"):
        load_config(None)

    assert "api_key is Farm's default" in caplog.text  # the value itself may be redacted: it is a Secret


def test_a_set_api_key_logs_no_warning(write_config: WriteConfig, caplog: pytest.LogCaptureFixture) -> None:
    path = write_config(USERS_FARM_CONFIG)

    with caplog.at_level(logging.WARNING, logger="gitsync.jobs_service"):
        load_config(path)

    assert caplog.records == []


def test_describe_redacts_the_api_key_and_the_redis_password() -> None:
    config = JobsServiceConfig(
        store_class=farm.REDIS_STORE_CLASS,
        connection_string=Secret("redis://:pw-9876@redis:6379/0"),
        api_key=Secret("key-1234"),
    )

    text = config.describe()

    assert "pw-9876" not in text and "key-1234" not in text
    assert "redis:6379" in text


def test_command_line_overrides_replace_only_what_is_given() -> None:
    config = JobsServiceConfig(host="10.0.0.1", port=9000)

    changed = config.with_overrides(port=0, save_location=Path("relative/defs"))

    assert changed.host == "10.0.0.1"
    assert changed.port == 0
    assert changed.save_location == Path.cwd() / "relative/defs"
    assert config.port == 9000
