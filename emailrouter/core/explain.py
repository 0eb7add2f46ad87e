"""Describe a routing without doing anything: as JSON for machines, as text for people."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from emailrouter.core.combine import output_json, output_rows
from emailrouter.core.model import Reply
from emailrouter.core.pipeline import Memory, Routing

# The moment offline evaluations (rule tests, replays) decide at, so their results do not depend on the clock.
EVALUATION_TIME = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)


def outcome(routing: Routing) -> dict[str, Any]:
    """What happened to a mail, in the plain terms ops compare: facts, rule, actions, recipients, templates, and
    what was suppressed ("reply: <why>")."""
    return {
        "segment": routing.segmentation.segment,
        "segment_source": routing.segmentation.source,
        "intent": routing.classification.intent,
        "hard": routing.classification.hard,
        "language": routing.classification.language,
        "rule": routing.decision.rule,
        "actions": [
            f"reply:{o.action.template}" if isinstance(o.action, Reply) else f"{o.action.type}:{o.unit}"
            for o in routing.outgoing
        ],
        "recipients": sorted(f"{o.action.type}:{to}" for o in routing.outgoing for to in o.to),
        "templates": sorted(o.action.template for o in routing.outgoing if isinstance(o.action, Reply)),
        "failed": [f"{f.type}:{f.template}" if f.call else f"reply:{f.template}.{f.language}" for f in routing.failed],
        "suppressed": [f"{s.type}: {s.reason}" for s in routing.suppressed],
    }


def failure_lines(routing: Routing) -> list[str]:
    """One line per reply (or webhook call) whose template failed on this mail: which template, and why."""
    return [
        f"{f.type} call not made: {f.template} not rendered: {f.reason}"
        if f.call
        else f"reply {f.template} ({f.language}) not rendered: {f.reason}"
        for f in routing.failed
    ]


def memory_json(memory: Memory) -> dict[str, Any]:
    """What the router remembered about the sender when it decided (explain --history / --state)."""
    return {
        "replies": [{"address": a, "template": t, "at": at.isoformat()} for a, t, at in memory.replies],
        "contacts": [{"intent": c.intent, "at": c.at.isoformat()} for c in memory.contacts],
        "bounced": [{"address": a, "at": at.isoformat()} for a, at in sorted(memory.bounced.items())],
    }


def memory_lines(memory: Memory, now: datetime) -> list[str]:
    """The same for people: one line per earlier reply, contact and bounce, with its age."""

    def age(at: datetime) -> str:
        minutes = int((now - at).total_seconds() // 60)
        if abs(minutes) < 120:
            return f"{minutes} min ago"
        return f"{minutes / 60:.1f} h ago" if abs(minutes) < 48 * 60 else f"{minutes / 1440:.1f} days ago"

    lines = [f"  remembered: reply {t!r} to {a}, {age(at)} ({at:%Y-%m-%d %H:%M %Z})" for a, t, at in memory.replies]
    lines += [f"  remembered: earlier mail ({c.intent}), {age(c.at)}" for c in memory.contacts]
    lines += [f"  remembered: {a} bounced an auto-reply, {age(at)}" for a, at in sorted(memory.bounced.items())]
    return lines or ["  remembered: nothing about this sender"]


def as_json(routing: Routing, file: str, config_version: str, memory: Memory | None = None) -> dict[str, Any]:
    """The trace as one JSON object; with the memory it was routed over, when one was given (`memory`)."""
    view, seg, cls, dec = routing.view, routing.segmentation, routing.classification, routing.decision
    extra = {"memory": memory_json(memory)} if memory is not None else {}
    return {
        "file": file,
        "message_id": view.message_id,
        "sender": view.sender.address if view.sender else None,
        "sender_problem": view.sender_problem,
        "subject": view.subject,
        "size": view.size,
        "segment": seg.segment,
        "segment_source": seg.source,
        "segment_detail": seg.detail,
        "customer_name": seg.customer_name,
        "accounts": list(seg.accounts),
        "intent": cls.intent,
        "intent_scores": cls.intent_scores,
        "hard_complaint": cls.hard,
        "hard_score": cls.hard_score,
        "hard_threshold": cls.hard_threshold,
        "language": cls.language,
        "normalised": cls.normalised,  # the text as the signals read it (normal form, roots in brackets)
        "model": output_json(cls.model),  # None: the signals alone decided
        "signals": [
            {"name": s.name, "group": s.group, "weight": s.weight, "matched": list(s.matched)} for s in cls.signals
        ],
        "rule": dec.rule,
        "rules": list(dec.rules),
        "reference": dec.reference,
        "actions": [o.describe() for o in routing.outgoing],
        "suppressed": [s.describe() for s in routing.suppressed],
        "failed": [f.describe() for f in routing.failed],
        "attachments": [
            {"filename": a.filename, "content_type": a.content_type, "size": a.size} for a in view.attachments
        ],
        "defects": list(view.defects),
        "config_version": config_version,
        **extra,
    }


def as_text(routing: Routing, file: str, memory: Memory | None = None, now: datetime | None = None) -> str:
    """The trace for people; with the memory it was routed over (and the moment it was routed at), if given."""
    view, seg, cls, dec = routing.view, routing.segmentation, routing.classification, routing.decision
    sender = view.sender.address if view.sender else f"(none: {view.sender_problem})"
    lines = [
        f"== {file}",
        f"  from:       {sender}",
        f"  subject:    {view.subject or '(no subject)'}",
        f"  segment:    {seg.segment}  <- {seg.source}: {seg.detail}",
        f"  intent:     {cls.intent}  (" + ", ".join(f"{k} {v:g}" for k, v in cls.intent_scores.items()) + ")",
        f"  hard:       {'YES' if cls.hard else 'no'}  (score {cls.hard_score:g} / threshold {cls.hard_threshold:g})",
        f"  language:   {cls.language}",
        f"  normalised: {cls.normalised}",
    ]
    for hit in cls.signals:
        lines.append(f"  signal:     {hit.name} [{hit.group}] +{hit.weight:g}: {', '.join(hit.matched)}")
    lines.extend(f"  {label + ':':<12}{text}" for label, text in output_rows(cls.model, cls.intent))
    if view.quoted:
        lines.append(f"  quoted:     {len(view.quoted.splitlines())} line(s) of history ignored")
    if view.attachments:
        lines.append(
            "  attached:   " + ", ".join(f"{a.filename or '(unnamed)'} ({a.content_type})" for a in view.attachments)
        )
    for defect in view.defects:
        lines.append(f"  defect:     {defect}")
    if memory is not None and now is not None:
        lines.extend(memory_lines(memory, now))
    lines.append(f"  rule:       {dec.rule}")
    for o in routing.outgoing:
        lines.append(f"  -> {o.action.type:<9} to {', '.join(o.to)}: {o.subject}")
    for skipped in routing.suppressed:
        lines.append(f"  -x {skipped.type:<9} suppressed: {skipped.reason}")
    for failed in failure_lines(routing):
        lines.append(f"  !! {failed}")
    return "\n".join(lines)
