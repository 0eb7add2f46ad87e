"""The state store plus this batch's plans not committed yet: the one place that puts the two together.

Plans are committed together (one fsync for many mails), so while a batch is open what the router
remembers is the store *and* the batch's plans: a sender's contacts, the auto-replies planned to an
address, the bounces, the Message-IDs seen and the quarantine notices. `Batch` answers those
questions (`memory()` is the snapshot `core.pipeline.route` takes) and does the plan commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from emailrouter.core.classify import Contact
from emailrouter.core.guard import LoopPolicy
from emailrouter.core.model import MessageView, Reply
from emailrouter.core.pipeline import Memory, Routing
from emailrouter.service.faults import crashpoint
from emailrouter.service.store import Plan, StateStore

# Plans are committed together, at most this many (or this many bytes of outgoing mail) at a time:
# one fsync for many mails, and the memory held before the commit stays bounded.
PLAN_BATCH = 50
PLAN_BATCH_BYTES = 8 * 1024 * 1024


@dataclass(frozen=True)
class Remembered:
    """What a routed mail adds to the memory of later ones (a plan's contact, replies and bounces)."""

    contact: tuple[str, str] | None  # (sender, intent); None for automated mail, which is no customer contact
    replies: list[tuple[str, str]]  # (address, template) of the auto-replies planned
    bounced: list[str]  # addresses a delivery report proves did not get an auto-reply we sent
    ignored: list[str]  # addresses a delivery report names without quoting a reply we sent them


Bounce = tuple[tuple[str, ...], str]  # a delivery report: the Message-IDs it quotes, and its recipient


def carried(routing: Routing) -> tuple[tuple[str, str] | None, tuple[tuple[str, str], ...], tuple[Bounce, ...]]:
    """What a routed mail may add to later mails' memory, before the store says which bounces are ours:
    (contact, replies, delivery reports). Plain data: a worker process returns it with the routing."""
    view = routing.view
    contact = (view.sender.address, routing.classification.intent) if view.sender and not routing.automated else None
    replies = tuple((to, o.action.template) for o in routing.outgoing if isinstance(o.action, Reply) for to in o.to)
    return contact, replies, tuple((tuple(r.message_ids), r.recipient) for r in routing.bounced)


def proven(
    contact: tuple[str, str] | None,
    replies: Sequence[tuple[str, str]],
    reports: Sequence[Bounce],
    store: StateStore,
) -> Remembered:
    """What the daemon remembers of a mail once its plan is committed: a bounce counts only if the report
    quotes an auto-reply we really sent to that address."""
    bounced = [to for ids, to in reports if store.replied_to(ids, to)]
    ignored = sorted({to for _, to in reports} - set(bounced))
    return Remembered(contact, list(replies), bounced, ignored)


def remembered(routing: Routing, store: StateStore) -> Remembered:
    """What the daemon remembers of this mail once its plan is committed (the processor and replay use it)."""
    return proven(*carried(routing), store)


class Batch:
    """The plans of one batch not committed yet, over the state store."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self.plans: list[Plan] = []
        self._bytes = 0  # of outgoing mail in `plans`

    def add(self, plan: Plan) -> None:
        self.plans.append(plan)
        self._bytes += plan.size

    def full(self) -> bool:
        return len(self.plans) >= PLAN_BATCH or self._bytes >= PLAN_BATCH_BYTES

    def commit(self) -> None:
        """The plan commit: durable before anything of these mails is sent. If it fails (StateError), nothing
        of these mails happened: the batch stops and is taken again from the same checkpoint."""
        if self.plans:
            self.store.plan(self.plans)
            self.plans.clear()
            self._bytes = 0
            crashpoint("after-plan")

    # ------------------------------------------------------------------ what is remembered

    def memory(self, view: MessageView, now: datetime, history_days: float, loop: LoopPolicy) -> Memory:
        """What routing `view` needs to know about its sender: earlier contacts (`history_days` back), the
        auto-replies to the sender's address within the limits' lookback, and when it bounced one of ours."""
        if view.sender is None:
            return Memory(loop=loop)
        sender = view.sender.address
        contacts: list[Contact] = []
        if history_days:
            contacts = self.store.history(sender, now - timedelta(days=history_days))
            contacts += [Contact(p.now, p.contact[1]) for p in self.plans if p.contact and p.contact[0] == sender]
        replies = self.store.replies_to([sender], now - loop.lookback)
        replies += [(a.lower(), t, p.now) for p in self.plans for a, t in p.replies]
        bounced = self.store.bounces([sender])
        for p in self.plans:
            bounced.update({a.lower(): p.now for a in p.bounced})
        return Memory(tuple(contacts), tuple(replies), bounced, loop)

    def seen(self, dedupe_id: str) -> list[tuple[str, str | None]]:
        """(key, content hash) of every earlier mail with this Message-ID (or raw-bytes hash)."""
        earlier: list[tuple[str, str | None]] = [
            (str(p.key), p.content_hash) for p in self.plans if p.dedupe_id == dedupe_id
        ]
        return earlier + self.store.seen(dedupe_id)

    def sends_since(self, kind: str, since: datetime) -> int:
        """How many sends of this kind were planned since then (committed or in this batch)."""
        return self.store.count_sends(kind, since) + sum(1 for p in self.plans for s in p.sends if s.kind == kind)
