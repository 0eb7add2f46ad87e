"""The state store: plans are durable before sending, sends are recorded, interrupted replies never repeat."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from emailrouter.store import MessageKey, Plan, PlannedSend, Store
from tests.conftest import NOW

KEY = MessageKey("router@imap:993", "INBOX", 7, 42)


def _send(kind: str, n: int) -> PlannedSend:
    return PlannedSend(
        kind, None if kind == "reply" else "dcs_unit", "er@x.id", (f"to{n}@x.id",), f"<{kind}{n}@x>", b"raw"
    )


def test_plan_is_visible_after_reopening(tmp_path: Path) -> None:
    """A committed plan (decision, outbox, contact, checkpoint) survives closing and reopening the database."""
    store = Store(tmp_path / "s.sqlite3")
    sends = [_send("reply", 1), _send("forward", 2)]
    store.plan([Plan(KEY, "<m@x>", "rule-1", {"rule": "rule-1"}, sends, NOW, ("budi@x.id", "fault"))])
    store.close()
    store = Store(tmp_path / "s.sqlite3")
    assert store.outcome(KEY)["outcome"] == "planned"
    assert [e.kind for e in store.due(NOW)] == ["reply", "forward"]
    assert store.checkpoint(KEY.account, KEY.folder).last_uid == 42  # type: ignore[union-attr]
    assert [c.intent for c in store.history("BUDI@x.id", NOW - timedelta(days=1))] == ["fault"]
    assert store.first_with_dedupe_id("<m@x>") == str(KEY)


def test_planned_mail_settles_only_when_every_send_is_final(tmp_path: Path) -> None:
    """A mail is done only when all its sends are sent or failed; until then it is not marked."""
    store = Store(tmp_path / "s.sqlite3")
    store.plan([Plan(KEY, "<m@x>", "r", {}, [_send("reply", 1), _send("forward", 2)], NOW, None)])
    first, second = store.due(NOW)
    store.mark_sent([first.id], NOW)
    store.mark_retry(second.id, "451", NOW + timedelta(seconds=30))
    store.settle(NOW)
    assert store.outcome(KEY)["outcome"] == "planned"
    assert store.due(NOW) == []  # not due yet
    assert [e.id for e in store.due(NOW + timedelta(seconds=31))] == [second.id]
    store.mark_failed(second.id, "550")
    store.settle(NOW)
    assert store.outcome(KEY)["outcome"] == "done"
    assert [r["uid"] for r in store.unfinished(KEY.account, KEY.folder)] == [42]
    store.marked([str(KEY)])
    assert store.unfinished(KEY.account, KEY.folder) == []


def test_sends_caught_mid_way_are_reported_as_interrupted(tmp_path: Path) -> None:
    """A reply marked `sending` before a crash is found again on restart (the daemon never resends it)."""
    store = Store(tmp_path / "s.sqlite3")
    store.plan([Plan(KEY, "<m@x>", "r", {}, [_send("reply", 1)], NOW, None)])
    (entry,) = store.due(NOW)
    assert store.claim(entry.id, durable=True)
    assert not store.claim(entry.id, durable=True)  # taken: a second sender backs off
    store.close()
    store = Store(tmp_path / "s.sqlite3")
    assert [(e.id, e.status) for e in store.interrupted()] == [(entry.id, "sending")]
    assert store.due(NOW) == []


def test_checkpoint_restarts_with_a_new_uidvalidity(tmp_path: Path) -> None:
    """The checkpoint only moves forward within one UIDVALIDITY and starts over with a new one."""
    store = Store(tmp_path / "s.sqlite3")
    store.set_checkpoint("a", "INBOX", 1, 100)
    store.record_outcome(MessageKey("a", "INBOX", 1, 50), "<x>", "duplicate", NOW)
    assert store.checkpoint("a", "INBOX").last_uid == 100  # type: ignore[union-attr]
    store.record_outcome(MessageKey("a", "INBOX", 2, 3), "<y>", "duplicate", NOW)
    checkpoint = store.checkpoint("a", "INBOX")
    assert checkpoint is not None and (checkpoint.uidvalidity, checkpoint.last_uid) == (2, 3)


def test_prune_forgets_old_finished_mail_only(tmp_path: Path) -> None:
    """Housekeeping removes marked, finished mail older than keep_days and keeps the rest."""
    store = Store(tmp_path / "s.sqlite3")
    old = MessageKey("a", "INBOX", 1, 1)
    store.record_outcome(old, "<old>", "duplicate", NOW - timedelta(days=100))
    store.marked([str(old)])
    store.plan([Plan(KEY, "<m@x>", "r", {}, [_send("forward", 1)], NOW - timedelta(days=100), None)])
    assert store.prune(NOW, keep_days=90) == 1
    assert store.outcome(old) is None
    assert store.outcome(KEY) is not None  # still planned: never pruned


def test_a_sent_message_keeps_its_headers_not_its_body(tmp_path: Path) -> None:
    """Once sent, an outgoing message's body (with the customer's original in it) is dropped from the state;
    its headers stay for the audit. An unsent one keeps everything (it may still have to go)."""
    store = Store(tmp_path / "s.sqlite3")
    raw = b"Message-ID: <f@x>\r\nSubject: [DCS] mati\r\n\r\nthe customer's whole mail\r\n"
    sends = [PlannedSend("forward", "dcs_unit", "er@x.id", ("u@x.id",), f"<f{n}@x>", raw) for n in range(2)]
    store.plan([Plan(KEY, "<m@x>", "r", {}, sends, NOW, None)])
    first, second = store.due(NOW)
    store.mark_sent([first.id], NOW)
    kept = {e.id: e.raw for e in store._entries("1=1", ())}
    assert kept[first.id] == b"Message-ID: <f@x>\r\nSubject: [DCS] mati\r\n\r\n"
    assert kept[second.id] == raw


def test_a_state_file_of_the_first_release_opens_and_gains_the_new_columns(tmp_path: Path) -> None:
    """A state store written before content hashes and final outcomes were kept opens, and its old mails
    still count as seen (a mail without a hash is taken as the same, so nothing is handled twice)."""
    import sqlite3

    from emailrouter.dedupe import duplicate_of

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
    store.plan([Plan(KEY, "<m@x>", "r", {}, [_send("reply", 1)], NOW, None, "automated", content_hash="sha256:1")])
    (entry,) = store.due(NOW)
    store.mark_sent([entry.id], NOW)
    store.settle(NOW)
    assert store.outcome(KEY)["outcome"] == "automated"  # what `planned` becomes once its sends are final
