"""The outbox: every planned send goes out exactly once, or someone is told; the owner of the relay's health.

`resume()` after a restart (a send interrupted mid-way goes again, except a customer reply: at most
once); `flush()` sends every due entry, claimed before it goes out (`pending` -> `sending`); each
result is recorded at once: sent, deferred with backoff (4xx, for `give_up_after_hours`), uncertain
(the answer to the final `.` was lost: a reply is never sent again, anything else goes again with the
same Message-ID), or failed (5xx: the failure unit gets a `[DELIVERY FAILED]` notice). While the
relay is unusable the whole outbox waits and no entry's state changes; a notice the failure unit
itself refuses is never given up, but retried at the longest backoff and alarmed.

A webhook call (an entry whose identity is of kind `webhook`, see core/ids.py) goes the same way through
service/webhook.py: 5xx and 429 are deferred (not before Retry-After), another 4xx fails it with a notice,
and an endpoint that is down waits like the relay, for that endpoint alone. A customer reply of a mail
whose ticket call gives a ticket number waits for that call and then quotes the number.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Protocol

import structlog

from emailrouter.config.loader import Config
from emailrouter.core.compose import compose_failure_notice
from emailrouter.core.errors import (
    EndpointError,
    PermanentDeliveryError,
    RelayError,
    StateError,
    TemporaryDeliveryError,
    UncertainDeliveryError,
)
from emailrouter.core.ids import is_webhook
from emailrouter.core.webhook import (
    compose_webhook_failure_notice,
    parse_request,
    quote_remote_reference,
    ticket_number,
)
from emailrouter.service.faults import crashpoint
from emailrouter.service.health import DEPENDENCY_RETRY_MAX, Dependency, StateGate, backoff
from emailrouter.service.metrics import Metrics
from emailrouter.service.store import MessageKey, OutboxEntry, PlannedSend, StateStore
from emailrouter.service.webhook import WebhookTransport

log = structlog.get_logger(__name__)
DUE_PAGE = 500  # due entries read at a time
IDENTITIES = 2 * DUE_PAGE  # the incoming mails' identities kept during a flush


class Transport(Protocol):
    async def send(self, mail_from: str, recipients: Sequence[str], raw: bytes) -> str: ...

    async def close(self) -> None: ...


class Outbox:
    """The planned sends of one router, the relay they go through and the failure unit told of failures."""

    def __init__(
        self,
        config: Config,
        store: StateStore,
        transport: Transport | None,
        state: StateGate,
        metrics: Metrics,
        clock: Callable[[], datetime],
    ) -> None:
        self.config = config
        self.store = store
        self.transport = transport
        self.state = state
        self.metrics = metrics
        self.clock = clock
        self.stopping = False  # SIGTERM: the send in hand is finished, no new one starts
        self.relay = Dependency("relay", metrics)
        self.failure_unit = Dependency("failure_unit", metrics)
        self.webhooks = WebhookTransport()
        self.endpoints: dict[str, Dependency] = {}  # unit key -> the health of its endpoint
        self._lock = asyncio.Lock()
        self._identities: dict[str, dict[str, object]] = {}  # msg_key -> `_incoming`, for one flush

    def endpoint(self, unit: str | None) -> Dependency:
        """The health of a unit's HTTP endpoint, like the relay's: while it is down its calls wait."""
        key = unit or ""
        if key not in self.endpoints:
            self.endpoints[key] = Dependency(f"endpoint_{key}", self.metrics)
        return self.endpoints[key]

    async def resume(self) -> None:
        """After a restart: a send interrupted mid-way is retried, except a customer reply (at most once)."""
        for entry in self.store.interrupted():
            if entry.kind == "reply":
                self.store.mark_failed(entry.id, "interrupted while sending: not sent again", status="uncertain")
                log.warning(
                    "reply_uncertain",
                    sent_message_id=entry.message_id,
                    to=list(entry.recipients),
                    **self._incoming(entry.msg_key),
                )
                self.metrics.action(entry.kind, entry.unit, "uncertain")
            else:
                self.store.mark_retry(entry.id, "interrupted while sending", self.clock())

    async def flush(self) -> int:
        """Send every due outbox entry. Returns how many were sent.

        One flush at a time: the outbox job and a mailbox job may both want to flush, and two flushes
        reading the same due entries would send them twice. While the relay is down (RelayError) the whole
        outbox waits, with backoff, and no entry's state changes."""
        if self.transport is None:
            return 0
        async with self._lock:
            if self.relay.waiting() or not self.state.usable():
                return 0
            delivered = 0
            self._identities = {}  # each mail's identity read once a flush (a reload may rename its mailbox)
            try:
                if self.store.shared:  # the claims of an instance that died meanwhile are ours to finish
                    await self.resume()
                while ids := self.store.due_ids(self.clock(), DUE_PAGE):
                    delivered += await self._deliver_page(ids)
                    if self.stopping or len(ids) < DUE_PAGE:
                        break
            except RelayError as exc:
                retry_max = min(DEPENDENCY_RETRY_MAX, self.config.settings.delivery.retry_max)
                self.relay.went_down(str(exc), maximum=retry_max)
            except StateError as exc:
                self.state.failed(exc)
            finally:
                with contextlib.suppress(StateError):
                    self.store.settle(self.clock())
                    self.metrics.outbox_pending(self.store.pending_count())
            return delivered

    async def _deliver_page(self, ids: Sequence[int]) -> int:
        """Send these due entries, as many at once as the transport has connections (`size`, 1 if it says
        none), in order, one entry of a mail at a time (its reply may wait for its ticket call). A send that
        raises (the relay is down, the state cannot be written) starts no new one; those under way finish and
        are recorded first, then the error goes up. Returns how many were sent."""
        parallel = max(1, int(getattr(self.transport, "size", 1)))
        running: dict[asyncio.Task[int], str] = {}  # send -> the mail it is for
        delivered = 0
        failures: list[BaseException] = []

        async def settle_one() -> None:
            nonlocal delivered
            done, _ = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                del running[task]
                if (error := task.exception()) is not None:
                    failures.append(error)
                else:
                    delivered += task.result()

        try:
            for entry_id in ids:
                if self.stopping or failures:
                    break
                entry = self.store.entry(entry_id)
                if entry is None or entry.status != "pending":
                    continue
                while running and (len(running) >= parallel or entry.msg_key in running.values()):
                    await settle_one()
                if failures:
                    break
                running[asyncio.create_task(self._deliver(entry))] = entry.msg_key
                del entry  # its body is held by its send alone
        finally:
            while running:  # never abandon a send under way: its result is recorded before anything else
                await settle_one()
        if failures:
            raise failures[0]
        return delivered

    async def _deliver(self, entry: OutboxEntry) -> int:
        """Send one entry and record what happened at once (1 if it was delivered). Claimed before the send,
        so no other task or process sends it too; for a customer reply the claim is durable before the 250,
        so a reply in doubt after a crash is never sent again. A relay-level error gives the claim back and
        propagates: the flush stops."""
        assert self.transport is not None
        delivery = self.config.settings.delivery
        record = self.state.record
        webhook = is_webhook(entry.message_id)
        answer: str | None = None
        with (
            structlog.contextvars.bound_contextvars(
                outbox_id=entry.id, sent_message_id=entry.message_id, for_mail=entry.msg_key, kind=entry.kind
            ),
            structlog.contextvars.bound_contextvars(**self._incoming(entry.msg_key)),
        ):
            if webhook and self.endpoint(entry.unit).waiting():
                return 0  # its endpoint is down: the call waits, its state unchanged
            raw = self._reply_raw(entry) if entry.kind == "reply" else entry.raw
            if raw is None:
                return 0  # it waits for the ticket system's number
            if not self.store.claim(entry.id, durable=entry.kind == "reply"):
                return 0
            try:
                if webhook:
                    answer = await self._call(entry)
                else:
                    await self.transport.send(entry.mail_from, entry.recipients, raw)
            except RelayError as exc:
                relay_error = str(exc)
                record(lambda: self.store.release(entry.id, relay_error))
                raise
            except EndpointError as exc:  # nothing wrong with the call: it goes again once the endpoint is back
                endpoint_error = str(exc)
                record(lambda: self.store.release(entry.id, endpoint_error))
                retry_max = min(DEPENDENCY_RETRY_MAX, delivery.retry_max)
                self.endpoint(entry.unit).went_down(endpoint_error, maximum=retry_max)
                self.metrics.action(entry.kind, entry.unit, "deferred")
                return 0
            except UncertainDeliveryError as exc:
                self._uncertain(entry, str(exc))
                return 0
            except TemporaryDeliveryError as exc:
                now = self.clock()
                if (now - entry.created_at).total_seconds() < delivery.give_up_after:
                    delay = backoff(entry.attempts + 1, delivery.retry_initial, delivery.retry_max)
                    if exc.retry_after is not None:  # the endpoint's Retry-After: not before then
                        delay = max(delay, min(exc.retry_after, delivery.give_up_after))
                    error, retry_at = str(exc), now + timedelta(seconds=delay)
                    record(lambda: self.store.mark_retry(entry.id, error, retry_at))
                    log.warning("send_deferred", error=error, retry_in=delay)
                    self.metrics.action(entry.kind, entry.unit, "deferred")
                    return 0
                self._permanent(entry, f"gave up after {delivery.give_up_after / 3600:g} h: {exc}")
                return 0
            except PermanentDeliveryError as exc:
                self._permanent(entry, str(exc))
                return 0
            except BaseException:  # a bug or a cancellation: nothing was sent that we know of, give the claim back
                record(lambda: self.store.release(entry.id))
                raise
            crashpoint("after-webhook-answered" if webhook else "after-smtp-accepted")
            now = self.clock()
            record(lambda: self.store.mark_sent([entry.id], now, answer))
            crashpoint("after-send-recorded")
            log.info("sent", to=list(entry.recipients), **({"ticket_number": answer} if answer else {}))
            self.metrics.action(entry.kind, entry.unit, "sent")
            if webhook:
                self.endpoint(entry.unit).came_back()
                return 1
            self.relay.came_back()
            if self._for_failure_unit(entry):
                self.failure_unit.came_back()
            return 1

    def _incoming(self, msg_key: str) -> dict[str, object]:
        """The identity of the mail a send is for, under the keys its `decision` event has (mailbox, uid,
        message_id; the send's own is `sent_message_id`): one grep finds a mail's decision and every send."""
        if (known := self._identities.get(msg_key)) is not None:
            return known
        if len(self._identities) >= IDENTITIES:
            self._identities.clear()
        self._identities[msg_key] = known = self._identity(msg_key)
        return known

    def _identity(self, msg_key: str) -> dict[str, object]:
        key = MessageKey.parse(msg_key)
        if key is None:
            return {}
        names = {(m.account, m.folder): m.name for m in self.config.settings.mailboxes}
        record = self.store.outcome(key)  # by its key: the primary key's lookup
        return {
            "mailbox": names.get((key.account, key.folder), key.account),
            "uid": key.uid,
            "message_id": record.dedupe_id if record and record.dedupe_id.startswith("<") else None,
        }

    async def _call(self, entry: OutboxEntry) -> str | None:
        """POST a webhook entry; the endpoint's own ticket number when its unit names where the answer has one."""
        endpoint = self.config.webhooks.get(entry.unit or "")  # the config in force: a reload changes it
        body = await self.webhooks.call(endpoint, parse_request(entry.raw))
        return ticket_number(body, endpoint.ticket_number) if endpoint is not None else None

    def _reply_raw(self, entry: OutboxEntry) -> bytes | None:
        """A customer reply as it goes out: quoting the ticket system's number once its ticket call has
        answered with one; None while that call is still under way (for at most the unit's `reply_waits`);
        our own reference after the call failed for good, gave no number, or took too long."""
        if not any(e.ticket_number for e in self.config.webhooks.values()):
            return entry.raw  # no endpoint gives a ticket number: nothing to wait for
        calls = [
            s
            for s in self.store.sends(entry.msg_key)
            if s.kind == "ticket" and is_webhook(s.message_id) and s.unit in self.config.webhooks
        ]
        endpoint = self.config.webhooks[calls[0].unit or ""] if calls else None
        if endpoint is None or not endpoint.ticket_number:
            return entry.raw
        call = calls[0]
        if call.status == "sent" and call.answer:
            try:
                return quote_remote_reference(entry.raw, call.answer)
            except ValueError as exc:
                log.warning("ticket_number_not_quoted", reason=str(exc))
                return entry.raw
        now = self.clock()
        waited = (now - entry.created_at).total_seconds()
        if call.status in ("pending", "sending") and waited < endpoint.reply_waits:
            delay = min(self.config.settings.delivery.retry_initial, endpoint.reply_waits - waited)
            retry_at = now + timedelta(seconds=max(delay, 1.0))
            self.state.record(lambda: self.store.mark_retry(entry.id, "waits for the ticket system's number", retry_at))
            return None
        return entry.raw

    def _uncertain(self, entry: OutboxEntry, error: str) -> None:
        """The message went out but its answer was lost or late: a customer reply is never sent again, anything
        else goes again (same Message-ID: the unit's mail client shows one message)."""
        self.metrics.action(entry.kind, entry.unit, "uncertain")
        if entry.kind == "reply":
            self.state.record(lambda: self.store.mark_failed(entry.id, error, status="uncertain"))
            log.warning("reply_uncertain", error=error, to=list(entry.recipients), resent=False)
            return
        delivery = self.config.settings.delivery
        delay = backoff(entry.attempts + 1, delivery.retry_initial, delivery.retry_max)
        retry_at = self.clock() + timedelta(seconds=delay)
        self.state.record(lambda: self.store.mark_retry(entry.id, error, retry_at))
        log.warning("send_uncertain", error=error, retry_in=delay, resent="with the same Message-ID")

    def _for_failure_unit(self, entry: OutboxEntry) -> bool:
        unit = self.config.units.get(self.config.router.failures_to)
        return entry.kind in ("failure", "quarantine") or (unit is not None and unit.address in entry.recipients)

    def _permanent(self, entry: OutboxEntry, error: str) -> None:
        """Recorded, and the failure unit is told, so the mail does not vanish. A message *to* the failure unit
        has nobody else to tell: it is never given up, but retried (at the longest backoff) and alarmed."""
        if self._for_failure_unit(entry):
            delay = self.config.settings.delivery.retry_max
            retry_at = self.clock() + timedelta(seconds=delay)
            self.state.record(lambda: self.store.mark_retry(entry.id, error, retry_at))
            self.metrics.action(entry.kind, entry.unit, "deferred")
            self.failure_unit.went_down(f"refused a {entry.kind}: {error}", maximum=delay)
            return
        self.state.record(lambda: self.store.mark_failed(entry.id, error))
        self.metrics.action(entry.kind, entry.unit, "failed")
        log.error("send_failed", to=list(entry.recipients), error=error)
        router = self.config.router
        unit = self.config.units.get(router.failures_to)
        if unit is None:
            log.error("failure_notice_impossible", reason=f"no unit {router.failures_to!r}")
            return
        if is_webhook(entry.message_id):
            notice = compose_webhook_failure_notice(
                router,
                unit,
                kind=entry.kind,
                request=entry.raw,
                call_id=entry.message_id,
                error=error,
                now=self.clock(),
            )
        else:
            notice = compose_failure_notice(
                router,
                unit,
                kind=entry.kind,
                recipients=list(entry.recipients),
                error=error,
                undelivered=entry.raw,
                undelivered_id=entry.message_id,
                now=self.clock(),
            )
        send = PlannedSend(
            "failure", unit.key, router.address, (unit.address,), str(notice["Message-ID"]), notice.as_bytes()
        )
        self.state.record(lambda: self.store.add_send(entry.msg_key, send, self.clock()))

    async def close(self) -> None:
        """Say QUIT to the relay; close the endpoints' connections."""
        await self.webhooks.close()
        if self.transport is not None:
            await self.transport.close()
