"""Several targets from one repository (`[[target]]`): a job directory and a jobs service (the stand-in over
real HTTP) with different include rules, fed from one fetch; one failing never stops the other; each
reported on its own; a single-target state carried over without a resync; clear configuration errors."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest

from gitsync.agent import Agent, build_agent
from gitsync.api_sync import ApiSyncer
from gitsync.cli import EXIT_ERROR, EXIT_OK, EXIT_REFUSED, main
from gitsync.config import load_settings
from gitsync.errors import ConfigError
from gitsync.testing.repos import RemoteRepo
from gitsync.testing.waiting import wait_until

from .conftest import NO_WAIT, Service

#: The jobs service on its directory store (its Redis store is covered by the jobs-api tests).
on_a_service = pytest.mark.parametrize("service", ["directory"], indirect=True)

LINUX = '[job.linux-render]\njob_type = "base"\ncommand = "/bin/echo"\nargs = ["linux"]\n'
WINDOWS = '[job.win-render]\njob_type = "base"\ncommand = "cmd.exe"\nargs = ["windows"]\n'
SHARED = '[job.shared-check]\njob_type = "base"\ncommand = "nvidia-smi"\n'


def seed(remote: RemoteRepo) -> str:
    remote.commit({"jobs/linux/render.kit": LINUX, "jobs/windows/win.kit": WINDOWS, "jobs/shared/check.kit": SHARED},
                  "definitions for two farms")
    return remote.head()


def write_config(root: Path, remote: RemoteRepo, service_url: str, key_file: Path, *, extra: str = "") -> Path:
    config = root / "gitsync.toml"
    config.write_text(
        f'[repo]\nurl = "{remote.url}"\npath = "jobs"\n'
        f'[state]\ndir = "{root / "state"}"\n[sync]\ninterval = 3600\n[push]\nmode = "off"\n'
        f'[server]\nlisten = "127.0.0.1:0"\n'
        f'[[target]]\nname = "linux"\nkind = "jobs-api"\nurl = "{service_url}"\napi_key_file = "{key_file}"\n'
        f'include = ["linux/**", "shared/**"]\n'
        f'[[target]]\nname = "windows"\ndirectory = "{root / "windows-jobs"}"\n'
        f'include = ["windows/**", "shared/**"]\n{extra}', encoding="utf-8")
    (root / "windows-jobs").mkdir(exist_ok=True)
    return config


def start(config: Path, agents: list[Agent]) -> Agent:
    agent = build_agent(load_settings(str(config), environ={}))
    agents.append(agent)
    agent.start()
    assert agent.wait_for_syncs(1, 30), "the first cycle did not finish"
    return agent


def cycle(agent: Agent) -> None:
    done = agent.syncs_done
    agent.request_sync("test")
    assert agent.wait_for_syncs(done + 1, 30), "the requested cycle did not finish"


def get(agent: Agent, path: str) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{agent.server_port}{path}", trust_env=False, timeout=10)


def metric(text: str, name: str, **labels: str) -> float | None:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(f"{name}{{{wanted}}} "):
            return float(line.rsplit(" ", 1)[1])
    return None


@on_a_service
def test_two_targets_with_different_include_rules_each_get_their_own_definitions_from_one_fetch(
        tmp_path: Path, remote: RemoteRepo, service: Service, key_file: Path, agents: list[Agent]) -> None:
    head = seed(remote)
    agent = start(write_config(tmp_path, remote, service.url, key_file), agents)
    assert set(service.load()) == {"linux-render", "shared-check"}
    assert sorted(p.name for p in (tmp_path / "windows-jobs").iterdir()) == ["check.kit", "win.kit"]

    fetches = 0
    fetch = agent.syncer.mirror.fetch

    def counted() -> str:
        nonlocal fetches
        fetches += 1
        return fetch()

    agent.syncer.mirror.fetch = counted  # type: ignore[method-assign]
    remote.commit({"jobs/shared/check.kit": SHARED.replace("nvidia-smi", "nvidia-smi -q")}, "change the shared one")
    cycle(agent)
    assert fetches == 1, "both targets are served by one fetch per cycle"
    assert service.load()["shared-check"]["command"] == "nvidia-smi -q"
    assert "nvidia-smi -q" in (tmp_path / "windows-jobs" / "check.kit").read_text()

    status = get(agent, "/status").json()
    assert set(status["targets"]) == {"linux", "windows"} and status["failing_targets"] == []
    for name in ("linux", "windows"):
        assert status["targets"][name]["applied_commit"] == remote.head() != head
        assert status["targets"][name]["last_result"] == "synced"
    assert status["targets"]["linux"]["definitions"] == 2 and status["targets"]["windows"]["owned_files"] == 2
    metrics = get(agent, "/metrics").text
    assert metric(metrics, "gitsync_owned_files", target="linux") == 2.0
    assert metric(metrics, "gitsync_owned_files", target="windows") == 2.0
    assert metric(metrics, "gitsync_syncs_total", result="synced", target="windows") == 2.0


@on_a_service
def test_a_jobs_service_that_is_down_fails_only_its_target_and_status_says_which(
        tmp_path: Path, remote: RemoteRepo, service: Service, key_file: Path, agents: list[Agent],
        capsys: pytest.CaptureFixture[str]) -> None:
    seed(remote)
    config = write_config(tmp_path, remote, service.url, key_file)
    agent = start(config, agents)
    linux = agent.units[0].syncer
    assert isinstance(linux, ApiSyncer)
    linux.target.client._retry = NO_WAIT  # the test is about which target fails, not how long retries wait
    service.stop()
    remote.commit({"jobs/windows/win.kit": WINDOWS.replace('"windows"', '"windows 2"'),
                   "jobs/linux/render.kit": LINUX.replace('"linux"', '"linux 2"')}, "change both")
    cycle(agent)
    assert '"windows 2"' in (tmp_path / "windows-jobs" / "win.kit").read_text(), "the directory target applied"
    status = get(agent, "/status").json()
    assert status["failing_targets"] == ["linux"] and status["last_result"] == "error"
    linux, windows = status["targets"]["linux"], status["targets"]["windows"]
    assert linux["last_result"] == "error" and linux["consecutive_failures"] == 1
    assert linux["applied_commit"] != remote.head() and "127.0.0.1" in linux["last_message"]
    assert windows["last_result"] == "synced" and windows["applied_commit"] == remote.head()
    metrics = get(agent, "/metrics").text
    assert metric(metrics, "gitsync_consecutive_failures", target="linux") == 1.0
    assert metric(metrics, "gitsync_consecutive_failures", target="windows") == 0.0
    page = get(agent, "/").text
    assert "1 of 2 target(s) failing: linux" in page
    assert re.search(r"<tr id='target-linux' class='bad'>.*?<td>error</td>", page)
    assert re.search(r"<tr id='target-windows' class='ok'>.*?<td>synced</td>", page)
    agent.stop()

    assert main(["status", "--config", str(config)]) == EXIT_ERROR
    text = capsys.readouterr().out
    assert re.search(r"failing\s+1 of 2 target\(s\): linux", text)
    assert "[target windows] (directory)" in text and "[target linux] (jobs-api)" in text
    service.start()
    assert main(["sync", "--once", "--config", str(config)]) == EXIT_OK
    assert service.load()["linux-render"]["args"] == ["linux 2"]
    assert main(["status", "--format", "json", "--config", str(config)]) == EXIT_OK
    report = json.loads(capsys.readouterr().out)
    assert {n: t["applied_commit"] for n, t in report["targets"].items()} == {"linux": remote.head(),
                                                                           "windows": remote.head()}


@on_a_service
def test_plan_shows_each_targets_own_changes(
        tmp_path: Path, remote: RemoteRepo, service: Service, key_file: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    seed(remote)
    config = write_config(tmp_path, remote, service.url, key_file)
    assert main(["plan", "--format", "json", "--config", str(config)]) == 4  # a sync would change something
    plans = json.loads(capsys.readouterr().out)["targets"]
    assert sorted(a["target"] for a in plans["windows"]["actions"]) == ["check.kit", "win.kit"]
    assert sorted(a["name"] for a in plans["linux"]["actions"]) == ["linux-render", "shared-check"]
    assert main(["plan", "--config", str(config)]) == 4
    text = capsys.readouterr().out
    assert re.search(r"\[target linux\] \(jobs-api\)\n  commit nothing applied -> \w+: 2 definition\(s\)", text)
    assert re.search(r"\[target windows\] \(directory\)\n  commit nothing applied -> \w+: 2 definition file", text)


@on_a_service
def test_a_single_target_state_becomes_the_named_targets_without_a_resync(
        tmp_path: Path, remote: RemoteRepo, service: Service, key_file: Path) -> None:
    head = seed(remote)
    directory = tmp_path / "windows-jobs"
    directory.mkdir()
    single = tmp_path / "single.toml"
    single.write_text(f'[repo]\nurl = "{remote.url}"\npath = "jobs"\n[state]\ndir = "{tmp_path / "state"}"\n'
                      f'[target]\ndirectory = "{directory}"\ninclude = ["windows/**", "shared/**"]\n',
                      encoding="utf-8")
    assert main(["sync", "--once", "--config", str(single)]) == EXIT_OK
    before = {p.name: p.stat().st_mtime_ns for p in directory.iterdir()}

    config = write_config(tmp_path, remote, service.url, key_file)
    assert main(["sync", "--once", "--config", str(config)]) == EXIT_OK
    assert {p.name: p.stat().st_mtime_ns for p in directory.iterdir()} == before, "nothing was written again"
    assert (tmp_path / "state" / "targets" / "windows" / "state.sqlite3").is_file()
    assert not (tmp_path / "state" / "state.sqlite3").exists()
    assert main(["history", "--format", "json", "--config", str(config)]) == EXIT_OK
    settings = load_settings(str(config), environ={})
    from gitsync.state import State
    from gitsync.target_set import target_state_dir

    windows = State(target_state_dir(settings.targets()[1]))
    try:
        rows = windows.history()
        assert windows.get("applied_commit") == head and windows.get("last_result") == "noop"
        assert [r.result for r in rows] == ["synced"], "its history carried over; the second sync changed nothing"
    finally:
        windows.close()


def test_the_environment_cannot_set_a_target_setting_with_several_targets(
        tmp_path: Path, remote: RemoteRepo, key_file: Path) -> None:
    config = write_config(tmp_path, remote, "http://farm-linux:8222/queue/management/jobs", key_file)
    with pytest.raises(ConfigError, match="GITSYNC_TARGET_URL sets target.url, which is ambiguous with 2 "
                                          r"\[\[target\]\] tables .*: set url in the \[\[target\]\] table"):
        load_settings(str(config), environ={"GITSYNC_TARGET_URL": "http://other:8222/queue/management/jobs"})


@pytest.mark.parametrize(("tables", "says"), [
    ('[[target]]\nname = "a"\ndirectory = "/srv/a"\n[[target]]\nname = "a"\ndirectory = "/srv/b"\n',
     "two [[target]] tables are named 'a'"),
    ('[[target]]\nname = "a"\ndirectory = "/srv/a"\n[[target]]\nname = "b"\ndirectory = "/srv/x/../a"\n',
     "[[target]] 'a' and 'b' both point at directory /srv/a"),
    ('[[target]]\nname = "a"\ndirectory = "/srv/a"\n[[target]]\ndirectory = "/srv/b"\n',
     "[[target]] number 2 has no name"),
    ('[[target]]\nname = "a b"\ndirectory = "/srv/a"\n', "name must be 1-40 letters, digits"),
    ('[[target]]\nname = "a"\ndirectory = "/srv/a"\nbranch = "x"\n', "unknown key 'branch' in [[target]] number 1"),
    ('[[target]]\nname = "a"\ndirectory = "/srv/a"\n[[target]]\nname = "b"\nkind = "jobs-api"\n',
     "[[target]] 'b' (kind = jobs-api) needs url"),
    ('[[target]]\nname = "a"\ndirectory = "/srv/a"\nfile_mode = "0400"\n', "[[target]] 'a': target.file_mode"),
], ids=["duplicate name", "same directory", "no name", "unsafe name", "unknown key", "no url", "bad value"])
def test_a_wrong_target_list_is_one_line(tmp_path: Path, tables: str, says: str) -> None:
    config = tmp_path / "gitsync.toml"
    config.write_text(f'[repo]\nurl = "/srv/repo.git"\n{tables}', encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape(says)) as raised:
        load_settings(str(config), environ={})
    assert "\n" not in str(raised.value)


def test_one_unnamed_target_table_is_the_default_target_and_takes_the_environment(tmp_path: Path) -> None:
    config = tmp_path / "gitsync.toml"
    config.write_text('[repo]\nurl = "/srv/repo.git"\n[[target]]\ndirectory = "/srv/a"\n', encoding="utf-8")
    settings = load_settings(str(config), environ={"GITSYNC_TARGET_DIRECTORY": "/srv/b"})
    assert [(t.target_name, t.target_directory) for t in settings.targets()] == [("default", "/srv/b")]



@on_a_service
def test_duplicate_job_names_are_checked_per_target_and_a_bad_file_refuses_only_the_target_that_gets_it(
        tmp_path: Path, remote: RemoteRepo, service: Service, key_file: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    seed(remote)
    config = write_config(tmp_path, remote, service.url, key_file)
    assert main(["sync", "--once", "--config", str(config)]) == EXIT_OK
    # The same job name in a linux and a windows file: each target gets one of them, so neither minds.
    remote.commit({"jobs/windows/render.kit": LINUX.replace('"linux"', '"windows too"')}, "same name, other farm")
    assert main(["sync", "--once", "--config", str(config)]) == EXIT_OK
    assert "windows too" in (tmp_path / "windows-jobs" / "render.kit").read_text()
    # A second linux-render in a file only the linux target gets: that target refuses the commit, alone.
    remote.commit({"jobs/linux/again.kit": LINUX.replace('"linux"', '"twice"'),
                   "jobs/windows/win.kit": WINDOWS.replace('"windows"', '"windows 3"')}, "a duplicate for linux")
    capsys.readouterr()
    assert main(["sync", "--once", "--config", str(config)]) == EXIT_REFUSED
    err = capsys.readouterr().err
    assert re.search(r"gitsync: error: target linux: commit \w+ not applied: 2 error\(s\) in 2 file\(s\)", err)
    assert "target windows" not in err.replace("target windows: synced", "")
    assert '"windows 3"' in (tmp_path / "windows-jobs" / "win.kit").read_text()
    assert service.load()["linux-render"]["args"] == ["linux"]
    assert main(["status", "--format", "json", "--config", str(config)]) == EXIT_ERROR
    report = json.loads(capsys.readouterr().out)
    assert report["targets"]["linux"]["last_result"] == "invalid" and report["failing_targets"] == ["linux"]
    assert report["targets"]["windows"]["applied_commit"] == remote.head()


def test_sync_once_exits_with_the_worst_code_across_targets() -> None:
    from gitsync.cli import EXIT_CHANGES_PENDING, EXIT_DRIFT, EXIT_HELD
    from gitsync.commands.pull import worst_exit_code

    assert worst_exit_code([EXIT_OK, EXIT_HELD, EXIT_DRIFT]) == EXIT_HELD
    assert worst_exit_code([EXIT_REFUSED, EXIT_ERROR, EXIT_OK]) == EXIT_ERROR
    assert worst_exit_code([EXIT_CHANGES_PENDING, EXIT_REFUSED]) == EXIT_REFUSED
    assert worst_exit_code([EXIT_OK, EXIT_OK]) == EXIT_OK


@on_a_service
def test_outbox_and_conflicts_work_on_the_target_named_and_ask_for_a_name_when_there_are_several(
        tmp_path: Path, remote: RemoteRepo, service: Service, key_file: Path, agents: list[Agent],
        capsys: pytest.CaptureFixture[str]) -> None:
    seed(remote)
    config = write_config(tmp_path, remote, service.url, key_file)
    agent = start(config, agents)
    win = tmp_path / "windows-jobs" / "win.kit"
    win.write_text(WINDOWS.replace('"windows"', '"edited by hand"'), encoding="utf-8")
    agent.request_sync("test")

    def waiting(name: str) -> list[str]:
        capsys.readouterr()
        assert main(["outbox", "--format", "json", "--target-name", name, "--config", str(config)]) == EXIT_OK
        return [e["target"] for e in json.loads(capsys.readouterr().out)]

    wait_until(lambda: waiting("windows") == ["win.kit"], timeout=30, what="the hand edit in the windows outbox")
    assert waiting("linux") == []
    assert main(["conflicts", "--format", "json", "--target-name", "windows", "--config", str(config)]) == EXIT_OK
    assert json.loads(capsys.readouterr().out) == []

    capsys.readouterr()
    assert main(["outbox", "--config", str(config)]) == EXIT_ERROR
    assert "2 targets (linux, windows), each with its own outbox and conflicts: name one with --target-name NAME" \
        in capsys.readouterr().err
    assert main(["outbox", "--target-name", "mac", "--config", str(config)]) == EXIT_ERROR
    assert "no target named 'mac'; the configuration has: linux, windows" in capsys.readouterr().err
