"""Each crash case of issue 7's "What was found", against gitsync as a real process."""

from __future__ import annotations

from pushback_support import new_definition

from faults.harness import (
    SAMPLE_HELLO,
    Farm,
    arg_history,
    check_invariants,
    conflict_branches,
    forge,
    git_files,
    slow_receive,
)
from faults.trials import merge, open_pull, pull_count
from gitsync.testing.repos import RemoteRepo
from gitsync.testing.waiting import wait_until

TIMEOUT = 60.0
HELLO_ARGS = 'args = ["Hello from Omniverse Farm, synced by gitsync!"]'


def first_sync(farm: Farm) -> None:
    wait_until(lambda: farm.meta("applied_commit") == farm.remote.remote_head(), TIMEOUT, "the first sync")


def test_a_later_save_is_not_reverted_after_a_crash_while_receive_pack_runs(
        sample_remote: RemoteRepo, make_farm) -> None:  # type: ignore[no-untyped-def]
    farm: Farm = make_farm(sample_remote)
    slow_receive(sample_remote, farm.marker_dir)
    farm.start()
    first_sync(farm)
    (farm.marker_dir / "slow").touch()
    farm.save("hello-world", "v1")
    wait_until((farm.marker_dir / "receiving").exists, TIMEOUT, "the push to be in receive-pack")
    farm.kill()  # the push still lands, as it would over a network
    wait_until(lambda: arg_history(sample_remote, "hello-world", "jobs/hello-world.kit")[-1:] == ["v1"], TIMEOUT,
               "the interrupted push to land")
    (farm.marker_dir / "slow").unlink()
    farm.save("hello-world", "v2")
    farm.start()
    check_invariants(farm, ["v1", "v2"])
    assert farm.jobs.get("hello-world")["args"] == ["v2"]  # type: ignore[index]


def interrupted_apply(make_farm, sample_remote: RemoteRepo) -> Farm:  # type: ignore[no-untyped-def]
    """The pull writes v2 from git and gitsync dies before recording it."""
    farm: Farm = make_farm(sample_remote)
    farm.start("apply.written:2")
    first_sync(farm)
    sample_remote.commit({"jobs/hello-world.kit": SAMPLE_HELLO.replace(HELLO_ARGS, 'args = ["v2 from git"]')},
                         "v2 in git")
    farm.wait_killed()
    assert b"v2 from git" in (farm.directory / "hello-world.kit").read_bytes()
    return farm


def test_an_interrupted_apply_is_not_pushed_back_when_git_reverts_it(
        sample_remote: RemoteRepo, make_farm) -> None:  # type: ignore[no-untyped-def]
    farm = interrupted_apply(make_farm, sample_remote)
    sample_remote.commit({"jobs/hello-world.kit": SAMPLE_HELLO}, "Revert v2")
    farm.start()
    farm.wait_settled()
    assert farm.kit_files() == git_files(sample_remote)
    assert [m for m in sample_remote.log() if "from hand edit" in m or "from jobs/save" in m] == []
    assert conflict_branches(sample_remote) == []


def test_an_interrupted_apply_makes_no_conflict_when_git_moves_forward(
        sample_remote: RemoteRepo, make_farm) -> None:  # type: ignore[no-untyped-def]
    farm = interrupted_apply(make_farm, sample_remote)
    sample_remote.commit({"jobs/hello-world.kit": SAMPLE_HELLO.replace(HELLO_ARGS, 'args = ["v3 from git"]')},
                         "v3 in git")
    farm.start()
    farm.wait_settled()
    assert farm.kit_files() == git_files(sample_remote)
    assert [m for m in sample_remote.log() if "from hand edit" in m or "from jobs/save" in m] == []
    assert conflict_branches(sample_remote) == []


def test_pr_mode_a_crash_between_opening_a_pr_and_recording_it_opens_no_second_pr(
        sample_remote: RemoteRepo, make_farm) -> None:  # type: ignore[no-untyped-def]
    with forge() as (standin, url):
        farm: Farm = make_farm(sample_remote, mode="pull-request", forge_url=url)
        farm.start("pr.opened:1")
        first_sync(farm)
        farm.save("hello-world", "proposed")
        farm.wait_killed()
        assert pull_count(standin) == 1
        farm.start()
        find = open_pull(standin, "proposed", farm)
        wait_until(lambda: farm.meta("last_result") in ("synced", "noop") and find(), TIMEOUT, "the PR recorded")
        farm.save("hello-world", "proposed again")
        wait_until(open_pull(standin, "proposed again", farm), TIMEOUT, "the PR updated")
        assert pull_count(standin) == 1
        merge(farm, standin, open_pull(standin, "proposed again", farm))
        check_invariants(farm, ["proposed again"])


def test_pr_mode_a_save_pushed_to_a_pr_merged_meanwhile_is_not_dropped(
        sample_remote: RemoteRepo, make_farm) -> None:  # type: ignore[no-untyped-def]
    with forge() as (standin, url):
        farm: Farm = make_farm(sample_remote, mode="pull-request", forge_url=url)
        farm.start("pr.pushed:2")  # the second push to the PR branch: v2 is on it, not yet recorded
        first_sync(farm)
        farm.save("hello-world", "v1")
        wait_until(open_pull(standin, "v1", farm), TIMEOUT, "the PR with v1")
        farm.save("hello-world", "v2")
        farm.wait_killed()
        merge(farm, standin, open_pull(standin, "v2", farm))  # a person merges while gitsync is down
        farm.start()
        check_invariants(farm, ["v2"])


def test_pr_mode_a_save_landing_after_the_pr_update_but_before_its_merge_is_proposed_again(
        sample_remote: RemoteRepo, make_farm) -> None:  # type: ignore[no-untyped-def]
    with forge() as (standin, url):
        farm: Farm = make_farm(sample_remote, mode="pull-request", forge_url=url)
        farm.start()
        first_sync(farm)
        farm.save("hello-world", "v1")
        first = open_pull(standin, "v1", farm)
        wait_until(first, TIMEOUT, "the PR with v1")
        farm.kill()
        farm.save("hello-world", "v2")  # saved, not proposed yet ...
        merge(farm, standin, first)  # ... when the PR with v1 is merged
        farm.start()
        wait_until(open_pull(standin, "v2", farm), TIMEOUT, "a PR proposing v2")
        merge(farm, standin, open_pull(standin, "v2", farm))
        check_invariants(farm, ["v1", "v2"])


def test_pr_mode_a_new_definition_re_saved_just_before_its_pr_merges_is_no_conflict(
        sample_remote: RemoteRepo, make_farm) -> None:  # type: ignore[no-untyped-def]
    with forge() as (standin, url):
        farm: Farm = make_farm(sample_remote, mode="pull-request", forge_url=url)
        farm.start()
        first_sync(farm)
        farm.jobs.save(new_definition("night-clean", "first"))
        wait_until(lambda: pull_count(standin) == 1 and standin.pull(1)["state"] == "open", TIMEOUT, "the PR")
        wait_until(lambda: farm.outbox_length() == 1 and farm.meta("last_result") in ("synced", "noop"), TIMEOUT,
                   "the PR recorded")
        farm.kill()
        farm.jobs.change("night-clean", args=["second"])
        pr = standin.pull(1)
        from gitsync.testing.repos import git

        git("update-ref", "refs/heads/main", f"refs/heads/{pr['head']['ref']}", sample_remote.remote_head(),
            cwd=sample_remote.bare)
        standin.merge(1)
        farm.start()
        wait_until(lambda: pull_count(standin) == 2, TIMEOUT, "a PR proposing the second save")
        assert conflict_branches(sample_remote) == []
        second = standin.pull(2)
        merge(farm, standin, lambda: second)
        farm.wait_settled()
        assert arg_history(sample_remote, "night-clean", "jobs/night-clean.kit") == ["first", "second"]
        assert conflict_branches(sample_remote) == []
