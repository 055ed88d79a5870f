"""The forge adapter: GitHub end to end against the stand-in over real HTTP; GitLab and Gitea
request shapes through httpx.MockTransport (there is no stand-in for them); retries."""

from __future__ import annotations

import email.utils
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from gitsync.errors import ConfigError, ForgeError
from gitsync.forge import Forge, PullRequest, RetryPolicy, load_token, make_forge
from gitsync.secrets import Secret
from gitsync.testing.forge_standin import GitHubStandin, RunningStandin

TOKEN = "ghp_s3cr3t-token-value"


class Sleeps(list[float]):
    """Records backoff delays instead of waiting them."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def standin() -> GitHubStandin:
    return GitHubStandin(token=TOKEN, repository="acme/jobs")


@pytest.fixture
def github_url(standin: GitHubStandin) -> Iterator[str]:
    with RunningStandin(standin.app) as running:
        yield running.url


@pytest.fixture
def github(github_url: str) -> Iterator[Forge]:
    forge = make_forge("github", github_url, "acme/jobs", Secret(TOKEN))
    yield forge
    forge.close()  # type: ignore[attr-defined]


# -- GitHub, against the stand-in over real HTTP -------------------------------------------


def test_github_opens_a_pull_request_for_the_sync_branch(
    github: Forge, standin: GitHubStandin
) -> None:
    pr = github.open_pr("gitsync/changes", "main", "gitsync: 2 definitions", "details")

    assert pr == PullRequest(1, pr.url, "open", "gitsync/changes", "main")
    assert pr.url.endswith("/acme/jobs/pull/1")
    sent = standin.requests[-1]
    assert (sent.method, sent.path) == ("POST", "/repos/acme/jobs/pulls")
    assert sent.json == {
        "head": "gitsync/changes",
        "base": "main",
        "title": "gitsync: 2 definitions",
        "body": "details",
    }
    assert sent.headers["authorization"] == f"Bearer {TOKEN}"
    assert sent.headers["accept"] == "application/vnd.github+json"


def test_github_finds_the_open_pull_request_of_a_branch_and_only_that(
    github: Forge, standin: GitHubStandin
) -> None:
    assert github.find_open_pr("gitsync/changes", "main") is None
    github.open_pr("other-branch", "main", "someone else's", "")
    mine = github.open_pr("gitsync/changes", "main", "gitsync", "")

    assert github.find_open_pr("gitsync/changes", "main") == mine
    assert github.find_open_pr("gitsync/changes", "release") is None
    assert standin.requests[-1].query == {
        "state": "open",
        "head": "acme:gitsync/changes",
        "base": "release",
    }


def test_github_open_pr_when_one_is_already_open_returns_it(github: Forge) -> None:
    first = github.open_pr("gitsync/changes", "main", "gitsync", "")

    assert github.open_pr("gitsync/changes", "main", "gitsync again", "") == first


def test_github_updates_title_and_body(github: Forge, standin: GitHubStandin) -> None:
    pr = github.open_pr("gitsync/changes", "main", "old title", "old body")

    updated = github.update_pr(pr.number, "new title", "new body")

    assert updated == pr
    assert (standin.pull(pr.number)["title"], standin.pull(pr.number)["body"]) == (
        "new title",
        "new body",
    )
    assert standin.requests[-1].method == "PATCH"


def test_github_reports_a_merged_pull_request_as_merged_and_no_longer_open(
    github: Forge, standin: GitHubStandin
) -> None:
    pr = github.open_pr("gitsync/changes", "main", "gitsync", "")

    standin.merge(pr.number)

    assert github.get_pr(pr.number).state == "merged"
    assert github.find_open_pr("gitsync/changes", "main") is None
    assert github.open_pr("gitsync/changes", "main", "next round", "").number == 2


def test_github_reports_a_closed_pull_request_as_closed(
    github: Forge, standin: GitHubStandin
) -> None:
    pr = github.open_pr("gitsync/changes", "main", "gitsync", "")

    standin.close(pr.number)

    assert github.get_pr(pr.number).state == "closed"
    assert github.find_open_pr("gitsync/changes", "main") is None


def test_github_sets_a_commit_status(github: Forge, standin: GitHubStandin) -> None:
    github.set_commit_status("abc123", "failure", "x" * 200, context="gitsync/validate")

    [status] = standin.statuses("abc123")
    assert status["state"] == "failure"
    assert status["context"] == "gitsync/validate"
    assert len(status["description"]) == 140  # GitHub's limit; longer is a 422


def test_github_wrong_token_is_a_forge_error_that_does_not_show_the_token(
    github_url: str,
) -> None:
    wrong = "ghp_wrong-token-1234"
    forge = make_forge("github", github_url, "acme/jobs", Secret(wrong))

    with pytest.raises(ForgeError) as caught:
        forge.find_open_pr("gitsync/changes", "main")

    text = str(caught.value)
    assert caught.value.status == 401
    assert "github" in text and "GET /repos/acme/jobs/pulls" in text and "401" in text
    assert wrong not in text and TOKEN not in text


def test_github_unknown_pull_request_is_a_404_forge_error(github: Forge) -> None:
    with pytest.raises(ForgeError, match=r"GET /repos/acme/jobs/pulls/7 failed: HTTP 404"):
        github.get_pr(7)


def test_github_retries_a_flaky_gateway_over_real_http(
    github_url: str, standin: GitHubStandin
) -> None:
    sleeps = Sleeps()
    forge = make_forge(
        "github", github_url, "acme/jobs", Secret(TOKEN), retry=RetryPolicy(sleep=sleeps)
    )
    standin.fail_next(502, times=2)

    assert forge.find_open_pr("gitsync/changes", "main") is None
    assert sleeps == [0.5, 1.0]
    assert len(standin.requests) == 3


def test_github_api_root_with_a_path_prefix(standin: GitHubStandin) -> None:
    """GitHub Enterprise serves the API under /api/v3; the prefix must survive joining."""
    from starlette.applications import Starlette
    from starlette.routing import Mount

    with RunningStandin(Starlette(routes=[Mount("/api/v3", standin.app)])) as running:
        forge = make_forge("github", f"{running.url}/api/v3/", "acme/jobs", Secret(TOKEN))
        assert forge.open_pr("b", "main", "t", "").number == 1


# -- GitLab and Gitea, through MockTransport -------------------------------------------------


Reply = Callable[[httpx.Request], httpx.Response]


def mock_forge(
    kind: Any,
    reply: Reply,
    *,
    api_url: str = "https://forge.example",
    repository: str = "acme/jobs",
) -> tuple[Forge, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return reply(request)

    forge = make_forge(
        kind,
        api_url,
        repository,
        Secret(TOKEN),
        transport=httpx.MockTransport(handler),
        retry=RetryPolicy(sleep=Sleeps()),
    )
    return forge, seen


def gitlab_mr(iid: int = 3, state: str = "opened", head: str = "gitsync/changes") -> dict[str, Any]:
    return {
        "id": 9000 + iid,
        "iid": iid,
        "web_url": f"https://gitlab.example/group/sub/jobs/-/merge_requests/{iid}",
        "state": state,
        "source_branch": head,
        "target_branch": "main",
    }


def body(request: httpx.Request) -> Any:
    return json.loads(request.content)


def test_gitlab_find_open_pr_asks_for_opened_merge_requests_of_the_branch() -> None:
    forge, seen = mock_forge(
        "gitlab", lambda r: httpx.Response(200, json=[gitlab_mr()]), repository="group/sub/jobs"
    )

    pr = forge.find_open_pr("gitsync/changes", "main")

    assert pr == PullRequest(3, gitlab_mr()["web_url"], "open", "gitsync/changes", "main")
    request = seen[0]
    assert request.method == "GET"
    assert (
        request.url.raw_path.split(b"?")[0] == b"/api/v4/projects/group%2Fsub%2Fjobs/merge_requests"
    )
    assert dict(request.url.params) == {
        "state": "opened",
        "source_branch": "gitsync/changes",
        "target_branch": "main",
    }
    assert request.headers["PRIVATE-TOKEN"] == TOKEN
    assert "authorization" not in request.headers


def test_gitlab_open_and_update_send_description_and_use_the_iid() -> None:
    forge, seen = mock_forge("gitlab", lambda r: httpx.Response(201, json=gitlab_mr()))

    assert forge.open_pr("gitsync/changes", "main", "t", "b").number == 3
    forge.update_pr(3, "t2", "b2")

    assert body(seen[0]) == {
        "source_branch": "gitsync/changes",
        "target_branch": "main",
        "title": "t",
        "description": "b",
    }
    assert (seen[1].method, seen[1].url.path) == (
        "PUT",
        "/api/v4/projects/acme/jobs/merge_requests/3",
    )
    assert body(seen[1]) == {"title": "t2", "description": "b2"}


def test_gitlab_open_pr_conflict_returns_the_existing_merge_request() -> None:
    def reply(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            message = ["Another open merge request already exists for this source branch: !3"]
            return httpx.Response(409, json={"message": message})
        return httpx.Response(200, json=[gitlab_mr()])

    forge, _ = mock_forge("gitlab", reply)

    assert forge.open_pr("gitsync/changes", "main", "t", "b").number == 3


@pytest.mark.parametrize(
    ("gitlab_state", "state"),
    [("opened", "open"), ("locked", "open"), ("merged", "merged"), ("closed", "closed")],
)
def test_gitlab_merge_request_states(gitlab_state: str, state: str) -> None:
    forge, seen = mock_forge(
        "gitlab", lambda r: httpx.Response(200, json=gitlab_mr(state=gitlab_state))
    )

    assert forge.get_pr(3).state == state
    assert seen[0].url.path == "/api/v4/projects/acme/jobs/merge_requests/3"


@pytest.mark.parametrize(
    ("state", "gitlab_state"),
    [("pending", "pending"), ("success", "success"), ("failure", "failed"), ("error", "failed")],
)
def test_gitlab_commit_status_states(state: Any, gitlab_state: str) -> None:
    forge, seen = mock_forge(
        "gitlab", lambda r: httpx.Response(201, json={}), api_url="https://gitlab.example/api/v4/"
    )

    forge.set_commit_status("abc123", state, "3 definitions synced")

    assert seen[0].url.raw_path == b"/api/v4/projects/acme%2Fjobs/statuses/abc123"
    assert body(seen[0]) == {
        "state": gitlab_state,
        "name": "gitsync",
        "description": "3 definitions synced",
    }


def test_gitlab_status_already_in_that_state_is_not_an_error() -> None:
    message = (
        "Cannot transition status via :enqueue from :pending"
        ' (Reason(s): Status cannot transition via "enqueue")'
    )
    forge, _ = mock_forge("gitlab", lambda r: httpx.Response(400, json={"message": message}))

    forge.set_commit_status("abc123", "pending", "syncing")


def gitea_pr(
    number: int, head: str, *, merged: bool = False, state: str = "open"
) -> dict[str, Any]:
    return {
        "number": number,
        "html_url": f"https://gitea.example/acme/jobs/pulls/{number}",
        "state": state,
        "merged": merged,
        "head": {"ref": head},
        "base": {"ref": "main"},
    }


def test_gitea_find_open_pr_pages_through_open_pull_requests() -> None:
    pages = {
        "1": [gitea_pr(9, "feature-a"), gitea_pr(8, "feature-b")],
        "2": [gitea_pr(5, "gitsync/changes")],
    }
    forge, seen = mock_forge(
        "gitea", lambda r: httpx.Response(200, json=pages.get(r.url.params["page"], []))
    )

    pr = forge.find_open_pr("gitsync/changes", "main")

    assert pr == PullRequest(
        5, "https://gitea.example/acme/jobs/pulls/5", "open", "gitsync/changes", "main"
    )
    assert [r.url.params["page"] for r in seen] == ["1", "2"]
    assert seen[0].url.path == "/api/v1/repos/acme/jobs/pulls"
    assert seen[0].url.params["state"] == "open"
    assert seen[0].headers["authorization"] == f"token {TOKEN}"


def test_gitea_find_open_pr_stops_at_the_first_empty_page() -> None:
    forge, seen = mock_forge("gitea", lambda r: httpx.Response(200, json=[]))

    assert forge.find_open_pr("gitsync/changes", "main") is None
    assert len(seen) == 1


@pytest.mark.parametrize(
    ("merged", "gitea_state", "state"),
    [(False, "open", "open"), (True, "closed", "merged"), (False, "closed", "closed")],
)
def test_gitea_pull_request_states(merged: bool, gitea_state: str, state: str) -> None:
    pr = gitea_pr(4, "b", merged=merged, state=gitea_state)
    forge, _ = mock_forge("gitea", lambda r: httpx.Response(200, json=pr))

    assert forge.get_pr(4).state == state


def test_gitea_open_update_and_status_paths() -> None:
    forge, seen = mock_forge("gitea", lambda r: httpx.Response(201, json=gitea_pr(4, "b")))

    forge.open_pr("b", "main", "t", "d")
    forge.update_pr(4, "t2", "d2")
    forge.set_commit_status("abc123", "success", "synced")

    assert [(r.method, r.url.path) for r in seen] == [
        ("POST", "/api/v1/repos/acme/jobs/pulls"),
        ("PATCH", "/api/v1/repos/acme/jobs/pulls/4"),
        ("POST", "/api/v1/repos/acme/jobs/statuses/abc123"),
    ]
    assert body(seen[2]) == {"state": "success", "description": "synced", "context": "gitsync"}


# -- retries and errors ---------------------------------------------------------------------


def scripted(*responses: httpx.Response) -> Reply:
    queue = list(responses)
    return lambda request: queue.pop(0)


def forge_with_sleeps(reply: Reply, **policy: Any) -> tuple[Forge, list[httpx.Request], Sleeps]:
    sleeps = Sleeps()
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return reply(request)

    forge = make_forge(
        "github",
        "https://api.github.example",
        "acme/jobs",
        Secret(TOKEN),
        transport=httpx.MockTransport(handler),
        retry=RetryPolicy(sleep=sleeps, **policy),
    )
    return forge, seen, sleeps


@pytest.mark.parametrize(
    ("status", "headers"),
    [(502, {}), (500, {}), (503, {}), (429, {}), (403, {"Retry-After": "0.5"})],
    ids=["502", "500", "503", "429", "403-secondary-rate-limit"],
)
def test_retries_with_exponential_backoff_then_succeeds(
    status: int, headers: dict[str, str]
) -> None:
    forge, seen, sleeps = forge_with_sleeps(
        scripted(
            httpx.Response(status, headers=headers),
            httpx.Response(status, headers=headers),
            httpx.Response(200, json=[]),
        )
    )

    assert forge.find_open_pr("b", "main") is None
    assert len(seen) == 3
    assert sleeps == ([0.5, 0.5] if headers else [0.5, 1.0])


def test_a_403_without_retry_after_is_not_retried() -> None:
    forge, seen, _ = forge_with_sleeps(lambda r: httpx.Response(403, json={"message": "Forbidden"}))

    with pytest.raises(
        ForgeError, match="HTTP 403 Forbidden: Forbidden - check that the forge token"
    ):
        forge.get_pr(1)
    assert len(seen) == 1


def test_retry_after_may_be_an_http_date() -> None:
    soon = email.utils.format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)

    assert 25 < RetryPolicy(max_delay=100).delay(1, soon) <= 30
    assert RetryPolicy().delay(1, "not a date") == 0.5


def test_retries_429_after_the_retry_after_the_forge_asks_for_capped() -> None:
    forge, seen, sleeps = forge_with_sleeps(
        scripted(
            httpx.Response(429, headers={"Retry-After": "3"}),
            httpx.Response(429, headers={"Retry-After": "3600"}),
            httpx.Response(200, json=[]),
        ),
        max_delay=10.0,
    )

    assert forge.find_open_pr("b", "main") is None
    assert sleeps == [3.0, 10.0]


def test_gives_up_after_the_bounded_attempts_with_a_clear_error() -> None:
    forge, seen, sleeps = forge_with_sleeps(lambda r: httpx.Response(503), attempts=3)

    with pytest.raises(ForgeError) as caught:
        forge.get_pr(1)

    assert len(seen) == 3 and len(sleeps) == 2
    assert caught.value.status == 503
    assert str(caught.value) == (
        "github: GET /repos/acme/jobs/pulls/1 failed:"
        " HTTP 503 Service Unavailable (after 3 attempts)"
    )


def test_client_errors_are_not_retried() -> None:
    forge, seen, sleeps = forge_with_sleeps(
        lambda r: httpx.Response(404, json={"message": "Not Found"})
    )

    with pytest.raises(ForgeError, match="HTTP 404 Not Found: Not Found"):
        forge.get_pr(1)
    assert len(seen) == 1 and sleeps == []


def test_connection_failures_are_retried_then_reported() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    forge, seen, _ = forge_with_sleeps(refuse, attempts=2)

    with pytest.raises(
        ForgeError, match=r"github: GET /repos/acme/jobs/pulls/1 failed after 2"
    ) as caught:
        forge.get_pr(1)
    assert len(seen) == 2 and caught.value.status is None


def test_a_token_echoed_by_the_forge_is_redacted_from_the_error() -> None:
    echo = httpx.Response(400, json={"message": f"bad header Bearer {TOKEN}"})
    forge, _, _ = forge_with_sleeps(lambda r: echo)

    with pytest.raises(ForgeError) as caught:
        forge.get_pr(1)
    assert TOKEN not in str(caught.value) and "****" in str(caught.value)


# -- construction and tokens ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "api_url", "repository", "message"),
    [
        ("bitbucket", "https://x", "a/b", "unknown forge"),
        ("github", "api.github.com", "a/b", "not an http"),
        ("github", "https://x", "a/b/c", "owner/name"),
        ("gitea", "https://x", "justname", "owner/name"),
    ],
)
def test_make_forge_rejects_bad_configuration(
    kind: Any, api_url: str, repository: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        make_forge(kind, api_url, repository, Secret(TOKEN))


def test_load_token_from_a_file_is_stripped(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text(f"  {TOKEN}\n")

    assert load_token(str(path), "IGNORED_WHEN_A_FILE_IS_SET").reveal() == TOKEN


def test_load_token_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITSYNC_TEST_FORGE_TOKEN", TOKEN)

    assert load_token(None, "GITSYNC_TEST_FORGE_TOKEN").reveal() == TOKEN


def test_load_token_names_the_missing_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GITSYNC_TEST_FORGE_TOKEN", raising=False)
    (tmp_path / "empty").write_text("\n")

    with pytest.raises(ConfigError, match="token file .*missing does not exist"):
        load_token(str(tmp_path / "missing"), None)
    with pytest.raises(ConfigError, match="token file .*empty is empty"):
        load_token(str(tmp_path / "empty"), None)
    with pytest.raises(ConfigError, match="GITSYNC_TEST_FORGE_TOKEN .*is not set"):
        load_token(None, "GITSYNC_TEST_FORGE_TOKEN")
    with pytest.raises(ConfigError, match="set token_file or token_env"):
        load_token(None, None)
