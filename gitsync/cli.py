"""The `gitsync` command line: parsing and the one place that turns errors into exit codes.

Exit codes: 0 success, 1 an error the user can fix (one line on stderr), 2 bad usage,
3 a bug (with a traceback), 4 `gitsync plan` found changes pending, 130 interrupted.
"""

from __future__ import annotations

import argparse
import logging
import sqlite3
import sys
from collections.abc import Callable, Sequence

from gitsync import __version__
from gitsync.config import OPTIONS, flag_values, load_settings
from gitsync.errors import GitsyncError
from gitsync.secrets import install_redaction, scrub

EXIT_OK, EXIT_ERROR, EXIT_BUG, EXIT_CHANGES_PENDING, EXIT_INTERRUPTED = 0, 1, 3, 4, 130

Handler = Callable[[argparse.Namespace], int]


def _add_settings_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="gitsync.toml to read (default: ./gitsync.toml if present)")
    for option in OPTIONS:
        if not option.flag:
            continue
        if option.type is bool:
            parser.add_argument(option.flag, dest=option.attr, action="store_const", const=True, default=None,
                                help=option.help)
        else:
            parser.add_argument(option.flag, dest=option.attr, type=option.type, default=None,
                                choices=option.choices or None, help=option.help,
                                metavar=option.key.split(".")[1].upper())


def settings_from(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    return load_settings(args.config, flag_values(args))


def build_parser() -> argparse.ArgumentParser:
    from gitsync.commands import demo, init, pull, run, status, validate
    from gitsync.jobs_service import cli as jobs_service_cli

    parser = argparse.ArgumentParser(prog="gitsync", description="Keep Omniverse Farm job definitions in sync "
                                     "with a git repository.")
    parser.add_argument("--version", action="version", version=f"gitsync {__version__}")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--log-format", default="text", choices=["text", "json"],
                        help="json: one JSON object per line (time, level, logger, message) for log collectors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Handler, help_text: str, settings: bool = False) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        if settings:
            _add_settings_flags(p)
        p.set_defaults(handler=handler)
        return p

    init.add_arguments(command("init", init.run, "write a commented starter gitsync.toml"))
    validate.add_arguments(command("validate", validate.run, "check .kit files the way Farm will read them"))
    pull.add_sync_arguments(command("sync", pull.run_sync, "fetch and apply the branch once (for a CronJob)",
                                    settings=True))
    pull.add_plan_arguments(command("plan", pull.run_plan, "show what a sync would change, without changing it",
                                    settings=True))
    run.add_arguments(command("run", run.run, "keep syncing on a schedule (the sidecar mode)", settings=True))
    status.add_arguments(command("status", status.run, "show the applied commit, the last result and any "
                                 "outstanding problems", settings=True))
    status.add_history_arguments(command("history", status.run_history, "list recent syncs", settings=True))
    jobs_service_cli.add_arguments(command("jobs-service", jobs_service_cli.run,
                                           "run the Farm-compatible jobs service (a stand-in for development)"))
    demo.add_arguments(command("demo", demo.run, "sample repo + jobs service + agent, syncing both ways"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
                        stream=sys.stderr)
    if args.log_format == "json":
        from gitsync.logformat import JsonFormatter

        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is sys.stderr:
                handler.setFormatter(JsonFormatter())
    install_redaction(logging.getLogger("httpx"), logging.getLogger("httpcore"))
    try:
        return int(args.handler(args))
    except GitsyncError as exc:
        print(f"gitsync: error: {scrub(str(exc))}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except OSError as exc:  # the world, not a bug: a full disk, a vanished or unreadable file
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"gitsync: error: {scrub(exc.strerror or str(exc))}{where}", file=sys.stderr)
        return EXIT_ERROR
    except sqlite3.DatabaseError as exc:
        print(f"gitsync: error: the state database cannot be used ({exc}); move state.sqlite3 in the state "
              "directory away: the next sync rebuilds it", file=sys.stderr)
        return EXIT_ERROR
    except Exception:
        logging.getLogger("gitsync").exception("unexpected error (this is a bug in gitsync; please report it)")
        return EXIT_BUG


def main_entry() -> None:
    sys.exit(main())
