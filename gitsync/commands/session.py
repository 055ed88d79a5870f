"""How a command that changes something shares the state directory with a running agent.

Without an agent the command takes the state directory lock, like `gitsync sync --once`. With
`gitsync run` holding it, the command opens the same state without the lock and takes its *turn*
(turn.py): it waits for the agent's cycle to end, works while the agent waits, and hands the turn
back. Either way it holds the turn, so no two processes ever run git or apply at the same time.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gitsync.config import Settings
from gitsync.errors import ConfigError
from gitsync.state import StateBusy
from gitsync.sync import Syncer
from gitsync.target_set import close_all, open_syncers
from gitsync.turn import turn

if TYPE_CHECKING:
    from gitsync.api_sync import ApiSyncer
    from gitsync.pushback import PushBack

log = logging.getLogger("gitsync.session")


@dataclass
class Session:
    syncer: Syncer  # the directory target the command works on
    beside_agent: bool  # another gitsync holds the state directory; this command took its turn
    #: Every target (the one above among them), for a command that syncs them all.
    syncers: list[Syncer | ApiSyncer] = field(default_factory=list)


@contextmanager
def session(settings: Settings, *, exclusive: bool = False) -> Iterator[Session]:
    """`exclusive`: refuse to run beside another process (what `sync --once` has always done). The command
    works on the directory target (with several targets: the only directory target)."""
    directory = [t.target_name for t in settings.targets() if t.target_kind == "directory"]
    if len(directory) != 1:
        raise ConfigError("this command works on one directory target, and the configuration has "
                          f"{len(directory)} ({', '.join(directory) or 'only jobs-api targets'}); run it with a "
                          "configuration that has only the one to work on")
    with all_targets(settings, exclusive=exclusive) as (syncers, beside):
        chosen = next(s for s in syncers if isinstance(s, Syncer))
        yield Session(chosen, beside, syncers)


@contextmanager
def all_targets(settings: Settings, *, exclusive: bool = False) \
        -> Iterator[tuple[list[Syncer | ApiSyncer], bool]]:
    """Every target's syncer (one mirror, one lock), in the agent's turn; and whether an agent runs beside."""
    try:
        syncers = open_syncers(settings)
        beside = False
    except StateBusy:
        if exclusive:
            raise
        syncers = open_syncers(settings, lock=False)
        beside = True
    try:
        wait = 2 * settings.sync_timeout + 30  # a cycle's fetch and push are each bounded by sync.timeout
        with turn(settings.state_path, timeout=wait):
            if beside:
                log.debug("working beside the agent on %s, in its turn", settings.state_path)
            yield syncers, beside
    finally:
        close_all(syncers)


@dataclass
class ApiSession:
    syncer: ApiSyncer
    beside_agent: bool


@contextmanager
def api_session(settings: Settings) -> Iterator[ApiSession]:
    """`session` for a jobs-api target (`outbox retry|drop`, `conflicts ack`)."""
    from gitsync.api_sync import ApiSyncer

    try:
        syncer = ApiSyncer.from_settings(settings)
        beside = False
    except StateBusy:
        syncer = ApiSyncer.from_settings(settings, lock=False)
        beside = True
    try:
        with turn(settings.state_path, timeout=2 * settings.sync_timeout + 30):
            yield ApiSession(syncer, beside)
    finally:
        syncer.close()


def forge_for(settings: Settings) -> Any:
    """The forge API client in pull-request mode, else None."""
    if settings.push_mode != "pull-request":
        return None
    from gitsync.forge import load_token, make_forge

    token = load_token(settings.push_forge_token_file or None, settings.push_forge_token_env or None)
    return make_forge(settings.push_forge, settings.push_forge_api_url,  # type: ignore[arg-type]
                      settings.push_forge_repository, token)


def build_pushback(settings: Settings, syncer: Syncer | ApiSyncer) -> PushBack:
    """The push-back side as the agent wires it."""
    from gitsync.outbox import Outbox
    from gitsync.pushback import PushBack

    if not isinstance(syncer, Syncer):
        from gitsync.api_pushback import ApiPushBack

        return ApiPushBack(syncer, Outbox(syncer.state), forge=forge_for(settings))

    return PushBack(settings, syncer.state, syncer.mirror, syncer.target, Outbox(syncer.state),
                    forge=forge_for(settings))
