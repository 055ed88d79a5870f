"""Read a Farm-style settings file into one immutable value, so the stand-in accepts a user's
existing Farm configuration unchanged.

The shape is Farm's (dynaconf TOML)::

    [settings.nv.svc.farm.jobs]
    store_class = "nv.svc.farm.services.jobs.facilities.store.directory.DirectoryJobStore"
    store_args.new_job_definition_save_location = '/srv/farm/job-definitions'
    store_args.job_directories = ['/srv/farm/extra-defs', '/defs/*']
    api_key = "change-me"
    url_prefix = "/queue/management/jobs"

    [settings.nv.svc.server.http]
    host = "127.0.0.1"
    port = 8222

Dotted keys (``store_args.x = ...``) are plain TOML, so ``tomllib`` reads them as nested tables.
Every other Farm setting in the file is ignored.
"""

from __future__ import annotations

import dataclasses
import logging
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gitsync import farm
from gitsync.errors import ConfigError
from gitsync.secrets import Secret, redact_url

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_SAVE_LOCATION = "~/.local/share/nv-svc-farm/job-definitions"
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
    save_location: Path = field(default_factory=lambda: Path(DEFAULT_SAVE_LOCATION).expanduser())
    #: Entries as written in the config (``~`` expanded); glob patterns are expanded on each scan.
    job_directories: tuple[str, ...] = ()
    #: A redis:// URL; a Secret because it may carry a password.
    connection_string: Secret = Secret("")
    api_key: Secret = Secret(farm.DEFAULT_API_KEY)
    url_prefix: str = farm.DEFAULT_URL_PREFIX
    host: str = DEFAULT_HOST
    port: int = farm.DEFAULT_PORT
    rescan_interval: float = DEFAULT_RESCAN_INTERVAL
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
    ) -> JobsServiceConfig:
        """A copy with command-line overrides applied; None leaves a value as configured."""
        changes: dict[str, Any] = {}
        if host is not None:
            changes["host"] = host
        if port is not None:
            changes["port"] = port
        if save_location is not None:
            changes["save_location"] = save_location.expanduser().absolute()
        return dataclasses.replace(self, **changes)

    def describe(self) -> str:
        """One line for the start-up log; safe to print (the key and any URL password redacted)."""
        if self.uses_redis:
            store = f"redis store at {redact_url(self.connection_string.reveal())}"
        else:
            dirs = ", ".join([str(self.save_location), *self.job_directories])
            store = f"directory store over {dirs}"
        return f"{store}; url prefix {self.url_prefix or '/'}; api key {self.api_key}"


def load_config(path: Path | None = None) -> JobsServiceConfig:
    """Read ``path`` (a Farm settings file), or return the defaults when it is None.

    Raises ConfigError with a one-line message naming the file for anything unusable.
    Logs a warning when the API key is Farm's well-known default.
    """
    config = JobsServiceConfig() if path is None else _from_file(path)
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


def _from_file(path: Path) -> JobsServiceConfig:
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the jobs service settings: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc

    # Farm's files put everything under [settings]; accept the bare form too.
    root = data.get("settings", data)
    jobs = _table(root, _JOBS_TABLE, path)
    http = _table(root, _HTTP_TABLE, path)
    store_args = _get(jobs, "store_args", dict, {}, path, "[settings.nv.svc.farm.jobs] store_args")

    store_class = _get(jobs, "store_class", str, farm.DIRECTORY_STORE_CLASS, path, "store_class")
    if store_class not in STORE_CLASSES:
        raise ConfigError(
            f"{path}: store_class {store_class!r} is not supported by gitsync's jobs service; "
            f"use {farm.DIRECTORY_STORE_CLASS!r} or {farm.REDIS_STORE_CLASS!r}"
        )

    save_location = _get(
        store_args,
        "new_job_definition_save_location",
        str,
        "",
        path,
        "store_args.new_job_definition_save_location",
    )
    job_directories = _get(store_args, "job_directories", list, [], path, "store_args.job_directories")
    if not all(isinstance(entry, str) for entry in job_directories):
        raise ConfigError(f"{path}: store_args.job_directories must be an array of strings")
    connection_string = _get(store_args, "connection_string", str, "", path, "store_args.connection_string")
    if store_class == farm.REDIS_STORE_CLASS and not connection_string.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(
            f"{path}: the Redis store needs store_args.connection_string = 'redis://host:port/db' "
            f"(got {redact_url(connection_string)!r})"
        )

    port = _get(http, "port", int, farm.DEFAULT_PORT, path, "[settings.nv.svc.server.http] port")
    if isinstance(port, bool) or not 0 <= port <= 65535:
        raise ConfigError(f"{path}: [settings.nv.svc.server.http] port must be 0-65535")

    return JobsServiceConfig(
        store_class=store_class,
        save_location=Path(save_location or DEFAULT_SAVE_LOCATION).expanduser().absolute(),
        job_directories=tuple(str(Path(entry).expanduser()) for entry in job_directories),
        connection_string=Secret(connection_string),
        api_key=Secret(_get(jobs, "api_key", str, farm.DEFAULT_API_KEY, path, "api_key")),
        url_prefix=normalize_prefix(_get(jobs, "url_prefix", str, farm.DEFAULT_URL_PREFIX, path, "url_prefix")),
        host=_get(http, "host", str, DEFAULT_HOST, path, "[settings.nv.svc.server.http] host"),
        port=port,
        source=path,
    )


def normalize_prefix(prefix: str) -> str:
    """Farm adds a missing leading '/'; a trailing '/' would give '//load', so drop it."""
    if prefix and not prefix.startswith("/"):
        prefix = "/" + prefix
    return prefix.rstrip("/")


def _table(root: dict[str, Any], keys: tuple[str, ...], path: Path) -> dict[str, Any]:
    table = root
    for key in keys:
        inner = table.get(key, {})
        if not isinstance(inner, dict):
            raise ConfigError(f"{path}: [settings.{'.'.join(keys)}] must be a table")
        table = inner
    return table


def _get(table: dict[str, Any], key: str, kind: type, default: Any, path: Path, label: str) -> Any:
    value = table.get(key, default)
    if not isinstance(value, kind):
        # The type, not the value: the value may be a key or a URL with a password.
        raise ConfigError(f"{path}: {label} must be {_KIND_NAMES[kind]}, not {type(value).__name__}")
    return value
