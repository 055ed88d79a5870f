"""git's stderr folded to the one line an operator sees: the cause, not git's generic last words."""
from gitsync.gitrepo import first_fatal


def test_an_http_401_names_the_status_even_when_git_ends_on_a_protocol_complaint() -> None:
    # what git 2.39 prints when smart HTTP refuses the credentials part way through a fetch
    text = ("error: RPC failed; HTTP 401 curl 22 The requested URL returned error: 401\n"
            "fatal: expected flush after ref listing\n")
    assert "HTTP 401" in first_fatal(text)


def test_ssh_cause_before_a_generic_fatal_is_kept() -> None:
    text = "Host key verification failed.\r\nfatal: Could not read from remote repository.\n"
    assert first_fatal(text).startswith("Host key verification failed.")


def test_a_specific_fatal_is_used_as_it_is() -> None:
    assert first_fatal("warning: x\nfatal: couldn't find remote ref refs/heads/nope\n") == \
        "couldn't find remote ref refs/heads/nope"
