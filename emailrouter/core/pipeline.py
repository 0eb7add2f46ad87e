"""parse -> guard -> segment -> classify -> decide -> compose, for one mail. Pure: sends nothing.

Two guards sit around the table: mail over the size limit is not analysed at all (it goes to the
failure unit with a note), and automated mail is never answered, whatever the table says (the
`automated` fact lets the table decide what else happens to it). After composing, the reply limits
(one reply of a template per window, a cap per hour, none to an address that bounced) run over the
sender's `Memory`, which the shell loads before routing: `explain`, rule tests and replay can show a
reply the limits suppress by passing one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from emailrouter.core.classify import Contact, Signals, classify
from emailrouter.core.compose import Case, Composer, compose
from emailrouter.core.decide import Table, decide, reference_for
from emailrouter.core.facts import Facts, facts_of
from emailrouter.core.guard import (
    DEFAULT_GUARD,
    BounceReport,
    GuardPolicy,
    LoopPolicy,
    auto_reply_refused,
    automated_reason,
    bounce_reports,
    limit_replies,
)
from emailrouter.core.model import (
    Classification,
    Decision,
    Forward,
    MessageView,
    Outgoing,
    RenderFailure,
    Reply,
    RouterIdentity,
    Segmentation,
    Suppressed,
    Unit,
)
from emailrouter.core.parse import parse, parse_headers_only
from emailrouter.core.segment import SegmentRules, segment
from emailrouter.core.templates import TemplateSet

OVERSIZED_RULE = "guard-oversized-to-failure-unit"
MAX_MESSAGE_BYTES = 25 * 1024 * 1024


@dataclass(frozen=True)
class RoutingConfig:
    """What routing one mail needs from the config: who we are, the units, segmentation, signals, the
    table, the templates, what else counts as automated, and the size over which mail is not analysed.
    (The service's settings are not part of it: see config.loader.Config, which extends it.)"""

    router: RouterIdentity
    units: dict[str, Unit]
    segmentation: SegmentRules
    signals: Signals
    table: Table
    templates: TemplateSet
    guard: GuardPolicy = DEFAULT_GUARD  # what else counts as automated mail (guard.robot_senders)
    max_message_bytes: int = MAX_MESSAGE_BYTES

    @property
    def own_addresses(self) -> frozenset[str]:
        return frozenset({self.router.address.lower(), *(u.address.lower() for u in self.units.values() if u.address)})


@dataclass(frozen=True)
class Routing:
    """The full trace of one mail through the stages."""

    view: MessageView
    segmentation: Segmentation
    classification: Classification
    facts: Facts
    decision: Decision
    outgoing: tuple[Outgoing, ...]
    suppressed: tuple[Suppressed, ...]
    automated: str | None = None  # why the mail counts as automated, if it does
    bounced: tuple[BounceReport, ...] = ()  # recipients a delivery report says did not get a mail of ours
    failed: tuple[RenderFailure, ...] = ()  # replies (or webhook calls) whose template failed on this mail: reported


@dataclass(frozen=True)
class Memory:
    """What the state remembers about the sender of one mail, as of now: loaded by the shell before routing
    (the state store plus the plans not committed yet). `loop` is the reply limits to apply over it;
    without one (`NO_MEMORY`) no limit applies."""

    contacts: tuple[Contact, ...] = ()  # the sender's earlier mail, for the history signals
    replies: tuple[tuple[str, str, datetime], ...] = ()  # (address, template, when) of earlier auto-replies
    bounced: Mapping[str, datetime] = field(default_factory=dict)  # address -> when it bounced a reply of ours
    loop: LoopPolicy | None = None


NO_MEMORY = Memory()


def read(raw: bytes, config: RoutingConfig) -> MessageView:
    """The parsed mail, or only its headers when it is over the size limit (then it is not analysed)."""
    limit = config.max_message_bytes
    if len(raw) > limit:
        return parse_headers_only(raw, f"not analysed: {len(raw):,} bytes is over the {limit:,}-byte limit")
    return parse(raw)


def route(mail: bytes | MessageView, config: RoutingConfig, now: datetime, memory: Memory = NO_MEMORY) -> Routing:
    """Everything the router decides about one mail (raw bytes, or the view `read` made of them), given what
    the state remembers about its sender."""
    view = read(mail, config) if isinstance(mail, bytes) else mail
    oversized = view.size > config.max_message_bytes
    automated = automated_reason(view, config.own_addresses, config.router.address, config.guard)
    seg = segment(view, config.segmentation)
    days = config.signals.history_days
    earlier = memory.contacts if view.sender and days else ()
    cls = classify(view.subject, view.text, config.signals, earlier, now, automated=automated is not None)
    facts = facts_of(view, seg, cls, automated is not None)
    reference = reference_for(view, config.router.reference_prefix)
    if oversized:
        unit = config.router.failures_to
        decision = Decision(OVERSIZED_RULE, (OVERSIZED_RULE,), (Forward(unit),), reference)
    else:
        decision = decide(facts, config.table, reference)
    case = Case(view, seg, cls, decision, now)
    outgoing, suppressed, failed = compose(case, Composer(config.router, config.units, config.templates))
    if automated is not None:
        suppressed.insert(0, Suppressed("all", f"automated mail: {automated}"))
        # a reply never sent cannot fail
        dropped = [o for o in outgoing if isinstance(o.action, Reply)] + [f for f in failed if not f.call]
        outgoing = [o for o in outgoing if not isinstance(o.action, Reply)]
        failed = [f for f in failed if f.call]
        suppressed.extend(Suppressed("reply", f"never auto-answer automated mail ({automated})") for _ in dropped)
    elif (refused := auto_reply_refused(view)) is not None:  # a person who asked for no automatic answer
        dropped = [o for o in outgoing if isinstance(o.action, Reply)] + [f for f in failed if not f.call]
        outgoing = [o for o in outgoing if not isinstance(o.action, Reply)]
        failed = [f for f in failed if f.call]
        suppressed.extend(Suppressed("reply", refused) for _ in dropped)
    if memory.loop is not None:
        outgoing, limited = limit_replies(outgoing, memory.replies, memory.bounced, now, memory.loop)
        suppressed.extend(limited)
    bounced = bounce_reports(view, config.router.address) if automated else ()
    return Routing(
        view, seg, cls, facts, decision, tuple(outgoing), tuple(suppressed), automated, bounced, tuple(failed)
    )
