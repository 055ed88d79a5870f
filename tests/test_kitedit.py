"""Carrying a Farm `jobs/save` onto the git text of a `.kit` file.

Farm is simulated the way it really behaves: parse the file, change one field, fill in the
defaults (and Farm's `value or default` coercions, which write `task_function = ""`) and
`job_spec_path`, `toml.dumps` the whole document and read that text back.
"""

from __future__ import annotations

import copy
import difflib
import tomllib
from collections.abc import Callable
from typing import Any

import pytest
import toml

from gitsync import kitedit
from gitsync.farm import (
    DEFINITION_DEFAULTS,
    JOB_DEFINITION_COERCIONS,
    STORE_ONLY_FIELDS,
    as_job_definition,
    with_defaults,
)
from gitsync.kitedit import (
    definitions_equal,
    new_definition_file,
    remove_definition,
    update_definition,
)

HEADER = r"""# Render jobs for the studio farm.
# Synced by gitsync; edit in git, not in the Farm UI.

[package]
title = "Studio render jobs"
version = "1.2.0"

"""
CREATE_RENDER = r"""# Renders a USD stage with Kit; frames and resolution come from the task.
[job.create-render]
name = "create-render"
job_type = "kit-service"   # started as a Kit app, then task_function is called
command = 'C:\Program Files\NVIDIA\Kit\kit.exe'
args = ["--no-window", "--/app/renderer=rtx"]
task_function = "render.run"
success_return_codes = [
    0,
    3,  # partial render, some frames skipped
]
env = { OMNI_LOG_LEVEL = "info", RENDER_TMP = 'D:\render\tmp' }

[job.create-render.allowed_args]
frames = { arg = "--frames", default = "1-10" }
resolution = { arg = "--res", default = "1920x1080" }

"""
CHECK_GPU = r"""# Quick GPU check, run before a render batch.
[job.check-gpu]
name = "check-gpu"
job_type = "base"
command = "nvidia-smi"
args = ["--query-gpu=name,memory.total", "--format=csv"]
log_to_stdout = true  # keep output in the task log

"""
SETTINGS = r"""[settings.app.exts.folders]
"++" = ["${job}/exts"]
"""
RENDER_KIT = HEADER + CREATE_RENDER + CHECK_GPU + SETTINGS
BLOCKS = {"create-render": CREATE_RENDER, "check-gpu": CHECK_GPU}

HELLO_KIT = """\
# NVIDIA's minimal example, with the environment as a sub-table.
[job.hello-omniverse]
name = "simple-hello-omniverse-job"
job_type = "base"
command = "/bin/echo"
args = ["Hello Omniverse"]

# Variables the task sees.
[job.hello-omniverse.env]
GREETING = "hello"  # shown in the log
TARGET = "omniverse"
"""

FARM_STYLE_KIT = """\
[job.convert]
name = "convert"
job_type = "base"
command = "/usr/bin/usdcat"
args = [ "--flatten", "in.usd",]
"""


def parse_both(text: str) -> dict[str, Any]:
    """The document as tomllib reads it, after checking that Farm's `toml` reads the same."""
    data = tomllib.loads(text)
    assert plain(toml.loads(text)) == data
    return data


def plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def farm_save(git_text: str, key: str, change: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    """The definition as Farm holds it after `jobs/save` of the git definition with `change`."""
    doc = toml.loads(git_text)
    definition = copy.deepcopy(DEFINITION_DEFAULTS) | copy.deepcopy(doc["job"][key])
    change(definition)
    for field, default in JOB_DEFINITION_COERCIONS.items():
        definition[field] = definition[field] or copy.deepcopy(default)
    definition["job_spec_path"] = f"/srv/farm/job-definitions/{key}.kit"
    doc["job"][key] = {k: v for k, v in definition.items() if v is not None}
    farm_text = toml.dumps(doc)
    assert "#" not in farm_text.split("[settings", 1)[0]  # Farm really did drop every comment
    return toml.loads(farm_text)["job"][key]


def changes(before: str, after: str) -> tuple[list[str], list[str]]:
    """(removed lines, added lines) between two texts."""
    old, new = before.splitlines(), after.splitlines()
    removed: list[str] = []
    added: list[str] = []
    matcher = difflib.SequenceMatcher(a=old, b=new, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag != "equal":
            removed += old[i1:i2]
            added += new[j1:j2]
    return removed, added


def set_field(field: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda d: d.__setitem__(field, value)


SCENARIOS = [
    pytest.param(
        "create-render", set_field("command", "D:\\Kit\\kit.exe"),
        [r"command = 'C:\Program Files\NVIDIA\Kit\kit.exe'"], [r"command = 'D:\Kit\kit.exe'"],
        id="windows-command-stays-literal",
    ),
    pytest.param(
        "create-render", lambda d: d["args"].append("--verbose"),
        ['args = ["--no-window", "--/app/renderer=rtx"]'],
        ['args = ["--no-window", "--/app/renderer=rtx", "--verbose"]'],
        id="arg-appended",
    ),
    pytest.param(
        "create-render", lambda d: d["env"].update(OMNI_LOG_LEVEL="debug"),
        [r"""env = { OMNI_LOG_LEVEL = "info", RENDER_TMP = 'D:\render\tmp' }"""],
        [r"""env = { OMNI_LOG_LEVEL = "debug", RENDER_TMP = 'D:\render\tmp' }"""],
        id="env-value-changed",
    ),
    pytest.param(
        "create-render", lambda d: d["env"].update(CUDA_VISIBLE_DEVICES="0"),
        [r"""env = { OMNI_LOG_LEVEL = "info", RENDER_TMP = 'D:\render\tmp' }"""],
        [r"""env = { OMNI_LOG_LEVEL = "info", RENDER_TMP = 'D:\render\tmp', """
         r"""CUDA_VISIBLE_DEVICES = "0" }"""],
        id="env-key-added-inline",
    ),
    pytest.param(
        "create-render", lambda d: d["env"].pop("OMNI_LOG_LEVEL"),
        [r"""env = { OMNI_LOG_LEVEL = "info", RENDER_TMP = 'D:\render\tmp' }"""],
        [r"""env = { RENDER_TMP = 'D:\render\tmp' }"""],
        id="env-key-removed-inline",
    ),
    pytest.param(
        "create-render", lambda d: d["allowed_args"]["frames"].update(default="1-100"),
        ['frames = { arg = "--frames", default = "1-10" }'],
        ['frames = { arg = "--frames", default = "1-100" }'],
        id="allowed-arg-default-changed",
    ),
    pytest.param(
        "create-render", lambda d: d["allowed_args"].update(seed={"arg": "--seed", "default": 0}),
        [], ['seed = { arg = "--seed", default = 0 }'],
        id="allowed-arg-added",
    ),
    pytest.param(
        "create-render", lambda d: d["success_return_codes"].append(4),
        [], ["    4,"],
        id="return-code-added-to-multiline-array",
    ),
    pytest.param(
        "create-render", lambda d: d["success_return_codes"].remove(3),
        ["    3,  # partial render, some frames skipped"], [],
        id="return-code-removed-with-its-comment",
    ),
    pytest.param(
        "create-render", set_field("task_function", None),
        ['task_function = "render.run"'], [],
        id="field-removed",
    ),
    pytest.param(
        "create-render", set_field("headless", False),
        [], ["headless = false"],
        id="default-overridden",
    ),
    pytest.param(
        "create-render", set_field("working_directory", "D:\\render"),
        [], [r"working_directory = 'D:\render'"],
        id="windows-path-added-as-literal",
    ),
    pytest.param(
        "create-render", set_field("name", "render-frames"),
        ['name = "create-render"'], ['name = "render-frames"'],
        id="renamed",
    ),
    pytest.param(
        "check-gpu", set_field("log_to_stdout", False),
        ["log_to_stdout = true  # keep output in the task log"],
        ["log_to_stdout = false  # keep output in the task log"],
        id="line-comment-kept",
    ),
    pytest.param(
        "check-gpu", set_field("container", "nvcr.io/nvidia/cuda:12.2.0-base-ubuntu22.04"),
        [], ['container = "nvcr.io/nvidia/cuda:12.2.0-base-ubuntu22.04"'],
        id="field-added",
    ),
    pytest.param(
        "check-gpu", set_field("env", {"CUDA_VISIBLE_DEVICES": "0"}),
        [], ['env = { CUDA_VISIBLE_DEVICES = "0" }'],
        id="env-added-to-definition-without-env",
    ),
]


@pytest.mark.parametrize(("key", "change", "removed", "added"), SCENARIOS)
def test_farm_save_changes_only_the_changed_line(
    key: str, change: Callable[[dict[str, Any]], Any], removed: list[str], added: list[str]
) -> None:
    new = farm_save(RENDER_KIT, key, change)

    result = update_definition(RENDER_KIT, key, new)

    assert changes(RENDER_KIT, result) == (removed, added)
    assert definitions_equal(parse_both(result)["job"][key], new, key=key)
    for other, block in BLOCKS.items():
        if other != key:
            assert block in result
    assert HEADER in result and SETTINGS in result
    comments = [line for line in RENDER_KIT.splitlines() if "#" in line and line not in removed]
    assert all(line in result.splitlines() for line in comments)


@pytest.mark.parametrize(
    ("text", "key"),
    [(RENDER_KIT, "create-render"), (RENDER_KIT, "check-gpu"), (HELLO_KIT, "hello-omniverse"),
     (FARM_STYLE_KIT, "convert")],
)
def test_save_without_change_returns_the_git_text_itself(text: str, key: str) -> None:
    assert update_definition(text, key, farm_save(text, key, lambda d: None)) is text


def test_jobs_service_json_with_store_name_keeps_the_git_name() -> None:
    # /load hands out the definition under its table key, with every default and None filled in.
    git_def = tomllib.loads(HELLO_KIT)["job"]["hello-omniverse"]
    for loaded in (with_defaults("hello-omniverse", git_def),
                   as_job_definition("hello-omniverse", git_def)):
        loaded["job_spec_path"] = "/srv/hello.kit"
        assert update_definition(HELLO_KIT, "hello-omniverse", loaded) is HELLO_KIT


@pytest.mark.parametrize(
    ("change", "removed", "added"),
    [
        (lambda d: d["env"].update(LANG="C.UTF-8"), [], ['LANG = "C.UTF-8"']),
        (lambda d: d["env"].pop("TARGET"), ['TARGET = "omniverse"'], []),
        (lambda d: d["env"].update(GREETING="hi"), ['GREETING = "hello"  # shown in the log'],
         ['GREETING = "hi"  # shown in the log']),
    ],
    ids=["key-added", "key-removed", "value-changed"],
)
def test_env_sub_table_changes_only_that_line(
    change: Callable[[dict[str, Any]], Any], removed: list[str], added: list[str]
) -> None:
    new = farm_save(HELLO_KIT, "hello-omniverse", change)

    result = update_definition(HELLO_KIT, "hello-omniverse", new)

    assert changes(HELLO_KIT, result) == (removed, added)
    assert parse_both(result)["job"]["hello-omniverse"]["env"] == new["env"]


def test_farm_style_array_keeps_its_style() -> None:
    new = farm_save(FARM_STYLE_KIT, "convert", lambda d: d["args"].append("out.usda"))

    result = update_definition(FARM_STYLE_KIT, "convert", new)

    assert changes(FARM_STYLE_KIT, result) == (
        ['args = [ "--flatten", "in.usd",]'], ['args = [ "--flatten", "in.usd", "out.usda",]'])
    parse_both(result)


@pytest.mark.parametrize(
    ("git_line", "sparse", "kept"),
    [
        ("headless = true", {}, True),  # git spells out the default: keep it
        ("headless = false", {}, False),  # absent in new means the default: drop the override
        ('working_directory = "/srv/work"', {}, False),
        ('working_directory = "/srv/work"', {"working_directory": None}, False),
        ("success_return_codes = [0]", {"success_return_codes": [0]}, True),
        ('task_function = ""', {"task_function": ""}, True),  # Farm's own spelling of "unset"
        ('task_function = "render.run"', {"task_function": ""}, False),
    ],
)
def test_field_absent_from_new(git_line: str, sparse: dict[str, Any], kept: bool) -> None:
    git_text = f'[job.job]\njob_type = "base"\ncommand = "true"\n{git_line}\n'
    new = {"name": "job", "job_type": "base", "command": "true", **sparse}

    result = update_definition(git_text, "job", new)

    assert (result is git_text) is kept
    assert changes(git_text, result) == (([], []) if kept else ([git_line], []))
    parse_both(result)


def test_default_in_new_is_not_added() -> None:
    git_text = '[job.job]\njob_type = "base"\ncommand = "true"\n'
    new = dict(DEFINITION_DEFAULTS, name="job", job_type="base", command="true")

    assert update_definition(git_text, "job", new) is git_text


@pytest.mark.parametrize(
    ("old", "value", "line"),
    [
        (r"'C:\tools\a.exe'", "C:\\tools\\b.exe", r"command = 'C:\tools\b.exe'"),
        (r"'C:\tools\a.exe'", "C:\\it's\\b.exe", r'''command = "C:\\it's\\b.exe"'''),
        (r'"C:\\tools\\a.exe"', "C:\\tools\\b.exe", r'command = "C:\\tools\\b.exe"'),
        (r"'C:\tools\a.exe'", "C:\\out\\", r'command = "C:\\out\\"'),
        ('"/bin/true"', "/bin/false", 'command = "/bin/false"'),
    ],
    ids=["literal-kept", "quote-forces-basic", "basic-kept", "trailing-backslash-basic", "plain"],
)
def test_string_style(old: str, value: str, line: str) -> None:
    git_text = f'[job.tool]\njob_type = "base"\ncommand = {old}\n'

    result = update_definition(git_text, "tool", {"job_type": "base", "command": value})

    assert changes(git_text, result) == ([f"command = {old}"], [line])
    assert parse_both(result)["job"]["tool"]["command"] == value


def test_added_field_goes_after_the_last_key_not_under_a_banner() -> None:
    git_text = (
        '[job.a]\njob_type = "base"\ncommand = "a"\n\n# ---- GPU jobs ----\n\n'
        '[job.b]\njob_type = "base"\ncommand = "b"\n'
    )
    new = farm_save(git_text, "a", set_field("headless", False))

    result = update_definition(git_text, "a", new)

    assert result == git_text.replace('command = "a"\n', 'command = "a"\nheadless = false\n')
    parse_both(result)


def test_dotted_keys_are_edited_in_place() -> None:
    git_text = '[job.d]\njob_type = "base"\ncommand = "env"\nenv.A = "1"\nenv.B = "2"\n'
    new = farm_save(git_text, "d", lambda d: d["env"].update(B="3"))

    result = update_definition(git_text, "d", new)

    assert changes(git_text, result) == (['env.B = "2"'], ['env.B = "3"'])
    parse_both(result)


def test_large_new_table_goes_before_the_next_definitions_comment() -> None:
    requirements = {
        "resource_limits": {"nvidia.com/gpu": 1, "memory": "32Gi", "cpu": "8"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    }
    new = farm_save(RENDER_KIT, "create-render", set_field("capacity_requirements", requirements))

    result = update_definition(RENDER_KIT, "create-render", new)

    removed, added = changes(RENDER_KIT, result)
    assert removed == []
    assert added[0] == "[job.create-render.capacity_requirements]"
    assert "\n\n" + CHECK_GPU in result
    assert parse_both(result)["job"]["create-render"]["capacity_requirements"] == requirements


K8S_KIT = CHECK_GPU + (
    "# Runs on the GPU nodes only.\n"
    '[job.k8s]\njob_type = "base"\ncommand = "render"  # the entry point\n\n'
    '[[job.k8s.capacity_requirements.tolerations]]\nkey = "gpu"\noperator = "Exists"\n'
)


def test_changed_array_of_tables_becomes_an_array() -> None:
    new = farm_save(K8S_KIT, "k8s", lambda d: d["capacity_requirements"]["tolerations"].append(
        {"key": "spot", "operator": "Exists"}))

    result = update_definition(K8S_KIT, "k8s", new)

    assert result.startswith(K8S_KIT.split("[[")[0])
    assert changes(K8S_KIT, result) == (
        ["[[job.k8s.capacity_requirements.tolerations]]", 'key = "gpu"', 'operator = "Exists"'],
        ["[job.k8s.capacity_requirements]",
         'tolerations = [{ key = "gpu", operator = "Exists" }, { key = "spot", operator = "Exists" }]'],
    )
    assert definitions_equal(parse_both(result)["job"]["k8s"], new, key="k8s")


def test_unchanged_array_of_tables_is_kept() -> None:
    new = farm_save(K8S_KIT, "k8s", set_field("working_directory", "/scratch"))

    result = update_definition(K8S_KIT, "k8s", new)

    assert changes(K8S_KIT, result) == ([], ['working_directory = "/scratch"'])
    parse_both(result)


def test_clean_rewrite_when_in_place_editing_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kitedit, "_carry", lambda *args: None)
    new = farm_save(RENDER_KIT, "create-render", set_field("headless", False))

    result = update_definition(RENDER_KIT, "create-render", new)

    # the definition's comment block and everything around it survive; its inner comments do not
    assert result.startswith(HEADER + CREATE_RENDER.split("[")[0] + "[job.create-render]\n")
    assert CHECK_GPU + SETTINGS in result
    assert definitions_equal(parse_both(result)["job"]["create-render"], new, key="create-render")


def test_definition_written_as_dotted_keys_is_refused() -> None:
    git_text = '[job]\nx.job_type = "base"\nx.command = "a"\n'

    with pytest.raises(ValueError, match="'x'"):
        update_definition(git_text, "x", {"job_type": "base", "command": "b"})
    with pytest.raises(ValueError, match="'x'"):
        remove_definition(git_text, "x")


def test_crlf_file_stays_crlf() -> None:
    git_text = HELLO_KIT.replace("\n", "\r\n")
    new = farm_save(git_text, "hello-omniverse", set_field("headless", False))

    result = update_definition(git_text, "hello-omniverse", new)

    assert "\n" not in result.replace("\r\n", "")
    assert changes(git_text, result) == ([], ["headless = false"])
    assert parse_both(result)["job"]["hello-omniverse"]["headless"] is False


def test_unknown_key_is_appended() -> None:
    new = {"name": "pack-scene", "job_type": "base", "command": "/usr/bin/zip",
           "args": ["-r", "scene.zip"], "active": True, "job_spec_path": "/srv/x.kit"}

    result = update_definition(RENDER_KIT, "pack-scene", new)

    assert result.startswith(RENDER_KIT)
    assert result[len(RENDER_KIT):] == (
        "\n# Job definition pack-scene, added by gitsync from the Farm jobs service.\n"
        '[job.pack-scene]\nname = "pack-scene"\njob_type = "base"\ncommand = "/usr/bin/zip"\n'
        'args = ["-r", "scene.zip"]\n'
    )
    parse_both(result)


@pytest.mark.parametrize(
    ("key", "gone", "kept"),
    [
        ("create-render", CREATE_RENDER, HEADER + CHECK_GPU + SETTINGS),
        ("check-gpu", CHECK_GPU, HEADER + CREATE_RENDER + SETTINGS),
    ],
)
def test_remove_definition_from_a_multi_definition_file(key: str, gone: str, kept: str) -> None:
    result = remove_definition(RENDER_KIT, key)

    assert result == kept
    assert list(parse_both(result)["job"]) == [k for k in BLOCKS if k != key]


def test_remove_last_definition_trims_the_end_and_keeps_the_next_comment() -> None:
    git_text = CHECK_GPU + CREATE_RENDER

    assert remove_definition(git_text, "create-render") == CHECK_GPU.rstrip("\n") + "\n"
    assert remove_definition(git_text, "check-gpu") == CREATE_RENDER
    parse_both(CHECK_GPU.rstrip("\n") + "\n")


def test_remove_the_only_definition_returns_none() -> None:
    assert remove_definition(HELLO_KIT, "hello-omniverse") is None
    assert remove_definition(HEADER + CHECK_GPU + SETTINGS, "check-gpu") is None


def test_remove_definition_with_out_of_order_sub_table() -> None:
    git_text = (
        '[job.a]\njob_type = "base"\ncommand = "a"\n\n'
        '[job.b]\njob_type = "base"\ncommand = """\n[job.fake]\n"""\n\n'
        '[job.a.env]\nA = "1"\n'
    )

    result = remove_definition(git_text, "a")

    assert result == '[job.b]\njob_type = "base"\ncommand = """\n[job.fake]\n"""\n'
    parse_both(result)


def test_remove_unknown_key_changes_nothing() -> None:
    assert remove_definition(RENDER_KIT, "nope") == RENDER_KIT


LOADED = as_job_definition("create-render", tomllib.loads(RENDER_KIT)["job"]["create-render"]) | {
    "job_spec_path": "C:\\farm\\defs\\create-render.kit",
    "unresolved_command_path": "${kit}",
}


@pytest.mark.parametrize(
    ("key", "new"),
    [
        ("create-render", LOADED),
        ("hello-omniverse", tomllib.loads(HELLO_KIT)["job"]["hello-omniverse"]),
        ("gpu-render", {
            "name": "gpu-render", "job_type": "base", "command": "/opt/render",
            "container": "nvcr.io/nvidia/omniverse/farm-render:1.0",
            "args": [f"--option-number-{n}=some-long-value" for n in range(4)],
            "capacity_requirements": {
                "resource_limits": {"nvidia.com/gpu": 1},
                "tolerations": [{"key": "gpu", "operator": "Exists"}],
                "volumes": [{"name": "cache", "host_path": {"path": "/var/cache/ov"}}],
            },
            "headless": False, "env": {}, "task_function": None,
        }),
    ],
    ids=["from-jobs-service", "name-differs-from-key", "kubernetes"],
)
def test_new_definition_file_round_trips(key: str, new: dict[str, Any]) -> None:
    text = new_definition_file(key, new)

    lines = text.splitlines()
    assert lines[0] == f"# Job definition {key}, added by gitsync from the Farm jobs service."
    assert lines[1] == f"[job.{key}]"
    assert lines[2] == f"name = {toml.dumps({'n': new.get('name', key)})[4:].strip()}"
    expected = {
        k: v for k, v in new.items()
        if v is not None and k not in STORE_ONLY_FIELDS and v != DEFINITION_DEFAULTS.get(k)
        and (v or k not in JOB_DEFINITION_COERCIONS)
    }
    assert parse_both(text)["job"][key] == expected
    assert definitions_equal(parse_both(text)["job"][key], new)
    assert "\\\\" not in text  # backslashes written as literal strings


@pytest.mark.parametrize(
    ("a", "b", "key", "equal"),
    [
        ({"job_type": "base", "command": "x"}, dict(DEFINITION_DEFAULTS, job_type="base",
                                                    command="x"), None, True),
        ({"job_type": "base", "command": "x"},
         {"job_type": "base", "command": "x", "job_spec_path": "/a.kit",
          "extension_paths": ["/e"], "unresolved_command_path": "x"}, None, True),
        ({"job_type": "base", "command": "x", "name": "a"},
         {"job_type": "base", "command": "x"}, "a", True),
        ({"job_type": "base", "command": "x", "name": "a"},
         {"job_type": "base", "command": "x"}, None, False),
        ({"command": "x", "headless": False}, {"command": "x"}, None, False),
        ({"command": "x", "success_return_codes": [1]}, {"command": "x",
                                                         "success_return_codes": [True]},
         None, False),
        ({"command": "x", "env": {"A": "1"}}, {"command": "x", "env": {"A": "1"}}, None, True),
        ({"command": "x", "allowed_args": {"f": {"arg": "--f", "default": None}}},
         {"command": "x", "allowed_args": {"f": {"arg": "--f"}}}, None, True),
        ({"command": "x", "container": "", "task_function": "", "args": None}, {"command": "x"},
         None, True),
    ],
    ids=["defaults", "store-only", "name-is-key", "name-differs", "override",
         "true-is-not-1", "nested", "nested-none-is-absent", "farm-coercions"],
)
def test_definitions_equal(
    a: dict[str, Any], b: dict[str, Any], key: str | None, equal: bool
) -> None:
    assert definitions_equal(a, b, key=key) is equal
    assert definitions_equal(b, a, key=key) is equal
