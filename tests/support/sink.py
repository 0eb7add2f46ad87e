"""A loopback SMTP sink: accepts mail on 127.0.0.1, records it, and can be told to fail on purpose.

Used by `emailrouter demo` (so nothing leaves the machine), by the test suite (to check what the router
sent and how it copes with SMTP failures) and by the benchmark (as a separate process, see `main`).

The server is aiosmtpd running in its own thread with its own event loop, so a `SmtpSink` can be used from
plain synchronous code and from inside another event loop alike.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import logging
import os
import re
import signal
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Final, Self, TypeVar

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

__all__ = ["BEHAVIOURS", "LOOPBACK", "Received", "SmtpSink", "main"]

#: The address the sink listens on unless told otherwise.
LOOPBACK: Final = "127.0.0.1"

#: The scripted behaviours that take no argument; `reject_rcpt:<address>` is the one that does.
BEHAVIOURS: Final = frozenset({"ok", "421", "451", "550", "disconnect", "drop_at_data", "accept_then_drop"})
_REJECT_RCPT: Final = "reject_rcpt:"
_ACCEPT_THEN_HANG: Final = "accept_then_hang:"  # store the message, answer 250 only after this many seconds

_SERVER_NAME: Final = "emailrouter-sink"  # given to aiosmtpd so it never calls socket.getfqdn()
_LOOP_CALL_TIMEOUT: Final = 10.0
_SAVED_NAME = re.compile(r"^(\d+)-.*\.eml$")
_UNSAFE_IN_NAME = re.compile(r"[^A-Za-z0-9._@+-]+")

_T = TypeVar("_T")


class _DropLoginDataNotice(logging.Filter):
    """Drops aiosmtpd's "Session.login_data is deprecated" warning, which aiosmtpd itself triggers on every AUTH."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep every record except that one notice."""
        return not str(record.msg).startswith("Session.login_data is deprecated")


_LOGIN_DATA_FILTER: Final = _DropLoginDataNotice()


@dataclass(frozen=True)
class Received:
    """One message the sink accepted: the SMTP envelope, the DATA bytes as received, and when (time.time())."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    when: float


def _check_behaviour(behaviour: str) -> str:
    """Return `behaviour` unchanged if the sink knows it; raise ValueError otherwise."""
    if behaviour in BEHAVIOURS:
        return behaviour
    if behaviour.startswith(_REJECT_RCPT) and behaviour[len(_REJECT_RCPT) :].strip():
        return behaviour
    if behaviour.startswith(_ACCEPT_THEN_HANG):
        try:
            if float(behaviour[len(_ACCEPT_THEN_HANG) :]) >= 0:
                return behaviour
        except ValueError:
            pass
    known = ", ".join(sorted(BEHAVIOURS))
    raise ValueError(
        f"unknown sink behaviour {behaviour!r} (known: {known}, reject_rcpt:<address>, accept_then_hang:<seconds>)"
    )


def _saved_name(number: int, rcpt_tos: Sequence[str]) -> str:
    """The file name for a saved message: running number, then the first recipient made safe for a file name."""
    first = rcpt_tos[0] if rcpt_tos else "no-recipient"
    safe = _UNSAFE_IN_NAME.sub("_", first).strip("._") or "recipient"
    return f"{number:04d}-{safe[:100]}.eml"


def _next_saved_number(folder: Path) -> int:
    """One more than the highest running number already used in `folder`, so a reused folder is never overwritten."""
    highest = 0
    for entry in folder.iterdir():
        match = _SAVED_NAME.match(entry.name)
        if match:
            highest = max(highest, int(match.group(1)))
    return highest + 1


def _write_atomically(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that a reader sees either the old file or the whole new one."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def _abort(transport: asyncio.BaseTransport) -> None:
    """Drop a connection at once, discarding anything not yet written."""
    if isinstance(transport, asyncio.WriteTransport):
        transport.abort()
    else:
        transport.close()


class _Server(SMTP):
    """aiosmtpd's server with one more fault: `drop_at_data` closes the connection at the DATA command,
    before a byte of the message is sent (so the client knows nothing was delivered)."""

    def __init__(self, handler: _Handler, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._sink_handler = handler

    async def smtp_DATA(self, arg: str) -> None:
        envelope = self.envelope
        if envelope is not None and self._sink_handler.behaviour_of(envelope) == "drop_at_data":
            self._sink_handler.forget(envelope)
            if self.transport is not None:
                self.transport.close()
            return
        await super().smtp_DATA(arg)


class _Handler:
    """The aiosmtpd handler: applies the scripted behaviour of each transaction and hands accepted mail to the sink.

    aiosmtpd calls these hooks on the sink's own event loop thread.
    """

    def __init__(self, sink: SmtpSink) -> None:
        self._sink = sink
        # The behaviour chosen for each open transaction, taken from the script at MAIL FROM.
        self._behaviours: weakref.WeakKeyDictionary[Envelope, str] = weakref.WeakKeyDictionary()

    def behaviour_of(self, envelope: Envelope) -> str:
        return self._behaviours.get(envelope, "ok")

    def forget(self, envelope: Envelope) -> None:
        self._behaviours.pop(envelope, None)

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, mail_options: list[str]
    ) -> str:
        """Start a transaction: refuse it if AUTH is required and missing, else take its behaviour from the script."""
        if self._sink.auth_required and not session.authenticated:
            return "530 5.7.0 Authentication required"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        self._behaviours[envelope] = self._sink._next_behaviour()
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        """Accept the recipient unless this transaction's behaviour is `reject_rcpt:` for exactly this address."""
        behaviour = self._behaviours.get(envelope, "ok")
        if behaviour.startswith(_REJECT_RCPT):
            rejected = behaviour[len(_REJECT_RCPT) :].strip()
            if address.casefold() == rejected.casefold():
                return f"550 5.1.1 <{address}>: recipient rejected (scripted)"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """Reply to the end of DATA as scripted; only an accepted message is recorded."""
        behaviour = self._behaviours.pop(envelope, "ok")
        if behaviour == "451":
            return "451 4.3.0 Temporary failure (scripted)"
        if behaviour == "550":
            return "550 5.7.1 Message rejected (scripted)"
        if behaviour in ("421", "disconnect"):
            if behaviour == "421":
                # Reply here rather than by returning, so the connection closes before aiosmtpd can read any
                # command the client pipelined after the data.
                await server.push("421 4.3.2 Service shutting down (scripted)")
            if server.transport is not None:
                server.transport.close()
            # aiosmtpd cancels this coroutine when it sees the connection go (connection_lost).
            await asyncio.get_running_loop().create_future()
        content = envelope.original_content or b""
        try:
            self._sink._accept(envelope.mail_from or "", tuple(envelope.rcpt_tos), content)
        except OSError as exc:
            return f"451 4.3.0 Could not save the message: {exc.strerror or exc}"
        if behaviour == "accept_then_drop":  # stored, but the answer to "." is lost: the client cannot know
            if server.transport is not None:
                server.transport.close()
            await asyncio.get_running_loop().create_future()
        if behaviour.startswith(_ACCEPT_THEN_HANG):  # stored, and the answer comes late
            await asyncio.sleep(float(behaviour[len(_ACCEPT_THEN_HANG) :]))
        return "250 2.0.0 OK"


class SmtpSink:
    """An SMTP server on loopback that records what it accepts and fails on demand.

    Start it with `start()` or a `with` block; `port=0` (the default) picks a free port, readable from `port`
    once started. Accepted messages are in `received` (and in `save_to`, if given, as `NNNN-<rcpt>.eml`).
    `script()` queues failures for the next messages and `set_down()` takes the whole server away and back.

    With `auth=(user, password)` every transaction needs AUTH PLAIN or LOGIN first (allowed over plaintext,
    this is loopback); without it the server offers no AUTH. With `keep_messages=False` only the count is
    kept, for long benchmark runs.
    """

    def __init__(
        self,
        *,
        host: str = LOOPBACK,
        port: int = 0,
        save_to: Path | None = None,
        auth: tuple[str, str] | None = None,
        keep_messages: bool = True,
    ) -> None:
        self.host = host
        self.port = port
        self.save_to = save_to
        self._auth = auth
        if auth is not None:
            logging.getLogger("mail.log").addFilter(_LOGIN_DATA_FILTER)  # adding the same filter twice is a no-op
        self._keep_messages = keep_messages
        self._handler = _Handler(self)
        self._changed = threading.Condition()
        self._received: list[Received] = []
        self._count = 0
        self._connections = 0
        self._script: deque[str] = deque()
        self._next_file_number = 1
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._protocols: weakref.WeakSet[SMTP] = weakref.WeakSet()

    # --- lifecycle -------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the server thread and listen; raises OSError if the port cannot be bound."""
        if self._thread is not None:
            raise RuntimeError("the SMTP sink is already running")
        if self.save_to is not None:
            self.save_to.mkdir(parents=True, exist_ok=True)
            self._next_file_number = _next_saved_number(self.save_to)
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=self._run_loop, args=(loop,), name=f"smtp-sink-{id(self):x}", daemon=True)
        self._loop, self._thread = loop, thread
        thread.start()
        try:
            self._call(self._listen())
        except BaseException:
            self._end_thread()
            raise

    def stop(self) -> None:
        """Drop every connection, stop listening and end the server thread. Safe to call more than once."""
        if self._thread is None:
            return
        try:
            self._call(self._unlisten())
        finally:
            self._end_thread()

    def __enter__(self) -> Self:
        """Start the sink for the duration of a `with` block."""
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        """Stop the sink at the end of a `with` block."""
        self.stop()

    @property
    def running(self) -> bool:
        """True between `start()` and `stop()`, whether or not the sink is currently down."""
        return self._thread is not None

    @property
    def is_down(self) -> bool:
        """True while the sink is running but not accepting connections (see `set_down`)."""
        return self._thread is not None and self._server is None

    def set_down(self, down: bool) -> None:
        """Simulate an outage: True drops all connections and stops listening, False listens again on the same port.

        Raises OSError if, meanwhile, something else took the port.
        """
        if self._thread is None:
            raise RuntimeError("the SMTP sink is not running")
        if down and self._server is not None:
            self._call(self._unlisten())
        elif not down and self._server is None:
            self._call(self._listen())

    # --- what was received -----------------------------------------------------------------------------------

    @property
    def received(self) -> list[Received]:
        """A snapshot (a new list each time) of the messages accepted so far, oldest first."""
        with self._changed:
            return list(self._received)

    @property
    def count(self) -> int:
        """How many messages were accepted so far (also counted when `keep_messages` is False)."""
        with self._changed:
            return self._count

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Received]:
        """Block until at least `count` messages were accepted, then return `received`.

        Raises TimeoutError if that does not happen within `timeout` seconds.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._count < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"SMTP sink accepted {self._count} of {count} messages within {timeout} s")
                self._changed.wait(remaining)
            return list(self._received)

    # --- fault injection -------------------------------------------------------------------------------------

    def script(self, *behaviours: str) -> None:
        """Queue behaviours for the next messages, one each, in order; "ok" again once the queue is used up.

        A message's behaviour is taken from the queue at its MAIL FROM. Behaviours: "ok"; "421" (reply 421 to
        DATA, then close); "451" and "550" (reply that to DATA); "disconnect" (close the connection after the
        data arrives, without replying or storing it); "drop_at_data" (close the connection at the DATA command,
        before the message is sent); "accept_then_drop" (store the message, then close without replying: the
        client cannot know it was delivered); "accept_then_hang:<seconds>" (store it and reply 250 only after
        that long); "reject_rcpt:<address>" (refuse that recipient with 550 at RCPT and accept the others).
        Raises ValueError on an unknown behaviour, before queueing any.
        """
        checked = [_check_behaviour(behaviour) for behaviour in behaviours]
        with self._changed:
            self._script.extend(checked)

    @property
    def pending_script(self) -> tuple[str, ...]:
        """The behaviours queued by `script()` and not yet used."""
        with self._changed:
            return tuple(self._script)

    @property
    def auth_required(self) -> bool:
        """True if the sink was given credentials and so requires AUTH before MAIL FROM."""
        return self._auth is not None

    # --- internals (called on the server thread) -------------------------------------------------------------

    def _next_behaviour(self) -> str:
        """Take the next scripted behaviour, or "ok" when none is queued."""
        with self._changed:
            return self._script.popleft() if self._script else "ok"

    def _accept(self, mail_from: str, rcpt_tos: tuple[str, ...], data: bytes) -> None:
        """Record an accepted message (and save it, if asked); raises OSError if it cannot be saved."""
        message = Received(mail_from=mail_from, rcpt_tos=rcpt_tos, data=data, when=time.time())
        if self.save_to is not None:
            with self._changed:
                number = self._next_file_number
                self._next_file_number += 1
            _write_atomically(self.save_to / _saved_name(number, rcpt_tos), data)
        with self._changed:
            self._count += 1
            if self._keep_messages:
                self._received.append(message)
            self._changed.notify_all()

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        """Check AUTH PLAIN/LOGIN credentials against the configured pair, in constant time."""
        if self._auth is None or not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user, password = self._auth
        user_ok = hmac.compare_digest(auth_data.login, user.encode("utf-8"))
        password_ok = hmac.compare_digest(auth_data.password, password.encode("utf-8"))
        return AuthResult(success=user_ok and password_ok, handled=False)

    def _make_protocol(self) -> SMTP:
        """Build the aiosmtpd protocol for one new connection and remember it so it can be dropped later."""
        assert self._loop is not None
        protocol = _Server(
            self._handler,
            hostname=_SERVER_NAME,
            ident="emailrouter SMTP sink",
            enable_SMTPUTF8=True,
            # With credentials, offer AUTH over plaintext (this is loopback); without, offer none. AUTH is
            # enforced in handle_MAIL rather than with auth_required=True, which makes aiosmtpd emit a warning.
            auth_require_tls=self._auth is None,
            authenticator=self._authenticate if self._auth is not None else None,
            loop=self._loop,
        )
        self._protocols.add(protocol)
        with self._changed:
            self._connections += 1
        return protocol

    @property
    def connections(self) -> int:
        """How many SMTP connections clients have opened so far (a test of connection reuse can fail)."""
        with self._changed:
            return self._connections

    async def _listen(self) -> None:
        """Open the listening socket (on the remembered port after the first time)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._make_protocol, host=self.host, port=self.port)
        if self.port == 0:
            self.port = int(self._server.sockets[0].getsockname()[1])

    async def _unlisten(self) -> None:
        """Stop listening, abort every open connection and wait until their handlers have finished."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for protocol in list(self._protocols):
            if protocol.transport is not None:
                _abort(protocol.transport)
        current = asyncio.current_task()
        others = [task for task in asyncio.all_tasks() if task is not current]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)
        # Let the transports deliver connection_lost, which is what finally closes their sockets.
        deadline = time.monotonic() + 2.0
        while any(p.transport is not None for p in self._protocols) and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        if server is not None:
            await server.wait_closed()

    def _call(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        """Run `coroutine` on the server's loop and wait for its result."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(_LOOP_CALL_TIMEOUT)

    @staticmethod
    def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
        """Body of the server thread: run the loop until stopped, then close it."""
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def _end_thread(self) -> None:
        """Stop the loop and join the server thread."""
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
        self._loop = self._thread = self._server = None


# --- command line (for the benchmark: a sink in its own process) ---------------------------------------------


def _write_count(path: Path, count: int) -> None:
    """Rewrite the stats file with the current count, atomically."""
    _write_atomically(path, f"{count}\n".encode("ascii"))


def main(argv: Sequence[str] | None = None) -> int:
    """Run a sink in the foreground until SIGTERM or SIGINT; print the number of accepted messages on exit."""
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.sink",
        description="Run a loopback SMTP sink in the foreground until SIGTERM/SIGINT.",
    )
    parser.add_argument("--host", default=LOOPBACK, help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=0, help="port to listen on; 0 picks a free one (default)")
    parser.add_argument("--save-to", type=Path, metavar="DIR", help="also save each message to DIR")
    parser.add_argument("--count-only", action="store_true", help="keep only a counter, not the messages")
    parser.add_argument("--stats-file", type=Path, metavar="PATH", help="rewrite the received count here every 0.25 s")
    args = parser.parse_args(argv)

    stopping = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stopping.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        with SmtpSink(host=args.host, port=args.port, save_to=args.save_to, keep_messages=not args.count_only) as sink:
            print(f"listening on {sink.host}:{sink.port}", flush=True)
            while True:
                if args.stats_file is not None:
                    _write_count(args.stats_file, sink.count)
                if stopping.wait(0.25):
                    break
            count = sink.count
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if args.stats_file is not None:
        _write_count(args.stats_file, count)
    print(count, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
