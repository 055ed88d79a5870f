"""The pure decisions of jobs-api push-back's poll: what counts as a change, and when vanished definitions
are a store that lost its data rather than someone's `/remove`."""

from __future__ import annotations

import pytest

from gitsync.api_capture import changed, mass_vanish
from gitsync.api_plan import Applied, fingerprint, normalise

MINE = {"hello": Applied("jobs/hello.kit", "f-hello"), "render": Applied("jobs/render.kit", "f-render")}


@pytest.mark.parametrize(("current", "pending", "baseline", "expected"), [
    # what gitsync saved, unchanged: nothing
    ({"hello": "f-hello", "render": "f-render"}, {}, {}, {}),
    # saved over through /save: a change to the new version
    ({"hello": "f-new", "render": "f-render"}, {}, {}, {"hello": "f-new"}),
    # removed through /remove: a change to nothing
    ({"render": "f-render"}, {}, {}, {"hello": None}),
    # the operator's own definition, as it was at the first look: not a change
    ({"hello": "f-hello", "render": "f-render", "legacy": "f-legacy"}, {}, {"legacy": "f-legacy"}, {}),
    # ... saved over since: an ordinary change
    ({"hello": "f-hello", "render": "f-render", "legacy": "f-2"}, {}, {"legacy": "f-legacy"}, {"legacy": "f-2"}),
    # created after the first look: a change
    ({"hello": "f-hello", "render": "f-render", "nightly": "f-n"}, {}, {}, {"nightly": "f-n"}),
    # waiting in the outbox and unchanged since: nothing new
    ({"hello": "f-new", "render": "f-render"}, {"hello": "f-new"}, {}, {}),
    # waiting, then saved again: the newer version
    ({"hello": "f-newer", "render": "f-render"}, {"hello": "f-new"}, {}, {"hello": "f-newer"}),
    # a removal waiting in the outbox, still removed: nothing new
    ({"render": "f-render"}, {"hello": None}, {}, {}),
])
def test_what_counts_as_a_change(current: dict[str, str], pending: dict[str, str | None],
                                 baseline: dict[str, str], expected: dict[str, str | None]) -> None:
    assert changed(current, MINE, pending, baseline) == expected


def test_farms_filled_in_fields_do_not_change_the_fingerprint() -> None:
    in_git = normalise("hello", {"job_type": "base", "command": "/bin/echo", "args": ["hi"]})
    loaded = normalise("hello", {"name": "hello", "job_type": "base", "command": "/bin/echo", "args": ["hi"],
                                 "job_spec_path": "/srv/jobs/hello.kit", "task_function": "", "container": "",
                                 "env": {}, "active": True, "extension_paths": [], "success_return_codes": [0]})
    assert fingerprint(in_git) == fingerprint(loaded)


@pytest.mark.parametrize(("found", "lost"), [
    ({"hello": None}, []),  # one /remove
    ({"hello": None, "render": None}, ["hello", "render"]),  # every definition gitsync saved, at once
    ({"hello": None, "render": "f-x"}, []),  # one removed, one changed
])
def test_most_definitions_vanishing_at_once_is_not_pushed_as_deletions(
        found: dict[str, str | None], lost: list[str]) -> None:
    assert mass_vanish(found, MINE, {}, 0.5) == lost
