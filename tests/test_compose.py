"""compose: every planned action becomes a real EmailMessage that explains itself; nothing is sent."""

from __future__ import annotations

import email
import json
import random
import re
from email.message import EmailMessage
from email.policy import default
from pathlib import Path

import pytest

from emailrouter.config.loader import Config, load_config
from emailrouter.core.compose import (
    EXCERPT_BYTES,
    assert_safe_headers,
    compose_render_failure_notice,
    excerpt,
    indented_json,
)
from emailrouter.core.errors import ComposeError
from emailrouter.core.pipeline import Routing, route
from tests.broken_template import CALM_MAIL, URGENT_MAIL, break_template
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
        "Hard complaint:  YES (score 8, threshold 4)",
        "media_threat [hard] +4: viralkan",
        "repeated_report [hard] +4: sudah berkali-kali, berkali-kali lapor",
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
    assert "Why it is hard: score 8 reached the threshold 4 with:" in text
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


def test_the_ticket_text_says_yes_no_and_none_as_the_summary_does(config: Config) -> None:
    """The ticket's text fields read like the summary below them: `no`, `(none)`, never `False` or a blank."""
    routing = route(DES_FAULT_EN, config, NOW)
    text = _text(_reparse(_by_type(routing, "ticket")).get_body(("plain",)))
    assert re.search(r"^Hard complaint:\s+no$", text, re.M)
    assert re.search(r"^Accounts:\s+4001234$", text, re.M)
    assert "False" not in text and not re.search(r":\s*$", text.split("\n\n")[0], re.M)
    assert "The customer has been sent this reference number." in text


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
    text = _text(_reparse(routing.outgoing[0].message).get_body(("plain",)))
    assert "Reply to this mail to answer the customer" not in text
    assert "there is no one to reply to" in text


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


def _broken(config_copy: Path) -> tuple[Config, Path, int]:
    tpl, line = break_template(config_copy.parent)
    return load_config(config_copy), tpl, line


def test_a_reply_whose_template_fails_still_lets_the_forward_go(config_copy: Path) -> None:
    """A reply that cannot be rendered is recorded as failed, with file, line and reason; the forward still goes."""
    config, tpl, line = _broken(config_copy)
    routing = route(URGENT_MAIL, config, NOW)
    assert routing.decision.rule == "1.2.8-dcs-educate-forward"
    assert [o.action.type for o in routing.outgoing] == ["forward"]
    (failure,) = routing.failed
    assert (failure.template, failure.language, failure.action.unit) == ("education", "id", "dcs_unit")
    assert failure.reason == f"{tpl}:{line}: 'urgent_note' is undefined"
    assert failure.message_id.endswith(".reply@cc.example.co.id>")
    assert failure.message_id not in {o.message_id for o in routing.outgoing}
    calm = route(CALM_MAIL, config, NOW)
    assert [o.action.type for o in calm.outgoing] == ["reply", "forward"] and not calm.failed


def test_the_render_failure_notice_tells_the_failure_unit_what_and_why(config_copy: Path) -> None:
    """The notice goes to the failure unit with the mail's Message-ID, sender, subject, template and reason."""
    config, tpl, line = _broken(config_copy)
    routing = route(URGENT_MAIL, config, NOW)
    unit = config.units[config.router.failures_to]
    (failure,) = routing.failed
    notice = compose_render_failure_notice(
        config.router,
        unit,
        routing.view,
        failure,
        rule=routing.decision.rule,
        reference=routing.decision.reference,
        now=NOW,
    )
    assert_safe_headers(notice)
    msg = _reparse(notice)
    assert msg["To"].addresses[0].addr_spec == unit.address == "email-triage@cc.example.co.id"
    assert msg["Reply-To"].addresses[0].addr_spec == "budi.santoso@gmail.com"
    assert str(msg["Subject"]) == "[REPLY NOT SENT] template education: URGENT internet mati"
    assert msg["Auto-Submitted"] == "auto-generated"
    text = _text(msg)
    for expected in (
        "Message-ID:  <urgent-1@mail.gmail.com>",
        "Sender:      Budi Santoso <budi.santoso@gmail.com>",
        "Subject:     URGENT internet mati",
        "Rule:        1.2.8-dcs-educate-forward",
        f"Reference:   {routing.decision.reference}",
        "Template:    education (Indonesian)",
        f"Reason:      {tpl}:{line}: 'urgent_note' is undefined",
    ):
        assert expected in text, expected
    again = compose_render_failure_notice(
        config.router, unit, routing.view, failure, rule=routing.decision.rule, reference="x", now=NOW
    )
    assert again["Message-ID"] == notice["Message-ID"] != failure.message_id
    assert str(notice["Message-ID"]).endswith(".failure@cc.example.co.id>")


def test_a_failing_reply_to_automated_mail_is_suppressed_not_failed(config_copy: Path) -> None:
    """Automated mail is never answered, so a reply template failing on it is no failure to report."""
    rules = config_copy.parent / "rules.yaml"
    text = rules.read_text()
    start = text.index("  - id: guard-automated-mail-recorded")
    rules.write_text(text[:start] + text[text.index("  - id: 1.2.5-fault-opens-ticket") :])
    config, _, _ = _broken(config_copy)
    auto = URGENT_MAIL.replace(b"To: cs@", b"Auto-Submitted: auto-replied\r\nTo: cs@")
    routing = route(auto, config, NOW)
    assert routing.automated is not None
    assert [o.action.type for o in routing.outgoing] == ["forward"]
    assert routing.failed == ()
    assert any(s.type == "reply" and "never auto-answer" in s.reason for s in routing.suppressed)


def test_the_summary_excerpt_of_a_multi_megabyte_one_line_mail_is_bounded_in_bytes(config: Config) -> None:
    """A 6 MB single-line mail gives a summary of a few KB with a note of what was left out, not a 6 MB one."""
    line = ("internet mati sejak pagi " * 240_000).rstrip()
    raw = HARD_DCS.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n" + line.encode() + b"\r\n"
    assert len(raw) > 6_000_000
    msg = _by_type(route(raw, config, NOW), "forward")
    summary = _text(_reparse(msg).get_body(("plain",)))
    assert len(summary.encode()) < EXCERPT_BYTES + 3000
    shown = summary.split("--- What the customer wrote (the original is attached) ---\n", 1)[1].splitlines()
    assert len(shown[0].encode()) == EXCERPT_BYTES
    assert shown[1] == f"[… {len(line.encode()) - EXCERPT_BYTES:,} more bytes in the attached original]"
    assert len(msg.as_bytes()) < 1.4 * len(raw)  # the original attached (base64), and little more


def test_the_excerpt_is_cut_at_a_character_boundary() -> None:
    """Multi-byte characters are never cut in half; short text is shown whole, without a note."""
    lines = excerpt("é" * 3000 + "漢" * 10)
    assert len(lines) == 2 and set(lines[0]) == {"é"} and len(lines[0].encode()) == EXCERPT_BYTES
    assert lines[1] == f"[… {6000 + 30 - EXCERPT_BYTES:,} more bytes in the attached original]"
    assert excerpt("Internet mati.\nTolong dibantu.") == ["Internet mati.", "Tolong dibantu."]
    many = excerpt("\n".join(f"baris {i}" for i in range(40)))
    assert many[-2] == "baris 24" and many[-1].startswith("[… ") and len(many) == 26


def test_the_ticket_json_is_what_json_dumps_with_indent_writes() -> None:
    """indented_json gives json.dumps(..., ensure_ascii=False, indent=2) byte for byte on flat ticket fields."""
    rng = random.Random(3)
    values: list[object] = [None, True, False, 0, 17, "", "plain", 'quo"te\\back\nline\u2028', "é ünï 漢字 \x00\x1f"]
    assert indented_json({}) == json.dumps({}, ensure_ascii=False, indent=2)
    for _ in range(500):
        fields: dict[str, object] = {}
        for k in range(rng.randint(1, 8)):
            pick = rng.random()
            if pick < 0.3:
                fields[f"k{k}é"] = [rng.choice(values[3:]) for _ in range(rng.randint(0, 3))]
            else:
                fields[f"key_{k}"] = rng.choice(values)
        assert indented_json(fields) == json.dumps(fields, ensure_ascii=False, indent=2)
