"""One fetched mail -> its plan: the sender's memory, routing, duplicates, quarantine, the decision record.

`Processor.process()` reads the mail, loads what the state remembers about its sender (the store plus
the batch's plans not committed yet, see memory.py), routes it (pure: the reply limits included) and
returns the plan to commit: every outgoing message with its Message-ID, the notices to the failure
unit, the decision trace and one `decision` log event. A mail whose Message-ID and content were
already handled is a duplicate; a mail a stage broke on is quarantined (the failure unit is told, at
most `limits.quarantine_notices_per_hour`). Nothing is sent here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import Any

import structlog

from emailrouter.config.loader import Config
from emailrouter.config.settings import MailboxConfig
from emailrouter.core import mime
from emailrouter.core.compose import compose_quarantine_notice, compose_render_failure_notice
from emailrouter.core.dedupe import content_hash, dedupe_id, duplicate_of
from emailrouter.core.explain import as_json
from emailrouter.core.model import MessageView, Outgoing, Record
from emailrouter.core.parse import parse_headers_only
from emailrouter.core.pipeline import Memory, Routing, read, route
from emailrouter.core.webhook import request_bytes
from emailrouter.service.faults import crashpoint
from emailrouter.service.imap import Fetched
from emailrouter.service.memory import Batch, Bounce, carried, proven
from emailrouter.service.metrics import Metrics
from emailrouter.service.store import MessageKey, Plan, PlannedSend, final_outcome

log = structlog.get_logger(__name__)


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


@dataclass(frozen=True)
class Routed:
    """What the shell keeps of one routing: plain and picklable, so that a worker process can return it.

    `error` is set when a stage broke on the mail (it is then quarantined); the rest is empty then."""

    sender: str | None
    message_id: str | None
    segment: str = "unknown"
    intent: str = "unknown"
    record: str | None = None  # the tag of a `record` action (automated mail)
    rule: str = ""
    event: dict[str, Any] = field(default_factory=dict)  # the `decision` event's fields, outcome aside
    row: dict[str, Any] = field(default_factory=dict)  # the pass report's line, outcome aside
    sends: tuple[PlannedSend, ...] = ()
    trace: dict[str, Any] = field(default_factory=dict)
    contact: tuple[str, str] | None = None
    replies: tuple[tuple[str, str], ...] = ()
    bounced: tuple[Bounce, ...] = ()  # (Message-IDs it quotes, recipient) per delivery report
    suppressed: tuple[str, ...] = ()  # the type of each action the limits or the guard suppressed
    failed: tuple[tuple[str, str, str], ...] = ()  # (type, template, reason) of each reply or call not rendered
    error: str | None = None
    content: str | None = None  # the content hash (core/dedupe.py), when the worker that routed it worked it out


def row(routing: Routing) -> dict[str, Any]:
    """One line of a pass's report (dry run and demo), its outcome and key aside: `sends` are what was planned
    (whether each went out is the store's to say, under the key), `suppressed` what the guards and reply limits
    held back, and why."""
    return {
        "subject": routing.view.subject,
        "sender": routing.view.sender.address if routing.view.sender else None,
        "segment": routing.segmentation.segment,
        "intent": routing.classification.intent,
        "hard": routing.classification.hard,
        "rule": routing.decision.rule,
        "sends": [(o.action.type, o.to) for o in routing.outgoing],
        "suppressed": [(s.type, s.reason) for s in routing.suppressed],
    }


def decide(mail: bytes | MessageView, config: Config, key: str, now: datetime, memory: Memory) -> Routed:
    """Read (unless given the view) and route one mail, and keep what the shell needs (in this process or in
    a worker)."""
    started = time.perf_counter()
    try:
        view = read(mail, config) if isinstance(mail, bytes) else mail
        routing = route(view, config, now, memory)
    except Exception as exc:  # a stage broke on this mail: it is quarantined, the batch goes on
        return Routed(None, None, error=f"{type(exc).__name__}: {exc}")
    return summarise(routing, config, key, now, started)


def summarise(routing: Routing, config: Config, key: str, now: datetime, started: float) -> Routed:
    """The plain record of one routing: the sends serialised, the trace, the decision event's fields."""
    view = routing.view
    sends = [
        PlannedSend(
            kind=o.action.type,
            unit=o.unit,
            mail_from=config.router.address,
            recipients=tuple(o.to),
            message_id=o.message_id,
            raw=_raw(o),
        )
        for o in routing.outgoing
    ]
    sends += render_failure_notices(routing, config, now)
    trace = as_json(routing, key, config.version)
    trace["timings"] = {"decide_ms": round((time.perf_counter() - started) * 1000, 3)}
    contact, replies, bounced = carried(routing)
    event = {
        "rule": routing.decision.rule,
        "segment": routing.segmentation.segment,
        "segment_source": routing.segmentation.source,
        "intent": routing.classification.intent,
        "hard": routing.classification.hard,
        "hard_score": routing.classification.hard_score,
        "actions": [f"{o.action.type}:{','.join(o.to)}" for o in routing.outgoing],
        "suppressed": [s.describe() for s in routing.suppressed],
        "failed": [f.describe() for f in routing.failed],
        "automated": routing.automated,
        "reference": routing.decision.reference,
    }
    return Routed(
        sender=view.sender.address if view.sender else None,
        message_id=view.message_id,
        segment=routing.segmentation.segment,
        intent=routing.classification.intent,
        record=next((a.tag for a in routing.decision.actions if isinstance(a, Record)), None),
        rule=routing.decision.rule,
        event=event,
        row=row(routing),
        sends=tuple(sends),
        trace=trace,
        contact=contact,
        replies=replies,
        bounced=bounced,
        suppressed=tuple(s.type for s in routing.suppressed),
        failed=tuple((f.type, f.template, f.reason) for f in routing.failed),
    )


def _failure_unit_send(config: Config, kind: str, msg: EmailMessage) -> PlannedSend | None:
    unit = config.units.get(config.router.failures_to)
    if unit is None:
        return None
    return PlannedSend(kind, unit.key, config.router.address, (unit.address,), str(msg["Message-ID"]), msg.as_bytes())


def render_failure_notices(routing: Routing, config: Config, now: datetime) -> list[PlannedSend]:
    """A reply whose template failed on this mail: the failure unit is told (the other actions go out)."""
    unit = config.units.get(config.router.failures_to)
    if unit is None:
        return []
    out = []
    for failure in routing.failed:
        notice = compose_render_failure_notice(
            config.router,
            unit,
            routing.view,
            failure,
            rule=routing.decision.rule,
            reference=routing.decision.reference,
            now=now,
        )
        if (send := _failure_unit_send(config, "failure", notice)) is not None:
            out.append(send)
    return out


@dataclass
class Job:
    """One mail taken for deciding: where it is, when, its sender (from its headers) and that sender's memory."""

    mailbox: MailboxConfig
    key: MessageKey
    fetched: Fetched
    now: datetime
    headers: MessageView | None  # None: the headers alone do not parse (routing quarantines the mail)
    memory: Memory
    whole: bool = False  # `headers` is the whole mail read (routed in this process)

    @property
    def sender(self) -> str | None:
        return self.headers.sender.address if self.headers is not None and self.headers.sender else None


class Processor:
    """Decides mail under the config in force; the plans go into the `Batch` they were decided in."""

    def __init__(self, config: Config, metrics: Metrics, clock: Callable[[], datetime], *, dry_run: bool) -> None:
        self.config = config
        self.metrics = metrics
        self.clock = clock
        self.dry_run = dry_run

    def process(
        self, mailbox: MailboxConfig, uidvalidity: int, fetched: Fetched, report: PollReport, batch: Batch
    ) -> None:
        """Decide one mail in this process and add its plan (every outcome, duplicates and quarantine included)
        to `batch`: it is committed with the others of its batch before any send, and before the checkpoint
        passes it."""
        job = self.take(mailbox, uidvalidity, fetched, batch, whole=True)
        if job is not None:
            job = self.remember(job, batch)
            self.complete(job, self.decide_here(job, batch), report, batch)

    def take(
        self, mailbox: MailboxConfig, uidvalidity: int, fetched: Fetched, batch: Batch, *, whole: bool = False
    ) -> Job | None:
        """The mail as a job, its sender read from its headers (`whole`: the mail read whole, to be routed here);
        None if it was planned already."""
        key = MessageKey(mailbox.account, mailbox.folder, uidvalidity, fetched.uid)
        if batch.store.outcome(key) is not None:
            return None  # already planned: the outbox and the poller's marking take it from here
        try:
            headers: MessageView | None = (
                read(fetched.raw, self.config) if whole else parse_headers_only(fetched.raw, "")
            )
        except Exception:  # the mail breaks the parser: routing it quarantines it, with the reason
            headers = None
        loop = self.config.settings.loop
        return Job(mailbox, key, fetched, self.clock(), headers, Memory(loop=loop), whole)

    def remember(self, job: Job, batch: Batch) -> Job:
        """The job with its sender's memory as of now: the store and the plans of `batch` (so every earlier
        mail of that sender must have been settled into `batch` before)."""
        if job.headers is not None:
            job.memory = batch.memory(job.headers, job.now, self.config.signals.history_days, self.config.settings.loop)
        return job

    def decide_here(self, job: Job, batch: Batch) -> Routed:
        """Route a job in this process (its memory reloaded if the full parse found another sender)."""
        mail = job.headers if job.whole and job.headers is not None else job.fetched.raw
        routed = decide(mail, self.config, str(job.key), job.now, job.memory)
        return self.checked(job, routed, batch)

    def checked(self, job: Job, routed: Routed, batch: Batch) -> Routed:
        """`routed` if it was routed with its own sender's memory; else routed again here with it (the headers
        alone named another sender than the full parse: rare, but the limits must count the right address)."""
        if routed.error is not None or routed.sender == job.sender:
            return routed
        view = read(job.fetched.raw, self.config)
        job.headers, job.whole = view, True
        job = self.remember(job, batch)
        return decide(view, self.config, str(job.key), job.now, job.memory)

    def complete(self, job: Job, routed: Routed, report: PollReport, batch: Batch) -> None:
        """The plan of a decided job, added to `batch` (nothing in a dry run)."""
        with structlog.contextvars.bound_contextvars(mailbox=job.mailbox.name, uid=job.fetched.uid, message_id=None):
            plan = self._plan(job, routed, report, batch)
            if plan is not None and not self.dry_run:
                batch.add(plan)

    def _plan(self, job: Job, routed: Routed, report: PollReport, batch: Batch) -> Plan | None:
        mailbox, key, fetched, now = job.mailbox, job.key, job.fetched, job.now
        content = routed.content or content_hash(fetched.raw)  # a worker's, or worked out here
        if routed.error is not None:
            return self._quarantine(mailbox, key, fetched, content, routed.error, report, batch)
        dedupe = dedupe_id(routed.message_id, fetched.raw)
        structlog.contextvars.bind_contextvars(message_id=routed.message_id)
        earlier = batch.seen(dedupe)
        first = duplicate_of(content, earlier)
        if first is not None:
            log.info("decision", outcome="duplicate", first=first)
            self.metrics.message(mailbox.name, routed.segment, routed.intent, "duplicate")
            report.duplicates += 1
            report.rows.append(routed.row | {"outcome": "duplicate", "key": str(key), "uid": key.uid})
            crashpoint("after-duplicate")
            return Plan(key, dedupe, "", {}, (), now, None, "duplicate", content_hash=content)
        if earlier:  # the same Message-ID on a different mail: processed as the new mail it is
            log.warning("message_id_reused", earlier=[k for k, _ in earlier][:3])
        final = final_outcome(routed.record)
        outcome = "dry-run" if self.dry_run else final
        self._log_decision(mailbox, routed, outcome, fetched.size)
        report.rows.append(routed.row | {"outcome": outcome, "key": str(key), "uid": key.uid})
        report.planned += 1
        if self.dry_run:
            return None
        kept = proven(routed.contact, routed.replies, routed.bounced, batch.store)
        if kept.ignored:
            log.warning("bounce_ignored", reason="it quotes no reply we sent to that address", recipients=kept.ignored)
        return Plan(
            key,
            dedupe,
            routed.rule,
            routed.trace,
            routed.sends,
            now,
            kept.contact,
            final,
            kept.replies,
            kept.bounced,
            content_hash=content,
        )

    def _log_decision(self, mailbox: MailboxConfig, routed: Routed, outcome: str, size: int) -> None:
        """The one `decision` event of a mail, and its metrics."""
        log.info("decision", outcome=outcome, **routed.event, size=size)
        for kind, template, reason in routed.failed:
            event = "reply_not_rendered" if kind == "reply" else "webhook_not_rendered"
            log.error(event, template=template, reason=reason)
        self.metrics.message(mailbox.name, routed.segment, routed.intent, outcome)
        for skipped in routed.suppressed:
            self.metrics.action(skipped, None, "suppressed")
        for kind, _, _ in routed.failed:
            self.metrics.action(kind, None, "failed")

    def _quarantine(
        self,
        mailbox: MailboxConfig,
        key: MessageKey,
        fetched: Fetched,
        content: str,
        error: str,
        report: PollReport,
        batch: Batch,
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
        if unit is not None and batch.sends_since("quarantine", now - timedelta(hours=1)) < limit:
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
            if (send := _failure_unit_send(self.config, "quarantine", notice)) is not None:
                sends.append(send)
        else:
            log.warning("quarantine_notice_suppressed", limit_per_hour=limit)
        dedupe = dedupe_id(headers.get("message-id"), fetched.raw)
        return Plan(key, dedupe, "", {}, sends, now, None, "quarantined", error=error, content_hash=content)


def _raw(o: Outgoing) -> bytes:
    """What the outbox keeps of one outgoing: a mail (the original copied once, not once per MIME level), or a
    webhook call as core/webhook.py writes it."""
    if o.message is not None:
        return mime.as_bytes(o.message)
    assert o.call is not None
    return request_bytes(o.call)
