"""The sample CI gate in sample-repo/.github/workflows: it installs gitsync from a source that resolves (the
PyPI name `gitsync` is another project and `farm-gitsync` is not published), and its steps run as written."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / "sample-repo" / ".github" / "workflows" / "validate.yml"


def steps() -> dict[str, dict[str, object]]:
    doc = yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))
    return {step.get("name", step.get("uses", "")): step for step in doc["jobs"]["validate"]["steps"]}


def run_step(step: dict[str, object], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-e", "-c", str(step["run"])], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, **env}, timeout=120)


def test_the_install_step_names_a_source_and_says_what_to_set_when_there_is_none(tmp_path: Path) -> None:
    install = steps()["Install gitsync"]
    assert "pip install farm-gitsync\n" not in f"{install['run']}\n"  # a name no index serves
    assert install["env"] == {"GITSYNC_PIP_SOURCE": "${{ vars.GITSYNC_PIP_SOURCE }}"}
    done = run_step(install, {"GITSYNC_PIP_SOURCE": ""}, tmp_path)
    assert done.returncode == 1
    assert done.stdout.startswith("::error::set the GITSYNC_PIP_SOURCE variable")


def test_the_install_step_resolves_a_local_source(tmp_path: Path) -> None:
    """pip resolves the step's requirement against a real source (this checkout), without installing it."""
    install = steps()["Install gitsync"]
    script = str(install["run"]).replace("pip install ", "pip install --dry-run --no-deps --no-build-isolation "
                                                       "--quiet ")
    done = run_step({"run": script}, {"GITSYNC_PIP_SOURCE": f"file://{ROOT}"}, tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_validate_step_passes_on_the_sample_definitions() -> None:
    validate = steps()["Validate job definitions"]
    done = run_step(validate, {"PYTHONPATH": str(ROOT)}, ROOT / "sample-repo")
    assert done.returncode == 0, done.stdout + done.stderr
