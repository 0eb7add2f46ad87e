"""Webhook calls, pure: the JSON body from a unit's template, the call as the outbox keeps it, the endpoint's
answer read for its own ticket number, and the customer's reply made to quote that number.

A call is committed to the outbox like a mail, as a small HTTP-like document:

    POST https://helpdesk.example/api/tickets
    Content-Type: application/json
    Idempotency-Key: er-0123456789abcdef01234567

    {"subject": "...", ...}

Its first lines are what the outbox keeps once it is sent (the audit); the body goes with the send. A
secret (the bearer token) is never part of it: the service reads it from its credential source when it
calls (service/webhook.py).
"""

from __future__ import annotations

import email
import email.policy
import json
import re
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

from emailrouter.core import mime
from emailrouter.core.errors import ComposeError
from emailrouter.core.ids import our_message_id
from emailrouter.core.model import RouterIdentity, Unit, Webhook, WebhookCall
from emailrouter.core.parse import clean_line

CONTENT_TYPE = "application/json"
TICKET_NUMBER = re.compile(r"[A-Za-z0-9][A-Za-z0-9#._:/-]{0,63}")  # what we quote to a customer of an answer
_KEPT_BACK = {b"subject", b"mime-version", b"content-type", b"content-transfer-encoding"}


def render_body(webhook: Webhook, context: dict[str, Any]) -> bytes:
    """The unit's template rendered over `context`, checked to be one JSON document, as compact UTF-8 JSON.
    A template that fails, or renders no JSON, raises ComposeError naming where it is configured."""
    try:
        text = webhook.render(context)
    except Exception as exc:  # ops' template code can fail in any way: say where, never crash the caller
        raise ComposeError(f"{webhook.source}: webhook body: {type(exc).__name__}: {exc}") from exc
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise ComposeError(f"{webhook.source}: webhook body is not JSON: {exc}") from None
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def request_bytes(call: WebhookCall) -> bytes:
    """The call as the outbox stores it (see the module's docstring)."""
    head = f"POST {call.url}\r\nContent-Type: {CONTENT_TYPE}\r\nIdempotency-Key: {call.idempotency_key}\r\n\r\n"
    return head.encode("ascii") + call.body


def parse_request(raw: bytes) -> WebhookCall:
    """The call back from what `request_bytes` wrote (ValueError for anything else)."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("ascii").split("\r\n")
    if not sep or not lines[0].startswith("POST "):
        raise ValueError("not a webhook call")
    fields = dict(line.split(": ", 1) for line in lines[1:])
    return WebhookCall(lines[0][len("POST ") :], body, fields["Idempotency-Key"])


def ticket_number(answer: bytes, path: tuple[str, ...]) -> str | None:
    """The endpoint's own ticket number at `path` in its JSON answer (keys, or list positions as digits):
    a string or integer that looks like a ticket number (TICKET_NUMBER); None otherwise (our reference
    is quoted instead)."""
    if not path:
        return None
    try:
        node: Any = json.loads(answer)
    except ValueError:
        return None
    for step in path:
        if isinstance(node, dict) and step in node:
            node = node[step]
        elif isinstance(node, list) and step.isdigit() and int(step) < len(node):
            node = node[int(step)]
        else:
            return None
    if isinstance(node, bool) or not isinstance(node, (str, int)):
        return None
    number = str(node)
    return number if TICKET_NUMBER.fullmatch(number) else None


def quote_remote_reference(raw: bytes, theirs: str) -> bytes:
    """A composed customer reply that quotes `theirs` (the ticket system's number) wherever it quoted our
    reference (its X-EmailRouter-Reference), in the subject and the text; the other headers (Message-ID too)
    stay as they were, and `X-EmailRouter-Ticket` names the number."""
    if not TICKET_NUMBER.fullmatch(theirs):
        raise ValueError(f"not a ticket number: {theirs!r}")
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    ours = str(msg.get("X-EmailRouter-Reference", "")).strip()
    if msg.is_multipart() or not ours:
        raise ValueError("not one of our replies: a single text part with X-EmailRouter-Reference")
    subject = str(msg.get("Subject", "")).replace(ours, theirs)
    body = msg.get_content().replace(ours, theirs)
    head_end = raw.find(b"\r\n\r\n")
    kept: list[bytes] = []
    keep = True
    for line in raw[:head_end].split(b"\r\n"):
        if line[:1] not in (b" ", b"\t"):
            keep = line.split(b":", 1)[0].strip().lower() not in _KEPT_BACK
        if keep:
            kept.append(line)
    added = [f"Subject: {mime.text(subject)}", f"X-EmailRouter-Ticket: {theirs}", "MIME-Version: 1.0"]
    part = mime.as_bytes(mime.text_part(body))
    return b"\r\n".join(kept + [a.encode("ascii") for a in added]) + b"\r\n" + part


def compose_webhook_failure_notice(
    router: RouterIdentity,
    unit: Unit,
    *,
    kind: str,
    request: bytes,
    call_id: str,
    error: str,
    now: datetime,
) -> EmailMessage:
    """Tell the failure unit that an endpoint refused a call for good: which unit, which URL, why; the JSON that
    was refused is attached (it carries the customer, the subject and what they wrote)."""
    call = parse_request(request)
    seed = f"failure\0{call_id}"
    msg = mime.new(
        [
            ("From", mime.address(router.name, router.address)),
            ("To", mime.address(unit.name["en"], unit.address)),
            ("Subject", mime.text(f"[DELIVERY FAILED] {kind} to {clean_line(call.url)[:200]}")),
            ("Date", format_datetime(now)),
            ("Message-ID", our_message_id(seed, "failure", router.domain)),
            ("Auto-Submitted", "auto-generated"),
        ]
    )
    body = (
        f"emailrouter could not deliver a {kind} to the endpoint {clean_line(call.url)}.\n\n"
        f"{clean_line(error)}\n\n"
        "Nothing will be retried. The refused JSON is attached (the customer, the subject and what they\n"
        "wrote): please handle the customer's mail by hand.\n"
    )
    mime.mixed(msg, [mime.text_part(body), mime.file_part(call.body, CONTENT_TYPE, "request.json")])
    return msg


def sample_webhook_contexts(unit: Unit, reference: str) -> list[tuple[str, dict[str, object]]]:
    """What `check` renders a webhook body with: (what the sample is, its context), the ordinary case first,
    then the awkward ones (no usable sender, a hard complaint with quotes and non-Latin text)."""
    ordinary: dict[str, object] = {
        "reference": reference,
        "segment": "DES",
        "segment_source": "directory-domain",
        "customer_address": "budi.santoso@example.co.id",
        "customer_display_name": "Budi Santoso",
        "customer_name": "PT Contoh",
        "accounts": ["4001234"],
        "intent": "fault",
        "hard_complaint": False,
        "subject": "Internet mati",
        "received_date": "Mon, 1 Dec 2026 08:00:00 +0700",
        "message_id": "<sample@example.co.id>",
        "rule": "sample-rule",
        "summary": "Internet mati sejak pagi.",
        "action": "ticket",
        "unit": {"key": unit.key, "name": unit.name["en"]},
        "language": "id",
        "headline": f"Ticket request {reference} [DES] fault from budi.santoso@example.co.id: Internet mati",
    }
    nobody = {
        **ordinary,
        "customer_address": None,
        "customer_display_name": None,
        "customer_name": None,
        "accounts": [],
        "received_date": None,
        "message_id": None,
    }
    awkward = {
        **ordinary,
        "hard_complaint": True,
        "subject": '"Lagi" — 网络中断\\',
        "summary": '</a>\n{{ x }}\t"',
        "action": "escalate",
    }
    return [
        ("the ordinary sample", ordinary),
        ("a mail without a usable sender", nobody),
        ("a hard complaint with quotes and non-Latin text", awkward),
    ]
