"""What the PostgreSQL store does beyond the shared contract: its schema versions, its connection, its text.

Runs on a real server (tests/support/postgres.py); skipped without PostgreSQL, a failure under CI=true.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from emailrouter.core.errors import StateError
from emailrouter.service import pgstore
from emailrouter.service.store import MessageKey, Plan
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
