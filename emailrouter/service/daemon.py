"""The daemon: IMAP in, SMTP out, exactly once.

`Router` holds the logic of one pass (`poll_once(mailbox)`, `flush_outbox()`), the same code for
`run` (under APScheduler) and `run --once` (without it). For each new mail:

    fetch (BODY.PEEK[]) -> route (pure) -> plan committed (decision + every outgoing message)
        -> send each (recorded) -> IMAP mark processed (last)

A crash anywhere leaves the state store knowing what to finish: see store.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from email.policy import compat32
from pathlib import Path
from typing import Any, Protocol

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from emailrouter.config.loader import Config, load_config
from emailrouter.config.settings import MailboxConfig
from emailrouter.core import mime
from emailrouter.core.classify import Contact
from emailrouter.core.compose import compose_failure_notice, compose_quarantine_notice, compose_render_failure_notice
from emailrouter.core.dedupe import bytes_hash, content_hash, duplicate_of
from emailrouter.core.errors import (
    ConfigError,
    MailboxError,
    PermanentDeliveryError,
    RelayError,
    StateError,
    TemporaryDeliveryError,
    UncertainDeliveryError,
)
from emailrouter.core.explain import as_json
from emailrouter.core.model import MessageView, Record, Reply
from emailrouter.core.pipeline import Memory, Routing, read, route
from emailrouter.service.faults import crashpoint
from emailrouter.service.imap import Fetched, ImapMailbox, watch_idle
from emailrouter.service.metrics import Metrics, MetricsServer, stale_mailboxes
from emailrouter.service.sdnotify import Notifier
from emailrouter.service.smtp import SmtpTransport
from emailrouter.service.store import MessageKey, OutboxEntry, Plan, PlannedSend, Store

log = structlog.get_logger(__name__)
# Plans are committed together, at most this many (or this many bytes of outgoing mail) at a time:
# one fsync for many mails, and the memory held before the commit stays bounded.
QUARANTINED = "$Quarantined"
AUTOMATED = "$Automated"
PLAN_BATCH = 50
PLAN_BATCH_BYTES = 8 * 1024 * 1024
STATE_RETRY_MAX = 10.0  # seconds between tries of a state store that cannot be written (disk full)
FETCH_BYTES = 16 * 1024 * 1024  # a fetch never asks for more mail than this at once
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)


class Transport(Protocol):
    async def send(self, mail_from: str, recipients: Sequence[str], raw: bytes) -> str: ...

    async def close(self) -> None: ...


def quick_headers(raw: bytes) -> dict[str, str]:
    """Message-ID, From and Subject of a mail a stage broke on, read as leniently as possible (never raises):
    enough for the quarantine notice and the log."""
    out: dict[str, str] = {}
    try:
        headers = BytesHeaderParser(policy=compat32).parsebytes(raw[:65536])
        for name in ("message-id", "from", "subject"):
            value = headers.get(name)
            if value is not None:
                out[name] = " ".join(str(value).split())[:300]
    except Exception:  # the mail is already known to break things: fall back to nothing
        pass
    return out


def utcnow() -> datetime:
    return datetime.now(UTC)


def backoff(attempts: int, initial: float, maximum: float) -> float:
    """Exponential: initial, 2x, 4x ... capped at maximum (seconds)."""
    return float(min(maximum, initial * (2 ** max(0, attempts - 1))))


@dataclass
class PollReport:
    mailbox: str
    ok: bool = True
    fetched: int = 0
    planned: int = 0
    duplicates: int = 0
    quarantined: int = 0
    marked: int = 0
    error: str | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)  # one per mail (dry run and demo)


@dataclass
class MailboxHealth:
    last_success: float = 0.0  # time.monotonic() of the last successful poll
    failures: int = 0
    retry_at: float = 0.0


@dataclass
class Dependency:
    """Something every mail needs (the relay, the state store, the failure unit): while it is down the router
    waits for it with backoff instead of failing mail, and says so (log, metric, /healthz, STATUS)."""

    name: str
    error: str | None = None  # None: working
    failures: int = 0
    retry_at: float = 0.0  # time.monotonic() before which it is not tried again

    @property
    def up(self) -> bool:
        return self.error is None

    def waiting(self) -> bool:
        return self.error is not None and time.monotonic() < self.retry_at


class Router:
    """One router: the config in force, the state store, the SMTP transport and the IMAP connections."""

    def __init__(
        self,
        config: Config,
        store: Store,
        transport: Transport | None,
        *,
        dry_run: bool = False,
        clock: Callable[[], datetime] = utcnow,
        metrics: Metrics | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        self.store = store
        self.transport = transport
        self.dry_run = dry_run
        self.clock = clock
        self.stopping = False  # set on SIGTERM: finish the message in hand, take no new one
        self.health: dict[str, MailboxHealth] = {m.name: MailboxHealth() for m in config.settings.mailboxes}
        self._imap: dict[str, ImapMailbox] = {}
        self._flush_lock = asyncio.Lock()
        self.relay = Dependency("relay")
        self.state = Dependency("state")
        self.failure_unit = Dependency("failure_unit")
        # outcomes of sends that happened but could not be written (state store full): written first next time
        self._unrecorded: list[Callable[[], None]] = []

    # ------------------------------------------------------------------ dependencies

    def _went_down(self, dep: Dependency, error: str, maximum: float = 300.0) -> None:
        dep.failures += 1
        delay = backoff(dep.failures, 1.0, maximum)
        dep.retry_at = time.monotonic() + delay
        if dep.error is None:
            log.error(f"{dep.name}_unavailable", error=error, retry_in=delay)
        else:
            log.info(f"{dep.name}_still_unavailable", error=error, retry_in=delay, failures=dep.failures)
        dep.error = error
        self.metrics.dependency(dep.name, False)

    def _came_back(self, dep: Dependency) -> None:
        if dep.error is not None:
            log.info(f"{dep.name}_recovered", after_failures=dep.failures)
            self.metrics.dependency(dep.name, True)
        dep.error, dep.failures, dep.retry_at = None, 0, 0.0

    def problems(self) -> list[str]:
        """What is down right now, one line each (for /healthz, the watchdog and STATUS)."""
        return [f"{d.name}: {d.error}" for d in (self.relay, self.state, self.failure_unit) if d.error is not None]

    def _record(self, write: Callable[[], None]) -> None:
        """Write the outcome of a send; if the state store cannot take it now, keep it and write it first next time."""
        try:
            write()
        except StateError as exc:
            self._unrecorded.append(write)
            self._went_down(self.state, str(exc), maximum=STATE_RETRY_MAX)

    def _state_usable(self) -> bool:
        """Write what could not be written before; False while the state store still refuses (or waits)."""
        if self.state.waiting():
            return False
        while self._unrecorded:
            try:
                self._unrecorded[0]()
            except StateError as exc:
                self._went_down(self.state, str(exc), maximum=STATE_RETRY_MAX)
                return False
            self._unrecorded.pop(0)
        return True

    def should_stop(self) -> bool:
        return self.stopping

    # ------------------------------------------------------------------ IMAP side

    async def _connection(self, mailbox: MailboxConfig) -> tuple[ImapMailbox, int]:
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
        """Log out of every mailbox and say QUIT to the relay."""
        for conn in self._imap.values():
            await asyncio.to_thread(conn.close)
        self._imap.clear()
        if self.transport is not None:
            await self.transport.close()

    async def poll_once(self, mailbox: MailboxConfig) -> PollReport:
        """One pass over one mailbox: finish what is settled, then take new mail.

        Nothing new is taken while the state store cannot be written: a plan that cannot be committed is
        not acted on, and the checkpoint stays where it was, so the same mail is taken again later."""
        report = PollReport(mailbox.name)
        health = self.health.setdefault(mailbox.name, MailboxHealth())
        if not self.dry_run and not self._state_usable():
            report.ok, report.error = False, f"state store unwritable: {self.state.error}"
            return report
        try:
            conn, uidvalidity = await self._connection(mailbox)
            if not self.dry_run:
                await self._finish(mailbox, conn, uidvalidity, report)
            uids = await asyncio.to_thread(self._new_uids, conn, mailbox, uidvalidity)
            for start in range(0, len(uids), mailbox.batch_size):
                if self.stopping:
                    break
                batch = uids[start : start + mailbox.batch_size]
                sizes = await asyncio.to_thread(conn.sizes, batch)
                plans: list[Plan] = []
                # Memory stays bounded, whatever the batch: one piece of fetched mail (at most FETCH_BYTES, or
                # one mail) and the plans not committed yet (at most PLAN_BATCH_BYTES) are all that is held.
                for piece in self._fetch_bounded(batch, sizes):
                    if self.should_stop():
                        break  # SIGTERM: the message in hand was finished; the rest waits
                    fetched = await asyncio.to_thread(conn.fetch, piece)
                    report.fetched += len(fetched)
                    for uid in piece:
                        if self.should_stop():
                            break
                        mail = fetched.pop(uid, None)  # dropped once decided
                        if mail is not None and (plan := self._process(mailbox, uidvalidity, mail, report, plans)):
                            plans.append(plan)
                        mail = plan = None  # nothing of this mail is held past this point but its plan in `plans`
                        if len(plans) >= PLAN_BATCH or sum(p.size for p in plans) >= PLAN_BATCH_BYTES:
                            self._commit(plans)
                            await asyncio.sleep(0)  # let signals and IDLE wake-ups in
                    del fetched
                self._commit(plans)
                if not self.dry_run:
                    await self.flush_outbox()
                    await self._finish(mailbox, conn, uidvalidity, report)
        except StateError as exc:  # the IMAP side is fine: keep the connection, wait for the disk
            self._went_down(self.state, str(exc), maximum=STATE_RETRY_MAX)
            report.ok, report.error = False, f"state store unwritable: {exc}"
            return report
        except (MailboxError, OSError) as exc:
            return self._failed(mailbox, health, report, str(exc))
        except Exception as exc:  # imapclient raises its own error types; one bad mailbox never stops the others
            return self._failed(mailbox, health, report, f"{type(exc).__name__}: {exc}")
        if not self.dry_run:
            self._came_back(self.state)
        health.failures = 0
        health.last_success = time.monotonic()
        self.metrics.poll_success(mailbox.name)
        return report

    def _failed(self, mailbox: MailboxConfig, health: MailboxHealth, report: PollReport, error: str) -> PollReport:
        conn = self._imap.pop(mailbox.name, None)
        if conn is not None:
            conn.close()
        health.failures += 1
        delay = backoff(health.failures, 1.0, 300.0)
        health.retry_at = time.monotonic() + delay
        log.warning("mailbox_failed", mailbox=mailbox.name, error=error, retry_in=delay)
        report.ok = False
        report.error = error
        return report

    @staticmethod
    def _fetch_bounded(batch: Sequence[int], sizes: dict[int, int]) -> list[list[int]]:
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

    async def _finish(self, mailbox: MailboxConfig, conn: ImapMailbox, uidvalidity: int, report: PollReport) -> None:
        """Mark processed every mail whose actions are all durable (the IMAP mark comes last); flag
        automated mail $Automated and quarantined mail $Quarantined (left in place, not marked processed)."""
        self.store.settle(self.clock())
        rows = [
            r
            for r in self.store.unfinished(mailbox.account, mailbox.folder)
            if r.outcome != "planned" and r.key.uidvalidity == uidvalidity
        ]
        if not rows:
            return
        quarantined = [r.key.uid for r in rows if r.outcome == "quarantined"]
        automated = [r.key.uid for r in rows if r.outcome == "automated"]
        processed = [r.key.uid for r in rows if r.outcome != "quarantined"]

        def mark() -> None:
            conn.flag(quarantined, QUARANTINED)
            conn.flag(automated, AUTOMATED)  # before a move, so the flag travels with the mail
            conn.mark(processed)

        await asyncio.to_thread(mark)
        self.store.marked([str(r.key) for r in rows])
        report.marked += len(processed)

    # ------------------------------------------------------------------ one mail

    def _process(
        self, mailbox: MailboxConfig, uidvalidity: int, fetched: Fetched, report: PollReport, plans: list[Plan]
    ) -> Plan | None:
        """Decide one mail. The plan it returns (every outcome, duplicates and quarantine included) is
        committed with the others of its batch before any send, and before the checkpoint passes it.
        `plans` are this batch's plans not committed yet."""
        key = MessageKey(mailbox.account, mailbox.folder, uidvalidity, fetched.uid)
        # a fresh context per mail: nothing of the previous mail's identity leaks into this one's lines
        with structlog.contextvars.bound_contextvars(mailbox=mailbox.name, uid=fetched.uid, message_id=None):
            if self.store.outcome(key) is not None:
                return None  # already planned: the outbox and _finish take it from here
            now = self.clock()

            started = time.perf_counter()
            content = content_hash(fetched.raw)
            try:
                view = read(fetched.raw, self.config)
                routing = route(view, self.config, now, self._memory(view, plans, now))
            except Exception as exc:  # a stage broke on this mail: quarantine it, the batch goes on
                return self._quarantine(mailbox, key, fetched, content, f"{type(exc).__name__}: {exc}", plans, report)
            dedupe = view.message_id or bytes_hash(fetched.raw)
            structlog.contextvars.bind_contextvars(message_id=view.message_id)
            earlier = [(str(p.key), p.content_hash) for p in plans if p.dedupe_id == dedupe]
            earlier += self.store.seen(dedupe)
            first = duplicate_of(content, earlier)
            if first is not None:
                log.info("decision", outcome="duplicate", first=first)
                seg, intent = routing.segmentation.segment, routing.classification.intent
                self.metrics.message(mailbox.name, seg, intent, "duplicate")
                report.duplicates += 1
                report.rows.append(self._row(routing, "duplicate"))
                crashpoint("after-duplicate")
                if self.dry_run:
                    return None
                return Plan(key, dedupe, "", {}, (), now, None, "duplicate", content_hash=content)
            if earlier:  # the same Message-ID on a different mail: processed as the new mail it is
                log.warning("message_id_reused", earlier=[k for k, _ in earlier][:3])
            outgoing, suppressed = routing.outgoing, routing.suppressed
            record = next((a.tag for a in routing.decision.actions if isinstance(a, Record)), None)
            outcome = "dry-run" if self.dry_run else (record or "planned")
            log.info(
                "decision",
                outcome=outcome,
                rule=routing.decision.rule,
                segment=routing.segmentation.segment,
                segment_source=routing.segmentation.source,
                intent=routing.classification.intent,
                hard=routing.classification.hard,
                hard_score=routing.classification.hard_score,
                actions=[f"{o.action.type}:{','.join(o.to)}" for o in outgoing],
                suppressed=[s.describe() for s in suppressed],
                failed=[f.describe() for f in routing.failed],
                automated=routing.automated,
                reference=routing.decision.reference,
                size=fetched.size,
            )
            self.metrics.message(mailbox.name, routing.segmentation.segment, routing.classification.intent, outcome)
            for skipped in suppressed:
                self.metrics.action(skipped.type, None, "suppressed")
            for _ in routing.failed:
                self.metrics.action("reply", None, "failed")
            report.rows.append(self._row(routing, outcome))
            report.planned += 1
            if self.dry_run:
                return None
            sends = [
                PlannedSend(
                    kind=o.action.type,
                    unit=o.unit,
                    mail_from=self.config.router.address,
                    recipients=tuple(o.to),
                    message_id=o.message_id,
                    raw=mime.as_bytes(o.message),  # the original copied once, not once per MIME level
                )
                for o in outgoing
            ]
            sends += self._render_failure_notices(routing, now)
            trace = as_json(routing, str(key), self.config.version)
            trace["timings"] = {"decide_ms": round((time.perf_counter() - started) * 1000, 3)}
            contact = (view.sender.address, routing.classification.intent) if view.sender else None
            if routing.automated:
                contact = None  # a robot's mail is no customer contact
            replies = [(to, o.action.template) for o in outgoing if isinstance(o.action, Reply) for to in o.to]
            bounced = [r.recipient for r in routing.bounced if self.store.replied_to(r.message_ids, r.recipient)]
            if len(bounced) < len(routing.bounced):
                ignored = sorted({r.recipient for r in routing.bounced} - set(bounced))
                log.warning("bounce_ignored", reason="it quotes no reply we sent to that address", recipients=ignored)
            return Plan(
                key,
                dedupe,
                routing.decision.rule,
                trace,
                sends,
                now,
                contact,
                record or "done",
                replies,
                bounced,
                content_hash=content,
            )

    def _failure_unit_send(self, kind: str, msg: EmailMessage) -> PlannedSend | None:
        unit = self.config.units.get(self.config.router.failures_to)
        if unit is None:
            return None
        return PlannedSend(
            kind, unit.key, self.config.router.address, (unit.address,), str(msg["Message-ID"]), msg.as_bytes()
        )

    def _render_failure_notices(self, routing: Routing, now: datetime) -> list[PlannedSend]:
        """A reply whose template failed on this mail: the failure unit is told (the other actions go out)."""
        unit = self.config.units.get(self.config.router.failures_to)
        out = []
        for failure in routing.failed:
            log.error("reply_not_rendered", template=failure.template, reason=failure.reason)
            if unit is None:
                continue
            notice = compose_render_failure_notice(
                self.config.router,
                unit,
                routing.view,
                failure,
                rule=routing.decision.rule,
                reference=routing.decision.reference,
                now=now,
            )
            if (send := self._failure_unit_send("failure", notice)) is not None:
                out.append(send)
        return out

    def _quarantine(
        self,
        mailbox: MailboxConfig,
        key: MessageKey,
        fetched: Fetched,
        content: str,
        error: str,
        plans: list[Plan],
        report: PollReport,
    ) -> Plan | None:
        """A mail a stage broke on: recorded (flagged $Quarantined, left unread) and the failure unit is told,
        at most `limits.quarantine_notices_per_hour` times an hour."""
        error = error[:500]
        now = self.clock()
        headers = quick_headers(fetched.raw)
        log.error("decision", outcome="quarantined", error=error, size=fetched.size)
        self.metrics.message(mailbox.name, "unknown", "unknown", "quarantined")
        report.quarantined += 1
        if self.dry_run:
            return None
        sends: list[PlannedSend] = []
        unit = self.config.units.get(self.config.router.failures_to)
        limit = self.config.settings.quarantine_notices_per_hour
        recent = self.store.count_sends("quarantine", now - timedelta(hours=1))
        recent += sum(1 for p in plans for s in p.sends if s.kind == "quarantine")
        if unit is not None and recent < limit:
            small = fetched.size <= self.config.max_message_bytes
            notice = compose_quarantine_notice(
                self.config.router,
                unit,
                mailbox=mailbox.name,
                uid=fetched.uid,
                message_id=headers.get("message-id"),
                sender=headers.get("from", "(unknown)"),
                subject=headers.get("subject", ""),
                error=error,
                original=fetched.raw if small else None,
                now=now,
            )
            if (send := self._failure_unit_send("quarantine", notice)) is not None:
                sends.append(send)
        else:
            log.warning("quarantine_notice_suppressed", limit_per_hour=limit)
        dedupe = headers.get("message-id") or bytes_hash(fetched.raw)
        return Plan(key, dedupe, "", {}, sends, now, None, "quarantined", error=error, content_hash=content)

    def _memory(self, view: MessageView, plans: list[Plan], now: datetime) -> Memory:
        """What the state remembers about the sender: the store, and this batch's plans not committed yet."""
        loop = self.config.settings.loop
        if view.sender is None:
            return Memory(loop=loop)
        sender = view.sender.address
        contacts: list[Contact] = []
        if days := self.config.signals.history_days:
            contacts = self.store.history(sender, now - timedelta(days=days))
            contacts += [Contact(p.now, p.contact[1]) for p in plans if p.contact and p.contact[0] == sender]
        replies = self.store.replies_to([sender], now - loop.lookback)
        replies += [(a.lower(), t, p.now) for p in plans for a, t in p.replies]
        bounced = self.store.bounces([sender])
        for p in plans:
            bounced.update({a.lower(): p.now for a in p.bounced})
        return Memory(tuple(contacts), tuple(replies), bounced, loop)

    def _commit(self, plans: list[Plan]) -> None:
        """The plan commit: durable before anything of these mails is sent. If it fails (StateError), nothing
        of these mails happened: the batch stops and is taken again from the same checkpoint."""
        if plans and not self.dry_run:
            self.store.plan(plans)
            plans.clear()
            crashpoint("after-plan")

    @staticmethod
    def _row(routing: Routing, outcome: str) -> dict[str, Any]:
        return {
            "subject": routing.view.subject,
            "sender": routing.view.sender.address if routing.view.sender else None,
            "segment": routing.segmentation.segment,
            "intent": routing.classification.intent,
            "hard": routing.classification.hard,
            "rule": routing.decision.rule,
            "outcome": outcome,
            "sends": [(o.action.type, o.to) for o in routing.outgoing],
        }

    async def retry(self, mailbox: MailboxConfig, uids: Sequence[int]) -> PollReport:
        """`quarantine retry`: forget what went wrong with these mails, take them again, unflagged."""
        report = PollReport(mailbox.name)
        conn, uidvalidity = await self._connection(mailbox)
        for uid in uids:
            self.store.forget(MessageKey(mailbox.account, mailbox.folder, uidvalidity, uid))
        await asyncio.to_thread(conn.unflag, list(uids), QUARANTINED)
        fetched = await asyncio.to_thread(conn.fetch, list(uids))
        plans: list[Plan] = []
        for uid in uids:
            if uid in fetched and (plan := self._process(mailbox, uidvalidity, fetched[uid], report, plans)):
                plans.append(plan)
        self._commit(plans)
        await self.flush_outbox()
        await self._finish(mailbox, conn, uidvalidity, report)
        return report

    # ------------------------------------------------------------------ SMTP side

    async def resume(self) -> None:
        """After a restart: a send interrupted mid-way is retried, except a customer reply (at most once)."""
        for entry in self.store.interrupted():
            if entry.kind == "reply":
                self.store.mark_failed(entry.id, "interrupted while sending: not sent again", status="uncertain")
                log.warning("reply_uncertain", message_id=entry.message_id, to=list(entry.recipients))
                self.metrics.action(entry.kind, entry.unit, "uncertain")
            else:
                self.store.mark_retry(entry.id, "interrupted while sending", self.clock())

    async def flush_outbox(self) -> int:
        """Send every due outbox entry. Returns how many were sent.

        One flush at a time: the outbox job and a mailbox job may both want to flush, and two flushes
        reading the same due entries would send them twice. While the relay is down (RelayError) the whole
        outbox waits, with backoff, and no entry's state changes."""
        if self.transport is None or self.dry_run:
            return 0
        async with self._flush_lock:
            if self.relay.waiting() or not self._state_usable():
                return 0
            delivered = 0
            try:
                while ids := self.store.due_ids(self.clock()):
                    for entry_id in ids:
                        if self.stopping:
                            return delivered
                        entry = self.store.entry(entry_id)
                        if entry is not None and entry.status == "pending":
                            delivered += await self._deliver(entry)
                    if len(ids) < 500:
                        break
            except RelayError as exc:
                self._went_down(self.relay, str(exc), maximum=min(300.0, self.config.settings.delivery.retry_max))
            except StateError as exc:
                self._went_down(self.state, str(exc), maximum=STATE_RETRY_MAX)
            finally:
                with contextlib.suppress(StateError):
                    self.store.settle(self.clock())
                    self.metrics.outbox_pending(self.store.pending_count())
            return delivered

    async def _deliver(self, entry: OutboxEntry) -> int:
        """Send one entry and record what happened at once (1 if it was delivered). Claimed before the send,
        so no other task or process sends it too; for a customer reply the claim is durable before the 250,
        so a reply in doubt after a crash is never sent again. A relay-level error gives the claim back and
        propagates: the flush stops."""
        assert self.transport is not None
        delivery = self.config.settings.delivery
        with structlog.contextvars.bound_contextvars(
            outbox_id=entry.id, message_id=entry.message_id, for_mail=entry.msg_key, kind=entry.kind
        ):
            if not self.store.claim(entry.id, durable=entry.kind == "reply"):
                return 0
            try:
                await self.transport.send(entry.mail_from, entry.recipients, entry.raw)
            except RelayError as exc:
                relay_error = str(exc)
                self._record(lambda: self.store.release(entry.id, relay_error))
                raise
            except UncertainDeliveryError as exc:
                self._uncertain(entry, str(exc))
                return 0
            except TemporaryDeliveryError as exc:
                now = self.clock()
                if (now - entry.created_at).total_seconds() < delivery.give_up_after:
                    delay = backoff(entry.attempts + 1, delivery.retry_initial, delivery.retry_max)
                    error, retry_at = str(exc), now + timedelta(seconds=delay)
                    self._record(lambda: self.store.mark_retry(entry.id, error, retry_at))
                    log.warning("send_deferred", error=error, retry_in=delay)
                    self.metrics.action(entry.kind, entry.unit, "deferred")
                    return 0
                self._permanent(entry, f"gave up after {delivery.give_up_after / 3600:g} h: {exc}")
                return 0
            except PermanentDeliveryError as exc:
                self._permanent(entry, str(exc))
                return 0
            except BaseException:  # a bug or a cancellation: nothing was sent that we know of, give the claim back
                self._record(lambda: self.store.release(entry.id))
                raise
            crashpoint("after-smtp-accepted")
            now = self.clock()
            self._record(lambda: self.store.mark_sent([entry.id], now))
            crashpoint("after-send-recorded")
            log.info("sent", to=list(entry.recipients))
            self.metrics.action(entry.kind, entry.unit, "sent")
            self._came_back(self.relay)
            if self._for_failure_unit(entry):
                self._came_back(self.failure_unit)
            return 1

    def _uncertain(self, entry: OutboxEntry, error: str) -> None:
        """The message went out but its answer was lost or late: a customer reply is never sent again, anything
        else goes again (same Message-ID: the unit's mail client shows one message)."""
        self.metrics.action(entry.kind, entry.unit, "uncertain")
        if entry.kind == "reply":
            self._record(lambda: self.store.mark_failed(entry.id, error, status="uncertain"))
            log.warning("reply_uncertain", error=error, to=list(entry.recipients), resent=False)
            return
        delivery = self.config.settings.delivery
        delay = backoff(entry.attempts + 1, delivery.retry_initial, delivery.retry_max)
        retry_at = self.clock() + timedelta(seconds=delay)
        self._record(lambda: self.store.mark_retry(entry.id, error, retry_at))
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
            self._record(lambda: self.store.mark_retry(entry.id, error, retry_at))
            self.metrics.action(entry.kind, entry.unit, "deferred")
            self._went_down(self.failure_unit, f"refused a {entry.kind}: {error}", maximum=delay)
            return
        self._record(lambda: self.store.mark_failed(entry.id, error))
        self.metrics.action(entry.kind, entry.unit, "failed")
        log.error("send_failed", to=list(entry.recipients), error=error)
        router = self.config.router
        unit = self.config.units.get(router.failures_to)
        if unit is None:
            log.error("failure_notice_impossible", reason=f"no unit {router.failures_to!r}")
            return
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
        self._record(lambda: self.store.add_send(entry.msg_key, send, self.clock()))

    # ------------------------------------------------------------------ status

    def status(self) -> str:
        counts = self.store.counts()
        parts = [f"{counts.get(k, 0)} {k}" for k in ("done", "planned", "duplicate", "automated", "quarantined")]
        down = "".join(f"; {problem}" for problem in self.problems())
        return f"{', '.join(parts)}; outbox {counts['outbox_pending']} pending{down}"


async def run_once(router: Router) -> tuple[int, list[PollReport]]:
    """One pass over every mailbox, then the outbox; exit status 1 if any mailbox failed."""
    await router.resume()
    reports = []
    for mailbox in router.config.settings.mailboxes:
        reports.append(await router.poll_once(mailbox))
    await router.flush_outbox()
    for mailbox in router.config.settings.mailboxes:
        if not router.dry_run and any(r.mailbox == mailbox.name and r.ok for r in reports):
            with contextlib.suppress(Exception):
                conn, uidvalidity = await router._connection(mailbox)
                await router._finish(mailbox, conn, uidvalidity, PollReport(mailbox.name))
    await router.close()
    return (0 if all(r.ok for r in reports) else 1), reports


class Service:
    """`emailrouter run`: the scheduler, signals, reload, IDLE watchers and systemd notification."""

    def __init__(self, config_path: Path, router: Router) -> None:
        self.config_path = config_path
        self.router = router
        self.scheduler = AsyncIOScheduler(timezone=UTC)
        self.notifier = Notifier()
        self.stop_event = asyncio.Event()
        self._idle_stop = threading.Event()
        self._idle_threads: list[threading.Thread] = []
        self._wake: set[str] = set()
        self._running: dict[str, asyncio.Task[Any]] = {}
        self._ready = False
        self._started = time.monotonic()
        self._metrics_server: MetricsServer | None = None

    # jobs ------------------------------------------------------------------

    async def _mailbox_job(self, name: str) -> None:
        mailbox = next((m for m in self.router.config.settings.mailboxes if m.name == name), None)
        health = self.router.health.setdefault(name, MailboxHealth())
        if mailbox is None or self.router.stopping or time.monotonic() < health.retry_at:
            return
        task = asyncio.current_task()
        assert task is not None
        self._running[name] = task
        try:
            while True:
                self._wake.discard(name)
                report = await self.router.poll_once(mailbox)
                if report.ok and not self._ready:
                    self._ready = True
                    self.notifier.send(ready="1")
                if name not in self._wake or self.router.stopping or not report.ok:
                    break
        finally:
            self._running.pop(name, None)
        if self.notifier.enabled:  # counting the store is not free: only when someone listens
            self.notifier.send(status=self.router.status())

    async def _outbox_job(self) -> None:
        if not self.router.stopping:
            await self.router.flush_outbox()

    async def _report_job(self) -> None:
        await send_daily_report(self.router)

    async def _housekeeping_job(self) -> None:
        keep = self.router.config.settings.housekeeping.keep_days
        removed = self.router.store.prune(self.router.clock(), keep)
        log.info("housekeeping", removed=removed, keep_days=keep)

    def _health(self) -> list[str]:
        """For /healthz (runs on the HTTP thread: reads only): mailboxes without a recent successful poll."""
        health = list(self.router.health.items())
        mailboxes = self.router.config.settings.mailboxes
        stale = stale_mailboxes(
            {n: h.last_success for n, h in health},
            {m.name: max(m.poll_interval, 10) for m in mailboxes},
            time.monotonic(),
            started=self._started,
        )
        return stale + self.router.problems()

    def wake(self, name: str) -> None:
        """New mail announced by IDLE: poll now (or right after the poll in progress)."""
        self._wake.add(name)
        if name not in self._running and not self.router.stopping:
            job = self.scheduler.get_job(f"mailbox:{name}")
            if job is not None:
                job.modify(next_run_time=datetime.now(UTC))

    # wiring ----------------------------------------------------------------

    def _schedule(self, config: Config) -> None:
        for job in self.scheduler.get_jobs():
            job.remove()
        now = datetime.now(UTC)
        for mailbox in config.settings.mailboxes:
            self.scheduler.add_job(
                self._mailbox_job,
                "interval",
                seconds=mailbox.poll_interval,
                args=[mailbox.name],
                id=f"mailbox:{mailbox.name}",
                max_instances=1,
                coalesce=True,
                next_run_time=now,
                misfire_grace_time=None,
            )
        self.scheduler.add_job(
            self._outbox_job,
            "interval",
            seconds=config.settings.delivery.outbox_interval,
            id="outbox",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=None,
        )
        hk = config.settings.housekeeping
        daily = [(self._housekeeping_job, "housekeeping", hk.hour, hk.minute)]
        if (report := config.settings.report) is not None:
            daily.append((self._report_job, "report", report.hour, report.minute))
        for job, job_id, hour, minute in daily:
            self.scheduler.add_job(job, "cron", hour=hour, minute=minute, id=job_id, max_instances=1, coalesce=True)
        self._start_idle(config)

    def _start_idle(self, config: Config) -> None:
        self._idle_stop.set()
        for thread in self._idle_threads:
            thread.join(timeout=10)
        self._idle_stop = threading.Event()
        loop = asyncio.get_running_loop()
        self._idle_threads = []
        for mailbox in config.settings.mailboxes:
            if not mailbox.idle:
                continue

            def on_new_mail(name: str = mailbox.name) -> None:
                loop.call_soon_threadsafe(self.wake, name)

            thread = threading.Thread(
                target=watch_idle,
                args=(mailbox, on_new_mail, self._idle_stop),
                name=f"idle-{mailbox.name}",
                daemon=True,
            )
            thread.start()
            self._idle_threads.append(thread)

    def reload(self) -> None:
        """SIGHUP: a config that fails `check` is rejected and the running one stays."""
        try:
            config = load_config(self.config_path)
        except ConfigError as exc:
            log.error("reload_rejected", problems=[str(p) for p in exc.problems])
            self.router.metrics.reload("rejected")
            return
        if config.settings.state_path != self.router.config.settings.state_path:
            log.warning("reload_state_path_ignored", reason="the state store moves only with a restart")
        old_listen = self.router.config.settings.metrics_listen
        self.router.config = config
        for warning in config.settings.plaintext_warnings():
            log.warning("plaintext_connection", detail=warning)
        self._schedule(config)
        if config.settings.metrics_listen != old_listen:
            log.warning("reload_metrics_listen_ignored", reason="the metrics address moves only with a restart")
        self.router.metrics.reload("ok")
        log.info("reloaded", version=config.version)

    async def _watchdog(self) -> None:
        """Under systemd: STATUS= now and then, and WATCHDOG=1 only while every mailbox makes progress
        (the same rule as /healthz)."""
        interval = self.notifier.watchdog_interval
        while not self.stop_event.is_set():
            await asyncio.sleep(max(1.0, interval / 3) if interval else 10.0)
            self.notifier.send(status=self.router.status())
            if interval and not self._health():
                self.notifier.send(watchdog="1")

    async def serve(self) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stop_event.set)
        loop.add_signal_handler(signal.SIGINT, self.stop_event.set)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        await self.router.resume()
        self._started = time.monotonic()
        listen = self.router.config.settings.metrics_listen
        if listen is not None:  # off unless configured; a taken port fails the start rather than run blind
            self._metrics_server = MetricsServer(self.router.metrics, listen[0], listen[1], self._health)
            self._metrics_server.start()
            log.info("metrics_listening", url=self._metrics_server.url)
        self._schedule(self.router.config)
        self.scheduler.start()
        watchdog = asyncio.create_task(self._watchdog()) if self.notifier.enabled else None
        log.info(
            "started",
            mailboxes=[m.name for m in self.router.config.settings.mailboxes],
            version=self.router.config.version,
        )
        await self.stop_event.wait()
        log.info("stopping", running=sorted(self._running))
        self.notifier.send(stopping="1")
        self.router.stopping = True
        self.scheduler.shutdown(wait=False)
        self._idle_stop.set()
        if self._running:
            await asyncio.wait(list(self._running.values()), timeout=60)
        if watchdog is not None:
            watchdog.cancel()
        await self.router.close()
        if self._metrics_server is not None:
            await asyncio.to_thread(self._metrics_server.stop)
        log.info("stopped", status=self.router.status())
        return 0


async def send_daily_report(router: Router, now: datetime | None = None) -> bool:
    """Yesterday's figures (UTC day) to the configured supervisor address. True if it was sent."""
    from emailrouter.core.compose import compose_report
    from emailrouter.service.stats import as_text, stats

    report = router.config.settings.report
    if report is None or router.transport is None:
        return False
    now = now or router.clock()
    day_end = now.replace(hour=0, minute=0, second=0, microsecond=0)
    day_start = day_end - timedelta(days=1)
    names = {m.account: m.name for m in router.config.settings.mailboxes}
    figures = stats(router.store, day_start, day_end, names)
    subject = (
        f"emailrouter daily report {day_start:%Y-%m-%d}: {figures['messages']} mails, "
        f"{figures['hard_complaints']} hard complaints, {len(figures['failures'])} failures"
    )
    msg = compose_report(router.config.router, report.to, subject, as_text(figures), now)
    try:
        await router.transport.send(router.config.router.address, [report.to], msg.as_bytes())
    except (TemporaryDeliveryError, PermanentDeliveryError, RelayError, UncertainDeliveryError) as exc:
        log.error("report_not_sent", error=str(exc))
        return False
    log.info("report_sent", to=report.to, day=f"{day_start:%Y-%m-%d}")
    return True


def release_big_blocks() -> None:
    """Have glibc's malloc give every block of 256 KiB or more back to the system as soon as it is freed.

    Its default threshold for that rises to the largest block freed so far (up to 32 MiB): after the first
    big mail, each later one is carved out of the heap, whose holes stay in RSS. Python's small objects are
    not affected (they live in arenas of their own). Does nothing where the C library is not glibc."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, 256 * 1024)


def make_router(config: Config, *, dry_run: bool) -> Router:
    release_big_blocks()
    for warning in config.settings.plaintext_warnings():
        log.warning("plaintext_connection", detail=warning, hint="credentials and mail cross the network unencrypted")
    store = Store(config.settings.state_path)
    smtp = config.settings.smtp
    transport = SmtpTransport(smtp) if smtp is not None else None
    if transport is None and not dry_run:
        log.warning("no_smtp_relay", detail="nothing can be sent: configure smtp:")
    return Router(config, store, transport, dry_run=dry_run)
