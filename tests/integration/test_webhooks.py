"""Webhook actions through the outbox, against a real Dovecot, a real SMTP sink and a real HTTP endpoint on loopback.

Each call lands once (the endpoint dedupes by Idempotency-Key, and the router always sends the same key for
the same call), 500 / 429 / timeouts / dropped connections are retried, another 4xx is final and the failure
unit is told, and the customer's acknowledgement quotes the ticket system's own number (our reference when
the call failed for good), also across a SIGKILL between the call and its record.
"""

from __future__ import annotations

import asyncio
import email
import json
import re
import sqlite3
import time
from collections.abc import Iterator
from email.message import EmailMessage
from email.policy import default
from pathlib import Path

import pytest

from emailrouter.config.loader import load_config
from emailrouter.service.daemon import make_router, run_once
from emailrouter.service.stats import show
from emailrouter.service.store import Store
from tests.conftest import DATA
from tests.integration.test_daemon import _run_cli, once, write_config
from tests.support.dovecot import Dovecot
from tests.support.sink import SmtpSink
from tests.support.webhook import WebhookServer

FAULT = "des-fault-pertamina-id.eml"  # 1.2.5: a ticket to `ticketing`, then the `ticket_ack` reply
TOKEN = "s3cret-helpdesk-token"
HELPDESK = """  ticketing:
    webhook:
      url: @URL@/api/tickets
      token: {env: ER_TEST_HELPDESK_TOKEN}
      ticket_number: ticket.id
      timeout: @TIMEOUT@
      body: |
        {"title": {{ subject | tojson }}, "requester": {{ customer_address | tojson }},
         "external_id": {{ reference | tojson }},
         "priority": {{ ("high" if hard_complaint else "normal") | tojson }},
         "description": {{ summary | tojson }}}
@ADDRESS@"""


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as s:
        yield s


@pytest.fixture
def endpoint() -> Iterator[WebhookServer]:
    with WebhookServer(slow=2.0) as server:
        yield server


@pytest.fixture(autouse=True)
def _token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ER_TEST_HELPDESK_TOKEN", TOKEN)


def helpdesk_config(
    tmp: Path, dovecot: Dovecot, sink: SmtpSink, endpoint: WebhookServer, *, mailbox_too: bool = False
) -> Path:
    """The shipped config with `ticketing` a helpdesk REST endpoint (and, with `mailbox_too`, still a mailbox)."""
    path = write_config(tmp, dovecot, sink)
    text = path.read_text()
    address = "    address: nossa-tickets@cc.example.co.id\n" if mailbox_too else ""
    block = HELPDESK.replace("@URL@", endpoint.url).replace("@TIMEOUT@", "0.5").replace("@ADDRESS@", address)
    text, n = re.subn(r"  ticketing:\n    address: nossa-tickets@cc.example.co.id\n", block, text)
    assert n == 1
    path.write_text(text)
    return path


def sent(sink: SmtpSink, kind: str) -> list[EmailMessage]:
    out = []
    for r in sink.received:
        msg = email.message_from_bytes(r.data, policy=default)
        if f".{kind}@" in str(msg["Message-ID"]):
            out.append(msg)
    assert all(isinstance(m, EmailMessage) for m in out)
    return out  # type: ignore[return-value]


def reply_text(sink: SmtpSink) -> tuple[str, str]:
    replies = sent(sink, "reply")
    assert len(replies) == 1, [str(m["Subject"]) for m in replies]
    body = replies[0].get_body(("plain",))
    assert body is not None
    return str(replies[0]["Subject"]), body.get_content()


def test_a_ticket_is_posted_once_and_the_reply_quotes_the_helpdesk_number(
    tmp_path: Path, dovecot: Dovecot, sink: SmtpSink, endpoint: WebhookServer
) -> None:
    """A fault mail POSTs one JSON ticket with a bearer token and an Idempotency-Key; the customer's reply quotes
    the helpdesk's own number; no mail goes to the endpoint-only unit; a second run sends nothing."""
    path = helpdesk_config(tmp_path, dovecot, sink, endpoint)
    dovecot.append("router", "INBOX", (DATA / FAULT).read_bytes())
    once(load_config(path))
    assert len(endpoint.requests) == 1
    request = endpoint.requests[0]
    assert request.path == "/api/tickets"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert re.fullmatch(r"er-[0-9a-f]{24}", request.headers["idempotency-key"])
    doc = request.json()
    assert doc["requester"].endswith("pertamina.co.id") and doc["priority"] == "normal"
    assert doc["external_id"].startswith("ER-")
    subject, body = reply_text(sink)
    assert "HD-1001" in subject and "HD-1001" in body and doc["external_id"] not in body
    assert not [r for r in sink.received if "nossa-tickets@cc.example.co.id" in r.rcpt_tos]
    assert TOKEN not in (tmp_path / "state.sqlite3").read_bytes().decode("latin-1")
    store = Store(tmp_path / "state.sqlite3")
    try:
        (record,) = show(
            store, "<" + str(email.message_from_bytes((DATA / FAULT).read_bytes())["Message-ID"]).strip("<>") + ">"
        )
    finally:
        store.close()
    (shown,) = [s for s in record["sends"] if s.get("via") == "webhook"]
    assert shown["ticket_number"] == "HD-1001" and shown["status"] == "sent"
    assert shown["idempotency_key"] == request.headers["idempotency-key"]
    once(load_config(path))
    assert len(endpoint.requests) == 1 and len(sent(sink, "reply")) == 1


def test_a_unit_can_be_a_mailbox_and_an_endpoint(
    tmp_path: Path, dovecot: Dovecot, sink: SmtpSink, endpoint: WebhookServer
) -> None:
    """With both an address and a webhook, the ticket goes to each once."""
    path = helpdesk_config(tmp_path, dovecot, sink, endpoint, mailbox_too=True)
    dovecot.append("router", "INBOX", (DATA / FAULT).read_bytes())
    once(load_config(path))
    assert len(endpoint.requests) == 1
    assert len(sent(sink, "ticket")) == 1


def until_replied(path: Path, sink: SmtpSink, runs: int = 12) -> None:
    """`run --once` in this process until the customer's reply went out (each run makes a new router)."""
    for _ in range(runs):
        once(load_config(path))
        if sent(sink, "reply"):
            return
        time.sleep(0.6)
    raise AssertionError("the reply never went out")


def test_500_429_a_timeout_and_a_dropped_connection_are_retried_and_the_ticket_lands_once(
    tmp_path: Path, dovecot: Dovecot, sink: SmtpSink, endpoint: WebhookServer
) -> None:
    """The endpoint fails four ways (two after it already opened the ticket); every retry carries the same
    Idempotency-Key, so one ticket is opened, and the reply, which waited, quotes its number."""
    path = helpdesk_config(tmp_path, dovecot, sink, endpoint)
    endpoint.script("500", "429:1", "timeout", "drop")
    dovecot.append("router", "INBOX", (DATA / FAULT).read_bytes())
    until_replied(path, sink)
    assert [r.answered for r in endpoint.requests] == ["500", "429:1", "timeout", "drop", "201"]
    assert len({r.headers["idempotency-key"] for r in endpoint.requests}) == 1
    assert list(endpoint.landed.values()) == [1]
    subject, body = reply_text(sink)
    assert "HD-1001" in subject and "HD-1001" in body
    assert not sent(sink, "failure")


def test_a_refused_request_is_final_the_failure_unit_is_told_and_the_reply_quotes_our_reference(
    tmp_path: Path, dovecot: Dovecot, sink: SmtpSink, endpoint: WebhookServer
) -> None:
    """A 422 is never retried: the failure unit gets a notice with the refused JSON attached, and the customer's
    acknowledgement quotes our own reference instead of a ticket number."""
    path = helpdesk_config(tmp_path, dovecot, sink, endpoint)
    endpoint.script("422")
    dovecot.append("router", "INBOX", (DATA / FAULT).read_bytes())
    once(load_config(path))
    once(load_config(path))
    assert [r.answered for r in endpoint.requests] == ["422"]
    reference = endpoint.requests[0].json()["external_id"]
    subject, body = reply_text(sink)
    assert reference in subject and reference in body and "HD-" not in body
    (notice,) = sent(sink, "failure")
    assert "[DELIVERY FAILED] ticket to http://127.0.0.1" in str(notice["Subject"])
    text = notice.get_body(("plain",))
    assert text is not None and "the endpoint refused this request: HTTP 422" in text.get_content()
    attached = [p for p in notice.iter_attachments() if p.get_filename() == "request.json"]
    assert len(attached) == 1 and json.loads(attached[0].get_content())["external_id"] == reference


def test_a_sigkill_between_the_call_and_its_record_loses_nothing_and_opens_one_ticket(
    tmp_path: Path, dovecot: Dovecot, sink: SmtpSink, endpoint: WebhookServer
) -> None:
    """`run --once` is killed right after the endpoint answered, before the answer is recorded: the next run
    calls again with the same Idempotency-Key, the endpoint opens nothing new, and the one reply quotes the
    ticket number."""
    path = helpdesk_config(tmp_path, dovecot, sink, endpoint)
    dovecot.append("router", "INBOX", (DATA / FAULT).read_bytes())
    crashed = _run_cli(path, crash_at="after-webhook-answered")
    assert crashed.returncode == -9, crashed.stderr[-2000:]
    assert len(endpoint.requests) == 1 and not sent(sink, "reply")
    finished = _run_cli(path)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert len(endpoint.requests) == 2
    assert len({r.headers["idempotency-key"] for r in endpoint.requests}) == 1
    assert list(endpoint.landed.values()) == [1]
    subject, body = reply_text(sink)
    assert "HD-1001" in subject and "HD-1001" in body
    assert TOKEN not in crashed.stdout + crashed.stderr + finished.stdout + finished.stderr
    assert _run_cli(path).returncode == 0
    assert len(endpoint.requests) == 2 and len(sent(sink, "reply")) == 1


def test_an_endpoint_that_is_down_is_reported_like_the_relay_and_its_call_keeps_its_state(
    tmp_path: Path, dovecot: Dovecot, sink: SmtpSink, endpoint: WebhookServer
) -> None:
    """A dropped connection marks the endpoint down (/healthz, the dependency metric) without changing the call's
    state or attempts; the reply waits for it."""
    path = helpdesk_config(tmp_path, dovecot, sink, endpoint)
    endpoint.script("drop")
    dovecot.append("router", "INBOX", (DATA / FAULT).read_bytes())
    router = make_router(load_config(path), dry_run=False)
    try:
        asyncio.run(run_once(router))
        assert [p for p in router.problems() if p.startswith("endpoint_ticketing: the endpoint is down")]
        assert b'emailrouter_dependency_up{dependency="endpoint_ticketing"} 0.0' in router.metrics.render()
    finally:
        router.store.close()
    db = sqlite3.connect(tmp_path / "state.sqlite3")
    try:
        rows = db.execute("SELECT kind, status, attempts FROM outbox WHERE message_id LIKE '%.webhook@%'").fetchall()
    finally:
        db.close()
    assert rows == [("ticket", "pending", 0)]
    assert not sent(sink, "reply")


def test_a_dry_run_describes_the_call_and_makes_none(
    tmp_path: Path, dovecot: Dovecot, sink: SmtpSink, endpoint: WebhookServer
) -> None:
    """`run --once --dry-run` logs the ticket call to the endpoint's URL in its decision and calls nothing."""
    path = helpdesk_config(tmp_path, dovecot, sink, endpoint)
    dovecot.append("router", "INBOX", (DATA / FAULT).read_bytes())
    done = _run_cli(path, "--dry-run")
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"ticket:{endpoint.url}/api/tickets" in done.stdout + done.stderr
    assert endpoint.requests == [] and sink.received == []
