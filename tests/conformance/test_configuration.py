"""The stand-in reads a real Farm configuration as Farm does.

Follows ``nv/svc/core/utils/config.py`` (``Config``: dynaconf over TOML and YAML, the ``settings``
environment, ``__`` environment overrides, files merged in the order package default,
``NV__SVC__FARM__CONFIG_FILEPATH``, ``NV__SVC__GLOBAL__CONFIG_FILEPATH``, ``-c``),
``nv/svc/farm/services/jobs/config.py`` (``FarmJobsConfig``) and
``nv/svc/farm/services/jobs/facilities/store/directory.py`` (``DEFAULT_JOB_DEFINITION_SAVE_DIRECTORY``,
``_resolve_new_job_definition_save_location``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gitsync import farm
from gitsync.errors import ConfigError
from gitsync.jobs_service.config import load_config

#: The shape Farm's Helm chart renders into the jobs service's application.yaml
#: (helm/nv.svc.farm/templates/settings-configmap.yaml: toYaml of {"settings": <app settings>}).
HELM_RENDERED = """\
settings:
  nv:
    svc:
      server:
        http:
          cors:
            enabled: true
            allow_origins: ["*"]
          port: 8222
      farm:
        jobs:
          url_prefix: "/queue/management/jobs"
          tags: ["jobs"]
          api_key: "@format {env[JOBS_API_KEY]}"
          store_class: "nv.svc.farm.services.jobs.facilities.store.directory.DirectoryJobStore"
          store_args:
            new_job_definition_save_location: "/data/job-definitions"
            job_directories:
              - "/opt/job-definitions/*"
"""


@pytest.fixture(autouse=True)
def no_farm_config_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NV__SVC__FARM__CONFIG_FILEPATH", "NV__SVC__GLOBAL__CONFIG_FILEPATH"):
        monkeypatch.delenv(name, raising=False)


def test_the_helm_charts_yaml_with_an_env_format_token_is_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "application.yaml"
    path.write_text(HELM_RENDERED)
    monkeypatch.setenv("JOBS_API_KEY", "from-the-secret")

    config = load_config(path)

    assert config.api_key.reveal() == "from-the-secret"
    assert config.store_class == farm.DIRECTORY_STORE_CLASS
    assert config.save_location == Path("/data/job-definitions")
    assert config.job_directories == ("/opt/job-definitions/*",)
    assert (config.url_prefix, config.port) == ("/queue/management/jobs", 8222)


def test_a_format_token_naming_a_missing_variable_is_one_line_naming_the_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "application.yaml"
    path.write_text(HELM_RENDERED)
    monkeypatch.delenv("JOBS_API_KEY", raising=False)

    with pytest.raises(ConfigError, match="JOBS_API_KEY") as caught:
        load_config(path)

    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_double_underscore_environment_variables_override_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "farm.toml"
    path.write_text('[settings.nv.svc.farm.jobs]\napi_key = "from-file"\n')
    monkeypatch.setenv("NV__SVC__FARM__JOBS__API_KEY", "from-env")
    monkeypatch.setenv("NV__SVC__SERVER__HTTP__PORT", "9123")

    config = load_config(path)

    assert config.api_key.reveal() == "from-env"
    assert config.port == 9123


def test_files_merge_in_farms_order_and_the_command_line_file_wins(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "package.toml"
    package.write_text('[settings.nv.svc.farm.jobs]\napi_key = "package"\nurl_prefix = "from-package"\n'
                       "store_args.job_directories = ['/a']\n")
    global_file = tmp_path / "global.yaml"
    global_file.write_text("settings:\n  nv:\n    svc:\n      farm:\n        jobs:\n          api_key: global\n"
                           "          store_args:\n            job_directories: ['/b']\n")
    given = tmp_path / "given.toml"
    given.write_text('[settings.nv.svc.farm.jobs]\napi_key = "command-line"\n')
    monkeypatch.setenv("NV__SVC__FARM__CONFIG_FILEPATH", str(package))
    monkeypatch.setenv("NV__SVC__GLOBAL__CONFIG_FILEPATH", str(global_file))

    config = load_config(given)

    assert config.api_key.reveal() == "command-line"
    assert config.url_prefix == "/from-package"
    assert config.job_directories == ("/a", "/b")  # dynaconf merges lists, as in Farm


def test_the_default_save_location_comes_from_platformdirs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))

    config = load_config(None)

    assert config.save_location == tmp_path / "xdg" / "nv-svc-farm" / "job-definitions"


def test_an_empty_save_location_means_none(tmp_path: Path) -> None:
    path = tmp_path / "farm.toml"
    path.write_text("[settings.nv.svc.farm.jobs]\nstore_args.new_job_definition_save_location = ''\n")

    assert load_config(path).save_location is None


def test_a_tilde_in_the_save_location_is_not_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "farm.toml"
    path.write_text("[settings.nv.svc.farm.jobs]\nstore_args.new_job_definition_save_location = '~/defs'\n")

    assert load_config(path).save_location == tmp_path / "~" / "defs"


def test_the_redis_store_refuses_store_args_other_than_the_connection_string(tmp_path: Path) -> None:
    path = tmp_path / "farm.toml"
    path.write_text(f'[settings.nv.svc.farm.jobs]\nstore_class = "{farm.REDIS_STORE_CLASS}"\n'
                    "store_args.connection_string = 'redis://localhost:6379/0'\nstore_args.db = 3\n")

    with pytest.raises(ConfigError, match="only store_args.connection_string"):
        load_config(path)


def test_format_tokens_inside_a_list_are_evaluated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "application.yaml"
    path.write_text("settings:\n  nv:\n    svc:\n      farm:\n        jobs:\n          store_args:\n"
                    "            job_directories: ['@format {env[DEFS]}/a', '/b']\n")
    monkeypatch.setenv("DEFS", "/mnt/defs")

    assert load_config(path).job_directories == ("/mnt/defs/a", "/b")


def test_an_unrelated_environment_variable_with_a_format_token_does_not_stop_the_service(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOMETHING_ELSE", "@format {env[NOT_SET_ANYWHERE]}")

    assert load_config(None).port == farm.DEFAULT_PORT
