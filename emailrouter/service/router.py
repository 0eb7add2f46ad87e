"""One pass of the router: IMAP in, SMTP out, exactly once, the same calls for `run` and `run --once`.

For each new mail of a mailbox:

    fetch (BODY.PEEK[]) -> decide (processor: memory, route, dedupe) -> plan committed (batch)
        -> send each (outbox, recorded) -> IMAP mark processed (poller, last)

`Router` puts the poller, the processor and the outbox together around one state store; the
service (daemon.py) only schedules its public calls: `resume`, `poll_once`, `flush_outbox`,
`finish`, `retry`, `close`. A crash anywhere leaves the state store knowing what to finish
(see store.py).

On a backlog (a batch of POOL_MIN new mails or more) the routing itself runs in worker processes
(workers.py, `workers:` in the config); the plans, their order and everything durable stay here.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from datetime import datetime

import structlog

from emailrouter.config.loader import Config
from emailrouter.config.settings import MailboxConfig
from emailrouter.core.errors import MailboxError, StateError
from emailrouter.service.health import Dependency, MailboxHealth, StateGate, utcnow
from emailrouter.service.imap import ImapMailbox
from emailrouter.service.memory import Batch
from emailrouter.service.metrics import Metrics
from emailrouter.service.outbox import Outbox, Transport
from emailrouter.service.poller import Poller
from emailrouter.service.processor import Job, PollReport, Processor, Routed
from emailrouter.service.store import MessageKey, StateStore
from emailrouter.service.workers import DEPTH, Pool, WorkerDied

# A batch with fewer new mails is routed in the service's process: a worker pays off on a backlog, and a
# mail that just came in under IDLE is not held up by the way to and from a worker.
POOL_MIN = 16

log = structlog.get_logger(__name__)

__all__ = ["PollReport", "Router", "Transport"]


class Router:
    """One router: the config in force, the state store, the SMTP transport and the IMAP connections."""

    def __init__(
        self,
        config: Config,
        store: StateStore,
        transport: Transport | None,
        *,
        dry_run: bool = False,
        clock: Callable[[], datetime] = utcnow,
        metrics: Metrics | None = None,
    ) -> None:
        self.metrics = metrics or Metrics()
        self.store = store
        self.transport = transport
        self.dry_run = dry_run
        self.clock = clock
        self.state_gate = StateGate(self.metrics)
        self.poller = Poller(store, self.metrics, clock, dry_run=dry_run)
        self.processor = Processor(config, self.metrics, clock, dry_run=dry_run)
        self.outbox = Outbox(config, store, transport, self.state_gate, self.metrics, clock)
        self._config = config
        self._pool: Pool | None = None
        self._stopping = False
        for mailbox in config.settings.mailboxes:
            self.poller.health_of(mailbox.name)

    @property
    def config(self) -> Config:
        return self._config

    @config.setter
    def config(self, config: Config) -> None:
        """A reload: the next mail is decided, and the next send made, under the new config."""
        self._config = self.processor.config = self.outbox.config = config
        old, self._pool = self._pool, None  # the next batch starts a new pool, for the new config
        if old is not None:
            self._release(old, taken=False)

    @property
    def stopping(self) -> bool:
        """Set on SIGTERM: finish the message in hand, take no new one."""
        return self._stopping

    @stopping.setter
    def stopping(self, value: bool) -> None:
        self._stopping = self.outbox.stopping = value

    def should_stop(self) -> bool:
        """`stopping`, read anew (a signal handler may set it while a batch is taken)."""
        return self._stopping

    # ------------------------------------------------------------------ health

    @property
    def health(self) -> dict[str, MailboxHealth]:
        return self.poller.health

    @property
    def relay(self) -> Dependency:
        return self.outbox.relay

    @property
    def state(self) -> Dependency:
        return self.state_gate.dependency

    @property
    def failure_unit(self) -> Dependency:
        return self.outbox.failure_unit

    def problems(self) -> list[str]:
        """What is down right now, one line each (for /healthz, the watchdog and STATUS)."""
        endpoints = list(self.outbox.endpoints.values())  # a copy: this runs on the HTTP thread too
        return [p for d in (self.relay, self.state, self.failure_unit, *endpoints) if (p := d.problem()) is not None]

    def status(self) -> str:
        counts = self.store.counts()
        parts = [f"{counts.get(k, 0)} {k}" for k in ("done", "planned", "duplicate", "automated", "quarantined")]
        down = "".join(f"; {problem}" for problem in self.problems())
        return f"{', '.join(parts)}; outbox {counts['outbox_pending']} pending{down}"

    # ------------------------------------------------------------------ a pass

    async def resume(self) -> None:
        """After a restart: a send interrupted mid-way is retried, except a customer reply (at most once)."""
        await self.outbox.resume()

    async def flush_outbox(self) -> int:
        """Send every due outbox entry (nothing in a dry run). Returns how many were sent."""
        return 0 if self.dry_run else await self.outbox.flush()

    async def poll_once(self, mailbox: MailboxConfig) -> PollReport:
        """One pass over one mailbox: finish what is settled, then take new mail.

        Nothing new is taken while the state store cannot be written: a plan that cannot be committed is
        not acted on, and the checkpoint stays where it was, so the same mail is taken again later."""
        report = PollReport(mailbox.name)
        if not self.dry_run and not self.state_gate.usable():
            report.ok, report.error = False, f"state store unwritable: {self.state.error}"
            return report
        try:
            if not self.dry_run and not self.store.hold_mailbox(mailbox.account, mailbox.folder):
                # another instance polls it (a shared store): this one is healthy, and asks again next time
                self.poller.succeeded(mailbox)
                return report
            conn, uidvalidity = await self.poller.connection(mailbox)
            if not self.dry_run:
                report.marked += await self.poller.finish(mailbox, conn, uidvalidity)
            uids = await self.poller.new_uids(conn, mailbox, uidvalidity)
            for start in range(0, len(uids), mailbox.batch_size):
                if self.stopping or not (self.dry_run or self.store.hold_mailbox(mailbox.account, mailbox.folder)):
                    break  # SIGTERM, or fenced: another instance took the mailbox over
                await self._take(mailbox, conn, uidvalidity, uids[start : start + mailbox.batch_size], report)
                if not self.dry_run:
                    await self.outbox.flush()
                    report.marked += await self.poller.finish(mailbox, conn, uidvalidity)
        except StateError as exc:  # the IMAP side is fine: keep the connection, wait for the disk
            self.state_gate.failed(exc)
            report.ok, report.error = False, f"state store unwritable: {exc}"
            return report
        except (MailboxError, OSError) as exc:
            return self._failed(mailbox, report, str(exc))
        except Exception as exc:  # imapclient raises its own error types; one bad mailbox never stops the others
            return self._failed(mailbox, report, f"{type(exc).__name__}: {exc}")
        if not self.dry_run:
            self.state.came_back()
        self.poller.succeeded(mailbox)
        return report

    def _failed(self, mailbox: MailboxConfig, report: PollReport, error: str) -> PollReport:
        self.poller.failed(mailbox, error)
        report.ok, report.error = False, error
        return report

    async def _take(
        self, mailbox: MailboxConfig, conn: ImapMailbox, uidvalidity: int, uids: Sequence[int], report: PollReport
    ) -> None:
        """Decide one batch and commit its plans. Memory stays bounded, whatever the batch: one piece of fetched
        mail (at most FETCH_BYTES, or one mail), the mails in the workers (at most two a worker) and the plans
        not committed yet (at most PLAN_BATCH_BYTES)."""
        batch = Batch(self.store)
        pool = self._pool_for(len(uids))
        pending: deque[tuple[Job, asyncio.Future[Routed | None]]] = deque()
        try:
            for piece in await self.poller.pieces(conn, uids):
                if self.should_stop():
                    break  # SIGTERM: the messages in hand are finished; the rest waits
                fetched = await self.poller.fetch(conn, piece)
                report.fetched += len(fetched)
                for uid in piece:
                    if self.should_stop():
                        break
                    mail = fetched.pop(uid, None)  # dropped once decided
                    if mail is not None and pool is None:
                        self.processor.process(mailbox, uidvalidity, mail, report, batch)
                    elif mail is not None and pool is not None:
                        job = self.processor.take(mailbox, uidvalidity, mail, batch)
                        if job is not None:
                            # its memory must count every earlier mail of its sender: those are settled first
                            while pending and (len(pending) >= DEPTH * pool.size or self._earlier(job, pending)):
                                await self._settle(pending.popleft(), pool, report, batch)
                            job = self.processor.remember(job, batch)
                            pending.append((job, pool.submit(job.fetched.raw, str(job.key), job.now, job.memory)))
                    mail = None  # nothing of this mail is held past this point but its job or its plan
                    if batch.full():
                        self._commit(batch)
                        await asyncio.sleep(0)  # let signals and IDLE wake-ups in
                del fetched
            while pending and pool is not None:
                await self._settle(pending.popleft(), pool, report, batch)
        finally:
            for _, future in pending:
                future.cancel()
            if pool is not None:
                self._release(pool)
        self._commit(batch)

    @staticmethod
    def _earlier(job: Job, pending: deque[tuple[Job, asyncio.Future[Routed | None]]]) -> bool:
        """Whether a mail of the same sender is still in the workers."""
        return job.sender is not None and any(other.sender == job.sender for other, _ in pending)

    def _pool_for(self, new: int) -> Pool | None:
        """The worker pool for a batch of `new` mails, or None to route them here."""
        workers = self.config.settings.workers
        if self.dry_run or workers <= 1 or new < POOL_MIN:
            return None
        if self._pool is None:
            self._pool = Pool(self.config, workers)
        self._pool.users += 1
        return self._pool

    def _release(self, pool: Pool, taken: bool = True) -> None:
        """A batch is done with `pool` (`taken`), or a reload replaced it: closed once no batch of any mailbox
        uses it and it is not the current one (a batch under way keeps its pool to its end)."""
        pool.users -= taken
        if pool is not self._pool and pool.users == 0:
            pool.close()

    async def _settle(
        self, item: tuple[Job, asyncio.Future[Routed | None]], pool: Pool, report: PollReport, batch: Batch
    ) -> None:
        """The plan of the oldest mail in the workers, added to the batch in mailbox order."""
        job, future = item
        try:
            routed = await future
        except WorkerDied:  # this mail killed its worker, or something outside did: once more decides
            routed = await self._again(job, pool)
        if routed is None:  # the worker's files said another config than ours
            routed = self.processor.decide_here(job, batch)
        else:
            routed = self.processor.checked(job, routed, batch)
        self.processor.complete(job, routed, report, batch)

    @staticmethod
    async def _again(job: Job, pool: Pool) -> Routed | None:
        """A mail whose worker died, routed once more as a new worker's first mail: quarantined if it kills that one
        too."""
        try:
            return await pool.submit(job.fetched.raw, str(job.key), job.now, job.memory, fresh=True)
        except WorkerDied:
            return Routed(None, None, error="a worker process died routing this mail (twice)")

    def _commit(self, batch: Batch) -> None:
        if not self.dry_run:
            batch.commit()

    async def finish(self, mailbox: MailboxConfig) -> int:
        """Mark what is settled in one mailbox (after the last flush of `run --once`); how many were marked."""
        conn, uidvalidity = await self.poller.connection(mailbox)
        return await self.poller.finish(mailbox, conn, uidvalidity)

    async def retry(self, mailbox: MailboxConfig, uids: Sequence[int]) -> PollReport:
        """`quarantine retry`: forget what went wrong with these mails, take them again, unflagged."""
        report = PollReport(mailbox.name)
        if not self.store.hold_mailbox(mailbox.account, mailbox.folder):  # a daemon on the shared store polls it
            raise MailboxError(f"mailbox {mailbox.name}: a running instance holds it; stop it first")
        conn, uidvalidity = await self.poller.connection(mailbox)
        uids = self._quarantined_now(mailbox, uidvalidity, uids)
        if not uids:
            return report
        for uid in uids:
            self.store.forget(MessageKey(mailbox.account, mailbox.folder, uidvalidity, uid))
        await self.poller.unflag_quarantined(conn, uids)
        fetched = await self.poller.fetch(conn, uids)
        report.fetched += len(fetched)  # the mails retried: those still quarantined now, and still on the server
        batch = Batch(self.store)
        for uid in uids:
            if uid in fetched:
                self.processor.process(mailbox, uidvalidity, fetched[uid], report, batch)
        self._commit(batch)
        await self.flush_outbox()
        report.marked += await self.poller.finish(mailbox, conn, uidvalidity)
        return report

    def _quarantined_now(self, mailbox: MailboxConfig, uidvalidity: int, uids: Sequence[int]) -> list[int]:
        """The UIDs whose mail is quarantined under the folder's UIDVALIDITY now. One quarantined under an earlier
        UIDVALIDITY is another mail than the one at that UID today (maybe routed long ago): forgetting and taking
        that one again would send its forward and reply a second time."""
        kept: list[int] = []
        for uid in uids:
            record = self.store.outcome(MessageKey(mailbox.account, mailbox.folder, uidvalidity, uid))
            if record is not None and record.outcome == "quarantined":
                kept.append(uid)
            else:
                log.warning(
                    "retry_skipped",
                    mailbox=mailbox.name,
                    uid=uid,
                    uidvalidity=uidvalidity,
                    reason="not quarantined under the folder's UIDVALIDITY now"
                    + (f" (it is {record.outcome})" if record is not None else ""),
                )
        return kept

    async def close(self) -> None:
        """Log out of every mailbox and say QUIT to the relay."""
        await self.poller.close()
        await self.outbox.close()
        if self._pool is not None:
            self._pool.close()
            self._pool = None
