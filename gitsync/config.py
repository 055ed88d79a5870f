"""gitsync's settings: defaults < gitsync.toml < GITSYNC_* environment < command-line flags.

One table (`OPTIONS`) describes every setting once; the file loader, the environment reader,
the CLI flags, `gitsync init` and the redacted start-up log are all generated from it, so they
cannot drift apart. Mistakes stop start-up with a line naming the key, where it came from and
what it should be.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from gitsync.errors import ConfigError
from gitsync.secrets import redact_url

DEFAULT_CONFIG_FILE = "gitsync.toml"
#: The name of the one target of a `[target]` table (or of GITSYNC_TARGET_* settings alone).
DEFAULT_TARGET = "default"


@dataclass(frozen=True)
class Option:
    key: str  # "section.name" in gitsync.toml
    type: type
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    flag: str = ""  # the command-line flag, if the option has one

    @property
    def attr(self) -> str:
        return self.key.replace(".", "_")

    @property
    def env(self) -> str:
        return "GITSYNC_" + self.attr.upper()


OPTIONS: tuple[Option, ...] = (
    Option("repo.url", str, "", "Git URL (https://, ssh://, git@host:path, or a local path) of the definitions repo",
           flag="--repo"),
    Option("repo.branch", str, "main", "Branch to sync", flag="--branch"),
    Option("repo.path", str, "", "Folder inside the repo that holds the .kit files (empty = whole repo)",
           flag="--path"),
    Option("repo.token_file", str, "", "File holding an HTTPS access token (never logged)"),
    Option("repo.token_env", str, "", "Name of an environment variable holding an HTTPS access token"),
    Option("repo.username", str, "x-access-token", "User name sent with the token (GitLab: oauth2)"),
    Option("repo.ssh_key_file", str, "", "Private key for ssh:// and git@ URLs"),
    Option("repo.known_hosts_file", str, "", "known_hosts file to verify the ssh host key strictly"),
    Option("repo.fetch_depth", int, 50, "Commits of history the mirror keeps (a shallow mirror, so the state "
           "directory is bounded by the current tree, not the repository's history); older history is fetched on "
           "demand (rollback, force-push checks, pins) and pruned again. 0 = the whole history"),
    Option("repo.ref", str, "", "A tag or commit to hold the directory at instead of the branch head (pinning); "
           "local changes wait in the outbox while pinned", flag="--ref"),
    Option("target.directory", str, "", "Job directory the Farm jobs service watches (its "
           "new_job_definition_save_location or one of its job_directories)", flag="--target"),
    Option("target.kind", str, "directory", "directory: write .kit files into target.directory; jobs-api: save "
           "definitions through a jobs service's HTTP API (target.url), e.g. one on a RedisJobStore",
           choices=("directory", "jobs-api")),
    Option("target.url", str, "", "jobs-api: the jobs service's URL including its url_prefix, e.g. "
           "http://farm-queue:8222/queue/management/jobs"),
    Option("target.api_key_file", str, "", "jobs-api: file holding the jobs service's api_key (read before each "
           "use, never logged)"),
    Option("target.api_key_env", str, "", "jobs-api: name of an environment variable holding the api_key"),
    Option("target.prune", str, "owned", "jobs-api: owned = remove only definitions gitsync saved and git "
           "deleted; all = git owns the service: remove every definition git does not have",
           choices=("owned", "all")),
    Option("target.include", str, "", "Globs, relative to repo.path, of the .kit files this target gets (* and ** "
           "both cross folders): a list in the file, comma-separated in the environment, e.g. "
           "[\"linux/**\", \"shared/**\"]; empty = all"),
    Option("target.timeout", float, 30.0, "jobs-api: seconds one HTTP call to the jobs service may take"),
    Option("target.poll_interval", float, 15.0, "jobs-api: seconds between two polls of the jobs service's /load "
           "for changes others made through /save or /remove (push-back; each poll runs a cycle)"),
    Option("target.file_mode", str, "0664", "Permissions (octal) of the files gitsync writes; Farm's jobs service "
           "rewrites files in place on jobs/save and jobs/remove, so they must be writable by its user (group-writable "
           "with a shared group, or the same uid)"),
    Option("target.group", str, "", "Group (name or number) given to the files gitsync writes, e.g. the fsGroup "
           "shared with Farm's container (empty = the process's own group)"),
    Option("state.dir", str, "", "Where gitsync keeps its mirror and state database "
           "(default: ~/.local/state/gitsync)", flag="--state-dir"),
    Option("state.history_limit", int, 1000, "Sync history rows kept in the state database"),
    Option("state.conflicts_limit", int, 50, "Conflict-branch records kept for `gitsync conflicts` and status"),
    Option("state.validation_cache", int, 500, "Validation results kept for file versions outside the applied "
           "commit (earlier versions, refused commits); beyond this, maintenance drops them"),
    Option("maintenance.interval", float, 30.0, "Seconds between full maintenance checks between cycles (packing "
           "the mirror when needed, a checkpoint of the state database); after a cycle that fetched or pushed, the "
           "mirror is also checked at once (0 = never)"),
    Option("maintenance.loose_objects", int, 50, "Loose objects in the mirror that make maintenance pack them "
           "(each takes at least 4 KiB on disk)"),
    Option("maintenance.max_packs", int, 10, "Packs in the mirror that make maintenance run a full git gc"),
    Option("maintenance.prune_grace", float, 60.0, "Seconds an unreachable object (history below the shallow "
           "boundary, a rejected push, a conflict commit) stays in the mirror before maintenance deletes it"),
    Option("log.heartbeat", float, 3600.0, "Seconds between the INFO heartbeat lines of an agent (0 = none)"),
    Option("sync.interval", float, 30.0, "Seconds between syncs (Farm agents poll every 30 s too)",
           flag="--interval"),
    Option("sync.cron", str, "", "Cron expression (5 fields) to use instead of the interval", flag="--cron"),
    Option("sync.jitter", float, 0.0, "Up to this many seconds of random delay per scheduled sync"),
    Option("sync.timeout", float, 120.0, "Seconds a git network operation may take"),
    Option("sync.shutdown_timeout", float, 25.0, "Seconds SIGTERM waits for the step in progress before gitsync "
           "exits anyway (keep it under the pod's terminationGracePeriodSeconds, 30 by default)"),
    Option("sync.strict", bool, False, "Treat warnings such as name != table key as errors", flag="--strict"),
    Option("sync.on_invalid", str, "refuse", "refuse: apply nothing while any file is invalid; skip: apply "
           "the valid files and keep the last good version of invalid ones", choices=("refuse", "skip"),
           flag="--on-invalid"),
    Option("sync.max_delete_share", float, 0.5, "Refuse a commit that deletes more than this share of files"),
    Option("sync.max_file_size", int, 1024 * 1024, "Largest .kit file accepted, in bytes"),
    Option("sync.require_signed", bool, False, "Apply only commits signed by a trusted key (an unsigned head, or "
           "one signed by another key, is refused and reported)"),
    Option("sync.allowed_signers_file", str, "", "Trusted SSH signing keys, in ssh-keygen's allowed-signers "
           "format (principal key-type key)"),
    Option("sync.gpg_keyring_file", str, "", "Trusted OpenPGP public keys (gpg --export, armored or binary)"),
    Option("sync.commit_status", bool, False, "Post a gitsync commit status (success or failure) on each applied "
           "or refused commit, through the push.forge* settings"),
    Option("sync.on_force_push", str, "apply", "apply: sync to a rewritten branch head, with a warning naming "
           "both commits; refuse: keep the applied commit and report an error", choices=("apply", "refuse")),
    Option("push.mode", str, "direct", "What happens to changes made in the target (jobs/save, jobs/remove, "
           "hand edits): direct = commit to the branch; pull-request = branch + PR; off = revert them after "
           "saving them on a conflict branch", choices=("direct", "pull-request", "off"), flag="--push-mode"),
    Option("push.debounce", float, 1.0, "Seconds of quiet in the target before local changes are committed"),
    Option("push.new_file_dir", str, "", "Repo folder for definitions created with jobs/save (default: repo.path)"),
    Option("push.author_name", str, "gitsync", "Author of push-back commits"),
    Option("push.author_email", str, "gitsync@localhost", "Author e-mail of push-back commits"),
    Option("push.committer_name", str, "", "Committer of push-back commits (default: the author)"),
    Option("push.committer_email", str, "", "Committer e-mail of push-back commits (default: the author's)"),
    Option("push.message", str, "{summary}\n\n{details}\n\nGitsync-Origin: {origin}",
           "Commit message template: {summary}, {details}, {origin}, {jobs}, {host}, {directory}"),
    Option("push.max_backoff", float, 300.0, "Longest wait between push retries while the remote is down"),
    Option("push.forge", str, "github", "Forge API for pull-request mode", choices=("github", "gitlab", "gitea")),
    Option("push.forge_api_url", str, "", "Forge API root, e.g. https://api.github.com"),
    Option("push.forge_repository", str, "", "owner/name (GitLab: group/project) on the forge"),
    Option("push.forge_token_file", str, "", "File holding the forge API token"),
    Option("push.forge_token_env", str, "", "Environment variable holding the forge API token"),
    Option("ha.redis_url", str, "", "High availability: redis:// URL of the Redis holding the leader lease; "
           "several `gitsync run` replicas with the same URL and ha.key elect one leader (empty = off)"),
    Option("ha.lease_ttl", float, 15.0, "High availability: seconds the leader lease lasts without renewal; "
           "a follower takes over within twice this"),
    Option("ha.key", str, "gitsync:leader", "High availability: the Redis key of the lease (one per set of "
           "replicas serving the same targets)"),
    Option("server.listen", str, "127.0.0.1:8087", "host:port for /healthz, /status, /metrics and the "
           "webhook (empty = no server)"),
    Option("server.webhook_secret_file", str, "", "File holding the webhook secret (HMAC-SHA256 "
           "X-Hub-Signature-256, or X-Gitlab-Token)"),
    Option("server.webhook_max_body", int, 1024 * 1024, "Largest webhook body accepted, in bytes (413 beyond; "
           "refused while reading, before the signature is checked)"),
)

_BY_KEY = {o.key: o for o in OPTIONS}
_SECTIONS = sorted({o.key.split(".")[0] for o in OPTIONS})


@dataclass(frozen=True)
class Settings:
    repo_url: str
    repo_branch: str
    repo_path: str
    repo_token_file: str
    repo_token_env: str
    repo_username: str
    repo_ssh_key_file: str
    repo_known_hosts_file: str
    repo_fetch_depth: int
    repo_ref: str
    target_directory: str
    target_kind: str
    target_url: str
    target_api_key_file: str
    target_api_key_env: str
    target_prune: str
    target_include: str
    target_timeout: float
    target_poll_interval: float
    target_file_mode: str
    target_group: str
    state_dir: str
    state_history_limit: int
    state_conflicts_limit: int
    state_validation_cache: int
    maintenance_interval: float
    maintenance_loose_objects: int
    maintenance_max_packs: int
    maintenance_prune_grace: float
    log_heartbeat: float
    sync_interval: float
    sync_cron: str
    sync_jitter: float
    sync_timeout: float
    sync_shutdown_timeout: float
    sync_strict: bool
    sync_on_invalid: str
    sync_max_delete_share: float
    sync_max_file_size: int
    sync_require_signed: bool
    sync_allowed_signers_file: str
    sync_gpg_keyring_file: str
    sync_commit_status: bool
    sync_on_force_push: str
    push_mode: str
    push_debounce: float
    push_new_file_dir: str
    push_author_name: str
    push_author_email: str
    push_committer_name: str
    push_committer_email: str
    push_message: str
    push_max_backoff: float
    push_forge: str
    push_forge_api_url: str
    push_forge_repository: str
    push_forge_token_file: str
    push_forge_token_env: str
    ha_redis_url: str
    ha_lease_ttl: float
    ha_key: str
    server_listen: str
    server_webhook_secret_file: str
    server_webhook_max_body: int
    #: The target's name: "default" for the single `[target]` table (and the GITSYNC_TARGET_* settings), else
    #: the `name` of its `[[target]]` table. Not an option: it keys the target's state, metrics and status.
    target_name: str = DEFAULT_TARGET
    #: With `[[target]]` tables: every target's settings (these settings with that target's target.* values).
    target_list: tuple[Settings, ...] = ()

    def targets(self) -> tuple[Settings, ...]:
        """The targets to sync, each as the whole settings with its own target.* values (one for `[target]`)."""
        return self.target_list or (self,)

    @property
    def several_targets(self) -> bool:
        return len(self.targets()) > 1

    @property
    def include(self) -> tuple[str, ...]:
        """``target.include`` as a tuple of globs (empty: every file under repo.path)."""
        return tuple(p.strip() for p in self.target_include.split(",") if p.strip())

    @property
    def file_mode(self) -> int:
        """``target.file_mode`` as permission bits (checked at load time)."""
        return int(self.target_file_mode, 8)

    @property
    def file_gid(self) -> int | None:
        """``target.group`` as a group id, or None to leave the group alone (checked at load time)."""
        return _group_id(self.target_group) if self.target_group else None

    @property
    def state_path(self) -> Path:
        return Path(self.state_dir).expanduser() if self.state_dir else Path.home() / ".local/state/gitsync"

    def require(self, *keys: str) -> None:
        """Stop with one line per missing setting, naming every way to give it."""
        for key in keys:
            option = _BY_KEY[key]
            if not getattr(self, option.attr):
                via = f"{option.flag}, " if option.flag else ""
                raise ConfigError(f"{key} is not set: give it with {via}{option.env} or in {DEFAULT_CONFIG_FILE}")

    def describe(self) -> str:
        """The effective settings for the start-up log, with credentials redacted."""
        shown = []
        for option in OPTIONS:
            value = getattr(self, option.attr)
            if isinstance(value, str) and "://" in value:  # repo.url, push.forge_api_url, ...
                value = redact_url(value)
            if option.key.startswith("target.") and self.target_list:
                continue  # shown per target below
            shown.append(f"{option.key}={value!r}")
        for target in self.target_list:
            keys = [o for o in OPTIONS if o.key.startswith("target.")]
            shown.append(f"target[{target.target_name}]=(" + " ".join(
                f"{o.key.split('.', 1)[1]}={redact_url(v) if isinstance(v, str) and '://' in v else v!r}"
                for o in keys for v in [getattr(target, o.attr)] if v != o.default) + ")")
        return " ".join(shown)


def load_settings(config_file: str | None, flags: Mapping[str, Any] | None = None,
                  environ: Mapping[str, str] | None = None) -> Settings:
    """Merge the four layers; `flags` maps option keys to values the user gave (None = not given).

    `[[target]]` tables (several targets) are read by target_config.py; the environment and flags then
    set target.* keys only when there is one target."""
    from gitsync import target_config

    environ = os.environ if environ is None else environ
    values = {o.key: o.default for o in OPTIONS}
    tables: list[dict[str, Any]] | None = None
    path = config_file or environ.get("GITSYNC_CONFIG") or ""
    source = Path(path or DEFAULT_CONFIG_FILE)
    if path or Path(DEFAULT_CONFIG_FILE).is_file():
        found, tables = _read_file(source, explicit=bool(path))
        values.update(found)
    overrides: dict[str, tuple[Any, str]] = {}
    for option in OPTIONS:
        if option.env in environ:
            overrides[option.key] = (_from_text(option, environ[option.env], f"environment variable {option.env}"),
                                     f"environment variable {option.env}")
    for key, value in (flags or {}).items():
        if value is not None:
            overrides[key] = (_check(_BY_KEY[key], value, f"flag {_BY_KEY[key].flag}"), f"flag {_BY_KEY[key].flag}")
    if tables is not None:
        return target_config.several(source, values, tables, overrides, _settings)
    values.update({key: value for key, (value, _) in overrides.items()})
    return _settings(values)


def _settings(values: Mapping[str, Any], **extra: Any) -> Settings:
    settings = Settings(**{_BY_KEY[k].attr: v for k, v in values.items()}, **extra)
    _check_consistency(settings)
    return settings


def _read_file(path: Path, explicit: bool) -> tuple[dict[str, Any], list[dict[str, Any]] | None]:
    """The file's settings, and its `[[target]]` tables (None when it has a `[target]` table or none)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist; create one with `gitsync init`") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    found: dict[str, Any] = {}
    tables: list[dict[str, Any]] | None = None
    for section, table in data.items():
        if section == "target" and isinstance(table, list):
            from gitsync.target_config import read_tables

            tables = read_tables(path, table)
            continue
        if section not in _SECTIONS or not isinstance(table, dict):
            raise ConfigError(f"{path}: unknown section [{section}]; known sections: "
                              + ", ".join(f"[{s}]" for s in _SECTIONS))
        for name, value in table.items():
            key = f"{section}.{name}"
            option = _BY_KEY.get(key)
            if option is None:
                known = ", ".join(o.key.split(".")[1] for o in OPTIONS if o.key.startswith(section + "."))
                raise ConfigError(f"{path}: unknown key {key!r}; known keys in [{section}]: {known}")
            found[key] = check_value(option, value, f"{path}: {key}")
    return found, tables


def check_value(option: Option, value: Any, where: str) -> Any:
    """A value from the file: as `_check`, and target.include may be a list of globs (as in `[[target]]`)."""
    if option.key == "target.include" and isinstance(value, list):
        if not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where} must be a list of glob strings, got {value!r}")
        value = ", ".join(value)
    return _check(option, value, where)


_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


def _check(option: Option, value: Any, where: str) -> Any:
    expected = option.type
    ok = isinstance(value, expected) and not (expected is not bool and isinstance(value, bool))
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise ConfigError(f"{where} must be {_TYPE_NAMES[expected]}, got {value!r} ({type(value).__name__})")
    if option.choices and value not in option.choices:
        raise ConfigError(f"{where} must be one of {', '.join(option.choices)}, got {value!r}")
    return value


def _from_text(option: Option, text: str, where: str) -> Any:
    try:
        if option.type is bool:
            lowered = text.strip().lower()
            if lowered not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError(text)
            return _check(option, lowered in ("1", "true", "yes", "on"), where)
        return _check(option, option.type(text), where)
    except ValueError:
        raise ConfigError(f"{where} must be {_TYPE_NAMES[option.type]}, got {text!r}") from None


def _check_consistency(s: Settings) -> None:
    for key, value in (("sync.interval", s.sync_interval), ("sync.timeout", s.sync_timeout),
                       ("sync.shutdown_timeout", s.sync_shutdown_timeout),
                       ("target.timeout", s.target_timeout), ("target.poll_interval", s.target_poll_interval),
                       ("ha.lease_ttl", s.ha_lease_ttl),
                       ("push.debounce", s.push_debounce), ("push.max_backoff", s.push_max_backoff)):
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(f"{key} must be more than 0 seconds, got {value}")
    for key, value in (("sync.jitter", s.sync_jitter), ("sync.max_file_size", s.sync_max_file_size),
                       ("repo.fetch_depth", s.repo_fetch_depth), ("maintenance.interval", s.maintenance_interval),
                       ("maintenance.prune_grace", s.maintenance_prune_grace), ("log.heartbeat", s.log_heartbeat)):
        if not (math.isfinite(value) and value >= 0):
            raise ConfigError(f"{key} must be 0 or more, got {value}")
    if s.server_webhook_max_body <= 0:
        raise ConfigError(f"server.webhook_max_body must be more than 0 bytes, got {s.server_webhook_max_body}")
    for key, count in (("state.history_limit", s.state_history_limit),
                       ("state.conflicts_limit", s.state_conflicts_limit),
                       ("state.validation_cache", s.state_validation_cache),
                       ("maintenance.loose_objects", s.maintenance_loose_objects),
                       ("maintenance.max_packs", s.maintenance_max_packs)):
        if count < 1:
            raise ConfigError(f"{key} must be 1 or more, got {count}")
    if s.repo_ref.startswith("-") or any(c in s.repo_ref for c in " \t\n~^:?*[\\") or ".." in s.repo_ref:
        raise ConfigError(f"repo.ref must be a tag name or a commit id, got {s.repo_ref!r}")
    if not 0 < s.sync_max_delete_share <= 1:
        raise ConfigError(f"sync.max_delete_share must be in (0, 1], got {s.sync_max_delete_share}")
    _check_not_option_like(s)
    _check_target(s)
    if s.repo_path.startswith("/") or ".." in s.repo_path.split("/"):
        raise ConfigError(f"repo.path must be a folder inside the repo, got {s.repo_path!r}")
    if s.push_mode == "pull-request" and not (s.push_forge_api_url and s.push_forge_repository):
        raise ConfigError("push.mode = pull-request needs push.forge_api_url and push.forge_repository "
                          "(and a token: push.forge_token_file or push.forge_token_env)")
    if s.target_kind == "jobs-api" and s.target_url and not s.target_url.startswith(("http://", "https://")):
        raise ConfigError(f"target.url must be an http:// or https:// URL of the jobs service, got "
                          f"{redact_url(s.target_url)!r}")
    if s.ha_redis_url and not s.ha_redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError("ha.redis_url must be a redis://, rediss:// or unix:// URL, got "
                          f"{redact_url(s.ha_redis_url)!r}")
    if s.sync_commit_status and not (s.push_forge_api_url and s.push_forge_repository):
        raise ConfigError("sync.commit_status needs push.forge, push.forge_api_url and push.forge_repository "
                          "(and a token: push.forge_token_file or push.forge_token_env)")
    if s.sync_require_signed and not (s.sync_allowed_signers_file or s.sync_gpg_keyring_file):
        raise ConfigError("sync.require_signed needs the trusted keys: sync.allowed_signers_file (SSH signatures) "
                          "and/or sync.gpg_keyring_file (OpenPGP)")
    if s.sync_cron:
        from apscheduler.triggers.cron import CronTrigger

        try:
            CronTrigger.from_crontab(s.sync_cron)
        except ValueError as exc:
            raise ConfigError(f"sync.cron {s.sync_cron!r} is not a 5-field cron expression: {exc}") from None


def _check_not_option_like(s: Settings) -> None:
    """Values that reach git's command line must not read as options (`--upload-pack=CMD` runs CMD).

    gitsync also puts `--` before them; refusing them here gives one clear line instead of a git error.
    """
    for key, value in (("repo.url", s.repo_url), ("repo.branch", s.repo_branch), ("repo.path", s.repo_path),
                       ("push.new_file_dir", s.push_new_file_dir)):
        shown = redact_url(value) if key == "repo.url" else value
        if value.startswith("-"):
            raise ConfigError(f"{key} must not start with '-' (git would read it as an option), got {shown!r}")
        if any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise ConfigError(f"{key} must not contain control characters, got {shown!r}")
    branch = s.repo_branch
    if branch and (any(c in branch for c in " ~^:?*[\\") or ".." in branch or branch.startswith("/")
                   or branch.endswith(("/", ".", ".lock")) or "@{" in branch or "//" in branch):
        raise ConfigError(f"repo.branch {branch!r} is not a valid git branch name")


def _group_id(group: str) -> int:
    if group.isdigit():
        return int(group)
    import grp

    return grp.getgrnam(group).gr_gid


def _check_target(s: Settings) -> None:
    try:
        mode = int(s.target_file_mode, 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o777:
        raise ConfigError(f"target.file_mode must be octal permissions such as \"0664\", got {s.target_file_mode!r}")
    if mode & 0o600 != 0o600:
        raise ConfigError(f"target.file_mode {s.target_file_mode!r} must let gitsync read and write its own files "
                          "(at least 0600)")
    if s.target_group:
        try:
            _group_id(s.target_group)
        except KeyError:
            raise ConfigError(f"target.group {s.target_group!r} is not a group on this machine; "
                              "give its number (e.g. Farm's fsGroup) instead") from None


def flag_values(namespace: Any) -> dict[str, Any]:
    """Option values from parsed CLI arguments (attributes named like `Option.attr`)."""
    return {o.key: getattr(namespace, o.attr, None) for o in OPTIONS if o.flag}


def starter_file() -> str:
    """A commented gitsync.toml with every option at its default, for `gitsync init`."""
    lines = ["# gitsync configuration. Every key can also be set with a GITSYNC_* environment variable",
             "# (shown after each key) or a command-line flag; flags win over the environment, which wins",
             "# over this file.", ""]
    for section in ("repo", "target", "state", "sync", "push", "ha", "server", "maintenance", "log"):
        lines.append(f"[{section}]")
        for option in (o for o in OPTIONS if o.key.startswith(section + ".")):
            lines.append(f"# {option.help}  ({option.env})")
            value = option.default
            rendered = ("true" if value else "false") if isinstance(value, bool) else repr(value).replace("'", '"')
            commented = "" if option.key in ("repo.url", "target.directory") else "# "
            lines.append(f"{commented}{option.key.split('.', 1)[1]} = {rendered}")
        lines.append("")
    return "\n".join(lines)


assert {f.name for f in fields(Settings)} - {"target_name", "target_list"} == {o.attr for o in OPTIONS}, \
    "Settings and OPTIONS disagree"
