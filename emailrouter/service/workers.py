"""The pure routing in a pool of worker processes, so that a backlog uses every core of the machine.

A worker loads the config from the service's files once, then gets the raw bytes of one mail and its
sender's memory and returns the plain `Routed` (processor.py). The service keeps every decision about
durability, ordering and sending (router.py): it settles the results in mailbox order and hands a mail
out only once every earlier mail of the same sender is settled, so that its memory counts them, and
the plans are the ones `workers: 1` makes. A worker whose files give another config version than the
service's (they changed between the two loads) is not used: the mail is routed in the service.

Workers start from a fork server (no fork of the threaded service itself); a worker that dies takes
its mail with it: that mail is tried once more alone, and quarantined if it kills a worker again.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import select
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import datetime

import structlog

from emailrouter.config.loader import Config, load_config
from emailrouter.core.errors import ConfigError
from emailrouter.core.pipeline import Memory
from emailrouter.service.faults import crashpoint
from emailrouter.service.processor import Routed, decide

__all__ = ["BrokenProcessPool", "Pool"]

log = structlog.get_logger(__name__)
_config: Config | None = None  # a worker's config, None when its files said another version


def _die_with(service: int) -> None:
    """A worker never outlives its service: it exits as soon as the service's process is gone (killed -9,
    say), so that no orphan waits for mail forever (each holds the pool's pipes, the fork server waits for
    them and keeps the service's stdout open)."""

    def watch() -> None:
        try:
            fd = os.pidfd_open(service)
        except (AttributeError, OSError):  # no pidfd (not Linux 5.3+), or already gone
            while _alive(service):
                time.sleep(1)
        else:
            select.select([fd], [], [])  # readable once the process has exited
        os._exit(1)

    threading.Thread(target=watch, name="service-watch", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _start(path: str, version: str, service: int) -> None:
    global _config
    _die_with(service)
    try:
        config = load_config(path)
    except ConfigError:  # the files broke since the service loaded them: it routes the mail itself
        return
    _config = config if config.version == version else None


def _decide(raw: bytes, key: str, now: datetime, memory: Memory) -> Routed | None:
    crashpoint("worker-route")
    return decide(raw, _config, key, now, memory) if _config is not None else None


class Pool:
    """Worker processes for one config: started on first use, given up with it (reload, close)."""

    def __init__(self, config: Config, size: int) -> None:
        self.config = config
        self.size = size
        self._executor: ProcessPoolExecutor | None = None
        self.generation = 0  # counts restarts: a failure of an older generation's worker needs no new restart

    def _pool(self) -> ProcessPoolExecutor:
        if self._executor is None:
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload(["emailrouter.service.workers"])
            self._executor = ProcessPoolExecutor(
                self.size,
                mp_context=context,
                initializer=_start,
                initargs=(str(self.config.path), self.config.version, os.getpid()),
            )
            log.info("workers_started", workers=self.size, generation=self.generation)
        return self._executor

    def submit(self, raw: bytes, key: str, now: datetime, memory: Memory) -> tuple[asyncio.Future[Routed | None], int]:
        """Route one mail in a worker (None back if the worker's config is not the service's), and the pool's
        generation it went to."""
        try:
            future = self._pool().submit(_decide, raw, key, now, memory)
        except BrokenProcessPool:  # a worker died since the last mail went out: a fresh pool
            self.restart()
            future = self._pool().submit(_decide, raw, key, now, memory)
        return asyncio.wrap_future(future), self.generation

    def restart(self) -> None:
        """After a worker died: the next submit starts a fresh pool."""
        self.close()
        self.generation += 1

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
