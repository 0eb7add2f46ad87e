"""Fault injection against real servers: relay failures, IMAP resets, UIDVALIDITY changes, robots, quarantine."""

from __future__ import annotations

import asyncio
import contextlib
import email
import re
import socket
import struct
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from email.policy import default
from pathlib import Path

import pytest

from emailrouter.config.loader import load_config
from emailrouter.ops.cli import main
from emailrouter.service.daemon import make_router
from emailrouter.service.router import PollReport
from emailrouter.service.store import MessageKey, Plan
from tests.conftest import DATA, ROOT
from tests.integration.test_daemon import ROUTED, once, planned_recipients, received_by_kind, write_config
from tests.support.dovecot import Dovecot
from tests.support.sink import SmtpSink

OUTLOOK = (DATA / "dcs-fault-outlook-en.eml").read_bytes()


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[SmtpSink]:
    with SmtpSink(save_to=tmp_path / "sent") as s:
        yield s


def with_id(raw: bytes, message_id: str, sender: str | None = None) -> bytes:
    raw = re.sub(rb"Message-ID: <[^>]+>", f"Message-ID: <{message_id}>".encode(), raw, count=1)
    if sender:
        raw = re.sub(rb"^From: .*$", f"From: {sender}".encode(), raw, count=1, flags=re.M)
        raw = re.sub(rb"header\.from=[^\s;]+", f"header.from={sender.rpartition('@')[2]}".encode(), raw)
    return raw


@pytest.mark.parametrize("fault", ["421", "451", "drop_at_data"])
def test_temporary_relay_failures_are_retried_and_delivered_once(
    tmp_path: Path, dovecot: Dovecot, sink: SmtpSink, fault: str
) -> None:
    """421, 451 and a connection dropped at DATA (before the message went out) keep the message in the outbox;
    the retry delivers it once. (A connection lost after the message went out is another case: it is
    uncertain, see test_delivery.py.)"""
    config = load_config(write_config(tmp_path, dovecot, sink))
    dovecot.append("router", "INBOX", OUTLOOK)
    sink.script(fault)
    assert once(config)[0] == 0
    import time

    time.sleep(0.1)  # past the test's short backoff
    assert once(config)[0] == 0
    assert received_by_kind(sink) == planned_recipients(config, ["dcs-fault-outlook-en.eml"])
    assert all(ROUTED in f for f in dovecot.flags("router", "INBOX").values())


def test_uidvalidity_change_processes_nothing_twice_and_skips_nothing(
    tmp_path: Path, dovecot: Dovecot, sink: SmtpSink
) -> None:
    """After the folder gets a new UIDVALIDITY, old mail is recognised by Message-ID and new mail is routed."""
    config = load_config(write_config(tmp_path, dovecot, sink))
    for n in range(3):
        dovecot.append("router", "INBOX", with_id(OUTLOOK, f"m{n}@x", f"person{n}@outlook.com"))
    assert once(config)[0] == 0
    before = received_by_kind(sink)
    old = dovecot.uidvalidity("router", "INBOX")
    # the server lost its index, and the keyword with it, as after a rebuild; one new mail arrived too
    assert dovecot.reset_uidvalidity("router", "INBOX") != old
    with dovecot.client() as client:
        client.select_folder("INBOX")
        client.remove_flags(client.search(["ALL"]), [ROUTED])
    dovecot.append("router", "INBOX", with_id(OUTLOOK, "m-new@x", "newcomer@outlook.com"))
    status, reports = once(config)
    assert status == 0
    assert (reports[0].planned, reports[0].duplicates) == (1, 3)
    after = received_by_kind(sink)
    new = Counter(after) - Counter(before)
    assert new == Counter({("reply", "newcomer@outlook.com"): 1, ("forward", "dcs-care@cc.example.co.id"): 1})
    assert all(ROUTED in f for f in dovecot.flags("router", "INBOX").values())


def test_a_retry_of_a_uid_quarantined_under_an_earlier_uidvalidity_takes_nothing_again(
    tmp_path: Path, dovecot: Dovecot, sink: SmtpSink, capsys: pytest.CaptureFixture[str]
) -> None:
    """A quarantined record from before the folder's UIDVALIDITY changed names a mail that is not the one at that
    UID now: `quarantine list` says so, and retrying it neither forgets nor re-sends the mail routed at that UID
    since (a warning says why)."""
    path = write_config(tmp_path, dovecot, sink)
    config = load_config(path)
    mailbox = config.settings.mailboxes[0]
    old = dovecot.uidvalidity("router", "INBOX")
    stale = MessageKey(mailbox.account, mailbox.folder, old, 1)  # a mail at UID 1 that broke a stage, long ago
    router = make_router(config, dry_run=False)
    try:
        router.store.plan(
            [Plan(stale, "<gone@x>", "", {}, (), datetime.now(UTC), None, "quarantined", error="a stage broke")]
        )
    finally:
        router.store.close()
    # the server lost its index: a new UIDVALIDITY, and today's mail is UID 1 again
    assert dovecot.reset_uidvalidity("router", "INBOX") != old
    dovecot.append("router", "INBOX", with_id(OUTLOOK, "today@x", "today@outlook.com"))
    assert once(config)[0] == 0
    assert dovecot.uids("router", "INBOX", ["ALL"]) == [1]
    sent = received_by_kind(sink)
    assert ("reply", "today@outlook.com") in sent
    capsys.readouterr()
    assert main(["quarantine", "list", "-c", str(path)]) == 0
    assert "uid 1\t" in (listed := capsys.readouterr().out)
    assert "a stage broke\t(an earlier UIDVALIDITY: the UID names another mail now; retry skips it)" in listed
    router = make_router(config, dry_run=False)

    async def retry() -> PollReport:
        try:
            return await router.retry(mailbox, [1])
        finally:
            await router.close()

    try:
        report = asyncio.run(retry())
        current = router.store.outcome(stale)
        assert current is not None and current.outcome == "quarantined"  # the stale record is left as it was
        assert [r.outcome for r in router.store.find("<today@x>")] == ["done"]  # today's mail is not forgotten
    finally:
        router.store.close()
    assert (report.planned, report.duplicates, report.quarantined) == (0, 0, 0)
    assert received_by_kind(sink) == sent  # nothing sent a second time


class ResettingProxy:
    """A TCP proxy to Dovecot that resets the connection in the middle of the first body FETCH response."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.armed = True
        self.resets = 0
        self.threads: list[threading.Thread] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            fetching = threading.Event()
            for src, dst, down in ((client, upstream, False), (upstream, client, True)):
                t = threading.Thread(target=self._pump, args=(src, dst, down, fetching, client, upstream), daemon=True)
                t.start()
                self.threads.append(t)

    def _pump(
        self,
        src: socket.socket,
        dst: socket.socket,
        down: bool,
        fetching: threading.Event,
        client: socket.socket,
        upstream: socket.socket,
    ) -> None:
        sent = 0
        try:
            while data := src.recv(65536):
                if not down and b"BODY.PEEK[]" in data:
                    fetching.set()
                if down and fetching.is_set() and self.armed:
                    sent += len(data)
                    if sent > 2000:
                        self.armed = False
                        self.resets += 1
                        dst.sendall(data[:1000])
                        for s in (client, upstream):  # RST, not FIN
                            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                            s.close()
                        return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.close()

    def close(self) -> None:
        self.server.close()


def test_imap_reset_mid_fetch_loses_nothing(tmp_path: Path, dovecot: Dovecot, sink: SmtpSink) -> None:
    """A connection reset in the middle of a FETCH fails that pass; the next pass processes every mail once."""
    proxy = ResettingProxy(dovecot.port)
    path = write_config(tmp_path, dovecot, sink)
    path.write_text(path.read_text().replace(f"port: {dovecot.port}", f"port: {proxy.port}"))
    config = load_config(path)
    for n in range(5):
        dovecot.append("router", "INBOX", with_id(OUTLOOK, f"r{n}@x", f"reset{n}@outlook.com"))
    try:
        first = once(config)
        assert proxy.resets == 1 and first[0] == 1  # the mailbox failed this pass
        assert sink.count == 0
        second = once(config)
    finally:
        proxy.close()
    assert second[0] == 0 and second[1][0].planned == 5
    assert sink.count == 10  # a reply and a forward each, once
    assert all(ROUTED in f for f in dovecot.flags("router", "INBOX").values())


def test_ping_pong_with_a_silent_autoresponder_stops_at_the_cap(
    tmp_path: Path, dovecot: Dovecot, sink: SmtpSink
) -> None:
    """A robot answering every reply, with none of the automated headers, gets one reply per template a day."""
    config = load_config(write_config(tmp_path, dovecot, sink))
    rounds = 8
    for n in range(rounds):
        raw = with_id(OUTLOOK, f"bot-{n}@robot.example", "helpdesk-bot@outlook.com")
        dovecot.append("router", "INBOX", raw)  # the robot's "reply" to our previous one
        assert once(config)[0] == 0
    to_bot = [r for r in sink.received if "helpdesk-bot@outlook.com" in r.rcpt_tos]
    assert len(to_bot) == 1  # cap: the education template once per 24 h
    forwards = [r for r in sink.received if "dcs-care@cc.example.co.id" in r.rcpt_tos]
    assert len(forwards) == rounds  # the unit still sees every mail


def _bounce_of(message_id: str) -> bytes:
    """The fixture's delivery report, quoting `message_id` as the returned message."""
    raw = (DATA / "automated-bounce-of-our-reply.eml").read_bytes()
    return raw.replace(b"<er.0123456789abcdef01234567.reply@cc.example.co.id>", message_id.encode())


def test_bounced_reply_blocks_further_replies_to_that_address(tmp_path: Path, dovecot: Dovecot, sink: SmtpSink) -> None:
    """A bounce of an auto-reply we really sent is recorded; that address gets no auto-reply afterwards, only
    the forward."""
    path = write_config(tmp_path, dovecot, sink)
    # a tiny reply window, so that only the bounce block can stop the second reply
    path.write_text(path.read_text().replace("reply_window_hours: 24", "reply_window_hours: 0.00001"))
    config = load_config(path)
    dovecot.append("router", "INBOX", with_id(OUTLOOK, "before-bounce@x", "no.such.user@gmail.com"))
    assert once(config)[0] == 0
    (reply,) = [r for r in sink.received if r.rcpt_tos == ("no.such.user@gmail.com",)]
    reply_id = str(email.message_from_bytes(reply.data, policy=default)["Message-ID"])
    dovecot.append("router", "INBOX", _bounce_of(reply_id))
    before = sink.count
    assert once(config)[0] == 0
    assert sink.count == before  # nothing answers a bounce
    assert all(ROUTED in f for f in dovecot.flags("router", "INBOX").values())
    dovecot.append("router", "INBOX", with_id(OUTLOOK, "after-bounce@x", "no.such.user@gmail.com"))
    assert once(config)[0] == 0
    assert [rcpt for r in sink.received[before:] for rcpt in r.rcpt_tos] == ["dcs-care@cc.example.co.id"]


def test_forged_bounce_quoting_an_invented_reply_blocks_nothing(
    tmp_path: Path, dovecot: Dovecot, sink: SmtpSink
) -> None:
    """A delivery report quoting a Message-ID of our format that we never sent to that address does not stop
    the customer's auto-replies (anyone can write one)."""
    config = load_config(write_config(tmp_path, dovecot, sink))
    dovecot.append("router", "INBOX", _bounce_of("<er.000000000000000000000000.reply@cc.example.co.id>"))
    assert once(config)[0] == 0
    assert sink.count == 0
    dovecot.append("router", "INBOX", with_id(OUTLOOK, "after-forged-bounce@x", "no.such.user@gmail.com"))
    assert once(config)[0] == 0
    assert sorted(rcpt for r in sink.received for rcpt in r.rcpt_tos) == [
        "dcs-care@cc.example.co.id",
        "no.such.user@gmail.com",
    ]


def test_oversized_mail_goes_to_the_failure_unit_unparsed(tmp_path: Path, dovecot: Dovecot, sink: SmtpSink) -> None:
    """Mail over the size limit is not analysed: the failure unit gets it with a note; no reply goes out."""
    path = write_config(tmp_path, dovecot, sink)
    path.write_text(path.read_text().replace("max_message_mb: 25", "max_message_mb: 0.01"))
    config = load_config(path)
    big = OUTLOOK + b"\n" + (b"x" * 99 + b"\n") * 200
    dovecot.append("router", "INBOX", big)
    assert once(config)[0] == 0
    (received,) = sink.received
    assert received.rcpt_tos == ("email-triage@cc.example.co.id",)
    msg = email.message_from_bytes(received.data, policy=default)
    body = msg.get_body(("plain",))
    assert body is not None and "over the 10,485-byte limit" in body.get_content()


def test_quarantine_keeps_the_batch_going_and_retry_processes_later(
    tmp_path: Path,
    dovecot: Dovecot,
    sink: SmtpSink,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A mail that breaks a stage is flagged $Quarantined and recorded; the others go on; `quarantine list` shows
    it and `quarantine retry UID` processes it once the fault is gone."""
    import emailrouter.service.processor as processor

    path = write_config(tmp_path, dovecot, sink)
    config = load_config(path)
    dovecot.append("router", "INBOX", with_id(OUTLOOK, "q1@x", "first@outlook.com"))
    dovecot.append("router", "INBOX", with_id(OUTLOOK, "q2@x", "breaks@outlook.com"))
    dovecot.append("router", "INBOX", with_id(OUTLOOK, "q3@x", "third@outlook.com"))
    real_route = processor.route

    def flaky(view, *args, **kwargs):  # type: ignore[no-untyped-def]
        if b"breaks@outlook.com" in view.raw:
            raise RuntimeError("stage exploded")
        return real_route(view, *args, **kwargs)

    monkeypatch.setattr(processor, "route", flaky)
    status, reports = once(config)
    assert status == 0 and (reports[0].planned, reports[0].quarantined) == (2, 1)
    flags = dovecot.flags("router", "INBOX")
    assert b"$Quarantined" in flags[2] and ROUTED not in flags[2]
    assert ROUTED in flags[1] and ROUTED in flags[3]
    assert main(["quarantine", "list", "-c", str(path)]) == 0
    listed = capsys.readouterr().out
    assert "uid 2" in listed and "RuntimeError: stage exploded" in listed
    monkeypatch.setattr(processor, "route", real_route)  # "after a fix"
    assert main(["quarantine", "retry", "-c", str(path), "2"]) == 0
    flags = dovecot.flags("router", "INBOX")
    assert ROUTED in flags[2] and b"$Quarantined" not in flags[2]
    assert sorted(rcpt for r in sink.received for rcpt in r.rcpt_tos if "outlook" in rcpt) == [
        "breaks@outlook.com",
        "first@outlook.com",
        "third@outlook.com",
    ]
    assert main(["quarantine", "list", "-c", str(path)]) == 0
    assert "quarantine is empty" in capsys.readouterr().out


def test_secrets_never_reach_logs(tmp_path: Path, dovecot: Dovecot, sink: SmtpSink) -> None:
    """A failed login with a wrong password logs the failure, never the password, in JSON or console logs."""
    path = write_config(tmp_path, dovecot, sink)
    canary = "s3cret-CANARY-7731"
    (tmp_path / "imap-password").write_text(canary + "\n")
    done = subprocess.run(
        [sys.executable, "-m", "emailrouter", "run", "--once", "--log-level", "debug", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 1
    assert "mailbox_failed" in done.stdout and "AUTHENTICATIONFAILED" in done.stdout
    assert canary not in done.stdout + done.stderr
    import io

    from emailrouter.service import logs

    captured = io.StringIO()
    logs.configure("debug", stream=captured, json=True)
    router = make_router(load_config(path), dry_run=False)
    try:
        reports = asyncio.run(daemon_once(router))
    finally:
        router.store.close()
    assert '"event": "mailbox_failed"' in captured.getvalue()
    assert canary not in captured.getvalue()
    assert canary not in repr(reports) and canary not in repr(load_config(path).settings)


async def daemon_once(router):  # type: ignore[no-untyped-def]
    from emailrouter.service.daemon import run_once

    return await run_once(router)
