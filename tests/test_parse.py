"""parse: bytes -> MessageView, never raising on malformed input."""

from __future__ import annotations

import base64

import pytest

from emailrouter.parse import html_to_text, parse, parse_sender, split_quoted
from tests.conftest import eml


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
