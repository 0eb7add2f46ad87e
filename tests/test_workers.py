"""A mail whose worker died is routed once more alone; one that kills a worker twice is quarantined, not retried."""

from __future__ import annotations

import asyncio
from concurrent.futures.process import BrokenProcessPool
from datetime import UTC, datetime
from typing import Any

from emailrouter.service.processor import Routed
from emailrouter.service.router import Router


class DyingPool:
    """A pool whose workers die on the first `deaths` mails handed to them (its own generations counted)."""

    def __init__(self, deaths: int) -> None:
        self.deaths = deaths
        self.generation = 0
        self.restarts = 0
        self.size = 2

    def restart(self) -> None:
        self.restarts += 1
        self.generation += 1

    def submit(self, *args: Any) -> tuple[asyncio.Future[Routed | None], int]:
        future: asyncio.Future[Routed | None] = asyncio.get_running_loop().create_future()
        if self.deaths > 0:
            self.deaths -= 1
            future.set_exception(BrokenProcessPool("a child process terminated abruptly"))
        else:
            future.set_result(Routed("a@example.com", "<m@x>"))
        return future, self.generation


class Job:
    class fetched:  # the attribute the router reads
        raw = b"From: a@example.com\r\n\r\nhi\r\n"

    key = "jkt|INBOX|1|1"
    now = datetime(2026, 12, 2, tzinfo=UTC)
    memory = None


def alone(pool: DyingPool, generation: int) -> Routed | None:
    return asyncio.run(Router._alone(None, Job, pool, generation))  # type: ignore[arg-type]


def test_a_mail_whose_worker_died_is_routed_again_in_a_fresh_pool() -> None:
    """The pool the mail died in is restarted once and the mail's second try is its routing."""
    pool = DyingPool(deaths=0)
    routed = alone(pool, generation=0)
    assert routed is not None and routed.error is None and pool.restarts == 1


def test_a_pool_restarted_already_for_another_mail_is_not_restarted_again() -> None:
    """Every mail in a dead pool fails at once: only the first one's retry restarts it."""
    pool = DyingPool(deaths=0)
    pool.generation = 1  # restarted by an earlier mail of the same dead pool (generation 0)
    routed = alone(pool, generation=0)
    assert routed is not None and routed.error is None and pool.restarts == 0


def test_a_mail_that_kills_a_fresh_worker_twice_is_quarantined() -> None:
    """Two more deaths, alone each time: the mail gets the quarantine reason and is not tried a fourth time."""
    pool = DyingPool(deaths=2)
    routed = alone(pool, generation=0)
    assert routed is not None and routed.error == "a worker process died routing this mail (twice, once alone)"
    assert pool.restarts == 2 and pool.deaths == 0
