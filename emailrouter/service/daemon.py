"""The service: `emailrouter run` and `run --once` around one `Router` (router.py).

`Service` runs the router's public calls in asyncio tasks (one per mailbox, the outbox retries, the two
daily jobs, which need only "seconds until HH:MM"), wakes a mailbox's task when its IDLE connection
announces mail, reloads the config on SIGHUP (then takes the `quarantine retry` requests waiting, see
retries.py), finishes the mail in hand on SIGTERM, and tells systemd
how it goes (READY, STATUS, WATCHDOG only while every mailbox makes progress). `run_once` is the same
calls without the tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import signal
import threading
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog

from emailrouter.config.loader import Config, load_config
from emailrouter.config.settings import MailboxConfig
from emailrouter.core.errors import (
    ConfigError,
    PermanentDeliveryError,
    RelayError,
    TemporaryDeliveryError,
    UncertainDeliveryError,
)
from emailrouter.service import retries
from emailrouter.service.imap import watch_idle
from emailrouter.service.metrics import MetricsServer, stale_mailboxes
from emailrouter.service.router import PollReport, Router
from emailrouter.service.sdnotify import Notifier
from emailrouter.service.smtp import SmtpPool
from emailrouter.service.store import open_store

log = structlog.get_logger(__name__)
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)
# After a poll that took new mail, the mailbox is polled again this long after that poll began (seconds), until
# a poll finds none: mail comes in bursts, and a server may announce it under IDLE late (Dovecot groups a
# mailbox's changes for up to half a second); a poll sees it at once.
FOLLOW_UP = 0.2


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


def seconds_until(hour: int, minute: int, now: datetime) -> float:
    """Seconds from `now` to the next HH:MM on its clock (a full day when it is HH:MM now)."""
    at = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if at <= now:
        at += timedelta(days=1)
    return (at - now).total_seconds()


async def pause(seconds: float | None, event: asyncio.Event) -> bool:
    """Wait `seconds` (None: for as long as it takes) or until `event` is set; True if it was set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout=None if seconds is None else max(0.0, seconds))
    return event.is_set()


class Service:
    """`emailrouter run`: a task per mailbox, the outbox task and the daily tasks; signals, reload, IDLE watchers
    and systemd notification.

    Each task is a loop that waits between its calls on an event: a mailbox's is set by its IDLE watcher, a
    reload sets all of them (mailboxes poll at once, the daily tasks work out their time again), SIGTERM too
    (every loop ends after the call in hand)."""

    def __init__(self, config_path: Path, router: Router) -> None:
        self.config_path = config_path
        self.router = router
        self.notifier = Notifier()
        self.stop_event = asyncio.Event()
        self._idle_stop = threading.Event()
        self._idle_threads: list[threading.Thread] = []
        self._wake: dict[str, asyncio.Event] = {}  # by task name: mailbox:NAME, housekeeping, report
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._polling: set[str] = set()  # mailboxes with a poll in progress
        self._ready = False
        self._started = time.monotonic()
        self._metrics_server: MetricsServer | None = None
        self._state_path = router.config.settings.state_path  # fixed for the process (see reload)
        self._retries: dict[str, list[retries.RetryRequest]] = {}  # by mailbox: `quarantine retry` requests

    # tasks -----------------------------------------------------------------

    async def _mailbox_task(self, name: str) -> None:
        """Poll one mailbox at once, then every `poll_interval` or as soon as IDLE announces mail (also mail that
        came during a poll), and FOLLOW_UP after a poll that took mail; after a failure not before its backoff, nor
        its interval, has passed."""
        wake = self._wake[f"mailbox:{name}"]
        while not self.router.stopping:
            mailbox = next((m for m in self.router.config.settings.mailboxes if m.name == name), None)
            if mailbox is None:
                return  # no longer configured (a reload)
            wake.clear()
            self._polling.add(name)
            started = time.monotonic()
            try:
                await self._retry_requested(mailbox)
                report = await self._poll(mailbox)
            finally:
                self._polling.discard(name)
            if report is None or report.ok:
                took = report is not None and report.fetched > 0 and not self.router.dry_run  # a dry run takes it again
                follow_up = min(FOLLOW_UP, mailbox.poll_interval) - (time.monotonic() - started)  # from its start
                await pause(follow_up if took else mailbox.poll_interval, wake)
            else:
                backoff_left = self.router.health[name].retry_at - time.monotonic()
                await pause(max(backoff_left, mailbox.poll_interval), self.stop_event)

    async def _poll(self, mailbox: MailboxConfig) -> PollReport | None:
        """One poll of a mailbox: its report (None: a bug, logged; the mailbox is polled again after its interval)."""
        try:
            report = await self.router.poll_once(mailbox)
            if report.ok and not self._ready:
                self._ready = True
                self.notifier.send(ready="1")
            if self.notifier.enabled:  # counting the store is not free: only when someone listens
                self.notifier.send(status=self.router.status())
            return report
        except Exception:
            log.exception("task_failed", task=f"mailbox:{mailbox.name}")
            return None

    async def _retry_requested(self, mailbox: MailboxConfig) -> None:
        """`quarantine retry` requests for this mailbox (taken after an accepted reload), in its own task: never
        beside one of its polls. Only UIDs still quarantined are taken again; each request gets its answer."""
        requests = self._retries.pop(mailbox.name, [])
        if not requests:
            return
        rows = self.router.store.quarantined()
        quarantined = {r.key.uid for r in rows if r.key.in_folder(mailbox.account, mailbox.folder)}
        for req in requests:
            uids = [uid for uid in req.uids if uid in quarantined]
            result: dict[str, Any] = {"ok": True, "version": self.router.config.version, "uids": uids}
            try:
                if uids:
                    report = await self.router.retry(mailbox, uids)
                    result.update(
                        retried=report.fetched,
                        planned=report.planned,
                        duplicates=report.duplicates,
                        quarantined=report.quarantined,
                    )
                log.info("quarantine_retried", request=req.id, **result)
            except Exception as exc:  # the mailbox is down, a bug: the request is answered, the task goes on
                result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
                log.exception("quarantine_retry_failed", request=req.id)
            self._answer(req.id, result)

    def _answer(self, request_id: str, result: dict[str, Any]) -> None:
        try:
            retries.answer(self._state_path, request_id, result)
        except OSError as exc:
            log.error("quarantine_retry_unanswered", request=request_id, error=str(exc))

    def _take_retry_requests(self, config: Config, problems: list[str] | None) -> None:
        """After a reload: queue the waiting `quarantine retry` requests, or refuse them if it was rejected."""
        names = {m.name for m in config.settings.mailboxes}
        for req in retries.take(self._state_path):
            if problems is not None:
                self._answer(req.id, {"ok": False, "rejected": problems})
            elif req.mailbox not in names:
                self._answer(req.id, {"ok": False, "error": f"no mailbox {req.mailbox!r} in {config.path}"})
            else:
                self._retries.setdefault(req.mailbox, []).append(req)

    async def _outbox_task(self) -> None:
        """Every `delivery.outbox_interval`: what is due in the outbox (retries, what a relay outage held back)."""
        while not await pause(self.router.config.settings.delivery.outbox_interval, self.stop_event):
            try:
                await self.router.flush_outbox()
            except Exception:  # a bug: logged, tried again next time
                log.exception("task_failed", task="outbox")

    async def _daily_task(self, name: str) -> None:
        """The housekeeping or the report, every day at the HH:MM (UTC) the config in force gives."""
        wake = self._wake[name]
        while not self.router.stopping:
            wake.clear()
            settings = self.router.config.settings
            when = settings.housekeeping if name == "housekeeping" else settings.report
            seconds = seconds_until(when.hour, when.minute, datetime.now(UTC)) if when is not None else None
            if await pause(seconds, wake):
                continue  # a reload (its time may have changed) or SIGTERM
            try:
                if name == "housekeeping":
                    keep = settings.housekeeping.keep_days
                    removed = self.router.store.prune(self.router.clock(), keep)
                    log.info("housekeeping", removed=removed, keep_days=keep)
                else:
                    await send_daily_report(self.router)
            except Exception:  # a full disk, a bug: logged, and tried again the next day
                log.exception("task_failed", task=name)

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

    def tasks_running(self) -> list[str]:
        """The service's tasks still running (none once `serve` returned)."""
        return sorted(name for name, task in self._tasks.items() if not task.done())

    def wake(self, name: str) -> None:
        """New mail announced by IDLE: poll now (or right after the poll in progress)."""
        if (event := self._wake.get(f"mailbox:{name}")) is not None:
            event.set()

    # wiring ----------------------------------------------------------------

    def _start(self, name: str, job: Coroutine[Any, Any, None]) -> None:
        self._wake.setdefault(name, asyncio.Event())
        self._tasks[name] = asyncio.create_task(job, name=name)

    def _schedule(self, config: Config) -> None:
        """Start the tasks not running yet and wake the others (a reload: poll now, daily times anew)."""
        self._tasks = {name: task for name, task in self._tasks.items() if not task.done()}
        wanted: dict[str, Callable[[], Coroutine[Any, Any, None]]] = {
            f"mailbox:{m.name}": functools.partial(self._mailbox_task, m.name) for m in config.settings.mailboxes
        }
        wanted["outbox"] = self._outbox_task
        wanted["housekeeping"] = functools.partial(self._daily_task, "housekeeping")
        wanted["report"] = functools.partial(self._daily_task, "report")
        for name in self._tasks:
            self._wake[name].set()  # a mailbox no longer configured ends its task
        for name, task in wanted.items():
            if name not in self._tasks:
                self._start(name, task())
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
            self._reject([str(p) for p in exc.problems])
            return
        if config.credential_problems:  # it would stop every login and send: the running config stays
            self._reject([str(p) for p in config.credential_problems])
            return
        old = self.router.config.settings
        if (config.settings.state_path, config.settings.state_url) != (old.state_path, old.state_url):
            log.warning("reload_state_path_ignored", reason="the state store moves only with a restart")
        old_listen = self.router.config.settings.metrics_listen
        self.router.config = config
        for warning in config.settings.plaintext_warnings():
            log.warning("plaintext_connection", detail=warning)
        self._take_retry_requests(config, None)
        self._schedule(config)
        if config.settings.metrics_listen != old_listen:
            log.warning("reload_metrics_listen_ignored", reason="the metrics address moves only with a restart")
        self.router.metrics.reload("ok")
        log.info("reloaded", version=config.version)

    def _reject(self, problems: list[str]) -> None:
        log.error("reload_rejected", problems=problems)
        self.router.metrics.reload("rejected")
        self._take_retry_requests(self.router.config, problems)  # nothing is retried under the old config

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
            self._metrics_server.start()  # logs metrics_listening, once
        self._schedule(self.router.config)
        watchdog = asyncio.create_task(self._watchdog()) if self.notifier.enabled else None
        log.info(
            "started",
            mailboxes=[m.name for m in self.router.config.settings.mailboxes],
            version=self.router.config.version,
        )
        await self.stop_event.wait()
        log.info("stopping", running=sorted(self._polling))
        self.notifier.send(stopping="1")
        self.router.stopping = True
        for event in self._wake.values():
            event.set()  # every loop ends after the call in hand
        self._idle_stop.set()
        if self._tasks:
            await asyncio.wait(list(self._tasks.values()), timeout=60)
        for name in self.tasks_running():  # still busy after a minute: cancelled
            log.warning("task_cancelled", task=name)
            self._tasks[name].cancel()
        if watchdog is not None:
            watchdog.cancel()
        await self.router.close()
        if self._metrics_server is not None:
            await asyncio.to_thread(self._metrics_server.stop)
        log.info("stopped", status=self.router.status())
        return 0


async def send_daily_report(router: Router, now: datetime | None = None) -> bool:
    """Yesterday's figures (UTC day) to the configured supervisor address, as text and HTML. True if it was sent."""
    from emailrouter.core.compose import compose_report
    from emailrouter.service.report import daily_report

    report = router.config.settings.report
    if report is None or router.transport is None:
        return False
    now = now or router.clock()
    names = {m.account: m.name for m in router.config.settings.mailboxes}
    daily = daily_report(router.store, now, names)
    msg = compose_report(router.config.router, report.to, daily.subject, daily.text, now, html=daily.html)
    try:
        await router.transport.send(router.config.router.address, [report.to], msg.as_bytes())
    except (TemporaryDeliveryError, PermanentDeliveryError, RelayError, UncertainDeliveryError) as exc:
        log.error("report_not_sent", error=str(exc))
        return False
    log.info("report_sent", to=report.to, day=daily.day)
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
    store = open_store(config.settings)
    for note in getattr(store, "notes", ()):  # the SQLite file's permissions (statefiles.prepare)
        log.warning("state_permissions", detail=note)
    smtp = config.settings.smtp
    transport = SmtpPool(smtp) if smtp is not None else None
    if transport is None and not dry_run:
        log.warning("no_smtp_relay", detail="nothing can be sent: configure smtp:")
    return Router(config, store, transport, dry_run=dry_run)
