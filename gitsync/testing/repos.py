"""Real git repositories for tests and the demo: a bare remote and a clone a person commits from."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

IDENTITY = ["-c", "user.name=Test Author", "-c", "user.email=author@example.com", "-c", "commit.gpgsign=false"]


def git(*args: str, cwd: Path | None = None) -> str:
    done = subprocess.run(["git", *IDENTITY, *args], cwd=cwd, check=True, capture_output=True, text=True)
    return done.stdout.strip()


class RemoteRepo:
    """A bare repository (what gitsync fetches from) and a work clone to change it through."""

    def __init__(self, root: Path, branch: str = "main") -> None:
        self.root = root
        self.branch = branch
        self.bare = root / "remote.git"
        self.work = root / "work"
        root.mkdir(parents=True, exist_ok=True)
        git("init", "--quiet", "--bare", f"--initial-branch={branch}", str(self.bare))
        git("clone", "--quiet", str(self.bare), str(self.work))
        git("checkout", "--quiet", "-B", branch, cwd=self.work)

    @classmethod
    def existing(cls, root: Path, branch: str = "main") -> RemoteRepo:
        """The remote and work clone an earlier `RemoteRepo(root)` made (the demo re-run on its workspace)."""
        repo = cls.__new__(cls)
        repo.root, repo.branch = root, branch
        repo.bare, repo.work = root / "remote.git", root / "work"
        git("fetch", "--quiet", "origin", cwd=repo.work)
        git("reset", "--quiet", "--hard", f"origin/{branch}", cwd=repo.work)
        return repo

    def revert_head(self) -> str:
        """`git revert` the newest commit and push; returns the revert's id."""
        self.pull()
        git("revert", "--no-edit", "HEAD", cwd=self.work)
        self.push()
        return self.head()

    @property
    def url(self) -> str:
        return str(self.bare)

    def commit(self, files: Mapping[str, str | bytes | None], message: str = "change definitions",
               push: bool = True) -> str:
        """Write (str/bytes) or delete (None) files, commit and push; returns the new commit id."""
        for rel, content in files.items():
            path = self.work / rel
            if content is None:
                git("rm", "--quiet", "-r", "--", rel, cwd=self.work)
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content, encoding="utf-8")
            git("add", "--", rel, cwd=self.work)
        git("commit", "--quiet", "--allow-empty", "-m", message, cwd=self.work)
        if push:
            self.push()
        return self.head()

    def seed_from(self, directory: Path, message: str = "Import job definitions") -> str:
        for item in directory.iterdir():
            if item.name == ".git":
                continue
            if item.is_dir():
                shutil.copytree(item, self.work / item.name, dirs_exist_ok=True)
            else:
                shutil.copy2(item, self.work / item.name)
        git("add", "-A", cwd=self.work)
        return self.commit({}, message)

    def push(self, force: bool = False) -> None:
        git("push", "--quiet", *(["--force"] if force else []), "origin", f"HEAD:refs/heads/{self.branch}",
            cwd=self.work)

    def pull(self) -> None:
        git("pull", "--quiet", "--rebase", "origin", self.branch, cwd=self.work)

    def commit_as_a_person(self, files: Mapping[str, str | bytes | None], message: str, attempts: int = 20) -> None:
        """Commit as a person would beside a running gitsync: on the latest head, and when gitsync pushed in
        between, pull (rebase) and push again."""
        self.pull()
        self.commit(files, message, push=False)
        for _ in range(attempts):
            try:
                self.push()
                return
            except subprocess.CalledProcessError:
                self.pull()
        raise AssertionError(f"could not push {message!r} in {attempts} attempts: the branch kept moving")

    def head(self) -> str:
        return git("rev-parse", "HEAD", cwd=self.work)

    def remote_head(self, branch: str | None = None) -> str:
        return git("rev-parse", f"refs/heads/{branch or self.branch}", cwd=self.bare)

    def show(self, path: str, ref: str | None = None) -> str:
        return git("show", f"{ref or 'refs/heads/' + self.branch}:{path}", cwd=self.bare)

    def log(self, ref: str | None = None, fmt: str = "%s") -> list[str]:
        out = git("log", f"--format={fmt}", ref or f"refs/heads/{self.branch}", cwd=self.bare)
        return out.splitlines()

    def branches(self) -> list[str]:
        out = git("for-each-ref", "--format=%(refname:short)", "refs/heads", cwd=self.bare)
        return out.splitlines()
