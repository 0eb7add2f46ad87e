"""The decision table: rows of conditions and actions, evaluated purely over the facts of one mail."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Literal

from emailrouter.core.dedupe import content_hash
from emailrouter.core.facts import Facts
from emailrouter.core.model import Action, Decision, MessageView

HitPolicy = Literal["first", "unique", "collect"]
HIT_POLICIES: tuple[HitPolicy, ...] = ("first", "unique", "collect")


@dataclass(frozen=True)
class Row:
    id: str
    description: str
    when: dict[str, frozenset[str | bool]]  # fact -> accepted values; a missing fact matches anything
    actions: tuple[Action, ...]
    line: int

    def matches(self, facts: Facts) -> bool:
        return all(facts.get(name) in accepted for name, accepted in self.when.items())


@dataclass(frozen=True)
class Table:
    hit_policy: HitPolicy
    rows: tuple[Row, ...]  # the last row has no conditions: it catches everything
    file: str


def reference_for(view: MessageView, prefix: str) -> str:
    """A stable reference number: the same mail always gets the same one (so does a re-run, and so does a copy
    of it in another mailbox), and a different mail reusing a Message-ID gets another (its outgoing Message-IDs
    derive from the reference, so they differ too)."""
    key = (
        view.message_id.encode("utf-8", "replace") + b"\0" + content_hash(view.raw).encode()
        if view.message_id
        else view.raw
    )
    digest = hashlib.sha256(key).digest()
    return f"{prefix}-{base64.b32encode(digest[:5]).decode('ascii')}"  # 5 bytes: the first 8 characters


def decide(facts: Facts, table: Table, reference: str) -> Decision:
    """Apply the table. Always returns a decision: the last row matches everything."""
    matched = [row for row in table.rows if row.matches(facts)]
    if table.hit_policy in ("first", "unique"):  # unique: `check` proved at most one row (and the catch-all) match
        matched = matched[:1]
    elif len(matched) > 1:  # collect: the catch-all only takes what nothing else took
        matched = matched[:-1] if matched[-1] is table.rows[-1] else matched
    actions: list[Action] = []
    for row in matched:
        actions.extend(a for a in row.actions if a not in actions)
    return Decision(matched[0].id, tuple(r.id for r in matched), tuple(actions), reference)
