"""A customer reply's durable claim waits for its fsync in a thread, and the event loop goes on meanwhile. A
flush cancelled then still finishes the send under way (once); a send itself cancelled then gives the claim
back once it is made, so the reply is sent later, once, and is never left `sending` (which a restart would
turn into `uncertain`: a reply the customer never gets)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import threading
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from emailrouter.config.loader import Config
from emailrouter.config.settings import Endpoint, SmtpConfig
from emailrouter.service.imap import Fetched
from emailrouter.service.memory import Batch
from emailrouter.service.processor import PollReport
from emailrouter.service.router import Router
from emailrouter.service.smtp import SmtpTransport
from emailrouter.service.store import Store
from tests.conftest import DATA
from tests.support.sink import SmtpSink
from tests.test_friction import mailbox_config


def _with_a_slow_reply_claim(
    config: Config,
    tmp_path: Path,
    scenario: Callable[[Router, Any, threading.Event, threading.Event], Coroutine[Any, Any, None]],
) -> tuple[str, int]:
    """One routed mail (a reply and a forward) and a store whose durable claims wait for `go_on`; the reply's
    status after `scenario`, then after one more flush, and how often it reached the sink."""
    mailbox = mailbox_config()
    with SmtpSink() as sink:
        smtp = SmtpConfig(Endpoint(sink.host, sink.port, "plain", 10.0, None), None, None)
        settings = dataclasses.replace(config.settings, mailboxes=(mailbox,), smtp=smtp)
        store = Store(tmp_path / "s.sqlite3")
        router = Router(dataclasses.replace(config, settings=settings), store, SmtpTransport(smtp))
        raw = (DATA / "dcs-fault-outlook-en.eml").read_bytes()
        batch = Batch(store)
        router.processor.process(mailbox, 7, Fetched(5, raw, len(raw)), PollReport(mailbox.name), batch)
        batch.commit()
        due = [store.entry(i) for i in store.due_ids(router.outbox.clock(), 10)]
        (reply,) = [e for e in due if e is not None and e.kind == "reply"]
        entered, go_on = threading.Event(), threading.Event()
        claim = store.claim

        def slow_claim(entry_id: int, durable: bool) -> bool:
            if durable:
                entered.set()
                go_on.wait(10)
            return claim(entry_id, durable)

        store.claim = slow_claim  # type: ignore[method-assign]

        async def run() -> str:
            await scenario(router, reply, entered, go_on)
            after = store.entry(reply.id)
            assert after is not None
            await router.outbox.flush()  # whatever is still due goes now
            await router.close()
            return after.status

        try:
            status = asyncio.run(run())
            final = store.entry(reply.id)
        finally:
            store.close()
        assert final is not None and final.status == "sent"
        return status, sum(reply.message_id.encode() in r.data for r in sink.received)


async def _cancel_once_claiming(task: asyncio.Task[Any], entered: threading.Event, go_on: threading.Event) -> None:
    while not entered.is_set():
        await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.sleep(0.05)  # the cancellation is delivered while the claim's thread still waits
    go_on.set()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def test_a_flush_cancelled_during_a_replys_claim_finishes_that_send_once(config: Config, tmp_path: Path) -> None:
    async def scenario(router: Router, reply: Any, entered: threading.Event, go_on: threading.Event) -> None:
        await _cancel_once_claiming(asyncio.create_task(router.outbox.flush()), entered, go_on)

    assert _with_a_slow_reply_claim(config, tmp_path, scenario) == ("sent", 1)


def test_a_send_cancelled_during_its_replys_claim_gives_the_claim_back(config: Config, tmp_path: Path) -> None:
    async def scenario(router: Router, reply: Any, entered: threading.Event, go_on: threading.Event) -> None:
        await _cancel_once_claiming(asyncio.create_task(router.outbox._deliver(reply)), entered, go_on)

    assert _with_a_slow_reply_claim(config, tmp_path, scenario) == ("pending", 1)
