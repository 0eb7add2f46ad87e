"""compose: every planned action becomes a real EmailMessage that explains itself; nothing is sent."""

from __future__ import annotations

import email
import json
from email.message import EmailMessage
from email.policy import default

import pytest

from emailrouter.compose import assert_safe_headers
from emailrouter.config import Config
from emailrouter.errors import ComposeError
from emailrouter.pipeline import Routing, route
from tests.conftest import NOW, eml

HARD_DCS = eml(
    "From: Budi Santoso <budi.santoso@gmail.com>",
    "To: cs@cc.example.co.id",
    "Subject: Internet mati lagi",
    "Message-ID: <budi-1@mail.gmail.com>",
    "References: <older@mail.gmail.com>",
    "Date: Mon, 23 Nov 2026 08:00:00 +0700",
    body="Internet saya mati dr kmrn, sudah berkali-kali lapor. Saya viralkan di medsos!\n",
)
DES_FAULT_EN = eml(
    "From: NOC Team <noc@it.pertamina.co.id>",
    "Subject: Link down at Balikpapan site, account 4001234",
    "Message-ID: <noc-77@pertamina.co.id>",
    body="Dear team, our MPLS link is down since 07:00. Please open a ticket and send a technician.\n",
)


def _by_type(routing: Routing, kind: str) -> EmailMessage:
    found = [o.message for o in routing.outgoing if o.action.type == kind]
    assert len(found) == 1, [o.action for o in routing.outgoing]
    return found[0]


def _text(part: EmailMessage | None) -> str:
    assert part is not None
    content: str = part.get_content()
    return content.replace("\r\n", "\n")


def _reparse(msg: EmailMessage) -> EmailMessage:
    parsed = email.message_from_bytes(msg.as_bytes(), policy=default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def test_forward_has_tags_reply_to_summary_and_the_original(config: Config) -> None:
    """A forward goes to the unit, tagged [DCS][HARD], Reply-To the customer, summary on top, original attached."""
    routing = route(HARD_DCS, config, NOW)
    msg = _reparse(_by_type(routing, "forward"))
    assert msg["To"].addresses[0].addr_spec == "dcs-care@cc.example.co.id"
    assert msg["From"].addresses[0].addr_spec == "emailrouter@cc.example.co.id"
    assert msg["Reply-To"].addresses[0].addr_spec == "budi.santoso@gmail.com"
    assert str(msg["Subject"]) == "[DCS][HARD] Internet mati lagi"
    assert msg["X-EmailRouter-Rule"] == "1.2.9-dcs-hard-complaint-educate-forward-escalate"
    assert (msg["X-EmailRouter-Segment"], msg["X-EmailRouter-Intent"], msg["X-EmailRouter-Hard"]) == (
        "DCS",
        "fault",
        "yes",
    )
    text = _text(msg.get_body(("plain",)))
    for expected in (
        "Budi Santoso <budi.santoso@gmail.com>",
        "Segment:         DCS (domain-rule: domain rule gmail.com",
        "Intent:          fault",
        "Hard complaint:  YES (score 6, threshold 4)",
        "media_threat [hard] +4: medsos, viralkan",
        "repeated_report [hard] +2: dr kmrn, sudah berkali-kali",
        "Rule:            1.2.9-dcs-hard-complaint-educate-forward-escalate",
        "Internet saya mati dr kmrn",
    ):
        assert expected in text, expected
    attachments = list(msg.iter_attachments())
    assert [a.get_content_type() for a in attachments] == ["message/rfc822"]


def test_original_is_attached_byte_for_byte(config: Config) -> None:
    """The attached original is the incoming mail unchanged (line endings normalised to CRLF)."""
    raw = HARD_DCS.replace(b"\r\n", b"\n") + "Tambahan: café\n".encode()
    msg = _by_type(route(raw, config, NOW), "forward")
    wire = msg.as_bytes()
    assert raw.replace(b"\n", b"\r\n") in wire


def test_escalation_says_why_it_is_hard(config: Config) -> None:
    """Step 1.2.9's escalation goes to the coordination group and lists the hard-complaint signals."""
    msg = _reparse(_by_type(route(HARD_DCS, config, NOW), "escalate"))
    assert msg["To"].addresses[0].addr_spec == "coordination-group@cc.example.co.id"
    assert str(msg["Subject"]) == "[ESCALATION][DCS][HARD] Internet mati lagi"
    text = _text(msg.get_body(("plain",)))
    assert "Why it is hard: score 6 reached the threshold 4 with:" in text
    assert "The mail itself went to: Consumer Care unit (DCS)." in text
    assert [a.get_content_type() for a in msg.iter_attachments()] == ["message/rfc822"]


def test_education_reply_is_threaded_automatic_and_names_the_unit(config: Config) -> None:
    """The reply goes to the customer, threads under their mail, is marked auto-replied, and says who handles it."""
    msg = _reparse(_by_type(route(HARD_DCS, config, NOW), "reply"))
    assert msg["To"].addresses[0].addr_spec == "budi.santoso@gmail.com"
    assert msg["In-Reply-To"] == "<budi-1@mail.gmail.com>"
    assert msg["References"] == "<older@mail.gmail.com> <budi-1@mail.gmail.com>"
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["Content-Language"] == "id"
    assert str(msg["Subject"]).startswith("Re: Internet mati lagi")
    text = _text(msg)
    assert "Yth. Budi Santoso" in text
    assert "Unit Layanan Pelanggan Consumer (DCS)" in text
    assert "Tim kami akan menghubungi Anda paling lambat 1x24 jam" in text
    assert not list(msg.iter_attachments())


def test_ticket_request_and_acknowledgement_share_the_reference(config: Config) -> None:
    """Step 1.2.5: a structured ticket request, and an English acknowledgement quoting its reference."""
    routing = route(DES_FAULT_EN, config, NOW)
    assert routing.decision.rule == "1.2.5-fault-opens-ticket"
    reference = routing.decision.reference
    ticket = _reparse(_by_type(routing, "ticket"))
    assert ticket["To"].addresses[0].addr_spec == "nossa-tickets@cc.example.co.id"
    assert str(ticket["Subject"]).startswith(f"[TICKET {reference}][DES] Link down")
    parts = {a.get_content_type(): a for a in ticket.iter_attachments()}
    assert set(parts) == {"application/json", "message/rfc822"}
    fields = json.loads(parts["application/json"].get_content())
    assert fields["reference"] == reference
    assert fields["segment"] == "DES"
    assert fields["accounts"] == ["4001234"]
    assert fields["customer_address"] == "noc@it.pertamina.co.id"
    assert fields["customer_name"] == "PT Garuda Logistik Nusantara"
    ack = _reparse(_by_type(routing, "reply"))
    assert ack["Content-Language"] == "en"
    assert reference in str(ack["Subject"])
    assert reference in _text(ack)
    assert "Dear NOC Team" in _text(ack)


def test_message_ids_are_deterministic_and_distinct(config: Config) -> None:
    """Composing the same mail twice gives the same Message-IDs; each action has its own."""
    first = [str(o.message["Message-ID"]) for o in route(HARD_DCS, config, NOW).outgoing]
    again = [str(o.message["Message-ID"]) for o in route(HARD_DCS, config, NOW).outgoing]
    assert first == again
    assert len(set(first)) == len(first) == 3
    assert all(mid.endswith("@cc.example.co.id>") for mid in first)


def test_no_reply_without_a_usable_sender(config: Config) -> None:
    """Mail without From: is forwarded to the human queue; no reply is composed, and the trace says so."""
    routing = route(eml("Subject: internet mati", body="tolong"), config, NOW)
    assert routing.decision.rule == "open-no-usable-sender-to-human-queue"
    assert [o.action.type for o in routing.outgoing] == ["forward"]
    assert routing.outgoing[0].to == ("email-triage@cc.example.co.id",)
    assert "Reply-To" not in routing.outgoing[0].message


@pytest.mark.parametrize(
    "headers",
    [
        ("From: =?utf-8?q?Budi=0D=0ABcc=3A_x=40evil.com?= <budi@gmail.com>", "Subject: internet mati"),
        ("From: budi@gmail.com", "Subject: =?utf-8?q?mati=0D=0ABcc=3A_x=40evil.com?="),
        ("From: budi@gmail.com", "Subject: =?utf-8?b?bWF0aQ0KDQpib2R5?="),
        ("From: budi@gmail.com", "Subject: =?utf-8?q?a=E2=80=A8b=C2=85c?="),
    ],
)
def test_customer_crlf_never_reaches_an_outgoing_header(config: Config, headers: tuple[str, str]) -> None:
    """CR/LF (and other line breaks) in customer names or subjects never end up in our headers."""
    routing = route(eml(*headers, body="internet mati"), config, NOW)
    assert routing.outgoing
    for out in routing.outgoing:
        wire = out.message.as_bytes()
        head = wire.split(b"\r\n\r\n", 1)[0]
        assert not any(line.lower().startswith(b"bcc:") for line in head.split(b"\r\n"))
        for name, value in out.message.items():
            assert "\r" not in str(value) and "\n" not in str(value), name


def test_header_guard_rejects_a_header_with_a_line_break() -> None:
    """The final guard refuses a message whose header value carries CR/LF, whatever put it there."""
    msg = EmailMessage()
    msg["Subject"] = "ok"
    msg._headers.append(("X-Bad", "one\r\nBcc: x@evil.com"))  # bypass the policy on purpose
    with pytest.raises(ComposeError, match="X-Bad"):
        assert_safe_headers(msg)


@pytest.mark.parametrize("raw", [HARD_DCS, DES_FAULT_EN])
def test_plain_values_agree_with_the_headers(config: Config, raw: bytes) -> None:
    """The recipients, subject and Message-ID an Outgoing carries are exactly what its headers say."""
    for out in route(raw, config, NOW).outgoing:
        msg = _reparse(out.message)
        assert tuple(a.addr_spec for a in msg["To"].addresses) == out.to
        assert str(msg["Subject"]) == out.subject
        assert str(msg["Message-ID"]) == out.message_id


def test_an_original_with_overlong_lines_is_still_attached_whole(config: Config) -> None:
    """SMTP refuses lines over 998 bytes: such an original is attached base64-encoded, byte for byte."""
    raw = HARD_DCS + b"x" * 5000 + b"\r\n"
    msg = _by_type(route(raw, config, NOW), "forward")
    wire = msg.as_bytes()
    assert max(len(line) for line in wire.split(b"\r\n")) <= 998
    (attached,) = list(_reparse(msg).iter_attachments())
    assert attached.get_filename() == "original.eml"
    assert attached.get_content() == raw
