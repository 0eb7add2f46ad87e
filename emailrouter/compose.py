"""Decision -> EmailMessage objects. Pure: nothing is sent here.

Every outgoing message explains itself to the agent who reads it: a summary on top (segment and
why, intent, hard complaint and the signals that fired, rule id, customer), the original attached
whole. No header ever carries a CR or LF that came from customer input: every header value goes
through `clean_line`, and `assert_safe_headers` checks the finished message (the Python on the
machine may predate the standard library's own guard).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from email.generator import BytesGenerator, Generator
from email.headerregistry import Address
from email.message import EmailMessage, Message
from email.policy import SMTP
from email.utils import format_datetime

from emailrouter.errors import ComposeError
from emailrouter.model import (
    Action,
    Classification,
    Decision,
    Escalate,
    Forward,
    MessageView,
    OpenTicket,
    Outgoing,
    Reply,
    RouterIdentity,
    Segmentation,
    Suppressed,
    Unit,
)
from emailrouter.parse import clean_line
from emailrouter.templates import TemplateSet, reply_context

# CRLF line endings, ready for the wire. Lines up to RFC 5322's hard limit of 998: Python 3.11's folder
# moves a whole unstructured header to a continuation line (a leading space agents would see), and
# short body lines would force quoted-printable on plain text.
POLICY = SMTP.clone(max_line_length=998)
MAX_NAME = 120
MAX_SUBJECT = 200
MAX_REFERENCES = 10
EXCERPT_LINES = 25


@dataclass(frozen=True)
class Composer:
    """What composing needs from the config."""

    router: RouterIdentity
    units: dict[str, Unit]
    templates: TemplateSet


@dataclass(frozen=True)
class Case:
    """Everything known about one mail when it is time to compose."""

    view: MessageView
    segmentation: Segmentation
    classification: Classification
    decision: Decision
    now: datetime


def _subject(view: MessageView) -> str:
    subject = clean_line(view.subject)
    return (subject[:MAX_SUBJECT] + "…") if len(subject) > MAX_SUBJECT else subject or "(no subject)"


def _tags(case: Case) -> str:
    hard = "[HARD]" if case.classification.hard else ""
    return f"[{case.segmentation.segment}]{hard}"


def message_id(case: Case, index: int, action: Action, router: RouterIdentity) -> str:
    """Deterministic: the same mail, rule and action always get the same Message-ID."""
    key = f"{case.decision.reference}\0{case.decision.rule}\0{index}\0{action!r}".encode()
    return f"<er.{hashlib.sha256(key).hexdigest()[:24]}.{action.type}@{router.domain}>"


def _customer(view: MessageView) -> str:
    if view.sender is None:
        return f"(no usable sender: {view.sender_problem})"
    name = view.sender.name
    return f"{name} <{view.sender.address}>" if name else view.sender.address


def _signals_lines(cls: Classification, group: str | None = None) -> list[str]:
    lines = []
    for hit in cls.signals:
        if group is None or hit.group == group:
            lines.append(f"  - {hit.name} [{hit.group}] +{hit.weight:g}: {', '.join(hit.matched)}")
    return lines or ["  (none)"]


def summary(case: Case, units: dict[str, Unit], headline: str) -> str:
    """The explanation every message to agents starts with."""
    view, seg, cls, dec = case.view, case.segmentation, case.classification, case.decision
    scores = ", ".join(f"{k} {v:g}" for k, v in cls.intent_scores.items())
    hard = "YES" if cls.hard else "no"
    lines = [
        headline,
        "",
        f"Customer:        {_customer(view)}",
        f"Customer name:   {seg.customer_name or '(not in the directory)'}",
        f"Segment:         {seg.segment} ({seg.source}: {seg.detail})",
        f"Intent:          {cls.intent} (scores: {scores})",
        f"Hard complaint:  {hard} (score {cls.hard_score:g}, threshold {cls.hard_threshold:g})",
        f"Language:        {'English' if cls.language == 'en' else 'Indonesian'}",
        f"Rule:            {dec.rule}",
        f"Reference:       {dec.reference}",
        f"Accounts found:  {', '.join(seg.accounts) or '(none)'}",
        "Signals:",
        *_signals_lines(cls),
        "Everything the rule does:",
        *[f"  - {_plain_action(a, units)}" for a in dec.actions],
    ]
    if view.attachments:
        lines.append("Attachments:")
        lines.extend(f"  - {a.filename or '(unnamed)'} ({a.content_type}, {a.size:,} bytes)" for a in view.attachments)
    if view.defects:
        lines.append(f"Parser notes:    {'; '.join(view.defects[:5])}")
    excerpt = view.text.splitlines()[:EXCERPT_LINES]
    lines += ["", "--- What the customer wrote (the original is attached) ---", *excerpt]
    if len(view.text.splitlines()) > EXCERPT_LINES:
        lines.append("[…]")
    return "\n".join(lines) + "\n"


def _plain_action(action: Action, units: dict[str, Unit]) -> str:
    if isinstance(action, Reply):
        return f"auto-reply to the customer ({action.template})"
    unit = units[action.unit]
    verb = {"forward": "forward to", "escalate": "escalate to", "ticket": "open a ticket via"}[action.type]
    return f"{verb} {unit.name['en']} <{unit.address}>"


def _new(case: Case, index: int, action: Action, router: RouterIdentity, to: Address, subject: str) -> EmailMessage:
    msg = EmailMessage(policy=POLICY)
    msg["From"] = Address(clean_line(router.name), addr_spec=router.address)
    msg["To"] = to
    msg["Subject"] = clean_line(subject)
    msg["Date"] = format_datetime(case.now)
    msg["Message-ID"] = message_id(case, index, action, router)
    return msg


def _unit_address(unit: Unit) -> Address:
    return Address(clean_line(unit.name["en"]), addr_spec=unit.address)


def _customer_address(case: Case) -> Address | None:
    sender = case.view.sender
    return Address(clean_line(sender.name)[:MAX_NAME], addr_spec=sender.address) if sender else None


def _agent_headers(msg: EmailMessage, case: Case) -> None:
    msg["X-EmailRouter-Rule"] = clean_line(case.decision.rule)
    msg["X-EmailRouter-Segment"] = case.segmentation.segment
    msg["X-EmailRouter-Intent"] = case.classification.intent
    msg["X-EmailRouter-Hard"] = "yes" if case.classification.hard else "no"
    msg["X-EmailRouter-Reference"] = case.decision.reference
    if case.view.message_id:
        msg["References"] = clean_line(case.view.message_id)
    if (reply_to := _customer_address(case)) is not None:
        msg["Reply-To"] = reply_to


class RawOriginal(Message):
    """An attached message that generates as exactly the bytes it was given.

    The standard library generator asks each message object whether it writes its own headers
    (`_write_headers(generator)`, see email.generator.Generator._write); this one writes the whole
    original there, and has no payload of its own. Re-generating a parsed copy instead would re-fold
    headers and re-encode parts: agents and ticketing must see what the customer sent.
    """

    def __init__(self, raw: bytes) -> None:
        super().__init__(policy=POLICY)
        self.raw = raw

    def _write_headers(self, generator: Generator) -> None:
        fp = generator._fp  # type: ignore[attr-defined]
        fp.write(self.raw if isinstance(generator, BytesGenerator) else self.raw.decode("ascii", "surrogateescape"))


def attach_original(msg: EmailMessage, raw: bytes) -> None:
    """Attach the incoming mail byte for byte (line endings normalised to CRLF) as message/rfc822."""
    part = EmailMessage(policy=POLICY)
    part["Content-Type"] = "message/rfc822"
    part["Content-Disposition"] = 'attachment; filename="original.eml"'
    part["Content-Transfer-Encoding"] = "7bit" if raw.isascii() else "8bit"
    normalised = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    part.set_payload([RawOriginal(normalised)])
    if msg.get_content_type() != "multipart/mixed":
        msg.make_mixed()
    msg.attach(part)


def compose_forward(case: Case, index: int, action: Forward, c: Composer) -> EmailMessage:
    unit = c.units[action.unit]
    subject = f"{_tags(case)} {_subject(case.view)}"
    msg = _new(case, index, action, c.router, _unit_address(unit), subject)
    _agent_headers(msg, case)
    headline = (
        f"emailrouter forwarded this customer mail to {unit.name['en']} "
        f"(rule {case.decision.rule}). Reply to this mail to answer the customer."
    )
    msg.set_content(summary(case, c.units, headline))
    attach_original(msg, case.view.raw)
    return msg


def compose_escalation(case: Case, index: int, action: Escalate, c: Composer) -> EmailMessage:
    unit = c.units[action.unit]
    cls = case.classification
    subject = f"[ESCALATION]{_tags(case)} {_subject(case.view)}"
    msg = _new(case, index, action, c.router, _unit_address(unit), subject)
    _agent_headers(msg, case)
    why = [
        f"ESCALATION (rule {case.decision.rule}): a {case.segmentation.segment} customer mail is a hard complaint.",
        f"Why it is hard: score {cls.hard_score:g} reached the threshold {cls.hard_threshold:g} with:",
        *_signals_lines(cls, "hard"),
        "",
    ]
    handled = [a for a in case.decision.actions if isinstance(a, Forward)]
    if handled:
        why.append("The mail itself went to: " + ", ".join(c.units[a.unit].name["en"] for a in handled) + ".")
    headline = "\n".join(why)
    msg.set_content(summary(case, c.units, headline))
    attach_original(msg, case.view.raw)
    return msg


def ticket_fields(case: Case) -> dict[str, object]:
    view, seg, cls = case.view, case.segmentation, case.classification
    return {
        "reference": case.decision.reference,
        "segment": seg.segment,
        "segment_source": seg.source,
        "customer_address": view.sender.address if view.sender else None,
        "customer_display_name": view.sender.name if view.sender else None,
        "customer_name": seg.customer_name,
        "accounts": list(seg.accounts),
        "intent": cls.intent,
        "hard_complaint": cls.hard,
        "subject": view.subject,
        "received_date": view.date,
        "message_id": view.message_id,
        "rule": case.decision.rule,
        "summary": view.text[:2000],
    }


def compose_ticket(case: Case, index: int, action: OpenTicket, c: Composer) -> EmailMessage:
    unit = c.units[action.unit]
    fields = ticket_fields(case)
    subject = f"[TICKET {case.decision.reference}]{_tags(case)} {_subject(case.view)}"
    msg = _new(case, index, action, c.router, _unit_address(unit), subject)
    _agent_headers(msg, case)
    lines = [f"Trouble ticket request {case.decision.reference} (rule {case.decision.rule})", ""]
    for key, value in fields.items():
        if key == "summary":
            continue
        shown = ", ".join(str(v) for v in value) if isinstance(value, list) else ("" if value is None else value)
        lines.append(f"{key.replace('_', ' ').capitalize() + ':':<24}{shown}")
    headline = "\n".join(lines) + "\n\nThe customer has been sent this reference number."
    msg.set_content(summary(case, c.units, headline))
    msg.add_attachment(
        json.dumps(fields, ensure_ascii=False, indent=2).encode(),
        maintype="application",
        subtype="json",
        filename="ticket.json",
    )
    attach_original(msg, case.view.raw)
    return msg


def compose_reply(case: Case, index: int, action: Reply, c: Composer) -> EmailMessage:
    view = case.view
    assert view.sender is not None  # compose() suppresses replies without a sender
    lang = case.classification.language
    unit = c.units[action.unit] if action.unit else None
    context = reply_context(
        router=c.router,
        language=lang,
        customer_name=view.sender.name or case.segmentation.customer_name,
        customer_address=view.sender.address,
        original_subject=_subject(view),
        unit=unit,
        reference=case.decision.reference,
        segment=case.segmentation.segment,
    )
    rendered = c.templates.render(action.template, lang, context)
    to = _customer_address(case)
    assert to is not None
    msg = _new(case, index, action, c.router, to, rendered.subject)
    if view.message_id:
        msg["In-Reply-To"] = clean_line(view.message_id)
        refs = [*view.references[-(MAX_REFERENCES - 1) :], view.message_id]
        msg["References"] = clean_line(" ".join(dict.fromkeys(refs)))
    msg["Auto-Submitted"] = "auto-replied"
    msg["X-Auto-Response-Suppress"] = "All"
    msg["X-EmailRouter-Reference"] = case.decision.reference
    msg.set_content(rendered.body)
    msg["Content-Language"] = lang  # after set_content, which clears Content-* headers
    return msg


def assert_safe_headers(msg: EmailMessage) -> None:
    """No header value may contain CR or LF (checked on every part)."""
    for part in msg.walk():
        for name, value in part.raw_items():
            text = str(value)
            if "\r" in text or "\n" in text or "\r" in name or "\n" in name:
                raise ComposeError(f"header {name!r} would contain CR/LF")


def compose(case: Case, composer: Composer) -> tuple[list[Outgoing], list[Suppressed]]:
    """Build one message per planned action. Replies without a usable sender are suppressed."""
    out: list[Outgoing] = []
    suppressed: list[Suppressed] = []
    for index, action in enumerate(case.decision.actions):
        msg: EmailMessage
        if isinstance(action, Reply):
            if case.view.sender is None:
                suppressed.append(Suppressed(action, f"no usable sender address: {case.view.sender_problem}"))
                continue
            msg = compose_reply(case, index, action, composer)
        elif isinstance(action, Forward):
            msg = compose_forward(case, index, action, composer)
        elif isinstance(action, Escalate):
            msg = compose_escalation(case, index, action, composer)
        else:
            msg = compose_ticket(case, index, action, composer)
        assert_safe_headers(msg)
        out.append(Outgoing(action, msg))
    return out, suppressed
