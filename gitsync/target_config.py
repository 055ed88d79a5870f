"""Several targets from one repository: the `[[target]]` tables of gitsync.toml.

```toml
[[target]]
name = "linux"
kind = "jobs-api"
url = "http://farm-linux:8222/queue/management/jobs"
api_key_file = "/run/secrets/farm-linux-key"
include = ["linux/**", "shared/**"]

[[target]]
name = "windows"
directory = "/srv/farm/windows-jobs"
include = ["windows/**", "shared/**"]
```

Each table holds a `name` and any `target.*` key; every other setting (repo, sync, push, ha, ...) is
shared. Each target becomes a whole `Settings` with its own target.* values, so the syncers, push-back
and status code that serve one target serve each of several unchanged. The single `[target]` table and
the GITSYNC_TARGET_* variables and flags describe one target named "default", as before; with several
targets they would be ambiguous, so they are refused with a line naming the table key to use instead.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gitsync.errors import ConfigError
from gitsync.secrets import redact_url

if TYPE_CHECKING:
    from gitsync.config import Settings

#: A target's name keys its state directory, its metrics label and its Redis keys: keep it plain.
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,39}$")


def included(path: str, include: tuple[str, ...]) -> bool:
    """`include` globs are relative to repo.path; `*` and `**` both cross folders. No globs: everything."""
    return not include or any(fnmatch.fnmatchcase(path, pattern) for pattern in include)


def read_tables(path: Path, tables: list[Any]) -> list[dict[str, Any]]:
    """Check the `[[target]]` tables' keys and value types; returns each as {"name": ..., option key: value}."""
    from gitsync.config import OPTIONS, check_value

    by_name = {o.key.split(".", 1)[1]: o for o in OPTIONS if o.key.startswith("target.")}
    read: list[dict[str, Any]] = []
    for number, table in enumerate(tables, 1):
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: [[target]] number {number} must be a table")
        found: dict[str, Any] = {}
        for key, value in table.items():
            if key == "name":
                if not isinstance(value, str) or not NAME.match(value):
                    raise ConfigError(f"{path}: [[target]] number {number}: name must be 1-40 letters, digits, '-' "
                                      f"or '_' (starting with a letter or digit), got {value!r}")
                found["name"] = value
                continue
            option = by_name.get(key)
            if option is None:
                raise ConfigError(f"{path}: unknown key {key!r} in [[target]] number {number}; known keys: name, "
                                  + ", ".join(by_name))
            found[option.key] = check_value(option, value, f"{path}: [[target]] number {number}: {key}")
        read.append(found)
    return read


def several(path: Path, values: Mapping[str, Any], tables: list[dict[str, Any]],
            overrides: Mapping[str, tuple[Any, str]], make: Callable[..., Settings]) -> Settings:
    """The settings of a file with `[[target]]` tables: shared values, then one Settings per target.

    `overrides` are the environment's and the flags' values (key -> (value, where it came from))."""
    from gitsync.config import DEFAULT_TARGET, OPTIONS

    target_defaults = {o.key: o.default for o in OPTIONS if o.key.startswith("target.")}
    given = {k: v for k, v in overrides.items() if k.startswith("target.")}
    shared = {**values, **{k: v for k, (v, _) in overrides.items() if not k.startswith("target.")}}
    several_ = len(tables) > 1
    if not tables:
        raise ConfigError(f"{path}: the target array is empty; add a [[target]] table")
    if several_ and given:
        key, (_, where) = sorted(given.items())[0]
        raise ConfigError(f"{where} sets {key}, which is ambiguous with {len(tables)} [[target]] tables in {path}: "
                          f"set {key.split('.', 1)[1]} in the [[target]] table it belongs to instead")
    names: list[str] = []
    for number, table in enumerate(tables, 1):
        name = table.get("name")
        if name is None:
            if several_:
                raise ConfigError(f"{path}: [[target]] number {number} has no name; with several targets each "
                                  "needs a name = \"...\" (it keys its state, status and metrics)")
            name = DEFAULT_TARGET
        if name in names:
            raise ConfigError(f"{path}: two [[target]] tables are named {name!r}; give each target its own name")
        names.append(name)
    made: list[Settings] = []
    for name, table in zip(names, tables, strict=True):
        own = {**target_defaults, **{k: v for k, v in table.items() if k != "name"}}
        if not several_:
            own.update({k: v for k, (v, _) in given.items()})
        try:
            made.append(make({**shared, **own}, target_name=name))
        except ConfigError as exc:
            raise ConfigError(f"[[target]] {name!r}: {exc}") from None
    _check_distinct(path, made, several_)
    if not several_:
        return made[0]
    return replace(made[0], target_list=tuple(made))


def _check_distinct(path: Path, targets: list[Settings], several_: bool) -> None:
    """Each target needs its place, and no two may share one: they would overwrite and prune each other."""
    places: dict[str, str] = {}
    for t in targets:
        if t.target_kind == "directory":
            if not t.target_directory:
                if not several_:
                    continue  # given later by --target / GITSYNC_TARGET_DIRECTORY, or reported by require()
                raise ConfigError(f"{path}: [[target]] {t.target_name!r} needs directory = \"...\" (the job directory "
                                  "it writes into), or kind = \"jobs-api\" with url = \"...\"")
            place = "directory " + str(Path(t.target_directory).expanduser().resolve())
        else:
            if not t.target_url:
                if not several_:
                    continue
                raise ConfigError(f"{path}: [[target]] {t.target_name!r} (kind = jobs-api) needs url = \"...\" (the "
                                  "jobs service's URL with its url_prefix)")
            place = "jobs service " + redact_url(t.target_url.rstrip("/"))
        other = places.get(place)
        if other is not None:
            raise ConfigError(f"{path}: [[target]] {other!r} and {t.target_name!r} both point at {place}; each "
                              "target needs its own (use include globs in one target to give it several folders)")
        places[place] = t.target_name
