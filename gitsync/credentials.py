"""Turn settings into git credentials, reading secrets from files or the environment only."""

from __future__ import annotations

import os
from pathlib import Path

from gitsync.config import Settings
from gitsync.errors import ConfigError
from gitsync.gitrepo import Credentials
from gitsync.secrets import Secret


def read_secret(file: str, env: str, what: str) -> Secret:
    """A secret from a file (preferred: mounted Kubernetes secrets) or a named environment variable."""
    if file:
        try:
            return Secret(Path(file).expanduser().read_text(encoding="utf-8").strip())
        except OSError as exc:
            raise ConfigError(f"cannot read {what} from {file}: {exc.strerror}") from None
    if env:
        value = os.environ.get(env)
        if not value:
            raise ConfigError(f"{what}: environment variable {env} is not set or empty")
        return Secret(value.strip())
    return Secret("")


def credentials_from(settings: Settings) -> Credentials:
    return Credentials(token=read_secret(settings.repo_token_file, settings.repo_token_env, "repo token"),
                       username=settings.repo_username, ssh_key_file=settings.repo_ssh_key_file,
                       known_hosts_file=settings.repo_known_hosts_file)
