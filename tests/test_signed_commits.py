"""sync.require_signed: only commits signed by a trusted key reach the job directory. Commits are
signed for real (`ssh-keygen -Y sign` through git's gpg.format=ssh, and GnuPG), and verified by git."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from pull_helpers import gitsync, kit, kit_files
from pull_helpers import isolated as isolated  # fixtures by import: tmpfs tmp_path, cwd + env isolation
from pull_helpers import ram_tmp_path as ram_tmp_path

from gitsync.testing.repos import RemoteRepo, git


def ssh_key(folder: Path, name: str) -> Path:
    key = folder / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)], check=True)
    return key


def commit(remote: RemoteRepo, files: dict[str, str], message: str, *, key: Path | None = None,
           fmt: str = "ssh") -> str:
    """Commit and push; signed with `key` (an ssh private key file, or a GnuPG key id) when given."""
    for rel, text in files.items():
        (remote.work / rel).parent.mkdir(parents=True, exist_ok=True)
        (remote.work / rel).write_text(text, encoding="utf-8")
        git("add", rel, cwd=remote.work)
    signing = ["-c", f"gpg.format={fmt}", "-c", f"user.signingkey={key}", "-c", "commit.gpgsign=true"] if key else []
    git(*signing, "commit", "--quiet", "-m", message, cwd=remote.work)
    remote.push()
    return remote.head()


class Site:
    def __init__(self, root: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.remote = RemoteRepo(root / "repo")
        self.target = root / "job-definitions"
        self.state = root / "state"
        self.capsys = capsys

    def sync(self) -> tuple[int, str]:
        ran = gitsync(self.capsys, "sync", "--once", "--repo", self.remote.url, "--path", "jobs", "--target",
                      str(self.target), "--state-dir", str(self.state))
        return ran.code, ran.err

    def status(self) -> dict[str, object]:
        ran = gitsync(self.capsys, "status", "--format", "json", "--repo", self.remote.url, "--target",
                      str(self.target), "--state-dir", str(self.state))
        return dict(json.loads(ran.out))


@pytest.fixture
def site(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Site:
    return Site(tmp_path, capsys)


@pytest.fixture
def trusted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A key listed in the allowed-signers file that sync.require_signed checks against."""
    key = ssh_key(tmp_path, "release")
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(f"release@example.com {key.with_suffix('.pub').read_text()}", encoding="utf-8")
    monkeypatch.setenv("GITSYNC_SYNC_REQUIRE_SIGNED", "true")
    monkeypatch.setenv("GITSYNC_SYNC_ALLOWED_SIGNERS_FILE", str(allowed))
    return key


def test_a_head_signed_by_an_allowed_ssh_key_is_applied(site: Site, trusted: Path) -> None:
    head = commit(site.remote, {"jobs/a.kit": kit("a")}, "add a", key=trusted)
    code, err = site.sync()
    assert code == 0, err
    assert kit_files(site.target) == ["a.kit"]
    assert site.status()["applied_commit"] == head


def test_an_unsigned_head_is_refused_and_the_last_good_commit_stays(site: Site, trusted: Path) -> None:
    good = commit(site.remote, {"jobs/a.kit": kit("a")}, "add a", key=trusted)
    assert site.sync()[0] == 0
    bad = commit(site.remote, {"jobs/b.kit": kit("b")}, "unsigned b")
    code, err = site.sync()
    assert code != 0
    assert f"commit {bad[:12]} is not signed" in err
    assert kit_files(site.target) == ["a.kit"]
    status = site.status()
    assert status["applied_commit"] == good and status["head_commit"] == bad
    assert status["last_result"] == "refused" and "not signed" in str(status["last_message"])


def test_a_head_signed_by_an_unknown_key_is_refused(site: Site, trusted: Path, tmp_path: Path) -> None:
    stranger = ssh_key(tmp_path, "stranger")
    fingerprint = subprocess.run(["ssh-keygen", "-l", "-f", str(stranger)], check=True, capture_output=True,
                                 text=True).stdout.split()[1]
    commit(site.remote, {"jobs/a.kit": kit("a")}, "add a", key=stranger)
    code, err = site.sync()
    assert code != 0
    assert "signed by a key that is not trusted" in err and fingerprint in err
    assert kit_files(site.target) == []


def test_require_signed_without_trusted_keys_stops_with_one_line(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITSYNC_SYNC_REQUIRE_SIGNED", "true")
    commit(site.remote, {"jobs/a.kit": kit("a")}, "add a")
    code, err = site.sync()
    assert code == 1
    assert err.strip().count("\n") == 0 and "sync.allowed_signers_file" in err


@pytest.mark.skipif(shutil.which("gpg") is None, reason="GnuPG is not installed")
def test_an_openpgp_signature_is_checked_against_the_keyring(site: Site, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "signer-gnupg"
    home.mkdir(mode=0o700)
    monkeypatch.setenv("GNUPGHOME", str(home))  # the committer's keys; gitsync uses only the keyring file
    gpg = ["gpg", "--batch", "--quiet", "--pinentry-mode", "loopback", "--passphrase", ""]
    for uid in ("Release <release@example.com>", "Stranger <stranger@example.com>"):
        subprocess.run([*gpg, "--quick-gen-key", uid, "ed25519", "sign", "never"], check=True, capture_output=True)
    keyring = tmp_path / "trusted.asc"
    keyring.write_bytes(subprocess.run(["gpg", "--armor", "--export", "release@example.com"], check=True,
                                       capture_output=True).stdout)
    monkeypatch.setenv("GITSYNC_SYNC_REQUIRE_SIGNED", "true")
    monkeypatch.setenv("GITSYNC_SYNC_GPG_KEYRING_FILE", str(keyring))
    try:
        commit(site.remote, {"jobs/a.kit": kit("a")}, "add a", key=Path("release@example.com"), fmt="openpgp")
        assert site.sync()[0] == 0
        assert kit_files(site.target) == ["a.kit"]
        commit(site.remote, {"jobs/b.kit": kit("b")}, "add b", key=Path("stranger@example.com"), fmt="openpgp")
        code, err = site.sync()
        assert code != 0 and "not trusted" in err
        assert kit_files(site.target) == ["a.kit"]
    finally:
        subprocess.run(["gpgconf", "--kill", "all"], env={**os.environ, "GNUPGHOME": str(home)}, check=False)
