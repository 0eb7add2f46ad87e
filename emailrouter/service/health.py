"""Backoff and health: what every mail needs (the relay, the state store, the failure unit) and each mailbox.

`backoff()` is the one exponential backoff of the service (dependencies, mailboxes, outbox retries).
A `Dependency` that goes down is waited for with backoff instead of failing mail, and says so (a log
event when it goes down and when it comes back, the dependency metric, /healthz, systemd STATUS).
`StateGate` is the state store as such a dependency: the outcome of a send that could not be written
is kept in memory and written first once the store takes writes again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import structlog

from emailrouter.core.errors import StateError
from emailrouter.service.metrics import Metrics

log = structlog.get_logger(__name__)

STATE_RETRY_MAX = 10.0  # seconds between tries of a state store that cannot be written (disk full)
DEPENDENCY_RETRY_MAX = 300.0  # seconds: the longest wait for the relay or a mailbox


def utcnow() -> datetime:
    return datetime.now(UTC)


def backoff(attempts: int, initial: float, maximum: float) -> float:
    """Exponential: initial, 2x, 4x ... capped at maximum (seconds)."""
    return float(min(maximum, initial * (2 ** max(0, attempts - 1))))


@dataclass
class MailboxHealth:
    last_success: float = 0.0  # time.monotonic() of the last successful poll
    failures: int = 0
    retry_at: float = 0.0

    def failed(self) -> float:
        """One more failure in a row: the seconds to wait before the next poll."""
        self.failures += 1
        delay = backoff(self.failures, 1.0, DEPENDENCY_RETRY_MAX)
        self.retry_at = time.monotonic() + delay
        return delay

    def succeeded(self) -> None:
        self.failures = 0
        self.last_success = time.monotonic()


@dataclass
class Dependency:
    """Something every mail needs (the relay, the state store, the failure unit): while it is down the router
    waits for it with backoff instead of failing mail, and says so (log, metric, /healthz, STATUS)."""

    name: str
    metrics: Metrics = field(default_factory=Metrics, repr=False)
    error: str | None = None  # None: working
    failures: int = 0
    retry_at: float = 0.0  # time.monotonic() before which it is not tried again

    @property
    def up(self) -> bool:
        return self.error is None

    def waiting(self) -> bool:
        return self.error is not None and time.monotonic() < self.retry_at

    def went_down(self, error: str, maximum: float = DEPENDENCY_RETRY_MAX) -> None:
        self.failures += 1
        delay = backoff(self.failures, 1.0, maximum)
        self.retry_at = time.monotonic() + delay
        if self.error is None:
            log.error(f"{self.name}_unavailable", error=error, retry_in=delay)
        else:
            log.info(f"{self.name}_still_unavailable", error=error, retry_in=delay, failures=self.failures)
        self.error = error
        self.metrics.dependency(self.name, False)

    def came_back(self) -> None:
        if self.error is not None:
            log.info(f"{self.name}_recovered", after_failures=self.failures)
            self.metrics.dependency(self.name, True)
        self.error, self.failures, self.retry_at = None, 0, 0.0

    def problem(self) -> str | None:
        """One line for /healthz, the watchdog and STATUS while it is down."""
        return None if self.error is None else f"{self.name}: {self.error}"


class StateGate:
    """The state store as a dependency of the poller and the outbox (one per router)."""

    def __init__(self, metrics: Metrics) -> None:
        self.dependency = Dependency("state", metrics)
        # outcomes of sends that happened but could not be written (state store full): written first next time
        self._unrecorded: list[Callable[[], None]] = []

    def failed(self, exc: StateError) -> None:
        self.dependency.went_down(str(exc), maximum=STATE_RETRY_MAX)

    def record(self, write: Callable[[], None]) -> None:
        """Write the outcome of a send; if the state store cannot take it now, keep it and write it first next time."""
        try:
            write()
        except StateError as exc:
            self._unrecorded.append(write)
            self.failed(exc)

    def usable(self) -> bool:
        """Write what could not be written before; False while the state store still refuses (or waits)."""
        if self.dependency.waiting():
            return False
        while self._unrecorded:
            try:
                self._unrecorded[0]()
            except StateError as exc:
                self.failed(exc)
                return False
            self._unrecorded.pop(0)
        return True
