"""The pure routing in a pool of worker processes, so that a backlog uses every core of the machine.

A worker loads the config from the service's files once, then gets the raw bytes of one mail and its
sender's memory and returns the plain `Routed` (processor.py). The service keeps every decision about
durability, ordering and sending (router.py): it settles the results in mailbox order and hands a mail
out only once every earlier mail of the same sender is settled, so that its memory counts them, and
the plans are the ones `workers: 1` makes. A worker whose files give another config version than the
service's (they changed between the two loads) is not used: the mail is routed in the service.

Each worker has its own pipe and holds at most two mails: the one it routes and the next one, which
is written only when it fits in the pipe's buffer, so that handing out mail never blocks the service's
event loop, and neither side can wait on the other. No threads: the event loop reads the answers and
notices a worker's death (its process sentinel). Workers start from a fork server (no fork of the
threaded service itself), ignore SIGTERM and SIGINT (a stop is the service's: it finishes the mails in
hand, then closes the pipes) and exit as soon as the service is gone.

A worker routes its mails in the order it got them, so the first one it had not answered when it died
is the one that killed it: that mail fails with `WorkerDied` (the router routes it once more, as the
first mail of a new worker, and quarantines it if it kills that one too); the mail behind it is handed
to another worker untouched.
"""

from __future__ import annotations

import asyncio
import atexit
import gc
import itertools
import multiprocessing
import multiprocessing.forkserver
import os
import pickle
import select
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import datetime
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

import structlog

from emailrouter.config.loader import Config, load_config
from emailrouter.core.dedupe import content_hash
from emailrouter.core.errors import ConfigError
from emailrouter.core.pipeline import Memory
from emailrouter.service.faults import crashpoint
from emailrouter.service.processor import Routed, decide

__all__ = ["Pool", "WorkerDied"]

log = structlog.get_logger(__name__)

PRELOAD = "EMAILROUTER_WORKER_CONFIG"  # in the fork server's environment: the config it loads for every worker
DEPTH = 2  # mails a worker holds at once: the one it routes and the next one, already in its pipe
FITS = 16 * 1024  # a second mail is written only if this small: two fit the pipe's 64 KiB without blocking


class WorkerDied(Exception):
    """The worker process routing this mail died (killed, out of memory, a crash below Python): this mail
    killed it, or something outside did. Retrying once tells which."""


# --- in the worker ---------------------------------------------------------------------------------


def _die_with(service: int) -> None:
    """A worker never outlives its service: it exits as soon as the service's process is gone (killed -9,
    say), so that no orphan waits for mail forever."""

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


def _preload() -> Config | None:
    """In the fork server (which imports this module first): the service's config, loaded once, so that every
    worker forked from it starts with the config and the model in pages it shares with the others. Frozen
    out of the garbage collector's reach, which would otherwise write to every object's pages."""
    path = os.environ.get(PRELOAD)
    if not path:
        return None
    try:
        config = load_config(path)
    except Exception:  # the worker loads the files itself and says why it cannot
        return None
    gc.collect()
    gc.freeze()
    return config


_preloaded = _preload()


def _config_for(path: str, version: str) -> Config | None:
    """The config a worker routes with: the fork server's when it is the service's, else loaded from the files
    (the config was reloaded since the fork server started); None if those give another version."""
    if _preloaded is not None and str(_preloaded.path) == path and _preloaded.version == version:
        return _preloaded
    try:
        config = load_config(path)
    except ConfigError:  # the files broke since the service loaded them: it routes the mail itself
        return None
    return config if config.version == version else None


def _serve(conn: Connection, path: str, version: str, service: int) -> None:
    """A worker's life: load the config, then answer (seq, raw, key, now, memory) with (seq, ok, value)
    until the service closes the pipe."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with(service)
    config = _config_for(path, version)
    while True:
        try:
            seq, raw, key, now, memory = pickle.loads(conn.recv_bytes())
        except EOFError:  # the service closed the pool
            return
        conn.send_bytes(_answer(seq, config, raw, key, now, memory))


def _answer(seq: int, config: Config | None, raw: bytes, key: str, now: datetime, memory: Memory) -> bytes:
    crashpoint("worker-route")
    try:
        routed = decide(raw, config, key, now, memory) if config is not None else None
        if routed is not None:  # the service needs it only once the mail is routed: worked out here, not there
            routed = replace(routed, content=content_hash(raw))
        return pickle.dumps((seq, True, routed), pickle.HIGHEST_PROTOCOL)
    except Exception as error:  # a bug: the service raises it as the routing's own error would be raised
        try:
            return pickle.dumps((seq, False, error), pickle.HIGHEST_PROTOCOL)
        except Exception:
            return pickle.dumps((seq, False, RuntimeError(f"{type(error).__name__}: {error}")))


# --- in the service --------------------------------------------------------------------------------


def _forkserver_running() -> bool:
    return multiprocessing.forkserver._forkserver._forkserver_pid is not None  # type: ignore[attr-defined]


@dataclass(eq=False)
class _Worker:
    process: BaseProcess
    conn: Connection
    held: deque[int] = field(default_factory=deque)  # the mails it holds, in the order it got them
    served: int = 0  # mails handed to it so far


class Pool:
    """Worker processes for one config: started on first use, given up with it (reload, close)."""

    def __init__(self, config: Config, size: int) -> None:
        self.config = config
        self.size = size
        self.started = 0  # worker processes started so far (a dead one is replaced by a new one)
        self.users = 0  # batches routing with it now (the router's count: it closes the pool at none)
        self._workers: list[_Worker] = []
        self._retired: list[_Worker] = []  # workers beyond the size, started for a retry, until they have exited
        self._waiting: deque[int] = deque()  # mails not handed to a worker yet, oldest first
        self._jobs: dict[int, tuple[bytes, asyncio.Future[Routed | None], bool]] = {}  # every mail not answered
        self._seq = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    def submit(
        self, raw: bytes, key: str, now: datetime, memory: Memory, fresh: bool = False
    ) -> asyncio.Future[Routed | None]:
        """Route one mail in a worker: its `Routed`, None if the worker's config is not the service's, or
        WorkerDied. `fresh`: as the first mail of a new worker process (a retry after a death), so that no
        state a worker built up routing earlier mail can kill it."""
        if self._closed:
            raise RuntimeError("the worker pool is closed")
        self._loop = asyncio.get_running_loop()
        seq = next(self._seq)
        future: asyncio.Future[Routed | None] = self._loop.create_future()
        self._jobs[seq] = (pickle.dumps((seq, raw, key, now, memory), pickle.HIGHEST_PROTOCOL), future, fresh)
        self._waiting.append(seq)
        self._hand_out()
        return future

    def _hand_out(self) -> None:
        """Give waiting mails to workers with room for them, starting workers up to the pool's size."""
        while self._waiting:
            seq = self._waiting[0]
            payload, future, fresh = self._jobs[seq]
            if future.done():  # cancelled by the router before it was handed out
                self._waiting.popleft()
                del self._jobs[seq]
                continue
            worker = self._fresh() if fresh else self._room_for(len(payload))
            if worker is None:
                return
            self._waiting.popleft()
            worker.held.append(seq)
            worker.served += 1
            try:
                worker.conn.send_bytes(payload)
            except OSError:  # it died since its last answer: its sentinel tells, and this mail goes again
                worker.held.pop()
                self._waiting.appendleft(seq)
                self._buried(worker)

    def _fresh(self) -> _Worker:
        """A worker that has routed nothing yet: started for it, beyond the pool's size if need be."""
        unused = [w for w in self._workers if not w.served]
        return unused[0] if unused else self._start()

    def _room_for(self, size: int) -> _Worker | None:
        idle = [w for w in self._workers if not w.held]
        if idle:
            return idle[0]
        if len(self._workers) < self.size:
            return self._start()
        if size > FITS:
            return None
        return next((w for w in self._workers if len(w.held) < DEPTH), None)

    def _start(self) -> _Worker:
        context = multiprocessing.get_context("forkserver")
        if not _forkserver_running():
            context.set_forkserver_preload([__name__])
            os.environ[PRELOAD] = str(self.config.path)  # read by the fork server as it starts, then gone
            try:
                multiprocessing.forkserver.ensure_running()
            finally:
                del os.environ[PRELOAD]
        ours, theirs = context.Pipe(duplex=True)
        process = context.Process(
            target=_serve,
            args=(theirs, str(self.config.path), self.config.version, os.getpid()),
            name=f"emailrouter-worker-{self.started}",
        )
        process.start()
        theirs.close()
        worker = _Worker(process, ours)
        self._workers.append(worker)
        assert self._loop is not None
        self._loop.add_reader(ours.fileno(), self._answered, worker)
        self._loop.add_reader(process.sentinel, self._buried, worker)
        if self.started == 0:
            atexit.register(self.close)  # before multiprocessing's own exit handler joins the workers
        self.started += 1
        log.info("worker_started", worker=process.name, pid=process.pid, workers=self.size)
        return worker

    def _answered(self, worker: _Worker) -> None:
        try:
            data = worker.conn.recv_bytes()
        except (EOFError, OSError):  # it died: the sentinel's callback may not have run yet
            self._buried(worker)
            return
        self._settle(worker, data)
        if not worker.held and len(self._workers) > self.size:  # the one started for a retry is done
            self._forget(worker)  # its pipe closed: it exits
            self._workers.remove(worker)
            self._retired.append(worker)
            assert self._loop is not None
            self._loop.add_reader(worker.process.sentinel, self._exited, worker)
        self._hand_out()

    def _exited(self, worker: _Worker) -> None:
        """A retired worker has exited: reaped, and no longer kept."""
        assert self._loop is not None
        self._loop.remove_reader(worker.process.sentinel)
        worker.process.join(1)
        self._retired.remove(worker)

    def _settle(self, worker: _Worker, data: bytes) -> None:
        seq, ok, value = pickle.loads(data)
        worker.held.remove(seq)
        _, future, _ = self._jobs.pop(seq)
        if future.done():  # cancelled: nobody waits for it
            return
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)

    def _buried(self, worker: _Worker) -> None:
        """A worker died: the answers it sent still count; the first mail it had not answered killed it,
        the ones behind it are handed out again."""
        if worker not in self._workers:
            return
        self._workers.remove(worker)
        try:
            while worker.conn.poll(0):
                self._settle(worker, worker.conn.recv_bytes())
        except (EOFError, OSError):
            pass
        self._forget(worker)
        worker.process.join(1)
        log.warning("worker_died", worker=worker.process.name, pid=worker.process.pid, exitcode=worker.process.exitcode)
        if worker.held:
            culprit = worker.held.popleft()
            _, future, _ = self._jobs.pop(culprit)
            if not future.done():
                future.set_exception(WorkerDied(f"worker {worker.process.pid} died routing this mail"))
            self._waiting.extendleft(reversed(worker.held))
        if not self._closed:
            self._hand_out()

    def _forget(self, worker: _Worker) -> None:
        """No more reading from this worker: its readers removed, its pipe closed (it exits at EOF)."""
        if self._loop is not None and not self._loop.is_closed():
            if not worker.conn.closed:
                self._loop.remove_reader(worker.conn.fileno())
            self._loop.remove_reader(worker.process.sentinel)
        worker.conn.close()

    def close(self) -> None:
        """Close the workers' pipes (each exits at the end of its mail), wait a little, then kill."""
        if self._closed:
            return
        self._closed = True
        workers, self._workers = self._workers + self._retired, []
        self._retired = []
        for worker in workers:
            self._forget(worker)
        deadline = time.monotonic() + 5
        for worker in workers:
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(1)
        if self._loop is not None and not self._loop.is_closed():  # at exit the loop may be gone with them
            for _, future, _ in self._jobs.values():
                future.cancel()
        self._jobs.clear()
        self._waiting.clear()
        atexit.unregister(self.close)
