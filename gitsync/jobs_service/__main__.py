"""``python -m gitsync.jobs_service``: the stand-in jobs service without gitsync's main CLI."""

from __future__ import annotations

import argparse
import logging
import sys

from gitsync.errors import GitsyncError
from gitsync.jobs_service.cli import add_arguments, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gitsync.jobs_service",
        description="A Farm-compatible jobs service: a stand-in for development, CI and demos.",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return run(args)
    except GitsyncError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
