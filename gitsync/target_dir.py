"""A Farm job directory as gitsync sees it: flat `.kit` files, written atomically.

Farm's watcher must never see a half-written definition, so every write goes to a hidden
temporary file in the same directory (Farm ignores names not ending in `.kit`), is flushed to
disk, then renamed over the target in one step.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from stat import S_ISREG
from typing import Protocol

from gitsync.companion import is_companion_target, is_safe_target
from gitsync.kitname import TEMP_PREFIX as TEMP_PREFIX  # defined with the name rules that count them
from gitsync.kitname import TEMP_SUFFIX as TEMP_SUFFIX
from gitsync.kitname import is_definition_name

#: errno values that concern one file's name, not the directory: that file is skipped, the rest written.
_NAME_ERRORS = (errno.ENAMETOOLONG, errno.EILSEQ, errno.EINVAL, errno.EISDIR, errno.ENOTDIR, errno.ENOTEMPTY)


def blob_id(data: bytes) -> str:
    """The git blob id of some content, so disk files compare directly with git's tree entries."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


def stat_key(st: os.stat_result) -> str:
    """Like git's index: unchanged size, mtime and inode mean unchanged content, without reading it."""
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"


def temp_name(name: str) -> str:
    """A short, fixed-length temp name: any name the file system accepts can be written atomically
    (a 246-character name plus prefix and suffix went over the 255-byte limit and wedged every sync)."""
    digest = hashlib.sha1(name.encode("utf-8", "surrogateescape"), usedforsecurity=False).hexdigest()[:16]
    return f"{TEMP_PREFIX}{digest}{TEMP_SUFFIX}"


#: Fingerprints are sums of 64-bit entry hashes modulo this, so one entry's change can be folded in or out.
FINGERPRINT_MOD = 2**64


def entry_hash(name: str, key: str) -> int:
    """64 bits of one directory entry: its name and stat key (see `Fingerprint`)."""
    digest = hashlib.blake2b(f"{name}\0{key}".encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return int.from_bytes(digest, "big")


class Fingerprint:
    """Every entry of a directory (any name, any kind) folded into 64 bits, independent of order: an equal
    fingerprint later means no entry was created, removed, renamed or changed (size, mtime, inode) since.
    Content written in place changes a file's mtime, so it changes the fingerprint too, exactly when it would
    change the stat key a full scan compares (and as blind as that key to an edit that keeps size and mtime).

    Order-independence lets an apply fold its own writes in (`replace`) instead of listing the directory
    again: the fingerprint after the apply is the one before, minus the old entries, plus the new ones."""

    def __init__(self, value: int = 0) -> None:
        self.value = value

    def add(self, name: str, key: str | None) -> None:
        if key is not None:
            self.value = (self.value + entry_hash(name, key)) % FINGERPRINT_MOD

    def replace(self, name: str, old: str | None, new: str | None) -> None:
        if old is not None:
            self.value = (self.value - entry_hash(name, old)) % FINGERPRINT_MOD
        self.add(name, new)


#: The key of an entry that cannot be stat'ed (a dangling symlink, gone since it was listed).
UNSTATABLE = "-"


class FileTooLarge(ValueError):
    """A file in the job directory over sync.max_file_size: it is not read, pushed or stored."""

    def __init__(self, name: str, size: int, limit: int) -> None:
        super().__init__(f"{name} is {size} bytes, over sync.max_file_size ({limit}); not read or pushed until it "
                         "is smaller")
        self.name, self.size, self.limit = name, size, limit


class Recorded(Protocol):
    """Anything that remembers a file's blob id and stat key (a `Seen`, a manifest entry)."""

    @property
    def blob(self) -> str: ...

    @property
    def stat(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Seen:
    blob: str
    stat: str


#: Farm's container runs as another user and rewrites files in place: group-writable by default.
DEFAULT_FILE_MODE = 0o664


def _entry_key(entry: os.DirEntry[str]) -> str:
    """An entry's stat key, following symlinks as `scan` does (UNSTATABLE when that fails)."""
    try:
        return stat_key(entry.stat())
    except OSError:
        return UNSTATABLE


class DirectoryTarget:
    def __init__(self, directory: Path, *, file_mode: int = DEFAULT_FILE_MODE, gid: int | None = None,
                 max_file_size: int | None = None) -> None:
        self.directory = directory
        #: Content over this size is never read whole (sync.max_file_size): `read` raises FileTooLarge.
        self.max_file_size = max_file_size
        self.file_mode = file_mode
        self.gid = gid
        #: Names the last `write_many` could not create, and why (too long, a directory in the way, ...).
        self.refused: dict[str, str] = {}

    def obstructed(self, names: Iterable[str]) -> dict[str, str]:
        """Names that exist in the directory as something other than a regular file (a directory, a FIFO),
        so no definition can be written there until it is moved away."""
        found = {}
        for name in names:
            try:
                st = os.lstat(self.directory / name)
            except OSError:
                continue
            if not stat.S_ISREG(st.st_mode) and not stat.S_ISLNK(st.st_mode):
                kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
                found[name] = (f"{name} in the job directory is {kind}; move it away so gitsync can write the "
                               "definition there")
        return found

    def ensure(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)

    def scan(self, known: Mapping[str, Recorded], fingerprint: Fingerprint | None = None) -> dict[str, Seen]:
        """Every `.kit` file directly in the directory; files whose stat matches `known` (what gitsync last
        wrote, e.g. its manifest) are not re-read. With `fingerprint`, every entry is also folded into it."""
        found: dict[str, Seen] = {}
        if not self.directory.is_dir():
            return found
        with os.scandir(self.directory) as entries:
            for entry in entries:
                previous = known.get(entry.name)  # a name gitsync wrote or looked at passed the name rule then
                if previous is None and not is_definition_name(entry.name):
                    if fingerprint is not None:
                        fingerprint.add(entry.name, _entry_key(entry))
                    continue
                try:
                    st = entry.stat()
                except FileNotFoundError:
                    if fingerprint is not None:
                        fingerprint.add(entry.name, UNSTATABLE)
                    continue
                key = stat_key(st)
                if fingerprint is not None:
                    fingerprint.add(entry.name, key)
                if not entry.is_file():
                    continue
                if previous is not None and previous.stat == key:
                    found[entry.name] = Seen(previous.blob, key)
                    continue
                blob = self.file_blob(entry.name)
                if blob is not None:
                    found[entry.name] = Seen(blob, key)
        # Files inside companion folders that gitsync owns or looked at (never the folders' other files).
        found.update(self.scan_names((name for name in known if is_companion_target(name)), known))
        return found

    def fingerprint(self) -> int | None:
        """The directory's `Fingerprint` (one stat per entry, nothing read); None when it cannot be listed."""
        counted = Fingerprint()
        try:
            with os.scandir(self.directory) as entries:
                for entry in entries:
                    counted.add(entry.name, _entry_key(entry))
        except OSError:
            return None
        return counted.value

    def stat_keys(self, names: Iterable[str]) -> dict[str, str | None]:
        """Each name's stat key now, as `fingerprint` counts it (None: no such entry)."""
        keys: dict[str, str | None] = {}
        for name in names:
            try:
                keys[name] = stat_key(os.stat(self.directory / name))
            except FileNotFoundError:
                keys[name] = UNSTATABLE if os.path.lexists(self.directory / name) else None
            except OSError as exc:
                if exc.errno not in _NAME_ERRORS:
                    raise
                keys[name] = None  # a name that cannot exist here does not exist
        return keys

    def scan_names(self, names: Iterable[str], known: Mapping[str, Recorded]) -> dict[str, Seen]:
        """Like `scan`, for only these file names (one `stat` each): what a change or the watcher named."""
        found: dict[str, Seen] = {}
        for name in names:
            if not (is_definition_name(name) or is_safe_target(name)):
                continue
            try:
                st = os.lstat(self.directory / name) if "/" in name else os.stat(self.directory / name)
                if "/" in name and self._linked_parent(name):
                    continue
            except (FileNotFoundError, NotADirectoryError):
                continue
            if not S_ISREG(st.st_mode):
                continue
            key = stat_key(st)
            previous = known.get(name)
            if previous is not None and previous.stat == key:
                found[name] = Seen(previous.blob, key)
                continue
            blob = self.file_blob(name)
            if blob is not None:
                found[name] = Seen(blob, key)
        return found

    def _linked_parent(self, name: str) -> str | None:
        """The first folder on the way to a companion file that is a symbolic link (or not a folder): gitsync
        never writes or reads through one, which could lead outside the job directory."""
        parts = name.split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            folder = "/".join(parts[:depth])
            try:
                st = os.lstat(self.directory / folder)
            except FileNotFoundError:
                return None
            if not stat.S_ISDIR(st.st_mode):
                return folder
        return None

    def read(self, name: str) -> bytes | None:
        """The file's content (None if it is gone); `FileTooLarge` over `max_file_size`, checked by size first
        so a huge file never takes its size in memory."""
        try:
            with open(self.directory / name, "rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                limit = self.max_file_size
                if limit is not None and size > limit:
                    raise FileTooLarge(name, size, limit)
                data = handle.read() if limit is None else handle.read(limit + 1)
        except (FileNotFoundError, IsADirectoryError):
            return None
        if self.max_file_size is not None and len(data) > self.max_file_size:
            raise FileTooLarge(name, len(data), self.max_file_size)  # it grew while being read
        return data

    def file_blob(self, name: str) -> str | None:
        """The git blob id of a file, hashed in chunks: memory stays bounded whatever its size."""
        try:
            with open(self.directory / name, "rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                digest = hashlib.sha1(b"blob %d\0" % size, usedforsecurity=False)
                read = 0
                while chunk := handle.read(1024 * 1024):
                    digest.update(chunk)
                    read += len(chunk)
        except (FileNotFoundError, IsADirectoryError):
            return None
        if read != size:  # changed while hashed: hash what is there now, in one go
            data = self.read(name) if self.max_file_size is None or read <= self.max_file_size else None
            return blob_id(data) if data is not None else None
        return digest.hexdigest()

    def stat(self, name: str) -> str:
        return stat_key(os.stat(self.directory / name))

    def current_stat(self, name: str) -> str | None:
        try:
            return stat_key(os.stat(self.directory / name))
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno in _NAME_ERRORS:  # a name that cannot exist here does not exist
                return None
            raise

    def write_many(self, files: Iterable[tuple[str, bytes]], expected: Mapping[str, str | None], *,
                   batch: bool = False) -> dict[str, str]:
        """Write each file atomically (`batch`: one `sync()` for all instead of an fsync each, far cheaper for
        many files), unless it changed since it was planned (`expected`: its stat key then,
        None for absent): a save landing mid-sync must not be overwritten. Returns the stat key of every file
        written; skipped files are left for the next cycle."""
        self.ensure()
        self.refused = {}
        folder = str(self.directory)
        # Plain strings, not Paths: a Path per file (two per pending rename) made a 10,000-file apply hold ~10 MB.
        pending: list[tuple[str, str, str]] = []  # (temp path, target name, stat key of what we wrote)
        left: set[str] = set()  # temps opened and not renamed yet: a full disk (ENOSPC, EFBIG) leaves none behind
        written: dict[str, str] = {}
        try:  # `files` is consumed lazily, so a 10,000-file apply never holds every file in memory at once
            for name, data in files:
                temp = os.path.join(folder, temp_name(name))
                left.add(temp)
                with open(temp, "wb") as handle:
                    # Set on the temp file, before the rename: the file appears with its final mode and group,
                    # whatever the umask (fchmod ignores it).
                    if self.gid is not None:
                        os.fchown(handle.fileno(), -1, self.gid)
                    os.fchmod(handle.fileno(), self.file_mode)
                    handle.write(data)
                    handle.flush()
                    if not batch:
                        os.fsync(handle.fileno())
                    # The stat of what *we* wrote, taken before the rename: a save landing between the rename
                    # and a later stat() must not be recorded as gitsync's own content.
                    ours = stat_key(os.fstat(handle.fileno()))
                pending.append((temp, name, ours))
            if batch:
                os.sync()
            for temp, name, ours in pending:
                try:
                    if "/" in name and not self._make_parents(name):
                        continue
                    if self.current_stat(name) == expected.get(name):
                        os.replace(temp, os.path.join(folder, name))
                        left.discard(temp)
                        written[name] = ours
                except OSError as exc:
                    if exc.errno not in _NAME_ERRORS:
                        raise
                    # This one name cannot exist here; the others are still written (no wedge on one file).
                    self.refused[name] = f"the file system refuses the name: {exc.strerror}"
        finally:
            for temp in left:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(temp)
        self._sync_directory()
        return written

    def _make_parents(self, name: str) -> bool:
        """The folders a companion file goes in; False (the file is refused) when something else is in the way."""
        blocked = self._linked_parent(name)
        if blocked is None:
            try:
                (self.directory / name).parent.mkdir(parents=True, exist_ok=True)
                return True
            except (FileExistsError, NotADirectoryError):
                blocked = self._linked_parent(name) or name
        self.refused[name] = (f"{blocked} in the job directory is not a folder (a file or a symbolic link); move it "
                              "away so gitsync can write the companion folder")
        return False

    def delete(self, names: Iterable[str], expected: Mapping[str, str | None]) -> list[str]:
        """Delete files that are still as planned; returns the ones deleted. A companion folder left empty is
        removed too (only when empty: a file someone else put there keeps it)."""
        deleted = [name for name in names if self.current_stat(name) == expected.get(name)
                   and not ("/" in name and self._linked_parent(name))]
        for name in deleted:
            (self.directory / name).unlink(missing_ok=True)
        for name in sorted((n for n in deleted if "/" in n), key=lambda n: -n.count("/")):
            folder = (self.directory / name).parent
            while folder != self.directory:
                try:
                    folder.rmdir()
                except OSError:
                    break
                folder = folder.parent
        if deleted:
            self._sync_directory()
        return deleted

    def remove_leftovers(self) -> None:
        """Temp files of a write that a crash interrupted; their targets were never touched."""
        try:
            with os.scandir(self.directory) as entries:  # one listing; pathlib's glob matched a regex per entry
                leftovers = [entry.name for entry in entries if entry.name.startswith(TEMP_PREFIX)]
        except OSError:  # no directory (yet), or unreadable: the scan that follows says so
            return
        for name in leftovers:
            (self.directory / name).unlink(missing_ok=True)

    def _sync_directory(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
