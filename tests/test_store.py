"""The SQLite state store's own part: schema versions and migrations from older state files.

What every backend must do (plans, claims, sends, settling, checkpoints, pruning) is in
tests/test_store_contract.py.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from emailrouter.core.dedupe import duplicate_of
from emailrouter.core.errors import StateError
from emailrouter.service import store as store_module
from emailrouter.service.stats import stats
from emailrouter.service.store import SCHEMA_VERSION, MessageKey, Plan, PlannedSend, Store
from tests.conftest import NOW
from tests.support.sqlite import opened

KEY = MessageKey("router@imap:993", "INBOX", 7, 42)

# The first release's schema (version 1), written out as that release created it.
FIRST_RELEASE = """
CREATE TABLE messages (key TEXT PRIMARY KEY, account TEXT NOT NULL, folder TEXT NOT NULL,
    uidvalidity INTEGER NOT NULL, uid INTEGER NOT NULL, dedupe_id TEXT NOT NULL, outcome TEXT NOT NULL,
    rule TEXT, decision TEXT, error TEXT, received_at TEXT NOT NULL, finished_at TEXT,
    marked INTEGER NOT NULL DEFAULT 0);
CREATE INDEX messages_dedupe ON messages (dedupe_id);
CREATE INDEX messages_open ON messages (account, folder, outcome, marked);
CREATE TABLE outbox (id INTEGER PRIMARY KEY, msg_key TEXT NOT NULL REFERENCES messages(key),
    idx INTEGER NOT NULL, kind TEXT NOT NULL, unit TEXT, mail_from TEXT NOT NULL, recipients TEXT NOT NULL,
    message_id TEXT NOT NULL UNIQUE, raw BLOB NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt TEXT NOT NULL, created_at TEXT NOT NULL, sent_at TEXT, last_error TEXT);
CREATE INDEX outbox_due ON outbox (status, next_attempt);
CREATE INDEX outbox_msg ON outbox (msg_key);
CREATE TABLE checkpoints (account TEXT NOT NULL, folder TEXT NOT NULL, uidvalidity INTEGER NOT NULL,
    last_uid INTEGER NOT NULL, PRIMARY KEY (account, folder));
CREATE TABLE contacts (sender TEXT NOT NULL, at TEXT NOT NULL, intent TEXT NOT NULL, msg_key TEXT NOT NULL);
CREATE INDEX contacts_sender ON contacts (sender, at);
CREATE TABLE replies (address TEXT NOT NULL, template TEXT NOT NULL, at TEXT NOT NULL);
CREATE INDEX replies_address ON replies (address, at);
CREATE TABLE bounces (address TEXT PRIMARY KEY, at TEXT NOT NULL);
"""

RECEIVED = "2026-11-29T08:00:00.000000+00:00"
SENT = "2026-11-29T08:00:05.000000+00:00"


def _old_trace(segment: str, intent: str, hard: bool, suppressed: list[dict[str, str]]) -> str:
    trace = {"segment": segment, "intent": intent, "hard_complaint": hard, "suppressed": suppressed, "failed": []}
    return json.dumps(trace)


def _first_release_file(path: Path) -> None:
    """A state file as the first release left it: two decided mails with sends, one duplicate, a checkpoint."""
    db = sqlite3.connect(path)
    db.executescript(FIRST_RELEASE)
    limit = {"type": "reply", "reason": "budi@x.id had 3 replies since 2026-11-28"}
    messages = [
        ("a|INBOX|1|1", 1, "<one@x>", "done", "r-hard", _old_trace("DCS", "fault", True, [limit])),
        ("a|INBOX|1|2", 2, "<two@x>", "done", "r-ticket", _old_trace("DES", "fault", False, [])),
        ("a|INBOX|1|3", 3, "<one@x>", "duplicate", "", None),
    ]
    db.executemany(
        "INSERT INTO messages (key, account, folder, uidvalidity, uid, dedupe_id, outcome, rule, decision,"
        " received_at, finished_at, marked) VALUES (?, 'a', 'INBOX', 1, ?, ?, ?, ?, ?, ?, ?, 1)",
        [(*m, RECEIVED, SENT) for m in messages],
    )
    db.executemany(
        "INSERT INTO outbox (msg_key, idx, kind, unit, mail_from, recipients, message_id, raw, status, attempts,"
        " next_attempt, created_at, sent_at) VALUES (?, 0, ?, ?, 'er@x.id', ?, ?, X'00', 'sent', 1, ?, ?, ?)",
        [
            ("a|INBOX|1|1", "escalate", "coordination", '["c@x.id"]', "<e1@x>", RECEIVED, RECEIVED, SENT),
            ("a|INBOX|1|2", "ticket", "des_unit", '["d@x.id"]', "<t2@x>", RECEIVED, RECEIVED, SENT),
        ],
    )
    db.execute("INSERT INTO checkpoints VALUES ('a', 'INBOX', 1, 3)")
    db.commit()
    db.close()


def _user_version(path: Path) -> int:
    with opened(path) as db:
        return int(db.execute("PRAGMA user_version").fetchone()[0])


def _columns(path: Path) -> set[str]:
    with opened(path) as db:
        return {r[1] for r in db.execute("PRAGMA table_info(messages)")}


def test_a_new_state_file_has_the_current_schema_version(tmp_path: Path) -> None:
    """A state store created now is at the newest schema version, with the decision columns."""
    Store(tmp_path / "s.sqlite3").close()
    assert _user_version(tmp_path / "s.sqlite3") == SCHEMA_VERSION == 5
    assert {"final_outcome", "content_hash", "segment", "intent", "hard", "suppressed"} <= _columns(
        tmp_path / "s.sqlite3"
    )


def test_a_first_release_state_file_migrates_with_its_decisions_backfilled(tmp_path: Path) -> None:
    """A state file of the first release opens: it reaches the current version, its decisions' segment,
    intent, hard and suppressions are filled in from the stored trace, stats count it, and its mails still
    count as seen."""
    path = tmp_path / "old.sqlite3"
    _first_release_file(path)
    store = Store(path)
    try:
        assert _user_version(path) == SCHEMA_VERSION
        hard = store.outcome(MessageKey("a", "INBOX", 1, 1))
        assert hard is not None and (hard.segment, hard.intent, hard.hard, hard.outcome) == (
            "DCS",
            "fault",
            True,
            "done",
        )
        duplicate = store.outcome(MessageKey("a", "INBOX", 1, 3))
        assert duplicate is not None and (duplicate.segment, duplicate.hard) == (None, None)
        figures = stats(store, NOW - timedelta(hours=2), NOW, {"a": "jkt"})
        assert figures["messages"] == 3 and figures["hard_complaints"] == 1
        assert figures["per_mailbox"] == {"jkt": 3} and figures["per_segment"] == {"DCS": 1, "DES": 1}
        assert figures["suppressed"] == {"reply: <address> had 3 replies since <date>": 1}
        assert figures["actions"] == {"escalate:coordination:sent": 1, "ticket:des_unit:sent": 1}
        assert figures["arrival_to_sent_seconds"] == {"median": 5.0, "p95": 5.0}
        assert duplicate_of("sha256:anything", store.seen("<one@x>")) == "a|INBOX|1|1"
    finally:
        store.close()


def test_a_first_release_file_takes_new_plans_with_final_outcomes(tmp_path: Path) -> None:
    """A state store written before content hashes and final outcomes were kept opens, and its old mails
    still count as seen (a mail without a hash is taken as the same, so nothing is handled twice)."""
    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE messages (key TEXT PRIMARY KEY, account TEXT NOT NULL, folder TEXT NOT NULL,"
        " uidvalidity INTEGER NOT NULL, uid INTEGER NOT NULL, dedupe_id TEXT NOT NULL, outcome TEXT NOT NULL,"
        " rule TEXT, decision TEXT, error TEXT, received_at TEXT NOT NULL, finished_at TEXT,"
        " marked INTEGER NOT NULL DEFAULT 0);"
        "INSERT INTO messages (key, account, folder, uidvalidity, uid, dedupe_id, outcome, received_at)"
        " VALUES ('a|INBOX|1|1', 'a', 'INBOX', 1, 1, '<old@x>', 'done', '2026-01-01T00:00:00+00:00');"
    )
    db.close()
    store = Store(path)
    assert duplicate_of("sha256:anything", store.seen("<old@x>")) == "a|INBOX|1|1"
    send = PlannedSend("reply", None, "er@x.id", ("to1@x.id",), "<reply1@x>", b"raw")
    store.plan([Plan(KEY, "<m@x>", "r", {}, [send], NOW, None, "automated", content_hash="sha256:1")])
    (entry_id,) = store.due_ids(NOW)
    store.mark_sent([entry_id], NOW)
    store.settle(NOW)
    record = store.outcome(KEY)
    assert record is not None and record.outcome == "automated"  # what `planned` becomes once its sends are final
    store.close()


def test_a_file_of_the_unversioned_code_with_the_new_columns_migrates(tmp_path: Path) -> None:
    """A state file written before versions were kept, but after final outcomes and content hashes were
    added (user_version 0, the columns there), migrates and keeps what those columns hold."""
    path = tmp_path / "unversioned.sqlite3"
    _first_release_file(path)
    with opened(path) as db:
        db.execute("ALTER TABLE messages ADD COLUMN final_outcome TEXT")
        db.execute("ALTER TABLE messages ADD COLUMN content_hash TEXT")
        db.execute("UPDATE messages SET content_hash='sha256:1' WHERE uid=1")
    assert _user_version(path) == 0
    store = Store(path)
    try:
        assert _user_version(path) == SCHEMA_VERSION
        assert store.seen("<one@x>") == [("a|INBOX|1|1", "sha256:1"), ("a|INBOX|1|3", None)]
        record = store.outcome(MessageKey("a", "INBOX", 1, 2))
        assert record is not None and record.segment == "DES"
    finally:
        store.close()


def test_a_state_file_of_a_newer_version_is_refused_untouched(tmp_path: Path) -> None:
    """A state file written by a newer emailrouter is refused with an error naming the file, and left as it is."""
    path = tmp_path / "new.sqlite3"
    Store(path).close()
    with opened(path) as db:
        db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    with pytest.raises(StateError, match="newer") as caught:
        Store(path)
    assert str(path) in str(caught.value)
    assert _user_version(path) == SCHEMA_VERSION + 1


def test_a_migration_that_fails_leaves_the_file_at_the_version_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each migration is one transaction: one that fails half-way changes nothing of its own, the ones before
    it stay done, and the next opening finishes the job."""
    path = tmp_path / "old.sqlite3"
    _first_release_file(path)
    real = store_module.MIGRATIONS

    def broken(db: sqlite3.Connection) -> None:
        real[2](db)  # the columns are added, then the disk fails
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(store_module, "MIGRATIONS", (*real[:2], broken))
    with pytest.raises(StateError, match="cannot migrate to schema version 3: disk I/O error"):
        Store(path)
    assert _user_version(path) == 2
    assert "content_hash" in _columns(path) and "segment" not in _columns(path)
    monkeypatch.setattr(store_module, "MIGRATIONS", real)
    Store(path).close()
    assert _user_version(path) == SCHEMA_VERSION and "segment" in _columns(path)


def test_outgoing_bodies_of_an_older_file_move_to_their_own_table(tmp_path: Path) -> None:
    """An older file's unsent messages keep their whole bytes after migration, their outbox rows only the header
    block; a sent one stays headers only; a body goes once its message is sent or its mail is forgotten."""
    path = tmp_path / "old.sqlite3"
    _first_release_file(path)  # two sent entries (ids 1, 2), bodies already dropped
    raw = b"Message-ID: <f3@x>\r\nSubject: mati\r\n\r\nthe customer's whole mail\r\n"
    with opened(path) as db:
        db.executemany(
            "INSERT INTO outbox (msg_key, idx, kind, unit, mail_from, recipients, message_id, raw, status,"
            " next_attempt, created_at) VALUES (?, 1, 'forward', 'dcs_unit', 'er@x.id', '[]', ?, ?, ?, ?, ?)",
            [
                ("a|INBOX|1|1", "<f3@x>", raw, "pending", RECEIVED, RECEIVED),
                ("a|INBOX|1|2", "<f4@x>", raw, "failed", RECEIVED, RECEIVED),
            ],
        )
    store = Store(path)
    try:
        assert _user_version(path) == SCHEMA_VERSION
        pending, failed, sent = store.entry(3), store.entry(4), store.entry(1)
        assert pending is not None and failed is not None and sent is not None
        assert (pending.raw, failed.raw, sent.raw) == (raw, raw, b"\x00")
        with opened(path) as db:
            heads = {r[0] for r in db.execute("SELECT raw FROM outbox WHERE status!='sent'")}
            assert heads == {b"Message-ID: <f3@x>\r\nSubject: mati\r\n\r\n"}
            assert db.execute("SELECT count(*) FROM outbox_bodies").fetchone()[0] == 2
        store.mark_sent([3], NOW)
        store.forget(MessageKey("a", "INBOX", 1, 2))
        with opened(path) as db:
            assert db.execute("SELECT count(*) FROM outbox_bodies").fetchone()[0] == 0
        assert (store.entry(3), store.entry(4)) == (
            replace(pending, raw=b"Message-ID: <f3@x>\r\nSubject: mati\r\n\r\n", status="sent"),
            None,
        )
    finally:
        store.close()
