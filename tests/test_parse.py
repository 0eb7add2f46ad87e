"""parse: bytes -> MessageView, never raising on malformed input."""

from __future__ import annotations

import base64
import email
from email.message import Message
from email.policy import compat32
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emailrouter.config.loader import Config
from emailrouter.core.model import MessageView
from emailrouter.core.parse import html_to_text, parse, parse_headers_only, parse_sender, simple_message, split_quoted
from emailrouter.core.pipeline import route
from tests.conftest import DATA, NOW, eml


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("=?UTF-8?B?SW50ZXJuZXQgbWF0aSBzZWphayBwYWdp?=", "Internet mati sejak pagi"),
        ("=?utf-8?q?Tagihan_naik_=E2=80=94_kenapa=3F?=", "Tagihan naik — kenapa?"),
        ("=?iso-8859-1?q?Caf=E9_internet_lemot?=", "Café internet lemot"),
        ("Re: =?UTF-8?B?R2FuZ2d1YW4=?= =?UTF-8?B?IGludGVybmV0?=", "Re: Gangguan internet"),
        ("Plain subject", "Plain subject"),
    ],
)
def test_encoded_subjects_are_decoded(header: str, expected: str) -> None:
    """RFC 2047 encoded words in any known charset are decoded in the subject."""
    view = parse(eml("From: a@example.com", f"Subject: {header}", body="x"))
    assert view.subject == expected
    assert view.defects == ()


def test_unknown_charset_is_decoded_with_replacement_and_recorded() -> None:
    """An encoded word in a charset Python does not know still yields text, and a defect says so."""
    view = parse(eml("From: a@example.com", "Subject: =?x-unknown?q?Internet_mati?=", body="x"))
    assert view.subject == "Internet mati"
    assert any("unknown charset 'x-unknown'" in d for d in view.defects)


def test_crlf_smuggled_in_an_encoded_subject_becomes_spaces() -> None:
    """A subject that decodes to CR/LF is flattened to one line and the defect is recorded."""
    view = parse(eml("From: a@example.com", "Subject: =?utf-8?q?Halo=0D=0ABcc:_victim@example.com?=", body="x"))
    assert "\n" not in view.subject and "\r" not in view.subject
    assert view.subject == "Halo Bcc: victim@example.com"
    assert any("control characters" in d for d in view.defects)


@pytest.mark.parametrize(
    ("value", "address", "name"),
    [
        ("Budi Santoso <Budi.Santoso@Gmail.COM>", "Budi.Santoso@gmail.com", "Budi Santoso"),
        ("budi@example.co.id", "budi@example.co.id", ""),
        ('"Santoso, Budi" <budi@example.co.id>', "budi@example.co.id", "Santoso, Budi"),
        ("=?UTF-8?B?QnVkaSDwn5iK?= <budi@example.co.id>", "budi@example.co.id", "Budi 😊"),
        ("Budi S. <budi@example.co.id>", "budi@example.co.id", "Budi S."),
    ],
)
def test_well_formed_senders_are_parsed(value: str, address: str, name: str) -> None:
    """Ordinary From: values give the address (domain lower-cased) and the decoded display name."""
    sender, problem = parse_sender([value])
    assert problem is None
    assert sender is not None
    assert (sender.address, sender.name) == (address, name)


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ([], "no From: header"),
        (["a@example.com", "b@example.com"], "more than one From: header"),
        (["alice@example.com, bob@example.com"], "2 addresses"),
        (['"x" <alice@example.com> <bob@example.com>'], ""),
        (["alice@example.org)<bob@example.com>"], ""),
        (['"alice@example.org" <bob@example.com'], ""),
        (["alice@"], ""),
        (["@example.com"], ""),
        (["undisclosed-recipients:;"], "0 addresses"),
        (["Budi <budi@localhost>"], "not a plain user@domain"),
        ([""], "empty From: header"),
    ],
)
def test_ambiguous_or_malformed_senders_give_no_sender(values: list[str], reason: str) -> None:
    """Strict sender parsing: anything ambiguous gives no sender and says why, rather than guessing."""
    sender, problem = parse_sender(values)
    assert sender is None
    assert problem is not None and reason in problem


def test_plain_text_is_preferred_over_html() -> None:
    """In multipart/alternative the text/plain part is the customer's text."""
    raw = (
        b"From: a@example.com\r\nSubject: s\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/alternative; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nplain words\r\n"
        b"--b\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>html words</p>\r\n--b--\r\n"
    )
    view = parse(raw)
    assert view.text == "plain words"
    assert not view.html_only


def test_html_only_mail_is_converted_to_text() -> None:
    """When text/html is all there is, it becomes text: blocks are lines, entities decoded, scripts dropped."""
    html = "<html><head><style>p{}</style></head><body><p>Internet&nbsp;mati &amp; lemot</p>"
    html += "<div>Sejak<br>kemarin</div><script>alert(1)</script></body></html>"
    view = parse(eml("From: a@example.com", "Subject: s", body=html, content_type="text/html; charset=utf-8"))
    assert view.html_only
    assert view.text == "Internet mati & lemot\n\nSejak\nkemarin"


def test_html_blockquote_counts_as_quoted() -> None:
    """A Gmail-style HTML reply keeps its <blockquote> history out of the customer's text."""
    html = "<div>Terima kasih infonya</div><blockquote><div>Internet saya mati, saya viralkan!</div></blockquote>"
    text = html_to_text(html)
    own, quoted = split_quoted(text)
    assert own == "Terima kasih infonya"
    assert "viralkan" in quoted


def test_base64_and_latin1_bodies_are_decoded() -> None:
    """Transfer encodings and declared charsets are honoured."""
    body = base64.b64encode("Internet saya mati — tolong!".encode()).decode()
    view = parse(
        b"From: a@example.com\r\nSubject: s\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + body.encode() + b"\r\n"
    )
    assert view.text == "Internet saya mati — tolong!"
    latin = parse(
        b"From: a@example.com\r\nSubject: s\r\nContent-Type: text/plain; charset=iso-8859-1\r\n\r\nCaf\xe9 cr\xe8me\r\n"
    )
    assert latin.text == "Café crème"


def test_undeclared_8bit_body_falls_back_without_raising() -> None:
    """A body in an unknown charset is decoded with replacement characters and recorded as a defect."""
    view = parse(b"From: a@example.com\r\nSubject: s\r\nContent-Type: text/plain; charset=klingon\r\n\r\nhalo \xff\r\n")
    assert view.text.startswith("halo ")
    assert any("unknown charset 'klingon'" in d for d in view.defects)


@pytest.mark.parametrize(
    "history",
    [
        "> Internet saya mati, saya viralkan!\n> dr kmrn",
        "On Mon, 23 Nov 2026 at 08:00, CS <cs@example.co.id> wrote:\nInternet mati, viralkan!",
        "On Mon, 23 Nov 2026 at 08:00, Customer Service\n<cs@example.co.id> wrote:\nInternet mati, viralkan!",
        "Pada Sen, 23 Nov 2026 pukul 08.00 CS <cs@example.co.id> menulis:\nInternet mati, viralkan!",
        "From: CS <cs@example.co.id>\nSent: Monday, 23 November 2026 08:00\nTo: Budi\nSubject: mati\n\nviralkan!",
        "Dari: CS <cs@example.co.id>\nTerkirim: Senin, 23 November 2026 08.00\n\nviralkan!",
        "-----Original Message-----\nFrom: CS\nInternet mati, viralkan!",
    ],
)
def test_quoted_history_is_kept_apart(history: str) -> None:
    """Quoted lines and everything after a reply header are history, not the customer's new text."""
    own, quoted = split_quoted(f"Terima kasih, sudah normal kembali.\n\n{history}")
    assert own == "Terima kasih, sudah normal kembali."
    assert "viralkan" in quoted


def test_a_from_line_without_sent_is_not_history() -> None:
    """'From:' in a customer's own text does not cut the mail unless an Outlook Sent:/Date: line follows."""
    own, quoted = split_quoted("From: my office the internet is down\nplease help")
    assert own == "From: my office the internet is down\nplease help"
    assert quoted == ""


def test_attachments_are_listed_with_name_type_and_size() -> None:
    """Attachments are listed, not read as text; the size is that of the decoded content."""
    pdf = base64.b64encode(b"%PDF-1.4 " + b"x" * 3000).decode()
    raw = (
        "From: a@example.com\r\nSubject: invoice\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n"
        '--b\r\nContent-Type: application/pdf; name="tagihan.pdf"\r\nContent-Disposition: attachment; '
        'filename="tagihan.pdf"\r\nContent-Transfer-Encoding: base64\r\n\r\n' + pdf + "\r\n--b--\r\n"
    ).encode()
    view = parse(raw)
    assert view.text == "see attached"
    assert len(view.attachments) == 1
    attachment = view.attachments[0]
    assert (attachment.filename, attachment.content_type) == ("tagihan.pdf", "application/pdf")
    assert attachment.size == 3009


def test_missing_from_gives_no_sender_but_still_parses() -> None:
    """A mail without From: still yields subject and text, with the reason for the missing sender."""
    view = parse(eml("Subject: tolong", body="internet mati"))
    assert view.sender is None
    assert view.sender_problem == "no From: header"
    assert view.text == "internet mati"


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\x00\x01\x02",
        b"Subject: =?utf-8?b?!!!?=\r\n\r\n",
        b'Content-Type: multipart/mixed; boundary="x"\r\n\r\n--x\r\nContent-Type: text/plain\r\n',
        b"Content-Type: text/plain; charset=\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!not base64",
        b"From: \xff\xfe <a@b.c>\r\nSubject: \xc3\x28\r\n\r\n\xff",
        b"Content-Type: multipart/mixed\r\n\r\nno boundary",
        b"\r\n" * 1000,
    ],
)
def test_malformed_input_never_raises(raw: bytes) -> None:
    """Whatever the bytes, parse returns a view."""
    view = parse(raw)
    assert view.raw == raw


def test_message_ids_and_threading_headers_are_extracted() -> None:
    """Message-ID, In-Reply-To and References are kept for threading the reply."""
    view = parse(
        eml(
            "From: a@example.com",
            "Subject: s",
            "Message-ID: <m3@example.com>",
            "In-Reply-To: <m2@example.com>",
            "References: <m1@example.com>\r\n <m2@example.com>",
            body="x",
        )
    )
    assert view.message_id == "<m3@example.com>"
    assert view.in_reply_to == "<m2@example.com>"
    assert view.references == ("<m1@example.com>", "<m2@example.com>")


# --------------------------------------------------------------------------- hostile input never raises


def _strings(view: MessageView) -> list[str]:
    """Every text the view hands to the later stages."""
    names = [a.filename for a in view.attachments if a.filename]
    sender = [view.sender.address, view.sender.name] if view.sender else []
    return [
        view.subject,
        view.text,
        view.quoted,
        *(view.date or "",),
        *(view.message_id or "",),
        *(view.in_reply_to or "",),
        *view.references,
        *view.defects,
        *(v for _, v in view.headers),
        *names,
        *sender,
    ]


def _assert_sound(view: MessageView) -> None:
    """Every string can be encoded again (no lone surrogate), the subject is one line, ids are printable ASCII."""
    for text in _strings(view):
        text.encode("utf-8")
    assert "\n" not in view.subject and "\r" not in view.subject
    for mid in (view.message_id, view.in_reply_to, *view.references):
        assert mid is None or (mid.isascii() and mid.isprintable() and mid.startswith("<"))


@pytest.mark.parametrize(
    "codec",
    ["rot13", "base64_codec", "zlib_codec", "hex", "uu", "bz2_codec", "quopri", "idna", "punycode", "undefined"],
)
def test_non_text_codecs_in_encoded_words_are_defects(codec: str) -> None:
    """An encoded word naming a codec that is no text charset (=?rot13?Q?...?=) decodes as a defect, never raises."""
    view = parse(eml("From: a@example.com", f"Subject: Re: =?{codec}?Q?uryyb?= internet mati", body="x"))
    assert view.subject == "Re: uryyb internet mati"
    assert any(f"not a text charset {codec!r}" in d for d in view.defects)
    b64 = parse(eml("From: a@example.com", f"Subject: =?{codec}?B?aGVsbG8=?=", body="x"))
    assert b64.subject == "hello"


@pytest.mark.parametrize(
    ("subject", "defect"),
    [
        ("=?utf-8?B?SGFsb?=", "undecodable encoded word"),  # broken base64 (a dangling character)
        ("=?utf-8?B?a?=", "undecodable encoded word"),
        ("=?klingon?Q?Halo?=", "unknown charset 'klingon'"),
        ("=?utf-16?Q?x?=", "text is not valid utf-16"),
        ("=?" + "x" * 500 + "?Q?Halo?=", "unknown charset"),
    ],
)
def test_broken_encoded_words_are_defects(subject: str, defect: str) -> None:
    """Broken base64, unknown charsets and text invalid in its charset give a subject and a defect, never an error."""
    view = parse(eml("From: a@example.com", f"Subject: {subject}", body="x"))
    assert any(defect in d for d in view.defects)
    assert all(len(d) < 300 for d in view.defects)
    _assert_sound(view)


@pytest.mark.parametrize("charset", ["rot13", "base64_codec", "idna", "x-klingon", "utf-8\\x00", '"'])
def test_a_body_in_a_non_text_charset_keeps_its_text(charset: str) -> None:
    """A text part declaring a charset that cannot decode text is read as UTF-8 and the defect recorded."""
    view = parse(
        eml("From: a@example.com", "Subject: s", body="internet mati", content_type=f"text/plain; charset={charset}")
    )
    assert view.text == "internet mati"
    assert any("charset" in d for d in view.defects)


def test_lone_surrogates_never_reach_the_view_or_the_outgoing_mail(config: Config) -> None:
    """utf-7 can decode to a lone surrogate; the view replaces it, so composing a reply or forward cannot fail."""
    raw = (
        b"From: =?utf-7?Q?+2AA-?= Budi <budi@gmail.com>\r\nSubject: internet mati =?utf-7?Q?+2AA-?=\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
        b"--b\r\nContent-Type: text/plain; charset=utf-7\r\n\r\ninternet mati sejak pagi +2AA-\r\n"
        b"--b\r\nContent-Type: text/plain\r\nContent-Disposition: attachment; filename*=utf-7''+2AA-.txt\r\n\r\nx\r\n"
        b"--b--\r\n"
    )
    view = parse(raw)
    _assert_sound(view)
    assert "\ufffd" in view.subject and "\ufffd" in view.text
    routing = route(raw, config, NOW)
    assert routing.outgoing and all(o.message.as_bytes() for o in routing.outgoing)


def _with_attachment(part_headers: bytes, body: bytes = b"hello") -> bytes:
    return (
        b"From: a@example.com\r\nSubject: s\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
        b"--b\r\nContent-Type: text/plain\r\n\r\ninternet mati\r\n--b\r\n"
        + part_headers
        + b"\r\n\r\n"
        + body
        + b"\r\n--b--\r\n"
    )


def test_rfc2231_file_names_are_decoded_and_a_bad_one_costs_only_its_name() -> None:
    """filename*=utf-8''... names decode (they used to cost the whole body); an undecodable one is a defect."""
    accented = parse(_with_attachment(b"Content-Disposition: attachment; filename*=utf-8''Tagihan%20%C3%A9.pdf"))
    assert accented.text == "internet mati"
    assert [a.filename for a in accented.attachments] == ["Tagihan é.pdf"]
    assert accented.defects == ()
    bad = parse(_with_attachment(b"Content-Disposition: attachment; filename*=idna''abc"))
    assert bad.text == "internet mati"
    assert [a.filename for a in bad.attachments] == ["(undecodable name)"]
    assert any("attachment name: undecodable" in d for d in bad.defects)


def test_an_unreadable_part_costs_only_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    """If reading one MIME part fails, the customer's text in the other parts is kept and the defect recorded."""
    import emailrouter.core.parse as parse_module

    real = parse_module._filename

    def failing(part: Message, defects: list[str]) -> str | None:
        if part.get_content_type() == "image/png":
            raise RuntimeError("boom")
        return real(part, defects)

    monkeypatch.setattr(parse_module, "_filename", failing)
    view = parse(_with_attachment(b"Content-Type: image/png"))
    assert view.text == "internet mati"
    assert "unreadable MIME part: RuntimeError" in view.defects


def test_thousands_of_nested_messages_keep_the_headers() -> None:
    """A bomb of nested message/rfc822 parts (the parser recurses) still gives sender, subject and Message-ID."""
    nested = b"internet mati"
    for _ in range(3000):
        nested = b"Content-Type: message/rfc822\r\n\r\n" + nested
    raw = b"From: budi@gmail.com\r\nSubject: bom\r\nMessage-ID: <bomb@gmail.com>\r\n" + nested
    view = parse(raw)
    assert (view.sender and view.sender.address, view.subject, view.message_id) == (
        "budi@gmail.com",
        "bom",
        "<bomb@gmail.com>",
    )
    assert any("only its headers were read" in d for d in view.defects)


def test_parse_returns_a_view_even_when_its_own_code_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug anywhere inside parse gives a view with the defect, never an exception that would quarantine the mail."""
    import emailrouter.core.parse as parse_module

    def broken(text: str) -> tuple[str, str]:
        raise IndexError("a bug")

    monkeypatch.setattr(parse_module, "split_quoted", broken)
    raw = eml("From: a@example.com", "Subject: s", body="x")
    view = parse(raw)
    assert view.raw == raw and view.sender is None
    assert view.defects == ("unparseable message: IndexError",)


_ATOMS = [
    b"=?", b"?=", b"?Q?", b"?B?", b"?q?", b"utf-8", b"utf-7", b"rot13", b"base64_codec", b"idna", b"punycode",
    b"+2AA-", b"<", b">", b"@", b'"', b"(", b")", b"\\", b",", b";", b":", b"\r\n", b"\r\n ", b"\n", b"\r",
    b"\x00", b"\xff", b"\xc3\xa9", b"\xe2\x80\xa8", b"=", b"*", b"'", b"''", b"%C3%A9", b"%FF", b"--b", b"--b--",
    b"multipart/mixed; boundary=b", b"multipart/report; boundary=b", b"message/rfc822", b"message/delivery-status",
    b"text/plain", b"text/html", b"charset=", b"filename*=", b"filename*0*=", b"name=", b"base64",
    b"quoted-printable", b"x-uuencode", b"aGVsbG8", b"MAILER-DAEMON", b"er.", b" ", b"\t", b"a", b"1",
]  # fmt: skip
_HEADER_NAMES = [
    "From", "Subject", "Message-ID", "In-Reply-To", "References", "Content-Type", "Content-Transfer-Encoding",
    "Content-Disposition", "Return-Path", "Date", "To", "MIME-Version", "X-Loop", "Auto-Submitted", "Precedence",
]  # fmt: skip
_value = st.lists(st.one_of(st.sampled_from(_ATOMS), st.binary(max_size=8)), max_size=24).map(b"".join)
_header = st.tuples(st.one_of(st.sampled_from(_HEADER_NAMES), st.text("abcXYZ-", min_size=1, max_size=8)), _value)
_mail = st.tuples(st.lists(_header, max_size=12), _value, st.lists(st.tuples(st.lists(_header, max_size=4), _value)))


def _build(mail: tuple[list[tuple[str, bytes]], bytes, list[tuple[list[tuple[str, bytes]], bytes]]]) -> bytes:
    headers, body, parts = mail
    head = b"".join(name.encode() + b": " + value + b"\r\n" for name, value in headers)
    tail = b"".join(
        b"--b\r\n" + b"".join(n.encode() + b": " + v + b"\r\n" for n, v in h) + b"\r\n" + v2 + b"\r\n"
        for h, v2 in parts
    )
    return head + b"\r\n" + body + b"\r\n" + tail + (b"--b--\r\n" if parts else b"")


@settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(_mail)
def test_garbage_headers_and_parts_never_raise(mail: Any) -> None:
    """Property: any header block and MIME structure built from hostile pieces parses into a sound view."""
    raw = _build(mail)
    view = parse(raw)
    assert view.raw == raw
    _assert_sound(view)
    _assert_sound(parse_headers_only(raw, "note"))


@settings(max_examples=300, deadline=None, database=None)
@given(st.binary(max_size=3000))
def test_random_bytes_never_raise(raw: bytes) -> None:
    """Property: any bytes at all parse into a sound view."""
    view = parse(raw)
    assert view.raw == raw
    _assert_sound(view)


def _state(msg: object) -> object:
    """Everything the standard parser sets on a message and its parts."""
    if not isinstance(msg, Message):
        return repr(msg)
    payload = msg._payload  # type: ignore[attr-defined]
    return (
        type(msg),
        msg._headers,  # type: ignore[attr-defined]
        msg.get_unixfrom(),
        msg.get_charset(),
        msg.preamble,
        msg.epilogue,
        [type(d).__name__ for d in msg.defects],
        msg.get_default_type(),
        msg.policy,
        [_state(p) for p in payload] if isinstance(payload, list) else payload,
    )


def _standard(raw: bytes) -> Message:
    return email.message_from_bytes(raw, policy=compat32)


def test_simple_message_is_the_standard_parsers_message_for_every_fixture_and_generated_mail() -> None:
    """Where simple_message builds a message (the fixtures, 1,500 generated and damaged MIME trees),
    it is the one the standard parser makes, part by part; it does build a good share of them."""
    from tests.test_lean_memory import generated_mails

    mails = [p.read_bytes() for p in sorted(DATA.rglob("*.eml"))] + list(generated_mails(1_500, seed=7))
    built = 0
    for n, raw in enumerate(mails):
        msg = simple_message(raw)
        if msg is not None:
            built += 1
            assert _state(msg) == _state(_standard(raw)), n
    assert built > 400


@pytest.mark.parametrize(
    "raw",
    [
        b"Subject: a\r\n\r\nline\rwith a lone CR\r\n",
        b"From nobody Mon Jan  1 00:00:00 2026\nSubject: a\n\nbody\n",
        b"Subject: a\nno header line\n\nbody\n",
        b" folded first\nSubject: a\n\nbody\n",
        b'Content-Type: multipart/mixed; boundary="b"\n\n--b\nContent-Type: text/plain\n\nx\n',  # no closing delimiter
        b'Content-Type: multipart/digest; boundary="b"\n\n--b\n\nx\n--b--\n',
        b'Content-Type: multipart/mixed; boundary="b"\n\n--b\n--b\nContent-Type: text/plain\n\nx\n--b--\n',
        b'Content-Type: multipart/mixed; boundary="b"\n\n--b\nContent-Type: multipart/alternative; boundary="c"\n\n'
        b"--c\n\nx\n--c--\n--b--\n",
        b"Content-Type: message/rfc822\n\nSubject: inner\n\nbody\n",
    ],
)
def test_simple_message_leaves_other_shapes_to_the_standard_parser(raw: bytes) -> None:
    """A lone CR, an envelope line, a line that is no header field, a missing closing delimiter, a digest, two
    delimiters in a row, nesting, an attached message: no message of its own (the standard parser reads these)."""
    assert simple_message(raw) is None
    assert _state(parse(raw).message) == _state(_standard(raw))


@pytest.mark.parametrize(
    "raw",
    [
        b"Subject: a\r\nX-Folded: one\r\n\ttwo\r\n\r\nbody\r\nline two",
        b"Subject: only headers",
        b"Subject: a\n\n",
        b'Content-Type: multipart/alternative; boundary="=a="\n\npreamble\n\n--=a= \nContent-Type: text/plain\n\nx\n\n'
        b"--=a=\n\nno headers\n--=a=--\nepilogue\n",
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nx --b\r\n--b--',
    ],
)
def test_simple_message_builds_the_usual_shapes_as_the_standard_parser_does(raw: bytes) -> None:
    """Folded fields, no body, a preamble and an epilogue, a delimiter with trailing blanks, a part without headers,
    a delimiter inside a line, a closing delimiter at the very end: the standard parser's message."""
    msg = simple_message(raw)
    assert msg is not None
    assert _state(msg) == _state(_standard(raw))
