"""`gitsync init`: a starter gitsync.toml, so nobody has to guess key names."""

from __future__ import annotations

import argparse
from pathlib import Path

from gitsync.config import DEFAULT_CONFIG_FILE, starter_file
from gitsync.errors import ConfigError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", nargs="?", default=DEFAULT_CONFIG_FILE, help="where to write it")
    parser.add_argument("--force", action="store_true", help="overwrite an existing file")


def run(args: argparse.Namespace) -> int:
    path = Path(args.path)
    if path.is_dir():
        raise ConfigError(f"{path} is a directory; give the file to write, e.g. "
                          f"`gitsync init {path / DEFAULT_CONFIG_FILE}`")
    if not path.parent.is_dir():
        raise ConfigError(f"folder {path.parent} does not exist; create it first (mkdir -p {path.parent})")
    if path.exists() and not args.force:
        raise ConfigError(f"{path} already exists; use --force to overwrite it")
    path.write_text(starter_file(), encoding="utf-8")
    print(f"wrote {path}: set repo.url and target.directory, then run `gitsync sync --once`")
    return 0
