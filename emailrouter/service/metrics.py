"""Prometheus metrics and a health endpoint, on a loopback address only (there is no authentication).

`Metrics` holds the counters and gauges in its own registry (no global state); the daemon updates it
after each decision, send result, poll and reload. `MetricsServer` serves it over HTTP from a daemon
thread: `GET /metrics` (prometheus_client's own WSGI app) and `GET /healthz` (200 "ok", or 503 with one
line per problem), in prometheus_client's threading WSGI server. Both are off unless the config asks for them.
"""

from __future__ import annotations

import socket
import socketserver
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server
from wsgiref.types import StartResponse

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from emailrouter.config.settings import loopback_host

log = structlog.get_logger(__name__)

STALE_AFTER = 3  # a mailbox is unhealthy when it has not polled successfully for this many poll intervals


DEPENDENCIES = ("relay", "state", "failure_unit")


class Metrics:
    """The daemon's metrics. Every method is cheap and thread-safe, and never raises on a label value."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self._messages = Counter(
            "emailrouter_messages",
            "Mails decided, by mailbox, segment, intent and outcome (the words of `stats`: done, automated or another"
            " record tag, duplicate, quarantined; dry-run in a dry run).",
            ["mailbox", "segment", "intent", "outcome"],
            registry=self.registry,
        )
        self._actions = Counter(
            "emailrouter_actions",
            "Outgoing actions by type, unit and result (sent, failed, deferred, suppressed).",
            ["type", "unit", "result"],
            registry=self.registry,
        )
        self._outbox_pending = Gauge(
            "emailrouter_outbox_pending", "Outbox entries not sent yet.", registry=self.registry
        )
        self._last_poll = Gauge(
            "emailrouter_last_poll_success_timestamp_seconds",
            "Unix time of the last successful poll of each mailbox.",
            ["mailbox"],
            registry=self.registry,
        )
        self._reloads = Counter(
            "emailrouter_config_reloads",
            "Config reloads (SIGHUP) by result (ok, rejected).",
            ["result"],
            registry=self.registry,
        )
        for result in ("ok", "rejected"):  # both series exist from the start, so rate() and alerts see a 0
            self._reloads.labels(result=result)
        self._healthy = Gauge(
            "emailrouter_dependency_up",
            "1 while a dependency works, 0 while it does not: the relay (SMTP), the state store, the failure unit"
            " (the mailbox told about mail nobody else can take).",
            ["dependency"],
            registry=self.registry,
        )
        for dependency in DEPENDENCIES:
            self._healthy.labels(dependency=dependency).set(1)

    def message(self, mailbox: str, segment: str, intent: str, outcome: str) -> None:
        self._messages.labels(mailbox=mailbox, segment=segment, intent=intent, outcome=outcome).inc()

    def action(self, type: str, unit: str | None, result: str) -> None:
        """`unit` None (a reply, a suppressed action) is exported as an empty label."""
        self._actions.labels(type=type, unit=unit or "", result=result).inc()

    def outbox_pending(self, n: int) -> None:
        self._outbox_pending.set(n)

    def poll_success(self, mailbox: str, when: float | None = None) -> None:
        """`when` is unix time (time.time()), not time.monotonic(); now by default."""
        self._last_poll.labels(mailbox=mailbox).set(time.time() if when is None else when)

    def reload(self, result: str) -> None:
        self._reloads.labels(result=result).inc()

    def dependency(self, name: str, up: bool) -> None:
        """`name` is one of DEPENDENCIES."""
        self._healthy.labels(dependency=name).set(1 if up else 0)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def stale_mailboxes(
    last_success: Mapping[str, float], intervals: Mapping[str, float], now: float, *, started: float | None = None
) -> list[str]:
    """One line per mailbox of `intervals` (the configured ones, in that order) whose last successful poll
    is more than 3 poll intervals before `now`, or that never polled successfully (absent from
    `last_success`, or 0.0 as in MailboxHealth). Any clock will do, as long as all times are on it.

    With `started` (when the daemon started), a mailbox that never polled is given the same 3 intervals
    from the start before it counts as stale."""
    problems = []
    for name, interval in intervals.items():
        allowed = STALE_AFTER * interval
        last = last_success.get(name, 0.0)
        if last > 0:
            age = now - last
            if age > allowed:
                problems.append(f"{name}: no successful poll for {age:.0f} s ({STALE_AFTER} x {interval:g} s allowed)")
        elif started is None or now - started > allowed:
            problems.append(f"{name}: no successful poll yet ({STALE_AFTER} x {interval:g} s allowed)")
    return problems


Environ = dict[str, Any]


def _app(metrics: Metrics, health: Callable[[], list[str]]) -> Callable[[Environ, StartResponse], list[bytes]]:
    """The WSGI app: /metrics is prometheus_client's own app over our registry, /healthz is ours."""
    exposition = make_wsgi_app(metrics.registry)

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return list(exposition(environ, start_response))
        if path != "/healthz":
            return _respond(start_response, "404 Not Found", b"not found: try /metrics or /healthz\n")
        try:
            problems = health()
        except Exception as exc:  # a broken health check is no proof of health
            log.error("health_check_failed", error=f"{type(exc).__name__}: {exc}")
            return _respond(
                start_response,
                "500 Internal Server Error",
                f"health check failed: {type(exc).__name__}\n",
                "text/plain",
            )
        if problems:
            text = "".join(f"{' '.join(p.splitlines())}\n" for p in problems)  # one line per problem
            return _respond(start_response, "503 Service Unavailable", text)
        return _respond(start_response, "200 OK", "ok\n")

    return app


def _respond(
    start_response: StartResponse, status: str, text: str | bytes, content_type: str = "text/plain; charset=utf-8"
) -> list[bytes]:
    payload = text.encode() if isinstance(text, str) else text
    start_response(
        status,
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(payload))),
            ("Cache-Control", "no-store"),
        ],
    )
    return [payload]


class _Server(ThreadingWSGIServer):
    """prometheus_client's threading WSGI server, without the resolver call HTTPServer makes on bind."""

    def server_bind(self) -> None:
        # HTTPServer.server_bind would ask the resolver for our FQDN (socket.getfqdn): slow, and not needed
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)
        self.setup_environ()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # instead of a traceback on stderr; a client that hung up early is no news
        if not isinstance(sys.exc_info()[1], ConnectionError):
            log.warning("metrics_request_failed", client=str(client_address), exc_info=True)


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Quiet(WSGIRequestHandler):
    timeout = 10  # seconds a client may take to send its request

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: no access log on stderr


class MetricsServer:
    """HTTP on a loopback address in a daemon thread: GET /metrics -> the exposition; GET /healthz -> 200
    "ok", or 503 with one line per problem health() returns (500 if health() raises). Anything else 404."""

    def __init__(self, metrics: Metrics, host: str, port: int, health: Callable[[], list[str]]) -> None:
        self.host = loopback_host(host)  # ValueError for anything not loopback, before anything is bound
        if not 0 <= port < 65536:
            raise ValueError(f"metrics: port {port} is out of range")
        self.port = port  # 0: a free port, the real one once started
        self.metrics = metrics
        self.health = health
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        """Bind (an OSError if the port is taken) and serve in a daemon thread."""
        if self._server is not None:
            raise RuntimeError("metrics server already started")
        server_class = _Server6 if ":" in self.host else _Server
        server = make_server(self.host, self.port, _app(self.metrics, self.health), server_class, _Quiet)
        self.port = int(server.server_address[1])
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.5}, name="metrics-http", daemon=True
        )
        self._thread.start()
        log.info("metrics_listening", url=self.url)

    def stop(self) -> None:
        """Stop serving and close the socket; safe to call twice, or without start()."""
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> MetricsServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
