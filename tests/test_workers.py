"""The worker pool: the routing a worker returns is the service's own; a worker that dies fails only the
mail that killed it, the mail behind it goes to another worker; a mail that kills a worker twice is
quarantined, not retried."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from emailrouter.config.loader import Config
from emailrouter.core.pipeline import NO_MEMORY
from emailrouter.service.processor import Routed, decide
from emailrouter.service.router import POOL_MIN, Router
from emailrouter.service.store import Store
from emailrouter.service.workers import Pool, WorkerDied

NOW = datetime(2026, 12, 2, 9, 0, tzinfo=UTC)


def raw(n: int, body: str = "Internet kantor mati sejak pagi, mohon dicek.") -> bytes:
    return (
        f"From: Pelanggan {n} <p{n}@example.co.id>\r\nTo: cs@example.com\r\nSubject: gangguan {n}\r\n"
        f"Message-ID: <w{n}@example.co.id>\r\nDate: Wed, 02 Dec 2026 08:00:00 +0700\r\n\r\n{body}\r\n"
    ).encode()


def plan(routed: Routed | None) -> tuple[Any, ...]:
    assert routed is not None
    return routed.sender, routed.message_id, routed.segment, routed.intent, routed.rule, routed.sends, routed.error


def test_a_worker_routes_a_mail_as_the_service_does(config: Config) -> None:
    """Small and large mails (a large one is written only to an idle worker) come back as decide() here."""
    mails = [raw(n) for n in range(6)] + [raw(9, "panjang " * 6000)]

    async def pooled() -> list[Routed | None]:
        pool = Pool(config, 2)
        try:
            return list(await asyncio.gather(*(pool.submit(m, f"k|{i}", NOW, NO_MEMORY) for i, m in enumerate(mails))))
        finally:
            pool.close()

    here = [decide(m, config, f"k|{i}", NOW, NO_MEMORY) for i, m in enumerate(mails)]
    assert [plan(r) for r in asyncio.run(pooled())] == [plan(r) for r in here]


def test_a_dead_worker_fails_the_mail_it_was_routing_and_hands_on_the_one_behind_it(config: Config) -> None:
    """The worker is stopped holding two mails, then killed: the first fails with WorkerDied, the second is
    routed by the worker started in its place."""

    async def run() -> tuple[BaseException | None, Routed | None, int]:
        pool = Pool(config, 1)
        try:
            await pool.submit(raw(0), "k|0", NOW, NO_MEMORY)  # the worker is up
            (worker,) = pool._workers
            pid = worker.process.pid
            assert pid is not None
            os.kill(pid, signal.SIGSTOP)
            first = pool.submit(raw(1), "k|1", NOW, NO_MEMORY)
            second = pool.submit(raw(2), "k|2", NOW, NO_MEMORY)
            assert len(worker.held) == 2
            os.kill(pid, signal.SIGKILL)
            error = (await asyncio.gather(first, return_exceptions=True))[0]
            return error if isinstance(error, BaseException) else None, await second, pool.started
        finally:
            pool.close()

    error, second, started = asyncio.run(run())
    assert isinstance(error, WorkerDied)
    assert plan(second) == plan(decide(raw(2), config, "k|2", NOW, NO_MEMORY))
    assert started == 2


def test_a_retry_is_the_first_mail_of_a_new_worker_even_in_a_full_pool(config: Config) -> None:
    """Both workers have routed mail: the retry starts a third, which is let go once it has answered, and
    reaped once it has exited."""

    async def run() -> tuple[int, int, int, Routed | None]:
        pool = Pool(config, 2)
        try:
            await asyncio.gather(*(pool.submit(raw(n), f"k|{n}", NOW, NO_MEMORY) for n in range(4)))
            before = pool.started
            routed = await pool.submit(raw(5), "k|5", NOW, NO_MEMORY, fresh=True)
            for _ in range(250):  # the third worker exits once let go, and is no longer kept
                if not pool._retired:
                    break
                await asyncio.sleep(0.02)
            assert not pool._retired
            return before, pool.started, len(pool._workers), routed
        finally:
            pool.close()

    before, after, left, routed = asyncio.run(run())
    assert (before, after, left) == (2, 3, 2)
    assert plan(routed) == plan(decide(raw(5), config, "k|5", NOW, NO_MEMORY))


def test_a_closed_pool_leaves_no_worker_behind(config: Config) -> None:
    async def run() -> list[int]:
        pool = Pool(config, 2)
        await asyncio.gather(*(pool.submit(raw(n), f"k|{n}", NOW, NO_MEMORY) for n in range(4)))
        pids = [w.process.pid for w in pool._workers if w.process.pid is not None]
        pool.close()
        return pids

    pids = asyncio.run(run())
    assert len(pids) == 2
    for pid in pids:  # the fork server reaps them: gone, not zombies of ours
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


class DyingPool:
    """A pool whose workers die on the first `deaths` mails handed to them."""

    def __init__(self, deaths: int) -> None:
        self.deaths = deaths
        self.submitted = 0

    def submit(self, *args: Any, fresh: bool = False) -> asyncio.Future[Routed | None]:
        assert fresh  # a retry is a new worker's first mail
        self.submitted += 1
        future: asyncio.Future[Routed | None] = asyncio.get_running_loop().create_future()
        if self.deaths > 0:
            self.deaths -= 1
            future.set_exception(WorkerDied("worker 1 died routing this mail"))
        else:
            future.set_result(Routed("a@example.com", "<m@x>"))
        return future


class Job:
    class fetched:  # the attribute the router reads
        raw = b"From: a@example.com\r\n\r\nhi\r\n"

    key = "jkt|INBOX|1|1"
    now = NOW
    memory = None


def again(pool: DyingPool) -> Routed | None:
    return asyncio.run(Router._again(Job, pool))  # type: ignore[arg-type]


def test_a_mail_whose_worker_died_is_routed_once_more() -> None:
    pool = DyingPool(deaths=0)
    routed = again(pool)
    assert routed is not None and routed.error is None and pool.submitted == 1


def test_a_mail_that_kills_a_worker_twice_is_quarantined() -> None:
    """Its second try kills a worker too: the mail gets the quarantine reason and is not tried a third time."""
    pool = DyingPool(deaths=1)
    routed = again(pool)
    assert routed is not None and routed.error == "a worker process died routing this mail (twice)"
    assert pool.submitted == 1 and pool.deaths == 0


def test_a_worker_takes_the_fork_servers_config_only_when_it_is_the_services(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The config the fork server loaded is shared by its workers while it is the service's; after a reload
    (another version) a worker loads the files itself, and a version the files no longer give is none."""
    from emailrouter.service import workers

    monkeypatch.setattr(workers, "_preloaded", config)
    assert workers._config_for(str(config.path), config.version) is config
    reloaded = workers._config_for(str(config.path), "another version")
    assert reloaded is None  # the files give the shipped config's version, not the one asked for
    monkeypatch.setattr(workers, "_preloaded", None)
    loaded = workers._config_for(str(config.path), config.version)
    assert loaded is not None and loaded is not config and loaded.version == config.version


def test_a_reload_closes_the_old_pool_once_no_batch_uses_it(config: Config, tmp_path: Path) -> None:
    """A pool no batch uses is closed by the reload itself (no idle workers left behind); one a batch of any
    mailbox still uses is closed when the last such batch is done, not before (its mails stay in flight)."""
    pooled = dataclasses.replace(config, settings=dataclasses.replace(config.settings, workers=2))
    store = Store(tmp_path / "s.sqlite3")
    try:
        router = Router(pooled, store, None)
        idle = router._pool_for(POOL_MIN)
        assert idle is not None
        router._release(idle)
        assert not idle._closed  # still the current pool
        router.config = pooled  # a reload
        assert idle._closed
        first, second = router._pool_for(POOL_MIN), router._pool_for(POOL_MIN)  # two mailboxes' batches
        assert first is second and first is not None
        router.config = pooled
        router._release(first)
        assert not first._closed  # the other batch still routes with it
        router._release(second)
        assert first._closed
    finally:
        store.close()
