"""parse -> guard -> segment -> classify -> decide -> compose, for one mail. Pure: sends nothing.

Two guards sit around the table: mail over the size limit is not analysed at all (it goes to the
failure unit with a note), and automated mail is never answered, whatever the table says (the
`automated` fact lets the table decide what else happens to it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from emailrouter.core.classify import Contact, Signals, classify
from emailrouter.core.compose import Case, Composer, compose
from emailrouter.core.decide import Table, decide, reference_for
from emailrouter.core.facts import Facts, facts_of
from emailrouter.core.guard import (
    DEFAULT_GUARD,
    BounceReport,
    GuardPolicy,
    auto_reply_refused,
    automated_reason,
    bounce_reports,
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
        return frozenset({self.router.address.lower(), *(u.address.lower() for u in self.units.values())})


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
    failed: tuple[RenderFailure, ...] = ()  # replies whose template failed on this mail: not sent, to be reported


def no_history(sender: str, since: datetime) -> Sequence[Contact]:
    return ()


def route(
    raw: bytes,
    config: RoutingConfig,
    now: datetime,
    history: Callable[[str, datetime], Sequence[Contact]] = no_history,
) -> Routing:
    """Everything the router decides about one mail. `history(sender, since)` gives earlier contacts."""
    limit = config.max_message_bytes
    oversized = len(raw) > limit
    view = (
        parse_headers_only(raw, f"not analysed: {len(raw):,} bytes is over the {limit:,}-byte limit")
        if oversized
        else parse(raw)
    )
    automated = automated_reason(view, config.own_addresses, config.router.address, config.guard)
    seg = segment(view, config.segmentation)
    days = config.signals.history_days
    earlier = history(view.sender.address, now - timedelta(days=days)) if view.sender and days else ()
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
        dropped = [o for o in outgoing if isinstance(o.action, Reply)] + failed  # a reply never sent cannot fail
        outgoing = [o for o in outgoing if not isinstance(o.action, Reply)]
        failed = []
        suppressed.extend(Suppressed("reply", f"never auto-answer automated mail ({automated})") for _ in dropped)
    elif (refused := auto_reply_refused(view)) is not None:  # a person who asked for no automatic answer
        dropped = [o for o in outgoing if isinstance(o.action, Reply)] + failed
        outgoing = [o for o in outgoing if not isinstance(o.action, Reply)]
        failed = []
        suppressed.extend(Suppressed("reply", refused) for _ in dropped)
    bounced = bounce_reports(view, config.router.address) if automated else ()
    return Routing(
        view, seg, cls, facts, decision, tuple(outgoing), tuple(suppressed), automated, bounced, tuple(failed)
    )
