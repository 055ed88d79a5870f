"""Turn settings into git credentials, reading secrets from files or the environment only."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from gitsync.config import Settings
from gitsync.errors import ConfigError
from gitsync.gitrepo import Credentials
from gitsync.secrets import Secret


def read_secret(file: str | None, env: str | None, what: str) -> Secret:
    """A secret from a file (preferred: a mounted secret stays out of /proc/*/environ) or a named variable.

    A source that is configured but missing or empty is an error, never a silent fallback to no secret;
    with neither configured the secret is empty.
    """
    if file:
        try:
            value = Path(file).expanduser().read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            raise ConfigError(f"{what} file {file} does not exist") from None
        except OSError as exc:
            raise ConfigError(f"cannot read {what} file {file}: {exc.strerror}") from None
        if not value:
            raise ConfigError(f"{what} file {file} is empty")
        return Secret(value)
    if env:
        value = os.environ.get(env, "").strip()
        if not value:
            raise ConfigError(f"environment variable {env} (the {what}) is not set or empty")
        return Secret(value)
    return Secret("")


def secret_reader(file: str | None, env: str | None, what: str) -> Callable[[], Secret]:
    """A function that reads the secret afresh on every call (see `read_secret`), for credentials that
    rotate while the agent runs: Kubernetes updates a mounted Secret in place, GitHub App tokens expire
    after an hour. The file is read, never cached; it is a few bytes."""
    return lambda: read_secret(file, env, what)


def credentials_from(settings: Settings) -> Credentials:
    """Git credentials; the token is checked now (a missing file stops start-up) and re-read before each use."""
    file, env = settings.repo_token_file, settings.repo_token_env
    return Credentials(token=read_secret(file, env, "repo token"),
                       token_reader=secret_reader(file, env, "repo token") if file or env else None,
                       username=settings.repo_username, ssh_key_file=settings.repo_ssh_key_file,
                       known_hosts_file=settings.repo_known_hosts_file)
