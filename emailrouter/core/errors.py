"""One exception root, split by whether retrying can help."""

from __future__ import annotations

from dataclasses import dataclass


class EmailRouterError(Exception):
    """Root of every error emailrouter raises on purpose."""


class PermanentError(EmailRouterError):
    """Retrying the same thing will fail the same way (bad config, 5xx, bad credentials)."""


class TransientError(EmailRouterError):
    """Retrying later may succeed (connection lost, 4xx, timeouts)."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config file, located as precisely as we can."""

    file: str
    line: int | None
    key: str
    reason: str
    warning: bool = False

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        kind = "warning: " if self.warning else ""
        return f"{where}: {self.key}: {kind}{self.reason}" if self.key else f"{where}: {kind}{self.reason}"


class ConfigError(PermanentError):
    """The configuration cannot be used. Carries every problem found, each with file, line and key."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = [p for p in problems if not p.warning]
        super().__init__("\n".join(str(p) for p in self.problems))


class ComposeError(PermanentError):
    """An outgoing message could not be built safely (for example a header would carry CR/LF)."""


class TemporaryDeliveryError(TransientError):
    """The relay said 4xx for this message (an endpoint: 5xx or 429): the outbox keeps it and retries it later,
    not before `retry_after` seconds when the endpoint said so (Retry-After)."""

    def __init__(self, message: str, code: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.retry_after = retry_after


class PermanentDeliveryError(PermanentError):
    """The relay said 5xx for this message (at RCPT or DATA): retrying the same message will not help."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class RelayError(TransientError, ConnectionError):
    """The relay cannot be used at all right now (authentication, a missing or unreadable credential, TLS or
    certificate failure, connection refused, a timeout before DATA): nothing is wrong with any message, so the
    whole outbox waits and no message's state changes."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class EndpointError(TransientError, ConnectionError):
    """A unit's HTTP endpoint cannot be used right now (connection refused or dropped, no answer in time, its
    token unreadable): nothing is wrong with the request, so that endpoint's calls wait (the same call, with the
    same Idempotency-Key, goes again) and the rest of the outbox goes on."""


class UncertainDeliveryError(TransientError):
    """The whole message went out, but the relay's answer to the final "." was lost or late: it may have been
    delivered. A customer reply is never sent again; a forward may be, with the same Message-ID."""


class StateError(TransientError, OSError):
    """The state store cannot be written (disk full, read-only, I/O error): nothing new is taken until it can."""


class MailboxError(TransientError):
    """An IMAP mailbox could not be reached or read; the poller reconnects with backoff."""
