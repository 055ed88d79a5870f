"""Validation's TOML 1.0 pass runs on tomli (tomllib compiled, twice as fast on a first sync). tomli 2.3 and
later read TOML 1.1, which Python 3.11's tomllib and Farm's toml 0.10 reject: these files must stay errors,
found by the TOML 1.0 pass, whichever tomli is installed."""

from __future__ import annotations

import pytest

from gitsync.kit import check_kit

HEAD = '[job.one]\njob_type = "base"\nname = "one"\ncommand = "/bin/echo"\n'


@pytest.mark.parametrize("line", [
    'env = { A = "1",\n  B = "2" }',  # a newline inside an inline table
    'env = { A = "1", }',  # a trailing comma in an inline table
    'args = ["\\e[0m"]',  # the \e escape
    'args = ["\\x41"]',  # the \xHH escape
])
def test_toml_1_1_syntax_is_invalid_toml(line: str) -> None:
    report = check_kit((HEAD + line + "\n").encode(), "jobs/one.kit")

    assert not report.ok
    assert report.problems[0].message.startswith("invalid TOML: ")
