"""Conformance with Farm 2.x: each test names the Farm module and function whose behaviour it pins.

The fixtures are the jobs-service suite's (a real service over real HTTP on 127.0.0.1, a real
redis-server), imported so both suites share one definition of them.
"""

from __future__ import annotations

from jobs_service.conftest import (  # noqa: F401 - fixtures, registered by import
    dir_api,
    http,
    poll,
    redis_api,
    redis_client,
    redis_server,
    redis_url,
    save_location,
    start_service,
    write_kit,
)
