"""`gitsync validate [PATH...]`: the CI gate for a definitions repo, with the same rules as a sync."""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from pathlib import Path

from gitsync import defset
from gitsync.kit import MAX_FILE_SIZE, check_kit
from gitsync.problems import Problem, to_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="*", default=["."], metavar="PATH",
                        help=".kit files or folders to search recursively (default: .)")
    parser.add_argument("--strict", action="store_true", help="treat warnings such as name != key as errors")
    parser.add_argument("--format", choices=["text", "json"], default="text", help="json: for CI annotations")
    parser.add_argument("--max-file-size", type=int, default=MAX_FILE_SIZE, metavar="BYTES")


def run(args: argparse.Namespace) -> int:
    checked: list[defset.Checked] = []
    extra: list[Problem] = []
    for shown in _files(args.paths, extra):
        path = Path(shown)
        if path.is_symlink():
            extra.append(defset.symlink_problem(shown))
            continue
        report = check_kit(path.read_bytes(), shown, strict=args.strict, max_size=args.max_file_size)
        checked.append(defset.from_report(shown, report))
    problems = sorted(extra + [p for found in defset.check_set(checked).values() for p in found])
    if args.format == "json":
        print(to_json(problems))
    else:
        for problem in problems:
            print(problem.format())
        errors = sum(p.severity == "error" for p in problems)
        warnings = len(problems) - errors
        names = sum(len(c.names) for c in checked)
        verdict = "all valid" if not errors else f"{errors} error(s)"
        print(f"{len(checked)} file(s), {names} definition(s): {verdict}"
              + (f", {warnings} warning(s)" if warnings else ""))
    return 1 if any(p.severity == "error" for p in problems) else 0


def _files(paths: list[str], extra: list[Problem]) -> Iterator[str]:
    for given in paths:
        root = Path(given)
        if not root.exists() and not root.is_symlink():
            extra.append(Problem(given, 1, 1, "error", "no such file or folder", "check the path"))
        elif root.is_dir() and not root.is_symlink():
            for folder, dirs, names in os.walk(root):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(names):
                    shown = os.path.join(folder, name)
                    near_miss = defset.suffix_problem(shown)
                    if near_miss:
                        extra.append(near_miss)
                    elif defset.is_definition_path(shown):
                        yield shown
        else:
            yield given
