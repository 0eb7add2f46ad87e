"""bytes -> MessageView. Never raises: whatever is wrong with a mail becomes a recorded defect.

- headers are decoded (RFC 2047, any charset; an unknown charset is decoded with replacement
  characters and recorded as a defect);
- the sender is parsed strictly: an ambiguous or malformed From: gives no sender at all;
- the customer's own text is kept apart from the quoted history of a reply;
- attachments are listed (name, type, size).

Over 400 lines: the fast path for the usual shapes and the standard parser's path must give the same
message part for part (tests/test_parse.py holds them to it); keeping them side by side is what makes
that checkable.
"""

from __future__ import annotations

import codecs
import email
import email.errors
import itertools
import re
from dataclasses import replace
from email.header import decode_header
from email.headerregistry import HeaderRegistry
from email.message import Message
from email.parser import BytesParser
from email.policy import compat32
from email.utils import getaddresses
from html.parser import HTMLParser

from emailrouter.core.model import Attachment, MessageView, Sender

MAX_DEPTH = 20  # MIME nesting we follow
MAX_PARTS = 500  # MIME leaves we look at
MAX_HEADER_CHARS = 16_384  # per header value, after unfolding

_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\x85\u2028\u2029]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")  # a lone surrogate is no character: it cannot be encoded again
_ESCAPED_BYTE = re.compile(r"[\udc80-\udcff]")
_FOLD = re.compile(r"\r?\n[ \t]")
_MSGID = re.compile(r"<[!-;=?-~]{1,900}>")  # printable ASCII only: these go back out in our headers
_DOMAIN = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$"
)
_LOCAL = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}$")
_REGISTRY = HeaderRegistry()
_ADDR = r"(?P<local>[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*)@(?P<domain>[A-Za-z0-9.-]+)"
# The common unambiguous shapes: a bare address, or plain words (no quotes, encoded words, comments
# or specials) before <address>. Anything else goes through the full parser.
_BARE_FROM = re.compile(rf"^{_ADDR}$")
_NAMED_FROM = re.compile(rf"^(?P<name>[A-Za-z0-9 !#$%&'*+/^_`{{|}}~.-]*?)\s*<{_ADDR}>$")

# Where a reply's quoted history starts.
_ON_WROTE = re.compile(r"^\s*On\b.{0,300}\bwrote\s*:\s*$", re.IGNORECASE)
_PADA_MENULIS = re.compile(r"^\s*Pada\b.{0,300}\bmenulis\s*:\s*$", re.IGNORECASE)
_ORIGINAL = re.compile(r"^\s*-{2,}\s*(?:Original Message|Pesan Asli|Pesan Awal)\s*-{2,}\s*$", re.IGNORECASE)
_OUTLOOK_FROM = re.compile(r"^\s*\*?(?:From|Dari)\s*:\*?\s+\S", re.IGNORECASE)
_OUTLOOK_SENT = re.compile(r"^\s*\*?(?:Sent|Date|Terkirim|Dikirim|Tanggal)\s*:\*?\s+\S", re.IGNORECASE)
_HISTORY_STARTS = frozenset("-*fFdDoOpP")  # the first character of any line above (no other one matches)


def _valid(text: str) -> str:
    """Text that can be encoded again: lone surrogates (utf-7 can decode to them) become U+FFFD."""
    return _SURROGATE.sub("\ufffd", text) if not text.isascii() else text


def _unescape(value: str) -> str:
    """compat32 keeps raw 8-bit header bytes as surrogate escapes: decode them; real characters stay."""
    if not _ESCAPED_BYTE.search(value):
        return value
    try:
        data = value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate that is no escaped byte
        return _valid(value)
    return _fallback(data)


# Codecs Python knows that are no mail charset: a text codec that cannot decode arbitrary bytes, or one
# whose pure-Python decoder is slow enough on a large body to stall the batch.
_NOT_MAIL_CHARSETS = frozenset({"idna", "punycode", "undefined", "unicode-escape", "raw-unicode-escape"})


def _text_codec(charset: str) -> tuple[str | None, str | None]:
    """(the codec to decode with, None) or (None, why this charset cannot be used)."""
    try:
        info = codecs.lookup(charset)
    except (LookupError, ValueError, TypeError):  # unknown; ValueError for an embedded NUL
        return None, "unknown charset"
    # bytes.decode only takes text encodings: rot13, base64_codec, zlib_codec, hex, uu... raise LookupError
    if not getattr(info, "_is_text_encoding", True) or info.name in _NOT_MAIL_CHARSETS:
        return None, "not a text charset"
    return info.name, None


def _fallback(data: bytes) -> str:
    """Undeclared or unusable charset: UTF-8 if it is, else Windows-1252 (which decodes any byte)."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", "replace")


def _decode_bytes(data: bytes, charset: str | None, where: str, defects: list[str]) -> str:
    """Decode with the declared charset; unknown, non-text or wrong charsets decode with replacement, as a defect."""
    if not charset:
        return _valid(_fallback(data))
    charset = charset.strip().strip('"').lower()
    if charset in ("us-ascii", "ascii") and not data.isascii():
        charset = "utf-8"  # the most common lie
    codec, problem = _text_codec(charset)
    if codec is None:
        defects.append(f"{where}: {problem} {charset[:60]!r}")
        return data.decode("utf-8", "replace")
    try:
        return _valid(data.decode(codec))
    except UnicodeError:  # UnicodeDecodeError, and the bare UnicodeError some codecs raise
        defects.append(f"{where}: text is not valid {charset}")
    try:
        return _valid(data.decode(codec, "replace"))
    except UnicodeError:  # a codec that refuses error handlers
        return data.decode("utf-8", "replace")


def decode_header_value(value: str, where: str, defects: list[str]) -> str:
    """Unfold and decode one header value (RFC 2047 encoded words, raw 8-bit bytes)."""
    if "\n" in value:
        value = _FOLD.sub(" ", value)
    value = value[:MAX_HEADER_CHARS]
    if not value.isascii():
        value = _unescape(value)
    if "=?" not in value:
        return value.strip()
    try:
        chunks = decode_header(value)
    except Exception as exc:  # HeaderParseError for broken base64; the standard library may raise others
        defects.append(f"{where}: undecodable encoded word ({type(exc).__name__})")
        return _valid(value.strip())
    out = []
    for chunk, charset in chunks:
        text = chunk if isinstance(chunk, str) else _decode_bytes(chunk, charset, where, defects)
        out.append(_valid(text))
    return "".join(out).strip()


def clean_line(value: str) -> str:
    """A single line: control characters (CR and LF above all) become spaces, lone surrogates U+FFFD."""
    if value.isprintable() and "  " not in value and value[:1] != " " and value[-1:] != " ":
        return value  # the usual case: no control character, surrogate or white space but single spaces inside
    return " ".join(_CONTROL.sub(" ", _valid(value)).split())


def parse_sender(raw_values: list[str]) -> tuple[Sender | None, str | None]:
    """The sender, strictly: exactly one From header holding exactly one well-formed address.

    Two parsers must agree (the strict header registry and the lenient getaddresses); where they
    do not, the header is ambiguous and we do not guess (the CVE-2023-27043 class of confusion).
    """
    if not raw_values:
        return None, "no From: header"
    if len(raw_values) > 1:
        return None, "more than one From: header"
    raw = _FOLD.sub(" ", raw_values[0]).strip()
    if not raw:
        return None, "empty From: header"
    if not raw.isascii():
        return None, "From: header contains raw 8-bit bytes"
    simple = _BARE_FROM.match(raw) or _NAMED_FROM.match(raw)
    if simple and _DOMAIN.match(simple["domain"]) and len(simple["local"]) <= 64:
        name = " ".join(simple.groupdict().get("name", "").split())
        return Sender(f"{simple['local']}@{simple['domain'].lower()}", name), None
    try:
        header = _REGISTRY("from", raw)
    except Exception as exc:  # the registry raises a variety of errors on garbage
        return None, f"unparseable From: header ({type(exc).__name__})"
    addresses = header.addresses  # type: ignore[attr-defined]
    if len(addresses) != 1:
        return None, f"From: holds {len(addresses)} addresses"
    serious = [d for d in header.defects if not isinstance(d, email.errors.ObsoleteHeaderDefect)]
    if serious:
        return None, f"malformed From: header ({serious[0]})"
    address = addresses[0]
    local, domain = address.username, address.domain
    if not local or not domain or not _LOCAL.match(local) or not _DOMAIN.match(domain):
        return None, "From: address is not a plain user@domain"
    lenient = getaddresses([raw])
    if len(lenient) != 1 or lenient[0][1].lower() != f"{local}@{domain}".lower():
        return None, "From: header is ambiguous (parsers disagree on the address)"
    return Sender(f"{local}@{domain.lower()}", clean_line(address.display_name)), None


class _HTMLText(HTMLParser):
    """Just enough HTML to text: blocks become lines, blockquotes become '> ' quoted lines."""

    _BLOCK = frozenset(
        {
            "p",
            "div",
            "br",
            "li",
            "tr",
            "h1",
            "h2",
            "h3",
            "h4",
            "h5",
            "h6",
            "table",
            "ul",
            "ol",
            "section",
            "article",
            "header",
            "footer",
            "hr",
            "pre",
            "title",
        }
    )
    _SKIP = frozenset({"script", "style", "head", "template"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.lines: list[str] = []
        self.current: list[str] = []
        self.skip = 0
        self.quote = 0

    def _newline(self) -> None:
        line = " ".join("".join(self.current).split())
        if line or (self.lines and self.lines[-1]):
            self.lines.append(("> " * self.quote + line) if line else "")
        self.current = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self.skip += 1
        elif tag == "blockquote":
            self._newline()
            self.quote += 1
        elif tag in self._BLOCK:
            self._newline()

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP:
            self.skip = max(0, self.skip - 1)
        elif tag == "blockquote":
            self._newline()
            self.quote = max(0, self.quote - 1)
        elif tag in self._BLOCK:
            self._newline()

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.current.append(data.replace("\xa0", " "))


def html_to_text(html: str) -> str:
    parser = _HTMLText()
    try:
        parser.feed(html)
        parser.close()
    except Exception:  # HTMLParser is lenient; this is belt and braces
        return re.sub(r"<[^>]*>", " ", html)
    parser._newline()
    return "\n".join(parser.lines).strip()


def split_quoted(text: str) -> tuple[str, str]:
    """(what the customer wrote, the quoted history of earlier mails)."""
    lines = text.splitlines()
    own: list[str] = []
    quoted: list[str] = []
    for i, line in enumerate(lines):
        if _starts_history(lines, i):
            quoted.extend(lines[i:])
            break
        (quoted if line.lstrip().startswith(">") else own).append(line)
    return "\n".join(own).strip(), "\n".join(quoted).strip()


def _starts_history(lines: list[str], i: int) -> bool:
    line = lines[i]
    stripped = line.strip()
    if not stripped or stripped[0] not in _HISTORY_STARTS:
        return False
    if _ORIGINAL.match(line):
        return True
    head = stripped[:5].lower()
    if head.startswith(("on ", "pada ")):
        if _ON_WROTE.match(line) or _PADA_MENULIS.match(line):
            return True
        # clients wrap long attribution lines: "On Mon, ... Budi <\nbudi@x.com> wrote:"
        joined = line + " " + (lines[i + 1] if i + 1 < len(lines) else "")
        return bool(_ON_WROTE.match(joined) or _PADA_MENULIS.match(joined))
    if _OUTLOOK_FROM.match(line):
        return any(_OUTLOOK_SENT.match(following) for following in lines[i + 1 : i + 5])
    return False


def _payload_size(part: Message) -> int:
    """Bytes of content under `part`, decoded size for base64 (no recursion: nesting may be deep)."""
    total = 0
    stack = [part]
    while stack:
        node = stack.pop()
        payload = node.get_payload()
        omitted = str(node.get(OMITTED, "")).strip()
        if isinstance(payload, str) and not payload.strip() and omitted.isdecimal() and len(omitted) < 12:
            total += int(omitted)  # a body skeleton() left out: its decoded size
        elif isinstance(payload, list):
            stack.extend(p for p in payload if isinstance(p, Message))
        elif isinstance(payload, str):
            cte = str(node.get("Content-Transfer-Encoding", "")).strip().lower()
            if cte == "base64":
                stripped = len(payload) - sum(payload.count(c) for c in "\r\n \t")
                total += max(0, stripped * 3 // 4 - payload.rstrip().count("=", -3))
            else:
                total += len(payload)
    return total


def _filename(part: Message, defects: list[str]) -> str | None:
    """The part's file name, decoded; a name whose RFC 2231 charset cannot decode it counts as a defect."""
    if "content-disposition" not in part and not any(
        "name" in str(value).lower() for key, value in part.raw_items() if key.lower() == "content-type"
    ):
        return None  # the usual text part: no parameter a name could come from (get_filename gives None)
    try:
        filename = part.get_filename()
    except (UnicodeError, LookupError, ValueError) as exc:  # e.g. filename*=idna''... (UnicodeError)
        defects.append(f"attachment name: undecodable ({type(exc).__name__})")
        return "(undecodable name)"
    if filename is None:
        return None
    return clean_line(decode_header_value(str(filename), "attachment name", defects))


def _leaves(msg: Message, defects: list[str]) -> list[tuple[Message, str]]:
    """The leaves of the MIME tree, in order, with their content types."""
    leaves: list[tuple[Message, str]] = []
    stack: list[tuple[Message, int]] = [(msg, 0)]
    while stack:
        part, depth = stack.pop()
        if len(leaves) >= MAX_PARTS:
            defects.append(f"more than {MAX_PARTS} MIME parts: the rest is ignored")
            break
        payload = part.get_payload()
        ctype = part.get_content_type()
        if ctype.startswith("multipart/") and isinstance(payload, list):
            if depth >= MAX_DEPTH:
                defects.append(f"MIME nesting deeper than {MAX_DEPTH}: the rest is ignored")
                continue
            stack.extend((p, depth + 1) for p in reversed(payload) if isinstance(p, Message))
        else:
            leaves.append((part, ctype))
    return leaves


def _body(msg: Message, defects: list[str]) -> tuple[str, bool, tuple[Attachment, ...]]:
    plain: list[str] = []
    html: list[str] = []
    attachments: list[Attachment] = []
    for part, ctype in _leaves(msg, defects):
        try:
            _read_part(part, ctype, defects, plain, html, attachments)
        except Exception as exc:  # one unreadable part must not cost the customer's text in the others
            defects.append(f"unreadable MIME part: {type(exc).__name__}")
    if plain:
        return "\n".join(plain), False, tuple(attachments)
    if html:
        return "\n".join(html_to_text(h) for h in html), True, tuple(attachments)
    return "", False, tuple(attachments)


def _read_part(
    part: Message, ctype: str, defects: list[str], plain: list[str], html: list[str], attachments: list[Attachment]
) -> None:
    filename = _filename(part, defects)
    disposition = part.get_content_disposition()
    if disposition == "attachment" or filename or ctype not in ("text/plain", "text/html"):
        attachments.append(Attachment(filename, ctype, _payload_size(part)))
        return
    data = part.get_payload(decode=True)
    if isinstance(data, bytes):
        text = _decode_bytes(data, part.get_content_charset(), f"{ctype} part", defects)
        (plain if ctype == "text/plain" else html).append(text)


def parse(raw: bytes) -> MessageView:
    """Parse one mail. Never raises; problems are listed in `defects`."""
    try:
        return _parse(raw)
    except Exception as exc:  # belt and braces: a bug of ours or of the standard library must not lose a mail
        return MessageView(
            raw=raw,
            message_id=None,
            subject="",
            sender=None,
            sender_problem="the message could not be parsed",
            date=None,
            in_reply_to=None,
            references=(),
            text="",
            quoted="",
            html_only=False,
            attachments=(),
            defects=(f"unparseable message: {type(exc).__name__}",),
            headers=(),
        )


SKELETON_FROM = 1 << 20  # mail at least this large is parsed without the bodies of its big attachments
BIG_LEAF = 64 * 1024  # a base64 attachment with a longer body is left out of the parse (its size kept)
OMITTED = "X-EmailRouter-Omitted-Bytes"  # where skeleton() keeps the decoded size of a body it left out
_READ_TYPES = ("text/plain", "text/html", "text/rfc822-headers")  # leaves whose content parse or the guard read
_STR_BLANKS = bytes(c for c in range(128) if chr(c).isspace())  # what str.rstrip() strips of ASCII


def skeleton(raw: bytes) -> bytes:
    """`raw` with the bodies of its big base64 attachments left out, each one's decoded size in a header.

    The standard library's parser holds about six times a mail while it parses it (the text, a list of every
    line, each payload joined); of an attachment the router needs only its name, type and size. Emptied: a
    base64 leaf below the top, over BIG_LEAF, not text/plain, text/html or text/rfc822-headers (nor message/*,
    whose parts are looked at in turn), with a header block the standard parser reads cleanly. MIME delimiters
    are found as the standard parser finds them; header blocks are parsed by it. So `parse` makes of the
    result what it makes of `raw` (a part's own OMITTED header on an empty body counts as its size)."""
    if len(raw) < SKELETON_FROM:
        return raw
    out: list[bytes] = []
    try:
        _skeleton_part(raw, 0, len(raw), out, 0)
    except Exception:  # a bug of ours must not cost the mail: then it is parsed whole
        return raw
    return b"".join(out)


def _header_end(raw: bytes, start: int, end: int) -> int:
    """Offset just after the empty line that ends the header block starting at `start` (or `end`)."""
    if raw.startswith((b"\r\n", b"\n"), start, end):
        return start + (2 if raw[start] == 13 else 1)
    found = [k + n for k, n in ((raw.find(b"\n\r\n", start, end), 3), (raw.find(b"\n\n", start, end), 2)) if k >= 0]
    return min(found) if found else end


def _delimiters(raw: bytes, delimiter: bytes, start: int, end: int) -> list[tuple[int, int, bool]]:
    """(offset, end of its line, closing?) of each delimiter line in raw[start:end], as the standard parser
    finds them: at the start of a line, the delimiter, `--` or not, blanks, then the end of the line."""
    found = []
    pos = start
    while (hit := raw.find(delimiter, pos, end)) >= 0:
        pos = hit + len(delimiter)
        if hit > start and raw[hit - 1] not in (10, 13):
            continue
        closing = raw.startswith(b"--", pos, end)
        after = pos + 2 if closing else pos
        while after < end and raw[after] in (32, 9):
            after += 1
        if after < end and raw[after] not in (10, 13):
            continue
        found.append((hit, min(end, after + (2 if raw.startswith(b"\r\n", after, end) else 1)), closing))
    return found


def _skeleton_part(raw: bytes, start: int, end: int, out: list[bytes], depth: int) -> None:
    """Append raw[start:end], one MIME entity, to `out`, with its big attachments' bodies left out."""
    body = _header_end(raw, start, end)
    part = BytesParser(policy=compat32).parsebytes(raw[start:body], headersonly=True)
    if part.defects or part.get_payload() or depth >= MAX_DEPTH:  # a header block the parser may read otherwise
        out.append(raw[start:end])
        return
    maintype, ctype = part.get_content_maintype(), part.get_content_type()
    boundary = part.get_boundary() if maintype == "multipart" else None
    delimiters = _delimiters(raw, b"--" + boundary.encode("ascii", "surrogateescape"), body, end) if boundary else []
    if delimiters:
        out.append(raw[start : delimiters[0][0]])  # the header block and the preamble
        for n, (hit, line_end, closing) in enumerate(delimiters):
            out.append(raw[hit:line_end])
            if closing:
                out.append(raw[line_end:end])  # the epilogue
                return
            _skeleton_part(raw, line_end, delimiters[n + 1][0] if n + 1 < len(delimiters) else end, out, depth + 1)
        return
    if maintype == "message" and ctype != "message/delivery-status":  # parsed as a message of its own
        out.append(raw[start:body])
        _skeleton_part(raw, body, end, out, depth + 1)
        return
    cte = str(part.get("Content-Transfer-Encoding", "")).strip().lower()
    attachment = cte == "base64" and maintype not in ("multipart", "message") and ctype not in _READ_TYPES
    if depth == 0 or not attachment or end - body <= BIG_LEAF:
        out.append(raw[start:end])  # the top (its headers are the view's), a part that is read, or a small one
        return
    blank = sum(raw.count(c, body, end) for c in (b"\r", b"\n", b" ", b"\t"))
    tail = raw[max(body, end - 4096) : end].rstrip(_STR_BLANKS)
    if not tail and end - body > 4096:
        tail = raw[body:end].rstrip(_STR_BLANKS)  # kilobytes of blanks at the end: whatever it takes
    size = max(0, (end - body - blank) * 3 // 4 - tail.count(b"=", -3))  # as _payload_size counts it
    newline = b"\r\n" if raw.startswith(b"\r\n", body - 2) else b"\n"
    blank_line = body - len(newline)
    out += [raw[start:blank_line], f"{OMITTED}: {size}".encode(), newline, raw[blank_line:body], newline]


_HEADER_NAME = re.compile(r"[\041-\071\073-\176]+:")  # a field name as the standard parser reads one, and its colon


def _header_block(text: str, start: int, end: int) -> tuple[Message, int] | None:
    """A message with the header fields of the block starting at `start` (as the standard parser under compat32
    stores them) and where its body starts; None when the block holds anything the standard parser reads in a
    way of its own (a line that is no field, a first line that continues none, a `From ` line)."""
    msg = Message(policy=compat32)
    headers = msg._headers  # type: ignore[attr-defined]
    lines: list[str] = []
    pos = body = start
    while True:
        if pos >= end:
            body = end
            break
        nl = text.find("\n", pos, end)
        line_end = end if nl < 0 else nl + 1
        line = text[pos:line_end]
        pos = line_end
        if line == "\r\n" or line == "\n":  # the empty line that ends the block
            body = line_end
            break
        if line[0] in " \t":
            if not lines:
                return None
            lines.append(line)
            continue
        m = _HEADER_NAME.match(line)
        if m is None:
            return None
        if lines:
            headers.append(_field(lines))
        lines = [line]
    if lines:
        headers.append(_field(lines))
    return msg, body


def _field(lines: list[str]) -> tuple[str, str]:
    """(name, value) of one header field's lines, as compat32's header_source_parse makes them."""
    name, value = lines[0].split(":", 1)
    value = value.lstrip(" \t") + "".join(lines[1:])
    return name, value.rstrip("\r\n")


def _without_line_end(text: str) -> str:
    """`text` without its last line end (what the standard parser takes off a part's payload and a preamble)."""
    if text.endswith("\r\n"):
        return text[:-2]
    return text[:-1] if text.endswith(("\r", "\n")) else text


def _leaf(msg: Message) -> bool:
    """Whether the standard parser takes everything after this part's header block as its payload."""
    return msg.get_content_maintype() not in ("multipart", "message")


def simple_message(raw: bytes) -> Message | None:
    """What `email.message_from_bytes(raw, policy=compat32)` makes of `raw`, built directly (the standard parser
    reads a mail a line at a time in Python), for the usual shapes: a single part, or a multipart whose parts
    are single parts; clean header blocks, line ends CR LF or LF. None for anything else (the standard parser
    then reads it): a lone CR, a part the standard parser would note a defect in (a missing boundary, preamble
    or closing delimiter, a line that is no header field), delimiters next to each other, nesting, message/*."""
    if b"\r" in raw and raw.count(b"\r") != raw.count(b"\r\n"):
        return None  # a lone CR ends a line for the standard parser
    text = raw.decode("ascii", "surrogateescape")
    top = _header_block(text, 0, len(text))
    if top is None:
        return None
    msg, body = top
    if _leaf(msg):
        msg._payload = text[body:]  # type: ignore[attr-defined]
        return msg
    if msg.get_content_maintype() != "multipart" or msg.get_content_type() == "multipart/digest":
        return None  # message/*; multipart/digest, whose parts default to message/rfc822
    boundary = msg.get_boundary()
    cte = str(msg.get("content-transfer-encoding", "8bit")).lower()
    if boundary is None or cte not in ("7bit", "8bit", "binary") or not boundary.isascii():
        return None
    delimiters = _delimiters(raw, b"--" + boundary.encode("ascii"), body, len(raw))
    closing = next((n for n, (_, _, is_closing) in enumerate(delimiters) if is_closing), 0)
    if not closing:
        return None  # no closing delimiter, or one before any part
    parts: list[Message] = []
    for (_, start, _), (stop, _, _) in itertools.pairwise(delimiters[: closing + 1]):
        found = _header_block(text, start, stop) if stop > start else None
        if found is None or not _leaf(found[0]):
            return None
        part, part_body = found
        part._payload = _without_line_end(text[part_body:stop])  # type: ignore[attr-defined]
        parts.append(part)
    first = delimiters[0][0]
    if first > body:
        msg.preamble = _without_line_end(text[body:first])
    msg._payload = parts  # type: ignore[attr-defined]
    msg.epilogue = text[delimiters[closing][1] :]
    return msg


def _message(raw: bytes, defects: list[str]) -> Message:
    """The parsed message; if the full parse fails (RecursionError on thousands of nested message/rfc822
    parts, say), the header block alone, so that sender, subject and Message-ID survive."""
    if len(raw) < SKELETON_FROM:
        try:
            if (msg := simple_message(raw)) is not None:
                return msg
        except Exception:  # a bug of ours must not cost the mail: the standard parser reads it
            pass
    try:
        return email.message_from_bytes(skeleton(raw), policy=compat32)
    except Exception as exc:  # compat32 is lenient, but a parser bug must not lose a mail
        defects.append(f"unparseable message: {type(exc).__name__}; only its headers were read")
    try:
        return BytesParser(policy=compat32).parsebytes(raw, headersonly=True)
    except Exception as exc:  # as above
        defects.append(f"unparseable header block: {type(exc).__name__}")
        return Message()


def _parse(raw: bytes) -> MessageView:
    defects: list[str] = []
    msg = _message(raw, defects)
    defects.extend(type(d).__name__ for d in msg.defects)
    headers: list[tuple[str, str]] = []
    raw_from: list[str] = []
    for name, value in msg.raw_items():
        key = name.lower()
        if key == "from":
            raw_from.append(str(value))
        headers.append((key, decode_header_value(str(value), name, defects)))

    def first(key: str) -> str | None:
        return next((v for k, v in headers if k == key), None)

    subject = first("subject") or ""
    if _CONTROL.search(subject):
        defects.append("Subject: control characters (such as CR/LF) replaced by spaces")
    subject = clean_line(subject)
    sender, problem = parse_sender(raw_from)
    try:
        text, html_only, attachments = _body(msg, defects)
    except Exception as exc:  # a broken MIME structure leaves us with the headers
        defects.append(f"unreadable body: {type(exc).__name__}")
        text, html_only, attachments = "", False, ()
    own, quoted = split_quoted(text.replace("\r\n", "\n"))
    message_id = _first_msgid(first("message-id"))
    return MessageView(
        raw=raw,
        message_id=message_id,
        subject=subject,
        sender=sender,
        sender_problem=problem,
        date=clean_line(first("date") or "") or None,
        in_reply_to=_first_msgid(first("in-reply-to")),
        references=tuple(_MSGID.findall(first("references") or "")),
        text=own,
        quoted=quoted,
        html_only=html_only,
        attachments=attachments,
        defects=tuple(defects),
        headers=tuple(headers),
        message=msg,
    )


def parse_headers_only(raw: bytes, note: str, limit: int = 262_144) -> MessageView:
    """A view from the header block alone (for mail too large to analyse); `raw` is kept whole."""
    head = raw[:limit]
    end = min((i for i in (head.find(b"\r\n\r\n"), head.find(b"\n\n")) if i >= 0), default=len(head))
    view = parse(head[:end] + b"\r\n\r\n")
    return replace(view, raw=raw, defects=(*view.defects, note), text="", quoted="", attachments=())


def _first_msgid(value: str | None) -> str | None:
    if not value:
        return None
    m = _MSGID.search(value)
    return m.group(0) if m else None
