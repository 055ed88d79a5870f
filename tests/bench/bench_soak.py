#!/usr/bin/env python3
"""Soak: `gitsync run` for ten minutes under steady load, then idle; does anything grow?

    python tests/bench/bench_soak.py [--minutes 10] [--idle-minutes 5] [--definitions 200]

In a temp dir: a bare remote with --definitions definitions of about 1.5 KB, the Farm-compatible
jobs service (in this process) over gitsync's job directory, and `gitsync run --interval 2` as
its own process with default settings. Every second one commit lands on the remote and one
`POST /save` reaches the jobs service (different definitions, so they never conflict). Every
5 s it samples the agent's RSS, file descriptors, threads and descendant processes (from /proc),
the state directory's size on disk (allocated blocks) and the mirror's object count. Afterwards
it checks that nothing was lost (the job directory holds every last commit, git every last save),
then idles and counts the agent's log lines.

Printed: the samples, growth from the first minute to the end of the load (medians of the samples
in the second minute and in the last minute of the load: the state directory is a saw-tooth as
loose objects and the SQLite log grow and are packed and folded in), and the targets from
issue 13: RSS, fds, children and threads flat (<= 10 %); state directory <= 25 % larger than
after the first minute; log lines of an idle hour (extrapolated) <= 20. The repository's own
history grows too (1,200 commits in 10 minutes), so the baseline measured in the same run is a
fresh `git clone --bare` of the remote after the first minute and at the end, the least any
mirror of that history takes; the state directory's growth is also shown net of it. It exits
non-zero only when the run itself failed (something lost, the agent did not exit 0).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from benchenv import isolate_environment

from gitsync.testing.soak import Sample, run_soak, table

FLAT = 10.0  # %: RSS, fds, children, threads
STATE_GROWTH = 25.0  # %: the state directory on disk
IDLE_LINES_PER_HOUR = 20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--idle-minutes", type=float, default=5)
    parser.add_argument("--definitions", type=int, default=200)
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (its path is printed)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gitsync-soak-"))
    isolate_environment(work / "home")
    started = time.monotonic()
    result = run_soak(work, seconds=args.minutes * 60, idle=args.idle_minutes * 60, definitions=args.definitions,
                      progress=lambda m: print(f"[soak {time.strftime('%H:%M:%S')}] {m}", file=sys.stderr, flush=True))
    print(table([s.row() for s in result.samples], Sample.HEADERS))
    load = args.minutes * 60
    first_window, last_window = (60.0, 120.0), (load - 60.0, load)
    print(f"\n{result.commits} commits and {result.saves} saves in {args.minutes:.0f} min, "
          f"{result.compactions} mirror compaction(s); lost: {len(result.lost)}; agent exit {result.exit_code}; "
          f"{time.monotonic() - started:.0f} s in all")
    rows = []
    for name, label, limit in (("rss_kib", "RSS KiB", FLAT), ("fds", "fds", FLAT), ("children", "children", FLAT),
                               ("threads", "threads", FLAT), ("state_kib", "state dir KiB on disk", STATE_GROWTH),
                               ("objects", "mirror objects", None), ("loose", "loose objects", None)):
        a, b = result.median(name, *first_window), result.median(name, *last_window)
        growth = (b - a) * 100.0 / a if a else 0.0
        verdict = "" if limit is None else ("PASS" if growth <= limit else "FAIL")
        rows.append((label, a, b, f"{growth:+.1f} %", f"<= {limit:.0f} %" if limit is not None else "", verdict))
    h_first, h_end = result.history_kib
    first_state = result.median("state_kib", *first_window)
    last_state = result.median("state_kib", *last_window)
    net = (last_state - (h_end - h_first) - first_state) * 100.0 / first_state if first_state else 0.0
    rows.append(("  baseline: fresh bare clone KiB", h_first, h_end, f"{(h_end - h_first) * 100.0 / h_first:+.1f} %"
                 if h_first else "", "", ""))
    rows.append(("  state dir net of that growth", first_state, last_state - (h_end - h_first), f"{net:+.1f} %",
                 f"<= {STATE_GROWTH:.0f} %", "PASS" if net <= STATE_GROWTH else "FAIL"))
    end = result.load_end
    rows.append(("state dir KiB right after the load", "", end.state_kib, "", "", ""))
    rows.append(("state dir KiB at the end of the idle time", "", result.samples[-1].state_kib, "", "", ""))
    idle_rate = result.idle_lines_per_hour
    idle_verdict = "PASS" if idle_rate <= IDLE_LINES_PER_HOUR else "FAIL"
    rows.append(("log lines / idle hour", "", f"{idle_rate:.0f}", f"({result.idle_lines} in "
                 f"{result.idle_seconds / 60:.0f} min)", f"<= {IDLE_LINES_PER_HOUR}", idle_verdict))
    print(f"\ngrowth: medians of the samples in the second minute ({first_window[0]:.0f}-{first_window[1]:.0f} s) "
          f"and in the last minute of the load ({last_window[0]:.0f}-{last_window[1]:.0f} s):")
    print(table(rows, ("what", "first minute", "end", "growth", "target", "result")))
    for line in result.lost[:20]:
        print("LOST:", line)
    if args.keep:
        print(f"kept: {work} (agent log: {result.log_path})")
    return 1 if result.lost or result.exit_code != 0 else 0


if __name__ == "__main__":
    sys.exit(main())
