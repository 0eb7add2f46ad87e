"""A recording, fault-injecting HTTP endpoint on 127.0.0.1 for the webhook tests (stdlib http.server in a thread).

It behaves like a helpdesk that honours `Idempotency-Key`: the first request with a key opens ticket
`HD-<n>` and answers 201 `{"ticket": {"id": "HD-<n>"}}`; a request with a key already seen answers the
same again and opens nothing. `landed` counts what was opened per key, `requests` every request.

Faults are scripted for the next requests, in order (`script("500", "429:3", "timeout", "drop", "400")`):
    "500", "503"   answer that status, open nothing
    "429:N"        answer 429 with Retry-After: N, open nothing
    "400", "422"   answer that status, open nothing (the request is bad)
    "timeout"      open the ticket, then answer only after `slow` seconds (the client has given up)
    "drop"         open the ticket, then close the connection without an answer
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any


@dataclass(frozen=True)
class Request:
    path: str
    headers: dict[str, str]
    body: bytes
    answered: str  # the status sent, "timeout" or "drop"

    def json(self) -> Any:
        return json.loads(self.body)


class WebhookServer:
    def __init__(self, slow: float = 3.0) -> None:
        self.slow = slow
        self.requests: list[Request] = []
        self.landed: Counter[str] = Counter()  # Idempotency-Key -> tickets opened (1 when all is well)
        self.tickets: dict[str, str] = {}  # Idempotency-Key -> ticket number
        self._faults: list[str] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                server._handle(self, body)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.host, self.port = "127.0.0.1", self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def script(self, *faults: str) -> None:
        with self._lock:
            self._faults.extend(faults)

    def _open(self, key: str) -> str:
        with self._lock:
            if key not in self.tickets:
                self.tickets[key] = f"HD-{len(self.tickets) + 1001}"
                self.landed[key] += 1
            return self.tickets[key]

    def _handle(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        with self._lock:
            fault = self._faults.pop(0) if self._faults else ""
        headers = {k.lower(): v for k, v in handler.headers.items()}
        key = headers.get("idempotency-key", "")
        answered = fault or "201"
        with self._lock:
            self.requests.append(Request(handler.path, headers, body, answered))
        if fault in ("timeout", "drop") or not fault:
            number = self._open(key)
            if fault == "drop":
                handler.close_connection = True
                handler.connection.close()
                return
            if fault == "timeout":
                time.sleep(self.slow)
            self._answer(handler, 201, {"ticket": {"id": number}})
            return
        status, _, wait = fault.partition(":")
        extra = {"Retry-After": wait} if wait else {}
        self._answer(handler, int(status), {"error": f"scripted {status}"}, extra)

    @staticmethod
    def _answer(handler: BaseHTTPRequestHandler, status: int, doc: Any, extra: dict[str, str] | None = None) -> None:
        data = json.dumps(doc).encode()
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            for name, value in (extra or {}).items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(data)
        except OSError:  # the client gave up (a scripted timeout)
            pass

    def __enter__(self) -> WebhookServer:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
