"""The sender's memory as one snapshot: the state store plus the batch's plans not committed yet (service.memory)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from emailrouter.core.guard import LoopPolicy
from emailrouter.core.parse import parse
from emailrouter.service.memory import PLAN_BATCH, PLAN_BATCH_BYTES, Batch
from emailrouter.service.store import MessageKey, Plan, PlannedSend, Store
from tests.conftest import NOW, eml

SENDER = "budi@outlook.com"
VIEW = parse(eml(f"From: Budi <{SENDER}>", "Subject: internet mati", "Message-ID: <m3@x.example>", body="mati lagi"))


def _plan(uid: int, hours_ago: float, **more: object) -> Plan:
    key = MessageKey("acct", "INBOX", 1, uid)
    fields: dict[str, object] = {"sends": (), "contact": (SENDER, "fault"), "outcome": "done", **more}
    return Plan(key, f"<m{uid}@x.example>", "r", {}, now=NOW - timedelta(hours=hours_ago), **fields)  # type: ignore[arg-type]


def test_the_memory_puts_the_store_and_the_uncommitted_plans_together(tmp_path: Path) -> None:
    """A committed plan and one still in the batch both count: contacts, replies and bounces of the sender."""
    store = Store(tmp_path / "s.sqlite3")
    try:
        batch = Batch(store)
        batch.add(_plan(1, 5, replies=[(SENDER, "education")]))
        batch.commit()
        assert batch.plans == []
        batch.add(_plan(2, 1, bounced=[SENDER.upper()]))
        memory = batch.memory(VIEW, NOW, 7, LoopPolicy())
        assert [c.intent for c in memory.contacts] == ["fault", "fault"]
        assert [(a, t) for a, t, _ in memory.replies] == [(SENDER, "education")]
        assert memory.bounced == {SENDER: NOW - timedelta(hours=1)}
        assert memory.loop == LoopPolicy()
        assert batch.memory(VIEW, NOW, 0, LoopPolicy()).contacts == ()  # no history signal: no contacts read
    finally:
        store.close()


def test_seen_and_quarantine_notices_count_the_uncommitted_plans_too(tmp_path: Path) -> None:
    """A Message-ID and a quarantine notice in the batch are known before the commit, the committed ones after it."""
    store = Store(tmp_path / "s.sqlite3")
    notice = PlannedSend("quarantine", "triage", "router@x.example", ("triage@x.example",), "<n@x>", b"x")
    try:
        batch = Batch(store)
        batch.add(_plan(1, 0, content_hash="h1", sends=[notice], outcome="quarantined", contact=None))
        assert batch.seen("<m1@x.example>") == [(str(MessageKey("acct", "INBOX", 1, 1)), "h1")]
        assert batch.sends_since("quarantine", NOW - timedelta(hours=1)) == 1
        batch.commit()
        assert batch.seen("<m1@x.example>") == [(str(MessageKey("acct", "INBOX", 1, 1)), "h1")]
        assert batch.sends_since("quarantine", NOW - timedelta(hours=1)) == 1
    finally:
        store.close()


def test_a_batch_is_full_at_plan_batch_plans(tmp_path: Path) -> None:
    """The plan commit comes every PLAN_BATCH plans (one fsync for many mails, bounded memory)."""
    store = Store(tmp_path / "s.sqlite3")
    try:
        batch = Batch(store)
        for uid in range(1, PLAN_BATCH):
            batch.add(_plan(uid, 0))
        assert not batch.full()
        batch.add(_plan(PLAN_BATCH, 0))
        assert batch.full()
    finally:
        store.close()


def test_a_batch_is_full_at_plan_batch_bytes_of_outgoing_mail_and_empty_again_after_its_commit(tmp_path: Path) -> None:
    """A few big forwards fill a batch before PLAN_BATCH plans do (the memory held before the commit stays bounded);
    after the commit the count starts again from nothing."""
    store = Store(tmp_path / "s.sqlite3")
    big = b"x" * (PLAN_BATCH_BYTES // 2)
    try:
        batch = Batch(store)

        def forward(uid: int) -> Plan:
            send = PlannedSend("forward", "care", "er@x.id", ("care@x.id",), f"<f{uid}@x>", big)
            return _plan(uid, 0, sends=(send,), outcome="done")

        batch.add(forward(1))
        assert not batch.full()
        batch.add(forward(2))
        assert batch.full()
        batch.commit()
        assert not batch.full()
        batch.add(forward(3))
        assert not batch.full()  # one big forward again: half the bytes
    finally:
        store.close()
