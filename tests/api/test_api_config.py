"""Settings of the jobs-api target and HA: mistakes stop start-up with one line naming the fix."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gitsync.api_sync import ApiSyncer
from gitsync.config import load_settings
from gitsync.errors import ConfigError


@pytest.mark.parametrize(("flags", "says"), [
    ({"target.kind": "jobs-api", "target.url": "farm:8222/queue"}, "target.url must be an http:// or https:// URL"),
    ({"target.kind": "jobs-api", "ha.redis_url": "http://r:6379"}, "ha.redis_url must be a redis://"),
    ({"target.kind": "jobs-api", "ha.lease_ttl": 0.0}, "ha.lease_ttl must be more than 0 seconds"),
], ids=["url without scheme", "ha url scheme", "zero ttl"])
def test_a_wrong_setting_is_one_line(flags: dict[str, object], says: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(says)):
        load_settings(None, {"repo.url": "/srv/repo.git", **flags}, environ={})


def test_a_jobs_api_target_without_an_api_key_says_where_to_give_it(tmp_path: Path) -> None:
    settings = load_settings(None, {"repo.url": "/srv/repo.git", "target.kind": "jobs-api",
                                    "target.url": "http://farm:8222/queue/management/jobs",
                                    "state.dir": str(tmp_path)}, environ={})
    with pytest.raises(ConfigError, match="target.api_key_file .*target.api_key_env"):
        ApiSyncer.from_settings(settings)


def test_the_redis_password_and_url_credentials_are_redacted_at_start_up() -> None:
    settings = load_settings(None, {"repo.url": "/srv/repo.git", "target.kind": "jobs-api",
                                    "target.url": "http://user:urlpass@farm:8222/queue/management/jobs",
                                    "ha.redis_url": "redis://:redispass@redis:6379/0"}, environ={})
    shown = settings.describe()
    assert "urlpass" not in shown and "redispass" not in shown
