"""Running the service: the RunningJobsService helper and ``python -m gitsync.jobs_service``."""

from __future__ import annotations

import argparse
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from gitsync.jobs_service import cli
from gitsync.jobs_service.config import JobsServiceConfig
from gitsync.jobs_service.server import JobsServiceStartError, RunningJobsService
from gitsync.secrets import Secret

from .helpers import API_KEY


def _config(save_location: Path) -> JobsServiceConfig:
    return JobsServiceConfig(save_location=save_location, api_key=Secret(API_KEY))


def test_port_zero_picks_a_free_port_and_url_includes_the_prefix(save_location: Path, http: httpx.Client) -> None:
    with RunningJobsService(_config(save_location), host="127.0.0.1", port=0) as service:
        assert service.port != 0
        assert service.url == f"http://127.0.0.1:{service.port}/queue/management/jobs"
        assert http.get(f"{service.url}/status").json() == "OK"


def test_stop_closes_the_port_and_ends_every_thread_it_started(save_location: Path) -> None:
    before = set(threading.enumerate())
    service = RunningJobsService(_config(save_location), port=0).start()
    port = service.port

    service.stop()
    service.stop()  # twice is fine

    assert set(threading.enumerate()) - before == set()
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0


def test_start_on_a_busy_port_is_a_clear_error(save_location: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]

        with pytest.raises(JobsServiceStartError, match=f"cannot listen on 127.0.0.1:{port}"):
            RunningJobsService(_config(save_location), port=port).start()


def test_cli_arguments_parse_into_overrides(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)

    args = parser.parse_args(["--config", "farm.toml", "--host", "0.0.0.0", "--port", "0", "--save-location", "d",
                              "--max-body-size", "2048"])

    assert args.config == Path("farm.toml")
    assert (args.host, args.port, args.save_location, args.max_body_size) == ("0.0.0.0", 0, Path("d"), 2048)
    config = JobsServiceConfig().with_overrides(max_body_size=args.max_body_size)
    assert config.max_body_size == 2048


def test_cli_run_with_a_bad_config_raises_config_error(tmp_path: Path) -> None:
    from gitsync.errors import ConfigError

    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    bad = tmp_path / "farm.toml"
    bad.write_text('[settings.nv.svc.farm.jobs]\nstore_class = "nope"\n')

    with pytest.raises(ConfigError, match="nope"):
        cli.run(parser.parse_args(["--config", str(bad)]))


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_cli_serves_in_the_foreground_until_a_signal_and_exits_0(
    tmp_path: Path, http: httpx.Client, stop_signal: signal.Signals
) -> None:
    config = tmp_path / "farm.toml"
    config.write_text(f'[settings.nv.svc.farm.jobs]\napi_key = "{API_KEY}"\n')
    defs = tmp_path / "defs"
    process = subprocess.Popen(
        [sys.executable, "-m", "gitsync.jobs_service", "--config", str(config)]
        + ["--port", "0", "--save-location", str(defs)],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HOME": str(tmp_path)},
    )
    lines: queue.Queue[str] = queue.Queue()

    def read_stderr() -> None:
        for line in process.stderr or []:
            lines.put(line)

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        url = _wait_for_url(lines)
        assert http.get(f"{url}/status").json() == "OK"
        saved = http.post(
            f"{url}/save",
            json={"name": "hello-world", "job_type": "base", "command": "echo"},
            headers={"X-API-KEY": API_KEY},
        )
        assert saved.status_code == 200
        assert (defs / "hello-world.kit").is_file()

        process.send_signal(stop_signal)

        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    reader.join(timeout=5)
    log = "".join(iter_queue(lines))
    assert API_KEY not in log


def _wait_for_url(lines: queue.Queue[str]) -> str:
    seen: list[str] = []
    while True:
        try:
            line = lines.get(timeout=15)
        except queue.Empty:
            raise AssertionError("the service never logged its URL:\n" + "".join(seen)) from None
        seen.append(line)
        match = re.search(r" at (http://\S+);", line)
        if match:
            return match.group(1)


def iter_queue(lines: queue.Queue[str]) -> list[str]:
    items: list[str] = []
    while not lines.empty():
        items.append(lines.get_nowait())
    return items
