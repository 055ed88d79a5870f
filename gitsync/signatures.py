"""Signed commits (`sync.require_signed`): apply a commit only when a trusted key signed it.

A branch that anyone with push access can move is only as trustworthy as its weakest token; with
signatures required, a pushed commit must also carry a signature by a key the operator listed.
Trust comes from files the operator mounts, never from the repository itself:

- SSH signatures (`gpg.format=ssh`): an allowed-signers file (`ssh-keygen -Y` format,
  `principal key-type key`), given to git as `gpg.ssh.allowedSignersFile`;
- OpenPGP signatures: a keyring file (exported public keys, armored or binary), imported into a
  private, throw-away GnuPG home, so the agent's own `~/.gnupg` plays no part.

Git does the cryptography (`git verify-commit`); this module only decides and words the answer.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from gitsync.errors import ConfigError
from gitsync.gitrepo import GitMirror


@dataclass(frozen=True)
class TrustedKeys:
    allowed_signers_file: str = ""
    gpg_keyring_file: str = ""

    def __bool__(self) -> bool:
        return bool(self.allowed_signers_file or self.gpg_keyring_file)


def signature_kind(header: str) -> str | None:
    """'ssh', 'openpgp', 'x509' or None (unsigned), from a raw commit header."""
    if "\ngpgsig " not in f"\n{header}" and "\ngpgsig-sha256 " not in f"\n{header}":
        return None
    if "-----BEGIN SSH SIGNATURE-----" in header:
        return "ssh"
    if "-----BEGIN SIGNED MESSAGE-----" in header:
        return "x509"
    return "openpgp"


def untrusted_reason(mirror: GitMirror, sha: str, keys: TrustedKeys) -> str | None:
    """None when `sha` is signed by a trusted key; otherwise one line saying what is wrong and what to do."""
    short = sha[:12]
    kind = signature_kind(mirror.commit_header(sha))
    if kind is None:
        return (f"commit {short} is not signed and sync.require_signed is on; sign it "
                "(git commit -S) with a key in the allowed signers or keyring")
    if kind == "ssh":
        if not keys.allowed_signers_file:
            return f"commit {short} has an SSH signature but sync.allowed_signers_file is not set"
        path = _readable(keys.allowed_signers_file, "sync.allowed_signers_file")
        ok, report = mirror.verify_commit(sha, {"gpg.ssh.allowedSignersFile": path}, {})
    elif kind == "openpgp":
        if not keys.gpg_keyring_file:
            return f"commit {short} has an OpenPGP signature but sync.gpg_keyring_file is not set"
        path = _readable(keys.gpg_keyring_file, "sync.gpg_keyring_file")
        with _gnupg_home(path) as home:
            ok, report = mirror.verify_commit(sha, {"gpg.program": "gpg"}, {"GNUPGHOME": home})
    else:
        return f"commit {short} has an X.509 signature, which gitsync does not check; use SSH or OpenPGP"
    if ok:
        return None
    return f"commit {short} is signed by a key that is not trusted ({_key_of(report)}); add it to " + (
        "sync.allowed_signers_file" if kind == "ssh" else "sync.gpg_keyring_file") + " if it should be"


def _readable(path: str, key: str) -> str:
    resolved = Path(path).expanduser()
    if not resolved.is_file():
        raise ConfigError(f"{key} {path} does not exist or is not a file")
    return str(resolved)


def _key_of(report: str) -> str:
    """The key fingerprint or id git reported, for the message; never the signature itself."""
    for line in report.splitlines():
        if " key SHA256:" in line:
            return "key SHA256:" + line.split(" key SHA256:", 1)[1].split()[0]
        for marker in ("[GNUPG:] ERRSIG ", "[GNUPG:] NO_PUBKEY ", "[GNUPG:] BADSIG "):
            if line.startswith(marker):
                return "key " + line[len(marker):].split()[0]
    return "unknown key"


class _gnupg_home:  # noqa: N801 - used as a context manager
    """A private GnuPG home holding only the keyring's public keys, removed afterwards."""

    def __init__(self, keyring: str) -> None:
        self._keyring = keyring
        self._home = ""

    def __enter__(self) -> str:
        self._home = tempfile.mkdtemp(prefix="gitsync-gnupg-")
        os.chmod(self._home, 0o700)
        done = subprocess.run(["gpg", "--batch", "--quiet", "--homedir", self._home, "--import", self._keyring],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            self.__exit__()
            raise ConfigError(f"sync.gpg_keyring_file {self._keyring} could not be imported: "
                              f"{done.stderr.strip().splitlines()[-1] if done.stderr.strip() else 'gpg failed'}")
        return self._home

    def __exit__(self, *exc: object) -> None:
        # gpg-agent may still hold a socket in the home; it exits on its own once the home is gone.
        subprocess.run(["gpgconf", "--homedir", self._home, "--kill", "all"], capture_output=True, check=False)
        shutil.rmtree(self._home, ignore_errors=True)
