"""What /healthz, the watchdog and systemd STATUS say when a dependency (relay, state store) is down,
and how the service runs its tasks."""

from __future__ import annotations

import asyncio
import itertools
from datetime import UTC, datetime
from pathlib import Path

from emailrouter.config.loader import Config, load_config
from emailrouter.config.settings import MailboxConfig
from emailrouter.service.daemon import FOLLOW_UP, Service, seconds_until
from emailrouter.service.router import PollReport, Router
from emailrouter.service.store import Store


def test_a_relay_that_is_down_makes_the_service_unhealthy_until_it_works_again(config: Config, tmp_path: Path) -> None:
    """The relay's failure shows in /healthz (and so the watchdog) and in STATUS; a success clears it."""
    router = Router(config, Store(tmp_path / "s.sqlite3"), None)
    service = Service(tmp_path / "emailrouter.yaml", router)
    try:
        assert service._health() == []
        router.relay.went_down("SMTP authentication failed (535)")
        assert service._health() == ["relay: SMTP authentication failed (535)"]
        assert "relay: SMTP authentication failed (535)" in router.status()
        assert router.relay.waiting()  # the outbox waits (backoff) instead of failing mail
        router.relay.came_back()
        assert service._health() == [] and not router.relay.waiting()
    finally:
        router.store.close()


def test_seconds_until_the_next_daily_time() -> None:
    """The daily tasks wait until the next HH:MM: later today, or tomorrow once it has passed (a full day at HH:MM)."""
    now = datetime(2026, 3, 1, 3, 0, tzinfo=UTC)
    assert seconds_until(3, 30, now) == 30 * 60
    assert seconds_until(2, 0, now) == 23 * 3600
    assert seconds_until(3, 0, now) == 24 * 3600


def _one_mailbox(config_copy: Path, tmp_path: Path) -> Config:
    """The shipped config with one mailbox `jkt` (no IDLE, polled every 600 s) and a state file in tmp_path."""
    config_copy.write_text(
        config_copy.read_text()
        + f"""
mailboxes:
  - name: jkt
    host: 127.0.0.1
    security: plain
    username: router
    password: {{env: NOT_NEEDED}}
    idle: false
    poll_interval: 600
state:
  path: {tmp_path / "state.sqlite3"}
"""
    )
    return load_config(config_copy)


class CountingRouter(Router):
    """A router whose polls only count (no IMAP): what the service's tasks call, and when."""

    polls: list[str]

    async def poll_once(self, mailbox: MailboxConfig) -> PollReport:
        self.polls.append(mailbox.name)
        return PollReport(mailbox.name)


def test_a_mailbox_task_polls_at_once_again_when_woken_and_ends_on_sigterm(config_copy: Path, tmp_path: Path) -> None:
    """`run` polls each mailbox at start, polls again as soon as IDLE wakes it (not after its 600 s interval),
    says READY only after a good poll, and on stop every task ends and the service exits 0."""
    config = _one_mailbox(config_copy, tmp_path)
    router = CountingRouter(config, Store(config.settings.state_path), None)
    router.polls = []
    service = Service(config_copy, router)

    async def scenario() -> int:
        serving = asyncio.create_task(service.serve())
        for _ in range(100):
            await asyncio.sleep(0.01)
            if router.polls:
                break
        assert router.polls == ["jkt"]
        await asyncio.sleep(0.1)
        assert router.polls == ["jkt"]  # nothing more before the interval ...
        service.wake("jkt")
        await asyncio.sleep(0.1)
        assert router.polls == ["jkt", "jkt"]  # ... but at once when IDLE says so
        service.stop_event.set()
        status = await asyncio.wait_for(serving, 10)
        assert service.tasks_running() == []  # each loop ended by itself: none was left to cancel
        return status

    try:
        assert asyncio.run(scenario()) == 0
    finally:
        router.store.close()


class BurstRouter(Router):
    """A router whose polls take mail the first `busy` times (no IMAP), then find none: a burst of mail."""

    polls: list[float]
    busy: int

    async def poll_once(self, mailbox: MailboxConfig) -> PollReport:
        self.polls.append(asyncio.get_running_loop().time())
        report = PollReport(mailbox.name)
        report.fetched = 2 if len(self.polls) <= self.busy else 0
        return report


def test_a_poll_that_took_mail_is_followed_by_another_soon_and_one_that_found_none_waits_its_interval(
    config_copy: Path, tmp_path: Path
) -> None:
    """While mail comes in (a poll took some), the mailbox is polled again FOLLOW_UP after that poll began, not
    after its 600 s interval and not waiting for IDLE (which a server may announce late); the first poll that
    finds nothing ends the burst."""
    config = _one_mailbox(config_copy, tmp_path)
    router = BurstRouter(config, Store(config.settings.state_path), None)
    router.polls, router.busy = [], 3
    service = Service(config_copy, router)

    async def scenario() -> None:
        serving = asyncio.create_task(service.serve())
        await asyncio.sleep(5 * FOLLOW_UP)
        service.stop_event.set()
        await asyncio.wait_for(serving, 10)

    try:
        asyncio.run(scenario())
    finally:
        router.store.close()
    assert len(router.polls) == 4  # three that took mail, one that found none, then the interval
    gaps = [b - a for a, b in itertools.pairwise(router.polls)]
    assert all(0.9 * FOLLOW_UP <= gap < 2 * FOLLOW_UP for gap in gaps), gaps
