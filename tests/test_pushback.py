"""Push-back scenarios: changes made in the jobs service (jobs/save, jobs/remove, hand edits) reach git.

Every test runs the real thing: a bare remote seeded from sample-repo/, the Farm-compatible jobs
service over real HTTP with its DirectoryJobStore saving into the directory gitsync syncs, and the
gitsync agent with its watcher, debouncer and worker thread. Only events and explicit
`request_sync` calls drive the agent (the interval is an hour); nothing waits a fixed time.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import tomllib
from collections.abc import Iterable, Iterator
from typing import Any

import pytest
from pushback_support import (
    FORGE_TOKEN_ENV,
    SAMPLE_REPO,
    RemoteOutage,
    Site,
    Sites,
    changed_files,
    commit_count,
    conflict_branches,
    diff_lines,
    git_bytes,
    git_definitions,
    hammer,
    message,
    new_definition,
    wait_until,
)
from pushback_support import sites as sites  # fixture by import

from gitsync.testing.forge_standin import GitHubStandin, RunningStandin
from gitsync.testing.repos import RemoteRepo, git

HELLO = (SAMPLE_REPO / "jobs/hello-world.kit").read_text(encoding="utf-8")
GPU_CHECKS = (SAMPLE_REPO / "jobs/ops/gpu-checks.kit").read_text(encoding="utf-8")
BURST_DEFINITIONS = 10
BURST_SAVES = 1000
HELLO_ARGS = 'args = ["Hello from Omniverse Farm, synced by gitsync!"]'


@pytest.fixture
def site(sites: Sites, sample_remote: RemoteRepo) -> Site:
    """One agent in direct mode, after its first sync."""
    return sites.make(sample_remote)


def wait_for_commit(remote: RemoteRepo, before: int, what: str = "the push-back commit") -> None:
    wait_until(lambda: commit_count(remote) > before, what=what)


def wait_for_git_text(site: Site, target: str, repo_path: str) -> bytes:
    """Wait until the job directory holds exactly git's version of a file (the follow-up pull)."""
    wanted = git_bytes(site.remote, repo_path)
    assert wanted is not None, f"{repo_path} is not in git"
    wait_until(lambda: site.file(target).exists() and site.file(target).read_bytes() == wanted,
               what=f"{target} to hold git's text")
    return wanted


def trailer(remote: RemoteRepo, key: str, ref: str | None = None) -> str:
    """A trailer's value as git itself parses the commit message."""
    return git("log", "-1", f"--format=%(trailers:key={key},valueonly)", ref or "refs/heads/main", cwd=remote.bare)


def job_table(data: bytes | str, key: str) -> dict[str, Any]:
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    table: dict[str, Any] = tomllib.loads(text)["job"][key]
    return table


# -- 1. a new definition ------------------------------------------------------------------------


def test_save_new_definition_becomes_a_clean_file_in_git(site: Site, sample_remote: RemoteRepo) -> None:
    before = commit_count(sample_remote)

    site.jobs.save(new_definition("nightly-clean", "--all"))

    wait_for_commit(sample_remote, before)
    assert commit_count(sample_remote) == before + 1
    assert changed_files(sample_remote) == ["jobs/nightly-clean.kit"]
    text = git_bytes(sample_remote, "jobs/nightly-clean.kit")
    assert text is not None
    assert job_table(text, "nightly-clean") == {
        "name": "nightly-clean", "job_type": "base", "command": "/bin/echo", "args": ["--all"]}
    for noise in (b"job_spec_path", b"active", b"task_function", b"container", b"success_return_codes",
                  b"log_to_stdout", b"headless", b"[job.nightly-clean."):
        assert noise not in text, f"{noise!r} in the committed file:\n{text.decode()}"
    summary = message(sample_remote)
    assert "nightly-clean" in summary.splitlines()[0] and "jobs/save" in summary, summary
    assert "hand edit" not in summary, summary
    assert trailer(sample_remote, "Gitsync-Origin").strip(), f"no Gitsync-Origin trailer in:\n{summary}"

    # The follow-up pull replaces Farm's toml.dump text with git's, and Farm still serves it.
    wait_for_git_text(site, "nightly-clean.kit", "jobs/nightly-clean.kit")
    loaded = site.jobs.get("nightly-clean")
    assert loaded is not None and loaded["args"] == ["--all"] and loaded["command"] == "/bin/echo"
    assert site.outbox_length() == 0


def test_save_new_definition_without_args_commits_no_empty_defaults(site: Site, sample_remote: RemoteRepo) -> None:
    before = commit_count(sample_remote)

    site.jobs.save(new_definition("bare-minimum"))  # Farm writes args = [], env = {}, task_function = "" ...

    wait_for_commit(sample_remote, before)
    text = (git_bytes(sample_remote, "jobs/bare-minimum.kit") or b"").decode()
    assert job_table(text, "bare-minimum") == {"name": "bare-minimum", "job_type": "base", "command": "/bin/echo"}
    assert "args" not in text and "env" not in text and '""' not in text, text


# -- 2. and 3. saving an existing definition ------------------------------------------------------


def test_save_one_changed_field_commits_a_one_line_diff_keeping_comments(
        site: Site, sample_remote: RemoteRepo) -> None:
    before = commit_count(sample_remote)

    site.jobs.change("hello-world", args=["Hello from a jobs/save"])

    wait_for_commit(sample_remote, before)
    assert changed_files(sample_remote) == ["jobs/hello-world.kit"]
    assert diff_lines(sample_remote) == ([HELLO_ARGS], ['args = ["Hello from a jobs/save"]'])
    assert git_bytes(sample_remote, "jobs/hello-world.kit") == HELLO.replace(
        HELLO_ARGS, 'args = ["Hello from a jobs/save"]').encode()
    summary = message(sample_remote)
    assert "hello-world" in summary and "jobs/save" in summary, summary
    wait_for_git_text(site, "hello-world.kit", "jobs/hello-world.kit")


def test_save_without_semantic_change_makes_no_commit(site: Site, sample_remote: RemoteRepo) -> None:
    before = commit_count(sample_remote)

    with site.paused():
        site.jobs.change("hello-world")  # Farm rewrites the file with toml.dump; nothing means anything new
        assert b"job_spec_path" in site.file("hello-world.kit").read_bytes()
    site.cycle()

    assert commit_count(sample_remote) == before
    assert site.outbox_length() == 0
    site.cycle()
    assert commit_count(sample_remote) == before
    assert site.file("hello-world.kit").read_text(encoding="utf-8") == HELLO  # git's text, comments and all


# -- 4. removing --------------------------------------------------------------------------------


def test_remove_definition_of_single_definition_file_deletes_it_in_git(
        site: Site, sample_remote: RemoteRepo) -> None:
    before = commit_count(sample_remote)

    site.jobs.remove("hello-world")

    wait_for_commit(sample_remote, before)
    assert git_bytes(sample_remote, "jobs/hello-world.kit") is None
    assert changed_files(sample_remote) == ["jobs/hello-world.kit"]
    assert "hello-world" in message(sample_remote)
    assert "hello-world" not in site.jobs.load()
    site.cycle()
    assert not site.file("hello-world.kit").exists()
    assert "hello-world" not in site.jobs.load()
    assert site.outbox_length() == 0
    assert commit_count(sample_remote) == before + 1


def test_remove_definition_from_multi_definition_file_keeps_the_other_byte_identical(
        site: Site, sample_remote: RemoteRepo) -> None:
    before = commit_count(sample_remote)

    site.jobs.remove("check-driver")

    wait_for_commit(sample_remote, before)
    assert changed_files(sample_remote) == ["jobs/ops/gpu-checks.kit"]
    text = (git_bytes(sample_remote, "jobs/ops/gpu-checks.kit") or b"").decode()
    assert set(tomllib.loads(text)["job"]) == {"check-gpu"}
    kept = GPU_CHECKS[:GPU_CHECKS.index("# Print the installed driver version only.")]
    assert text.rstrip("\n") == kept.rstrip("\n"), text  # everything before the removed table, untouched
    removed, added = diff_lines(sample_remote)
    assert added == [] and "[job.check-driver]" in removed
    site.cycle()
    loaded = site.jobs.load()
    assert "check-gpu" in loaded and "check-driver" not in loaded
    assert site.outbox_length() == 0


# -- 5. and 6. hand edits ------------------------------------------------------------------------


def test_hand_edit_of_managed_file_is_committed_as_hand_edit(site: Site, sample_remote: RemoteRepo) -> None:
    before = commit_count(sample_remote)
    path = site.file("hello-world.kit")

    path.write_text(path.read_text(encoding="utf-8").replace('"/bin/echo"', '"/usr/bin/echo"'), encoding="utf-8")

    wait_for_commit(sample_remote, before)
    summary = message(sample_remote)
    assert "hand edit" in summary and "hello-world" in summary, summary
    assert diff_lines(sample_remote) == (['command = "/bin/echo"'], ['command = "/usr/bin/echo"'])
    site.cycle()
    assert commit_count(sample_remote) == before + 1
    assert site.jobs.get("hello-world")["command"] == "/usr/bin/echo"  # type: ignore[index]


def test_editor_atomic_save_makes_one_commit_without_temp_files(site: Site, sample_remote: RemoteRepo) -> None:
    before = commit_count(sample_remote)
    path = site.file("hello-world.kit")
    swap = site.file(".hello-world.kit.swp")
    swap.write_bytes(b"b0VIM 9.0\0\0binary swap junk")  # open in the editor the whole time
    backup = site.file("hello-world.kit~")
    backup.write_bytes(path.read_bytes())  # the editor's backup of the old version, left behind
    temp = site.file(".hello-world.kit.tmp~")
    temp.write_text(HELLO.replace(HELLO_ARGS, 'args = ["edited in an editor"]'), encoding="utf-8")

    os.replace(temp, path)
    wait_for_commit(sample_remote, before)
    swap.unlink()
    site.cycle()

    assert commit_count(sample_remote) == before + 1
    assert changed_files(sample_remote) == ["jobs/hello-world.kit"]
    assert diff_lines(sample_remote) == ([HELLO_ARGS], ['args = ["edited in an editor"]'])
    everything = git("ls-tree", "-r", "--name-only", "refs/heads/main", cwd=sample_remote.bare).splitlines()
    assert not [p for p in everything if p.endswith(("~", ".swp", ".tmp")) or "/." in p], everything
    assert backup.exists()  # not gitsync's to delete
    assert site.outbox_length() == 0


# -- 7. a burst ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_thousand_saves_in_a_burst_reach_git_in_few_commits(sites: Sites, sample_remote: RemoteRepo) -> None:
    # 10 new definitions saved 100 times each, ten clients at once. The jobs service runs as its own
    # process, as Farm does; it rescans the whole directory on every save (so does Farm), which makes
    # 200 x 5 cost minutes of jobs-service time rather than a test of gitsync.
    site = sites.make(sample_remote, jobs_process=True)
    names = [f"burst-{i:02d}" for i in range(BURST_DEFINITIONS)]
    rounds = BURST_SAVES // len(names)
    last = [f"round-{rounds - 1}"]
    before = commit_count(sample_remote)

    def save_repeatedly(name: str) -> None:
        for round_ in range(rounds):  # in order, so the last save of each definition must win
            site.jobs.save(new_definition(name, f"round-{round_}"))

    hammer([lambda n=name: save_repeatedly(n) for name in names], workers=len(names))

    def all_in_git() -> bool:
        found = git_definitions(sample_remote)
        return all(found.get(n, {}).get("args") == last for n in names)

    wait_until(all_in_git, timeout=30, what="every definition's last save in git")
    wait_until(lambda: site.outbox_length() == 0, what="the outbox to drain")
    site.cycle()
    made = commit_count(sample_remote) - before
    assert 1 <= made <= 20, f"{made} commits for {BURST_SAVES} saves"
    assert site.outbox_length() == 0
    loaded = site.jobs.load()
    assert all(loaded[n]["args"] == last for n in names)
    in_dir = site.definitions()
    assert all(in_dir[n]["args"] == last for n in names)
    assert all(site.file(f"{n}.kit").read_bytes() == git_bytes(sample_remote, f"jobs/{n}.kit") for n in names)


# -- 8. and 11. the remote is down ---------------------------------------------------------------


def test_remote_down_keeps_change_in_outbox_until_it_is_back(sites: Sites, sample_remote: RemoteRepo) -> None:
    site = sites.make(sample_remote, **{"push.max_backoff": 0.5})
    before = commit_count(sample_remote)

    with RemoteOutage(sample_remote) as outage:
        site.jobs.change("hello-world", args=["saved while the remote was down"])
        wait_until(lambda: site.outbox_length() >= 1 and site.status()["push_last_error"],
                   what="the failed push to be reported")
        site.cycle()
        status = site.status()
        assert status["outbox_length"] == 1 and status["push_last_error"]
        assert site.jobs.get("hello-world")["args"] == ["saved while the remote was down"]  # type: ignore[index]
        outage.restore()
        site.running.syncer.state.set(push_next_attempt=0)  # skip what is left of the backoff
        site.cycle_until(lambda: commit_count(sample_remote) > before, "the change to reach git")

    assert job_table(git_bytes(sample_remote, "jobs/hello-world.kit") or b"", "hello-world")["args"] == [
        "saved while the remote was down"]
    assert site.outbox_length() == 0
    assert site.status()["push_last_error"] == ""
    wait_for_git_text(site, "hello-world.kit", "jobs/hello-world.kit")


def test_restart_with_pending_outbox_pushes_after_restart(sites: Sites, sample_remote: RemoteRepo) -> None:
    site = sites.make(sample_remote, **{"push.max_backoff": 0.5})
    before = commit_count(sample_remote)

    with RemoteOutage(sample_remote):
        site.jobs.change("hello-world", args=["saved before the restart"])
        wait_until(lambda: site.outbox_length() >= 1 and site.status()["push_last_error"],
                   what="the failed push to be reported")
        site.stop_agent()

    site.start_agent()  # a new process on the same state directory

    # The backoff (at most 0.5 s here) may still hold the first attempt.
    site.cycle_until(lambda: commit_count(sample_remote) > before, "the change saved before the restart in git")
    assert job_table(git_bytes(sample_remote, "jobs/hello-world.kit") or b"", "hello-world")["args"] == [
        "saved before the restart"]
    assert site.outbox_length() == 0
    wait_for_git_text(site, "hello-world.kit", "jobs/hello-world.kit")
    assert site.jobs.get("hello-world")["args"] == ["saved before the restart"]  # type: ignore[index]


# -- 9. and 10. somebody else pushes ---------------------------------------------------------------


def test_concurrent_push_from_another_clone_is_rebased_onto(
        site: Site, sample_remote: RemoteRepo, monkeypatch: pytest.MonkeyPatch) -> None:
    mirror = site.running.pushback.mirror  # type: ignore[union-attr]
    real_push = mirror.push
    raced: list[str] = []

    def push_after_another_clone(sha: str, branch: str, *, force: bool = False) -> None:
        if not raced:  # someone else gets in between gitsync's fetch and its push
            sample_remote.pull()
            raced.append(sample_remote.commit(
                {"jobs/ops/asset-validate.kit": (SAMPLE_REPO / "jobs/ops/asset-validate.kit").read_text()
                 .replace('OMNI_LOG_LEVEL = "warning"', 'OMNI_LOG_LEVEL = "error"')}, "Quieter asset-validate"))
        real_push(sha, branch, force=force)

    monkeypatch.setattr(mirror, "push", push_after_another_clone)
    before = commit_count(sample_remote)

    site.jobs.change("hello-world", args=["saved while someone pushed"])

    wait_until(lambda: commit_count(sample_remote) >= before + 2, what="both commits")
    assert raced, "the other clone never pushed"
    subjects = sample_remote.log()
    assert subjects[1] == "Quieter asset-validate" and "hello-world" in subjects[0], subjects
    parents = git("log", "-1", "--format=%P", "refs/heads/main", cwd=sample_remote.bare).split()
    assert parents == [raced[0]]  # rebased onto the other clone's commit, no merge
    found = git_definitions(sample_remote)
    assert found["hello-world"]["args"] == ["saved while someone pushed"]
    assert found["asset-validate"]["env"]["OMNI_LOG_LEVEL"] == "error"
    assert conflict_branches(sample_remote) == []
    site.cycle()
    loaded = site.jobs.load()
    assert loaded["asset-validate"]["env"]["OMNI_LOG_LEVEL"] == "error"
    assert loaded["hello-world"]["args"] == ["saved while someone pushed"]
    assert site.status()["conflicts"] == []


def test_true_conflict_git_wins_and_local_version_goes_to_conflict_branch(
        site: Site, sample_remote: RemoteRepo) -> None:
    with site.paused():  # both changes happen before gitsync syncs again
        sample_remote.commit({"jobs/hello-world.kit": HELLO.replace(HELLO_ARGS, 'args = ["changed in git"]')},
                             "Change hello-world in git")
        before = commit_count(sample_remote)
        site.jobs.change("hello-world", args=["changed locally"])

    wait_until(lambda: conflict_branches(sample_remote, "hello-world"), what="a conflict branch")
    wait_until(lambda: site.jobs.get("hello-world")["args"] == ["changed in git"],  # type: ignore[index]
               what="git's version in /load")
    [branch] = conflict_branches(sample_remote, "hello-world")
    kept = git_bytes(sample_remote, "jobs/hello-world.kit", f"refs/heads/{branch}")
    assert job_table(kept or b"", "hello-world")["args"] == ["changed locally"]
    assert commit_count(sample_remote) == before  # nothing of the local side on main
    assert job_table(git_bytes(sample_remote, "jobs/hello-world.kit") or b"", "hello-world")["args"] == [
        "changed in git"]
    conflicts = site.status()["conflicts"]
    assert [(c["branch"], c["jobs"]) for c in conflicts] == [(branch, ["hello-world"])]
    wait_for_git_text(site, "hello-world.kit", "jobs/hello-world.kit")
    assert site.outbox_length() == 0


def pair(alpha: str, beta: str) -> str:
    """One file holding two definitions."""
    return (f'[job.alpha]\njob_type = "base"\ncommand = "/bin/echo"\nargs = ["{alpha}"]\n\n'
            f'[job.beta]\njob_type = "base"\ncommand = "/bin/echo"\nargs = ["{beta}"]\n')


def mirror_has(site: Site, sha: str) -> bool:
    done = subprocess.run(["git", "cat-file", "-e", sha], cwd=site.state_dir / "mirror.git", capture_output=True)
    return done.returncode == 0


def test_a_waiting_change_whose_base_a_force_push_and_maintenance_removed_is_still_pushed_cleanly(
        sites: Sites, sample_remote: RemoteRepo) -> None:
    # Maintenance with zero grace, on every cycle that fetched: whatever is unreachable goes at once.
    site = sites.make(sample_remote, **{"maintenance.prune_grace": 0, "maintenance.interval": 1,
                                        "maintenance.loose_objects": 1,
                                        "maintenance.max_packs": 1, "push.max_backoff": 1})
    sample_remote.commit({"jobs/pair.kit": pair("a0", "b0")}, "Add pair")
    forced_away = sample_remote.commit({"jobs/pair.kit": pair("a0", "b1")}, "Change beta")
    base = git("rev-parse", f"{forced_away}:jobs/pair.kit", cwd=sample_remote.bare)
    site.cycle_until(lambda: site.jobs.get("beta") and site.jobs.get("beta")["args"] == ["b1"],  # type: ignore[index]
                     "git's beta b1 in the job directory")
    hook = sample_remote.bare / "hooks" / "pre-receive"  # the remote refuses gitsync's pushes (a protected branch)
    hook.write_text('#!/bin/sh\nwhile read old new ref; do\n  if [ "$(git log -1 --format=%an "$new")" = gitsync ]; '
                    "then echo 'pushes from gitsync are frozen' >&2; exit 1; fi\ndone\n", encoding="utf-8")
    hook.chmod(0o755)

    site.jobs.change("alpha", args=["local"])  # made against beta b1: only alpha changed here
    wait_until(lambda: site.outbox_length() == 1 and site.status()["push_last_error"], what="the refused push")
    # Someone rewrites the branch: the commit the waiting change was made against is gone from it.
    git("reset", "--quiet", "--hard", "HEAD~1", cwd=sample_remote.work)
    sample_remote.commit({"jobs/pair.kit": pair("a0", "b2")}, "Change beta differently", push=False)
    sample_remote.push(force=True)
    site.cycle_until(lambda: not mirror_has(site, forced_away), "maintenance to prune the rewritten history")
    assert site.outbox_length() == 1
    assert mirror_has(site, base), "the git version the waiting change was made against was pruned"
    site.stop_agent()  # a restart meanwhile (a git process started before the prune may still see old packs)
    site.start_agent()

    hook.unlink()
    site.cycle_until(lambda: site.outbox_length() == 0, "the waiting change to be pushed")

    in_git = tomllib.loads(sample_remote.show("jobs/pair.kit"))["job"]
    assert (in_git["alpha"]["args"], in_git["beta"]["args"]) == (["local"], ["b2"])  # merged against its base
    assert conflict_branches(sample_remote) == []
    site.cycle_until(lambda: not mirror_has(site, base), "the base to be let go once the change is in git")


# -- 12. pull-request mode -----------------------------------------------------------------------


@pytest.fixture
def forge(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[GitHubStandin, str]]:
    token = "ghp_" + secrets.token_hex(12)
    monkeypatch.setenv(FORGE_TOKEN_ENV, token)
    standin = GitHubStandin(token=token, repository="acme/jobs")
    with RunningStandin(standin.app) as running:
        yield standin, running.url


@pytest.fixture
def pr_site(sites: Sites, sample_remote: RemoteRepo, forge: tuple[GitHubStandin, str]) -> Site:
    return sites.make(sample_remote, **{"push.mode": "pull-request", "push.forge_api_url": forge[1],
                                        "push.forge_repository": "acme/jobs",
                                        "push.forge_token_env": FORGE_TOKEN_ENV})


def pull_or_none(standin: GitHubStandin, number: int) -> dict[str, Any] | None:
    try:
        return standin.pull(number)
    except ValueError:
        return None


def created_pulls(standin: GitHubStandin) -> int:
    return sum(1 for r in standin.requests if r.method == "POST" and r.path == "/repos/acme/jobs/pulls")


def args_on_branch(remote: RemoteRepo, branch: str) -> list[str]:
    return list(job_table(git_bytes(remote, "jobs/hello-world.kit", f"refs/heads/{branch}") or b"",
                          "hello-world")["args"])


def open_first_pull_request(site: Site, standin: GitHubStandin, args: list[str]) -> dict[str, Any]:
    site.jobs.change("hello-world", args=args)
    pr: dict[str, Any] = wait_until(lambda: pull_or_none(standin, 1), what="a pull request")
    return pr


def test_pr_mode_save_opens_one_pull_request_and_keeps_local_change(
        pr_site: Site, sample_remote: RemoteRepo, forge: tuple[GitHubStandin, str]) -> None:
    standin = forge[0]
    main_before = sample_remote.remote_head()

    pr = open_first_pull_request(pr_site, standin, ["proposed"])

    branch = pr["head"]["ref"]
    assert branch.startswith("gitsync/changes/") and pr["base"]["ref"] == "main" and pr["state"] == "open"
    assert "hello-world" in pr["title"]
    assert args_on_branch(sample_remote, branch) == ["proposed"]
    assert sample_remote.remote_head() == main_before
    pr_site.cycle()
    pr_site.cycle()
    assert created_pulls(standin) == 1
    assert sample_remote.remote_head() == main_before
    assert pr_site.jobs.get("hello-world")["args"] == ["proposed"]  # type: ignore[index]
    assert pr_site.status()["open_pull_request"].endswith("/acme/jobs/pull/1")
    assert pr_site.outbox_length() == 1


def test_pr_mode_second_save_updates_the_same_pull_request(
        pr_site: Site, sample_remote: RemoteRepo, forge: tuple[GitHubStandin, str]) -> None:
    standin = forge[0]
    pr = open_first_pull_request(pr_site, standin, ["first proposal"])
    branch = pr["head"]["ref"]

    pr_site.jobs.change("hello-world", args=["second proposal"])
    pr_site.cycle()

    wait_until(lambda: args_on_branch(sample_remote, branch) == ["second proposal"], timeout=5,
               what="the pull request branch to carry the second save")
    assert created_pulls(standin) == 1
    assert pull_or_none(standin, 2) is None
    assert pr_site.jobs.get("hello-world")["args"] == ["second proposal"]  # type: ignore[index]

    git("update-ref", "refs/heads/main", f"refs/heads/{branch}", cwd=sample_remote.bare)
    standin.merge(pr["number"])
    pr_site.cycle()
    assert git_definitions(sample_remote)["hello-world"]["args"] == ["second proposal"]
    assert pr_site.jobs.get("hello-world")["args"] == ["second proposal"]  # type: ignore[index]


def test_pr_mode_merged_pull_request_settles_the_outbox(
        pr_site: Site, sample_remote: RemoteRepo, forge: tuple[GitHubStandin, str]) -> None:
    standin = forge[0]
    pr = open_first_pull_request(pr_site, standin, ["merged proposal"])
    branch = pr["head"]["ref"]

    git("update-ref", "refs/heads/main", f"refs/heads/{branch}", sample_remote.remote_head(), cwd=sample_remote.bare)
    standin.merge(pr["number"])
    pr_site.cycle()

    status = pr_site.status()
    assert status["open_pull_request"] is None and status["outbox_length"] == 0
    assert job_table(git_bytes(sample_remote, "jobs/hello-world.kit") or b"", "hello-world")["args"] == [
        "merged proposal"]
    wait_for_git_text(pr_site, "hello-world.kit", "jobs/hello-world.kit")
    assert pr_site.jobs.get("hello-world")["args"] == ["merged proposal"]  # type: ignore[index]

    # The next save opens a new pull request; closing it unmerged brings git's version back.
    pr_site.jobs.change("hello-world", args=["rejected proposal"])
    second = wait_until(lambda: pull_or_none(standin, 2), what="a second pull request")
    assert second["state"] == "open" and second["head"]["ref"].startswith("gitsync/changes/")
    standin.close(2)
    pr_site.cycle()

    assert pr_site.status()["open_pull_request"] is None and pr_site.outbox_length() == 0
    wait_for_git_text(pr_site, "hello-world.kit", "jobs/hello-world.kit")
    assert pr_site.jobs.get("hello-world")["args"] == ["merged proposal"]  # type: ignore[index]
    assert created_pulls(standin) == 2


def test_pr_mode_closed_pull_request_reverts_to_git(
        pr_site: Site, sample_remote: RemoteRepo, forge: tuple[GitHubStandin, str]) -> None:
    standin = forge[0]
    main_before = sample_remote.remote_head()
    pr = open_first_pull_request(pr_site, standin, ["rejected proposal"])

    standin.close(pr["number"])
    pr_site.cycle()

    assert pr_site.status()["open_pull_request"] is None and pr_site.outbox_length() == 0
    wait_for_git_text(pr_site, "hello-world.kit", "jobs/hello-world.kit")
    assert pr_site.file("hello-world.kit").read_text(encoding="utf-8") == HELLO
    assert pr_site.jobs.get("hello-world")["args"] == ["Hello from Omniverse Farm, synced by gitsync!"]  # type: ignore[index]
    assert sample_remote.remote_head() == main_before


# -- 13. push mode off ---------------------------------------------------------------------------


def test_push_mode_off_reverts_hand_edit_and_keeps_it_on_conflict_branch(
        sites: Sites, sample_remote: RemoteRepo) -> None:
    site = sites.make(sample_remote, **{"push.mode": "off"})
    main_before = sample_remote.remote_head()
    edited = HELLO.replace(HELLO_ARGS, 'args = ["edited by hand, mode off"]')

    site.file("hello-world.kit").write_text(edited, encoding="utf-8")

    wait_until(lambda: conflict_branches(sample_remote, "hello-world"), what="a conflict branch")
    wait_for_git_text(site, "hello-world.kit", "jobs/hello-world.kit")
    assert site.file("hello-world.kit").read_text(encoding="utf-8") == HELLO
    [branch] = conflict_branches(sample_remote, "hello-world")
    assert git_bytes(sample_remote, "jobs/hello-world.kit", f"refs/heads/{branch}") == edited.encode()
    assert sample_remote.remote_head() == main_before
    site.cycle()
    assert site.file("hello-world.kit").read_text(encoding="utf-8") == HELLO
    assert site.outbox_length() == 0
    assert conflict_branches(sample_remote) == [branch]


# -- 14. two agents on one branch ----------------------------------------------------------------


def test_two_agents_on_one_branch_exchange_changes_without_ping_pong(
        sites: Sites, sample_remote: RemoteRepo) -> None:
    a = sites.make(sample_remote, "a")
    b = sites.make(sample_remote, "b")
    before = commit_count(sample_remote)

    a.jobs.change("hello-world", args=["from A"])
    wait_for_commit(sample_remote, before, "A's commit")
    b.cycle()  # what a webhook would trigger
    assert b.jobs.get("hello-world")["args"] == ["from A"]  # type: ignore[index]

    b.jobs.change("check-gpu", args=["--from-b"])
    wait_for_commit(sample_remote, before + 1, "B's commit")
    a.cycle()
    assert a.jobs.get("check-gpu")["args"] == ["--from-b"]  # type: ignore[index]

    settled = commit_count(sample_remote)
    for _ in range(3):
        a.cycle()
        b.cycle()
    assert commit_count(sample_remote) == settled == before + 2
    assert a.definitions() == b.definitions()
    assert a.kit_files() == b.kit_files()
    assert a.jobs.load().keys() == b.jobs.load().keys()
    assert a.outbox_length() == b.outbox_length() == 0


# -- 15. an invalid hand edit --------------------------------------------------------------------


def test_invalid_hand_edit_is_blocked_until_fixed(site: Site, sample_remote: RemoteRepo) -> None:
    before = commit_count(sample_remote)
    path = site.file("hello-world.kit")

    path.write_text(HELLO.replace('command = "/bin/echo"\n', ""), encoding="utf-8")

    wait_until(lambda: site.status()["outbox_blocked"], what="the change to be blocked")
    [blocked] = site.status()["outbox_blocked"]
    assert blocked.startswith("hello-world.kit") and "command" in blocked, blocked
    site.cycle()
    assert commit_count(sample_remote) == before
    assert path.read_text(encoding="utf-8") == HELLO.replace('command = "/bin/echo"\n', "")  # not reverted

    path.write_text(HELLO.replace('"/bin/echo"', '"/usr/bin/echo"'), encoding="utf-8")

    wait_for_commit(sample_remote, before)
    assert diff_lines(sample_remote) == (['command = "/bin/echo"'], ['command = "/usr/bin/echo"'])
    site.cycle()
    assert site.status()["outbox_blocked"] == [] and site.outbox_length() == 0
    assert site.jobs.get("hello-world")["command"] == "/usr/bin/echo"  # type: ignore[index]


def test_the_commit_message_names_only_what_the_commit_holds_not_a_blocked_save(
        site: Site, sample_remote: RemoteRepo) -> None:
    before = commit_count(sample_remote)
    with site.paused():  # both edits meet in one cycle
        site.file("hello-world.kit").write_text(HELLO.replace('command = "/bin/echo"\n', ""), encoding="utf-8")
        site.file("gpu-checks.kit").write_text(GPU_CHECKS.replace('"--format=csv,noheader"', '"--format=csv"'),
                                               encoding="utf-8")
    wait_for_commit(sample_remote, before)
    assert changed_files(sample_remote) == ["jobs/ops/gpu-checks.kit"]
    text = message(sample_remote)
    assert "check-driver" in text
    assert "hello-world" not in text, text
    assert [b for b in site.status()["outbox_blocked"] if b.startswith("hello-world.kit")]


def test_a_local_file_that_does_not_parse_is_shown_in_status_and_pushed_once_it_does(
        site: Site, sample_remote: RemoteRepo) -> None:
    before = commit_count(sample_remote)
    path = site.file("hello-world.kit")
    # What toml.dump writes for a Windows path in a basic string: neither Farm nor gitsync can read it back.
    path.write_text(HELLO.replace('"/bin/echo"', '"C:\\xampp\\echo.exe"'), encoding="utf-8")

    site.cycle()

    assert site.status()["unreadable_local_files"] == ["hello-world.kit"]
    assert commit_count(sample_remote) == before
    path.write_text(HELLO.replace('"/bin/echo"', "'C:\\xampp\\echo.exe'"), encoding="utf-8")
    wait_for_commit(sample_remote, before)
    site.cycle()
    assert site.status()["unreadable_local_files"] == []


def test_a_file_still_unreadable_stays_in_status_after_a_cycle_that_did_not_look_at_it(
        site: Site, sample_remote: RemoteRepo) -> None:
    path = site.file("hello-world.kit")
    path.write_text(HELLO.replace('"/bin/echo"', '"C:\\xampp\\echo.exe"'), encoding="utf-8")
    site.cycle_until(lambda: site.status()["unreadable_local_files"] == ["hello-world.kit"], "the unreadable file")

    site.cycle()  # the watcher named nothing new: this cycle looks at no file

    assert site.status()["unreadable_local_files"] == ["hello-world.kit"]


# -- beyond the list: a save that lands while the pull is writing ------------------------------


def test_save_landing_while_the_pull_writes_is_not_lost(
        site: Site, sample_remote: RemoteRepo, monkeypatch: pytest.MonkeyPatch) -> None:
    target = site.running.syncer.target
    real_write_many = target.write_many
    saved_during_pull: list[str] = []

    def write_many(files: Iterable[tuple[str, bytes]], expected: Any, **options: Any) -> dict[str, str]:
        files = list(files)
        if not saved_during_pull and any(name == "hello-world.kit" for name, _ in files):
            # An operator saves after the pull planned to put git's text in place, before it is written.
            site.jobs.change("hello-world", args=["saved while the pull wrote"])
            saved_during_pull.append("hello-world")
        return real_write_many(files, expected, **options)

    monkeypatch.setattr(target, "write_many", write_many)
    before = commit_count(sample_remote)

    site.jobs.change("hello-world", args=["first save"])  # pushed, then the pull writes git's text back
    wait_until(lambda: saved_during_pull, what="the pull to write hello-world.kit")
    monkeypatch.setattr(target, "write_many", real_write_many)

    def second_save_in_git() -> bool:
        if git_definitions(sample_remote)["hello-world"]["args"] == ["saved while the pull wrote"]:
            return True
        site.cycle()
        return False

    wait_until(second_save_in_git, timeout=5, what="the save made during the pull to reach git")
    assert commit_count(sample_remote) == before + 2
    assert site.jobs.get("hello-world")["args"] == ["saved while the pull wrote"]  # type: ignore[index]


def test_save_duplicating_a_job_name_of_another_file_is_not_pushed(site: Site, sample_remote: RemoteRepo) -> None:
    before = commit_count(sample_remote)

    site.jobs.save(new_definition("check-gpu", "--fresh"))  # no job_spec_path: Farm creates check-gpu.kit
    site.cycle()

    assert commit_count(sample_remote) == before, changed_files(sample_remote)
    assert [b for b in site.status()["outbox_blocked"] if b.startswith("check-gpu.kit")]
    site.cycle()
    assert site.status()["last_result"] in ("synced", "noop", "partial")
