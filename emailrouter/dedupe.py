"""When is a mail a duplicate of one already handled? Pure.

A Message-ID alone can be reused by anyone: a duplicate is a mail with the same Message-ID *and* the
same content. The content hash covers what the sender wrote (From, To, Cc, Subject, Date and the body,
line endings and trailing white space normalised), not what each delivery adds (Received,
Delivered-To, Return-Path, our own keywords), so the same mail delivered to two mailboxes is one mail.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

# the headers that belong to what the sender wrote; every delivery path keeps them as they are
_CONTENT_HEADERS = frozenset({b"from", b"to", b"cc", b"subject", b"date", b"message-id", b"content-type"})
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_FOLD = re.compile(rb"\r?\n[ \t]+")
_SPACE = re.compile(rb"[ \t]+")
_LINE_END = re.compile(rb"[ \t]*\r?\n")


def bytes_hash(raw: bytes) -> str:
    """The identity of a mail without a Message-ID: its bytes."""
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def content_hash(raw: bytes) -> str:
    """sha256 over the sender's own headers and the body; the same for every copy of one mail."""
    m = _HEADER_END.search(raw)
    head, body = (raw[: m.start()], raw[m.end() :]) if m else (raw, b"")
    digest = hashlib.sha256()
    fields = []
    for line in _FOLD.sub(b" ", head).splitlines():
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() in _CONTENT_HEADERS:
            fields.append(name.strip().lower() + b":" + _SPACE.sub(b" ", value.strip()))
    for header in sorted(fields):
        digest.update(header + b"\n")
    digest.update(b"\n")
    digest.update(_LINE_END.sub(b"\n", body).rstrip(b" \t\r\n"))
    return "sha256:" + digest.hexdigest()


def duplicate_of(content: str, earlier: Iterable[tuple[str, str | None]]) -> str | None:
    """The key of the first earlier mail (key, content hash) with the same content, if any. An earlier
    record without a hash (written before hashes were kept) counts as the same: nothing is handled twice."""
    for key, other in earlier:
        if other is None or other == content:
            return key
    return None
