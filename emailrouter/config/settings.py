"""The daemon's part of emailrouter.yaml as the frozen objects the service uses.

Its shape (keys, types, defaults, limits, help) is models.py's; this module turns a validated
DaemonSettings into these objects, and their defaults are the models' (one source for each).
Secrets are only referenced here (see credentials.py); they are read when a connection is made.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Literal

from emailrouter.config import models
from emailrouter.config.credentials import OAuth2Token, Secret
from emailrouter.config.models import (
    DATA_TIMEOUT,
    IMAP_PORTS,
    MIB,
    SECURITIES,
    SMTP_CONNECTIONS,
    SMTP_PORTS,
    DaemonSettings,
    SecretRef,
    Security,
    hours_and_minutes,
    loopback_host,
    parse_listen,
)
from emailrouter.core.guard import LoopPolicy
from emailrouter.core.pipeline import MAX_MESSAGE_BYTES

__all__ = [
    "IMAP_PORTS",
    "SECURITIES",
    "SMTP_PORTS",
    "STATE_FILE",
    "DeliveryConfig",
    "Endpoint",
    "HousekeepingConfig",
    "MailboxConfig",
    "ReportConfig",
    "Settings",
    "SmtpConfig",
    "StateLocation",
    "loopback_host",
    "parse_listen",
    "settings_of",
    "state_location",
]

STATE_FILE = "emailrouter.sqlite3"
SERVICE_STATE_DIRECTORY = Path("/var/lib/emailrouter")  # the unit's StateDirectory=emailrouter

_DELIVERY, _HOUSEKEEPING, _LIMITS = models.Delivery(), models.Housekeeping(), models.Limits()


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    security: Security
    timeout: float
    ca_file: Path | None

    @property
    def plaintext(self) -> bool:
        return self.security == "plain"


@dataclass(frozen=True)
class MailboxConfig:
    name: str
    endpoint: Endpoint
    username: str
    password: Secret | None
    oauth2: OAuth2Token | None
    folder: str
    processed: Literal["keyword", "move"]
    keyword: str
    move_to: str
    poll_interval: float
    idle: bool
    batch_size: int

    @property
    def account(self) -> str:
        """Identity of the account in the state store: the same mailbox under another name is the same."""
        return f"{self.username}@{self.endpoint.host}:{self.endpoint.port}"


@dataclass(frozen=True)
class SmtpConfig:
    endpoint: Endpoint
    username: str | None
    password: Secret | None
    data_timeout: float = DATA_TIMEOUT  # seconds to wait for the answer to the final "." before it is uncertain
    connections: int = SMTP_CONNECTIONS  # connections that send at once (service/smtp.py's SmtpPool)


@dataclass(frozen=True)
class DeliveryConfig:
    retry_initial: float = _DELIVERY.retry_initial
    retry_max: float = _DELIVERY.retry_max
    give_up_after: float = _DELIVERY.give_up_after_hours * 3600  # seconds; then a temporary failure is permanent
    outbox_interval: float = _DELIVERY.outbox_interval


@dataclass(frozen=True)
class HousekeepingConfig:
    keep_days: int = _HOUSEKEEPING.keep_days
    hour: int = hours_and_minutes(_HOUSEKEEPING.at)[0]
    minute: int = hours_and_minutes(_HOUSEKEEPING.at)[1]


@dataclass(frozen=True)
class ReportConfig:
    """The daily report mail: the same figures as `emailrouter stats` for the previous day."""

    to: str
    hour: int
    minute: int


@dataclass(frozen=True)
class StateLocation:
    """Where the state store is, and which step of the rule (see `state_location`) chose it."""

    path: Path
    reason: str


@dataclass(frozen=True)
class Settings:
    mailboxes: tuple[MailboxConfig, ...]
    smtp: SmtpConfig | None
    state_path: Path
    delivery: DeliveryConfig
    housekeeping: HousekeepingConfig
    loop: LoopPolicy = field(default_factory=LoopPolicy)
    max_message_bytes: int = MAX_MESSAGE_BYTES
    report: ReportConfig | None = None
    metrics_listen: tuple[str, int] | None = None
    # notices to the failure unit about quarantined mail; the rest are logged
    quarantine_notices_per_hour: int = _LIMITS.quarantine_notices_per_hour
    state_reason: str = "given"  # which step of `state_location`'s rule chose state_path

    workers: int = 1  # processes that route a backlog (1: the service's own)

    # a PostgreSQL database instead of the SQLite file at state_path (which is then unused), and its password
    state_url: str | None = None
    state_password: Secret | None = None

    def plaintext_warnings(self) -> list[str]:
        out = [
            f"mailbox {m.name}: IMAP without TLS to {m.endpoint.host}" for m in self.mailboxes if m.endpoint.plaintext
        ]
        if self.smtp is not None and self.smtp.endpoint.plaintext:
            out.append(f"SMTP without TLS to {self.smtp.endpoint.host}")
        return out


def settings_of(model: DaemonSettings | None, base: Path) -> Settings:
    """The daemon's settings from the validated main file (relative paths from `base`); the defaults for
    None (a file with problems, which is never used)."""
    return _settings(model if model is not None else DaemonSettings(), base)


def secret_of(ref: SecretRef | None, base: Path) -> Secret | None:
    """The credential source a validated {env|file|credential|command: ...} names (relative to `base`)."""
    if ref is None:
        return None
    kind, reference = ref.kind_and_reference()
    return Secret(kind, reference, base)  # type: ignore[arg-type]  # SecretRef's fields are SECRET_KINDS


def _endpoint(m: models.Mailbox | models.Smtp, ports: dict[str, int], base: Path) -> Endpoint:
    port = m.port if m.port is not None else ports[m.security]
    return Endpoint(m.host, port, m.security, m.timeout, base / m.ca_file if m.ca_file is not None else None)


def _mailbox(m: models.Mailbox, base: Path) -> MailboxConfig:
    token = secret_of(m.oauth2.token, base) if m.oauth2 is not None else None
    return MailboxConfig(
        name=m.name,
        endpoint=_endpoint(m, IMAP_PORTS, base),
        username=m.username,
        password=secret_of(m.password, base),
        oauth2=OAuth2Token(token, m.oauth2.lifetime) if m.oauth2 is not None and token is not None else None,
        folder=m.folder,
        processed=m.processed,
        keyword=m.keyword,
        move_to=m.move_to,
        poll_interval=m.poll_interval,
        idle=m.idle,
        batch_size=m.batch_size,
    )


def state_location(configured: str | None, base: Path) -> StateLocation:
    """The state store's file: ONE rule for the daemon and every command that reads its state (stats,
    show, quarantine, the daily report), so a shell finds what the service wrote.

    1. `state.path` in emailrouter.yaml ($VARIABLES expanded from the process's environment; a relative
       path is next to the file);
    2. else $STATE_DIRECTORY/emailrouter.sqlite3 (systemd sets it for StateDirectory=; the first of a
       colon-separated list);
    3. else, run as a service ($INVOCATION_ID is set: systemd sets it for every process of a unit),
       /var/lib/emailrouter/emailrouter.sqlite3;
    4. else (a shell): /var/lib/emailrouter/emailrouter.sqlite3 if /var/lib/emailrouter exists (the
       service's state directory: `stats` run by hand reads what the service wrote), otherwise
       state/emailrouter.sqlite3 in the config's folder (a trial or a clone keeps its state with its config).
    """
    env = os.environ
    service_directory = SERVICE_STATE_DIRECTORY
    if configured is not None:
        path = Path(os.path.expandvars(configured))
        return StateLocation(path if path.is_absolute() else base / path, "state.path in the config")
    if directory := env.get("STATE_DIRECTORY", "").split(":")[0]:
        return StateLocation(Path(directory) / STATE_FILE, "$STATE_DIRECTORY, set by systemd's StateDirectory=")
    if env.get("INVOCATION_ID"):
        reason = "the service default: $INVOCATION_ID is set (run by systemd), $STATE_DIRECTORY is not"
        return StateLocation(service_directory / STATE_FILE, reason)
    if os.path.lexists(service_directory):  # a link too (DynamicUser=): unreadable is said when it is opened
        return StateLocation(service_directory / STATE_FILE, f"{service_directory} exists: the service's folder")
    return StateLocation(
        base / "state" / STATE_FILE,
        f"the default next to the config: no state.path, no $STATE_DIRECTORY, not a service, no {service_directory}",
    )


def _settings(m: DaemonSettings, base: Path) -> Settings:
    smtp = None
    if m.smtp is not None:
        smtp = SmtpConfig(
            _endpoint(m.smtp, SMTP_PORTS, base),
            m.smtp.username,
            secret_of(m.smtp.password, base),
            m.smtp.data_timeout,
            m.smtp.connections,
        )
    d, h, lp = m.delivery, m.housekeeping, m.loop_protection
    state = state_location(m.state.path, base)
    return Settings(
        mailboxes=tuple(_mailbox(mailbox, base) for mailbox in m.mailboxes),
        smtp=smtp,
        state_path=state.path,
        delivery=DeliveryConfig(d.retry_initial, d.retry_max, d.give_up_after_hours * 3600, d.outbox_interval),
        housekeeping=HousekeepingConfig(h.keep_days, *hours_and_minutes(h.at)),
        loop=LoopPolicy(
            timedelta(hours=lp.reply_window_hours), lp.replies_per_hour, timedelta(days=lp.bounce_block_days)
        ),
        max_message_bytes=int(m.limits.max_message_mb * MIB),
        report=ReportConfig(m.reports.daily_to, *hours_and_minutes(m.reports.at)) if m.reports is not None else None,
        metrics_listen=parse_listen(m.metrics.listen) if m.metrics is not None else None,
        quarantine_notices_per_hour=m.limits.quarantine_notices_per_hour,
        state_reason=state.reason,
        workers=m.workers if m.workers is not None else default_workers(),
        state_url=os.path.expandvars(m.state.url) if m.state.url is not None else None,
        state_password=secret_of(m.state.password, base),
    )


def default_workers() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
