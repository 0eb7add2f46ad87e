"""Statistics and the decision audit, read from the state store: `stats`, `show`, the daily report."""

from __future__ import annotations

import json
import re
import statistics
from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from emailrouter.store import Store


def parse_since(text: str) -> timedelta:
    """`24h`, `7d`, `90m` -> a timedelta."""
    m = re.fullmatch(r"(\d+)\s*([mhd])", text.strip())
    if not m:
        raise ValueError(f"expected a duration such as 24h, 7d or 90m, got {text!r}")
    return timedelta(**{{"m": "minutes", "h": "hours", "d": "days"}[m[2]]: int(m[1])})


def stats(store: Store, since: datetime, until: datetime, mailbox_names: dict[str, str]) -> dict[str, Any]:
    """Counts per mailbox, segment, intent, rule and action; suppressions; failures; delivery times."""
    lo, hi = since.isoformat(timespec="microseconds"), until.isoformat(timespec="microseconds")
    messages = store.query(
        "SELECT account, outcome, rule, decision FROM messages WHERE received_at>=? AND received_at<?", (lo, hi)
    )
    per: dict[str, Counter[str]] = {k: Counter() for k in ("mailbox", "outcome", "segment", "intent", "rule")}
    suppressed: Counter[str] = Counter()
    hard = not_rendered = 0
    for row in messages:
        per["mailbox"][mailbox_names.get(row["account"], row["account"])] += 1
        per["outcome"][row["outcome"]] += 1
        if row["rule"]:
            per["rule"][row["rule"]] += 1
        if row["decision"]:
            trace = json.loads(row["decision"])
            per["segment"][trace.get("segment", "?")] += 1
            per["intent"][trace.get("intent", "?")] += 1
            hard += bool(trace.get("hard_complaint"))
            not_rendered += len(trace.get("failed", []))
            for s in trace.get("suppressed", []):
                reason = re.sub(r"\S+@\S+", "<address>", s.get("reason", ""))
                reason = re.sub(r"\d{4}-\d{2}-\d{2}", "<date>", reason)
                suppressed[f"{s.get('type')}: {reason}"] += 1
    actions: Counter[str] = Counter()
    delays: list[float] = []
    failures = []
    for row in store.query(
        "SELECT o.kind, o.unit, o.status, o.sent_at, o.last_error, o.recipients, m.received_at "
        "FROM outbox o JOIN messages m ON m.key = o.msg_key WHERE m.received_at>=? AND "
        "m.received_at<?",
        (lo, hi),
    ):
        actions[f"{row['kind']}:{row['unit'] or 'customer'}:{row['status']}"] += 1
        if row["status"] == "sent" and row["sent_at"]:
            delays.append(
                (datetime.fromisoformat(row["sent_at"]) - datetime.fromisoformat(row["received_at"])).total_seconds()
            )
        if row["status"] in ("failed", "uncertain"):
            failures.append(
                {
                    "kind": row["kind"],
                    "to": json.loads(row["recipients"]),
                    "status": row["status"],
                    "error": row["last_error"],
                }
            )
    delays.sort()
    return {
        "since": lo,
        "until": hi,
        "messages": len(messages),
        "hard_complaints": hard,
        "automated": per["outcome"].get("automated", 0),
        "uncertain_replies": sum(1 for f in failures if f["kind"] == "reply" and f["status"] == "uncertain"),
        "replies_not_rendered": not_rendered,
        **{f"per_{k}": dict(v.most_common()) for k, v in per.items()},
        "actions": dict(sorted(actions.items())),
        "suppressed": dict(suppressed.most_common()),
        "failures": failures,
        "outbox_pending": store.pending_count(),
        "quarantine": len(store.quarantined()),
        "arrival_to_sent_seconds": {
            "median": round(statistics.median(delays), 3) if delays else None,
            "p95": round(delays[min(len(delays) - 1, int(0.95 * len(delays)))], 3) if delays else None,
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


def show(store: Store, message_id: str) -> list[dict[str, Any]]:
    """The decision record(s) of a mail (by Message-ID or state key), with what became of each send."""
    rows = store.query(
        "SELECT * FROM messages WHERE dedupe_id=? OR key=? ORDER BY received_at", (message_id, message_id)
    )
    out = []
    for row in rows:
        sends = store.query(
            "SELECT kind, unit, recipients, message_id, status, attempts, sent_at, last_error "
            "FROM outbox WHERE msg_key=? ORDER BY idx",
            (row["key"],),
        )
        out.append(
            {
                "key": row["key"],
                "outcome": row["outcome"],
                "received_at": row["received_at"],
                "finished_at": row["finished_at"],
                "marked_on_server": bool(row["marked"]),
                "error": row["error"],
                "decision": json.loads(row["decision"]) if row["decision"] else None,
                "sends": [{**dict(s), "recipients": json.loads(s["recipients"])} for s in sends],
            }
        )
    return out
