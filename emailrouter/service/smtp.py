"""SMTP transport (aiosmtplib): reused connections to one relay (a pool of `smtp.connections`), TLS verified.

`send()` either returns (every recipient accepted) or raises an error that says what is broken:

- `RelayError`: the relay cannot be used (authentication, a missing or unreadable credential, TLS,
  connection refused or lost, a timeout before DATA, a refused MAIL FROM, 421): no message is at fault;
- `TemporaryDeliveryError` / `PermanentDeliveryError`: a 4xx / 5xx for *this* message at RCPT or DATA;
- `UncertainDeliveryError`: the whole message went out, but the answer to the final "." was lost or did
  not come within `data_timeout` (RFC 5321 4.5.3.2.6 gives the server 10 minutes): it may be delivered.

A send where only some recipients were accepted is not "sent": it raises for the refused ones.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Sequence

import aiosmtplib
import structlog
from aiosmtplib.protocol import PERIOD_REGEX, SMTPProtocol
from aiosmtplib.response import SMTPResponse

from emailrouter.config.settings import SmtpConfig
from emailrouter.core.errors import (
    PermanentDeliveryError,
    RelayError,
    TemporaryDeliveryError,
    UncertainDeliveryError,
)

log = structlog.get_logger(__name__)
IDLE_CHECK_AFTER = 10.0  # seconds a connection may sit unused before we NOOP it first
WRITE_CHUNK = 256 * 1024  # bytes of a message handed to the socket at a time (see _write_body)


def tls_context(ca_file: str | None) -> ssl.SSLContext:
    """Certificate and host name verification on; optionally a private CA."""
    return ssl.create_default_context(cafile=ca_file)


def _refused(code: int, message: str) -> Exception:
    """A refusal of this message (RCPT, DATA or the final "."): 421 closes the relay's door for everyone."""
    if code == 421:
        return RelayError(f"{code} {message}", code)
    if 500 <= code < 600:
        return PermanentDeliveryError(f"{code} {message}", code)
    return TemporaryDeliveryError(f"{code} {message}", code)


def wire_form(raw: bytes) -> tuple[bytes, bytes]:
    """The DATA payload as (body, end): CRLF line ends and leading dots doubled in the body, the final "." line
    in `end`. The body is `raw` itself when nothing needs changing (composed mail is CRLF already): no copy."""
    if raw.count(b"\n") != raw.count(b"\r\n") or raw.count(b"\r") != raw.count(b"\r\n"):
        raw = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    if raw.startswith(b".") or b"\n." in raw:
        raw = PERIOD_REGEX.sub(b"..", raw)
    return raw, (b".\r\n" if raw.endswith(b"\r\n") else b"\r\n.\r\n")


class SmtpTransport:
    def __init__(self, config: SmtpConfig) -> None:
        self.config = config
        self._client: aiosmtplib.SMTP | None = None
        self._lock = asyncio.Lock()
        self._last_used = 0.0

    async def _connect(self) -> aiosmtplib.SMTP:
        """A logged-in connection, or RelayError: nothing here depends on the message."""
        ep = self.config.endpoint
        password = None
        if self.config.password is not None:
            try:
                password = await asyncio.to_thread(self.config.password.read)
            except Exception as exc:  # a missing or unreadable secret: the relay is unusable, no message is at fault
                raise RelayError(f"cannot read the SMTP password: {exc}") from None
        context = None if ep.plaintext else tls_context(str(ep.ca_file) if ep.ca_file else None)
        client = aiosmtplib.SMTP(
            hostname=ep.host,
            port=ep.port,
            use_tls=ep.security == "tls",
            start_tls=ep.security == "starttls",  # required, never opportunistic
            tls_context=context,
            timeout=ep.timeout,
            username=self.config.username,
            password=password,
        )
        try:
            await client.connect()
        except aiosmtplib.SMTPAuthenticationError as exc:
            client.close()
            raise RelayError(f"SMTP authentication failed ({exc.code} {exc.message})", exc.code) from None
        except aiosmtplib.SMTPResponseException as exc:
            client.close()
            raise RelayError(f"relay refused the session: {exc.code} {exc.message}", exc.code) from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:  # refused, TLS, certificate, timeout
            client.close()
            raise RelayError(f"cannot connect to {ep.host}:{ep.port}: {type(exc).__name__}: {exc}") from None
        log.info("smtp_connected", host=ep.host, port=ep.port, security=ep.security)
        return client

    async def _connection(self) -> aiosmtplib.SMTP:
        client = self._client
        if client is not None and client.is_connected:
            if time.monotonic() - self._last_used < IDLE_CHECK_AFTER:
                return client
            try:
                await client.noop()
                return client
            except (aiosmtplib.SMTPException, OSError):
                self._drop()
        self._client = await self._connect()
        return self._client

    async def _reset(self) -> None:
        client = self._client
        if client is None or not client.is_connected:
            self._drop()
            return
        try:
            await client.rset()
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            self._drop()

    def _drop(self) -> None:
        if self._client is not None:
            self._client.close()
        self._client = None

    async def send(self, mail_from: str, recipients: Sequence[str], raw: bytes) -> str:
        """Deliver one message; returns the relay's final response. See the module doc for what it raises."""
        async with self._lock:
            try:
                client = await self._connection()
                return await self._transaction(client, mail_from, recipients, raw)
            except (TemporaryDeliveryError, PermanentDeliveryError):
                await self._reset()  # a clear answer about this message: the session can go on
                raise
            except BaseException:
                # after any other failure the session state is unknown: the next send starts afresh
                self._drop()
                raise
            finally:
                self._last_used = time.monotonic()

    async def _transaction(self, client: aiosmtplib.SMTP, mail_from: str, recipients: Sequence[str], raw: bytes) -> str:
        try:
            await client.mail(mail_from)
        except aiosmtplib.SMTPResponseException as exc:  # our own sender refused: true of every message
            if exc.code == 552:
                raise PermanentDeliveryError(f"{exc.code} {exc.message}", exc.code) from None
            raise RelayError(f"MAIL FROM refused: {exc.code} {exc.message}", exc.code) from None
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise RelayError(f"{type(exc).__name__} before DATA: {exc}") from None
        refused: dict[str, SMTPResponse] = {}
        for rcpt in recipients:
            try:
                await client.rcpt(rcpt)
            except aiosmtplib.SMTPResponseException as exc:
                refused[rcpt] = SMTPResponse(exc.code, exc.message)
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                raise RelayError(f"{type(exc).__name__} before DATA: {exc}") from None
        if refused:
            codes = [r.code for r in refused.values()]
            worst = 421 if 421 in codes else min(codes) if any(c < 500 for c in codes) else max(codes)
            first = next(iter(refused.values()))
            what = "all recipients refused" if len(refused) == len(recipients) else "not every recipient was accepted"
            raise _refused(worst, f"{what} (refused: {', '.join(sorted(refused))}): {first.message}")
        try:
            start = await client.execute_command(b"DATA")
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise RelayError(f"{type(exc).__name__} before DATA: {exc}") from None
        if start.code != 354:
            raise _refused(start.code, f"DATA refused: {start.message}")
        protocol = client.protocol
        if protocol is None:
            raise RelayError("connection lost before DATA")
        try:
            await self._write_body(protocol, raw)
        except (aiosmtplib.SMTPException, OSError) as exc:  # the final "." never went out: the relay cannot have it
            raise RelayError(f"{type(exc).__name__} while sending the message: {exc}") from None
        try:
            final = await protocol.read_response(timeout=self.config.data_timeout)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise UncertainDeliveryError(
                f"the message went out but the relay's answer to the final '.' was lost or late ({type(exc).__name__})"
            ) from None
        if final.code != 250:
            raise _refused(final.code, final.message)
        return f"{final.code} {final.message}"

    @staticmethod
    async def _write_body(protocol: SMTPProtocol, raw: bytes) -> None:
        """Write the DATA payload in slices of WRITE_CHUNK, each handed to the socket before the next (drain).

        One write of the whole message would have asyncio's transport copy whatever the socket does not take at
        once into its buffer: about the size of the message again. In slices, at most one slice is buffered."""
        body, end = wire_form(raw)
        if hasattr(protocol, "_response_pending"):
            # aiosmtplib >= 5 drops what the relay says while no command awaits an answer; an early refusal
            # (a relay may answer before the ".") must reach read_response, as in aiosmtplib's own DATA
            protocol._response_pending = True
        view = memoryview(body)  # slices without copies; the transport takes any bytes-like object
        for offset in range(0, len(view), WRITE_CHUNK):
            protocol.write(view[offset : offset + WRITE_CHUNK])  # type: ignore[arg-type]
            await protocol._drain_helper()
        protocol.write(end)

    async def close(self) -> None:
        async with self._lock:
            if self._client is not None and self._client.is_connected:
                try:
                    await self._client.quit()
                except (aiosmtplib.SMTPException, OSError):
                    self._client.close()
            self._client = None


class SmtpPool:
    """`smtp.connections` connections to one relay, each reused: up to that many messages go out at once (the
    outbox sends that many in parallel, `size`). A connection is opened when a send first needs it."""

    def __init__(self, config: SmtpConfig) -> None:
        self.size = config.connections
        self._all = [SmtpTransport(config) for _ in range(self.size)]
        self._idle: asyncio.Queue[SmtpTransport] = asyncio.Queue()
        for transport in self._all:
            self._idle.put_nowait(transport)

    async def send(self, mail_from: str, recipients: Sequence[str], raw: bytes) -> str:
        """Deliver one message over an idle connection (waiting for one); the same errors as SmtpTransport.send."""
        transport = await self._idle.get()
        try:
            return await transport.send(mail_from, recipients, raw)
        finally:
            self._idle.put_nowait(transport)

    async def close(self) -> None:
        for transport in self._all:
            await transport.close()
