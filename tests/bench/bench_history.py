"""A big history: which fetch gets a first sync and a one-file change done fastest.

Builds (with `git fast-import`) a repository of `--commits` commits over `--files` files, of which
`--defs` are definitions under jobs/, every commit touching `--touch` files; then measures, best of
`--repeat` interleaved runs after a warm-up:

- gitsync's first sync (`sync --once` into an empty state) with a full fetch (`repo.fetch_depth = 0`),
  the default shallow one (`repo.fetch_depth = 50`) and the shallowest (`1`), its `sync --once` after a
  one-file commit with each, and the size of its state directory on disk after that;
- what plain git pays for the same first look with every way of fetching less: a full bare clone,
  `--depth 1`, `--filter=blob:none` (partial; blobs of jobs/ then fetched on demand by `ls-tree` +
  `cat-file`), and `--depth 1 --filter=blob:none --sparse` with `sparse-checkout set jobs`;
- the baseline of bench_pull/bench_change: `git clone --depth 1` + copying the .kit files.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pull import BenchError, Clock, definition, git, gitsync_command, isolate_environment, log, run  # noqa: E402

from gitsync.config import OPTIONS  # noqa: E402


def build(root: Path, commits: int, files: int, defs: int, touch: int) -> tuple[Path, list[str]]:
    """A bare repo written by one `git fast-import` stream: quick at any size."""
    bare = root / "remote.git"
    git("init", "--quiet", "--bare", "--initial-branch=main", bare)
    git("config", "uploadpack.allowFilter", "true", cwd=bare)  # partial clones, as every big forge allows
    git("config", "uploadpack.allowAnySHA1InWant", "true", cwd=bare)
    rng = random.Random(7)
    kits = [definition(i, rng) for i in range(defs)]
    others = [f"src/module-{i // 500:03d}/file-{i:06d}.txt" for i in range(files - defs)]
    paths = [p for p, _ in kits] + others
    proc = subprocess.Popen(["git", "fast-import", "--quiet", "--done"], cwd=bare, stdin=subprocess.PIPE)
    assert proc.stdin is not None
    out = proc.stdin
    stamp = 1_700_000_000

    def blob(data: bytes) -> None:
        out.write(b"data %d\n" % len(data) + data + b"\n")

    for number in range(commits):
        message = f"change {number}".encode()
        out.write(b"commit refs/heads/main\n")
        out.write(f"committer Bench <bench@example.com> {stamp + number * 60} +0000\n".encode())
        out.write(b"data %d\n%s\n" % (len(message), message))
        if number == 0:
            for path, text in kits:
                out.write(f"M 100644 inline {path}\n".encode())
                blob(text.encode())
            for path in others:
                out.write(f"M 100644 inline {path}\n".encode())
                blob(f"{path}\nversion 0\n".encode() * 20)
        else:
            for path in rng.sample(paths, touch):
                out.write(f"M 100644 inline {path}\n".encode())
                blob(f"{path}\nversion {number}\n".encode() * (20 if path.endswith(".txt") else 1)
                     if path.endswith(".txt") else (dict(kits)[path] + f"\n# version {number}\n").encode())
    out.write(b"done\n")
    out.close()
    if proc.wait() != 0:
        raise BenchError("git fast-import failed")
    git("gc", "--quiet", "--aggressive" if commits <= 500 else "--auto", cwd=bare)
    return bare, [p for p, _ in kits]


DEFAULT_DEPTH = next(o.default for o in OPTIONS if o.key == "repo.fetch_depth")


def disk_kib(path: Path, glob: str = "**/*") -> int:
    """Allocated size on disk (as `du` counts it) of the files under `path` matching `glob`."""
    files = [path] if path.is_file() else [p for p in path.glob(glob) if p.is_file()]
    return sum(p.stat().st_blocks * 512 for p in files) // 1024


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--commits", type=int, default=5000)
    parser.add_argument("--files", type=int, default=50_000)
    parser.add_argument("--defs", type=int, default=2000)
    parser.add_argument("--touch", type=int, default=10, help="files changed by each commit (default 10)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tmp", type=Path, default=None)
    parser.add_argument("--no-partial", action="store_true",
                        help="skip the partial clone (--filter=blob:none), which takes minutes per run")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="gitsync-bench-history-", dir=args.tmp))
    isolate_environment(root / "home", root / "pycache")
    try:
        log(f"building {args.commits} commits, {args.files} files, {args.defs} definitions")
        bare, kits = build(root, args.commits, args.files, args.defs, args.touch)
        log("repo: " + git("count-objects", "-vH", cwd=bare).replace("\n", ", "))
        url = f"file://{bare}"
        gitsync = gitsync_command()
        work = root / "work"
        git("clone", "--quiet", "--depth", "1", url, work)
        edits = [0]

        def commit_one() -> None:
            edits[0] += 1
            path = work / kits[edits[0] % len(kits)]
            path.write_text(path.read_text() + f"# bench edit {edits[0]}\n")
            git("commit", "--quiet", "-am", f"bench edit {edits[0]}", cwd=work)
            git("push", "--quiet", "origin", "HEAD:main", cwd=work)

        def fresh(name: str) -> Path:
            base = root / "runs" / name
            shutil.rmtree(base, ignore_errors=True)
            base.mkdir(parents=True)
            os.sync()
            return base

        def gitsync_first(depth: int) -> float:
            base = fresh(f"gitsync-{depth}")
            env = {**os.environ, "GITSYNC_REPO_FETCH_DEPTH": str(depth)}
            with Clock() as clock:
                run([*gitsync, "sync", "--once", "--repo", url, "--path", "jobs", "--target", base / "target",
                     "--state-dir", base / "state"], env=env)
            if len(os.listdir(base / "target")) != len(kits):
                raise BenchError("first sync did not write every definition")
            return clock.timing.wall

        def gitsync_change(depth: int) -> float:
            base = root / "runs" / f"gitsync-{depth}"
            env = {**os.environ, "GITSYNC_REPO_FETCH_DEPTH": str(depth)}
            commit_one()
            with Clock() as clock:
                run([*gitsync, "sync", "--once", "--repo", url, "--path", "jobs", "--target", base / "target",
                     "--state-dir", base / "state"], env=env)
            return clock.timing.wall

        def shell(script: str) -> float:
            base = fresh("git")
            with Clock() as clock:
                run(["sh", "-c", script.format(url=url, dir=base / "repo", out=base / "out")])
            return clock.timing.wall

        depths = (0, DEFAULT_DEPTH, 1)
        cases = {
            "gitsync first sync, full fetch (fetch_depth 0)": lambda: gitsync_first(0),
            f"gitsync first sync, shallow fetch (fetch_depth {DEFAULT_DEPTH}, the default)":
                lambda: gitsync_first(DEFAULT_DEPTH),
            "gitsync first sync, shallow fetch (fetch_depth 1)": lambda: gitsync_first(1),
            "git: bare clone, full": lambda: shell("git clone --quiet --bare {url} {dir}"),
            "git: bare clone --depth 1": lambda: shell("git clone --quiet --bare --depth 1 {url} {dir}"),
            "git: bare clone --filter=blob:none + the blobs of jobs/": lambda: shell(
                "git clone --quiet --bare --filter=blob:none {url} {dir} && cd {dir} && "
                "git ls-tree -r --format='%(objectname)' HEAD -- jobs | git cat-file --batch > /dev/null"),
            "git: --depth 1 --filter=blob:none --sparse, sparse-checkout jobs": lambda: shell(
                "git clone --quiet --depth 1 --filter=blob:none --sparse {url} {dir} && cd {dir} && "
                "git sparse-checkout set jobs"),
            "baseline: git clone --depth 1 + cp of the .kit files": lambda: shell(
                "git clone --quiet --depth 1 {url} {dir} && mkdir {out} && "
                "find {dir}/jobs -name '*.kit' -exec cp -t {out} {{}} +"),
        }
        if args.no_partial:
            del cases["git: bare clone --filter=blob:none + the blobs of jobs/"]
        best: dict[str, float] = {}
        for round_ in range(args.repeat + 1):
            for name, how in cases.items():
                value = how()
                if round_:
                    best[name] = min(best.get(name, value), value)
            for depth in depths:
                name = f"gitsync `sync --once` after a one-file commit, fetch_depth {depth}"
                value = gitsync_change(depth)
                if round_:
                    best[name] = min(best.get(name, value), value)
            log(f"round {round_} done")
        floor = best["baseline: git clone --depth 1 + cp of the .kit files"]
        print(f"{args.commits} commits, {args.files} files, {args.defs} definitions; best of {args.repeat}")
        print("| what | time | vs clone --depth 1 + cp |\n|---|---|---|")
        for name, value in best.items():
            print(f"| {name} | {value:.2f} s | {value / floor:.2f}× |")
        print("\n| state directory on disk after the runs | mirror | state.sqlite3 |\n|---|---|---|")
        for depth in depths:
            state = root / "runs" / f"gitsync-{depth}" / "state"
            print(f"| fetch_depth {depth} | {disk_kib(state / 'mirror.git') / 1024:.1f} MiB | "
                  f"{disk_kib(state, 'state.sqlite3') / 1024:.1f} MiB |")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
