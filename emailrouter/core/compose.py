"""Decision -> EmailMessage objects. Pure: nothing is sent here.

Every outgoing message explains itself to the agent who reads it: a summary on top (segment and
why, intent, hard complaint and the signals that fired, rule id, customer), the original attached
whole. No header ever carries a CR or LF that came from customer input: every header value goes
through `clean_line`, and `assert_safe_headers` checks the finished message (the Python on the
machine may predate the standard library's own guard).

A reply whose template fails on this mail does not take the rest of the plan with it: `compose` returns
the other messages and a `RenderFailure` for the reply, and `compose_render_failure_notice` tells the
failure unit.

Over 400 lines: one builder per action (forward, escalation, ticket, reply, and the webhook call of a
unit with an endpoint) and per notice (failure, render failure, quarantine, report), all over the same
summary and header helpers; split apart they would each need those helpers back.
"""

from __future__ import annotations

import functools
import itertools
import json
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime
from typing import assert_never

from emailrouter.core import mime
from emailrouter.core.combine import hard_summary, hard_why, output_rows
from emailrouter.core.errors import ComposeError
from emailrouter.core.ids import WEBHOOK, idempotency_key, our_message_id
from emailrouter.core.model import (
    Action,
    Classification,
    Decision,
    Escalate,
    Forward,
    MessageView,
    OpenTicket,
    Outgoing,
    Record,
    RenderFailure,
    Reply,
    RouterIdentity,
    Segmentation,
    Suppressed,
    Unit,
    WebhookCall,
)
from emailrouter.core.parse import clean_line
from emailrouter.core.templates import TemplateSet, reply_context
from emailrouter.core.webhook import render_body

MAX_SUBJECT = 200
MAX_REFERENCES = 10
EXCERPT_LINES = 25
EXCERPT_BYTES = 4096  # of UTF-8: a 10 MB one-line mail must not make a 10 MB summary


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


_date = functools.lru_cache(maxsize=64)(format_datetime)  # every message composed for a mail has its date
_shown = functools.lru_cache(maxsize=1024)(repr)  # of an action (the table's actions serve every mail)


def message_id(case: Case, index: int, action: Action, router: RouterIdentity) -> str:
    """Deterministic: the same mail, rule and action always get the same Message-ID."""
    seed = f"{case.decision.reference}\0{case.decision.rule}\0{index}\0{_shown(action)}"
    return our_message_id(seed, action.type, router.domain)


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


# the case being composed, with its units and the summary after the headline (a forward and an escalation of
# one mail share it); held by reference, so an identical object is this very case; compose() forgets it
_last_summary: list[tuple[Case, dict[str, Unit], str]] = []


def summary(case: Case, units: dict[str, Unit], headline: str) -> str:
    """The explanation every message to agents starts with."""
    if _last_summary and _last_summary[0][0] is case and _last_summary[0][1] is units:
        return headline + _last_summary[0][2]
    rest = _summary_rest(case, units)
    _last_summary[:] = [(case, units, rest)]
    return headline + rest


def _summary_rest(case: Case, units: dict[str, Unit]) -> str:
    """The summary after its headline."""
    view, seg, cls, dec = case.view, case.segmentation, case.classification, case.decision
    scores = ", ".join(f"{k} {v:g}" for k, v in cls.intent_scores.items())
    lines = [
        "",
        "",
        f"Customer:        {_customer(view)}",
        f"Customer name:   {seg.customer_name or '(not in the directory)'}",
        f"Segment:         {seg.segment} ({seg.source}: {seg.detail})",
        f"Intent:          {cls.intent} (scores: {scores})",
        f"Hard complaint:  {hard_summary(cls)}",
        f"Language:        {'English' if cls.language == 'en' else 'Indonesian'}",
        f"Rule:            {dec.rule}",
        f"Reference:       {dec.reference}",
        f"Accounts found:  {', '.join(seg.accounts) or '(none)'}",
        "Signals:",
        *_signals_lines(cls),
        *[f"{label.capitalize() + ':':<17}{text}" for label, text in output_rows(cls.model, cls.intent)],
        "Everything the rule does:",
        *[f"  - {_plain_action(a, units)}" for a in dec.actions],
    ]
    if view.attachments:
        lines.append("Attachments:")
        lines.extend(f"  - {a.filename or '(unnamed)'} ({a.content_type}, {a.size:,} bytes)" for a in view.attachments)
    if view.defects:
        lines.append(f"Parser notes:    {'; '.join(view.defects[:5])}")
    lines += ["", "--- What the customer wrote (the original is attached) ---", *excerpt(view.text)]
    return "\n".join(lines) + "\n"


def excerpt(text: str, max_lines: int = EXCERPT_LINES, max_bytes: int = EXCERPT_BYTES) -> list[str]:
    """The start of what the customer wrote: at most `max_lines` lines and `max_bytes` bytes of UTF-8, cut at a
    character boundary; when that is not all of it, a last line says how many bytes more the original holds."""
    head = text[: max_bytes + 1]  # a character is at least one byte: the excerpt lies within this
    head_lines = head.splitlines()
    shown = "\n".join(head_lines[:max_lines])
    data = shown.encode("utf-8", "surrogatepass")
    cut = len(data) > max_bytes or len(head_lines) > max_lines or len(text) > len(head)
    if len(data) > max_bytes:
        data = data[:max_bytes].decode("utf-8", "ignore").encode("utf-8")  # drops the character cut in half
        shown = data.decode("utf-8")
    lines = shown.splitlines()
    if cut:
        rest = max(len(text.encode("utf-8", "surrogatepass")) - len(data), 1)
        lines.append(f"[… {rest:,} more {'byte' if rest == 1 else 'bytes'} in the attached original]")
    return lines


def _plain_action(action: Action, units: dict[str, Unit]) -> str:
    if isinstance(action, Reply):
        return f"auto-reply to the customer ({action.template})"
    if isinstance(action, Record):
        return action.describe()
    unit = units[action.unit]
    verb = {"forward": "forward to", "escalate": "escalate to", "ticket": "open a ticket via"}[action.type]
    where = [f"<{unit.address}>"] if unit.address else []
    if unit.webhook is not None:
        where.append(f"(POST {unit.webhook.url})")
    return f"{verb} {unit.name['en']} {' '.join(where)}"


def _base_headers(
    case: Case,
    index: int,
    action: Action,
    router: RouterIdentity,
    to: str,
    subject: str,
    more: list[tuple[str, str]] | None = None,
) -> EmailMessage:
    """A new message with From, To, Subject, Date and Message-ID, then the headers in `more`."""
    return mime.new(
        [
            ("From", mime.address(router.name, router.address)),
            ("To", to),
            ("Subject", mime.text(subject)),
            ("Date", _date(case.now)),
            ("Message-ID", message_id(case, index, action, router)),
            *(more or ()),
        ]
    )


def _unit_address(unit: Unit) -> str:
    return mime.address(unit.name["en"], unit.address)


def _customer_address(case: Case) -> str | None:
    sender = case.view.sender
    return mime.address(sender.name, sender.address) if sender else None


def _agent_message(case: Case, index: int, action: Action, c: Composer, unit: Unit, subject: str) -> EmailMessage:
    """A message to agents: tagged headers they can filter on, Reply-To the customer."""
    more = [
        ("X-EmailRouter-Rule", mime.text(case.decision.rule)),
        ("X-EmailRouter-Segment", case.segmentation.segment),
        ("X-EmailRouter-Intent", case.classification.intent),
        ("X-EmailRouter-Hard", "yes" if case.classification.hard else "no"),
        ("X-EmailRouter-Reference", case.decision.reference),
    ]
    if case.view.message_id:
        more.append(("References", clean_line(case.view.message_id)))
    if (reply_to := _customer_address(case)) is not None:
        more.append(("Reply-To", reply_to))
    return _base_headers(case, index, action, c.router, _unit_address(unit), subject, more)


def compose_forward(case: Case, index: int, action: Forward, c: Composer) -> tuple[EmailMessage, str]:
    unit = c.units[action.unit]
    subject = f"{_tags(case)} {_subject(case.view)}"
    msg = _agent_message(case, index, action, c, unit, subject)
    answer = (
        "Reply to this mail to answer the customer."
        if case.view.sender is not None
        else f"It has no usable sender address ({case.view.sender_problem}): there is no one to reply to;"
        " see the original attached."
    )
    headline = f"emailrouter forwarded this customer mail to {unit.name['en']} (rule {case.decision.rule}). {answer}"
    mime.mixed(msg, [mime.text_part(summary(case, c.units, headline)), mime.message_part(case.view.raw)])
    return msg, subject


def compose_escalation(case: Case, index: int, action: Escalate, c: Composer) -> tuple[EmailMessage, str]:
    unit = c.units[action.unit]
    cls = case.classification
    subject = f"[ESCALATION]{_tags(case)} {_subject(case.view)}"
    msg = _agent_message(case, index, action, c, unit, subject)
    segment = case.segmentation.segment
    because, model_part = hard_why(cls)  # what decided: the signals' score, or the model with the signals
    why = [
        f"ESCALATION (rule {case.decision.rule}): a {segment} customer mail is a hard complaint.",
        because,
        *_signals_lines(cls, "hard"),
        *([model_part] if model_part else []),
        "",
    ]
    handled = [c.units[a.unit].name["en"] for a in case.decision.actions if isinstance(a, Forward)]
    if handled:
        why.append("The mail itself went to: " + ", ".join(handled) + ".")
    body = summary(case, c.units, "\n".join(why))
    mime.mixed(msg, [mime.text_part(body), mime.message_part(case.view.raw)])
    return msg, subject


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


def indented_json(fields: dict[str, object]) -> str:
    """`json.dumps(fields, ensure_ascii=False, indent=2)` for a flat mapping (values: strings, numbers, booleans,
    None, lists of those), each value encoded at C speed (with `indent` json runs its encoder in Python)."""
    if not fields:
        return "{}"
    items = []
    for key, value in fields.items():
        if isinstance(value, list) and value:
            shown = "[\n" + ",\n".join("    " + json.dumps(v, ensure_ascii=False) for v in value) + "\n  ]"
        else:
            shown = json.dumps(value, ensure_ascii=False)
        items.append(f"  {json.dumps(key, ensure_ascii=False)}: {shown}")
    return "{\n" + ",\n".join(items) + "\n}"


def _field_text(value: object) -> str:
    """A ticket field as the text part shows it, in the words of the summary below it (yes/no, (none))."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "(none)"
    return "(none)" if value is None or value == "" else str(value)


def compose_ticket(case: Case, index: int, action: OpenTicket, c: Composer) -> tuple[EmailMessage, str]:
    unit = c.units[action.unit]
    fields = ticket_fields(case)
    subject = f"[TICKET {case.decision.reference}]{_tags(case)} {_subject(case.view)}"
    msg = _agent_message(case, index, action, c, unit, subject)
    lines = [f"Trouble ticket request {case.decision.reference} (rule {case.decision.rule})", ""]
    for key, value in fields.items():
        if key == "summary":
            continue
        lines.append(f"{key.replace('_', ' ').capitalize() + ':':<24}{_field_text(value)}")
    told = (
        "The customer has been sent this reference number."
        if any(isinstance(a, Reply) for a in case.decision.actions) and case.view.sender is not None
        else "No reply went to the customer with this reference number."
    )
    headline = "\n".join(lines) + "\n\n" + told
    ticket_json = indented_json(fields).encode()
    mime.mixed(
        msg,
        [
            mime.text_part(summary(case, c.units, headline)),
            mime.file_part(ticket_json, "application/json", "ticket.json"),
            mime.message_part(case.view.raw),
        ],
    )
    return msg, subject


def webhook_context(case: Case, action: Forward | Escalate | OpenTicket, unit: Unit) -> dict[str, object]:
    """Everything a webhook body template may use: the ticket fields, what is asked of the unit, and a one-line
    `headline` for a chat group. Customer text is only ever data here (`tojson` writes it as a JSON string)."""
    fields = ticket_fields(case)
    verb = {"forward": "Forwarded", "escalate": "ESCALATION", "ticket": "Ticket request"}[action.type]
    hard = " [HARD]" if case.classification.hard else ""
    customer = fields["customer_address"] or "(no usable sender)"
    return {
        **fields,
        "action": action.type,
        "unit": {"key": unit.key, "name": unit.name["en"]},
        "language": case.classification.language,
        "headline": f"{verb} {case.decision.reference} [{case.segmentation.segment}]{hard}"
        f" {case.classification.intent} from {customer}: {_subject(case.view)}",
    }


def call_identity(case: Case, index: int, action: Forward | Escalate | OpenTicket, c: Composer) -> str:
    """The identity of an action's webhook call (its Idempotency-Key derives from it), as for a Message-ID."""
    seed = f"{case.decision.reference}\0{case.decision.rule}\0{index}\0{_shown(action)}\0{WEBHOOK}"
    return our_message_id(seed, WEBHOOK, c.router.domain)


def compose_call(case: Case, index: int, action: Forward | Escalate | OpenTicket, c: Composer) -> Outgoing:
    """The POST to a unit's endpoint for this action: its JSON body rendered from the unit's template, its
    identity (and so its Idempotency-Key) as deterministic as a Message-ID."""
    unit = c.units[action.unit]
    assert unit.webhook is not None
    identity = call_identity(case, index, action, c)
    body = render_body(unit.webhook, webhook_context(case, action, unit))
    call = WebhookCall(unit.webhook.url, body, idempotency_key(identity))
    subject = f"POST {len(body):,} bytes of JSON ({action.type} {case.decision.reference})"
    return Outgoing(action, None, (unit.webhook.url,), subject, identity, call)


def compose_reply(case: Case, index: int, action: Reply, c: Composer) -> tuple[EmailMessage, str]:
    view = case.view
    to = _customer_address(case)
    assert view.sender is not None and to is not None  # compose() suppresses replies without a sender
    lang = case.classification.language
    context = reply_context(
        router=c.router,
        language=lang,
        customer_name=view.sender.name or case.segmentation.customer_name,
        customer_address=view.sender.address,
        original_subject=_subject(view),
        unit=c.units[action.unit] if action.unit else None,
        reference=case.decision.reference,
        segment=case.segmentation.segment,
    )
    rendered = c.templates.render(action.template, lang, context)
    more: list[tuple[str, str]] = []
    if view.message_id:
        refs = [*view.references[-(MAX_REFERENCES - 1) :], view.message_id]
        more.append(("In-Reply-To", clean_line(view.message_id)))
        more.append(("References", clean_line(" ".join(dict.fromkeys(refs)))))
    more += [
        ("Auto-Submitted", "auto-replied"),  # RFC 3834: robots must not answer this
        ("Precedence", "bulk"),
        ("X-Loop", c.router.address),  # if this comes back to us, the guard knows it
        ("X-Auto-Response-Suppress", "All"),
        ("X-EmailRouter-Reference", case.decision.reference),
        ("Content-Language", lang),
    ]
    msg = _base_headers(case, index, action, c.router, to, rendered.subject, more)
    mime.single(msg, rendered.body)
    return msg, rendered.subject


def _compose_to_unit(
    case: Case, index: int, action: Forward | Escalate | OpenTicket, c: Composer
) -> tuple[EmailMessage, str]:
    if isinstance(action, Forward):
        return compose_forward(case, index, action, c)
    if isinstance(action, Escalate):
        return compose_escalation(case, index, action, c)
    return compose_ticket(case, index, action, c)


def assert_safe_headers(msg: EmailMessage) -> None:
    """No header value may contain CR or LF, or raw non-ASCII (checked on every part)."""
    parts = list(msg.walk())
    headers = itertools.chain.from_iterable(part.raw_items() for part in parts if isinstance(part, EmailMessage))
    try:
        every = "".join(itertools.chain.from_iterable(headers))
    except TypeError:  # a header object, not a string: see below
        every = "\n"
    if every.isascii() and "\r" not in every and "\n" not in every:
        return  # the usual case, in one pass; otherwise find the header to name
    for part in parts:
        for name, value in part.raw_items() if isinstance(part, EmailMessage) else ():
            text = str(value)
            if "\r" in text or "\n" in text or "\r" in name or "\n" in name:
                raise ComposeError(f"header {name!r} would contain CR/LF")
            if not text.isascii():
                raise ComposeError(f"header {name!r} would carry raw non-ASCII")


def compose(case: Case, composer: Composer) -> tuple[list[Outgoing], list[Suppressed], list[RenderFailure]]:
    """Build one message per planned action. Replies without a usable sender are suppressed; a reply that
    cannot be built (its template fails on this mail) is returned as a `RenderFailure`, and every other
    message is built all the same."""
    try:
        return _compose(case, composer)
    finally:
        _last_summary.clear()  # the mail is done with: its summary is not kept (nor the mail with it)


def _compose(case: Case, composer: Composer) -> tuple[list[Outgoing], list[Suppressed], list[RenderFailure]]:
    out: list[Outgoing] = []
    suppressed: list[Suppressed] = []
    failed: list[RenderFailure] = []
    for index, action in enumerate(case.decision.actions):
        msg: EmailMessage
        match action:  # every action of the registry (model.ACTIONS): mypy checks the match is exhaustive
            case Record():
                continue  # nothing to send
            case Reply():
                if case.view.sender is None:
                    suppressed.append(Suppressed(action.type, f"no usable sender address: {case.view.sender_problem}"))
                    continue
                try:
                    msg, subject = compose_reply(case, index, action, composer)
                    assert_safe_headers(msg)
                except ComposeError as exc:  # a template error (with file and line) or an unsafe header
                    lang = case.classification.language
                    mid = message_id(case, index, action, composer.router)
                    failed.append(RenderFailure(action, action.template, lang, str(exc), mid))
                    continue
                to = case.view.sender.address
            case Forward() | Escalate() | OpenTicket():
                unit = composer.units[action.unit]
                if unit.webhook is not None:
                    try:
                        out.append(compose_call(case, index, action, composer))
                    except ComposeError as exc:  # the body template fails on this mail: the rest goes ahead
                        identity = call_identity(case, index, action, composer)
                        lang = case.classification.language
                        failed.append(RenderFailure(action, f"{unit.key} webhook body", lang, str(exc), identity))
                if not unit.address:
                    continue  # an endpoint only
                msg, subject = _compose_to_unit(case, index, action, composer)
                to = unit.address
            case _:
                assert_never(action)
        assert_safe_headers(msg)
        out.append(Outgoing(action, msg, (to,), subject, str(msg["Message-ID"])))
    return out, suppressed, failed


def compose_failure_notice(
    router: RouterIdentity,
    unit: Unit,
    *,
    kind: str,
    recipients: list[str],
    error: str,
    undelivered: bytes,
    undelivered_id: str,
    now: datetime,
) -> EmailMessage:
    """Tell the human queue that a message could not be delivered; the undelivered message is attached."""
    seed = f"failure\0{undelivered_id}"
    msg = mime.new(
        [
            ("From", mime.address(router.name, router.address)),
            ("To", mime.address(unit.name["en"], unit.address)),
            ("Subject", mime.text(f"[DELIVERY FAILED] {kind} to {', '.join(recipients)}")),
            ("Date", format_datetime(now)),
            ("Message-ID", our_message_id(seed, "failure", router.domain)),
            ("Auto-Submitted", "auto-generated"),
        ]
    )
    body = (
        f"emailrouter could not deliver a {kind} to {', '.join(recipients)}.\n\n"
        f"The relay refused it permanently: {clean_line(error)}\n\n"
        "Nothing will be retried. The undelivered message is attached (for a forward, escalation or ticket\n"
        "it contains the customer's original mail): please handle the customer's mail by hand.\n"
    )
    mime.mixed(msg, [mime.text_part(body), mime.message_part(undelivered, "undelivered.eml")])
    return msg


def compose_render_failure_notice(
    router: RouterIdentity,
    unit: Unit,
    view: MessageView,
    failure: RenderFailure,
    *,
    rule: str,
    reference: str,
    now: datetime,
) -> EmailMessage:
    """Tell the failure unit that a customer got no reply (or a unit's endpoint no call) because its template
    failed on this mail.

    It names the mail (Message-ID, sender, subject), the rule, the template and the reason (file and line);
    Reply-To is the customer, so an agent can answer by hand. A call's notice carries the customer's mail:
    the endpoint may have been all its unit was to get. The Message-ID is derived from the reply's (or the
    call's), so composing the notice again for the same mail gives the same message."""
    target = getattr(failure.action, "unit", "")
    if failure.call:
        subject = f"[CALL NOT MADE] {failure.type} to {target}'s endpoint: {_subject(view)}"
        opening = [
            f"emailrouter did not make the {failure.type} call to the endpoint of unit {target}: its body",
            "template could not be rendered for this mail. Everything else the rule does (mail to units, the",
            "customer's reply) went ahead as planned. The customer's mail is attached: if the endpoint was all",
            f"{target} was to get, please pass it on by hand.",
        ]
        template = failure.template
        closing = [
            "Please fix the body template (`emailrouter check` renders it against sample mails, and",
            "`emailrouter explain` shows the failure for a saved copy of this mail).",
        ]
    else:
        subject = f"[REPLY NOT SENT] template {failure.template}: {_subject(view)}"
        opening = [
            "emailrouter did not send an automatic reply to a customer: its template could not be rendered",
            "for this mail. Everything else the rule does (forward, escalation, ticket) went ahead as planned.",
        ]
        template = f"{failure.template} ({'English' if failure.language == 'en' else 'Indonesian'})"
        closing = [
            "Please fix the template (`emailrouter check` renders every template against sample data, and",
            "`emailrouter explain` shows the failure for a saved copy of this mail), and answer the customer",
            "by hand if they need it: replying to this message writes to them.",
        ]
    seed = f"render-failure\0{failure.message_id}"
    headers = [
        ("From", mime.address(router.name, router.address)),
        ("To", mime.address(unit.name["en"], unit.address)),
        ("Subject", mime.text(subject)),
        ("Date", format_datetime(now)),
        ("Message-ID", our_message_id(seed, "failure", router.domain)),
        ("Auto-Submitted", "auto-generated"),
        ("X-EmailRouter-Rule", mime.text(rule)),
        ("X-EmailRouter-Reference", reference),
    ]
    if view.message_id:
        headers.append(("References", clean_line(view.message_id)))
    if view.sender is not None:
        headers.append(("Reply-To", mime.address(view.sender.name, view.sender.address)))
    msg = mime.new(headers)
    body = "\n".join(
        [
            *opening,
            "",
            f"Message-ID:  {clean_line(view.message_id or '(none)')}",
            f"Sender:      {_customer(view)}",
            f"Subject:     {_subject(view)}",
            f"Rule:        {rule}",
            f"Reference:   {reference}",
            f"Template:    {template}",
            f"Reason:      {clean_line(failure.reason)}",
            "",
            *closing,
            "",
        ]
    )
    if failure.call:
        mime.mixed(msg, [mime.text_part(body), mime.message_part(view.raw)])
    else:
        mime.single(msg, body)
    return msg


def compose_report(
    router: RouterIdentity, to: str, subject: str, body: str, now: datetime, html: str | None = None
) -> EmailMessage:
    """The daily report to a supervisor: plain text, readable in any mail client; with `html`,
    multipart/alternative of the text and the HTML page (the client shows the last part it can)."""
    seed = f"report\0{to}\0{subject}"
    msg = mime.new(
        [
            ("From", mime.address(router.name, router.address)),
            ("To", mime.address("", to)),
            ("Subject", mime.text(subject)),
            ("Date", format_datetime(now)),
            ("Message-ID", our_message_id(seed, "report", router.domain)),
            ("Auto-Submitted", "auto-generated"),
        ]
    )
    if html is None:
        mime.single(msg, body)
    else:
        mime.mixed(msg, [mime.text_part(body), mime.text_part(html, "html")], "alternative")
    return msg


def compose_quarantine_notice(
    router: RouterIdentity,
    unit: Unit,
    *,
    mailbox: str,
    uid: int,
    message_id: str | None,
    sender: str,
    subject: str,
    error: str,
    original: bytes | None,
    now: datetime,
) -> EmailMessage:
    """Tell the failure unit that a mail could not be handled at all (a stage broke on it): which mail, where
    it waits (flagged $Quarantined), why, and the original attached when it is not too large."""
    seed = f"quarantine\0{mailbox}\0{uid}\0{message_id}"
    msg = mime.new(
        [
            ("From", mime.address(router.name, router.address)),
            ("To", mime.address(unit.name["en"], unit.address)),
            ("Subject", mime.text(f"[QUARANTINED] mail from {clean_line(sender)[:200]}: {clean_line(subject)[:200]}")),
            ("Date", format_datetime(now)),
            ("Message-ID", our_message_id(seed, "failure", router.domain)),
            ("Auto-Submitted", "auto-generated"),
        ]
    )
    lines = [
        "emailrouter could not handle this mail: it was not answered, forwarded or escalated.",
        "",
        f"Mailbox:     {mailbox} (uid {uid}), flagged $Quarantined and left unread",
        f"Message-ID:  {clean_line(message_id or '(none)')}",
        f"From:        {clean_line(sender)}",
        f"Subject:     {clean_line(subject)}",
        f"Error:       {clean_line(error)}",
        "",
        "Please handle the customer's mail by hand. Once the cause is fixed, `emailrouter quarantine retry`",
        "takes it again.",
        "" if original is not None else "The original is too large to attach: it is in the mailbox.",
    ]
    body = "\n".join(lines) + "\n"
    if original is None:
        mime.single(msg, body)
    else:
        mime.mixed(msg, [mime.text_part(body), mime.message_part(original, "quarantined.eml")])
    return msg
