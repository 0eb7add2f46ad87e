"""demo_imap: pymap's maildir IMAP server, used the way the daemon uses IMAP (imapclient in a worker thread)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import pytest
from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientAbortError, LoginError

from emailrouter.demo.imap import ImapEndpoint, demo_imap

T = TypeVar("T")

MESSAGES = (
    b"From: Budi <budi@example.co.id>\r\n"
    b"To: cs@example.com\r\n"
    b"Subject: Internet mati sejak pagi\r\n"
    b"\r\n"
    b"Mohon dibantu.\r\n",
    # A header longer than 78 characters and an 8-bit body: Python's email package would re-fold and re-encode.
    b"From: dinas@example.go.id\r\n"
    b"Subject: " + b"Permohonan informasi layanan " * 6 + b"\r\n"
    b"\tlanjutan baris\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    b"Caf\xc3\xa9 \xe2\x80\x94 terima kasih\r\n"
    b"From the start of a line\r\n"
    b"no final line break",
    # LF-only line ends, as some exporters write them.
    b"From: toko@example.id\nSubject: lf only\n\nbody\n",
)


def run_imap(root: Path, job: Callable[[ImapEndpoint], T], messages: Sequence[bytes] = MESSAGES) -> T:
    """Start a demo server, run `job` in a worker thread (as the daemon does), shut down, return the job's result."""

    async def scenario() -> T:
        async with demo_imap(root, messages) as endpoint:
            return await asyncio.to_thread(job, endpoint)

    return asyncio.run(scenario())


def connect(endpoint: ImapEndpoint) -> IMAPClient:
    """A logged-in imapclient connection to the demo server (plaintext)."""
    client = IMAPClient(endpoint.host, port=endpoint.port, ssl=False, timeout=10)
    client.login(endpoint.username, endpoint.password)
    return client


def test_login_select_and_unseen_search_see_every_seeded_message(tmp_path: Path) -> None:
    """After login, INBOX has a UIDVALIDITY and UNSEEN finds every seeded message, in seed order."""

    def job(endpoint: ImapEndpoint) -> tuple[dict[bytes, object], list[int]]:
        with connect(endpoint) as client:
            return client.select_folder("INBOX"), client.search(["UNSEEN"])

    selected, unseen = run_imap(tmp_path, job)
    uid_validity = selected[b"UIDVALIDITY"]
    assert isinstance(uid_validity, int) and uid_validity > 0
    assert selected[b"EXISTS"] == len(MESSAGES)
    assert unseen == [1, 2, 3]


def test_fetch_returns_the_seeded_bytes_exactly_and_does_not_mark_them_seen(tmp_path: Path) -> None:
    """BODY.PEEK[] gives back each message byte for byte (no CRLF change, no re-folding) and sets no \\Seen."""

    def job(endpoint: ImapEndpoint) -> tuple[dict[int, dict[bytes, object]], list[int]]:
        with connect(endpoint) as client:
            client.select_folder("INBOX")
            uids = client.search(["UNSEEN"])
            fetched = client.fetch(uids, ["BODY.PEEK[]", "RFC822.SIZE", "FLAGS"])
            return fetched, client.search(["UNSEEN"])

    fetched, unseen_after = run_imap(tmp_path, job)
    for uid, original in zip([1, 2, 3], MESSAGES, strict=True):
        assert fetched[uid][b"BODY[]"] == original
        assert fetched[uid][b"RFC822.SIZE"] == len(original)
        assert b"\\Seen" not in fetched[uid][b"FLAGS"]  # type: ignore[operator]
    assert unseen_after == [1, 2, 3]


def test_routed_keyword_and_seen_are_stored_searchable_and_kept_across_connections(tmp_path: Path) -> None:
    """$Routed is a permanent flag; once set with \\Seen, NOT KEYWORD $Routed and UNSEEN skip it, also later."""

    def job(endpoint: ImapEndpoint) -> tuple[object, list[int], list[int], dict[int, dict[bytes, object]]]:
        with connect(endpoint) as client:
            permanent = client.select_folder("INBOX")[b"PERMANENTFLAGS"]
            client.add_flags([1, 2], [b"$Routed", b"\\Seen"])
        with connect(endpoint) as client:  # a new connection, as after a daemon restart
            client.select_folder("INBOX")
            return (
                permanent,
                client.search(["NOT", "KEYWORD", "$Routed"]),
                client.search(["UNSEEN"]),
                client.fetch([1, 2, 3], ["FLAGS"]),
            )

    permanent, not_routed, unseen, flags = run_imap(tmp_path, job)
    assert b"$Routed" in permanent  # type: ignore[operator]
    assert not_routed == [3]
    assert unseen == [3]
    assert set(flags[1][b"FLAGS"]) >= {b"$Routed", b"\\Seen"}  # type: ignore[call-overload]
    assert b"$Routed" not in flags[3][b"FLAGS"]  # type: ignore[operator]


def test_move_to_a_created_folder_takes_the_message_out_of_the_inbox(tmp_path: Path) -> None:
    """MOVE is advertised, and moving a message to a new folder leaves it there, byte for byte, and not in INBOX."""

    def job(endpoint: ImapEndpoint) -> tuple[tuple[bytes, ...], list[int], dict[int, dict[bytes, object]]]:
        with connect(endpoint) as client:
            capabilities = client.capabilities()
            client.create_folder("Routed")
            client.select_folder("INBOX")
            client.move([2], "Routed")
            inbox = client.search(["ALL"])
            client.select_folder("Routed")
            moved = client.fetch(client.search(["ALL"]), ["BODY.PEEK[]"])
            return capabilities, inbox, moved

    capabilities, inbox, moved = run_imap(tmp_path, job)
    assert b"MOVE" in capabilities
    assert b"UIDPLUS" in capabilities
    assert inbox == [1, 3]
    assert [entry[b"BODY[]"] for entry in moved.values()] == [MESSAGES[1]]


def test_copy_in_pymap_maildir_writes_an_empty_message_so_use_move(tmp_path: Path) -> None:
    """Known pymap 0.36.7 bug: COPY in the maildir backend stores an empty message; routing must use MOVE."""

    def job(endpoint: ImapEndpoint) -> dict[int, dict[bytes, object]]:
        with connect(endpoint) as client:
            client.create_folder("Copies")
            client.select_folder("INBOX")
            client.copy([1], "Copies")
            client.select_folder("Copies")
            copied: dict[int, dict[bytes, object]] = client.fetch(client.search(["ALL"]), ["BODY.PEEK[]"])
            return copied

    copied = run_imap(tmp_path, job)
    assert [entry[b"BODY[]"] for entry in copied.values()] == [b"\n"]


def test_idle_reports_a_message_appended_by_another_connection(tmp_path: Path) -> None:
    """IDLE is advertised; an idling client sees EXISTS after another connection APPENDs, and DONE ends it."""

    def append_later(endpoint: ImapEndpoint) -> None:
        time.sleep(0.3)
        with connect(endpoint) as other:
            other.append("INBOX", b"Subject: new\r\n\r\nbaru\r\n")

    def job(endpoint: ImapEndpoint) -> tuple[tuple[bytes, ...], list[object], tuple[bytes, object]]:
        with connect(endpoint) as client:
            capabilities = client.capabilities()
            client.select_folder("INBOX")
            client.idle()
            appender = threading.Thread(target=append_later, args=(endpoint,))
            appender.start()
            try:
                events: list[object] = []
                deadline = time.monotonic() + 5
                while not any(e[1] == b"EXISTS" for e in events) and time.monotonic() < deadline:  # type: ignore[index]
                    events += client.idle_check(timeout=2)
            finally:
                appender.join()
            done = client.idle_done()
            return capabilities, events, done

    capabilities, events, done = run_imap(tmp_path, job)
    assert b"IDLE" in capabilities
    assert (4, b"EXISTS") in events
    assert done[0] == b"IDLE completed."


def test_wrong_password_is_refused(tmp_path: Path) -> None:
    """Logging in with the wrong password fails with imapclient's LoginError."""

    def job(endpoint: ImapEndpoint) -> None:
        with IMAPClient(endpoint.host, port=endpoint.port, ssl=False, timeout=10) as client:
            with pytest.raises(LoginError):
                client.login(endpoint.username, "not-" + endpoint.password)
            client.login(endpoint.username, endpoint.password)

    run_imap(tmp_path, job)


def test_custom_credentials_are_the_ones_yielded_and_accepted(tmp_path: Path) -> None:
    """username and password choose the account; the yielded endpoint carries them."""

    async def scenario() -> tuple[ImapEndpoint, list[int]]:
        async with demo_imap(tmp_path, MESSAGES[:1], username="cs@example.com", password="rahasia") as endpoint:

            def job() -> list[int]:
                with connect(endpoint) as client:
                    client.select_folder("INBOX")
                    uids: list[int] = client.search(["ALL"])
                    return uids

            return endpoint, await asyncio.to_thread(job)

    endpoint, uids = asyncio.run(scenario())
    assert (endpoint.host, endpoint.username, endpoint.password) == ("127.0.0.1", "cs@example.com", "rahasia")
    assert uids == [1]


def test_leaving_the_block_closes_open_connections_and_frees_the_port(tmp_path: Path) -> None:
    """On exit, while the event loop goes on, connected (even idling) clients get BYE and the port is closed."""

    def bye_seen(busy: IMAPClient, idling: IMAPClient) -> tuple[bool, bool]:
        try:
            busy.noop()
        except (IMAPClientAbortError, OSError):
            busy_dropped = True
        else:
            busy_dropped = False
        idle_lines = idling.idle_check(timeout=2)
        return busy_dropped, any(b"BYE" in line for line in idle_lines)

    async def scenario() -> tuple[bool, bool, ImapEndpoint]:
        async with demo_imap(tmp_path, MESSAGES) as endpoint:
            busy = await asyncio.to_thread(connect, endpoint)
            idling = await asyncio.to_thread(connect, endpoint)
            await asyncio.to_thread(idling.select_folder, "INBOX")
            await asyncio.to_thread(idling.idle)
        try:
            # The loop keeps running here (as in the daemon): the connections must already be gone.
            busy_dropped, idle_bye = await asyncio.to_thread(bye_seen, busy, idling)
        finally:
            busy.shutdown()
            idling.shutdown()
        return busy_dropped, idle_bye, endpoint

    busy_dropped, idle_bye, endpoint = asyncio.run(scenario())
    assert busy_dropped
    assert idle_bye
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((endpoint.host, endpoint.port), timeout=2).close()


def test_an_existing_maildir_for_the_user_is_not_reused(tmp_path: Path) -> None:
    """demo_imap refuses a root that already holds that user's maildir rather than mixing in old mail."""
    (tmp_path / "demo").mkdir()

    async def scenario() -> None:
        async with demo_imap(tmp_path, MESSAGES):
            pass

    with pytest.raises(FileExistsError):
        asyncio.run(scenario())


@pytest.mark.parametrize(
    ("username", "password"), [("../escape", "pw"), (".hidden", "pw"), ("a:b", "pw"), ("demo", ""), ("demo", "*x")]
)
def test_unusable_credentials_are_refused(tmp_path: Path, username: str, password: str) -> None:
    """A user name that is not a plain file name, or a password pymap would treat as disabled, is a ValueError."""

    async def scenario() -> None:
        async with demo_imap(tmp_path, MESSAGES, username=username, password=password):
            pass

    with pytest.raises(ValueError):
        asyncio.run(scenario())
