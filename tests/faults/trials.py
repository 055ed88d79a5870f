"""The trials of the fault-injection suite: one scenario per push mode, killed at a named point."""

from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pushback_support import SAMPLE_REPO

from faults.harness import Farm, arg_history, check_invariants, git_files, slow_receive, until_dead_or
from gitsync.testing.forge_standin import GitHubStandin
from gitsync.testing.repos import git


@dataclass(frozen=True)
class Step:
    label: str
    action: Callable[[], Any] | None
    done: Callable[[], Any]


def run_steps(farm: Farm, fault: str | None, steps: list[Step]) -> int:
    """Run the scenario with `fault` armed in the first process; restart after every SIGKILL. Returns the
    number of kills (a point that was never reached fails the trial: every point must be exercised).

    `receive:<n>` is not a point inside gitsync: the remote's `pre-receive` hook is made slow and the test
    kills gitsync from outside while the n-th push is being received (the push then lands anyway)."""
    receive = int(fault.split(":")[1]) if fault and fault.startswith("receive:") else 0
    if receive:
        slow_receive(farm.remote, farm.marker_dir)
        (farm.marker_dir / "slow").touch()
        fault = None
    seen = {"pushes": 0}

    def watching(done: Callable[[], Any]) -> Callable[[], Any]:
        def check() -> Any:
            marker = farm.marker_dir / "receiving"
            if receive and marker.exists():
                marker.unlink()
                seen["pushes"] += 1
                if seen["pushes"] == receive and farm.alive():
                    assert farm.process is not None
                    farm.process.send_signal(signal.SIGKILL)
                    return False
            return done()
        return check

    farm.start(fault)
    kills = 0
    for step in steps:
        if step.action is not None:
            step.action()
        while until_dead_or(farm, watching(step.done), step.label):
            farm.wait_killed()
            kills += 1
            farm.start()
    return kills


def directory_has(farm: Farm, target: str, repo_path: str) -> Callable[[], bool]:
    def check() -> bool:
        wanted = git_files(farm.remote).get(target)
        return (farm.directory / target).exists() and (farm.directory / target).read_bytes() == wanted \
            and farm.meta("applied_commit") == farm.remote.remote_head()
    return check


def git_has(farm: Farm, value: str) -> Callable[[], bool]:
    return lambda: arg_history(farm.remote, "hello-world", "jobs/hello-world.kit")[-1:] == [value] \
        and farm.settled()


def direct_trial(farm: Farm, fault: str | None) -> int:
    """Saves and git commits in turn: the initial apply, capture, commit, push, settle, the pull of a change,
    of a deletion, and the pull that brings git's text of a save back."""
    remote = farm.remote
    gpu = (SAMPLE_REPO / "jobs/ops/gpu-checks.kit").read_text()
    saves = ["v1 from jobs/save", "v2 from jobs/save", "v3 from jobs/save"]
    steps = [
        Step("the first sync", None, lambda: farm.meta("applied_commit") == remote.remote_head()),
        Step("save v1 to reach git", lambda: farm.save("hello-world", saves[0]), git_has(farm, saves[0])),
        Step("a git change to arrive",
             lambda: remote.commit_as_a_person({"jobs/ops/gpu-checks.kit": gpu + "\n# tuned\n"}, "Tune gpu-checks"),
             directory_has(farm, "gpu-checks.kit", "jobs/ops/gpu-checks.kit")),
        Step("save v2 to reach git", lambda: farm.save("hello-world", saves[1]), git_has(farm, saves[1])),
        Step("a deletion in git to arrive",
             lambda: remote.commit_as_a_person({"jobs/render/usd-render.kit": None}, "Retire usd-render"),
             lambda: not (farm.directory / "usd-render.kit").exists() and farm.settled()),
        Step("save v3 to reach git", lambda: farm.save("hello-world", saves[2]), git_has(farm, saves[2])),
    ]
    kills = run_steps(farm, fault, steps)
    check_invariants(farm, saves)
    return kills


def open_pull(standin: GitHubStandin, value: str, farm: Farm) -> Callable[[], Any]:
    """An open pull request whose branch holds `value` for hello-world."""
    def check() -> Any:
        for number in range(1, 20):
            try:
                pr = standin.pull(number)
            except ValueError:
                break
            if pr["state"] == "open":
                history = arg_history(farm.remote, "hello-world", "jobs/hello-world.kit",
                                      f"refs/heads/{pr['head']['ref']}")
                if history[-1:] == [value]:
                    return pr
        return None
    return check


def merge(farm: Farm, standin: GitHubStandin, find: Callable[[], Any]) -> None:
    pr = find()
    git("update-ref", "refs/heads/main", f"refs/heads/{pr['head']['ref']}", farm.remote.remote_head(),
        cwd=farm.remote.bare)
    standin.merge(pr["number"])


def pr_trial(farm: Farm, standin: GitHubStandin, fault: str | None) -> int:
    """Two proposals, each opened, merged by a person and settled."""
    remote = farm.remote
    saves = ["v1 proposed", "v2 proposed"]
    first, second = open_pull(standin, saves[0], farm), open_pull(standin, saves[1], farm)
    steps = [
        Step("the first sync", None, lambda: farm.meta("applied_commit") == remote.remote_head()),
        Step("a pull request for v1", lambda: farm.save("hello-world", saves[0]), first),
        Step("v1 merged and settled", lambda: merge(farm, standin, first), git_has(farm, saves[0])),
        Step("a pull request for v2", lambda: farm.save("hello-world", saves[1]), second),
        Step("v2 merged and settled", lambda: merge(farm, standin, second), git_has(farm, saves[1])),
    ]
    kills = run_steps(farm, fault, steps)
    check_invariants(farm, saves)
    assert pull_count(standin) == 2, f"expected one pull request per proposal, got {pull_count(standin)}"
    return kills


def pull_count(standin: GitHubStandin) -> int:
    count = 0
    while _exists(standin, count + 1):
        count += 1
    return count


def _exists(standin: GitHubStandin, number: int) -> bool:
    try:
        standin.pull(number)
        return True
    except ValueError:
        return False
