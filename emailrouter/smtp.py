"""SMTP transport (aiosmtplib): one reused connection per relay, TLS verified by default.

`send()` either returns (every recipient accepted) or raises `TemporaryDeliveryError` (4xx,
connection trouble: retry later) or `PermanentDeliveryError` (5xx). A send where only some
recipients were accepted is not "sent": it raises for the refused ones.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Sequence

import aiosmtplib
import structlog

from emailrouter.errors import PermanentDeliveryError, TemporaryDeliveryError
from emailrouter.settings import SmtpConfig

log = structlog.get_logger(__name__)
IDLE_CHECK_AFTER = 10.0  # seconds a connection may sit unused before we NOOP it first


def tls_context(ca_file: str | None) -> ssl.SSLContext:
    """Certificate and host name verification on; optionally a private CA."""
    return ssl.create_default_context(cafile=ca_file)


def _classify(code: int | None, message: str) -> Exception:
    if code is not None and 500 <= code < 600:
        return PermanentDeliveryError(message, code)
    return TemporaryDeliveryError(message, code)


class SmtpTransport:
    def __init__(self, config: SmtpConfig) -> None:
        self.config = config
        self._client: aiosmtplib.SMTP | None = None
        self._lock = asyncio.Lock()
        self._last_used = 0.0

    async def _connect(self) -> aiosmtplib.SMTP:
        ep = self.config.endpoint
        password = None
        if self.config.password is not None:
            password = await asyncio.to_thread(self.config.password.read)
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
        await client.connect()
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

    def _drop(self) -> None:
        if self._client is not None:
            self._client.close()
        self._client = None

    async def send(self, mail_from: str, recipients: Sequence[str], raw: bytes) -> str:
        """Deliver one message; returns the relay's final response."""
        async with self._lock:
            try:
                client = await self._connection()
                errors, response = await client.sendmail(mail_from, list(recipients), raw)
            except aiosmtplib.SMTPRecipientsRefused as exc:
                codes = [r.code for r in exc.recipients]
                worst = min(codes) if any(c < 500 for c in codes) else max(codes)
                raise _classify(worst, f"all recipients refused: {exc.recipients[0].message}") from None
            except aiosmtplib.SMTPAuthenticationError as exc:
                self._drop()
                raise PermanentDeliveryError(f"SMTP authentication failed ({exc.code})", exc.code) from None
            except aiosmtplib.SMTPResponseException as exc:
                if exc.code == 421 or not (self._client and self._client.is_connected):
                    self._drop()
                raise _classify(exc.code, f"{exc.code} {exc.message}") from None
            except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                self._drop()
                raise TemporaryDeliveryError(f"{type(exc).__name__}: {exc}") from None
            finally:
                self._last_used = time.monotonic()
            if errors:
                codes = [code for code, _ in errors.values()]
                refused = ", ".join(sorted(errors))
                worst = min(codes) if any(c < 500 for c in codes) else max(codes)
                raise _classify(worst, f"not every recipient was accepted (refused: {refused})")
            return response

    async def close(self) -> None:
        async with self._lock:
            if self._client is not None and self._client.is_connected:
                try:
                    await self._client.quit()
                except (aiosmtplib.SMTPException, OSError):
                    self._client.close()
            self._client = None
