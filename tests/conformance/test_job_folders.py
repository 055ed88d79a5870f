"""``${job}`` extension folders: what Farm resolves through ``{job}`` exists in the job directory gitsync fills.

Follows ``nv/svc/farm/services/jobs/facilities/store/directory.py``: ``DirectoryJobStore._load_configuration``
takes ``job_spec_folder = os.path.dirname(job_spec_path)`` and ``_resolve_extension_paths`` walks
``settings.app.exts.folders.++``, fills each entry with ``str.format(job=job_spec_folder)`` and strips one
leading ``$``. That is the only place Farm 2.x expands ``${job}`` (its Kit job type passes the file itself
with ``--merge-config``, unexpanded). gitsync flattens the repository, so the folder holding the synced file
is the job directory: every folder Farm resolves there must hold what sits beside the file in git.
"""

from __future__ import annotations

from pathlib import Path

from gitsync.cli import main
from gitsync.jobs_service.directory_store import DirectoryJobStore
from gitsync.kit import check_kit
from gitsync.testing.repos import RemoteRepo

RENDER = ('[job.render]\njob_type = "kit"\ncommand = "kit/kit"\n'
          '[settings.app.exts.folders]\n"++" = ["${job}/exts", "${job}/exts/omni.render", "${job}/tools/bin"]\n')
IN_GIT = {
    "jobs/render/render.kit": RENDER,
    "jobs/render/exts/omni.render/config/extension.toml": '[package]\nversion = "1.0.0"\n',
    "jobs/render/tools/bin/helper.sh": "#!/bin/sh\necho help\n",
}


def test_every_folder_farm_resolves_through_job_holds_the_repositorys_folder(
        remote: RemoteRepo, tmp_path: Path) -> None:
    remote.commit(IN_GIT, "a definition with its companion folders")
    target = tmp_path / "job-definitions"
    assert main(["sync", "--once", "--repo", remote.url, "--path", "jobs", "--target", str(target),
                 "--state-dir", str(tmp_path / "state")]) == 0
    store = DirectoryJobStore(target, watch_events=False, rescan_interval=3600)

    store.rescan()

    resolved = store.snapshot()["render"]["extension_paths"]  # Farm: _resolve_extension_paths
    assert resolved == [f"{target}/exts", f"{target}/exts/omni.render", f"{target}/tools/bin"]
    assert all(Path(folder).is_dir() for folder in resolved)
    for repo_path, text in IN_GIT.items():
        if not repo_path.endswith(".kit"):
            landed = target / repo_path.removeprefix("jobs/render/")
            assert landed.read_text(encoding="utf-8") == text
    # gitsync's validator names the same folders, by their first component beside the file
    assert [folder for folder, _ in check_kit(RENDER.encode(), "render.kit").folders] == ["exts", "tools"]
