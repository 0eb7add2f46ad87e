"""`stats`, the daily report's text and `show`, over a real state store."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from emailrouter.service.stats import as_text, parse_since, show, stats
from emailrouter.service.store import MessageKey, Plan, PlannedSend, Store
from tests.conftest import NOW
from tests.support.sqlite import opened

ACCOUNT = "router@imap:993"
WINDOW = (NOW - timedelta(hours=1), NOW + timedelta(hours=1))


def _key(uid: int) -> MessageKey:
    return MessageKey(ACCOUNT, "INBOX", 7, uid)


def _send(kind: str, n: int) -> PlannedSend:
    unit = None if kind == "reply" else "dcs_unit"
    return PlannedSend(kind, unit, "er@x.id", (f"to{n}@x.id",), f"<{kind}{n}@x>", b"H: v\r\n\r\nbody")


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """Three mails: a hard complaint (reply sent after 2 s, forward refused), an automated mail and a duplicate."""
    s = Store(tmp_path / "state.sqlite3")
    hard = {
        "segment": "DCS",
        "intent": "fault",
        "hard_complaint": True,
        "suppressed": [{"type": "reply", "reason": "budi@x.id had 3 replies since 2026-11-28"}],
        "failed": ["reply:thanks.id"],
    }
    automated = {"segment": "unknown", "intent": "other", "hard_complaint": False, "suppressed": []}
    s.plan(
        [
            Plan(_key(1), "<one@x>", "r-hard", hard, [_send("reply", 1), _send("forward", 2)], NOW, None),
            Plan(_key(2), "<two@x>", "guard-automated-mail-recorded", automated, [], NOW, None, "automated"),
            Plan(_key(3), "<one@x>", "", {}, [], NOW, None, "duplicate"),
        ]
    )
    reply, forward = s.due_ids(NOW)
    s.mark_sent([reply], NOW + timedelta(seconds=2))
    s.mark_failed(forward, "550 no such user")
    s.settle(NOW)
    yield s
    s.close()


EXPECTED = {
    "messages": 3,
    "hard_complaints": 1,
    "automated": 1,
    "uncertain_replies": 0,
    "replies_not_rendered": 1,
    "per_mailbox": {"jkt": 3},
    "per_outcome": {"automated": 1, "done": 1, "duplicate": 1},
    "per_segment": {"DCS": 1, "unknown": 1},
    "per_intent": {"fault": 1, "other": 1},
    "per_rule": {"guard-automated-mail-recorded": 1, "r-hard": 1},
    "actions": {"forward:dcs_unit:failed": 1, "reply:customer:sent": 1},
    "suppressed": {"reply: <address> had 3 replies since <date>": 1},
    "failures": [{"kind": "forward", "to": ["to2@x.id"], "status": "failed", "error": "550 no such user"}],
    "outbox_pending": 0,
    "quarantine": 0,
    "arrival_to_sent_seconds": {"median": 2.0, "p95": 2.0},
}


def test_stats_count_the_window_under_the_documented_keys(store: Store) -> None:
    """stats() gives the figures of the mails received in the window, under the keys the report and --json use."""
    figures = stats(store, *WINDOW, {ACCOUNT: "jkt"})
    assert list(figures) == ["since", "until", *EXPECTED]
    assert {k: figures[k] for k in EXPECTED} == EXPECTED
    assert figures["since"] == "2026-11-29T08:00:00.000000+00:00"


def test_stats_never_decode_a_decision_trace(store: Store, tmp_path: Path) -> None:
    """The figures come from the decision columns: with every stored trace unreadable, they are the same."""
    with opened(tmp_path / "state.sqlite3") as db:
        db.execute("UPDATE messages SET decision='not json'")
    figures = stats(store, *WINDOW, {ACCOUNT: "jkt"})
    assert {k: figures[k] for k in EXPECTED} == EXPECTED


def test_the_report_text_shows_every_section(store: Store) -> None:
    """as_text(): the headline figures, the delivery times, each per-section count and the failures."""
    text = as_text(stats(store, *WINDOW, {ACCOUNT: "jkt"}))
    assert text.startswith("emailrouter statistics 2026-11-29T08:00:00 .. 2026-11-29T10:00:00 (UTC)\n")
    assert "mails: 3   hard complaints: 1   automated: 1   outbox pending: 0   quarantine: 0\n" in text
    assert "replies not rendered (template failed; the unit was told): 1\n" in text
    assert "time from arrival to sent: median 2 s, p95 2 s\n" in text
    assert "per rule:\n       1  guard-automated-mail-recorded\n       1  r-hard\n" in text
    assert "actions (type:unit:status):\n       1  forward:dcs_unit:failed\n       1  reply:customer:sent\n" in text
    assert text.endswith("failures:\n  forward to to2@x.id: failed: 550 no such user\n")


def test_show_gives_each_record_with_what_became_of_its_sends(store: Store) -> None:
    """show() by Message-ID finds every mail recorded under it, with the decision and each send's state."""
    first, duplicate = show(store, "<one@x>")
    assert (first["key"], first["outcome"], duplicate["outcome"]) == (str(_key(1)), "done", "duplicate")
    assert first["decision"]["segment"] == "DCS" and duplicate["decision"] is None
    assert first["received_at"] == "2026-11-29T09:00:00.000000+00:00" and first["marked_on_server"] is False
    assert first["sends"] == [
        {
            "kind": "reply",
            "unit": None,
            "recipients": ["to1@x.id"],
            "message_id": "<reply1@x>",
            "status": "sent",
            "attempts": 0,
            "sent_at": "2026-11-29T09:00:02.000000+00:00",
            "last_error": None,
        },
        {
            "kind": "forward",
            "unit": "dcs_unit",
            "recipients": ["to2@x.id"],
            "message_id": "<forward2@x>",
            "status": "failed",
            "attempts": 0,
            "sent_at": None,
            "last_error": "550 no such user",
        },
    ]
    assert [r["key"] for r in show(store, str(_key(2)))] == [str(_key(2))]
    assert show(store, "<nobody@x>") == []


def test_parse_since_reads_minutes_hours_and_days() -> None:
    """`90m`, `24h`, `7d` are durations; anything else is refused with an example."""
    assert [parse_since(t) for t in ("90m", "24h", " 7d ")] == [
        timedelta(minutes=90),
        timedelta(hours=24),
        timedelta(days=7),
    ]
    with pytest.raises(ValueError, match="such as 24h"):
        parse_since("1w")
