"""The only module that talks to git (through GitPython).

gitsync keeps a *bare* mirror in its state directory and never checks out a work tree: it
reads blobs straight from the object database and, for push-back, builds commits with
plumbing. That is what makes an incremental sync cost little more than `git fetch`.

Every call holds one process-wide lock (GitPython is not thread-safe) and errors are
re-raised as `GitError` with credentials redacted: GitPython's own exception text contains
the full command line, URL and all.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import shlex
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gitsync.errors import ConfigError, GitError
from gitsync.secrets import Secret, redact_text, redact_url

#: Inherited GIT_* variables that change which repository or index git works on would make
#: the agent act on the wrong repo when it runs inside a hook or a CI job; only these survive.
_GIT_ENV_ALLOWED = ("GIT_SSH", "GIT_SSH_COMMAND", "GIT_SSL_CAINFO", "GIT_SSL_NO_VERIFY", "GIT_HTTP_PROXY",
                    "GIT_CONFIG_NOSYSTEM", "GIT_TRACE", "GIT_CURL_VERBOSE", "GIT_EXEC_PATH")

log = logging.getLogger("gitsync.git")
_LOCK = threading.RLock()
REMOTE_REF = "refs/gitsync/remote"
APPLIED_REF = "refs/gitsync/applied"
PINNED_REF = "refs/gitsync/pinned"
#: A tree of the blobs gitsync still needs outside the applied commit (see GitMirror.keep).
KEEP_REF = "refs/gitsync/keep"
EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"


class BranchNotFound(GitError):
    pass


class PushRejected(GitError):
    """The remote moved on (non-fast-forward): fetch, rebase the change, try again."""


class EmptyRemote(GitError):
    pass


class MirrorCorrupt(GitError):
    """The local mirror is damaged (garbage HEAD or config, corrupt or missing objects).

    It holds nothing that cannot be fetched again, so the next fetch re-clones it in place;
    the state database and the outbox live elsewhere and are kept.
    """


#: Phrases in git's stderr that mean the local object database or repository files are damaged.
_CORRUPTION = ("is corrupt", "did not send all necessary objects", "bad object", "unable to unpack",
               "invalid object", "bad config", "not a git repository", "object file", "missing blob",
               "missing tree", "unable to read", "cannot be accessed", "inflate:", "corrupt",
               "unknown object type", "invalid sha1 pointer")
#: Marker left in a mirror found damaged, so the next process repairs it too.
_REPAIR_MARKER = "gitsync-repair-needed"


def visible_path(name: str) -> str:
    """A repo path as text that can be stored and printed: bytes that are not UTF-8 (GitPython hands them over
    as surrogates, which SQLite and every log refuse) become `\\xNN` escapes, which the name rules reject."""
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def first_fatal(text: str) -> str:
    """git's message folded to one line: its first `fatal:` line (else its first line); the rest is debug."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return ""
    for i, line in enumerate(lines):
        if line.startswith("fatal:"):
            fatal = line.removeprefix("fatal:").strip()
            # "Could not read from remote repository" and the like only say that a line before them has the cause
            # (ssh's "Host key verification failed.", "Permission denied (publickey)."): keep that one too.
            causes = [c for c in lines[:i] if not c.startswith(("warning:", "hint:", "remote:"))]
            # over smart HTTP the status code is in curl's "RPC failed; HTTP 401" line, whatever fatal follows
            if causes and (any(g in fatal for g in _GENERIC_FATAL) or "RPC failed" in causes[-1]):
                return f"{causes[-1].removeprefix('error:').strip()} ({fatal})"
            return fatal
    return lines[0].removeprefix("error:").strip()


_GENERIC_FATAL = ("Could not read from remote repository", "the remote end hung up", "failed to push some refs",
                  "early EOF", "index-pack failed", "expected flush after ref listing", "expected 'packfile'")


@dataclass(frozen=True)
class Credentials:
    """How to authenticate to the remote; values are secrets and only ever reach git's environment."""

    token: Secret = field(default_factory=lambda: Secret(""))
    username: str = "x-access-token"
    ssh_key_file: str = ""
    known_hosts_file: str = ""
    #: Re-reads the token before each git call, so a rotated secret file (a Kubernetes Secret update, a
    #: GitHub App token refreshed every hour) is used without a restart. None: `token` is fixed.
    token_reader: Callable[[], Secret] | None = None

    def current_token(self) -> Secret:
        return self.token_reader() if self.token_reader is not None else self.token

    def known_tokens(self) -> tuple[Secret, ...]:
        """Every token value this process may have used, for redaction (never raises)."""
        try:
            return (self.token, self.current_token())
        except Exception:  # noqa: BLE001 - a missing file must not hide the original error
            return (self.token,)


@dataclass(frozen=True)
class Identity:
    name: str
    email: str


@dataclass(frozen=True, slots=True)
class TreeEntry:
    mode: str
    blob: str


#: Every fetch: `_run`'s name for it, then git's arguments. --no-auto-maintenance: gitsync keeps the mirror
#: itself (maintenance.py), between cycles, never as a second process inside every fetch.
_FETCH = ("fetch", "fetch", "--no-tags", "--quiet", "--no-auto-maintenance")


@dataclass(frozen=True, slots=True)
class Change:
    """One file changed between two commits; `blob` is None for a deletion."""

    status: str
    path: str
    blob: str | None
    mode: str


def scrub_git_env(environ: dict[str, str] | os._Environ[str] = os.environ) -> None:
    for key in [k for k in environ if k.startswith("GIT_")]:
        if key not in _GIT_ENV_ALLOWED:
            del environ[key]


def git_env(creds: Credentials, environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """Environment for one git call: never prompt, authenticate from files, keep tokens off argv."""
    env = {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true", "SSH_ASKPASS": "true"}
    config: list[tuple[str, str]] = []
    if creds.ssh_key_file or creds.known_hosts_file or not environ.get("GIT_SSH_COMMAND"):
        # git runs GIT_SSH_COMMAND through a shell, so every path is quoted.
        ssh = ["ssh", "-o", "BatchMode=yes"]
        if creds.ssh_key_file:
            ssh += ["-i", creds.ssh_key_file, "-o", "IdentitiesOnly=yes"]
        if creds.known_hosts_file:  # ssh takes the first value of an option: strict must come alone
            ssh += ["-o", f"UserKnownHostsFile={creds.known_hosts_file}", "-o", "StrictHostKeyChecking=yes"]
        else:
            ssh += ["-o", "StrictHostKeyChecking=accept-new"]
        env["GIT_SSH_COMMAND"] = " ".join(shlex.quote(part) for part in ssh)
    token = creds.current_token()
    if token:
        # Passed as config through the environment so it shows up in neither `ps` nor .git/config. git
        # would send the header to whatever host a redirect names, so redirects are refused.
        basic = base64.b64encode(f"{creds.username}:{token.reveal()}".encode()).decode()
        config += [("http.extraHeader", f"Authorization: Basic {basic}"), ("http.followRedirects", "false")]
    # `ext::` runs any command a URL names; git allows it only from "user" input, which a config value is.
    config.append(("protocol.ext.allow", "never"))
    env["GIT_CONFIG_COUNT"] = str(len(config))
    for i, (key, value) in enumerate(config):
        env[f"GIT_CONFIG_KEY_{i}"], env[f"GIT_CONFIG_VALUE_{i}"] = key, value
    return env


class GitMirror:
    """A bare mirror of one branch of the definitions repository."""

    def __init__(self, path: Path, url: str, branch: str, *, credentials: Credentials | None = None,
                 timeout: float = 120.0, depth: int = 0) -> None:
        scrub_git_env()
        self.path = path
        self.url = url
        self.branch = branch
        self.credentials = credentials or Credentials()
        self.timeout = timeout
        self.depth = depth
        self._repo: Any = None
        #: (older, newer) pairs found not to be ancestors with the whole history at hand (see is_ancestor).
        self._not_ancestor: set[tuple[str, str]] = set()
        #: Commits an answer in this fetch showed present (an ancestry check needs both): has_commit asks git only
        #: about others. Cleared by every fetch, so maintenance between cycles can never make it wrong.
        self._present: set[str] = set()

    # -- plumbing -------------------------------------------------------------------------------
    @contextmanager
    def _git(self, what: str) -> Iterator[Any]:
        """Yield GitPython's command object under the lock, turning failures into readable errors."""
        import git  # GitPython costs ~100 ms to import; only commands that touch git pay for it

        with _LOCK:
            if self._repo is None:
                self._open()
            try:
                yield self._repo.git
            except git.GitCommandError as exc:
                stderr = redact_text(str(exc.stderr or "").strip().removeprefix("stderr: ").strip("'\n "),
                                     *self.credentials.known_tokens())
                raise self._failure(what, stderr, exc.status) from None

    def _failure(self, what: str, stderr: str, status: object) -> GitError:
        """One line for the user (git's first `fatal:`), the whole text at debug level; damage to the mirror
        itself is a `MirrorCorrupt`, which the next fetch repairs."""
        log.debug("git %s failed (exit %s): %s", what, status, stderr)
        folded = first_fatal(stderr) or f"exit {status}"
        kind = MirrorCorrupt if any(m in stderr for m in _CORRUPTION) else GitError
        if kind is MirrorCorrupt:
            self._mark_for_repair()
        return kind(f"git {what} failed for {redact_url(self.url)}: {folded}", stderr)

    def _open(self) -> None:
        """Open the mirror, creating it when absent and re-creating it when git cannot read it."""
        import git

        if not (self.path / "HEAD").exists() and not self.path.is_file():
            self._create()
            return
        try:
            self._repo = git.Repo(self.path)
            self._repo.git.execute(["git", "rev-parse", "--git-dir"])  # reads HEAD and config as git does
        except Exception as exc:  # noqa: BLE001 - garbage HEAD/config raise several unrelated types
            reason = first_fatal(str(getattr(exc, "stderr", "") or "")) or type(exc).__name__
            self._reclone(f"git cannot read it ({reason})")

    def _create(self) -> None:
        import git

        self.path.mkdir(parents=True, exist_ok=True)
        # No template: git's sample hooks take 64 KiB of every state directory and never run. GitPython refuses
        # --template unless told (a caller-given template could run hooks); this one is empty.
        self._repo = git.Repo.init(self.path, bare=True, template="", allow_unsafe_options=True)
        self._repo.git.config("gc.auto", "0")

    def _reclone(self, reason: str) -> None:
        """Throw the damaged mirror away and start an empty one in the same place (the fetch fills it)."""
        import shutil

        log.warning("the mirror %s is damaged: %s; re-cloning it in place (state and outbox are kept)",
                    self.path, reason)
        if self._repo is not None:
            with contextlib.suppress(Exception):
                self._repo.close()
            self._repo = None
        if self.path.is_dir() and not self.path.is_symlink():
            shutil.rmtree(self.path)
        else:
            self.path.unlink(missing_ok=True)
        self._create()

    def _mark_for_repair(self) -> None:
        with contextlib.suppress(OSError):
            (self.path / _REPAIR_MARKER).touch()

    def _run(self, what: str, *args: str, network: bool = False, strip_newline_in_stdout: bool = True) -> str:
        """One git command as a plain subprocess, so the pull never imports GitPython (~100 ms: a third of a
        `sync --once`); a network command gets its own process group, killed whole after `timeout`."""
        import signal
        import subprocess

        env = {**os.environ, **self._env(what), "LC_ALL": "C", "LANGUAGE": "C"}  # git's messages are matched
        with _LOCK:
            self._ensure_mirror()
            proc = subprocess.Popen(["git", *args], cwd=self.path, env=env, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=network)
            try:
                out, err = proc.communicate(timeout=self.timeout if network else None)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # git and its ssh or http helper
                proc.communicate()
                raise GitError(f"git {what} failed for {redact_url(self.url)}: did not complete in "
                               f"{self.timeout:g} secs (sync.timeout)") from None
        if proc.returncode:
            stderr = redact_text(err.decode("utf-8", "replace").strip(), *self.credentials.known_tokens())
            raise self._failure(what, stderr, proc.returncode)
        text = out.decode("utf-8", "surrogateescape")
        return text[:-1] if strip_newline_in_stdout and text.endswith("\n") else text

    def _depth(self) -> list[str]:
        """`--depth` for every fetch of a shallow mirror: a fetch without it would bring a branch's, tag's or
        commit's whole history below the boundary."""
        return [f"--depth={self.depth}"] if self.depth > 0 else []

    def _ensure_mirror(self) -> None:
        if not (self.path / "HEAD").exists():
            with self._git("init"):  # GitPython creates it, once
                pass

    def _env(self, what: str) -> dict[str, str]:
        """git_env with the credentials read now; a rotated secret that cannot be read is a GitError."""
        try:
            return git_env(self.credentials)
        except ConfigError as exc:
            raise GitError(f"git {what} for {redact_url(self.url)}: {exc}") from None

    def close(self) -> None:
        with _LOCK:
            if self._repo is not None:
                self._repo.close()
                self._repo = None

    # -- remote ---------------------------------------------------------------------------------
    def fetch(self) -> str:
        """Fetch the branch and return its head commit; clear errors for empty repos and missing branches."""
        self._present.clear()
        with _LOCK:
            if (self.path / _REPAIR_MARKER).exists():
                self._reclone("an earlier git call found it corrupt")
        try:
            return self._fetch_head()
        except MirrorCorrupt as exc:
            with _LOCK:
                self._reclone(str(exc))
            return self._fetch_head()

    def _fetch_head(self) -> str:
        try:
            self._run(*_FETCH, *self._depth(), "--", self.url,
                      f"+refs/heads/{self.branch}:{REMOTE_REF}", network=True)
        except GitError as exc:
            if "couldn't find remote ref" not in exc.detail:
                raise
            heads = self._run("ls-remote", "ls-remote", "--heads", "--", self.url, network=True).split()
            branches = sorted(h.removeprefix("refs/heads/") for h in heads if h.startswith("refs/heads/"))
            if not branches:
                raise EmptyRemote(f"repository {redact_url(self.url)} is empty: push a first commit to "
                                  f"branch {self.branch!r}") from None
            raise BranchNotFound(f"branch {self.branch!r} does not exist in {redact_url(self.url)} (branches: "
                                 f"{', '.join(branches[:10])}); set repo.branch to one of them") from None
        return self.resolve(REMOTE_REF)

    # -- reading --------------------------------------------------------------------------------
    def resolve(self, ref: str) -> str:
        return self._run("rev-parse", "rev-parse", "--verify", "--quiet", "--end-of-options",
                         f"{ref}^{{commit}}").strip()

    def has_commit(self, sha: str) -> bool:
        if sha in self._present:
            return True
        try:
            self._run("cat-file", "cat-file", "-e", "--end-of-options", f"{sha}^{{commit}}")
            return True
        except GitError:
            return False

    def is_ancestor(self, older: str, newer: str) -> bool:
        """Whether `older` is in the history of `newer` (the branch head), as a full clone would answer.

        On a shallow mirror git would answer "no" whenever the path crosses the boundary, so the question is
        asked in a view where the boundary lies only where commits are really missing (`_real_view`): the usual
        case, the previous head kept by its ref and just past the new boundary, costs nothing. A "no" is believed
        only when newer's history in that view is complete; otherwise the history is deepened from the remote
        and the question asked again. So missing history never reads as a force-push or an unlanded push. A
        "no" is remembered (commits never change)."""
        with _LOCK:  # one view file at a time
            return self._is_ancestor(older, newer)

    def _is_ancestor(self, older: str, newer: str) -> bool:
        if (older, newer) in self._not_ancestor:
            return False
        settled = self._from_known_no(older, newer)
        if settled is not None:
            return settled
        for _ in self._deepening():
            view, cut = self._real_view()
            if self._exit_code(*view, "merge-base", "--is-ancestor", "--end-of-options", older, newer)[0] == 0:
                self._present.update((older, newer))
                return True
            if not self._history_cut(newer, view, cut):
                if len(self._not_ancestor) > 1000:
                    self._not_ancestor.clear()
                self._not_ancestor.add((older, newer))
                return False
            log.debug("is %s in the history of %s? more history needed", older[:12], newer[:12])
        if not self.has_commit(older):  # the whole history is here and it is not: not an ancestor
            self._not_ancestor.add((older, newer))
            return False
        raise GitError(f"cannot tell whether {older[:12]} is in the history of {newer[:12]}: the remote no longer "
                       f"has the history of {newer[:12]}; will retry")

    def _from_known_no(self, older: str, newer: str) -> bool | None:
        """The answer from an earlier "no" for a head `newer` is built on (a branch rewritten while
        sync.on_force_push = refuse, then pushed to): `older` is an ancestor of `newer` exactly when it is among
        the commits `newer` added, if the mirror holds all of those. None: cannot tell without more history."""
        view, cut = self._real_view()
        for earlier in [n for o, n in self._not_ancestor if o == older]:
            if self._exit_code(*view, "merge-base", "--is-ancestor", "--end-of-options", earlier, newer)[0]:
                continue
            code, out = self._exit_code(*view, "rev-list", "--end-of-options", newer, f"^{earlier}", "--",
                                        stdout=True)
            added = set(out.split())
            if code == 0 and not added & cut:
                if older not in added:
                    self._not_ancestor.add((older, newer))
                return older in added
        return None

    def _is_ancestor_here(self, older: str, newer: str) -> bool:
        """The same question in the mirror's own (shallow) view: what rev-list, merge-tree and log see."""
        return self._exit_code("merge-base", "--is-ancestor", "--end-of-options", older, newer)[0] == 0

    def _exit_code(self, *args: str, stdout: bool = False, given: str = "") -> tuple[int, str]:
        """A local git command whose exit code is the answer: (code, stderr or `stdout`), never an exception,
        never a repair mark (a commit missing from a shallow mirror is not damage)."""
        import subprocess

        with _LOCK:
            self._ensure_mirror()
            done = subprocess.run(["git", *args], cwd=self.path, capture_output=True, input=given.encode(),
                                  env={**os.environ, **self._env("git"), "LC_ALL": "C", "LANGUAGE": "C"})
        return done.returncode, (done.stdout if stdout else done.stderr).decode("utf-8", "replace")

    # -- shallow history (repo.fetch_depth): deepened on demand -------------------------------------------
    #: How a shallow mirror is deepened when an answer needs history beyond its boundary: twice by more
    #: commits (`--deepen`, in multiples of the depth), then the whole history (`--unshallow`). The next
    #: fetch (`--depth`) cuts it back, and maintenance prunes what fell below the boundary.
    _DEEPEN_STEPS: tuple[int, ...] = (10, 100, 0)

    def _deepening(self) -> Iterator[None]:
        """For a question that may need older history: once with the mirror as it is, then again after each
        deeper fetch (`_DEEPEN_STEPS`), for as long as the mirror is shallow. Ends when it holds everything."""
        yield
        for step in self._DEEPEN_STEPS:
            if not self.shallow_commits():
                return
            self.deepen(step)
            yield

    def shallow_commits(self) -> set[str]:
        """The commits whose parents the mirror lacks (git's `shallow` file); empty for a complete mirror."""
        try:
            return set((self.path / "shallow").read_text(encoding="ascii").split())
        except (OSError, UnicodeDecodeError):
            return set()

    def _real_view(self) -> tuple[tuple[str, ...], set[str]]:
        """git options for a view of the mirror cut only where commits are really missing, and those cuts.

        Each fetch with `--depth` marks its deepest commits shallow even when their parents are in the mirror
        (the previous head, kept by its ref), so git's own view cuts the history there. The view here keeps only
        the marks whose commits lack a parent (`--shallow-file` with that list); the mirror's own file is left
        as it is, so what fell below the boundary stays unreachable and is pruned."""
        cut = self.shallow_commits()
        if not cut:
            return (), set()
        parents = self._parents_of(sorted(cut))
        wanted = sorted({p for ps in parents.values() for p in ps})
        present = {sha for sha, line in self._batch_check(wanted).items() if not line.endswith("missing")}
        real = {c for c in cut if c not in parents or any(p not in present for p in parents[c])}
        if real == cut:
            return (), cut
        view = self.path / "gitsync-shallow-view"
        view.write_text("".join(f"{c}\n" for c in sorted(real)), encoding="ascii")
        return ("--shallow-file", str(view)), real

    def _parents_of(self, commits: list[str]) -> dict[str, list[str]]:
        """The parents each commit object names (git's shallow view hides them), read in one `cat-file --batch`."""
        import subprocess

        with _LOCK:
            done = subprocess.run(["git", "cat-file", "--batch"], cwd=self.path, capture_output=True,
                                  input="".join(f"{c}\n" for c in commits).encode(),
                                  env={**os.environ, **self._env("git")})
        out, at, found = done.stdout, 0, {}
        for sha in commits:
            end = out.find(b"\n", at)
            header = out[at:end].split()
            if end < 0 or len(header) != 3 or header[1] != b"commit":
                break
            size = int(header[2])
            body = out[end + 1:end + 1 + size].split(b"\n\n", 1)[0]
            found[sha] = [line.split()[1].decode() for line in body.splitlines() if line.startswith(b"parent ")]
            at = end + 1 + size + 1
        return found

    def _batch_check(self, shas: list[str]) -> dict[str, str]:
        """`git cat-file --batch-check` for each id: its answer line ("<id> missing" when absent)."""
        if not shas:
            return {}
        _, out = self._exit_code("cat-file", "--batch-check", stdout=True, given="".join(f"{s}\n" for s in shas))
        return dict(zip(shas, out.splitlines(), strict=False))

    def _history_cut(self, newer: str, view: tuple[str, ...], cut: set[str]) -> bool:
        """Whether the history of `newer` in `view` reaches a commit whose parents are missing (`cut`)."""
        if not cut:
            return False
        if newer in cut:
            return True
        code, out = self._exit_code(*view, "rev-list", "--end-of-options", newer, "--", stdout=True)
        return code != 0 or any(line in cut for line in out.splitlines())

    def deepen(self, factor: int) -> None:
        """Fetch more of the branch's history: `factor` times the depth more commits, or all of it (0)."""
        how = f"--deepen={max(1, self.depth) * factor}" if factor else "--unshallow"
        log.info("deepening the shallow mirror of %s (%s): an answer needs older history", self.branch, how)
        try:
            self._run(*_FETCH, how, "--", self.url,
                      f"+refs/heads/{self.branch}:{REMOTE_REF}", network=True)
        except GitError as exc:
            # --unshallow on a complete repository ("on a complete repository does not make sense")
            if "complete repository" not in exc.detail:
                raise

    def reach(self, older: str, newer: str) -> None:
        """Make the mirror's own view hold the history from `newer` down to `older` and `older`'s parents, so
        rev-list, merge-tree and log (rollback) see what a full clone sees. `older` must be an ancestor."""
        for _ in self._deepening():
            if older not in self.shallow_commits() and self._is_ancestor_here(older, newer):
                return
        raise GitError(f"cannot read the history from {newer[:12]} to {older[:12]}: the remote no longer has it")

    def find_in_history(self, name: str) -> str | None:
        """A commit id (full or abbreviated) or ref name, looked up in the branch's history: on a shallow mirror
        history is deepened until it is found or the mirror holds all of it (`None`: not in the branch)."""
        for _ in self._deepening():
            found = self.find_commit(name)
            if found and self.has_commit(found):
                return found
        return None

    def parents(self, sha: str) -> list[str]:
        """The parents of a commit, deepening a shallow mirror when `sha` is at its boundary (where git would
        report no parents, and a revert would take the commit for the first one)."""
        for _ in self._deepening():
            if sha not in self.shallow_commits():
                return self._run("rev-list", "rev-list", "--parents", "-n", "1", "--end-of-options", sha,
                                 "--").split()[1:]
        raise GitError(f"cannot read the parents of {sha[:12]}: the remote no longer has its history")

    def path_exists(self, commit: str, path: str) -> bool:
        if not path:
            return True
        try:
            self._run("cat-file", "cat-file", "-e", "--end-of-options", f"{commit}:{path}")
            return True
        except GitError:
            return False

    def folders_present(self, commit: str, paths: Iterable[str]) -> set[str]:
        """Which of `paths` are folders in `commit`: one `cat-file --batch-check` however many are asked."""
        wanted = sorted({p for p in paths if p and "\n" not in p})
        answers = self._batch_check([f"{commit}:{p}" for p in wanted])
        return {p for p in wanted if answers.get(f"{commit}:{p}", "").split(" ")[1:2] == ["tree"]}

    def list_tree(self, commit: str, path: str) -> dict[str, TreeEntry]:
        """Every file under `path` in `commit`: repo path -> (mode, blob id)."""
        out = self._run("ls-tree", "ls-tree", "-r", "-z", "--full-tree", "--end-of-options", commit,
                        *(["--", path] if path else []),
                        strip_newline_in_stdout=False)
        entries: dict[str, TreeEntry] = {}
        for record in out.split("\0"):
            if not record:
                continue
            meta, name = record.split("\t", 1)
            mode, kind, blob = meta.split()
            if kind == "blob":
                entries[visible_path(name)] = TreeEntry(mode, blob)
        return entries

    def entries(self, commit: str, paths: Iterable[str]) -> dict[str, TreeEntry]:
        """The tree entries of these exact file paths in `commit` (missing ones left out): one `ls-tree`
        however big the tree is."""
        wanted = sorted(set(paths))
        entries: dict[str, TreeEntry] = {}
        for at in range(0, len(wanted), 500):
            out = self._run("ls-tree", "ls-tree", "-z", "--full-tree", "--end-of-options", commit, "--",
                            *(f":(literal){p}" for p in wanted[at:at + 500]), strip_newline_in_stdout=False)
            for record in out.split("\0"):
                if record:
                    meta, name = record.split("\t", 1)
                    mode, kind, blob = meta.split()
                    if kind == "blob":
                        entries[visible_path(name)] = TreeEntry(mode, blob)
        return entries

    def diff(self, old: str, new: str, path: str) -> list[Change]:
        """Files that differ between two commits under `path`, as git's own diff sees them."""
        out = self._run("diff-tree", "diff-tree", "-r", "-z", "--no-renames", "--no-commit-id", "--end-of-options",
                        old, new,
                        *(["--", path] if path else []), strip_newline_in_stdout=False)
        fields = out.split("\0")
        changes: list[Change] = []
        for meta, name in zip(fields[0::2], fields[1::2], strict=False):
            if not meta.startswith(":"):
                continue
            _old_mode, new_mode, _old_blob, new_blob, status = meta[1:].split()
            deleted = status.startswith("D")
            changes.append(Change(status[0], visible_path(name), None if deleted else new_blob, new_mode))
        return changes

    def read_blob(self, blob: str) -> bytes:
        with self._git("cat-file"):
            try:
                data: bytes = self._repo.odb.stream(bytes.fromhex(blob)).read()
            except (ValueError, OSError) as exc:  # GitPython's cat-file --batch: missing or unreadable object
                self._mark_for_repair()
                raise MirrorCorrupt(f"cannot read object {blob[:12]} from the mirror {self.path}: "
                                    f"{first_fatal(str(exc)) or type(exc).__name__}") from None
            return data

    def blob_sizes(self, blobs: list[str]) -> dict[str, int]:
        """Each blob's size from its header (`cat-file --batch-check`, one process): checked before any content
        is read, so a 300 MB blob never takes 300 MB of memory."""
        sizes = {blob: size for blob, (_, size) in self._object_headers(blobs).items()}
        missing = [b for b in blobs if b not in sizes]
        if missing:
            self._mark_for_repair()
            raise MirrorCorrupt(f"git cat-file: object {missing[0]} is missing from the mirror {self.path}")
        return sizes

    def _object_headers(self, blobs: list[str]) -> dict[str, tuple[str, int]]:
        """The type and size of each of `blobs` the mirror has (one process); missing ones are left out."""
        headers: dict[str, tuple[str, int]] = {}
        for line in self._batch_check(blobs).values():
            parts = line.split()
            if len(parts) == 3 and parts[2].isdigit():
                headers[parts[0]] = (parts[1], int(parts[2]))
        return headers

    def read_blobs(self, blobs: list[str]) -> Iterator[tuple[str, bytes]]:
        """Many blobs through one `git cat-file --batch`: requests written by a thread while the answers are
        read, so thousands of blobs cost one process and no round trip each."""
        import subprocess

        if not blobs:
            return
        with _LOCK:
            proc = subprocess.Popen(["git", "--git-dir", str(self.path), "cat-file", "--batch"],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                    env={**os.environ, **git_env(self.credentials)})
            assert proc.stdin is not None and proc.stdout is not None
            stdin, stdout = proc.stdin, proc.stdout

            def feed() -> None:
                try:
                    stdin.write("".join(f"{blob}\n" for blob in blobs).encode())
                    stdin.close()
                except OSError:
                    pass

            writer = threading.Thread(target=feed, name="gitsync-cat-file", daemon=True)
            writer.start()
            try:
                for blob in blobs:
                    header = stdout.readline().split()
                    if len(header) != 3:
                        self._mark_for_repair()
                        raise MirrorCorrupt(f"git cat-file: object {blob} is missing from the mirror {self.path}")
                    data = stdout.read(int(header[2]))
                    stdout.read(1)
                    yield blob, data
            finally:
                stdout.close()
                writer.join()
                proc.wait()

    def commit_header(self, sha: str) -> str:
        """The raw commit object up to the message: tree, parents, author, committer, gpgsig."""
        return self._run("cat-file", "cat-file", "commit", "--end-of-options", sha).split("\n\n", 1)[0]

    def verify_commit(self, sha: str, config: Mapping[str, str], env: Mapping[str, str]) -> tuple[bool, str]:
        """`git verify-commit` with extra config (the trusted keys): whether it passed, and git's report."""
        options = [part for key, value in config.items() for part in ("-c", f"{key}={value}")]
        with self._git("verify-commit") as g:
            status, out, err = g.execute(["git", *options, "verify-commit", "--raw", "--end-of-options", sha],
                                         env={**self._env("verify-commit"), **env}, with_extended_output=True,
                                         with_exceptions=False)
        return status == 0, f"{out}\n{err}".strip()

    def commit_info(self, sha: str) -> dict[str, str | float]:
        """Author, subject and commit time, for the status page."""
        out = self._run("log", "log", "-1", "--format=%an%x00%s%x00%ct", "--end-of-options", sha).strip()
        author, subject, when = (out.split("\0") + ["", "", "0"])[:3]
        return {"author": author, "subject": subject, "time": float(when or 0)}
    def blob_size(self, blob: str) -> int:
        """The size of a blob from its header (`cat-file --batch-check`), without reading its content."""
        with self._git("cat-file"):
            try:
                return int(self._repo.odb.info(bytes.fromhex(blob)).size)
            except (ValueError, OSError) as exc:
                self._mark_for_repair()
                raise MirrorCorrupt(f"cannot read object {blob[:12]} from the mirror {self.path}: "
                                    f"{first_fatal(str(exc)) or type(exc).__name__}") from None

    def commit_summary(self, sha: str) -> str:
        out = self._run("log", "log", "-1", "--format=%s (%an)", "--end-of-options", sha)
        return out.strip()

    def update_ref(self, ref: str, sha: str) -> None:
        self._run("update-ref", "update-ref", "--", ref, sha)

    # -- writing (push-back) ------------------------------------------------------------------------
    def write_blob(self, data: bytes) -> str:
        from io import BytesIO

        from gitdb.base import IStream
        from gitdb.db import LooseObjectDB

        # gitdb writes the loose object in-process; GitPython's own odb.store spawns `git hash-object` per blob.
        with self._git("hash-object"):
            stored = LooseObjectDB(str(self.path / "objects")).store(IStream(b"blob", len(data), BytesIO(data)))
            hexsha = stored.hexsha
            return hexsha.decode() if isinstance(hexsha, bytes) else str(hexsha)

    def read_file(self, commit: str, path: str) -> bytes | None:
        entry = self.list_tree(commit, path).get(path)
        return self.read_blob(entry.blob) if entry else None

    def build_commit(self, base: str | None, files: dict[str, bytes | None], message: str, author: Identity,
                     committer: Identity) -> str:
        """A commit on top of `base` with `files` written (bytes) or removed (None), without a work tree."""
        import tempfile

        lines = []
        for path, data in sorted(files.items()):
            if data is None:
                lines.append(f"0 {'0' * 40}\t{path}\n")
            else:
                lines.append(f"100644 {self.write_blob(data)}\t{path}\n")
        with tempfile.TemporaryDirectory(prefix="gitsync-index-") as tmp:
            env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
            info = Path(tmp) / "info"
            info.write_text("".join(lines), encoding="utf-8")
            with self._git("commit") as g:
                g.execute(["git", "read-tree", *(["--end-of-options", base] if base else ["--empty"])], env=env)
                with open(info, "rb") as stdin:
                    g.execute(["git", "update-index", "--index-info"], env=env, istream=stdin)
                tree = g.execute(["git", "write-tree"], env=env).strip()
                env.update({"GIT_AUTHOR_NAME": author.name, "GIT_AUTHOR_EMAIL": author.email,
                            "GIT_COMMITTER_NAME": committer.name, "GIT_COMMITTER_EMAIL": committer.email})
                msg = Path(tmp) / "msg"
                msg.write_text(message, encoding="utf-8")
                parents = ["-p", base] if base else []
                return str(g.execute(["git", "commit-tree", tree, *parents, "-F", str(msg)], env=env)).strip()

    def push(self, sha: str, branch: str, *, force: bool = False) -> None:
        """Push a commit to a branch; `PushRejected` when the branch moved on since our base."""
        try:
            self._run("push", "push", "--quiet", "--porcelain", "--", self.url,
                      f"{'+' if force else ''}{sha}:refs/heads/{branch}", network=True)
        except GitError as exc:
            text = exc.detail
            # "cannot lock ref ... but expected": another push updated the branch while ours ran (the remote's
            # atomic ref update lost the race): the branch moved on, exactly like a non-fast-forward.
            if any(m in text for m in ("non-fast-forward", "fetch first", "[rejected]", "stale info", "were rejected",
                                       "cannot lock ref")):
                raise PushRejected(f"push to {branch!r} was rejected: the branch moved on") from None
            raise

    def fetch_branch(self, branch: str, ref: str) -> str | None:
        """Fetch another branch (a PR or conflict branch) into `ref`; None when it does not exist."""
        try:
            self._run(*_FETCH, *self._depth(), "--", self.url,
                      f"+refs/heads/{branch}:{ref}",
                      network=True)
        except GitError as exc:
            if "couldn't find remote ref" in exc.detail:
                return None
            raise
        return self.resolve(ref)

    # -- pinning and rollback (pinning.py, commands/rollback.py) -------------------------------------
    def fetch_tag(self, tag: str) -> str | None:
        """Fetch one tag into PINNED_REF; the commit it points at, or None when the remote has no such tag."""
        try:
            self._run(*_FETCH, *self._depth(), "--", self.url,
                      f"+refs/tags/{tag}:{PINNED_REF}",
                      network=True)
        except GitError as exc:
            if "couldn't find remote ref" in str(exc):
                return None
            raise
        return self.resolve(PINNED_REF)

    def fetch_commit(self, sha: str) -> bool:
        """Fetch one commit by its full id (servers allow this for reachable commits); False if refused."""
        try:
            self._run(*_FETCH, *self._depth(), "--", self.url, sha, network=True)
        except GitError:
            return False
        return self.has_commit(sha)

    def find_commit(self, name: str) -> str | None:
        """A commit id (full or abbreviated) or ref name resolved in the mirror, or None."""
        try:
            return self.resolve(name) or None
        except GitError:
            return None

    def subject(self, sha: str) -> str:
        return self._run("log", "log", "-1", "--format=%s", sha, "--").strip()

    def count_commits(self, older: str, newer: str) -> int:
        return int(self._run("rev-list", "rev-list", "--count", f"{older}..{newer}", "--").strip() or 0)

    def first_parent(self, sha: str) -> str | None:
        found = self.parents(sha)
        return found[0] if found else None

    def tree_of(self, sha: str) -> str:
        return self._run("rev-parse", "rev-parse", "--verify", f"{sha}^{{tree}}").strip()

    def commit_tree(self, tree: str, parents: list[str], message: str, author: Identity, committer: Identity) -> str:
        env = {**git_env(self.credentials), "GIT_AUTHOR_NAME": author.name, "GIT_AUTHOR_EMAIL": author.email,
               "GIT_COMMITTER_NAME": committer.name, "GIT_COMMITTER_EMAIL": committer.email}
        import tempfile

        with tempfile.TemporaryDirectory(prefix="gitsync-msg-") as tmp, self._git("commit-tree") as g:
            msg = Path(tmp) / "msg"
            msg.write_text(message, encoding="utf-8")
            args = ["git", "commit-tree", tree, *(x for p in parents for x in ("-p", p)), "-F", str(msg)]
            return str(g.execute(args, env=env)).strip()

    def merge_trees(self, ours: str, theirs: str) -> tuple[str, list[str]]:
        """git's own three-way merge (`merge-tree --write-tree`, the ort merge `git revert` uses) of two
        commits over their merge base, without a work tree: the tree it wrote and the paths that conflict."""
        with self._git("merge-tree") as g:
            status, out, err = g.execute(["git", "merge-tree", "--write-tree", "--name-only", "--no-messages",
                                          ours, theirs], env=git_env(self.credentials), with_extended_output=True,
                                         with_exceptions=False)
        if status not in (0, 1):
            raise GitError(f"git merge-tree failed: {redact_text(str(err).strip(), *self.credentials.known_tokens())}")
        lines = str(out).splitlines()
        return lines[0].strip(), [line for line in lines[1:] if line.strip()] if status == 1 else []

    # -- upkeep (maintenance.py decides when; these only run git) -------------------------------------
    def count_objects(self) -> ObjectCounts:
        return parse_count_objects(self._run("count-objects", "count-objects", "-v"))

    def pack_loose(self, *, prune_grace: float) -> None:
        """Pack the loose objects that are still reachable into one more pack (git's incremental repack, as
        `gc --auto` runs it), then delete unreachable loose objects older than the grace period. Started on
        gitsync's exact count rather than git's `gc --auto` estimate (one of 256 object folders), which
        misses small mirrors."""
        self._present.clear()  # what it prunes is no longer known present
        self._run("repack", "repack", "-d", "-l", "-q", "--no-write-bitmap-index")
        self._run("prune", "prune", f"--expire={max(0, int(prune_grace))}.seconds.ago")

    def keep(self, blobs: Iterable[str]) -> int:
        """Point KEEP_REF at a tree holding these blobs (those the mirror still has), so maintenance never prunes
        them: the bases of local changes waiting in the outbox and the last good versions of held files, whose
        commits may have fallen below a shallow mirror's boundary. Returns how many are kept."""
        import subprocess

        wanted = sorted(set(blobs))
        present = [b for b, size in self.blob_sizes_present(wanted).items() if size >= 0]
        if not present:
            with contextlib.suppress(GitError):
                self._run("update-ref", "update-ref", "-d", "--", KEEP_REF)
            return 0
        with _LOCK:
            done = subprocess.run(["git", "--git-dir", str(self.path), "mktree"], capture_output=True,
                                  input="".join(f"100644 blob {b}\t{b}\n" for b in present).encode(),
                                  env={**os.environ, **git_env(self.credentials)})
        if done.returncode:
            raise GitError(f"git mktree failed in the mirror {self.path}: {first_fatal(done.stderr.decode())}")
        self.update_ref(KEEP_REF, done.stdout.decode().strip())
        return len(present)

    def blob_sizes_present(self, blobs: list[str]) -> dict[str, int]:
        """Like blob_sizes, but a missing object is -1 instead of an error (nothing is marked for repair)."""
        headers = self._object_headers(blobs)
        return {blob: headers[blob][1] if headers.get(blob, ("", 0))[0] == "blob" else -1 for blob in blobs}

    def pack_all_loose(self) -> None:
        """git's own `loose-objects` maintenance task: every loose object, reachable or not, into one pack."""
        self._present.clear()  # what it prunes is no longer known present
        self._run("maintenance", "maintenance", "run", "--task=loose-objects", "--quiet")

    def gc(self, *, prune_grace: float) -> None:
        """git's own full `gc`: one pack, unreachable objects younger than the grace period in a cruft pack,
        older ones deleted. Both commands run in the foreground under the one git lock, so they never overlap
        a fetch or a push; git's repack and gc are safe to interrupt (packs are written to temporary files
        and renamed, objects are deleted only once they are packed)."""
        self._present.clear()  # what it prunes is no longer known present
        self._run("gc", "-c", "gc.autoDetach=false", "-c", "gc.worktreePruneExpire=now", "gc", "--quiet", "--cruft",
                  f"--prune={max(0, int(prune_grace))}.seconds.ago")

@dataclass(frozen=True)
class ObjectCounts:
    """`git count-objects -v`: what the mirror holds on disk."""

    loose: int
    loose_kib: int
    packs: int
    in_pack: int
    pack_kib: int

    @property
    def objects(self) -> int:
        return self.loose + self.in_pack


def parse_count_objects(text: str) -> ObjectCounts:
    values = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if value.strip().isdigit():
            values[key.strip()] = int(value)
    return ObjectCounts(values.get("count", 0), values.get("size", 0), values.get("packs", 0),
                        values.get("in-pack", 0), values.get("size-pack", 0))

