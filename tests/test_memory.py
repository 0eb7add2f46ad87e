"""Bounded memory on the SMTP side: the DATA payload is not copied when it need not be, nor buffered whole."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator

import pytest
from aiosmtplib.protocol import SMTPProtocol

from emailrouter.config.settings import Endpoint, SmtpConfig
from emailrouter.service import smtp
from emailrouter.service.smtp import SmtpTransport, wire_form
from tests.support.sink import SmtpSink

HEAD = b"From: a@example.com\r\nTo: b@example.com\r\nSubject: big\r\nMessage-ID: <big@example.com>\r\n\r\n"


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as s:
        yield s


def big_message(size: int) -> bytes:
    """About `size` bytes of CRLF lines, some of them starting with a dot."""
    rng = random.Random(8)
    lines = []
    total = 0
    while total < size:
        line = ("." if rng.random() < 0.01 else "") + "".join(rng.choices("abcdefghij0123456789+/", k=76))
        lines.append(line)
        total += len(line) + 2
    return HEAD + ("\r\n".join(lines) + "\r\n").encode()


def test_a_crlf_message_without_leading_dots_is_not_copied() -> None:
    """wire_form hands back the message itself when nothing needs changing, and the end line apart."""
    raw = HEAD + b"hello\r\n"
    body, end = wire_form(raw)
    assert body is raw
    assert end == b".\r\n"


def test_wire_form_fixes_line_ends_and_doubles_leading_dots() -> None:
    """Bare LF and CR become CRLF, a dot at a line start is doubled, and a last line without CRLF gets one."""
    body, end = wire_form(b".top\nmid\r.dot\r\nlast")
    assert body + end == b"..top\r\nmid\r\n..dot\r\nlast\r\n.\r\n"


def test_a_big_message_is_written_in_slices_and_arrives_whole(sink: SmtpSink, monkeypatch: pytest.MonkeyPatch) -> None:
    """An 8 MB message reaches the relay byte for byte, while asyncio's transport never holds more than about
    one slice of it (one write of the whole would have it buffer most of the message)."""
    raw = big_message(8 * 1024 * 1024)
    buffered: list[int] = []

    async def go() -> None:
        endpoint = Endpoint(sink.host, sink.port, "plain", 5.0, None)
        transport = SmtpTransport(SmtpConfig(endpoint, None, None, 30.0))
        original = smtp.SmtpTransport._write_body

        async def watched(protocol: SMTPProtocol, data: bytes) -> None:
            write = protocol.write

            def write_and_measure(chunk: bytes) -> None:
                write(chunk)
                assert isinstance(protocol.transport, asyncio.WriteTransport)
                buffered.append(protocol.transport.get_write_buffer_size())

            monkeypatch.setattr(protocol, "write", write_and_measure)
            await original(protocol, data)

        monkeypatch.setattr(smtp.SmtpTransport, "_write_body", staticmethod(watched))
        await transport.send("a@example.com", ["b@example.com"], raw)
        await transport.close()

    asyncio.run(go())
    assert sink.wait_for(1)[0].data.replace(b"\r\n", b"\n") == raw.replace(b"\r\n", b"\n")
    assert len(buffered) > 8  # written in slices
    assert max(buffered) <= 1024 * 1024
