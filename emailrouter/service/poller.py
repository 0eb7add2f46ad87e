"""The mailbox side: one IMAP connection per mailbox, new UIDs from the checkpoint, bounded fetches, marking.

For each mailbox the poller keeps a connection (reconnecting when it died), finds the UIDs to take
(the first start takes the unread mail; then every UID past the checkpoint, or every unmarked mail
after a UIDVALIDITY change), fetches a batch in pieces of at most FETCH_BYTES, and marks processed
every mail whose actions are all durable: the IMAP mark comes last. A mailbox that fails is retried
with backoff (its `MailboxHealth`); one bad mailbox never stops the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import datetime

import structlog

from emailrouter.config.settings import MailboxConfig
from emailrouter.service.health import MailboxHealth
from emailrouter.service.imap import Fetched, ImapMailbox
from emailrouter.service.metrics import Metrics
from emailrouter.service.store import StateStore

log = structlog.get_logger(__name__)

QUARANTINED = "$Quarantined"
AUTOMATED = "$Automated"
FETCH_BYTES = 16 * 1024 * 1024  # a fetch never asks for more mail than this at once


def fetch_pieces(batch: Sequence[int], sizes: dict[int, int]) -> list[list[int]]:
    """The batch in pieces to fetch one at a time, in UID order: each at most FETCH_BYTES by RFC822.SIZE,
    or a single mail larger than that."""
    pieces: list[list[int]] = []
    piece: list[int] = []
    total = 0
    for uid in sorted(batch):
        if piece and total + sizes.get(uid, 0) > FETCH_BYTES:
            pieces.append(piece)
            piece, total = [], 0
        piece.append(uid)
        total += sizes.get(uid, 0)
    if piece:
        pieces.append(piece)
    return pieces


class Poller:
    """The IMAP connections and the health of every mailbox of one router."""

    def __init__(self, store: StateStore, metrics: Metrics, clock: Callable[[], datetime], *, dry_run: bool) -> None:
        self.store = store
        self.metrics = metrics
        self.clock = clock
        self.dry_run = dry_run
        self.health: dict[str, MailboxHealth] = {}
        self._imap: dict[str, ImapMailbox] = {}

    def health_of(self, name: str) -> MailboxHealth:
        return self.health.setdefault(name, MailboxHealth())

    async def connection(self, mailbox: MailboxConfig) -> tuple[ImapMailbox, int]:
        """The mailbox's connection (selected) and its UIDVALIDITY; a dead connection is replaced."""
        conn = self._imap.get(mailbox.name)
        if conn is not None and conn.client is not None:
            try:
                state = await asyncio.to_thread(conn.select)
                return conn, state.uidvalidity
            except Exception:  # a dead connection: reconnect below
                await asyncio.to_thread(conn.close)
        conn = ImapMailbox(mailbox)
        state = await asyncio.to_thread(conn.connect)
        self._imap[mailbox.name] = conn
        log.info("imap_connected", mailbox=mailbox.name, uidvalidity=state.uidvalidity)
        return conn, state.uidvalidity

    async def close(self) -> None:
        """Log out of every mailbox."""
        for conn in self._imap.values():
            await asyncio.to_thread(conn.close)
        self._imap.clear()

    def failed(self, mailbox: MailboxConfig, error: str) -> None:
        """The mailbox failed: its connection is dropped and it waits with backoff."""
        conn = self._imap.pop(mailbox.name, None)
        if conn is not None:
            conn.close()
        delay = self.health_of(mailbox.name).failed()
        log.warning("mailbox_failed", mailbox=mailbox.name, error=error, retry_in=delay)

    def succeeded(self, mailbox: MailboxConfig) -> None:
        self.health_of(mailbox.name).succeeded()
        self.metrics.poll_success(mailbox.name)

    async def new_uids(self, conn: ImapMailbox, mailbox: MailboxConfig, uidvalidity: int) -> list[int]:
        return await asyncio.to_thread(self._new_uids, conn, mailbox, uidvalidity)

    def _new_uids(self, conn: ImapMailbox, mailbox: MailboxConfig, uidvalidity: int) -> list[int]:
        checkpoint = self.store.checkpoint(mailbox.account, mailbox.folder)
        if checkpoint is None:
            state = conn.select()
            uids, top = conn.first_start(state)
            if not self.dry_run:
                # the first checkpoint: mail already read before the router's first start stays alone
                self.store.set_checkpoint(
                    mailbox.account, mailbox.folder, uidvalidity, min([top, *[u - 1 for u in uids]])
                )
            return uids
        if checkpoint.uidvalidity != uidvalidity:
            log.warning("uidvalidity_changed", mailbox=mailbox.name, old=checkpoint.uidvalidity, new=uidvalidity)
            return conn.all_unprocessed()
        return conn.since(checkpoint.last_uid)

    async def pieces(self, conn: ImapMailbox, batch: Sequence[int]) -> list[list[int]]:
        """The batch in bounded pieces (see fetch_pieces), to fetch one at a time."""
        sizes = await asyncio.to_thread(conn.sizes, batch)
        return fetch_pieces(batch, sizes)

    async def fetch(self, conn: ImapMailbox, uids: Sequence[int]) -> dict[int, Fetched]:
        return await asyncio.to_thread(conn.fetch, list(uids))

    async def unflag_quarantined(self, conn: ImapMailbox, uids: Sequence[int]) -> None:
        await asyncio.to_thread(conn.unflag, list(uids), QUARANTINED)

    async def finish(self, mailbox: MailboxConfig, conn: ImapMailbox, uidvalidity: int) -> int:
        """Mark processed every mail whose actions are all durable (the IMAP mark comes last); flag automated
        mail $Automated and quarantined mail $Quarantined (left in place, not marked processed). Returns how
        many were marked processed."""
        self.store.settle(self.clock())
        rows = [
            r
            for r in self.store.unfinished(mailbox.account, mailbox.folder)
            if r.outcome != "planned" and r.key.uidvalidity == uidvalidity
        ]
        if not rows:
            return 0
        quarantined = [r.key.uid for r in rows if r.outcome == "quarantined"]
        automated = [r.key.uid for r in rows if r.outcome == "automated"]
        processed = [r.key.uid for r in rows if r.outcome != "quarantined"]
        if not self.store.hold_mailbox(mailbox.account, mailbox.folder):  # fenced: another instance took it over
            log.warning("mailbox_lost", mailbox=mailbox.name, reason="another instance holds it now")
            return 0

        def mark() -> None:
            conn.flag(quarantined, QUARANTINED)
            conn.flag(automated, AUTOMATED)  # before a move, so the flag travels with the mail
            conn.mark(processed)

        await asyncio.to_thread(mark)
        self.store.marked([str(r.key) for r in rows])
        return len(processed)
