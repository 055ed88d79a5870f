"""What the HTTP layer needs from a job store, the errors a store may raise, and the factory
that picks the store a config names.

Errors::

    StoreError              the store failed (HTTP 500)
    ├── DefinitionNotFound  remove of a name the store does not hold (HTTP 404; Redis only)
    └── RescanAborted       a file broke the whole directory scan, as in Farm (HTTP 500 on /load)
"""

from __future__ import annotations

from typing import Any, Protocol

from gitsync.errors import GitsyncError
from gitsync.jobs_service.config import JobsServiceConfig

Definition = dict[str, Any]


class StoreError(GitsyncError):
    """The store could not do what was asked; the text is safe to return to the client."""


class DefinitionNotFound(StoreError):
    pass


class RescanAborted(StoreError):
    pass


class JobStore(Protocol):
    """A Farm job store, synchronous: the app calls it from a worker thread."""

    def start(self) -> None:
        """Do the first load and start any background watching."""

    def stop(self) -> None:
        """Stop background threads and release connections; safe to call twice."""

    def load(self) -> dict[str, Definition]:
        """A fresh view of every definition, by name, as ``/load`` returns them."""

    def save(self, definition: Definition) -> None:
        """Store a definition already checked by the ``/save`` model (``definitions.JobDefinitionModel``)."""

    def remove(self, name: str) -> None:
        """Remove a definition by name; raise DefinitionNotFound if the store reports that."""

    def spec_path_problem(self, spec_path: str) -> str | None:
        """Why ``/save`` must not write to this ``job_spec_path``, or None (gitsync's rule, stricter than Farm)."""


def build_store(config: JobsServiceConfig) -> JobStore:
    """The store ``config.store_class`` names; imported lazily so each backend stays optional."""
    if config.uses_redis:
        from gitsync.jobs_service.redis_store import RedisJobStore

        return RedisJobStore(config.connection_string)
    from gitsync.jobs_service.directory_store import DirectoryJobStore

    return DirectoryJobStore(
        save_location=config.save_location,
        job_directories=config.job_directories,
        rescan_interval=config.rescan_interval,
    )
