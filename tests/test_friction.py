"""Items of issue 12's friction list that are about words and lines ops read: outcomes, log lines, messages."""

from __future__ import annotations

import asyncio
import dataclasses
import io
from pathlib import Path

import pytest
import structlog
from imapclient.exceptions import LoginError
from structlog.testing import LogCapture, capture_logs

from emailrouter.config.credentials import Secret
from emailrouter.config.loader import Config, load_config
from emailrouter.config.settings import Endpoint, MailboxConfig, SmtpConfig
from emailrouter.core.parse import parse
from emailrouter.ops.cli import main
from emailrouter.service import logs
from emailrouter.service.daemon import Service
from emailrouter.service.imap import Fetched, server_text
from emailrouter.service.memory import Batch
from emailrouter.service.metrics import Metrics
from emailrouter.service.processor import PollReport, Processor
from emailrouter.service.router import Router
from emailrouter.service.smtp import SmtpTransport
from emailrouter.service.stats import stats
from emailrouter.service.store import Store
from tests.conftest import DATA, NOW
from tests.support.sink import SmtpSink


def mailbox_config() -> MailboxConfig:
    """A mailbox as the processor needs it (it is never connected to)."""
    endpoint = Endpoint("127.0.0.1", 1, "plain", 10.0, None)
    return MailboxConfig(
        "jkt", endpoint, "router", Secret("env", "UNUSED"), None, "INBOX", "keyword", "$Routed", None, 60.0, False, 200
    )


def test_one_word_for_an_outcome_in_the_decision_event_the_metric_and_stats(config: Config, tmp_path: Path) -> None:
    """An automated mail is `automated` and a routed one `done` alike in its `decision` event, its metric and stats."""
    store = Store(tmp_path / "s.sqlite3")
    metrics = Metrics()
    mailbox = mailbox_config()
    try:
        processor = Processor(config, metrics, lambda: NOW, dry_run=False)
        batch = Batch(store)
        report = PollReport(mailbox.name)
        with capture_logs() as events:
            for uid, name in ((1, "automated-out-of-office-en.eml"), (2, "dcs-fault-outlook-en.eml")):
                raw = (DATA / name).read_bytes()
                processor.process(mailbox, 7, Fetched(uid, raw, len(raw)), report, batch)
        batch.commit()
        store.mark_sent(store.due_ids(NOW), NOW)
        store.settle(NOW)
        logged = sorted(e["outcome"] for e in events if e["event"] == "decision")
        assert logged == ["automated", "done"]
        counted = stats(store, NOW.replace(year=2000), NOW.replace(year=2100), {})["per_outcome"]
        assert sorted(counted) == logged
        for outcome in logged:
            labels = {"mailbox": mailbox.name, "outcome": outcome}
            assert (
                sum(
                    s.value
                    for m in metrics.registry.collect()
                    if m.name == "emailrouter_messages"
                    for s in m.samples
                    if s.name.endswith("_total") and labels.items() <= s.labels.items()
                )
                == 1
            )
    finally:
        store.close()


def test_the_send_events_carry_the_identity_of_the_mail_they_answer(config: Config, tmp_path: Path) -> None:
    """Every `sent` event names the incoming mail's mailbox, UID and Message-ID under the keys of its `decision`
    event; the message sent has its own key."""
    mailbox = mailbox_config()
    with SmtpSink() as sink:
        smtp = SmtpConfig(Endpoint(sink.host, sink.port, "plain", 10.0, None), None, None)
        settings = dataclasses.replace(config.settings, mailboxes=(mailbox,), smtp=smtp)
        router = Router(
            dataclasses.replace(config, settings=settings), Store(tmp_path / "s.sqlite3"), SmtpTransport(smtp)
        )
        try:
            raw = (DATA / "dcs-fault-outlook-en.eml").read_bytes()
            batch = Batch(router.store)
            router.processor.process(mailbox, 7, Fetched(5, raw, len(raw)), PollReport(mailbox.name), batch)
            batch.commit()
            captured = LogCapture()
            structlog.configure(processors=[structlog.contextvars.merge_contextvars, captured])
            assert asyncio.run(_flush_and_close(router)) == 2
        finally:
            router.store.close()
    incoming = parse(raw).message_id
    sent = [e for e in captured.entries if e["event"] == "sent"]
    assert len(sent) == 2
    for event in sent:
        assert (event["mailbox"], event["uid"], event["message_id"]) == ("jkt", 5, incoming)
        assert event["sent_message_id"].startswith("<er.")  # the outgoing message's own id, under its own key


async def _flush_and_close(router: Router) -> int:
    try:
        return await router.outbox.flush()
    finally:
        await router.close()


def test_an_imap_servers_answer_is_shown_as_text() -> None:
    """The bytes literals imaplib and imapclient put into their errors become the server's words."""
    assert server_text(LoginError(str(b"[AUTHENTICATIONFAILED] Authentication failed."))) == (
        "[AUTHENTICATIONFAILED] Authentication failed."
    )
    assert server_text(ValueError(f"select failed: {[b'no such folder: Nope']!r}")) == (
        "select failed: [no such folder: Nope]"
    )
    assert server_text(ValueError("a verb'like' word stays")) == "a verb'like' word stays"


def test_quarantine_prints_its_warnings_as_lines_for_people(
    config_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A plaintext connection's warning is a `warning:` line on stderr, not a JSON object, even off a terminal."""
    (tmp_path / "pw").write_text("secret\n")
    config_copy.write_text(
        config_copy.read_text()
        + f"mailboxes:\n  - name: jkt\n    host: 127.0.0.1\n    security: plain\n    username: router\n"
        f"    password: {{file: {tmp_path / 'pw'}}}\nstate:\n  path: {tmp_path / 'state.sqlite3'}\n"
    )
    assert main(["quarantine", "list", "-c", str(config_copy)]) == 0
    captured = capsys.readouterr()
    assert captured.out == "quarantine is empty\n"
    assert captured.err == (
        "warning: plaintext connection: mailbox jkt: IMAP without TLS to 127.0.0.1"
        " (credentials and mail cross the network unencrypted)\n"
        "warning: no smtp relay: nothing can be sent: configure smtp:\n"
    )


def test_a_decision_line_on_a_terminal_starts_with_the_mail_and_what_was_decided() -> None:
    """On a terminal a `decision` line leads with mailbox, uid, Message-ID, outcome, rule, segment, intent, hard."""
    out = io.StringIO()
    logs.configure("info", stream=out, json=False)
    with structlog.contextvars.bound_contextvars(mailbox="jkt", uid=5, message_id="<m@x>"):
        structlog.get_logger("t").info(
            "decision",
            outcome="done",
            rule="r-1",
            segment="DCS",
            segment_source="directory",
            intent="fault",
            hard=False,
            actions=["reply:a@b"],
            suppressed=[],
            failed=[],
            automated=None,
            size=1200,
        )
    line = out.getvalue().strip()
    assert "\n" not in line
    keys = [word.split("=", 1)[0] for word in line.split("decision", 1)[1].split()]
    assert keys == [
        "mailbox",
        "uid",
        "message_id",
        "outcome",
        "rule",
        "segment",
        "intent",
        "hard",
        "segment_source",
        "actions",
        "size",
    ]


BROKEN_SECRETS = """mailboxes:
  - name: jkt
    host: 127.0.0.1
    username: router
    password: {file: /nope/imap-password}
  - name: sby
    host: 127.0.0.1
    username: router
    oauth2: {token: {command: no-such-token-helper --now}}
smtp:
  host: 127.0.0.1
  username: router
  password: {env: EMAILROUTER_TEST_UNSET_SECRET}
"""


def _line_of(path: Path, text: str) -> int:
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if text in line)


def test_check_names_every_secret_that_cannot_be_read(
    config_copy: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing file, a command not found and an unset variable each fail `check` with file, line and key."""
    monkeypatch.delenv("EMAILROUTER_TEST_UNSET_SECRET", raising=False)
    config_copy.write_text(config_copy.read_text() + BROKEN_SECRETS)
    assert main(["check", "-c", str(config_copy)]) == 1
    err = capsys.readouterr().err
    where = f"error: {config_copy}"
    assert f"{where}:{_line_of(config_copy, '/nope/')}: mailboxes[0].password: file /nope/imap-password:" in err
    assert (
        f"{where}:{_line_of(config_copy, 'no-such')}: mailboxes[1].oauth2.token: command 'no-such-token-helper'" in err
    )
    line = _line_of(config_copy, "EMAILROUTER_TEST_UNSET")
    assert f"{where}:{line}: smtp.password: environment variable EMAILROUTER_TEST_UNSET_SECRET is not set" in err
    assert "retrying does not help" in err
    monkeypatch.setenv("EMAILROUTER_TEST_UNSET_SECRET", "x")
    assert main(["check", "-c", str(config_copy)]) == 1
    assert "smtp.password" not in capsys.readouterr().err


def test_the_daemon_does_not_start_nor_reload_with_a_secret_that_cannot_be_read(
    config_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`run --once` and `quarantine retry` refuse such a config at once; a SIGHUP reload keeps the running one."""
    monkeypatch.delenv("EMAILROUTER_TEST_UNSET_SECRET", raising=False)
    good = config_copy.read_text() + f"state:\n  path: {tmp_path / 'state.sqlite3'}\n"
    config_copy.write_text(good + BROKEN_SECRETS)
    assert main(["run", "--once", "-c", str(config_copy)]) == 1
    assert main(["quarantine", "retry", "-c", str(config_copy), "7"]) == 1
    err = capsys.readouterr().err
    assert "run: fix the secrets above" in err and "quarantine retry: fix the secrets above" in err
    assert not (tmp_path / "state.sqlite3").exists()  # nothing was started
    config_copy.write_text(good)
    running = load_config(config_copy)
    router = Router(running, Store(tmp_path / "state.sqlite3"), None)
    try:
        config_copy.write_text(good + BROKEN_SECRETS)
        with capture_logs() as events:
            Service(config_copy, router).reload()
        assert router.config is running
        rejected = next(e for e in events if e["event"] == "reload_rejected")
        assert any("smtp.password" in p for p in rejected["problems"])
    finally:
        router.store.close()


def test_a_retry_takes_only_the_uids_quarantined_in_its_own_folder() -> None:
    """Two folders of one login number their mail alike: uid 5 quarantined in Archive is not uid 5 of INBOX."""
    from datetime import UTC, datetime

    from emailrouter.ops.cli import _quarantined_in
    from emailrouter.service.store import MessageKey, MessageRecord

    mailbox = mailbox_config()

    def row(folder: str, uid: int) -> MessageRecord:
        key = MessageKey(mailbox.account, folder, 7, uid)
        at = datetime(2026, 12, 2, tzinfo=UTC)
        return MessageRecord(key, "<m@x>", "quarantined", None, None, None, None, None, "boom", None, at, None, False)

    rows = [row("Archive", 5), row("INBOX", 6), row("Archive", 6)]
    assert _quarantined_in(rows, mailbox, {5, 6}) == [6]
