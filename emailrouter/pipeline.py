"""parse -> segment -> classify -> decide -> compose, for one mail. Pure: sends nothing."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from emailrouter.classify import Contact, classify
from emailrouter.compose import Case, Composer, compose
from emailrouter.config import Config
from emailrouter.decide import decide, facts_of, reference_for
from emailrouter.model import (
    Classification,
    Decision,
    Facts,
    MessageView,
    Outgoing,
    Segmentation,
    Suppressed,
)
from emailrouter.parse import parse
from emailrouter.segment import segment


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


def no_history(sender: str, since: datetime) -> Sequence[Contact]:
    return ()


def route(
    raw: bytes,
    config: Config,
    now: datetime,
    history: Callable[[str, datetime], Sequence[Contact]] = no_history,
) -> Routing:
    """Everything the router decides about one mail. `history(sender, since)` gives earlier contacts."""
    view = parse(raw)
    seg = segment(view, config.segmentation)
    days = config.signals.history_days
    earlier = history(view.sender.address, now - timedelta(days=days)) if view.sender and days else ()
    cls = classify(view.subject, view.text, config.signals, earlier, now)
    facts = facts_of(view, seg, cls)
    decision = decide(facts, config.table, reference_for(view, config.router.reference_prefix))
    case = Case(view, seg, cls, decision, now)
    outgoing, suppressed = compose(case, Composer(config.router, config.units, config.templates))
    return Routing(view, seg, cls, facts, decision, tuple(outgoing), tuple(suppressed))
