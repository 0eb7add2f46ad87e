"""Bounded memory on the IMAP side: a batch is fetched piece by piece, each piece dropped before the next."""

from __future__ import annotations

import asyncio
import base64
import gc
import random
import weakref
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from emailrouter.config.loader import load_config
from emailrouter.service import poller
from emailrouter.service.daemon import make_router, run_once
from emailrouter.service.imap import Fetched, ImapMailbox
from tests.integration.test_daemon import write_config
from tests.support.dovecot import Dovecot
from tests.support.sink import SmtpSink

CAP = 100_000  # bytes a fetch may ask for, lowered from FETCH_BYTES for the test


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as s:
        yield s


def mail(n: int, attachment: int) -> bytes:
    """A customer mail with a base64 attachment of `attachment` random bytes."""
    payload = base64.encodebytes(random.Random(n).randbytes(attachment)).replace(b"\n", b"\r\n")
    head = (
        f"From: Budi {n} <budi.{n}@gmail.com>\r\nTo: cs@cc.example.co.id\r\nSubject: Internet mati {n}\r\n"
        f"Message-ID: <memory-{n}@example.com>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n'
        "Internet di rumah saya mati sejak kemarin.\r\n--b\r\nContent-Type: image/jpeg\r\n"
        'Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename="modem.jpg"\r\n\r\n'
    )
    return head.encode() + payload + b"--b--\r\n"


def test_a_batch_is_fetched_in_pieces_each_dropped_before_the_next(
    tmp_path: Path, dovecot: Dovecot, sink: SmtpSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the fetch cap at 100 kB, six 40 kB mails and one 150 kB mail come in pieces of at most the cap (the big
    one alone), in UID order, and when a piece is fetched nothing of the pieces before it is still held."""
    sizes = [30_000] * 4 + [110_000] + [30_000] * 2  # attachment bytes; base64 makes them a third larger
    for n, size in enumerate(sizes):
        dovecot.append("router", "INBOX", mail(n, size))
    monkeypatch.setattr(poller, "FETCH_BYTES", CAP)
    asked: list[list[int]] = []
    held_at_fetch: list[int] = []  # bytes of earlier fetched mail still alive when the next fetch starts
    alive: list[weakref.ref[Fetched]] = []
    fetch = ImapMailbox.fetch

    def watched(self: ImapMailbox, uids: Sequence[int]) -> dict[int, Fetched]:
        gc.collect()
        held_at_fetch.append(sum(f.size for ref in alive if (f := ref()) is not None))
        asked.append(list(uids))
        out = fetch(self, uids)
        alive.extend(weakref.ref(f) for f in out.values())
        return out

    monkeypatch.setattr(ImapMailbox, "fetch", watched)
    router = make_router(load_config(write_config(tmp_path, dovecot, sink)), dry_run=False)
    try:
        status, reports = asyncio.run(run_once(router))
    finally:
        router.store.close()
    assert status == 0 and reports[0].fetched == 7
    assert asked == [[1, 2], [3, 4], [5], [6, 7]]
    assert held_at_fetch == [0, 0, 0, 0]
    assert len(dovecot.uids("router", "INBOX", ["KEYWORD", "$Routed"])) == 7
