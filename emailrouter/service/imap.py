"""IMAP mailbox adapter (imapclient). Blocking: the daemon calls it through asyncio.to_thread.

Nothing is marked read by fetching (BODY.PEEK[]). After a mail's actions are durable the mail is
marked processed: a keyword (default $Routed) plus \\Seen, or a move to a folder (UID MOVE, or
COPY + \\Deleted + UID EXPUNGE where MOVE is missing).
"""

from __future__ import annotations

import ast
import contextlib
import re
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog
from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError
from imapclient.imapclient import SocketTimeout

from emailrouter.config.settings import MailboxConfig
from emailrouter.core.errors import MailboxError
from emailrouter.service.health import backoff
from emailrouter.service.smtp import tls_context

log = structlog.get_logger(__name__)
IDLE_REISSUE = 25 * 60  # RFC 2177: re-issue IDLE at least every 29 minutes
IDLE_KEEPALIVE = 5.0  # seconds between checks of the IDLE socket (and of the stop flag)
IDLE_RETRY_MAX = 60.0  # seconds between attempts to get an IDLE connection back, at the most


@dataclass(frozen=True)
class FolderState:
    uidvalidity: int
    uidnext: int | None


@dataclass(frozen=True)
class Fetched:
    uid: int
    raw: bytes
    size: int


def quiet_imaplib(client: IMAPClient) -> None:
    """Turn off imaplib's protocol trace, which imapclient turns on (debug level 5) to feed its debug logger.

    At that level imaplib formats every response with %r, literals included, whether or not anyone logs it:
    two text copies of every fetched mail, each larger than the mail (a 21 MB fetch peaked at 4 times its size).
    """
    client._imap.debug = 0


_BYTES_LITERAL = re.compile(r"(?<!\w)b'(?:[^'\\]|\\.)*'" + r'|(?<!\w)b"(?:[^"\\]|\\.)*"')


def server_text(exc: BaseException) -> str:
    """An IMAP error as text for people: imaplib and imapclient put the server's answer in as a Python bytes
    literal (`b'[AUTHENTICATIONFAILED] Authentication failed.'`); here it is the answer itself."""

    def decoded(m: re.Match[str]) -> str:
        try:
            value = ast.literal_eval(m[0])
        except (ValueError, SyntaxError):
            return m[0]
        return value.decode("utf-8", "replace") if isinstance(value, bytes) else m[0]

    return _BYTES_LITERAL.sub(decoded, str(exc))


class ImapMailbox:
    """One logged-in connection to one mailbox folder."""

    def __init__(self, config: MailboxConfig) -> None:
        self.config = config
        self.client: IMAPClient | None = None
        self.capabilities: frozenset[bytes] = frozenset()

    def connect(self, folder: str | None = None, readonly: bool = False) -> FolderState:
        """Log in and select the folder (default: the configured one). `readonly`: EXAMINE, create nothing."""
        cfg, ep = self.config, self.config.endpoint
        context = None if ep.plaintext else tls_context(str(ep.ca_file) if ep.ca_file else None)
        try:
            client = IMAPClient(
                ep.host,
                port=ep.port,
                ssl=ep.security == "tls",
                ssl_context=context,
                timeout=SocketTimeout(connect=ep.timeout, read=ep.timeout),
            )
            self.client = client  # from here on, close() closes it
            quiet_imaplib(client)
            if ep.security == "starttls":
                client.starttls(context)
            if cfg.oauth2 is not None:
                try:
                    client.oauth2_login(cfg.username, cfg.oauth2.get())
                except IMAPClient.Error:
                    cfg.oauth2.invalidate()  # maybe expired early: read a fresh one next time
                    raise
            else:
                assert cfg.password is not None
                client.login(cfg.username, cfg.password.read())
            self.capabilities = frozenset(client.capabilities())
            if not readonly and cfg.processed == "move" and not client.folder_exists(cfg.move_to):
                client.create_folder(cfg.move_to)
            return self.select(folder, readonly)
        except LoginError as exc:
            self.close()
            raise MailboxError(
                f"{cfg.name}: cannot log in as {cfg.username} on {ep.host}:{ep.port}: {server_text(exc)}"
                " (check the username and the password or token; retrying does not help until they are fixed)"
            ) from None
        except (IMAPClientError, OSError, ssl.SSLError) as exc:
            self.close()
            raise MailboxError(
                f"{cfg.name}: cannot open {folder or cfg.folder} on {ep.host}:{ep.port}: "
                f"{type(exc).__name__}: {server_text(exc)}"
            ) from None

    def select(self, folder: str | None = None, readonly: bool = False) -> FolderState:
        info = self._client.select_folder(folder or self.config.folder, readonly=readonly)
        uidnext = info.get(b"UIDNEXT")
        return FolderState(int(info[b"UIDVALIDITY"]), int(uidnext) if uidnext is not None else None)

    @property
    def _client(self) -> IMAPClient:
        if self.client is None:
            raise MailboxError(f"{self.config.name}: not connected")
        return self.client

    def _unprocessed(self) -> list[str | bytes]:
        return ["NOT", "KEYWORD", self.config.keyword] if self.config.processed == "keyword" else []

    def first_start(self, state: FolderState) -> tuple[list[int], int]:
        """The unread, unprocessed mail, and the highest UID in the folder now (the first checkpoint)."""
        uids = sorted(self._client.search(["UNSEEN", *self._unprocessed()]))
        top = state.uidnext - 1 if state.uidnext else max(self._client.search(["ALL"]) or [0])
        return uids, max([top, *uids])

    def since(self, last_uid: int) -> list[int]:
        """Every unprocessed mail that arrived after the checkpoint, read by a person or not."""
        criteria = ["UID", f"{last_uid + 1}:*", *self._unprocessed()]
        return sorted(uid for uid in self._client.search(criteria) if uid > last_uid)

    def all_unprocessed(self) -> list[int]:
        """After a UIDVALIDITY change: everything not marked processed (duplicates are caught by Message-ID)."""
        return sorted(self._client.search(self._unprocessed() or ["ALL"]))

    def all_uids(self) -> list[int]:
        return sorted(self._client.search(["ALL"]))

    def sizes(self, uids: Sequence[int]) -> dict[int, int]:
        data = self._client.fetch(list(uids), ["RFC822.SIZE"])
        return {int(uid): int(item.get(b"RFC822.SIZE", 0)) for uid, item in data.items()}

    def fetch(self, uids: Sequence[int]) -> dict[int, Fetched]:
        data = self._client.fetch(list(uids), ["BODY.PEEK[]", "RFC822.SIZE"])
        out = {}
        for uid, item in data.items():
            raw = item.get(b"BODY[]")
            if raw is None:
                continue  # expunged meanwhile
            out[int(uid)] = Fetched(int(uid), bytes(raw), int(item.get(b"RFC822.SIZE", len(raw))))
        return out

    def mark(self, uids: Sequence[int]) -> None:
        """Mark processed: keyword + \\Seen, or move to the configured folder."""
        if not uids:
            return
        client = self._client
        if self.config.processed == "keyword":
            client.add_flags(list(uids), [self.config.keyword.encode(), b"\\Seen"], silent=True)
        elif b"MOVE" in self.capabilities:
            client.move(list(uids), self.config.move_to)
        else:
            client.copy(list(uids), self.config.move_to)
            client.add_flags(list(uids), [b"\\Deleted"], silent=True)
            if b"UIDPLUS" in self.capabilities:
                client.uid_expunge(list(uids))

    def flag(self, uids: Sequence[int], keyword: str) -> None:
        if uids:
            self._client.add_flags(list(uids), [keyword.encode()], silent=True)

    def unflag(self, uids: Sequence[int], keyword: str) -> None:
        if uids:
            self._client.remove_flags(list(uids), [keyword.encode()], silent=True)

    def close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            try:
                client.logout()
            except (IMAPClientError, OSError):
                with contextlib.suppress(IMAPClientError, OSError):
                    client.shutdown()


def watch_idle(config: MailboxConfig, on_new_mail: Callable[[], None], stop: threading.Event) -> None:
    """Run in a thread: hold an IDLE connection and call `on_new_mail` when the server says EXISTS.

    Falls back silently (returns) when the server does not offer IDLE; the poller's interval then
    does the work. Reconnects with backoff after network errors until `stop` is set.
    """
    failures = 0
    while not stop.is_set():
        mailbox = ImapMailbox(config)
        try:
            mailbox.connect()
            client = mailbox._client
            if b"IDLE" not in mailbox.capabilities:
                log.info("idle_unsupported", mailbox=config.name)
                return
            client.idle()
            log.info("idle_active", mailbox=config.name, folder=config.folder)  # new mail now wakes its poll
            started = time.monotonic()
            failures = 0
            while not stop.is_set():
                responses = client.idle_check(timeout=IDLE_KEEPALIVE)
                if any(len(r) > 1 and r[1] in (b"EXISTS", b"RECENT") for r in responses):
                    on_new_mail()
                if time.monotonic() - started > IDLE_REISSUE:
                    client.idle_done()
                    client.noop()  # keepalive, and proof the connection still works
                    client.idle()
                    started = time.monotonic()
            client.idle_done()
        except (TimeoutError, MailboxError, IMAPClientError, OSError) as exc:
            log.warning("idle_connection_lost", mailbox=config.name, error=f"{type(exc).__name__}: {server_text(exc)}")
            failures += 1
            stop.wait(backoff(failures, 1.0, IDLE_RETRY_MAX))
        finally:
            mailbox.close()
