"""`gitsync demo` (placeholder until the jobs service lands)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workspace", metavar="DIR")


def run(args: argparse.Namespace) -> int:
    return 0
