"""Webhook transport (httpx): one POST per outbox entry, its answer classified as the outbox needs it.

    2xx                      delivered; the answer's body is returned (for the ticket number)
    408, 425, 429, 5xx       TemporaryDeliveryError: retried with backoff, not before Retry-After
    other 3xx / 4xx          PermanentDeliveryError: "this request is bad", never retried
    refused, dropped,        EndpointError: "the endpoint is down": nothing is wrong with the request,
    timed out, no token      the endpoint's calls wait and go again with the same Idempotency-Key

The bearer token is read from its credential source when a call is made (never stored, never logged). A
URL may hold `{token}` where the token goes (a Telegram bot's URL, a Slack incoming webhook's path): the
outbox keeps the URL with the placeholder, and no error message shows the token.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

from emailrouter import __version__
from emailrouter.config.credentials import CredentialError
from emailrouter.config.webhooks import WebhookEndpoint
from emailrouter.core.errors import EndpointError, PermanentDeliveryError, TemporaryDeliveryError
from emailrouter.core.model import WebhookCall
from emailrouter.core.webhook import CONTENT_TYPE

MAX_ANSWER = 1 << 20  # bytes of an endpoint's answer read at most
RETRIED_STATUSES = frozenset({408, 425, 429})
TOKEN = "{token}"
logging.getLogger("httpx").setLevel(logging.WARNING)  # its INFO line shows the URL, which may hold the token
logging.getLogger("httpcore").setLevel(logging.WARNING)


def retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


class WebhookTransport:
    """One HTTP client for every unit's endpoint (connections are reused per host)."""

    def __init__(self) -> None:
        self._client: httpx.AsyncClient | None = None

    async def call(self, endpoint: WebhookEndpoint | None, call: WebhookCall) -> bytes:
        """POST the call with the settings in force for its unit (None: the unit has no webhook any more); the
        endpoint's answer on success, else one of the errors in the module's docstring."""
        if endpoint is None:
            raise PermanentDeliveryError("its unit has no webhook in the configuration in force")
        unit = endpoint.unit
        token = None
        if endpoint.token is not None:
            try:
                token = await asyncio.to_thread(endpoint.token.read)
            except CredentialError as exc:
                raise EndpointError(f"token of unit {unit}: {exc}") from None
        url = call.url
        headers = {
            "Content-Type": CONTENT_TYPE,
            "Idempotency-Key": call.idempotency_key,
            "User-Agent": f"emailrouter/{__version__}",
        }
        if token is not None and TOKEN in url:
            url = url.replace(TOKEN, token)
        elif token is not None:
            headers["Authorization"] = f"Bearer {token}"

        def hidden(text: str) -> str:
            return text.replace(token, "***") if token else text

        if self._client is None:
            self._client = httpx.AsyncClient(follow_redirects=False)
        try:
            async with self._client.stream(
                "POST", url, content=call.body, headers=headers, timeout=endpoint.timeout
            ) as response:
                answer = b""
                async for chunk in response.aiter_bytes():
                    answer += chunk
                    if len(answer) > MAX_ANSWER:
                        break
        except httpx.TimeoutException:
            raise EndpointError(
                f"no answer within {endpoint.timeout:g} s: the endpoint is down or slow (the call goes again with"
                " the same Idempotency-Key)"
            ) from None
        except httpx.TransportError as exc:  # refused, reset, dropped mid-answer, TLS
            reason = hidden(str(exc)) or type(exc).__name__
            raise EndpointError(f"the endpoint is down or unreachable: {reason}") from None
        status = response.status_code
        said = f"HTTP {status} {response.reason_phrase}".strip()
        if 200 <= status < 300:
            return answer[:MAX_ANSWER]
        if status in RETRIED_STATUSES or status >= 500:
            wait = retry_after(response.headers.get("Retry-After"), datetime.now(UTC))
            raise TemporaryDeliveryError(f"the endpoint answered {said}: will retry", status, wait)
        raise PermanentDeliveryError(
            f"the endpoint refused this request: {said} (the request is bad or not allowed; not retried)", status
        )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
