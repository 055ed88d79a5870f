"""A shallow mirror (repo.fetch_depth, issues 10 and 13): the state directory is bounded by the current tree,
not by the repository's history, and every answer that needs older history deepens the mirror on demand
instead of being wrong. Real git remotes on disk, the real CLI and agent."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pull_helpers import Ran, gitsync, kit
from pull_helpers import isolated as isolated  # fixtures by import: tmpfs tmp_path, cwd + env isolation
from pull_helpers import ram_tmp_path as ram_tmp_path

from gitsync.agent import Agent, build_agent
from gitsync.cli import EXIT_OK
from gitsync.config import OPTIONS, Settings, load_settings
from gitsync.gitrepo import GitMirror
from gitsync.maintenance import Maintenance
from gitsync.sync import Syncer
from gitsync.testing.repos import RemoteRepo, git

HELLO = "jobs/hello-world.kit"
DEPTH = 3
DEFAULT_DEPTH = next(o.default for o in OPTIONS if o.key == "repo.fetch_depth")


def settings_for(remote: RemoteRepo, root: Path, **overrides: Any) -> Settings:
    flags: dict[str, Any] = {"repo.url": remote.url, "repo.path": "jobs", "target.directory": str(root / "defs"),
                             "state.dir": str(root / "state"), "sync.interval": 3600.0, "server.listen": "",
                             "repo.fetch_depth": DEPTH}
    flags.update(overrides)
    return load_settings(None, flags, environ={})


def commits_in(mirror: GitMirror) -> int:
    """Every commit object the mirror holds on disk, reachable or not."""
    out = subprocess.run(["git", "cat-file", "--batch-all-objects", "--batch-check=%(objecttype)"],
                         cwd=mirror.path, capture_output=True, text=True, check=True).stdout
    return out.split().count("commit")


def hello(*args: str, command: str = "/bin/echo") -> str:
    return kit("hello-world", args=args, command=command)


def others(remote: RemoteRepo, count: int, prefix: str = "o", *, force: bool = False) -> None:
    """`count` commits that each change another file, pushed at once (so they count as history, fast)."""
    for i in range(count):
        remote.commit({f"jobs/{prefix}{i % 3}.kit": kit(f"{prefix}{i % 3}", args=(str(i),))}, f"{prefix} {i}",
                      push=False)
    remote.push(force=force)


def prune_now(syncer: Syncer) -> None:
    """A full maintenance pass that folds everything into one pack and drops what is unreachable at once."""
    from dataclasses import replace

    settings = replace(syncer.settings, maintenance_prune_grace=0.0, maintenance_loose_objects=1,
                       maintenance_max_packs=0)
    Maintenance(settings, syncer.state, syncer.mirror).run()


@pytest.fixture
def shallow(sample_remote: RemoteRepo, tmp_path: Path) -> Iterator[Syncer]:
    s = Syncer.from_settings(settings_for(sample_remote, tmp_path))
    assert s.sync().result == "synced"
    yield s
    s.close()


def test_the_mirror_is_shallow_by_default() -> None:
    assert DEFAULT_DEPTH == 50


def test_a_shallow_mirror_keeps_about_depth_commits_however_many_are_pushed(sample_remote: RemoteRepo,
                                                                            tmp_path: Path) -> None:
    """What was found: the mirror held the whole history, so the state directory grew with every commit (+263 %
    for a fresh clone in the 10-minute soak). With the default depth it holds the last commits only."""
    s = Syncer.from_settings(settings_for(sample_remote, tmp_path, **{"repo.fetch_depth": DEFAULT_DEPTH}))
    depth = s.settings.repo_fetch_depth
    try:
        for round_ in range(3):
            others(sample_remote, depth, prefix=f"r{round_}-")
            assert s.sync().result == "synced"
            prune_now(s)
        kept = commits_in(s.mirror)
    finally:
        s.close()
    assert len(sample_remote.log()) > 3 * depth
    assert kept <= depth + 2  # the boundary moves with the branch; what fell below it is pruned


@pytest.mark.parametrize("mirror", ["kept", "lost"])
def test_a_fast_forward_past_the_shallow_boundary_is_not_taken_for_a_force_push(sample_remote: RemoteRepo,
                                                                               tmp_path: Path, mirror: str) -> None:
    """The applied commit fell below the boundary of the new fetch (or the mirror was lost and fetched again
    without it): the mirror deepens instead of refusing."""
    import shutil

    s = Syncer.from_settings(settings_for(sample_remote, tmp_path, **{"sync.on_force_push": "refuse"}))
    try:
        assert s.sync().result == "synced"
        others(sample_remote, 4 * DEPTH)
        prune_now(s)
        if mirror == "lost":
            s.mirror.close()
            shutil.rmtree(s.mirror.path)
        result = s.sync()
    finally:
        s.close()
    assert result.result == "synced", result.message
    assert result.head == sample_remote.remote_head()


def test_the_previous_head_just_past_the_boundary_needs_no_deepening(sample_remote: RemoteRepo, tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    """At depth 1 every fetch marks the new head shallow although its parent, the applied commit, is in the
    mirror: the ancestry check follows that real parent instead of fetching more history each cycle."""
    import logging

    s = Syncer.from_settings(settings_for(sample_remote, tmp_path, **{"repo.fetch_depth": 1,
                                                                       "sync.on_force_push": "refuse"}))
    try:
        assert s.sync().result == "synced"
        with caplog.at_level(logging.DEBUG, logger="gitsync.git"):
            for i in range(3):
                sample_remote.commit({"jobs/o0.kit": kit("o0", args=(str(i),))})
                assert s.sync().result == "synced"
                prune_now(s)  # the applied commit's own parent is gone: only the real parent links show the way
    finally:
        s.close()
    assert not [r for r in caplog.records if "deepening" in r.getMessage()]


def synced_then_rewritten(s: Syncer, remote: RemoteRepo) -> str:
    """Sync two commits, then force-push a branch without them, longer than the mirror's depth; returns the
    commit the sync applied."""
    start = remote.head()
    others(remote, 2)
    assert s.sync().result == "synced"
    applied = str(s.state.get("applied_commit"))
    git("reset", "--quiet", "--hard", start, cwd=remote.work)  # rewrite: drop the applied commit
    others(remote, 4 * DEPTH, prefix="rewritten", force=True)
    return applied


def test_a_force_push_is_still_detected_on_a_shallow_mirror(sample_remote: RemoteRepo, tmp_path: Path) -> None:
    s = Syncer.from_settings(settings_for(sample_remote, tmp_path, **{"sync.on_force_push": "refuse"}))
    try:
        applied = synced_then_rewritten(s, sample_remote)
        result = s.sync()
        still = s.state.get("applied_commit")
    finally:
        s.close()
    assert result.result == "error" and "force-push" in result.message
    assert still == applied


def test_a_refused_force_push_costs_the_whole_history_once_not_per_new_commit(
        sample_remote: RemoteRepo, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """While sync.on_force_push = refuse holds the applied commit, people push on the rewritten branch: each new
    head is judged from the commits it added to the one already found not to contain the applied commit."""
    import logging

    s = Syncer.from_settings(settings_for(sample_remote, tmp_path, **{"sync.on_force_push": "refuse"}))
    try:
        applied = synced_then_rewritten(s, sample_remote)
        assert s.sync().result == "error"  # the whole history fetched once, to be sure
        prune_now(s)
        with caplog.at_level(logging.INFO, logger="gitsync.git"):
            for i in range(2):
                sample_remote.commit({"jobs/later.kit": kit("later", args=(str(i),))})
                result = s.sync()
                assert result.result == "error" and "force-push" in result.message
                prune_now(s)  # what fell below the boundary is gone again
        git("merge", "--quiet", "--no-edit", applied, cwd=sample_remote.work)  # the old history merged back
        sample_remote.push()
        merged = s.sync()
    finally:
        s.close()
    assert not [r for r in caplog.records if "deepening" in r.getMessage()]
    assert merged.result == "synced", merged.message  # the applied commit is in the branch's history again


def site_run(capsys: pytest.CaptureFixture[str], remote: RemoteRepo, root: Path, *argv: str) -> Ran:
    return gitsync(capsys, argv[0], "--repo", remote.url, "--path", "jobs", "--target", str(root / "defs"),
                   "--state-dir", str(root / "state"), *argv[1:])


@pytest.mark.parametrize("where", ["at the boundary", "below the boundary"])
def test_rollback_of_a_commit_at_or_below_the_shallow_boundary(sample_remote: RemoteRepo, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str],
                                                               monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    """At the boundary git reports no parents (a revert would empty the tree); below it the commit is not in the
    mirror at all ("not a commit in branch"). Both deepen the mirror and revert exactly that commit."""
    monkeypatch.setenv("GITSYNC_REPO_FETCH_DEPTH", str(DEPTH))
    original = (sample_remote.work / HELLO).read_text()
    bad = sample_remote.commit({HELLO: hello("bad")}, "Break hello-world's greeting")
    others(sample_remote, DEPTH - 1 if where == "at the boundary" else 3 * DEPTH)
    assert site_run(capsys, sample_remote, tmp_path, "sync", "--once").code == 0
    mirror = tmp_path / "state" / "mirror.git"
    shallow = (mirror / "shallow").read_text().split()
    assert (bad in shallow) if where == "at the boundary" else not (mirror / "objects").joinpath(bad[:2], bad[2:]
                                                                                              ).exists()

    ran = site_run(capsys, sample_remote, tmp_path, "rollback", bad[:10])

    assert ran.code == EXIT_OK, ran.err + ran.out
    assert sample_remote.log()[0] == "Revert \"Break hello-world's greeting\""
    assert (tmp_path / "defs" / "hello-world.kit").read_text() == original
    tree = git("ls-tree", "-r", "--name-only", "main", "--", "jobs", cwd=sample_remote.bare).split()
    assert {"jobs/o0.kit", "jobs/o1.kit", HELLO} <= set(tree)  # only that commit was reverted


@pytest.mark.parametrize("pin", ["tag", "abbreviated commit", "full commit"])
def test_a_pin_to_an_old_tag_or_commit_below_the_shallow_boundary(sample_remote: RemoteRepo, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str],
                                                                  monkeypatch: pytest.MonkeyPatch, pin: str) -> None:
    monkeypatch.setenv("GITSYNC_REPO_FETCH_DEPTH", str(DEPTH))
    release = sample_remote.commit({HELLO: hello("release 1")}, "release 1")
    git("tag", "v1", cwd=sample_remote.work)
    git("push", "--quiet", "origin", "v1", cwd=sample_remote.work)
    others(sample_remote, 3 * DEPTH)
    sample_remote.commit({HELLO: hello("work in progress")}, "wip")
    assert site_run(capsys, sample_remote, tmp_path, "sync", "--once").code == 0
    ref = {"tag": "v1", "abbreviated commit": release[:10], "full commit": release}[pin]

    ran = site_run(capsys, sample_remote, tmp_path, "sync", "--once", "--ref", ref)

    assert ran.code == EXIT_OK, ran.err + ran.out
    assert '"release 1"' in (tmp_path / "defs" / "hello-world.kit").read_text()
    assert site_run(capsys, sample_remote, tmp_path, "sync", "--once").code == 0  # unpinned: the head again
    assert '"work in progress"' in (tmp_path / "defs" / "hello-world.kit").read_text()


REJECT = "#!/bin/sh\necho 'protected branch: pushes are refused' >&2\nexit 1\n"


def test_push_back_of_a_change_whose_base_fell_below_the_shallow_boundary(sample_remote: RemoteRepo,
                                                                          tmp_path: Path) -> None:
    """A local change waits in the outbox (pushes refused) while the branch moves on past the boundary and
    maintenance prunes; its base is kept, so it is still carried onto git's file and pushed."""
    hook = sample_remote.bare / "hooks" / "pre-receive"
    agent: Agent = build_agent(settings_for(sample_remote, tmp_path, **{"push.debounce": 0.01}))
    try:
        agent.run_once("test")
        target = tmp_path / "defs" / "hello-world.kit"
        base_commit = agent.syncer.state.get("applied_commit")
        hook.write_text(REJECT)
        hook.chmod(0o755)
        target.write_text(target.read_text().replace("Hello from Omniverse Farm, synced by gitsync!", "saved locally"))
        agent.run_once("test")  # captured; the push is refused
        assert agent.pushback is not None and len(agent.pushback.outbox.entries()) == 1
        hook.unlink()  # a person's commits: the same definition (another line), then past the boundary
        sample_remote.pull()
        text = (sample_remote.work / HELLO).read_text()
        sample_remote.commit({HELLO: text.replace("the smallest useful Farm job", "a small Farm job")}, "comment")
        others(sample_remote, 3 * DEPTH)
        hook.write_text(REJECT)
        hook.chmod(0o755)
        agent.syncer.state.set(push_next_attempt=0)
        agent.run_once("test")  # the pull applies the new head; the local change still waits
        assert isinstance(agent.syncer, Syncer)
        prune_now(agent.syncer)
        assert not agent.syncer.mirror.has_commit(base_commit)  # its commit is gone from the mirror
        hook.unlink()
        agent.syncer.state.set(push_next_attempt=0)

        agent.run_once("test")
        waiting = agent.status()["outbox_length"]
    finally:
        agent.syncer.close()
    pushed = sample_remote.show(HELLO, "main")
    assert '"saved locally"' in pushed and "a small Farm job" in pushed
    assert waiting == 0


def test_maintenance_keeps_the_outbox_bases_of_every_target_sharing_the_mirror(shallow: Syncer,
                                                                               sample_remote: RemoteRepo,
                                                                               tmp_path: Path) -> None:
    """Several `[[target]]` tables share one mirror, each with its own database: a base waiting in the second
    target's outbox is kept from pruning as well as the first's."""
    from dataclasses import replace

    from gitsync.outbox import Outbox
    from gitsync.state import State

    old = shallow.mirror.list_tree(shallow.mirror.resolve("refs/gitsync/applied"), "jobs")[HELLO].blob
    other = State(tmp_path / "other-target")
    Outbox(other).put("hello-world.kit", repo_path=HELLO, base_blob=old, local_blob=None, content=b"local",
                      origin="hand edit")
    sample_remote.commit({HELLO: hello("changed in git")})
    others(sample_remote, 3 * DEPTH)
    assert shallow.sync().result == "synced"  # deepens to see the applied commit in the new head's history
    shallow.sync()  # the next fetch cuts the history back to the depth
    upkeep = Maintenance(replace(shallow.settings, maintenance_prune_grace=0.0, maintenance_loose_objects=1,
                                 maintenance_max_packs=0), shallow.state, shallow.mirror)
    upkeep.other_states = lambda: [other]
    hour_ago = time.time() - 3600  # everything fetched so far is past any grace period
    for path in (shallow.mirror.path / "objects").rglob("*"):
        os.utime(path, (hour_ago, hour_ago))
    try:
        upkeep.run()
        kept = shallow.mirror.blob_sizes_present([old])[old]
    finally:
        other.close()
    assert kept > 0
