"""Read a Farm configuration into one immutable value, so the stand-in accepts a user's existing
Farm configuration unchanged, loaded the way Farm loads it (``nv/svc/core/utils/config.py``, ``Config``):

* dynaconf, TOML or YAML, everything under the ``settings`` environment;
* files merged in Farm's order: ``NV__SVC__FARM__CONFIG_FILEPATH``, then
  ``NV__SVC__GLOBAL__CONFIG_FILEPATH`` (each only if the file exists, as in Farm), then ``--config``
  (an error if missing: stricter than Farm, which skips it silently); dynaconf merges tables and
  lists, so ``job_directories`` from two files add up;
* environment overrides with the ``__`` separator (``NV__SVC__FARM__JOBS__API_KEY=...``) and
  ``@format {env[JOBS_API_KEY]}`` tokens, as Farm's Helm chart writes them;
* the default save location from platformdirs (``user_data_dir("nv-svc-farm")/job-definitions``);
  ``""`` means none, and ``~`` is not expanded.

The settings read::

    [settings.nv.svc.farm.jobs]
    store_class = "nv.svc.farm.services.jobs.facilities.store.directory.DirectoryJobStore"
    store_args.new_job_definition_save_location = '/srv/farm/job-definitions'
    store_args.job_directories = ['/srv/farm/extra-defs', '/defs/*']
    api_key = "change-me"
    url_prefix = "/queue/management/jobs"
    max_body_size = 1048576          # gitsync's stand-in only: /save and /remove body limit

    [settings.nv.svc.server.http]
    host = "127.0.0.1"
    port = 8222

Every other Farm setting is ignored.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

from gitsync import farm
from gitsync.errors import ConfigError
from gitsync.secrets import Secret, redact_url

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"


def default_save_location() -> str:
    """Farm's DEFAULT_JOB_DEFINITION_SAVE_DIRECTORY: its platformdirs user data dir plus job-definitions."""
    return str(Path(platformdirs.user_data_dir("nv-svc-farm")) / "job-definitions")


#: The stand-in's request body limit for /save and /remove (Farm has none).
DEFAULT_MAX_BODY_SIZE = 1024 * 1024
#: Farm's environment variables naming settings files, merged in this order before --config.
CONFIG_FILE_VARIABLES = ("NV__SVC__FARM__CONFIG_FILEPATH", "NV__SVC__GLOBAL__CONFIG_FILEPATH")
#: Farm's DirectoryJobStore rescans every 10 s; tests shorten it.
DEFAULT_RESCAN_INTERVAL = 10.0

STORE_CLASSES = (farm.DIRECTORY_STORE_CLASS, farm.REDIS_STORE_CLASS)
_JOBS_TABLE = ("nv", "svc", "farm", "jobs")
_HTTP_TABLE = ("nv", "svc", "server", "http")
_KIND_NAMES: dict[type, str] = {
    str: "a string",
    int: "an integer",
    list: "an array",
    dict: "a table",
}


@dataclass(frozen=True)
class JobsServiceConfig:
    """Everything the stand-in needs to run; built once, never mutated (use ``with_overrides``)."""

    store_class: str = farm.DIRECTORY_STORE_CLASS
    #: None when configured as "" (Farm: no save location; a new definition cannot be saved).
    save_location: Path | None = field(default_factory=lambda: Path(default_save_location()))
    #: Entries as written in the config (``~`` expanded); glob patterns are expanded on each scan.
    job_directories: tuple[str, ...] = ()
    #: A redis:// URL; a Secret because it may carry a password.
    connection_string: Secret = Secret("")
    api_key: Secret = Secret(farm.DEFAULT_API_KEY)
    url_prefix: str = farm.DEFAULT_URL_PREFIX
    host: str = DEFAULT_HOST
    port: int = farm.DEFAULT_PORT
    rescan_interval: float = DEFAULT_RESCAN_INTERVAL
    max_body_size: int = DEFAULT_MAX_BODY_SIZE
    #: The settings file this came from, for messages; None when built from defaults.
    source: Path | None = None

    @property
    def uses_redis(self) -> bool:
        return self.store_class == farm.REDIS_STORE_CLASS

    def with_overrides(
        self,
        *,
        host: str | None = None,
        port: int | None = None,
        save_location: Path | None = None,
        max_body_size: int | None = None,
    ) -> JobsServiceConfig:
        """A copy with command-line overrides applied; None leaves a value as configured."""
        changes: dict[str, Any] = {}
        if host is not None:
            changes["host"] = host
        if port is not None:
            changes["port"] = port
        if save_location is not None:
            changes["save_location"] = save_location.expanduser().absolute()
        if max_body_size is not None:
            if max_body_size < 1:
                raise ConfigError("--max-body-size must be a positive number of bytes")
            changes["max_body_size"] = max_body_size
        return dataclasses.replace(self, **changes)

    def describe(self) -> str:
        """One line for the start-up log; safe to print (the key and any URL password redacted)."""
        if self.uses_redis:
            store = f"redis store at {redact_url(self.connection_string.reveal())}"
        else:
            dirs = ", ".join([*([str(self.save_location)] if self.save_location else []), *self.job_directories])
            store = f"directory store over {dirs}"
        return f"{store}; url prefix {self.url_prefix or '/'}; api key {self.api_key}"


def load_config(path: Path | None = None) -> JobsServiceConfig:
    """Farm's settings: the files Farm's environment variables name, then ``path``, then ``__`` overrides.

    Raises ConfigError with a one-line message naming the file for anything unusable.
    Logs a warning when the API key is Farm's well-known default.
    """
    environ = os.environ
    files = [Path(environ[v]) for v in CONFIG_FILE_VARIABLES if environ.get(v) and Path(environ[v]).is_file()]
    if path is not None:
        if not path.is_file():
            raise ConfigError(f"{path}: cannot read the jobs service settings: no such file")
        files.append(path)
    config = _from_settings(_read_settings(files), files[-1] if files else None)
    warn_if_default_api_key(config)
    return config


def warn_if_default_api_key(config: JobsServiceConfig) -> bool:
    """Warn (never showing a key) when anyone who has read Farm's docs could write to the store."""
    if config.api_key.reveal() != farm.DEFAULT_API_KEY:
        return False
    where = f"{config.source}: " if config.source else ""
    log.warning(
        "%sapi_key is Farm's default %r: anyone who can reach the jobs service can save and "
        "remove job definitions; set [settings.nv.svc.farm.jobs] api_key",
        where,
        farm.DEFAULT_API_KEY,
    )
    return True


def _read_settings(files: list[Path]) -> dict[str, Any]:
    """The merged ``settings`` environment, as plain dicts with lower-case keys (dynaconf's are not)."""
    from dynaconf import Dynaconf  # imported here: only the jobs service needs it

    where = ", ".join(str(f) for f in files) or "the environment"
    try:
        settings = Dynaconf(settings_files=[str(f) for f in files], core_loaders=["TOML", "YAML"], load_dotenv=False,
                            environments=True, envvar_prefix=False, nested_separator="__", dotted_lookup=True,
                            default_env="settings", env="settings", merge_enabled=True,
                            apply_default_on_none=True)
        root = settings.get("nv")
        # Only Farm's own tree is evaluated: an unrelated environment variable holding "@format ..." must not
        # stop the service (envvar_prefix=False makes every variable a setting, as in Farm).
        return {"nv": _plain(root, settings, "nv")} if isinstance(root, Mapping) else {}
    except Exception as exc:  # noqa: BLE001 - dynaconf raises parser and format errors of many types
        # The type and the first line only: the text may quote a key or a password from the file.
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if isinstance(exc, KeyError):
            reason = f"an @format token names an environment variable that is not set: {exc}"
        raise ConfigError(f"{where}: cannot read the jobs service settings: {reason}") from exc


def _plain(value: Any, settings: Any, path: str) -> Any:
    """Plain dicts with lower-case keys; ``@format`` tokens evaluated one setting at a time."""
    if type(value).__name__ == "Lazy":
        value = settings.get(path)  # evaluates the token (a missing variable raises, naming it)
    if isinstance(value, Mapping):
        plain: dict[str, Any] = {}
        for key, inner in value.items():
            # An environment override arrives upper-case (API_KEY); Farm's lookups ignore case, and it wins.
            lowered = str(key).lower()
            if lowered in plain and str(key) == lowered:
                continue
            plain[lowered] = _plain(inner, settings, f"{path}.{key}")
        return plain
    if isinstance(value, list | tuple):
        if any(type(v).__name__ == "Lazy" for v in value):
            value = settings.get(path)  # dynaconf evaluates the tokens of a list as a whole
        return [_plain(v, settings, path) for v in value]
    return value


def _from_settings(root: dict[str, Any], path: Path | None) -> JobsServiceConfig:
    label = path if path is not None else "settings"
    jobs = _table(root, _JOBS_TABLE, label)
    http = _table(root, _HTTP_TABLE, label)
    store_args = _get(jobs, "store_args", dict, {}, label, "[settings.nv.svc.farm.jobs] store_args")

    store_class = _get(jobs, "store_class", str, farm.DIRECTORY_STORE_CLASS, label, "store_class")
    if store_class not in STORE_CLASSES:
        raise ConfigError(
            f"{label}: store_class {store_class!r} is not supported by gitsync's jobs service; "
            f"use {farm.DIRECTORY_STORE_CLASS!r} or {farm.REDIS_STORE_CLASS!r}"
        )
    save_location = _get(store_args, "new_job_definition_save_location", str, None, label,
                         "store_args.new_job_definition_save_location", optional=True)
    if save_location is None:
        save_location = default_save_location()
    if save_location.startswith("~"):
        log.warning("%s: new_job_definition_save_location %r starts with '~', which Farm does not expand: "
                    "it names a folder called '~'", label, save_location)
    job_directories = _get(store_args, "job_directories", list, [], label, "store_args.job_directories")
    if not all(isinstance(entry, str) for entry in job_directories):
        raise ConfigError(f"{label}: store_args.job_directories must be an array of strings")
    connection_string = _get(store_args, "connection_string", str, "", label, "store_args.connection_string")
    if store_class == farm.REDIS_STORE_CLASS and not connection_string.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(
            f"{label}: the Redis store needs store_args.connection_string = 'redis://host:port/db' "
            f"(got {redact_url(connection_string)!r})"
        )
    if store_class == farm.REDIS_STORE_CLASS and set(store_args) - {"connection_string"}:
        extra = ", ".join(sorted(set(store_args) - {"connection_string"}))
        raise ConfigError(f"{label}: the Redis store takes only store_args.connection_string, not {extra} "
                          "(Farm fails at start-up on it too)")

    port = _get(http, "port", int, farm.DEFAULT_PORT, label, "[settings.nv.svc.server.http] port")
    if isinstance(port, bool) or not 0 <= port <= 65535:
        raise ConfigError(f"{label}: [settings.nv.svc.server.http] port must be 0-65535")
    max_body = _get(jobs, "max_body_size", int, DEFAULT_MAX_BODY_SIZE, label, "max_body_size")
    if isinstance(max_body, bool) or max_body < 1:
        raise ConfigError(f"{label}: [settings.nv.svc.farm.jobs] max_body_size must be a positive number of bytes")

    return JobsServiceConfig(
        store_class=store_class,
        save_location=Path(save_location).absolute() if save_location else None,
        job_directories=tuple(job_directories),
        connection_string=Secret(connection_string),
        api_key=Secret(_get(jobs, "api_key", str, farm.DEFAULT_API_KEY, label, "api_key")),
        url_prefix=normalize_prefix(_get(jobs, "url_prefix", str, farm.DEFAULT_URL_PREFIX, label, "url_prefix")),
        host=_get(http, "host", str, DEFAULT_HOST, label, "[settings.nv.svc.server.http] host"),
        port=port,
        max_body_size=max_body,
        source=path,
    )


def normalize_prefix(prefix: str) -> str:
    """Farm adds a missing leading '/'; a trailing '/' would give '//load', so drop it."""
    if prefix and not prefix.startswith("/"):
        prefix = "/" + prefix
    return prefix.rstrip("/")


def _table(root: dict[str, Any], keys: tuple[str, ...], path: Path | str) -> dict[str, Any]:
    table = root
    for key in keys:
        inner = table.get(key, {})
        if not isinstance(inner, dict):
            raise ConfigError(f"{path}: [settings.{'.'.join(keys)}] must be a table")
        table = inner
    return table


def _get(table: dict[str, Any], key: str, kind: Any, default: Any, path: Path | str, label: str,
         *, optional: bool = False) -> Any:
    value = table.get(key, default)
    if optional and value is None:
        return None
    if not isinstance(value, kind):
        # The type, not the value: the value may be a key or a URL with a password.
        raise ConfigError(f"{path}: {label} must be {_KIND_NAMES.get(kind, 'a string')}, not {type(value).__name__}")
    return value
