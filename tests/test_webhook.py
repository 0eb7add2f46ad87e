"""Webhook actions without a mail server: the config, the composed call, `explain`, the answer's ticket number, the
reply that quotes it, and the HTTP transport's verdicts against a real endpoint on loopback."""

from __future__ import annotations

import asyncio
import email
import json
import re
from datetime import UTC, datetime
from email.policy import default
from pathlib import Path

import pytest

from emailrouter.config.credentials import Secret
from emailrouter.config.loader import Config, load_config
from emailrouter.config.webhooks import WebhookEndpoint
from emailrouter.core.compose import compose_render_failure_notice
from emailrouter.core.errors import ConfigError, EndpointError, PermanentDeliveryError, TemporaryDeliveryError
from emailrouter.core.explain import as_json, as_text
from emailrouter.core.ids import idempotency_key, is_webhook, our_message_id
from emailrouter.core.model import WebhookCall
from emailrouter.core.pipeline import route
from emailrouter.core.webhook import parse_request, quote_remote_reference, request_bytes, ticket_number
from emailrouter.service.webhook import WebhookTransport, retry_after
from tests.conftest import DATA
from tests.support.webhook import WebhookServer

NOW = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
FAULT = "des-fault-pertamina-id.eml"
SHIPPED_TICKETING = "  ticketing:\n    address: nossa-tickets@cc.example.co.id\n"
HELPDESK = """  ticketing:
    webhook:
      url: https://helpdesk.example/api/tickets
      token: {env: ER_TEST_TOKEN}
      ticket_number: ticket.id
      body: |
        {"title": {{ subject | tojson }}, "external_id": {{ reference | tojson }},
         "requester": {{ customer_address | tojson }}}
"""


def with_ticketing(config_copy: Path, block: str) -> Path:
    text = config_copy.read_text()
    assert SHIPPED_TICKETING in text
    config_copy.write_text(text.replace(SHIPPED_TICKETING, block))
    return config_copy


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return [str(p) for p in caught.value.problems]


def line_of(path: Path, text: str) -> int:
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if line.startswith(text))


@pytest.fixture
def helpdesk(config_copy: Path) -> Config:
    return load_config(with_ticketing(config_copy, HELPDESK))


def test_a_ticket_to_an_endpoint_is_one_json_call_with_a_deterministic_idempotency_key(helpdesk: Config) -> None:
    """The ticket action to an endpoint-only unit composes a POST (no mail) whose JSON comes from the template, and
    routing the same mail again gives the same identity and Idempotency-Key."""
    raw = (DATA / FAULT).read_bytes()
    first, again = route(raw, helpdesk, NOW), route(raw, helpdesk, NOW)
    (call,) = [o for o in first.outgoing if o.call is not None]
    assert call.message is None and call.to == ("https://helpdesk.example/api/tickets",)
    assert is_webhook(call.message_id) and call.call is not None
    assert call.call.idempotency_key == idempotency_key(call.message_id)
    assert [o.message_id for o in again.outgoing] == [o.message_id for o in first.outgoing]
    doc = json.loads(call.call.body)
    assert doc["external_id"] == first.decision.reference and doc["requester"].endswith("pertamina.co.id")
    assert not [o for o in first.outgoing if "nossa-tickets@cc.example.co.id" in o.to]


def test_explain_describes_a_webhook_call_without_making_it(helpdesk: Config) -> None:
    """`explain` (text and JSON) names the call, its URL and its Idempotency-Key; nothing is sent."""
    routing = route((DATA / FAULT).read_bytes(), helpdesk, NOW)
    text = as_text(routing, FAULT)
    assert re.search(r"-> ticket\s+to https://helpdesk.example/api/tickets: POST [\d,]+ bytes of JSON", text)
    (described,) = [a for a in as_json(routing, FAULT, helpdesk.version)["actions"] if a.get("via") == "webhook"]
    assert described["type"] == "ticket" and described["unit"] == "ticketing"
    assert re.fullmatch(r"er-[0-9a-f]{24}", str(described["idempotency_key"]))


def test_the_idempotency_key_is_made_from_the_identity_in_one_place() -> None:
    """Two identities give two keys; the same identity always the same one; a foreign id is refused."""
    one = our_message_id("seed-1", "webhook", "cc.example.co.id")
    two = our_message_id("seed-2", "webhook", "cc.example.co.id")
    assert idempotency_key(one) == idempotency_key(one) != idempotency_key(two)
    assert idempotency_key(one) == "er-" + one.split(".")[1]
    with pytest.raises(ValueError):
        idempotency_key("<abc@example.com>")


def test_a_call_is_stored_as_a_small_document_and_read_back_whole() -> None:
    """The outbox's form of a call round-trips, and its first lines (what a sent entry keeps) hold no body."""
    call = WebhookCall("https://h.example/t", '{"a":"é"}'.encode(), "er-" + "0" * 24)
    raw = request_bytes(call)
    assert parse_request(raw) == call
    assert (
        raw.split(b"\r\n\r\n")[0]
        == b"POST https://h.example/t\r\nContent-Type: application/json\r\nIdempotency-Key: er-" + b"0" * 24
    )


@pytest.mark.parametrize(
    ("answer", "path", "number"),
    [
        (b'{"ticket": {"id": "HD-1001"}}', ("ticket", "id"), "HD-1001"),
        (b'{"data": [{"id": 4711}]}', ("data", "0", "id"), "4711"),
        (b'{"ticket": {"id": "HD 1\\r\\nBcc: x"}}', ("ticket", "id"), None),
        (b'{"ticket": {"id": true}}', ("ticket", "id"), None),
        (b'{"ticket": {}}', ("ticket", "id"), None),
        (b"<html>", ("ticket", "id"), None),
    ],
)
def test_the_ticket_number_is_read_from_the_answer_only_when_it_looks_like_one(
    answer: bytes, path: tuple[str, ...], number: str | None
) -> None:
    """A string or number at the path; anything else (missing, not JSON, a boolean, text with CR/LF) is None."""
    assert ticket_number(answer, path) == number


def test_the_reply_quotes_the_ticket_number_in_subject_and_text_and_keeps_its_identity(helpdesk: Config) -> None:
    """Our reference is replaced by the helpdesk's number wherever the reply quoted it; Message-ID, To and
    In-Reply-To stay, and X-EmailRouter-Ticket names the number."""
    routing = route((DATA / FAULT).read_bytes(), helpdesk, NOW)
    (reply,) = [o for o in routing.outgoing if o.action.type == "reply"]
    assert reply.message is not None
    before = email.message_from_bytes(reply.message.as_bytes(), policy=default)
    after = email.message_from_bytes(quote_remote_reference(reply.message.as_bytes(), "HD-1001"), policy=default)
    ours = routing.decision.reference
    assert ours in str(before["Subject"]) and "HD-1001" in str(after["Subject"]) and ours not in str(after["Subject"])
    body = after.get_body(("plain",))
    assert body is not None and "HD-1001" in body.get_content() and ours not in body.get_content()
    for name in ("Message-ID", "To", "In-Reply-To", "From"):
        assert str(after[name]) == str(before[name])
    assert str(after["X-EmailRouter-Ticket"]) == "HD-1001"
    with pytest.raises(ValueError):
        quote_remote_reference(reply.message.as_bytes(), "HD\r\nBcc: x")


def test_a_unit_needs_an_address_or_a_webhook(config_copy: Path) -> None:
    """Neither is a problem at the unit (the line of its first key, as for every mapping), saying what to give."""
    path = with_ticketing(config_copy, "  ticketing:\n")
    at = line_of(path, "  ticketing:") + 1
    assert problems(path) == [f"{path}:{at}: units.ticketing.address: missing: give an address, a webhook, or both"]


def test_a_literal_token_and_a_mailless_failure_unit_are_refused(config_copy: Path) -> None:
    """`token: abc` is a secret in YAML; an endpoint-only failure unit cannot receive failure notices."""
    path = with_ticketing(config_copy, HELPDESK.replace("{env: ER_TEST_TOKEN}", "abc123"))
    assert any("units.ticketing.webhook.token: never put a secret in YAML" in p for p in problems(path))
    text = path.read_text().replace("abc123", "{env: ER_TEST_TOKEN}")
    path.write_text(text.replace("  failures_to: human_queue\n", "  failures_to: ticketing\n"))
    at = line_of(path, "  failures_to: ticketing")
    assert problems(path) == [
        f"{path}:{at}: router.failures_to: unit 'ticketing' has no address: failure notices are mail, the failure"
        " unit needs a mailbox"
    ]


def test_a_body_template_that_breaks_or_is_not_json_is_a_problem_at_its_line(config_copy: Path) -> None:
    """A syntax error, and a body that renders no JSON for a mail without a sender, are named at the template."""
    path = with_ticketing(config_copy, HELPDESK.replace("{{ reference | tojson }}", "{{ reference | tojson }"))
    found = problems(path)
    at = line_of(path, "      body: |")
    assert any(p.startswith(f"{path}:{at}: units.ticketing.webhook.body: template syntax") for p in found), found
    fixed = path.read_text().replace("{{ reference | tojson }", "{{ reference | tojson }}")
    path.write_text(fixed.replace("{{ customer_address | tojson }}", "{{ customer_address }}"))
    found = problems(path)
    assert any(
        p.startswith(f"{path}:{at}: units.ticketing.webhook.body: does not render for") and "is not JSON" in p
        for p in found
    ), found


def endpoint_for(token: Secret | None = None, timeout: float = 0.5) -> WebhookEndpoint:
    return WebhookEndpoint("ticketing", token, timeout, ("ticket", "id"), 900.0)


def call(server: WebhookServer, path: str = "/t") -> WebhookCall:
    return WebhookCall(server.url + path, b'{"x":1}', "er-" + "1" * 24)


@pytest.mark.parametrize(
    ("fault", "error", "retry"),
    [
        ("503", TemporaryDeliveryError, None),
        ("429:7", TemporaryDeliveryError, 7.0),
        ("400", PermanentDeliveryError, None),
        ("404", PermanentDeliveryError, None),
        ("drop", EndpointError, None),
        ("timeout", EndpointError, None),
    ],
)
def test_the_transport_tells_a_bad_request_from_an_endpoint_that_is_down(
    fault: str, error: type[Exception], retry: float | None
) -> None:
    """5xx and 429 are retried (Retry-After kept), other 4xx are final, a drop or no answer means the endpoint
    is down; each error says which."""
    with WebhookServer(slow=1.5) as server:
        server.script(fault)
        transport, endpoint = WebhookTransport(), endpoint_for()

        async def go() -> None:
            try:
                await transport.call(endpoint, call(server))
            finally:
                await transport.close()

        with pytest.raises(error) as caught:
            asyncio.run(go())
    if isinstance(caught.value, TemporaryDeliveryError):
        assert caught.value.retry_after == retry and "will retry" in str(caught.value)
    if isinstance(caught.value, PermanentDeliveryError):
        assert "the endpoint refused this request" in str(caught.value)
    if isinstance(caught.value, EndpointError):
        assert "the endpoint is down" in str(caught.value)


def test_a_token_goes_in_the_authorization_header_or_where_the_url_says_and_never_into_errors(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bearer token by default; `{token}` in the URL (a Telegram bot) puts it there instead, and an error
    message never shows it."""
    monkeypatch.setenv("ER_TEST_TOKEN", "123:ABC")
    token = Secret("env", "ER_TEST_TOKEN")
    with WebhookServer() as server:
        transport, endpoint = WebhookTransport(), endpoint_for(token)

        async def go() -> None:
            try:
                answer = await transport.call(endpoint, call(server, "/api"))
                assert ticket_number(answer, ("ticket", "id")) == "HD-1001"
                await transport.call(endpoint, call(server, "/bot{token}/sendMessage"))
            finally:
                await transport.close()

        asyncio.run(go())
        first, second = server.requests
    assert first.headers["authorization"] == "Bearer 123:ABC"
    assert second.path == "/bot123:ABC/sendMessage" and "authorization" not in second.headers
    monkeypatch.delenv("ER_TEST_TOKEN")
    transport, endpoint = WebhookTransport(), endpoint_for(token)
    with pytest.raises(EndpointError, match="token of unit ticketing: environment variable ER_TEST_TOKEN is not set"):
        asyncio.run(transport.call(endpoint, call(server)))


def test_retry_after_is_read_as_seconds_or_as_a_date() -> None:
    """Delta-seconds, an HTTP date (seconds from now) and nonsense (None)."""
    now = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
    assert retry_after("120", now) == 120.0
    assert retry_after("Tue, 01 Dec 2026 08:00:30 GMT", now) == 30.0
    assert retry_after("soon", now) is None and retry_after(None, now) is None


def test_the_shipped_webhook_examples_pass_check_and_compose(
    config_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The commented helpdesk, Telegram and Slack examples in emailrouter.yaml, put in place of their units, load
    and render: the helpdesk gets a JSON ticket, the chat groups a one-line text."""
    text = config_copy.read_text()
    block = text.split("# --- webhook examples (begin)\n")[1].split("# --- webhook examples (end)\n")[0]
    examples = "".join(line.removeprefix("# ") + "\n" for line in block.splitlines())
    units = re.split(r"(?m)^(?=  \w+:)", examples)
    for unit in filter(None, units):
        key = unit.split(":")[0].strip()
        text = re.sub(rf"(?m)^  {key}:\n(?:    .*\n)+", lambda _: unit, text, count=1)  # noqa: B023
    config_copy.write_text(text)
    config = load_config(config_copy)
    assert {k for k, u in config.units.items() if u.webhook is not None} == {"ticketing", "coordination", "dcs_unit"}
    assert config.units["ticketing"].address == "" and config.units["coordination"].address
    routing = route((DATA / FAULT).read_bytes(), config, NOW)
    (ticket,) = [o for o in routing.outgoing if o.call is not None]
    assert json.loads(ticket.call.body)["ticket"]["external_id"] == routing.decision.reference  # type: ignore[union-attr]
    hard = route((DATA / "dcs-hard-media-threat-informal.eml").read_bytes(), config, NOW)
    chats = {o.unit: json.loads(o.call.body) for o in hard.outgoing if o.call is not None}
    assert set(chats) == {"coordination", "dcs_unit"}
    assert chats["coordination"]["text"].startswith("ESCALATION ") and "[HARD]" in chats["coordination"]["text"]
    assert chats["dcs_unit"]["text"].startswith("Forwarded ")
    assert len([o for o in hard.outgoing if o.message is not None and o.unit in chats]) == 2  # the mails go too


def test_plain_http_to_another_machine_is_warned_about(config_copy: Path) -> None:
    """`check` warns (at the URL's line) about http:// to anything but loopback; https:// and loopback are quiet."""
    path = with_ticketing(config_copy, HELPDESK.replace("https://helpdesk.example", "http://helpdesk.example"))
    warnings = [str(w) for w in load_config(path).warnings]
    at = line_of(path, "      url: http://helpdesk.example")
    assert f"{path}:{at}: units.ticketing.webhook.url: warning: plain http:// to another machine" in "\n".join(warnings)
    path.write_text(path.read_text().replace("http://helpdesk.example", "http://127.0.0.1:8080"))
    assert not [w for w in load_config(path).warnings if "webhook" in str(w)]


BREAKS_ON_SOME_MAIL = """  ticketing:
    address: nossa-tickets@cc.example.co.id
    webhook:
      url: https://helpdesk.example/api/tickets
      body: |
        {"title": {{ subject | tojson }}{% if "ZZBREAK" in subject %}, "x": {{ missing.field }}{% endif %}}
"""


def test_a_body_that_fails_on_one_mail_fails_only_its_call_and_tells_the_failure_unit(config_copy: Path) -> None:
    """The body passes `check` but breaks on this mail: the mail to the unit and the reply still go, the call is a
    render failure (not a quarantine), and the failure unit's notice carries the customer's mail."""
    config = load_config(with_ticketing(config_copy, BREAKS_ON_SOME_MAIL))
    raw = (DATA / FAULT).read_bytes()
    raw = re.sub(rb"^Subject: ", b"Subject: ZZBREAK ", raw, count=1, flags=re.M)
    routing = route(raw, config, NOW)
    (failure,) = routing.failed
    assert failure.call and failure.type == "ticket" and failure.template == "ticketing webhook body"
    assert "missing" in failure.reason
    assert [o.call for o in routing.outgoing if o.call is not None] == []
    assert any("nossa-tickets@cc.example.co.id" in o.to for o in routing.outgoing)
    assert any(o.action.type == "reply" for o in routing.outgoing)
    unit = config.units[config.router.failures_to]
    notice = compose_render_failure_notice(
        config.router, unit, routing.view, failure, rule=routing.decision.rule, reference="ER-1", now=NOW
    )
    assert str(notice["Subject"]).startswith("[CALL NOT MADE] ticket to ticketing's endpoint")
    attached = [p for p in notice.iter_attachments() if p.get_content_type() == "message/rfc822"]
    assert len(attached) == 1
    assert "ticket call not made: ticketing webhook body not rendered" in as_text(routing, FAULT)
