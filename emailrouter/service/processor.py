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
from emailrouter.core.dedupe import bytes_hash, content_hash, duplicate_of
from emailrouter.core.explain import as_json
from emailrouter.core.model import Outgoing, Record
from emailrouter.core.pipeline import Routing, read, route
from emailrouter.core.webhook import request_bytes
from emailrouter.service.faults import crashpoint
from emailrouter.service.imap import Fetched
from emailrouter.service.memory import Batch, remembered
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


def row(routing: Routing, outcome: str, key: MessageKey) -> dict[str, Any]:
    """One line of a pass's report (dry run and demo): `sends` are what was planned (whether each went out is
    the store's to say, under `key`), `suppressed` what the guards and reply limits held back, and why."""
    return {
        "key": str(key),
        "uid": key.uid,
        "subject": routing.view.subject,
        "sender": routing.view.sender.address if routing.view.sender else None,
        "segment": routing.segmentation.segment,
        "intent": routing.classification.intent,
        "hard": routing.classification.hard,
        "rule": routing.decision.rule,
        "outcome": outcome,
        "sends": [(o.action.type, o.to) for o in routing.outgoing],
        "suppressed": [(s.type, s.reason) for s in routing.suppressed],
    }


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
        """Decide one mail and add its plan (every outcome, duplicates and quarantine included) to `batch`: it is
        committed with the others of its batch before any send, and before the checkpoint passes it."""
        key = MessageKey(mailbox.account, mailbox.folder, uidvalidity, fetched.uid)
        # a fresh context per mail: nothing of the previous mail's identity leaks into this one's lines
        with structlog.contextvars.bound_contextvars(mailbox=mailbox.name, uid=fetched.uid, message_id=None):
            if batch.store.outcome(key) is not None:
                return  # already planned: the outbox and the poller's marking take it from here
            plan = self._decide(mailbox, key, fetched, report, batch)
            if plan is not None and not self.dry_run:
                batch.add(plan)

    def _decide(
        self, mailbox: MailboxConfig, key: MessageKey, fetched: Fetched, report: PollReport, batch: Batch
    ) -> Plan | None:
        config = self.config
        now = self.clock()
        started = time.perf_counter()
        content = content_hash(fetched.raw)
        try:
            view = read(fetched.raw, config)
        except Exception as exc:  # a stage broke on this mail: quarantine it, the batch goes on
            return self._quarantine(mailbox, key, fetched, content, f"{type(exc).__name__}: {exc}", report, batch)
        memory = batch.memory(view, now, config.signals.history_days, config.settings.loop)
        try:
            routing = route(view, config, now, memory)
        except Exception as exc:
            return self._quarantine(mailbox, key, fetched, content, f"{type(exc).__name__}: {exc}", report, batch)
        dedupe = view.message_id or bytes_hash(fetched.raw)
        structlog.contextvars.bind_contextvars(message_id=view.message_id)
        earlier = batch.seen(dedupe)
        first = duplicate_of(content, earlier)
        if first is not None:
            log.info("decision", outcome="duplicate", first=first)
            seg, intent = routing.segmentation.segment, routing.classification.intent
            self.metrics.message(mailbox.name, seg, intent, "duplicate")
            report.duplicates += 1
            report.rows.append(row(routing, "duplicate", key))
            crashpoint("after-duplicate")
            return Plan(key, dedupe, "", {}, (), now, None, "duplicate", content_hash=content)
        if earlier:  # the same Message-ID on a different mail: processed as the new mail it is
            log.warning("message_id_reused", earlier=[k for k, _ in earlier][:3])
        record = next((a.tag for a in routing.decision.actions if isinstance(a, Record)), None)
        final = final_outcome(record)
        outcome = "dry-run" if self.dry_run else final
        self._log_decision(mailbox, routing, outcome, fetched.size)
        report.rows.append(row(routing, outcome, key))
        report.planned += 1
        if self.dry_run:
            return None
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
        sends += self._render_failure_notices(routing, now)
        trace = as_json(routing, str(key), config.version)
        trace["timings"] = {"decide_ms": round((time.perf_counter() - started) * 1000, 3)}
        kept = remembered(routing, batch.store)
        if kept.ignored:
            log.warning("bounce_ignored", reason="it quotes no reply we sent to that address", recipients=kept.ignored)
        rule = routing.decision.rule
        return Plan(
            key,
            dedupe,
            rule,
            trace,
            sends,
            now,
            kept.contact,
            final,
            kept.replies,
            kept.bounced,
            content_hash=content,
        )

    def _log_decision(self, mailbox: MailboxConfig, routing: Routing, outcome: str, size: int) -> None:
        """The one `decision` event of a mail, and its metrics."""
        log.info(
            "decision",
            outcome=outcome,
            rule=routing.decision.rule,
            segment=routing.segmentation.segment,
            segment_source=routing.segmentation.source,
            intent=routing.classification.intent,
            hard=routing.classification.hard,
            hard_score=routing.classification.hard_score,
            actions=[f"{o.action.type}:{','.join(o.to)}" for o in routing.outgoing],
            suppressed=[s.describe() for s in routing.suppressed],
            failed=[f.describe() for f in routing.failed],
            automated=routing.automated,
            reference=routing.decision.reference,
            size=size,
        )
        self.metrics.message(mailbox.name, routing.segmentation.segment, routing.classification.intent, outcome)
        for skipped in routing.suppressed:
            self.metrics.action(skipped.type, None, "suppressed")
        for _ in routing.failed:
            self.metrics.action("reply", None, "failed")

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
            if (send := self._failure_unit_send("quarantine", notice)) is not None:
                sends.append(send)
        else:
            log.warning("quarantine_notice_suppressed", limit_per_hour=limit)
        dedupe = headers.get("message-id") or bytes_hash(fetched.raw)
        return Plan(key, dedupe, "", {}, sends, now, None, "quarantined", error=error, content_hash=content)


def _raw(o: Outgoing) -> bytes:
    """What the outbox keeps of one outgoing: a mail (the original copied once, not once per MIME level), or a
    webhook call as core/webhook.py writes it."""
    if o.message is not None:
        return mime.as_bytes(o.message)
    assert o.call is not None
    return request_bytes(o.call)
