"""The `gitsync` command line: parsing and the one place that turns errors into exit codes.

Exit codes (the README's table is this one):

    0    success; `sync --once`: the directory holds the applied commit's definitions;
         `plan`: nothing would change
    1    an error the user can fix (one line on stderr): config, git, network, disk
    2    bad usage (unknown flag or command)
    3    a bug in gitsync (with a traceback)
    4    `plan`: a sync would change the directory
    5    `sync --once`: drift left in place (managed files changed locally, or local changes waiting to
         be pushed); `--force` restores git's version
    6    `sync --once`: applied, except held files (invalid in git, or clashing with a file gitsync
         does not own)
    7    refused: the commit was not applied (invalid definitions, mass deletion, an invalid rollback);
         the last good commit stays
    8    `rollback`: the revert conflicts with later commits; nothing was changed
    130  interrupted
"""

from __future__ import annotations

import argparse
import logging
import sqlite3
import sys
from collections.abc import Sequence

from gitsync import __version__
from gitsync.config import OPTIONS, flag_values, load_settings
from gitsync.errors import GitsyncError
from gitsync.secrets import install_redaction, scrub

EXIT_OK, EXIT_ERROR, EXIT_BUG, EXIT_CHANGES_PENDING, EXIT_INTERRUPTED = 0, 1, 3, 4, 130
EXIT_DRIFT, EXIT_HELD, EXIT_REFUSED, EXIT_CONFLICT = 5, 6, 7, 8


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


#: Every command: name, module, its add-arguments function, its handler, help, whether it takes settings flags.
_COMMANDS: tuple[tuple[str, str, str, str, str, bool], ...] = (
    ("init", "gitsync.commands.init", "add_arguments", "run", "write a commented starter gitsync.toml", False),
    ("validate", "gitsync.commands.validate", "add_arguments", "run",
     "check .kit files the way Farm will read them", False),
    ("sync", "gitsync.commands.pull", "add_sync_arguments", "run_sync",
     "fetch and apply the branch once (for a CronJob)", True),
    ("plan", "gitsync.commands.pull", "add_plan_arguments", "run_plan",
     "show what a sync would change, without changing it", True),
    ("run", "gitsync.commands.run", "add_arguments", "run", "keep syncing on a schedule (the sidecar mode)", True),
    ("status", "gitsync.commands.status", "add_arguments", "run",
     "show the applied commit, the last result and any outstanding problems", True),
    ("history", "gitsync.commands.status", "add_history_arguments", "run_history", "list recent syncs", True),
    ("rollback", "gitsync.commands.rollback", "add_arguments", "run",
     "revert a commit (or everything after one) in git, push it and sync", True),
    ("outbox", "gitsync.commands.manage", "add_outbox_arguments", "run_outbox",
     "list local changes waiting to reach git; retry them now or drop one to a conflict branch", True),
    ("conflicts", "gitsync.commands.manage", "add_conflicts_arguments", "run_conflicts",
     "list conflict branches; acknowledge them so they leave status", True),
    ("jobs-service", "gitsync.jobs_service.cli", "add_arguments", "run",
     "run the Farm-compatible jobs service (a stand-in for development)", False),
    ("demo", "gitsync.commands.demo", "add_arguments", "run", "sample repo + jobs service + agent, syncing both ways",
     False),
)


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The whole command line; given `argv`, only the command it names gets its arguments (and its module
    imported): a `sync --once` from a CronJob pays for no other command's imports or flags."""
    import importlib

    parser = argparse.ArgumentParser(prog="gitsync", description="Keep Omniverse Farm job definitions in sync "
                                     "with a git repository.")
    parser.add_argument("--version", action="version", version=f"gitsync {__version__}")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--log-format", default="text", choices=["text", "json"],
                        help="json: one JSON object per line (time, level, logger, message) for log collectors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    names = {command[0] for command in _COMMANDS}
    # The command is the first word that names one (no global option takes a command's name as its value).
    chosen = None if argv is None else next((word for word in argv if word in names), "")
    for name, module_name, add_arguments, handler, help_text, settings in _COMMANDS:
        p = sub.add_parser(name, help=help_text, description=help_text)
        if chosen is not None and name != chosen:
            continue
        module = importlib.import_module(module_name)
        if settings:
            _add_settings_flags(p)
        getattr(module, add_arguments)(p)
        p.set_defaults(handler=getattr(module, handler))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
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
