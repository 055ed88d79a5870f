"""A Farm-compatible jobs service: a stand-in for Omniverse Farm's, for development, CI and demos.

It is not Farm and does not replace it. It serves the same HTTP API (``/load``, ``/save``,
``/remove``, ``/status`` under ``/queue/management/jobs``, and the root probes) on FastAPI and
pydantic as Farm does, reads Farm's configuration with dynaconf as Farm does, and stores
definitions the way Farm's ``DirectoryJobStore`` and ``RedisJobStore`` do, quirks included
(``toml.dump`` rewrites, in-place truncate-and-write saves, non-recursive scans, rescans that
abort, moves ignored). Where it is stricter than Farm, for safety, the module saying so names it. That way gitsync
can be developed and tested end to end without an NVIDIA install, against the behaviour it must
cope with in production. It runs no jobs and has no agents.
"""

from __future__ import annotations

# Nothing is imported here on purpose: `gitsync sync --once` must not pay for FastAPI and uvicorn
# just because the CLI lists this subcommand. Import from the submodules (server, config, app).
