"""The state-store contract: what every backend (`StateStore`) must do, run against each one.

A backend joins by adding a factory to BACKENDS: given the test's request and tmp_path it yields a function
that opens (or reopens) one and the same empty store. Only `StateStore` calls are used here. PostgreSQL runs
on a real server (tests/support/postgres.py, one per session, a new database per test): skipped without one,
a failure under CI=true.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from emailrouter.core.errors import StateError
from emailrouter.service.store import Checkpoint, MessageKey, OutboxEntry, Plan, PlannedSend, SqliteStore, StateStore
from tests.conftest import NOW

Opener = Callable[[], StateStore]


@contextmanager
def sqlite_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    path = tmp_path / "state.sqlite3"
    yield lambda: SqliteStore(path)


@contextmanager
def postgres_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    from emailrouter.service.pgstore import PostgresStore
    from tests.support.postgres import PASSWORD

    url = request.getfixturevalue("postgres_database")
    yield lambda: PostgresStore(url, password=PASSWORD)


BACKENDS: dict[str, Callable[[pytest.FixtureRequest, Path], AbstractContextManager[Opener]]] = {
    "sqlite": sqlite_backend,
    "postgres": postgres_backend,
}

KEY = MessageKey("router@imap:993", "INBOX", 7, 42)
TRACE = {"rule": "rule-1", "segment": "DCS", "intent": "fault", "hard_complaint": False, "suppressed": []}


@pytest.fixture(params=sorted(BACKENDS))
def reopen(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens the backend's store (again: the same data); every store opened is closed at the end."""
    opened: list[StateStore] = []
    with BACKENDS[request.param](request, tmp_path) as open_store:

        def opener() -> StateStore:
            opened.append(open_store())
            return opened[-1]

        yield opener
        for store in opened:
            store.close()


@pytest.fixture
def store(reopen: Opener) -> StateStore:
    return reopen()


def _send(kind: str, n: int, raw: bytes = b"raw", to: str | None = None) -> PlannedSend:
    unit = None if kind == "reply" else "dcs_unit"
    return PlannedSend(kind, unit, "er@x.id", (to or f"to{n}@x.id",), f"<{kind}{n}@x>", raw)


def _plan(key: MessageKey = KEY, sends: tuple[PlannedSend, ...] = (), **fields: Any) -> Plan:
    fields.setdefault("dedupe_id", "<m@x>")
    fields.setdefault("rule", "r")
    fields.setdefault("decision", {})
    fields.setdefault("now", NOW)
    fields.setdefault("contact", None)
    return Plan(key=key, sends=sends, **fields)


def _due(store: StateStore, at: timedelta = timedelta(0)) -> list[OutboxEntry]:
    return [e for i in store.due_ids(NOW + at) if (e := store.entry(i)) is not None]


def _key(uid: int, uidvalidity: int = 7) -> MessageKey:
    return MessageKey(KEY.account, KEY.folder, uidvalidity, uid)


# ---------------------------------------------------------------------- plan, due, claim


def test_a_committed_plan_is_there_after_reopening(reopen: Opener) -> None:
    """A committed plan (record, decision, outbox, contact, checkpoint, dedupe id) survives reopening."""
    store = reopen()
    sends = (_send("reply", 1), _send("forward", 2))
    store.plan([_plan(sends=sends, rule="rule-1", decision=TRACE, contact=("Budi@x.id", "fault"), content_hash="h1")])
    store.close()
    store = reopen()
    record = store.outcome(KEY)
    assert record is not None and record.outcome == "planned" and record.rule == "rule-1" and not record.marked
    assert (record.segment, record.intent, record.hard) == ("DCS", "fault", False)
    assert record.received_at == NOW and record.finished_at is None
    assert store.decision(KEY) == TRACE
    assert [(e.kind, e.status, e.attempts, e.msg_key) for e in _due(store)] == [
        ("reply", "pending", 0, str(KEY)),
        ("forward", "pending", 0, str(KEY)),
    ]
    assert store.checkpoint(KEY.account, KEY.folder) == Checkpoint(7, 42)
    assert [c.intent for c in store.history("BUDI@x.id", NOW - timedelta(days=1))] == ["fault"]
    assert store.seen("<m@x>") == [(str(KEY), "h1")]


def test_an_unknown_mail_has_no_record(store: StateStore) -> None:
    """Nothing is invented for a mail never taken."""
    assert store.outcome(KEY) is None and store.decision(KEY) is None
    assert store.find("<m@x>") == [] and store.seen("<m@x>") == [] and store.sends(str(KEY)) == []
    assert store.checkpoint(KEY.account, KEY.folder) is None and store.entry(1) is None


def test_a_mail_without_sends_is_finished_at_once(store: StateStore) -> None:
    """A duplicate (no decision, nothing to send) is recorded final, with no decision columns."""
    store.plan([_plan(outcome="duplicate", rule="")])
    record = store.outcome(KEY)
    assert record is not None and record.outcome == "duplicate" and record.finished_at == NOW
    assert (record.segment, record.intent, record.hard) == (None, None, None)
    assert store.decision(KEY) is None and store.due_ids(NOW) == []


def test_a_claim_is_taken_once(store: StateStore) -> None:
    """A pending entry is claimed by one sender only; a claimed entry is not due."""
    store.plan([_plan(sends=(_send("reply", 1),))])
    (entry,) = _due(store)
    assert store.claim(entry.id, durable=True)
    assert not store.claim(entry.id, durable=True)  # taken: a second sender backs off
    claimed = store.entry(entry.id)
    assert claimed is not None and (claimed.status, claimed.attempts) == ("sending", 1)
    assert store.due_ids(NOW) == [] and store.pending_count() == 1


# ---------------------------------------------------------------------- send outcomes


def test_a_sent_message_keeps_its_headers_not_its_body(store: StateStore) -> None:
    """Once sent, an outgoing message's body (with the customer's original in it) is dropped; its headers
    stay for the audit. An unsent one keeps everything (it may still have to go)."""
    raw = b"Message-ID: <f@x>\r\nSubject: [DCS] mati\r\n\r\nthe customer's whole mail\r\n"
    store.plan([_plan(sends=(_send("forward", 1, raw), _send("forward", 2, raw)))])
    first, second = _due(store)
    assert store.claim(first.id, durable=False)
    store.mark_sent([first.id], NOW + timedelta(seconds=1))
    sent, unsent = store.entry(first.id), store.entry(second.id)
    assert (
        sent is not None and sent.status == "sent" and sent.raw == b"Message-ID: <f@x>\r\nSubject: [DCS] mati\r\n\r\n"
    )
    assert unsent is not None and unsent.raw == raw
    assert store.sends(str(KEY))[0].sent_at == NOW + timedelta(seconds=1)


def test_a_retried_entry_is_due_again_at_its_next_attempt(store: StateStore) -> None:
    """A deferred send waits until its next attempt, keeps its attempt count and its last error."""
    store.plan([_plan(sends=(_send("forward", 1),))])
    (entry,) = _due(store)
    assert store.claim(entry.id, durable=False)
    store.mark_retry(entry.id, "451 try later", NOW + timedelta(seconds=30))
    assert store.due_ids(NOW) == []
    assert store.due_ids(NOW + timedelta(seconds=31)) == [entry.id]
    (record,) = store.sends(str(KEY))
    assert (record.status, record.attempts, record.last_error) == ("pending", 1, "451 try later")


def test_a_released_claim_is_pending_at_once_and_costs_no_attempt(store: StateStore) -> None:
    """A claim given back (the send never started) is due again at once, the attempt uncounted; releasing an
    entry that is not claimed changes nothing."""
    store.plan([_plan(sends=(_send("forward", 1), _send("forward", 2)))])
    first, second = _due(store)
    assert store.claim(first.id, durable=False)
    store.release(first.id, "relay down")
    released = store.entry(first.id)
    assert released is not None and (released.status, released.attempts) == ("pending", 0)
    assert store.sends(str(KEY))[0].last_error == "relay down"
    assert store.due_ids(NOW) == [first.id, second.id]
    assert store.claim(second.id, durable=False)
    store.mark_sent([second.id], NOW)
    store.release(second.id)
    assert store.sends(str(KEY))[1].status == "sent"


def test_a_mail_settles_only_when_every_send_is_final(store: StateStore) -> None:
    """A mail is done only when all its sends are sent or failed; until then it is not finished."""
    store.plan([_plan(sends=(_send("reply", 1), _send("forward", 2)))])
    first, second = _due(store)
    store.mark_sent([first.id], NOW)
    store.mark_retry(second.id, "451", NOW + timedelta(seconds=30))
    store.settle(NOW)
    record = store.outcome(KEY)
    assert record is not None and record.outcome == "planned"
    store.mark_failed(second.id, "550 no such user")
    store.settle(NOW + timedelta(minutes=1))
    record = store.outcome(KEY)
    assert record is not None and record.outcome == "done" and record.finished_at == NOW + timedelta(minutes=1)
    assert [r.key.uid for r in store.unfinished(KEY.account, KEY.folder)] == [42]
    store.marked([str(KEY)])
    assert store.unfinished(KEY.account, KEY.folder) == []
    marked = store.outcome(KEY)
    assert marked is not None and marked.marked


def test_an_uncertain_send_is_final_and_the_plan_outcome_is_kept(store: StateStore) -> None:
    """A send in doubt is final (never sent again); the mail then gets the outcome its plan named."""
    store.plan([_plan(sends=(_send("reply", 1),), outcome="automated")])
    (entry,) = _due(store)
    assert store.claim(entry.id, durable=True)
    store.mark_failed(entry.id, "answer lost after the final dot", status="uncertain")
    store.settle(NOW)
    record = store.outcome(KEY)
    assert record is not None and (record.outcome, record.tag, record.label) == ("automated", None, "automated")
    assert store.pending_count() == 0 and store.sends(str(KEY))[0].status == "uncertain"


def test_a_record_tag_counts_as_done_under_its_own_name(store: StateStore) -> None:
    """A `record: TAG` row other than automated: the mail is done, and shown and counted under its tag."""
    store.plan([_plan(outcome="newsletter")])
    record = store.outcome(KEY)
    assert record is not None and (record.outcome, record.tag, record.label) == ("done", "newsletter", "newsletter")
    assert store.counts()["newsletter"] == 1


def test_an_added_send_makes_a_finished_mail_planned_again(store: StateStore) -> None:
    """A failure notice added to a finished mail keeps it open until the notice is final too."""
    store.plan([_plan(sends=(_send("forward", 1),))])
    (entry,) = _due(store)
    store.mark_failed(entry.id, "550")
    store.settle(NOW)
    store.add_send(str(KEY), _send("failure", 2), NOW)
    record = store.outcome(KEY)
    assert record is not None and record.outcome == "planned"
    (notice,) = _due(store)
    assert notice.kind == "failure" and store.count_sends("failure", NOW) == 1
    store.mark_sent([notice.id], NOW)
    store.settle(NOW)
    record = store.outcome(KEY)
    assert record is not None and record.outcome == "done"
    assert [(s.kind, s.status) for s in store.sends(str(KEY))] == [("forward", "failed"), ("failure", "sent")]


# ---------------------------------------------------------------------- intake memory


def test_duplicates_are_found_by_dedupe_id_oldest_first(store: StateStore) -> None:
    """Every mail recorded under a Message-ID is found with its content hash, oldest first; find() takes a
    Message-ID or a key."""
    store.plan([_plan(_key(1), content_hash="h1")])
    store.plan([_plan(_key(2), outcome="duplicate", content_hash="h1", now=NOW + timedelta(seconds=1))])
    store.plan([_plan(_key(3), dedupe_id="<other@x>")])
    assert store.seen("<m@x>") == [(str(_key(1)), "h1"), (str(_key(2)), "h1")]
    assert [r.key for r in store.find("<m@x>")] == [_key(1), _key(2)]
    assert [r.key for r in store.find(str(_key(3)))] == [_key(3)]


def test_a_mail_already_recorded_keeps_its_record(store: StateStore) -> None:
    """A second plan for the same key does not overwrite the first."""
    store.plan([_plan(rule="first")])
    store.plan([_plan(rule="second", outcome="duplicate")])
    record = store.outcome(KEY)
    assert record is not None and record.rule == "first"


def test_a_batch_moves_the_checkpoint_with_its_outcomes(store: StateStore) -> None:
    """Plans, duplicates and quarantined mail of a batch commit with the checkpoint over them; the checkpoint
    never goes back within a UIDVALIDITY, starts over with a new one, and set_checkpoint sets it as given."""
    store.plan(
        [
            _plan(_key(5), sends=(_send("forward", 5),)),
            _plan(_key(9), outcome="duplicate"),
            _plan(_key(7), outcome="quarantined", error="ValueError: boom"),
        ]
    )
    assert store.checkpoint(KEY.account, KEY.folder) == Checkpoint(7, 9)
    assert [r.key.uid for r in store.unfinished(KEY.account, KEY.folder)] == [5, 7, 9]
    store.plan([_plan(_key(3))])
    assert store.checkpoint(KEY.account, KEY.folder) == Checkpoint(7, 9)
    store.plan([_plan(_key(2, uidvalidity=8))])
    assert store.checkpoint(KEY.account, KEY.folder) == Checkpoint(8, 2)
    store.set_checkpoint(KEY.account, KEY.folder, 8, 1)
    assert store.checkpoint(KEY.account, KEY.folder) == Checkpoint(8, 1)


def test_a_batch_that_cannot_be_written_leaves_nothing(store: StateStore) -> None:
    """A plan commit is all or nothing: when one plan of the batch cannot be written, no outcome, send,
    contact or checkpoint of the batch is there, so the batch is taken again from the same checkpoint."""
    good = _plan(_key(1), sends=(_send("forward", 1),), contact=("budi@x.id", "fault"))
    bad = _plan(_key(2), decision={"not json": {1, 2}})
    with pytest.raises((TypeError, ValueError, StateError)):
        store.plan([good, bad])
    assert store.outcome(_key(1)) is None and store.outcome(_key(2)) is None
    assert store.checkpoint(KEY.account, KEY.folder) is None
    assert store.due_ids(NOW) == [] and store.history("budi@x.id", NOW - timedelta(days=1)) == []
    store.plan([good])  # the same batch again, without the bad one
    assert store.checkpoint(KEY.account, KEY.folder) == Checkpoint(7, 1)


def test_replied_to_knows_the_replies_we_sent_case_insensitively(store: StateStore) -> None:
    """A bounce counts only if it quotes an auto-reply we sent (or tried to) to that address: Message-ID and
    address compare without case; a pending or refused reply, or a forward, does not count."""
    sends = (
        PlannedSend("reply", None, "er@x.id", ("Budi@X.id",), "<Reply1@X>", b"r"),
        PlannedSend("reply", None, "er@x.id", ("siti@x.id",), "<reply2@x>", b"r"),
        PlannedSend("forward", "dcs_unit", "er@x.id", ("agent@x.id",), "<fwd@x>", b"f"),
    )
    store.plan([_plan(sends=sends)])
    reply, refused, forward = _due(store)
    assert not store.replied_to(["<reply1@x>"], "budi@x.id")  # pending: nothing went out yet
    assert store.claim(reply.id, durable=True)
    assert store.replied_to(["<other@x>", "<REPLY1@x>"], "BUDI@x.id")
    assert not store.replied_to(["<reply1@x>"], "someone@x.id")
    assert not store.replied_to([], "budi@x.id")
    store.mark_failed(reply.id, "lost", status="uncertain")
    assert store.replied_to(["<reply1@x>"], "budi@x.id")
    store.mark_failed(refused.id, "550")
    assert not store.replied_to(["<reply2@x>"], "siti@x.id")
    store.mark_sent([forward.id], NOW)
    assert not store.replied_to(["<fwd@x>"], "agent@x.id")


def test_count_sends_counts_one_kind_planned_since_a_time(store: StateStore) -> None:
    """The quarantine-notice limit counts notices of one kind planned since a time, whatever their state."""
    store.plan([_plan(_key(1), sends=(_send("quarantine", 1),), now=NOW - timedelta(hours=2))])
    store.plan([_plan(_key(2), sends=(_send("quarantine", 2), _send("forward", 3)))])
    assert store.count_sends("quarantine", NOW - timedelta(hours=1)) == 1
    assert store.count_sends("quarantine", NOW - timedelta(hours=3)) == 2
    assert store.count_sends("ticket", NOW - timedelta(hours=3)) == 0


def test_replies_and_bounces_are_remembered_by_address(store: StateStore) -> None:
    """The reply limits' memory: auto-replies planned and bounced addresses, looked up without case."""
    store.plan([_plan(replies=[("Budi@x.id", "ack")], bounced=["Siti@X.id"])])
    assert store.replies_to(["BUDI@x.id", "nobody@x.id"], NOW - timedelta(hours=1)) == [("budi@x.id", "ack", NOW)]
    assert store.replies_to(["budi@x.id"], NOW + timedelta(seconds=1)) == []
    assert store.replies_to([], NOW) == [] and store.bounces([]) == {}
    assert store.bounces(["siti@x.id", "budi@x.id"]) == {"siti@x.id": NOW}


# ---------------------------------------------------------------------- restarts, quarantine, housekeeping


def test_interrupted_sends_are_found_after_reopening(reopen: Opener) -> None:
    """A send claimed before a crash is found again on restart (the daemon never resends a reply)."""
    store = reopen()
    store.plan([_plan(sends=(_send("reply", 1), _send("forward", 2)))])
    reply, _ = _due(store)
    assert store.claim(reply.id, durable=True)
    store.close()
    store = reopen()
    assert [(e.id, e.kind, e.status) for e in store.interrupted()] == [(reply.id, "reply", "sending")]
    assert [e.kind for e in _due(store)] == ["forward"]


def test_an_instance_holds_the_mailboxes_it_asks_for_while_no_other_does(store: StateStore) -> None:
    """One instance alone holds every mailbox it asks for, again and again, and again after letting go
    (SQLite: the one process that holds the state; PostgreSQL: no other instance asked first)."""
    assert store.hold_mailbox(KEY.account, KEY.folder) and store.hold_mailbox(KEY.account, KEY.folder)
    assert store.hold_mailbox(KEY.account, "Other")
    store.release_mailbox(KEY.account, KEY.folder)
    store.release_mailbox(KEY.account, "never-held")
    assert store.hold_mailbox(KEY.account, KEY.folder)


def test_quarantine_lists_quarantined_mail_and_forget_drops_everything_of_it(store: StateStore) -> None:
    """Quarantined mail is listed with its error; forget() drops its record, sends and contact."""
    store.plan([_plan(_key(1), rule="fine", contact=("budi@x.id", "fault"))])
    store.plan([_plan(_key(2), sends=(_send("quarantine", 1),), outcome="quarantined", error="ValueError: boom")])
    (entry,) = _due(store)
    store.mark_sent([entry.id], NOW)
    store.settle(NOW)
    (listed,) = store.quarantined()
    assert listed.key == _key(2) and listed.outcome == "quarantined" and listed.error == "ValueError: boom"
    store.forget(_key(2))
    store.forget(_key(1))
    assert store.quarantined() == [] and store.outcome(_key(2)) is None and store.sends(str(_key(2))) == []
    assert store.history("budi@x.id", NOW - timedelta(days=1)) == []


def test_counts_give_mails_per_outcome_and_the_outbox_pending(store: StateStore) -> None:
    """counts(): mails per outcome and what the outbox still has to send."""
    store.plan([_plan(_key(1), sends=(_send("forward", 1),)), _plan(_key(2), outcome="duplicate")])
    assert store.counts() == {"planned": 1, "duplicate": 1, "outbox_pending": 1}


def test_prune_forgets_old_finished_mail_only(store: StateStore) -> None:
    """Housekeeping removes marked, finished mail older than keep_days (and old memory) and keeps the rest."""
    old = NOW - timedelta(days=100)
    store.plan([_plan(_key(1), outcome="duplicate", now=old, contact=("budi@x.id", "fault"), replies=[("b@x", "t")])])
    store.marked([str(_key(1))])
    store.plan([_plan(_key(2), sends=(_send("forward", 2),), now=old)])  # still planned: never pruned
    store.plan([_plan(_key(3), now=old)])  # done but not marked on the server yet
    store.plan([_plan(_key(4), outcome="duplicate")])
    store.marked([str(_key(4))])
    assert store.prune(NOW, keep_days=90) == 1
    assert store.outcome(_key(1)) is None
    assert all(store.outcome(_key(n)) is not None for n in (2, 3, 4))
    assert store.history("budi@x.id", old - timedelta(days=1)) == []
    assert store.replies_to(["b@x"], old - timedelta(days=1)) == []
    assert store.pending_count() == 1


def test_prune_forgets_old_finished_mail_of_an_earlier_uidvalidity_that_is_never_marked(store: StateStore) -> None:
    """After the folder got a new UIDVALIDITY, the poller never marks the mail recorded under the old one: once as old
    as keep_days it is forgotten like marked mail, a quarantined one too; mail still planned and mail of the
    UIDVALIDITY now stay."""
    old = NOW - timedelta(days=100)
    store.plan([_plan(_key(1, uidvalidity=6), outcome="quarantined", error="a stage broke", now=old)])
    store.plan([_plan(_key(2, uidvalidity=6), dedupe_id="<m2@x>", now=old)])
    store.plan([_plan(_key(3, uidvalidity=6), sends=(_send("forward", 3),), dedupe_id="<m3@x>", now=old)])
    store.plan([_plan(_key(4, uidvalidity=7), dedupe_id="<m4@x>", now=old)])  # the folder's now, not marked yet
    store.plan([_plan(_key(5, uidvalidity=6), dedupe_id="<m5@x>")])  # recent
    assert store.checkpoint(KEY.account, KEY.folder) == Checkpoint(6, 5)
    store.set_checkpoint(KEY.account, KEY.folder, 7, 4)  # the new UIDVALIDITY, as the poller records it
    assert store.prune(NOW, keep_days=90) == 2
    assert store.outcome(_key(1, uidvalidity=6)) is None and store.outcome(_key(2, uidvalidity=6)) is None
    assert store.quarantined() == []
    assert all(store.outcome(k) is not None for k in (_key(3, 6), _key(4, 7), _key(5, 6)))
    assert store.pending_count() == 1


# ---------------------------------------------------------------------- figures


def _trace(segment: str, intent: str, hard: bool, suppressed: list[dict[str, str]], failed: int) -> dict[str, Any]:
    return {
        "segment": segment,
        "intent": intent,
        "hard_complaint": hard,
        "suppressed": suppressed,
        "failed": [{"template": "t"}] * failed,
    }


def test_figures_count_the_mails_of_the_window_and_their_sends(store: StateStore) -> None:
    """figures(): per account, outcome, segment, intent and rule; hard complaints, unrendered replies,
    suppressions (addresses and dates generalised), actions, failures and arrival-to-sent times."""
    limit = {"type": "reply", "reason": "budi@x.id had 3 replies since 2026-11-28"}
    limit2 = {"type": "reply", "reason": "siti@x.id had 3 replies since 2026-11-29"}
    other = MessageKey("other@imap:993", "INBOX", 1, 1)
    store.plan(
        [
            _plan(
                _key(1),
                sends=(_send("reply", 1), _send("forward", 2)),
                rule="r1",
                decision=_trace("DCS", "fault", True, [limit, {"type": "all", "reason": "automated mail"}], 1),
            ),
            _plan(
                _key(2),
                sends=(_send("forward", 3), _send("reply", 4)),
                rule="r2",
                decision=_trace("DES", "question", False, [limit2], 0),
            ),
            _plan(other, outcome="duplicate", rule=""),
            _plan(_key(3), rule="r1", decision=_trace("DCS", "fault", False, [], 0), now=NOW - timedelta(days=2)),
        ]
    )
    reply1, forward2, forward3, reply4 = _due(store)
    store.mark_sent([reply1.id], NOW + timedelta(seconds=2))
    store.mark_failed(forward2.id, "550 no such user")
    store.mark_sent([forward3.id], NOW + timedelta(seconds=4))
    store.mark_failed(reply4.id, "answer lost", status="uncertain")
    store.settle(NOW)
    figures = store.figures(NOW - timedelta(hours=1), NOW + timedelta(hours=1))
    assert (figures.messages, figures.hard_complaints, figures.replies_not_rendered) == (3, 1, 1)
    assert figures.per_account == {KEY.account: 2, "other@imap:993": 1}
    assert figures.per_outcome == {"done": 2, "duplicate": 1}
    assert figures.per_segment == {"DCS": 1, "DES": 1}
    assert figures.per_intent == {"fault": 1, "question": 1}
    assert figures.per_rule == {"r1": 1, "r2": 1}
    assert figures.suppressed == {"reply: <address> had 3 replies since <date>": 2, "all: automated mail": 1}
    assert figures.actions == {
        ("reply", None, "sent"): 1,
        ("reply", None, "uncertain"): 1,
        ("forward", "dcs_unit", "failed"): 1,
        ("forward", "dcs_unit", "sent"): 1,
    }
    assert [(f.kind, f.recipients, f.status, f.last_error) for f in figures.failures] == [
        ("forward", ("to2@x.id",), "failed", "550 no such user"),
        ("reply", ("to4@x.id",), "uncertain", "answer lost"),
    ]
    assert (figures.sent_delay_median, figures.sent_delay_p95) == (3.0, 4.0)
    empty = store.figures(NOW + timedelta(days=1), NOW + timedelta(days=2))
    assert (empty.messages, empty.per_account, empty.failures, empty.sent_delay_median) == (0, {}, [], None)
