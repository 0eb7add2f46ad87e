"""SMTP transport against a real aiosmtpd sink: retry classification, partial acceptance, reuse."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from emailrouter.config.credentials import Secret
from emailrouter.config.settings import Endpoint, SmtpConfig
from emailrouter.core.errors import PermanentDeliveryError, RelayError, TemporaryDeliveryError, UncertainDeliveryError
from emailrouter.service.smtp import SmtpTransport
from tests.support.sink import SmtpSink

RAW = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: hi\r\nMessage-ID: <x@example.com>\r\n\r\nhello\r\n"


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as s:
        yield s


def _transport(sink: SmtpSink, *, data_timeout: float = 5.0, **login: object) -> SmtpTransport:
    endpoint = Endpoint(sink.host, sink.port, "plain", 5.0, None)
    return SmtpTransport(SmtpConfig(endpoint, login.get("username"), login.get("password"), data_timeout))  # type: ignore[arg-type]


def _send_all(sink: SmtpSink, batches: list[list[str]], **transport: object) -> list[str]:
    """Send RAW once per batch of recipients over one transport; the outcome of each as text."""

    async def go() -> list[str]:
        t = _transport(sink, **transport)  # type: ignore[arg-type]
        results = []
        for rcpts in batches:
            try:
                await t.send("a@example.com", rcpts, RAW)
                results.append("sent")
            except TemporaryDeliveryError as exc:
                results.append(f"temporary {exc.code}")
            except PermanentDeliveryError as exc:
                results.append(f"permanent {exc.code}")
            except RelayError as exc:
                results.append(f"relay {exc.code}")
            except UncertainDeliveryError:
                results.append("uncertain")
        await t.close()
        return results

    return asyncio.run(go())


def test_one_connection_is_reused_for_many_messages(sink: SmtpSink) -> None:
    """Three messages in a row are all delivered over one SMTP connection."""
    assert _send_all(sink, [["b@example.com"]] * 3) == ["sent"] * 3
    assert sink.count == 3
    assert sink.connections == 1


def test_a_refused_message_does_not_cost_the_connection(sink: SmtpSink) -> None:
    """After a 550 for one message (RSET, not a new login) the next message goes over the same connection."""
    sink.script("550")
    assert _send_all(sink, [["b@example.com"], ["b@example.com"]]) == ["permanent 550", "sent"]
    assert sink.connections == 1


@pytest.mark.parametrize(
    ("behaviour", "outcome"),
    [
        ("451", "temporary 451"),
        ("550", "permanent 550"),
        ("421", "relay 421"),
        ("drop_at_data", "relay None"),
        ("disconnect", "uncertain"),
        ("accept_then_drop", "uncertain"),
    ],
)
def test_failures_have_a_scope(sink: SmtpSink, behaviour: str, outcome: str) -> None:
    """4xx/5xx for the message are about the message; 421 and a connection lost before the message went out are
    about the relay; a connection lost after the final "." leaves the send uncertain. The next message goes
    through afterwards."""
    sink.script(behaviour)
    results = _send_all(sink, [["b@example.com"], ["b@example.com"]])
    assert results == [outcome, "sent"]
    assert sink.count == (2 if behaviour == "accept_then_drop" else 1)


def test_an_answer_to_the_final_dot_that_comes_too_late_is_uncertain(sink: SmtpSink) -> None:
    """The relay stored the message but answered after `data_timeout`: uncertain, not a temporary failure."""
    sink.script("accept_then_hang:2")
    assert _send_all(sink, [["b@example.com"]], data_timeout=0.3) == ["uncertain"]
    assert sink.count == 1


def test_a_wrong_password_is_a_relay_error_not_a_message_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """Authentication failure says the relay is unusable (every message waits), never that the message failed."""
    monkeypatch.setenv("EMAILROUTER_TEST_WRONG_SECRET", "wrong")
    with SmtpSink(auth=("router", "right")) as sink:
        password = Secret("env", "EMAILROUTER_TEST_WRONG_SECRET")
        assert _send_all(sink, [["b@example.com"]], username="router", password=password) == ["relay 535"]
        assert sink.count == 0


def test_a_missing_secret_is_a_relay_error(sink: SmtpSink, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unset `{env: ...}` password raises RelayError from the transport, before anything is sent."""
    monkeypatch.delenv("EMAILROUTER_TEST_UNSET_SECRET", raising=False)
    password = Secret("env", "EMAILROUTER_TEST_UNSET_SECRET")
    assert _send_all(sink, [["b@example.com"]], username="router", password=password) == ["relay None"]


def test_partial_acceptance_is_not_sent(sink: SmtpSink) -> None:
    """When one recipient of two is refused, the send raises instead of counting as sent."""
    sink.script("reject_rcpt:c@example.com")
    assert _send_all(sink, [["b@example.com", "c@example.com"]]) == ["permanent 550"]


def test_relay_down_is_a_relay_error(sink: SmtpSink) -> None:
    """Nobody listening is a relay-level failure (the outbox keeps every message as it is)."""
    sink.set_down(True)
    assert _send_all(sink, [["b@example.com"]]) == ["relay None"]
    sink.set_down(False)
    assert _send_all(sink, [["b@example.com"]]) == ["sent"]
