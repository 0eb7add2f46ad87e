"""Our Message-IDs: one format, made here and recognised here.

    <er.HASH.KIND@DOMAIN>     HASH: 24 hex digits of SHA-256 over what makes the message unique
                              KIND: forward, reply, escalate, ticket, failure, report, webhook
                              DOMAIN: the router's address's domain

A webhook call has an identity of the same form (KIND `webhook`), never a header of any mail: the outbox keys
it like a message and its `Idempotency-Key` header is made from it (`idempotency_key`).

Deterministic: the same mail, rule and action always get the same Message-ID, so a message sent again
after a crash is the same message to the receiving client, and the guard knows a reply to one of ours.
"""

from __future__ import annotations

import hashlib
import re

PREFIX = "er"
HASH_DIGITS = 24


def our_message_id(seed: str, kind: str, domain: str) -> str:
    """The Message-ID of one of our messages, from what makes it unique (`seed`) and its kind."""
    digest = hashlib.sha256(seed.encode()).hexdigest()[:HASH_DIGITS]
    return f"<{PREFIX}.{digest}.{kind}@{domain}>"


def is_our_message_id(message_id: str | None, domain: str) -> bool:
    """Whether `message_id` is one we made for `domain` (case-insensitive, as mail clients may fold it)."""
    if not message_id:
        return False
    pattern = rf"<{PREFIX}\.[0-9a-f]{{{HASH_DIGITS}}}\.\w+@{re.escape(domain)}>"
    return re.fullmatch(pattern, message_id, re.I) is not None


def kind_of(message_id: str) -> str | None:
    """The KIND part of one of our Message-IDs (`reply`, `forward`, ...), or None for anyone else's."""
    found = re.fullmatch(rf"<{PREFIX}\.[0-9a-f]{{{HASH_DIGITS}}}\.(\w+)@[^>]+>", message_id.strip(), re.I)
    return found.group(1).lower() if found else None


WEBHOOK = "webhook"  # the KIND of a webhook call's identity


def is_webhook(message_id: str) -> bool:
    """Whether an outbox entry with this identity is a webhook call (not a mail)."""
    return kind_of(message_id) == WEBHOOK


def idempotency_key(message_id: str) -> str:
    """The `Idempotency-Key` header of a webhook call: `er-HASH`, from the call's identity (so a call made again
    after a crash or a timeout carries the same key, and the endpoint can answer it once)."""
    found = re.fullmatch(rf"<{PREFIX}\.([0-9a-f]{{{HASH_DIGITS}}})\.\w+@[^>]+>", message_id.strip(), re.I)
    if found is None:
        raise ValueError(f"not one of our identities: {message_id!r}")
    return f"{PREFIX}-{found.group(1).lower()}"
