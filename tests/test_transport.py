"""SMTP transport against a real aiosmtpd sink: retry classification, partial acceptance, reuse."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from emailrouter.errors import PermanentDeliveryError, TemporaryDeliveryError
from emailrouter.settings import Endpoint, SmtpConfig
from emailrouter.sink import SmtpSink
from emailrouter.smtp import SmtpTransport

RAW = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: hi\r\nMessage-ID: <x@example.com>\r\n\r\nhello\r\n"


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as s:
        yield s


def _transport(sink: SmtpSink) -> SmtpTransport:
    return SmtpTransport(SmtpConfig(Endpoint(sink.host, sink.port, "plain", 5.0, None), None, None))


def _send_all(sink: SmtpSink, batches: list[list[str]]) -> list[str]:
    """Send RAW once per batch of recipients over one transport; the outcome of each as text."""

    async def go() -> list[str]:
        transport = _transport(sink)
        results = []
        for rcpts in batches:
            try:
                await transport.send("a@example.com", rcpts, RAW)
                results.append("sent")
            except TemporaryDeliveryError as exc:
                results.append(f"temporary {exc.code}")
            except PermanentDeliveryError as exc:
                results.append(f"permanent {exc.code}")
        await transport.close()
        return results

    return asyncio.run(go())


def test_one_connection_is_reused_for_many_messages(sink: SmtpSink) -> None:
    """Three messages in a row are all delivered."""
    assert _send_all(sink, [["b@example.com"]] * 3) == ["sent"] * 3
    assert sink.count == 3


@pytest.mark.parametrize(
    ("behaviour", "outcome"),
    [("451", "temporary 451"), ("421", "temporary 421"), ("550", "permanent 550"), ("disconnect", "temporary None")],
)
def test_failures_are_classified_by_whether_a_retry_can_help(sink: SmtpSink, behaviour: str, outcome: str) -> None:
    """4xx and dropped connections are temporary, 5xx permanent; the next message goes through afterwards."""
    sink.script(behaviour)
    results = _send_all(sink, [["b@example.com"], ["b@example.com"]])
    assert results[0].startswith(outcome.split(" None")[0])
    assert results[1] == "sent"
    assert sink.count == 1


def test_partial_acceptance_is_not_sent(sink: SmtpSink) -> None:
    """When one recipient of two is refused, the send raises instead of counting as sent."""
    sink.script("reject_rcpt:c@example.com")
    assert _send_all(sink, [["b@example.com", "c@example.com"]]) == ["permanent 550"]


def test_relay_down_is_a_temporary_failure(sink: SmtpSink) -> None:
    """Nobody listening is a temporary failure (the outbox keeps the message)."""
    sink.set_down(True)
    assert _send_all(sink, [["b@example.com"]]) == ["temporary None"]
    sink.set_down(False)
    assert _send_all(sink, [["b@example.com"]]) == ["sent"]
