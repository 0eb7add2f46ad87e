"""A small, fast builder of outgoing MIME messages as standard `EmailMessage` objects.

Why not `msg[...] = value` and `set_content()` with the standard policies: every assignment runs the
header registry's full parser (an address header costs ~0.2 ms) and `set_content` re-scans the text,
which together cost several times the router's whole per-message budget. Here every header is
formatted once by code that knows what it holds, checked to be a single line, and stored as is;
the registry still parses it lazily when someone reads it (`msg["To"].addresses` works as usual).
Output is deterministic: boundaries are derived from the message's own identity.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import itertools
from email.generator import BytesGenerator, Generator
from email.header import Header
from email.message import EmailMessage, Message
from email.policy import EmailPolicy
from email.utils import formataddr
from io import BytesIO
from typing import Any

from emailrouter.core.errors import ComposeError
from emailrouter.core.parse import clean_line

MAX_LINE = 998  # RFC 5322's hard limit on a line, CRLF excluded
MAX_NAME = 120  # characters of a display name we carry over


_UNIQUE = frozenset(
    {
        "from",
        "to",
        "cc",
        "bcc",
        "reply-to",
        "subject",
        "date",
        "message-id",
        "in-reply-to",
        "references",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
        "content-disposition",
        "auto-submitted",
    }
)


class _StoredAsGiven(EmailPolicy):
    """EmailPolicy whose headers are stored as the (already formatted, single-line) strings given."""

    def header_max_count(self, name: str) -> int | None:
        # the default asks the header registry, which builds a new class on every call
        return 1 if name.lower() in _UNIQUE else None

    def header_fetch_parse(self, name: str, value: Any) -> Any:
        # Reading a header back gives the string we stored. The default would run the registry's full
        # parser on every read, and the generator reads Content-Type and friends for every part it
        # writes (about 40 us each). Parse the serialised message to get header objects.
        return value

    def header_store_parse(self, name: str, value: Any) -> tuple[str, Any]:
        if hasattr(value, "name"):
            return (name, value)
        text = str(value)
        if "\r" in text or "\n" in text or "\r" in name or "\n" in name:
            raise ComposeError(f"header {name!r} would contain CR/LF")
        return (name, text)


# CRLF line endings, ready for the wire; lines may use RFC 5322's full 998 characters.
POLICY = _StoredAsGiven(linesep="\r\n", max_line_length=MAX_LINE)


def text(value: str) -> str:
    """An unstructured header value: one line; RFC 2047 encoded words when it is not ASCII."""
    value = clean_line(value)
    if value.isascii():
        return value
    # encoded words carry no whitespace; join Header's folded chunks on one line
    return " ".join(Header(value, "utf-8").encode(linesep="\n").split())


@functools.lru_cache(maxsize=4096)  # the router's and the units' addresses are formatted for every mail
def address(name: str, addr_spec: str) -> str:
    """`Name <addr>` with the name quoted or encoded as needed; the address must be ASCII."""
    if not addr_spec.isascii() or clean_line(addr_spec) != addr_spec:
        raise ComposeError(f"refusing address {addr_spec!r}")
    return formataddr((clean_line(name)[:MAX_NAME], addr_spec), charset="utf-8")


def new(headers: list[tuple[str, str]]) -> EmailMessage:
    """A message with these headers (each checked by the policy; given in order, so no duplicate check)."""
    msg = EmailMessage(policy=POLICY)
    add(msg, headers)
    return msg


def add(msg: Message, headers: list[tuple[str, str]]) -> None:
    """Append these headers, each checked by the policy. Unlike `msg[name] = value` (which looks through every
    header already there for a duplicate), no duplicate check: the caller gives each header once."""
    if set(map(type, itertools.chain.from_iterable(headers))) == {str}:  # plain strings only (at C speed)
        every = "".join(itertools.chain.from_iterable(headers))
        if "\r" not in every and "\n" not in every:  # the usual case: what the policy stores, checked in one pass
            msg._headers.extend(headers)  # type: ignore[attr-defined]
            return
    msg._headers.extend(POLICY.header_store_parse(name, value) for name, value in headers)  # type: ignore[attr-defined]


def set_text(part: Message, body: str, subtype: str = "plain") -> None:
    """Make `part` a UTF-8 text part: 7bit or 8bit as written, base64 only if a line is too long."""
    data = body.replace("\r\n", "\n").encode("utf-8")
    content_type = f'text/{subtype}; charset="utf-8"'
    if max(map(len, data.split(b"\n"))) > MAX_LINE:
        add(part, [("Content-Type", content_type), ("Content-Transfer-Encoding", "base64")])
        part.set_payload(base64_lines(data, b"\n").decode("ascii"))
    else:
        add(part, [("Content-Type", content_type), ("Content-Transfer-Encoding", "7bit" if data.isascii() else "8bit")])
        # bytes carried as surrogate escapes: the bytes generator writes them out unchanged
        part.set_payload(data.decode("ascii", "surrogateescape"))


def text_part(body: str, subtype: str = "plain") -> EmailMessage:
    part = EmailMessage(policy=POLICY)
    set_text(part, body, subtype)
    return part


def file_part(data: bytes, content_type: str, filename: str) -> Message:
    """A base64 attachment, written out in one piece (the generator would write it line by line)."""
    head = (
        f"Content-Type: {content_type}\r\n"
        f'Content-Disposition: attachment; filename="{clean_line(filename)}"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\n"
    ).encode("ascii")
    return Prebuilt(head + base64_lines(data, b"\r\n"))


def base64_lines(data: bytes, linesep: bytes) -> bytes:
    """`data` in base64, 76 characters a line, each line ended by `linesep`: base64.encodebytes (with its line
    ends), encoded in one call instead of one per line."""
    encoded = base64.b64encode(data)
    return linesep.join([encoded[i : i + 76] for i in range(0, len(encoded), 76)]) + linesep if encoded else b""


class Prebuilt(Message):
    """A message or part that generates as exactly the bytes it was given.

    The standard library generator asks each message object whether it writes its own headers
    (`_write_headers(generator)`, see email.generator.Generator._write); this one writes all of its
    bytes there and has no payload of its own. Used for the customer's original (re-generating a
    parsed copy would re-fold headers and re-encode parts: agents and ticketing must see what the
    customer sent) and for base64 attachments encoded once.
    """

    def __init__(self, raw: bytes) -> None:
        super().__init__(policy=POLICY)
        self.raw = raw

    def _write_headers(self, generator: Generator) -> None:
        fp = generator._fp  # type: ignore[attr-defined]
        if isinstance(generator, _Spliced):  # as_bytes: a marker here, the bytes joined in at the end
            generator.pieces.append(self.raw)
            fp.write(_SPLICE)
            return
        fp.write(self.raw if isinstance(generator, BytesGenerator) else self.raw.decode("ascii", "surrogateescape"))


_SPLICE = b"\x00emailrouter-prebuilt\x00"  # where a Prebuilt goes in as_bytes (any other one is noticed)


class _Spliced(BytesGenerator):
    """Writes a marker where a Prebuilt's bytes go, and keeps the bytes aside (see as_bytes)."""

    pieces: list[bytes]

    def clone(self, fp: Any) -> _Spliced:
        twin = super().clone(fp)
        twin.pieces = self.pieces
        return twin


def as_bytes(msg: Message) -> bytes:
    """`msg.as_bytes()`, byte for byte, with the prebuilt parts (the customer's original) copied once.

    The standard generator writes every part into a buffer of its own and copies that into its parent's:
    a forward would hold its original four or five times over. Here a marker is written in its place and
    the result is joined once from the small pieces and the original itself; if the text around holds a
    marker too (a customer may write anything), the standard way is taken."""
    fp = BytesIO()
    generator = _Spliced(fp, mangle_from_=False, policy=msg.policy)
    generator.pieces = []
    generator.flatten(msg, unixfrom=False)
    frame = fp.getvalue().split(_SPLICE)
    if len(frame) != len(generator.pieces) + 1:
        return msg.as_bytes(policy=msg.policy)
    out = [frame[0]]
    for raw, after in zip(generator.pieces, frame[1:], strict=True):
        out += [raw, after]
    return b"".join(out)


def message_part(raw: bytes, filename: str = "original.eml") -> Message:
    """The incoming mail as a message/rfc822 attachment, byte for byte (line endings made CRLF).

    message/rfc822 may not be base64-encoded, and SMTP refuses lines over 998 bytes: an original with
    such lines (it happens) is attached base64-encoded as application/octet-stream instead, still whole.
    """
    if has_long_line(raw):
        return file_part(raw, "application/octet-stream", filename)
    part = new(
        [
            ("Content-Type", "message/rfc822"),
            ("Content-Disposition", f'attachment; filename="{filename}"'),
            ("Content-Transfer-Encoding", "7bit" if raw.isascii() else "8bit"),
        ]
    )
    crlf = raw.count(b"\r\n")
    if raw.count(b"\n") != crlf or raw.count(b"\r") != crlf:  # else CRLF throughout already: attached as it is
        raw = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    part.set_payload([Prebuilt(raw)])
    return part


def longest_line(raw: bytes, block: int = 1 << 20) -> int:
    """Bytes in the longest line of `raw` (a CR before the LF not counted), a block of lines at a time:
    never a list of every line of a big mail."""
    longest = start = 0
    while start < len(raw):
        cut = raw.find(b"\n", start + block)
        end = len(raw) if cut < 0 else cut + 1
        longest = max(longest, max(map(len, raw[start:end].replace(b"\r\n", b"\n").split(b"\n"))))
        start = end
    return longest


def has_long_line(raw: bytes, limit: int = MAX_LINE) -> bool:
    """Whether a line of `raw` holds more than `limit` bytes (a CR before the LF not counted), as
    longest_line(raw) > limit says, looking at a window of limit + 1 bytes a step instead of at every line."""
    pos, end = 0, len(raw)
    while end - pos > limit:
        last = raw.rfind(b"\n", pos, pos + limit + 1)
        if last >= 0:  # every line that ends by then is short enough
            pos = last + 1
        elif raw.startswith(b"\r\n", pos + limit):  # exactly `limit` bytes, then CR LF
            pos += limit + 2
        else:
            return True
    return False


def mixed(msg: EmailMessage, parts: list[Message], subtype: str = "mixed") -> None:
    """Make `msg` multipart/mixed (or another multipart `subtype`) over `parts`, with a boundary derived from its
    Message-ID."""
    seed = str(msg.get("Message-ID", "")).encode()
    boundary = "=_er_" + hashlib.sha256(seed).hexdigest()[:32]
    add(msg, [("MIME-Version", "1.0"), ("Content-Type", f'multipart/{subtype}; boundary="{boundary}"')])
    msg.set_payload(list(parts))


def single(msg: EmailMessage, body: str) -> None:
    """Make `msg` a single text/plain message."""
    add(msg, [("MIME-Version", "1.0")])
    set_text(msg, body)
