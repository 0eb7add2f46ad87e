"""The service: `emailrouter run` and `run --once` around one `Router` (router.py).

`Service` schedules the router's public calls (APScheduler: a job per mailbox, the outbox retry job and
the daily jobs), wakes a mailbox's job when its IDLE connection announces mail, reloads the config on
SIGHUP, finishes the mail in hand on SIGTERM, and tells systemd how it goes (READY, STATUS, WATCHDOG
only while every mailbox makes progress). `run_once` is the same calls without the scheduler.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import signal
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from emailrouter.config.loader import Config, load_config
from emailrouter.core.errors import (
    ConfigError,
    PermanentDeliveryError,
    RelayError,
    TemporaryDeliveryError,
    UncertainDeliveryError,
)
from emailrouter.service.health import MailboxHealth
from emailrouter.service.imap import watch_idle
from emailrouter.service.metrics import MetricsServer, stale_mailboxes
from emailrouter.service.router import PollReport, Router
from emailrouter.service.sdnotify import Notifier
from emailrouter.service.smtp import SmtpTransport
from emailrouter.service.store import Store

log = structlog.get_logger(__name__)
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)


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
                await router.finish(mailbox)
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
