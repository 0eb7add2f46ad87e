"""Issue 12's friction items that need a real IMAP server: what ops read when a mailbox cannot be opened."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from emailrouter.ops.cli import main
from tests.integration.test_daemon import write_config
from tests.support.dovecot import Dovecot
from tests.support.sink import SmtpSink


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as s:
        yield s


def test_a_refused_login_shows_the_servers_words_not_a_bytes_literal(
    tmp_path: Path, dovecot: Dovecot, sink: SmtpSink, capsys: pytest.CaptureFixture[str]
) -> None:
    """A wrong password is reported as a login failure with the server's text, and says retrying does not help."""
    path = write_config(tmp_path, dovecot, sink)
    (tmp_path / "imap-password").write_text("wrong\n")
    assert main(["replay", "--old", str(path), "--new", str(path), "imap:jkt"]) == 1
    err = capsys.readouterr().err
    assert "jkt: cannot log in as router on 127.0.0.1:" in err
    assert "b'" not in err and 'b"' not in err
    assert "Authentication failed" in err and "retrying does not help" in err


def test_replay_of_a_missing_folder_names_that_folder(
    tmp_path: Path, dovecot: Dovecot, sink: SmtpSink, capsys: pytest.CaptureFixture[str]
) -> None:
    """`replay imap:jkt/Nope` says it cannot open Nope (not the mailbox's configured INBOX)."""
    path = write_config(tmp_path, dovecot, sink)
    assert main(["replay", "--old", str(path), "--new", str(path), "imap:jkt/Nope"]) == 1
    err = capsys.readouterr().err
    assert "jkt: cannot open Nope on 127.0.0.1:" in err and "INBOX" not in err
    assert "b'" not in err
