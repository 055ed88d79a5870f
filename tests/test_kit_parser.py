"""Validation's TOML 1.0 pass: tomllib, or in the validation pool's workers tomli 2.2.1 (the same code compiled,
twice as fast on a first sync). tomli 2.3 and later read TOML 1.1, which Python 3.11's tomllib and Farm's
toml 0.10 reject: such files must stay errors, found by the TOML 1.0 pass, whichever parser runs."""

from __future__ import annotations

import pytest

from gitsync import kit, validation_pool

HEAD = '[job.one]\njob_type = "base"\nname = "one"\ncommand = "/bin/echo"\n'


@pytest.fixture(params=["tomllib", "compiled"])
def parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(kit, "_toml10", kit._toml10)  # noqa: SLF001 - restored after the test
    if request.param == "compiled":
        kit.use_compiled_parser()
        assert kit._toml10.__name__ == "tomli"  # noqa: SLF001 - the dependency is installed
    return str(request.param)


@pytest.mark.parametrize("line", [
    'env = { A = "1",\n  B = "2" }',  # a newline inside an inline table
    'env = { A = "1", }',  # a trailing comma in an inline table
    'args = ["\\e[0m"]',  # the \e escape
    'args = ["\\x41"]',  # the \xHH escape
])
def test_toml_1_1_syntax_is_invalid_toml(parser: str, line: str) -> None:
    report = kit.check_kit((HEAD + line + "\n").encode(), "jobs/one.kit")

    assert not report.ok
    assert report.problems[0].message.startswith("invalid TOML: ")


def test_the_pool_and_one_process_give_the_same_reports() -> None:
    texts = [HEAD + 'args = ["a"]\n', HEAD + "args = [\n", HEAD + 'env = { A = "1",\n B = "2" }\n', "x = 1\nx = 2\n"]
    jobs = [(str(i), text.encode(), False, kit.MAX_FILE_SIZE) for i, text in enumerate(texts)]
    pool = validation_pool.start()
    try:
        assert validation_pool.check_all(pool, jobs) == [kit.check_kit(data, "") for _, data, _, _ in jobs]
    finally:
        pool.shutdown()
