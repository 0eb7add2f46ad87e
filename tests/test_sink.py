"""sink: the loopback SMTP sink, driven by a real SMTP client (aiosmtplib)."""

from __future__ import annotations

import asyncio
import email
import email.policy
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import aiosmtplib
import pytest

from tests.support.sink import Received, SmtpSink

ROOT = Path(__file__).resolve().parent.parent
SENDER = "router@example.com"
MESSAGE = (
    b"From: router@example.com\r\n"
    b"To: agent@example.com\r\n"
    b"Subject: Test\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"Halo, internet mati sejak pagi.\r\n"
    b".a line that starts with a dot\r\n"
)


def send(
    sink: SmtpSink,
    recipients: list[str] | None = None,
    *,
    message: bytes = MESSAGE,
    username: str | None = None,
    password: str | None = None,
) -> tuple[dict[str, aiosmtplib.SMTPResponse], str]:
    """Send one message to the sink with aiosmtplib on a fresh connection; returns what sendmail returns."""
    return asyncio.run(
        aiosmtplib.send(
            message,
            sender=SENDER,
            recipients=recipients or ["agent@example.com"],
            hostname=sink.host,
            port=sink.port,
            local_hostname="client.test",
            start_tls=False,
            username=username,
            password=password,
            timeout=10,
        )
    )


def sink_threads() -> list[threading.Thread]:
    """The SMTP sink server threads currently alive."""
    return [thread for thread in threading.enumerate() if thread.name.startswith("smtp-sink-")]


@pytest.fixture(autouse=True)
def no_sink_left_running() -> Iterator[None]:
    """Fail a test that leaves a sink thread running."""
    yield
    assert sink_threads() == []


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    """A running sink on a free port, stopped after the test."""
    with SmtpSink() as running:
        yield running


def test_accepted_message_is_recorded_with_envelope_and_bytes(sink: SmtpSink) -> None:
    """A sent message is recorded with its envelope sender, recipients and the DATA bytes as sent."""
    before = time.time()
    errors, reply = send(sink, ["agent@example.com", "lead@example.com"])
    assert errors == {}
    assert reply.startswith("2.0.0")
    [received] = sink.received
    assert received.mail_from == SENDER
    assert received.rcpt_tos == ("agent@example.com", "lead@example.com")
    assert received.data == MESSAGE
    assert before <= received.when <= time.time()


def test_port_zero_gives_each_sink_its_own_free_port() -> None:
    """Two sinks started with the default port listen on different, real ports."""
    with SmtpSink() as first, SmtpSink() as second:
        assert first.host == second.host == "127.0.0.1"
        assert 0 not in (first.port, second.port)
        assert first.port != second.port


def test_start_and_stop_work_without_a_with_block() -> None:
    """Explicit start() and stop() run and end the server; stop() twice is harmless."""
    sink = SmtpSink()
    sink.start()
    try:
        running_while_started = sink.running
        send(sink)
        assert len(sink.received) == 1
    finally:
        sink.stop()
        sink.stop()
    assert running_while_started
    assert not sink.running
    assert sink_threads() == []


def test_received_is_a_snapshot_not_the_live_list(sink: SmtpSink) -> None:
    """Changing the list returned by `received` does not change what the sink recorded."""
    send(sink)
    snapshot = sink.received
    snapshot.clear()
    assert len(sink.received) == 1


def test_save_to_writes_each_message_as_a_readable_eml(tmp_path: Path) -> None:
    """With save_to, every accepted message is also a numbered .eml named after its first recipient."""
    folder = tmp_path / "outbox"
    with SmtpSink(save_to=folder) as sink:
        send(sink, ["Agent Desk <agent@example.com>"])
        send(sink, ["o'brien%x@example.com"])
        sink.wait_for(2, timeout=5)
    names = sorted(path.name for path in folder.iterdir())
    assert names == ["0001-agent@example.com.eml", "0002-o_brien_x@example.com.eml"]
    saved = (folder / names[0]).read_bytes()
    assert saved == MESSAGE
    parsed = email.message_from_bytes(saved, policy=email.policy.default)
    assert parsed["Subject"] == "Test"


def test_save_to_continues_numbering_in_a_reused_folder(tmp_path: Path) -> None:
    """A sink saving into a folder that already has saved messages never overwrites them."""
    (tmp_path / "0007-old@example.com.eml").write_bytes(b"old")
    with SmtpSink(save_to=tmp_path) as sink:
        send(sink)
    assert (tmp_path / "0007-old@example.com.eml").read_bytes() == b"old"
    assert (tmp_path / "0008-agent@example.com.eml").read_bytes() == MESSAGE


@pytest.mark.parametrize("code", [451, 550])
def test_scripted_data_failure_reaches_the_client_and_is_not_recorded(sink: SmtpSink, code: int) -> None:
    """A scripted 451 or 550 makes aiosmtplib raise SMTPDataError with that code, and nothing is recorded."""
    sink.script(str(code))
    with pytest.raises(aiosmtplib.SMTPDataError) as caught:
        send(sink)
    assert caught.value.code == code
    assert sink.received == []


def test_scripted_421_reaches_aiosmtplib_as_a_data_error(sink: SmtpSink) -> None:
    """aiosmtplib 5.x reports a 421 reply to DATA as SMTPDataError(code=421), not as a disconnect."""
    sink.script("421")
    with pytest.raises(aiosmtplib.SMTPDataError) as caught:
        send(sink)
    assert caught.value.code == 421
    assert sink.received == []


def smtp_dialogue(sink: SmtpSink, *commands: bytes) -> bytes:
    """Send raw SMTP commands (DATA content included) and return everything the server wrote until it closed."""
    with socket.create_connection((sink.host, sink.port), timeout=5) as conn:
        conn.sendall(b"".join(commands))
        replies = b""
        while chunk := conn.recv(4096):
            replies += chunk
        return replies


TRANSACTION = (
    b"EHLO client.test\r\n",
    b"MAIL FROM:<router@example.com>\r\n",
    b"RCPT TO:<agent@example.com>\r\n",
    b"DATA\r\n",
    b"Subject: x\r\n\r\nbody\r\n.\r\n",
)


def test_scripted_421_replies_and_then_the_server_closes_the_connection(sink: SmtpSink) -> None:
    """After a scripted 421 the sink itself closes the connection, whatever the client does next."""
    sink.script("421")
    replies = smtp_dialogue(sink, *TRANSACTION, b"NOOP\r\n")
    assert replies.rstrip().splitlines()[-1].startswith(b"421 ")
    assert b"\r\n250 OK\r\n250 OK\r\n354 " in replies


def test_scripted_disconnect_drops_the_connection_without_a_reply(sink: SmtpSink) -> None:
    """A scripted disconnect closes the connection after the data, with no reply to it; aiosmtplib sees a disconnect."""
    sink.script("disconnect")
    replies = smtp_dialogue(sink, *TRANSACTION)
    assert replies.rstrip().splitlines()[-1].startswith(b"354 ")
    sink.script("disconnect")
    with pytest.raises(aiosmtplib.SMTPServerDisconnected):
        send(sink)
    assert sink.received == []


def test_script_is_used_one_behaviour_per_message_then_ok(sink: SmtpSink) -> None:
    """Queued behaviours apply to consecutive messages in order; once used up, messages are accepted."""
    sink.script("451", "ok", "550")
    outcomes: list[int] = []

    async def four_messages() -> None:
        async with aiosmtplib.SMTP(
            hostname=sink.host, port=sink.port, local_hostname="client.test", start_tls=False
        ) as client:
            for _ in range(4):
                try:
                    await client.sendmail(SENDER, ["agent@example.com"], MESSAGE)
                    outcomes.append(250)
                except aiosmtplib.SMTPDataError as exc:
                    outcomes.append(exc.code)

    asyncio.run(four_messages())
    assert outcomes == [451, 250, 550, 250]
    assert len(sink.received) == 2
    assert sink.pending_script == ()


def test_reject_rcpt_refuses_that_recipient_and_delivers_to_the_others(sink: SmtpSink) -> None:
    """reject_rcpt:<address> gives that recipient a 550 in sendmail's errors while the message reaches the others."""
    sink.script("reject_rcpt:Lead@Example.com")
    errors, _ = send(sink, ["agent@example.com", "lead@example.com"])
    assert list(errors) == ["lead@example.com"]
    assert errors["lead@example.com"].code == 550
    [received] = sink.received
    assert received.rcpt_tos == ("agent@example.com",)


def test_reject_rcpt_of_the_only_recipient_refuses_the_message(sink: SmtpSink) -> None:
    """When the rejected address is the only recipient, aiosmtplib raises SMTPRecipientsRefused."""
    sink.script("reject_rcpt:agent@example.com")
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
        send(sink, ["agent@example.com"])
    assert sink.received == []


@pytest.mark.parametrize("behaviour", ["", "500", "OK", "reject_rcpt:", "reject_rcpt:   "])
def test_unknown_behaviour_is_refused_before_anything_is_queued(sink: SmtpSink, behaviour: str) -> None:
    """script() raises ValueError for a behaviour it does not know and queues none of the batch."""
    with pytest.raises(ValueError, match="unknown sink behaviour"):
        sink.script("451", behaviour)
    assert sink.pending_script == ()


def test_set_down_refuses_connections_until_it_is_back_on_the_same_port(sink: SmtpSink) -> None:
    """While down the port refuses connections; set_down(False) listens on the same port again."""
    port = sink.port
    sink.set_down(True)
    down_while_down = sink.is_down
    with pytest.raises(aiosmtplib.SMTPConnectError):
        send(sink)
    sink.set_down(False)
    assert down_while_down
    assert not sink.is_down
    assert sink.port == port
    send(sink)
    assert len(sink.received) == 1


def test_set_down_drops_connections_that_are_already_open(sink: SmtpSink) -> None:
    """A client connected before the outage loses its connection when the sink goes down."""

    async def send_across_outage() -> None:
        async with aiosmtplib.SMTP(
            hostname=sink.host, port=sink.port, local_hostname="client.test", start_tls=False
        ) as client:
            await client.sendmail(SENDER, ["agent@example.com"], MESSAGE)
            await asyncio.to_thread(sink.set_down, True)
            with pytest.raises(aiosmtplib.SMTPServerDisconnected):
                await client.sendmail(SENDER, ["agent@example.com"], MESSAGE)

    asyncio.run(send_across_outage())
    assert len(sink.received) == 1


def test_stop_while_down_ends_the_thread(sink: SmtpSink) -> None:
    """A sink that is down can still be stopped cleanly."""
    sink.set_down(True)
    sink.stop()
    assert sink_threads() == []


def test_auth_is_required_when_configured() -> None:
    """With auth=(user, password), mail needs AUTH first and only the right credentials are accepted."""
    with SmtpSink(auth=("router", "s3cret")) as sink:
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
            send(sink)
        assert refused.value.code == 530
        with pytest.raises(aiosmtplib.SMTPAuthenticationError) as wrong:
            send(sink, username="router", password="wrong")
        assert wrong.value.code == 535
        send(sink, username="router", password="s3cret")
        assert len(sink.received) == 1


def test_auth_is_offered_only_when_configured() -> None:
    """The EHLO reply lists AUTH PLAIN and LOGIN only for a sink given credentials."""

    async def offers_auth(sink: SmtpSink) -> tuple[bool, str]:
        async with aiosmtplib.SMTP(
            hostname=sink.host, port=sink.port, local_hostname="client.test", start_tls=False
        ) as client:
            await client.ehlo()
            return client.supports_extension("auth"), client.esmtp_extensions.get("auth", "")

    with SmtpSink() as plain, SmtpSink(auth=("u", "p")) as guarded:
        assert asyncio.run(offers_auth(plain)) == (False, "")
        offered, mechanisms = asyncio.run(offers_auth(guarded))
    assert offered
    assert set(mechanisms.split()) >= {"PLAIN", "LOGIN"}


def test_wait_for_returns_as_soon_as_enough_messages_arrived(sink: SmtpSink) -> None:
    """wait_for blocks until a message sent from another thread has been accepted, then returns it."""

    def send_later() -> None:
        time.sleep(0.2)
        send(sink)

    sender = threading.Thread(target=send_later)
    sender.start()
    try:
        received = sink.wait_for(1, timeout=10)
    finally:
        sender.join()
    assert [r.data for r in received] == [MESSAGE]
    assert isinstance(received[0], Received)


def test_wait_for_raises_timeout_when_too_few_messages_arrive(sink: SmtpSink) -> None:
    """wait_for raises TimeoutError when fewer messages than asked for arrive in time."""
    send(sink)
    with pytest.raises(TimeoutError, match="1 of 2"):
        sink.wait_for(2, timeout=0.2)


def test_keep_messages_false_counts_without_keeping() -> None:
    """A sink built with keep_messages=False counts accepted messages but does not hold them."""
    with SmtpSink(keep_messages=False) as sink:
        send(sink)
        send(sink)
        assert sink.count == 2
        assert sink.wait_for(2, timeout=1) == []


def test_sink_can_be_used_from_inside_an_event_loop() -> None:
    """Starting, scripting and stopping a sink from async code works; the sink runs its own loop."""

    async def scenario() -> int:
        with SmtpSink() as sink:
            sink.script("451")
            with pytest.raises(aiosmtplib.SMTPDataError):
                await aiosmtplib.send(
                    MESSAGE, sender=SENDER, recipients=["a@example.com"], hostname=sink.host, port=sink.port,
                    local_hostname="client.test", start_tls=False,
                )  # fmt: skip
            await aiosmtplib.send(
                MESSAGE, sender=SENDER, recipients=["a@example.com"], hostname=sink.host, port=sink.port,
                local_hostname="client.test", start_tls=False,
            )  # fmt: skip
            return len(sink.received)

    assert asyncio.run(scenario()) == 1


def test_command_line_sink_counts_into_the_stats_file_and_stops_on_sigterm(tmp_path: Path) -> None:
    """`python -m tests.support.sink --count-only --stats-file F` announces its port, counts, and exits on SIGTERM."""
    stats = tmp_path / "count"
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.sink", "--port", "0", "--count-only", "--stats-file", str(stats)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "error"},
    )
    try:
        assert process.stdout is not None
        banner = process.stdout.readline().strip()
        assert banner.startswith("listening on 127.0.0.1:")
        port = int(banner.rsplit(":", 1)[1])
        outside = SmtpSink(port=port)  # only used for its host/port in send()
        for _ in range(3):
            send(outside)
        deadline = time.monotonic() + 5
        while not (stats.exists() and stats.read_text().strip() == "3"):
            assert time.monotonic() < deadline, "stats file did not reach 3"
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        remaining, _ = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0
    assert remaining.strip() == "3"
    assert stats.read_text().strip() == "3"
