"""Statistics and the decision audit, read from the state store: `stats`, `show`, the daily report's figures.

The store aggregates (`StateStore.figures`); this module names, orders and prints what it counted.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from emailrouter.core.ids import idempotency_key, is_webhook
from emailrouter.service.store import SendRecord, StateStore


def parse_since(text: str) -> timedelta:
    """`24h`, `7d`, `90m` -> a timedelta."""
    m = re.fullmatch(r"(\d+)\s*([mhd])", text.strip())
    if not m:
        raise ValueError(f"expected a duration such as 24h, 7d or 90m, got {text!r}")
    return timedelta(**{{"m": "minutes", "h": "hours", "d": "days"}[m[2]]: int(m[1])})


def _ranked(counts: Mapping[str, int]) -> dict[str, int]:
    """Most first; equal counts by name, so the same figures always print the same."""
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def _seconds(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def stats(store: StateStore, since: datetime, until: datetime, mailbox_names: dict[str, str]) -> dict[str, Any]:
    """Counts per mailbox, segment, intent, rule and action; suppressions; failures; delivery times."""
    figures = store.figures(since, until)
    counts = store.counts()
    per_mailbox: Counter[str] = Counter()
    for account, n in figures.per_account.items():
        per_mailbox[mailbox_names.get(account, account)] += n
    actions: Counter[str] = Counter()
    for (kind, unit, status), n in figures.actions.items():
        actions[f"{kind}:{unit or 'customer'}:{status}"] += n
    return {
        "since": since.isoformat(timespec="microseconds"),
        "until": until.isoformat(timespec="microseconds"),
        "messages": figures.messages,
        "hard_complaints": figures.hard_complaints,
        "automated": figures.per_outcome.get("automated", 0),
        "uncertain_replies": sum(1 for f in figures.failures if f.kind == "reply" and f.status == "uncertain"),
        "replies_not_rendered": figures.replies_not_rendered,
        "per_mailbox": _ranked(per_mailbox),
        "per_outcome": _ranked(figures.per_outcome),
        "per_segment": _ranked(figures.per_segment),
        "per_intent": _ranked(figures.per_intent),
        "per_rule": _ranked(figures.per_rule),
        "actions": dict(sorted(actions.items())),
        "suppressed": _ranked(figures.suppressed),
        "failures": [
            {"kind": f.kind, "to": list(f.recipients), "status": f.status, "error": f.last_error}
            for f in figures.failures
        ],
        "outbox_pending": counts["outbox_pending"],
        "quarantine": counts.get("quarantined", 0),
        "arrival_to_sent_seconds": {
            "median": _seconds(figures.sent_delay_median),
            "p95": _seconds(figures.sent_delay_p95),
        },
    }


def as_text(figures: dict[str, Any]) -> str:
    lines = [
        f"emailrouter statistics {figures['since'][:19]} .. {figures['until'][:19]} (UTC)",
        "",
        f"mails: {figures['messages']}   hard complaints: {figures['hard_complaints']}   "
        f"automated: {figures['automated']}   outbox pending: {figures['outbox_pending']}   "
        f"quarantine: {figures['quarantine']}",
        f"replies in doubt (the relay's answer was lost; never sent again): {figures['uncertain_replies']}   "
        f"replies not rendered (template failed; the unit was told): {figures['replies_not_rendered']}",
    ]
    delay = figures["arrival_to_sent_seconds"]
    if delay["median"] is not None:
        lines.append(f"time from arrival to sent: median {delay['median']:g} s, p95 {delay['p95']:g} s")
    for title, key in (
        ("per mailbox", "per_mailbox"),
        ("per outcome", "per_outcome"),
        ("per segment", "per_segment"),
        ("per intent", "per_intent"),
        ("per rule", "per_rule"),
        ("actions (type:unit:status)", "actions"),
        ("suppressed", "suppressed"),
    ):
        lines += ["", f"{title}:"] + [f"  {count:>6}  {name}" for name, count in figures[key].items()] or ["  -"]
    lines += ["", "failures:"] + (
        [f"  {f['kind']} to {', '.join(f['to'])}: {f['status']}: {f['error']}" for f in figures["failures"]]
        or ["  none"]
    )
    return "\n".join(lines) + "\n"


def _iso(when: datetime | None) -> str | None:
    return None if when is None else when.astimezone(UTC).isoformat(timespec="microseconds")


def _send(s: SendRecord) -> dict[str, Any]:
    shown = {
        "kind": s.kind,
        "unit": s.unit,
        "recipients": list(s.recipients),
        "message_id": s.message_id,
        "status": s.status,
        "attempts": s.attempts,
        "sent_at": _iso(s.sent_at),
        "last_error": s.last_error,
    }
    if is_webhook(s.message_id):  # a webhook call: its URL is the recipient, its identity the Message-ID
        shown |= {"via": "webhook", "idempotency_key": idempotency_key(s.message_id), "ticket_number": s.answer}
    return shown


def show(store: StateStore, message_id: str) -> list[dict[str, Any]]:
    """The decision record(s) of a mail (by Message-ID or state key), with what became of each send."""
    return [
        {
            "key": str(record.key),
            "outcome": record.label,
            "received_at": _iso(record.received_at),
            "finished_at": _iso(record.finished_at),
            "marked_on_server": record.marked,
            "error": record.error,
            "decision": store.decision(record.key),
            "sends": [_send(s) for s in store.sends(str(record.key))],
        }
        for record in store.find(message_id)
    ]
