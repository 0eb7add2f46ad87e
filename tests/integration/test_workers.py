"""Routing in worker processes: the same plans as in the service's own process, and a dying worker loses nothing.

A real Dovecot and a real SMTP sink; `emailrouter run --once` as a subprocess, so that its worker pool
is the one the service starts.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_daemon import _run_cli, write_config
from tests.integration.test_delivery import mail, message_ids
from tests.support.dovecot import Dovecot
from tests.support.sink import SmtpSink


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as s:
        yield s


def backlog() -> list[bytes]:
    """30 mails: 24 senders, one of whom writes 7 times in between (the reply limits suppress some of those
    replies), and one mail sent twice (a duplicate)."""
    out = []
    for n in range(28):
        out.append(mail(n, sender="often@outlook.com" if n % 4 == 1 else None))
    out += [mail(3), mail(29)]  # mail 3 again: a duplicate
    return out


def plans(tmp_path: Path) -> tuple[list[tuple[int, str, str]], list[tuple[int, str, str, str]]]:
    """(uid, outcome, rule) of every mail and (uid, kind, recipients, status) of every outbox entry."""
    db = sqlite3.connect(tmp_path / "state.sqlite3")
    try:
        messages = [(int(u), str(o), str(r)) for u, o, r in db.execute("SELECT uid, outcome, rule FROM messages")]
        sends = db.execute(
            "SELECT m.uid, o.kind, o.recipients, o.status FROM outbox o JOIN messages m ON m.key = o.msg_key"
        ).fetchall()
        first = min(u for u, _, _ in messages)  # UIDs counted from the first mail of the run
        return (
            sorted((u - first, o, r) for u, o, r in messages),
            sorted((int(u) - first, str(k), str(r), str(s)) for u, k, r, s in sends),
        )
    finally:
        db.close()


def drained(tmp_path: Path, dovecot: Dovecot, sink: SmtpSink, workers: int, crash_at: str | None = None) -> str:
    """The backlog drained by `run --once` with this many workers; its log."""
    path = write_config(tmp_path, dovecot, sink, extra=f"workers: {workers}\n")
    for raw in backlog():
        dovecot.append("router", "INBOX", raw)
    done = _run_cli(path, crash_at=crash_at)
    assert done.returncode == 0, done.stderr[-2000:]
    assert ('"worker_started"' in done.stdout) == (workers > 1)  # the pool was (or was not) used
    return done.stdout


def test_workers_make_the_plans_the_service_alone_makes(tmp_path: Path, dovecot: Dovecot, sink: SmtpSink) -> None:
    """Two workers and `workers: 1` plan the same outcome, rule and sends for every mail, limits and duplicates
    included."""
    drained(tmp_path / "one", dovecot, sink, workers=1)
    alone = plans(tmp_path / "one")
    dovecot.delete_all("router", "INBOX")
    drained(tmp_path / "two", dovecot, sink, workers=2)
    pooled = plans(tmp_path / "two")
    assert pooled == alone
    outcomes = [o for _, o, _ in alone[0]]
    assert outcomes.count("duplicate") == 1 and len(outcomes) == 30
    often = [s for s in alone[1] if s[1] == "reply" and "often@" in s[2]]
    assert 0 < len(often) < 7  # the limits held back some replies to the one who wrote 7 times


def test_a_worker_that_dies_loses_and_doubles_nothing(tmp_path: Path, dovecot: Dovecot, sink: SmtpSink) -> None:
    """Each worker is killed on its third mail: the mails in the pool then are routed again, every mail gets its
    plan and every message reaches the sink once."""
    drained(tmp_path / "one", dovecot, sink, workers=1)
    alone = plans(tmp_path / "one")
    first = message_ids(sink)
    dovecot.delete_all("router", "INBOX")
    drained(tmp_path / "two", dovecot, sink, workers=2, crash_at="worker-route:3")
    assert plans(tmp_path / "two") == alone
    second = message_ids(sink) - first  # the Message-IDs are the same in both runs (the same mails)
    assert first and set(first.values()) == {1} and second == first
