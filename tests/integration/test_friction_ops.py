"""Issue 12's friction items that need a real IMAP server: what ops read when a mailbox cannot be opened."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from emailrouter.config.loader import load_config
from emailrouter.ops.cli import main
from emailrouter.service.store import Store
from tests.conftest import ROOT
from tests.integration.test_daemon import _wait, once, start_daemon, write_config
from tests.integration.test_delivery import mail
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


def _quarantine(path: Path, dovecot: Dovecot, monkeypatch: pytest.MonkeyPatch, count: int) -> None:
    """`count` mails into INBOX, quarantined by a pass whose routing stage breaks (UIDs 1..count)."""
    import emailrouter.service.processor as processor

    for n in range(count):
        dovecot.append("router", "INBOX", mail(n))

    def broken(raw: bytes, *args: object, **kwargs: object) -> object:
        raise RuntimeError("stage exploded")

    with monkeypatch.context() as patched:
        patched.setattr(processor, "route", broken)
        assert once(load_config(path))[0] == 0


def _retry(path: Path, *uids: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "emailrouter", "quarantine", "retry", "-c", str(path), "--wait", "30", *uids],
        capture_output=True, text=True, timeout=90, cwd=ROOT, check=False, env=env,
    )  # fmt: skip


def test_quarantine_retry_goes_through_the_running_daemon_under_the_config_on_disk(
    tmp_path: Path, dovecot: Dovecot, sink: SmtpSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With `run` holding the state, `quarantine retry` has the daemon reload the config on disk and retry under it
    (it says so, and which version); a config on disk the daemon rejects retries nothing and says why."""
    path = write_config(tmp_path, dovecot, sink)
    _quarantine(path, dovecot, monkeypatch, 2)
    notices = sink.count  # the failure unit's quarantine notices
    log = tmp_path / "daemon.log"
    with log.open("wb") as out:
        proc = start_daemon(path, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait(lambda: '"event": "started"' in log.read_text(), 30, "the daemon's start")
        rules = path.parent / "rules.yaml"
        rules.write_text(rules.read_text() + "# edited after the daemon started\n")
        on_disk = load_config(path).version
        done = _retry(path, "1")
        assert done.returncode == 0, done.stderr
        assert f"the daemon (pid {proc.pid}) runs on" in done.stdout and "reloads the config on disk" in done.stdout
        assert f"jkt: retried 1 in the daemon under version {on_disk}: planned 1" in done.stdout
        sink.wait_for(notices + 2)  # the reply and the forward of mail 1
        # a secret only this shell has: the command accepts the config, the daemon's reload cannot
        secret = f"{{file: {tmp_path / 'imap-password'}}}"
        path.write_text(path.read_text().replace(secret, "{env: EMAILROUTER_TEST_RETRY_PW}"))
        refused = _retry(path, "2", env={**os.environ, "EMAILROUTER_TEST_RETRY_PW": "secret"})
        assert refused.returncode == 1
        assert "rejected the config on disk and keeps the one it runs; nothing retried" in refused.stderr
        assert "mailboxes[0].password: environment variable EMAILROUTER_TEST_RETRY_PW is not set" in refused.stderr
        assert proc.poll() is None  # still running, on its config
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    events = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    retried = [e for e in events if e["event"] == "quarantine_retried"]
    assert [(e["uids"], e["planned"]) for e in retried] == [([1], 1)]
    store = Store(tmp_path / "state.sqlite3")
    try:
        assert [r.key.uid for r in store.quarantined()] == [2]
    finally:
        store.close()
    assert not list(tmp_path.glob("state.sqlite3.retry-*"))  # every request and answer was cleaned up
