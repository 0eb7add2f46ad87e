"""Two daemons on one Dovecot and one PostgreSQL: the one holding the mailbox is killed mid-drain, the other
takes over, and the delivery promise holds across the two.

The PostgreSQL server is the session's (tests/conftest.py), with a new database for the test; skipped
without PostgreSQL, a failure under CI=true.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

from emailrouter.service.pgstore import MAILBOX_LOCKS
from tests.conftest import DATA
from tests.integration.test_crash_storm import FIXTURES, header_ids, variant
from tests.integration.test_daemon import ROUTED, start_daemon
from tests.integration.test_postgres import _postgres_config
from tests.support.dovecot import Dovecot
from tests.support.postgres import Postgres
from tests.support.sink import SmtpSink

MAILS = 150
POLL = 3.0  # seconds: the mailboxes' poll_interval (the standby looks this often)
BATCH = 10  # mails per batch: the drain is many batches long
DRAIN_TIMEOUT = 180.0
# the backend pid of the session holding the mailbox lock (service/pgstore.py: MAILBOX_LOCKS)
HOLDER = (
    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2"
    f" AND classid::text::bigint = {MAILBOX_LOCKS}"
)


def _holder(server: Postgres, dbname: str) -> int | None:
    rows = server.execute(HOLDER, dbname)
    return int(rows[0][0]) if rows else None


def _wait(what: str, condition: object, timeout: float, step: float = 0.05) -> float:
    """Poll `condition()` until true; the seconds it took (AssertionError naming `what` after `timeout`)."""
    began = time.monotonic()
    while not condition():  # type: ignore[operator]
        if time.monotonic() - began > timeout:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(step)
    return time.monotonic() - began


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def test_a_killed_instance_is_replaced_within_two_poll_intervals_losing_nothing(
    tmp_path: Path, dovecot: Dovecot, postgres_server: Postgres, postgres_database: str
) -> None:
    """kill -9 of the instance polling the mailbox mid-drain: the other holds it within two poll intervals and
    finishes the backlog; every mail is marked once handled, no customer gets a reply twice, and anything
    sent twice is a forward, escalation or ticket re-sent with the same Message-ID."""
    dbname = postgres_database.rsplit("/", 1)[1]
    fixtures = [(DATA / name).read_bytes() for name in FIXTURES]
    for n in range(MAILS):
        dovecot.append("router", "INBOX", variant(fixtures[n % len(fixtures)], n))
    with SmtpSink() as sink:
        path = _postgres_config(tmp_path, dovecot, sink, postgres_database)
        text = path.read_text().replace("    idle: false\n", f"    idle: false\n    poll_interval: {POLL}\n"
                                        f"    batch_size: {BATCH}\n")  # fmt: skip
        path.write_text(text.replace("  retry_max: 0.05\n", "  retry_max: 0.05\n  outbox_interval: 0.5\n"))
        logs = [(tmp_path / f"daemon-{n}.log").open("wb") for n in (1, 2)]
        first = start_daemon(path, stdout=logs[0], stderr=logs[0])
        second: subprocess.Popen[bytes] | None = None
        try:
            _wait("the first daemon holds the mailbox", lambda: _holder(postgres_server, dbname) is not None, 60)
            killed_holder = _holder(postgres_server, dbname)
            second = start_daemon(path, stdout=logs[1], stderr=logs[1])
            _wait("mid-drain", lambda: sink.count >= 40, DRAIN_TIMEOUT)
            marked = sum(ROUTED in f for f in dovecot.flags("router", "INBOX").values())
            at_kill = sink.count
            os.kill(first.pid, signal.SIGKILL)
            first.wait(10)
            assert marked < MAILS, "the backlog was drained before the kill: make it longer"
            took = _wait(
                "the second daemon takes the mailbox over",
                lambda: _holder(postgres_server, dbname) not in (None, killed_holder),
                4 * POLL,
            )
            assert took <= 2 * POLL
            _wait(
                "the backlog drained",
                lambda: (
                    all(ROUTED in f for f in dovecot.flags("router", "INBOX").values())
                    and postgres_server.execute(
                        "SELECT count(*) FROM outbox WHERE status IN ('pending', 'sending')", dbname
                    )
                    == [(0,)]
                ),
                DRAIN_TIMEOUT,
                step=0.5,
            )
        finally:
            _stop(first)
            if second is not None:
                _stop(second)
            for log in logs:
                log.close()
        delivered = header_ids(r.data for r in sink.received)

    print(f"failover: {marked} of {MAILS} marked and {at_kill} sent at the kill; taken over in {took:.2f} s;"
          f" {sink.count} sent in all, {sum(n - 1 for n in delivered.values() if n > 1)} again")  # fmt: skip
    assert sink.count > at_kill  # the second daemon finished the drain
    flags = dovecot.flags("router", "INBOX")
    assert len(flags) == MAILS and all(ROUTED in f for f in flags.values())
    outcomes = Counter(row[0] for row in postgres_server.execute("SELECT outcome FROM messages", dbname))
    assert sum(outcomes.values()) == MAILS and "planned" not in outcomes
    entries = postgres_server.execute("SELECT kind, message_id, status, recipients FROM outbox", dbname)
    assert {mid for _, mid, _, _ in entries} >= set(delivered), "a message at the relay that no outbox holds"
    replies_to: Counter[str] = Counter()
    for kind, mid, status, recipients in entries:
        n = delivered[mid]
        if kind == "reply":
            assert n <= 1 and (n == 1 or status == "uncertain"), f"reply {mid}: {n} times, {status}"
            replies_to[",".join(recipients)] += n
        else:
            assert 1 <= n <= 2 and status == "sent", f"{kind} {mid}: {n} times, {status}"
    assert all(n <= 1 for n in replies_to.values())
