"""gitsync SIGKILLed at named points of its cycle, restarted, and checked against issue 7's invariants.

The default run tries a few points (one per area); `pytest -m faults tests/faults` runs every point.
"""

from __future__ import annotations

import pytest

from faults.harness import forge
from faults.trials import direct_trial, pr_trial
from gitsync.testing.repos import RemoteRepo

#: point:n — the n-th time the process passes the point (the scenario passes each of these).
DIRECT_POINTS = [
    *(f"pull.fetched:{n}" for n in (1, 2, 3, 5, 8)),
    *(f"pull.validated:{n}" for n in (1, 2, 4, 7)),
    *(f"apply.journalled:{n}" for n in (1, 2, 3, 4, 5)),
    *(f"apply.written:{n}" for n in (1, 2, 3, 4, 5)),
    *(f"apply.recorded:{n}" for n in (1, 2, 3, 4)),
    *(f"record.state:{n}" for n in (1, 2, 3, 6)),
    *(f"capture.put:{n}" for n in (1, 2, 3)),
    *(f"flush.committed:{n}" for n in (1, 2, 3)),
    *(f"flush.pushed:{n}" for n in (1, 2, 3)),
    *(f"flush.acknowledged:{n}" for n in (1, 2, 3)),
    *(f"receive:{n}" for n in (1, 2, 3)),  # killed from outside while a slow pre-receive hook runs
]
PR_POINTS = [
    *(f"pr.pushed:{n}" for n in (1, 2)),
    *(f"pr.opened:{n}" for n in (1, 2)),
    *(f"pr.recorded:{n}" for n in (1, 2)),
    *(f"pr.settled:{n}" for n in (1, 2)),
    "flush.acknowledged:1", "capture.put:1", "apply.written:2",
]
#: The default run's short version: one kill in the pull, capture, push and PR areas (receive:1 is the named
#: test in test_found.py).
SHORT_DIRECT = {"apply.written:2", "capture.put:1", "flush.pushed:1"}
SHORT_PR = {"pr.opened:1"}


def marks(point: str, short: set[str]) -> list[pytest.MarkDecorator]:
    return [] if point in short else [pytest.mark.faults]


@pytest.mark.parametrize("point", [pytest.param(p, marks=marks(p, SHORT_DIRECT)) for p in DIRECT_POINTS])
def test_direct_mode_survives_a_kill_at(point: str, sample_remote: RemoteRepo, make_farm) -> None:  # type: ignore[no-untyped-def]
    farm = make_farm(sample_remote)
    assert direct_trial(farm, point) >= 1
    assert farm.stop() < 30


@pytest.mark.parametrize("point", [pytest.param(p, marks=marks(p, SHORT_PR)) for p in PR_POINTS])
def test_pull_request_mode_survives_a_kill_at(point: str, sample_remote: RemoteRepo, make_farm) -> None:  # type: ignore[no-untyped-def]
    with forge() as (standin, url):
        farm = make_farm(sample_remote, mode="pull-request", forge_url=url)
        assert pr_trial(farm, standin, point) >= 1
        assert farm.stop() < 30
