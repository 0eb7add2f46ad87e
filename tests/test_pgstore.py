"""What the PostgreSQL store does beyond the shared contract: its schema versions, its connection, its text.

Runs on a real server (tests/support/postgres.py); skipped without PostgreSQL, a failure under CI=true.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest

from emailrouter.core.errors import StateError
from emailrouter.service import pgstore
from emailrouter.service.store import MessageKey, OutboxEntry, Plan, PlannedSend
from tests.conftest import NOW
from tests.support.postgres import PASSWORD, Postgres

KEY = MessageKey("router@imap:993", "INBOX", 7, 42)


@pytest.fixture
def store(postgres_database: str) -> Iterator[pgstore.PostgresStore]:
    opened = pgstore.PostgresStore(postgres_database, password=PASSWORD)
    yield opened
    opened.close()


def _version(server: Postgres, url: str) -> list[tuple[object, ...]]:
    return server.execute("SELECT version FROM schema_version", url.rsplit("/", 1)[1])


def test_a_new_database_gets_the_current_schema_version(
    store: pgstore.PostgresStore, postgres_server: Postgres, postgres_database: str
) -> None:
    """Opening an empty database migrates it to the newest version, kept in schema_version (one row)."""
    assert _version(postgres_server, postgres_database) == [(pgstore.SCHEMA_VERSION,)]
    store.close()
    pgstore.PostgresStore(postgres_database, password=PASSWORD).close()  # up to date: opened as it is
    assert _version(postgres_server, postgres_database) == [(pgstore.SCHEMA_VERSION,)]


def test_outbox_bodies_are_stored_uncompressed_and_read_back_whole(
    store: pgstore.PostgresStore, postgres_server: Postgres, postgres_database: str
) -> None:
    """A body lives from its plan to its send: kept out of line as it is (EXTERNAL, no pglz on every write and read),
    and the entry read back (in binary form) is the message byte for byte."""
    dbname = postgres_database.rsplit("/", 1)[1]
    storage = postgres_server.execute(
        "SELECT attstorage FROM pg_attribute WHERE attrelid = 'outbox'::regclass AND attname = 'body'", dbname
    )
    assert storage == [("e",)]
    raw = b"Message-ID: <big@x>\r\nSubject: scan\r\n\r\n" + bytes(range(256)) * 400  # every byte value
    send = PlannedSend("forward", "care", "router@cc.example.co.id", ("care@cc.example.co.id",), "<big@x>", raw)
    store.plan([Plan(KEY, "<m@x>", "r", {}, [send], NOW, None)])
    (entry_id,) = store.due_ids(NOW)
    entry = store.entry(entry_id)
    assert entry is not None and entry.raw == raw and entry.recipients == ("care@cc.example.co.id",)


def test_a_database_of_a_newer_version_is_refused_untouched(
    store: pgstore.PostgresStore, postgres_server: Postgres, postgres_database: str
) -> None:
    """A schema written by a newer emailrouter is never written by this one: StateError naming the database."""
    store.close()
    newer = pgstore.SCHEMA_VERSION + 1
    postgres_server.execute(f"UPDATE schema_version SET version={newer}", postgres_database.rsplit("/", 1)[1])
    with pytest.raises(StateError, match=f"schema version {newer} was written by a newer emailrouter"):
        pgstore.PostgresStore(postgres_database, password=PASSWORD)
    assert _version(postgres_server, postgres_database) == [(newer,)]


def test_a_wrong_password_is_a_state_error_that_names_the_database_only(postgres_database: str) -> None:
    """A refused login says which database and why, never the password it tried."""
    with pytest.raises(StateError, match=r"cannot connect: .*password authentication failed") as caught:
        pgstore.PostgresStore(postgres_database, password="not-the-password")
    assert pgstore.describe(postgres_database) in str(caught.value)
    assert "not-the-password" not in str(caught.value)


def test_a_lost_connection_fails_one_call_and_the_next_reconnects(
    store: pgstore.PostgresStore, postgres_server: Postgres, postgres_database: str
) -> None:
    """When the server ends the session, the call in hand raises StateError (retrying helps) and the next
    call opens a new session."""
    store.plan([Plan(KEY, "<m@x>", "r", {}, (), NOW, None, outcome="duplicate")])
    assert postgres_server.terminate_sessions(postgres_database.rsplit("/", 1)[1]) == 1
    with pytest.raises(StateError, match="cannot read"):
        store.outcome(KEY)
    record = store.outcome(KEY)
    assert record is not None and record.outcome == "duplicate"


def test_a_nul_in_text_is_stored_and_found_again(store: pgstore.PostgresStore) -> None:
    """PostgreSQL text holds no NUL: a Message-ID with one is stored with U+FFFD and found by the same id."""
    store.plan([Plan(KEY, "<m\x00@x>", "r", {}, (), NOW, None, outcome="quarantined", error="bad\x00byte")])
    assert store.seen("<m\x00@x>") == [(str(KEY), None)]
    (record,) = store.quarantined()
    assert record.error == "bad\ufffdbyte"


# ---------------------------------------------------------------------- several instances: mailboxes and claims


def _open(url: str, **kwargs: Any) -> pgstore.PostgresStore:
    return pgstore.PostgresStore(url, password=PASSWORD, **kwargs)


@pytest.fixture
def instances(postgres_database: str) -> Iterator[Callable[..., pgstore.PostgresStore]]:
    """Opens instances of the store on one database; every one opened is closed at the end."""
    opened: list[pgstore.PostgresStore] = []

    def open_one(**kwargs: Any) -> pgstore.PostgresStore:
        opened.append(_open(postgres_database, **kwargs))
        return opened[-1]

    yield open_one
    for one in opened:
        one.close()


def test_a_mailbox_is_held_by_one_instance_at_a_time(instances: Callable[..., pgstore.PostgresStore]) -> None:
    """The first instance to ask holds the mailbox; another gets it once the first lets go or is gone."""
    first, second = instances(), instances()
    assert first.hold_mailbox(KEY.account, "INBOX") and first.hold_mailbox(KEY.account, "INBOX")
    assert not second.hold_mailbox(KEY.account, "INBOX")
    assert second.hold_mailbox(KEY.account, "Other")  # one lock per mailbox
    first.release_mailbox(KEY.account, "INBOX")
    assert second.hold_mailbox(KEY.account, "INBOX") and not first.hold_mailbox(KEY.account, "INBOX")
    second.close()
    assert first.hold_mailbox(KEY.account, "INBOX")


def test_a_mailbox_lost_with_the_connection_is_taken_again_when_free(
    instances: Callable[..., pgstore.PostgresStore], postgres_server: Postgres, postgres_database: str
) -> None:
    """After the server ended its session, an instance reconnects and takes its mailbox again if nobody has."""
    first = instances()
    assert first.hold_mailbox(KEY.account, "INBOX")
    postgres_server.terminate_sessions(_name(postgres_database))
    assert first.hold_mailbox(KEY.account, "INBOX")
    assert not instances().hold_mailbox(KEY.account, "INBOX")


def test_an_instance_whose_mailbox_was_taken_meanwhile_is_fenced(
    instances: Callable[..., pgstore.PostgresStore], postgres_server: Postgres, postgres_database: str
) -> None:
    """An instance that lost its connection, and its mailbox to another instance meanwhile, no longer holds it."""
    first = instances()
    assert first.hold_mailbox(KEY.account, "INBOX")
    postgres_server.terminate_sessions(_name(postgres_database))
    second = instances()
    assert second.hold_mailbox(KEY.account, "INBOX")
    assert not first.hold_mailbox(KEY.account, "INBOX")


def _claimed(store: pgstore.PostgresStore) -> tuple[OutboxEntry, OutboxEntry]:
    store.plan([Plan(KEY, "<m@x>", "r", {}, (_planned("reply"), _planned("forward")), NOW, None)])
    reply, forward = (e for i in store.due_ids(NOW) if (e := store.entry(i)) is not None)
    assert store.claim(reply.id, durable=True) and store.claim(forward.id, durable=False)
    return reply, forward


def _planned(kind: str) -> PlannedSend:
    return PlannedSend(kind, None if kind == "reply" else "dcs_unit", "er@x.id", ("budi@x.id",), f"<{kind}@x>", b"r")


def test_the_claims_of_a_live_instance_are_not_taken_over(instances: Callable[..., pgstore.PostgresStore]) -> None:
    """While the claimant's session lives and its lease runs, no other instance takes its claims."""
    first = instances()
    _claimed(first)
    assert instances().interrupted() == []
    assert [s.status for s in first.sends(str(KEY))] == ["sending", "sending"]


def test_the_claims_of_a_gone_instance_are_taken_over_and_its_late_writes_change_nothing(
    instances: Callable[..., pgstore.PostgresStore], postgres_server: Postgres, postgres_database: str
) -> None:
    """An instance whose session ended (killed, cut off) loses its claims at once to the next instance that
    looks; what it records about them afterwards (it comes back) changes nothing."""
    first = instances()
    reply, forward = _claimed(first)
    postgres_server.terminate_sessions(_name(postgres_database))
    second = instances()
    assert [(e.id, e.status) for e in second.interrupted()] == [(reply.id, "sending"), (forward.id, "sending")]
    assert second.interrupted() == []  # now its own, and it is alive
    with pytest.raises(StateError):  # the first one's connection is gone ...
        first.mark_sent([forward.id], NOW)
    first.mark_sent([forward.id], NOW)  # ... and it reconnects: fenced
    first.release(reply.id)
    first.mark_retry(forward.id, "451", NOW)
    assert [(s.status, s.attempts) for s in second.sends(str(KEY))] == [("sending", 1), ("sending", 1)]
    second.mark_failed(reply.id, "interrupted while sending: not sent again", status="uncertain")
    second.mark_sent([forward.id], NOW)
    assert [s.status for s in second.sends(str(KEY))] == ["uncertain", "sent"]


def test_an_expired_lease_is_taken_over_from_an_instance_that_still_lives(
    instances: Callable[..., pgstore.PostgresStore],
) -> None:
    """A claim held past its lease (a hung instance) is taken over although its session lives; the late
    claimant's release then changes nothing."""
    first = instances(lease=timedelta(milliseconds=1))
    reply, forward = _claimed(first)
    time.sleep(0.05)
    second = instances()
    assert [e.id for e in second.interrupted()] == [reply.id, forward.id]
    first.release(forward.id)
    entry = second.entry(forward.id)
    assert entry is not None and entry.status == "sending" and entry.attempts == 1


def _name(url: str) -> str:
    return url.rsplit("/", 1)[1]
