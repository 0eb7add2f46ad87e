"""The daemon on a PostgreSQL state store: one pass over a real Dovecot, then the tools ops use on its state.

The PostgreSQL server is the session's (tests/conftest.py), with a new database for the test; skipped
without PostgreSQL, a failure under CI=true.
"""

from __future__ import annotations

import email
import json
from email.policy import default
from pathlib import Path

import pytest

from emailrouter.config.loader import load_config
from emailrouter.ops.cli import main
from emailrouter.service.pgstore import PostgresStore
from emailrouter.service.store import MessageKey, Plan
from tests.conftest import DATA, NOW
from tests.integration.test_daemon import ROUTED, _run_cli, once, received_by_kind, write_config
from tests.support.dovecot import Dovecot
from tests.support.postgres import PASSWORD, Postgres
from tests.support.sink import SmtpSink

NAMES = ["dcs-hard-media-threat-informal.eml", "des-fault-pertamina-id.eml", "automated-out-of-office-en.eml"]


def _postgres_config(tmp_path: Path, dovecot: Dovecot, sink: SmtpSink, url: str) -> Path:
    """The daemon's test config with `state: {url, password: {file: ...}}` instead of the SQLite file."""
    path = write_config(tmp_path, dovecot, sink)
    (tmp_path / "pg-password").write_text(PASSWORD + "\n")
    state = f"state:\n  url: {url}\n  password: {{file: {tmp_path / 'pg-password'}}}\n"
    text = path.read_text()
    start = text.index("state:\n  path:")
    end = text.index("\n", text.index("  path:", start)) + 1
    path.write_text(text[:start] + state + text[end:])
    return path


def test_a_pass_on_postgres_is_audited_counted_and_listed(
    tmp_path: Path,
    dovecot: Dovecot,
    postgres_server: Postgres,
    postgres_database: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`run --once` keeps its state in PostgreSQL (nothing in a SQLite file); `show`, `stats` and
    `quarantine list` read it from there; a second pass sends nothing again."""
    with SmtpSink() as sink:
        path = _postgres_config(tmp_path, dovecot, sink, postgres_database)
        for name in NAMES:
            dovecot.append("router", "INBOX", (DATA / name).read_bytes())
        config = load_config(path)
        assert config.settings.state_url == postgres_database
        status, reports = once(config)
        assert status == 0 and reports[0].planned == 3 and reports[0].marked == 3
        sent = sink.count
        assert sent > 0 and all(ROUTED in flags for flags in dovecot.flags("router", "INBOX").values())
        assert once(load_config(path))[0] == 0 and sink.count == sent
    assert not (tmp_path / "state.sqlite3").exists()
    dbname = postgres_database.rsplit("/", 1)[1]
    assert postgres_server.execute("SELECT count(*) FROM messages", dbname) == [(3,)]
    capsys.readouterr()

    message_id = email.message_from_bytes((DATA / NAMES[0]).read_bytes(), policy=default)["Message-ID"]
    assert main(["show", "-c", str(path), str(message_id)]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["decision"]["rule"] == "1.2.9-dcs-hard-complaint-educate-forward-escalate"
    assert [s["kind"] for s in record["sends"]] == ["reply", "forward", "escalate"]
    assert all(s["status"] == "sent" for s in record["sends"]) and record["marked_on_server"]

    assert main(["stats", "-c", str(path), "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["messages"] == 3 and figures["hard_complaints"] == 1
    assert figures["per_outcome"] == {"done": 2, "automated": 1} and figures["outbox_pending"] == 0
    assert figures["arrival_to_sent_seconds"]["median"] is not None

    assert main(["quarantine", "list", "-c", str(path)]) == 0
    assert "quarantine is empty" in capsys.readouterr().out


def test_a_state_url_that_cannot_be_reached_is_one_line_naming_it(
    tmp_path: Path, dovecot: Dovecot, postgres_server: Postgres, capsys: pytest.CaptureFixture[str]
) -> None:
    """A database that refuses the login: `stats` says so in one line naming the database, not the password."""
    with SmtpSink() as sink:
        path = _postgres_config(tmp_path, dovecot, sink, postgres_server.url("postgres"))
    (tmp_path / "pg-password").write_text("wrong-password\n")
    assert main(["stats", "-c", str(path)]) == 1
    err = capsys.readouterr().err
    where = f"postgresql://{postgres_server.host}:{postgres_server.port}/postgres"
    assert err.startswith(f"error: state store {where}: cannot connect: ") and err.count("\n") == 1
    assert "password authentication failed" in err and "wrong-password" not in err


def test_quarantine_retry_waits_for_the_instance_that_holds_the_mailbox(
    tmp_path: Path, dovecot: Dovecot, postgres_database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """On a shared store, `quarantine retry` refuses a mailbox a running instance holds (it would process
    beside it), naming it; once that instance lets go, the retry runs."""
    with SmtpSink() as sink:
        path = _postgres_config(tmp_path, dovecot, sink, postgres_database)
        mailbox = load_config(path).settings.mailboxes[0]
        dovecot.append("router", "INBOX", (DATA / NAMES[1]).read_bytes())
        daemon = PostgresStore(postgres_database, password=PASSWORD)  # stands for a running daemon
        try:
            key = MessageKey(mailbox.account, mailbox.folder, dovecot.uidvalidity("router", "INBOX"), 1)
            daemon.plan([Plan(key, "<q@x>", "", {}, (), NOW, None, outcome="quarantined", error="boom")])
            assert daemon.hold_mailbox(mailbox.account, mailbox.folder)
            assert main(["quarantine", "retry", "-c", str(path), "1"]) == 1
            err = capsys.readouterr().err
            assert "error: mailbox jkt: a running instance holds it; stop it first" in err
            assert "not in the quarantine" not in err
            daemon.release_mailbox(mailbox.account, mailbox.folder)
            assert main(["quarantine", "retry", "-c", str(path), "1"]) == 0
            assert "jkt: retried 1: planned 1" in capsys.readouterr().out
        finally:
            daemon.close()


def test_a_reply_in_flight_when_its_instance_died_is_never_sent_again_by_another(
    tmp_path: Path, dovecot: Dovecot, postgres_server: Postgres, postgres_database: str
) -> None:
    """SIGKILL right after the relay took the first send (a customer reply), before it was recorded: the next
    instance (a new one, the old session gone) takes the claim over, records the reply `uncertain` and never
    sends it again; the rest goes out and the mail is marked."""
    with SmtpSink() as sink:
        path = _postgres_config(tmp_path, dovecot, sink, postgres_database)
        dovecot.append("router", "INBOX", (DATA / NAMES[0]).read_bytes())
        crashed = _run_cli(path, crash_at="after-smtp-accepted")
        assert crashed.returncode == -9, crashed.stderr[-2000:]
        assert [k for k, _ in received_by_kind(sink)] == ["reply"]
        dbname = postgres_database.rsplit("/", 1)[1]
        (claimant,) = postgres_server.execute("SELECT claimed_by FROM outbox WHERE status = 'sending'", dbname)
        finished = _run_cli(path)
        assert finished.returncode == 0, finished.stderr[-2000:]
        assert sorted(k for k, _ in received_by_kind(sink)) == ["escalate", "forward", "reply"]
    rows = postgres_server.execute("SELECT kind, status, claimed_by FROM outbox ORDER BY idx", dbname)
    assert [(kind, status) for kind, status, _ in rows] == [("reply", "uncertain"), ("forward", "sent"),
                                                            ("escalate", "sent")]  # fmt: skip
    assert rows[0][2] != claimant[0]  # taken over by the new instance
    assert all(ROUTED in f for f in dovecot.flags("router", "INBOX").values())
