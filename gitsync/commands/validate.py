"""`gitsync validate [PATH...]`: the CI gate for a definitions repo, with the same rules as a sync."""

from __future__ import annotations

import argparse
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from gitsync import companion, defset, kitname, progress
from gitsync.kit import MAX_FILE_SIZE, check_kit
from gitsync.problems import Problem, to_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="*", default=["."], metavar="PATH",
                        help=".kit files or folders to search recursively (default: .)")
    parser.add_argument("--strict", action="store_true", help="treat warnings such as name != key as errors")
    parser.add_argument("--format", choices=["text", "json"], default="text", help="json: for CI annotations")
    parser.add_argument("--max-file-size", type=int, default=MAX_FILE_SIZE, metavar="BYTES")


def run(args: argparse.Namespace) -> int:
    from gitsync.progress import Progress

    with Progress():
        checked, extra = _check_all(args)
        progress.step("checking the set of definitions", len(checked))
        roots = {companion.root(c.repo_path, folder) for c in checked for folder, _ in c.folders}
        present = {root for root in roots if Path(root).is_dir()}
        problems = sorted(extra + [p for found in defset.check_set(checked, present_roots=present).values()
                                   for p in found])
    return _report(args, checked, problems)


def _check_all(args: argparse.Namespace) -> tuple[list[defset.Checked], list[Problem]]:
    checked: list[defset.Checked] = []
    extra: list[Problem] = []
    for count, shown in enumerate(_files(args.paths, extra), 1):
        progress.step("checked", count)
        path = Path(shown)
        if path.is_symlink():
            extra.append(defset.symlink_problem(shown))
            continue
        unsafe = defset.unsafe_name_problem(shown)
        if unsafe is not None:
            extra.append(unsafe)
        data = read_limited(shown, args.max_file_size)
        if isinstance(data, Problem):
            extra.append(data)
            continue
        report = check_kit(data, shown, strict=args.strict, max_size=args.max_file_size)
        checked.append(defset.from_report(shown, report))
        extra += _companion_folders(shown, report.folders)
    return checked, extra


def _report(args: argparse.Namespace, checked: list[defset.Checked], problems: list[Problem]) -> int:
    if args.format == "json":
        print(to_json(problems))
    else:
        for problem in problems:
            print(_printable(problem.format()))
        errors = sum(p.severity == "error" for p in problems)
        warnings = len(problems) - errors
        names = sum(len(c.names) for c in checked)
        verdict = "all valid" if not errors else f"{errors} error(s)"
        print(f"{len(checked)} file(s), {names} definition(s): {verdict}"
              + (f", {warnings} warning(s)" if warnings else ""))
    return 1 if any(p.severity == "error" for p in problems) else 0


def _companion_folders(shown: str, folders: companion.Folders) -> list[Problem]:
    """``${job}/...`` companion folders that are not beside the file: Farm does not check (NVIDIA's own samples
    name folders they do not ship), the job runs without them, and gitsync has nothing to sync."""
    problems = []
    for folder, line in folders:
        where = Path(shown).parent / folder
        if not where.is_dir():
            problems.append(Problem(shown, line, 1, "warning",
                                    f"companion folder '${{job}}/{folder}' ({where}) does not exist beside this file; "
                                    "Farm does not check, and the job runs without it",
                                    "add the folder beside the file, or remove the entry"))
    return problems


def _printable(line: str) -> str:
    """A file name that is not valid UTF-8 must not crash the print of its own error."""
    return line.encode("utf-8", "backslashreplace").decode("utf-8")


def read_limited(shown: str, max_size: int) -> bytes | Problem:
    """A definition file's bytes, or the one-line reason it cannot be checked.

    Never blocks and never reads more than ``max_size + 1`` bytes: a FIFO named ``x.kit`` is opened
    non-blocking and refused, ``/dev/zero`` is not a regular file, a huge file is refused by its size.
    """
    try:
        fd = os.open(shown, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        return Problem(shown, 1, 1, "error", f"cannot read the file: {exc.strerror}", "check the path and permissions")
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = "a folder" if stat.S_ISDIR(st.st_mode) else "not a regular file"
            return Problem(shown, 1, 1, "error", f"{kind}; Farm loads only regular .kit files",
                           "give it a name not ending in .kit, or replace it with a definition file")
        if st.st_size > max_size:
            return Problem(shown, 1, 1, "error", f"file is {st.st_size} bytes, over the {max_size}-byte limit",
                           "split it into smaller files or raise --max-file-size")
        chunks: list[bytes] = []
        remaining = max_size + 1
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 1 << 16))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)
    except OSError as exc:
        return Problem(shown, 1, 1, "error", f"cannot read the file: {exc.strerror}", "check the file")
    finally:
        os.close(fd)


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
                    elif kitname.farm_loads(name):
                        yield shown  # an unsafe name (hidden, too long) is reported by run()
        else:
            yield given
