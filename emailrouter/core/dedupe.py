"""When is a mail a duplicate of one already handled? Pure.

A Message-ID alone can be reused by anyone: a duplicate is a mail with the same Message-ID *and* the
same content. The content hash covers what the sender wrote (From, To, Cc, Subject, Date and the body,
line endings and trailing white space normalised), not what each delivery adds (Received,
Delivered-To, Return-Path, our own keywords), so the same mail delivered to two mailboxes is one mail.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator

# the headers that belong to what the sender wrote; every delivery path keeps them as they are
_CONTENT_HEADERS = frozenset({b"from", b"to", b"cc", b"subject", b"date", b"message-id", b"content-type"})
_FOLD = re.compile(rb"\r?\n[ \t]+")
_SPACE = re.compile(rb"[ \t]+")
# one of those headers on its own line (folded lines joined, every line break made "\n"): name, value
_CONTENT_FIELD = re.compile(
    rb"^[ \t\x0b\x0c]*(" + b"|".join(re.escape(h) for h in sorted(_CONTENT_HEADERS)) + rb")[ \t\x0b\x0c]*:(.*)$",
    re.IGNORECASE | re.MULTILINE,
)
_TRAILING = re.compile(rb"[ \t]+\n")  # white space at the end of a line (line ends made "\n")


def bytes_hash(raw: bytes) -> str:
    """The identity of a mail without a Message-ID: its bytes."""
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def dedupe_id(message_id: str | None, raw: bytes) -> str:
    """What a mail is recorded under, to find its copies: its Message-ID, else the hash of its bytes."""
    return message_id or bytes_hash(raw)


def content_hash(raw: bytes) -> str:
    """sha256 over the sender's own headers and the body; the same for every copy of one mail."""
    head_end, body_at = _header_end(raw)
    head = raw[:head_end]
    if b"\n " in head or b"\n\t" in head:
        head = _FOLD.sub(b" ", head)
    if b"\r" in head:  # a line ends at CR LF, LF or a lone CR
        head = head.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    fields = []
    for name, value in _CONTENT_FIELD.findall(head):
        value = value.strip()
        fields.append(name.lower() + b":" + (_SPACE.sub(b" ", value) if b"\t" in value or b"  " in value else value))
    fields.sort()
    digest = hashlib.sha256(b"".join(header + b"\n" for header in fields) + b"\n")
    # line ends made "\n" and white space at the end of each line dropped, as one pass of [ \t]*\r?\n -> \n would,
    # and the white space at the very end dropped; a block at a time, so that no copy is as large as the mail
    blanks = b""  # white space at the end of what was read so far: hashed only if more text follows
    for block in _blocks(raw, body_at):
        if b"\r" in block:
            block = block.replace(b"\r\n", b"\n")
        if b" \n" in block or b"\t\n" in block:
            block = _TRAILING.sub(b"\n", block)
        text = block.rstrip(b" \t\r\n")
        if text:
            digest.update(blanks + text if blanks else text)
            blanks = block[len(text) :]
        else:
            blanks += block
    return "sha256:" + digest.hexdigest()


def _header_end(raw: bytes) -> tuple[int, int]:
    """Where the first empty line starts and ends, or (len, len): the first match of rb"\\r?\\n\\r?\\n", found by two
    substring searches instead of a regex tried at every byte."""
    crlf = raw.find(b"\n\r\n")
    lf = raw.find(b"\n\n", 0, len(raw) if crlf < 0 else crlf + 2)
    i = crlf if lf < 0 else lf  # the first LF followed by CR LF or LF
    if i < 0:
        return len(raw), len(raw)
    start = i - 1 if i > 0 and raw[i - 1] == 13 else i
    return start, i + (2 if raw[i + 1] == 10 else 3)


def _blocks(raw: bytes, start: int, size: int = 1 << 20) -> Iterator[bytes]:
    """raw[start:] in pieces of about `size` bytes, each but the last ending just after a LF: the line ends,
    and so the normalisation, are those of the whole."""
    while start < len(raw):
        cut = raw.find(b"\n", start + size)
        end = len(raw) if cut < 0 else cut + 1
        yield raw[start:end]
        start = end


def duplicate_of(content: str, earlier: Iterable[tuple[str, str | None]]) -> str | None:
    """The key of the first earlier mail (key, content hash) with the same content, if any. An earlier
    record without a hash (written before hashes were kept) counts as the same: nothing is handled twice."""
    for key, other in earlier:
        if other is None or other == content:
            return key
    return None
