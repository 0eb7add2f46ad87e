"""The daemon's part of emailrouter.yaml: mailboxes, the SMTP relay, state, delivery and housekeeping.

Validated like the rest of the config (every problem names file, line and key). Secrets are only
referenced here (see credentials.py); they are read when a connection is made.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from emailrouter.config.credentials import SECRET_KINDS, OAuth2Token, Secret
from emailrouter.config.yamlfile import LineDict, LineList, Reader, describe
from emailrouter.core.guard import LoopPolicy
from emailrouter.core.pipeline import MAX_MESSAGE_BYTES

Security = Literal["tls", "starttls", "plain"]
SECURITIES: tuple[Security, ...] = ("tls", "starttls", "plain")
IMAP_PORTS = {"tls": 993, "starttls": 143, "plain": 143}
SMTP_PORTS = {"tls": 465, "starttls": 587, "plain": 25}


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


DATA_TIMEOUT = 600.0  # RFC 5321 4.5.3.2.6: a server may take 10 minutes to answer the final "."


@dataclass(frozen=True)
class SmtpConfig:
    endpoint: Endpoint
    username: str | None
    password: Secret | None
    data_timeout: float = DATA_TIMEOUT  # seconds to wait for the answer to the final "." before it is uncertain


@dataclass(frozen=True)
class DeliveryConfig:
    retry_initial: float = 30.0
    retry_max: float = 3600.0
    give_up_after: float = 5 * 24 * 3600.0  # then a temporary failure counts as permanent
    outbox_interval: float = 30.0


@dataclass(frozen=True)
class HousekeepingConfig:
    keep_days: int = 90
    hour: int = 3
    minute: int = 30


@dataclass(frozen=True)
class ReportConfig:
    """The daily report mail: the same figures as `emailrouter stats` for the previous day."""

    to: str
    hour: int
    minute: int


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
    quarantine_notices_per_hour: int = 20  # notices to the failure unit about quarantined mail; the rest are logged

    def plaintext_warnings(self) -> list[str]:
        out = [
            f"mailbox {m.name}: IMAP without TLS to {m.endpoint.host}" for m in self.mailboxes if m.endpoint.plaintext
        ]
        if self.smtp is not None and self.smtp.endpoint.plaintext:
            out.append(f"SMTP without TLS to {self.smtp.endpoint.host}")
        return out


def _secret(r: Reader, node: LineDict, key: str, path: str, base: Path) -> Secret | None:
    value = node.get(key)
    full = f"{path}.{key}"
    if value is None:
        if key in node:  # `password:` with nothing after it
            r.fail(node, key, full, f"empty: use {', '.join('{' + k + ': ...}' for k in SECRET_KINDS)}")
        return None
    if isinstance(value, str):
        r.fail(
            node,
            key,
            full,
            "never put a secret in YAML: use {env: NAME}, {file: PATH}, {credential: NAME} or {command: ...}",
        )
        return None
    if not isinstance(value, LineDict) or len(value) != 1 or next(iter(value)) not in SECRET_KINDS:
        r.fail(
            node,
            key,
            full,
            f"expected one of {', '.join('{' + k + ': ...}' for k in SECRET_KINDS)}, got {describe(value)}",
        )
        return None
    kind, ref = next(iter(value.items()))
    if not isinstance(ref, str) or not ref.strip():
        r.fail(value, kind, f"{full}.{kind}", "expected a non-empty string")
        return None
    return Secret(kind, ref, base)  # type: ignore[arg-type]  # kind was checked against SECRET_KINDS


def _endpoint(r: Reader, node: LineDict, path: str, ports: dict[str, int], base: Path) -> Endpoint | None:
    host = r.get(node, "host", path, str)
    security = r.get(node, "security", path, str, required=False) or "tls"
    if security not in SECURITIES:
        r.fail(node, "security", f"{path}.security", f"expected one of {', '.join(SECURITIES)}, got {security!r}")
        return None
    port = r.get(node, "port", path, int, required=False) or ports[security]
    timeout = r.get(node, "timeout", path, float, required=False) or 30.0
    ca = r.get(node, "ca_file", path, str, required=False)
    ca_file = (base / ca) if ca else None
    if host is None:
        return None
    return Endpoint(host, port, security, timeout, ca_file)


def _mailbox(r: Reader, item: Any, path: str, base: Path, names: set[str]) -> MailboxConfig | None:
    if not isinstance(item, LineDict):
        r.fail(item, None, path, f"expected a mapping, got {describe(item)}")
        return None
    r.known_keys(
        item,
        path,
        {
            "name",
            "host",
            "port",
            "security",
            "timeout",
            "ca_file",
            "username",
            "password",
            "oauth2",
            "folder",
            "processed",
            "keyword",
            "move_to",
            "poll_interval",
            "idle",
            "batch_size",
        },
    )
    name = r.get(item, "name", path, str)
    if name is not None:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            r.fail(item, "name", f"{path}.name", "use letters, digits, _ . - only")
        if name in names:
            r.fail(item, "name", f"{path}.name", f"mailbox name {name!r} is used twice")
        names.add(name)
    endpoint = _endpoint(r, item, path, IMAP_PORTS, base)
    username = r.get(item, "username", path, str)
    password = _secret(r, item, "password", path, base)
    oauth2 = None
    if (node := r.get(item, "oauth2", path, LineDict, required=False)) is not None:
        r.known_keys(node, f"{path}.oauth2", {"token", "lifetime"})
        token = _secret(r, node, "token", f"{path}.oauth2", base)
        if token is None and "token" not in node:
            r.fail(node, None, f"{path}.oauth2.token", "missing")
        lifetime = r.get(node, "lifetime", f"{path}.oauth2", float, required=False) or 3000.0
        oauth2 = OAuth2Token(token, lifetime) if token else None
    if "password" not in item and "oauth2" not in item:
        r.fail(item, None, f"{path}.password", "missing: give password ({env|file|credential|command: ...}) or oauth2")
    processed = r.get(item, "processed", path, str, required=False) or "keyword"
    if processed not in ("keyword", "move"):
        r.fail(item, "processed", f"{path}.processed", f"expected keyword or move, got {processed!r}")
    keyword = r.get(item, "keyword", path, str, required=False) or "$Routed"
    if not re.fullmatch(r"[^\s()\]{%*\"\\]+", keyword) or keyword.startswith("\\"):
        r.fail(item, "keyword", f"{path}.keyword", f"not a valid IMAP keyword: {keyword!r}")
    move_to = r.get(item, "move_to", path, str, required=False) or "Routed"
    poll = r.get(item, "poll_interval", path, float, required=False) or 60.0
    idle = r.get(item, "idle", path, bool, required=False)
    batch = r.get(item, "batch_size", path, int, required=False) or 200
    if batch < 1:
        r.fail(item, "batch_size", f"{path}.batch_size", "must be 1 or more")
    if name is None or endpoint is None or username is None:
        return None
    return MailboxConfig(
        name=name,
        endpoint=endpoint,
        username=username,
        password=password,
        oauth2=oauth2,
        folder=r.get(item, "folder", path, str, required=False) or "INBOX",
        processed="move" if processed == "move" else "keyword",
        keyword=keyword,
        move_to=move_to,
        poll_interval=poll,
        idle=True if idle is None else idle,
        batch_size=batch,
    )


def read_settings(r: Reader, doc: LineDict, base: Path) -> Settings:
    """The daemon's settings; everything is optional for `check` and `explain`."""
    mailboxes: list[MailboxConfig] = []
    names: set[str] = set()
    node = r.get(doc, "mailboxes", "", LineList, required=False) or LineList()
    for _, path, item in r.items(node, "mailboxes"):
        if (mailbox := _mailbox(r, item, path, base, names)) is not None:
            mailboxes.append(mailbox)
    smtp = None
    if (snode := r.get(doc, "smtp", "", LineDict, required=False)) is not None:
        r.known_keys(
            snode, "smtp", {"host", "port", "security", "timeout", "data_timeout", "ca_file", "username", "password"}
        )
        endpoint = _endpoint(r, snode, "smtp", SMTP_PORTS, base)
        username = r.get(snode, "username", "smtp", str, required=False)
        password = _secret(r, snode, "password", "smtp", base)
        if username and password is None and "password" not in snode:
            r.fail(snode, "username", "smtp.password", "username given without a password")
        data_timeout = r.get(snode, "data_timeout", "smtp", float, required=False)
        if data_timeout is not None and data_timeout <= 0:
            r.fail(snode, "data_timeout", "smtp.data_timeout", f"must be more than 0 seconds, got {data_timeout:g}")
            data_timeout = None
        smtp = SmtpConfig(endpoint, username, password, data_timeout or DATA_TIMEOUT) if endpoint else None
    state_node = r.get(doc, "state", "", LineDict, required=False) or LineDict()
    r.known_keys(state_node, "state", {"path"})
    state = r.get(state_node, "path", "state", str, required=False)
    if state:
        state_path = Path(os.path.expandvars(state))
        state_path = state_path if state_path.is_absolute() else base / state_path
    else:
        state_path = Path(os.environ.get("STATE_DIRECTORY", str(base))) / "emailrouter.sqlite3"
    dnode = r.get(doc, "delivery", "", LineDict, required=False) or LineDict()
    r.known_keys(dnode, "delivery", {"retry_initial", "retry_max", "give_up_after_hours", "outbox_interval"})
    default = DeliveryConfig()
    give_up = r.get(dnode, "give_up_after_hours", "delivery", float, required=False)
    delivery = DeliveryConfig(
        retry_initial=r.get(dnode, "retry_initial", "delivery", float, required=False) or default.retry_initial,
        retry_max=r.get(dnode, "retry_max", "delivery", float, required=False) or default.retry_max,
        give_up_after=give_up * 3600 if give_up else default.give_up_after,
        outbox_interval=r.get(dnode, "outbox_interval", "delivery", float, required=False) or default.outbox_interval,
    )
    hnode = r.get(doc, "housekeeping", "", LineDict, required=False) or LineDict()
    r.known_keys(hnode, "housekeeping", {"keep_days", "at"})
    keep = r.get(hnode, "keep_days", "housekeeping", int, required=False) or 90
    at = r.get(hnode, "at", "housekeeping", str, required=False) or "03:30"
    m = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", at)
    if not m:
        r.fail(hnode, "at", "housekeeping.at", f"expected HH:MM, got {at!r}")
    housekeeping = HousekeepingConfig(keep, int(m[1]) if m else 3, int(m[2]) if m else 30)
    lnode = r.get(doc, "loop_protection", "", LineDict, required=False) or LineDict()
    r.known_keys(lnode, "loop_protection", {"reply_window_hours", "replies_per_hour", "bounce_block_days"})
    lp = LoopPolicy()
    window = r.get(lnode, "reply_window_hours", "loop_protection", float, required=False)
    per_hour = r.get(lnode, "replies_per_hour", "loop_protection", int, required=False)
    block = r.get(lnode, "bounce_block_days", "loop_protection", float, required=False)
    loop = LoopPolicy(
        timedelta(hours=window) if window else lp.reply_window,
        per_hour if per_hour else lp.replies_per_hour,
        timedelta(days=block) if block else lp.bounce_block,
    )
    limits = r.get(doc, "limits", "", LineDict, required=False) or LineDict()
    r.known_keys(limits, "limits", {"max_message_mb", "quarantine_notices_per_hour"})
    max_mb = r.get(limits, "max_message_mb", "limits", float, required=False) or 25.0
    notices = r.get(limits, "quarantine_notices_per_hour", "limits", int, required=False)
    if notices is not None and notices < 0:
        r.fail(limits, "quarantine_notices_per_hour", "limits.quarantine_notices_per_hour", "must be 0 or more")
        notices = None
    report = None
    if (rnode := r.get(doc, "reports", "", LineDict, required=False)) is not None:
        r.known_keys(rnode, "reports", {"daily_to", "at"})
        to = r.get(rnode, "daily_to", "reports", str)
        when = r.get(rnode, "at", "reports", str, required=False) or "07:00"
        rm = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)", when)
        if not rm:
            r.fail(rnode, "at", "reports.at", f"expected HH:MM, got {when!r}")
        if to is not None and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", to):
            r.fail(rnode, "daily_to", "reports.daily_to", f"not an email address: {to!r}")
        elif to is not None and rm:
            report = ReportConfig(to, int(rm[1]), int(rm[2]))
    metrics = None
    if (mnode := r.get(doc, "metrics", "", LineDict, required=False)) is not None:
        r.known_keys(mnode, "metrics", {"listen"})
        listen = r.get(mnode, "listen", "metrics", str)
        if listen is not None:
            try:
                metrics = parse_listen(listen)
            except ValueError as exc:
                r.fail(
                    mnode,
                    "listen",
                    "metrics.listen",
                    f"{exc} (a loopback HOST:PORT such as 127.0.0.1:9464: the endpoint has no authentication)",
                )
    return Settings(
        tuple(mailboxes),
        smtp,
        state_path,
        delivery,
        housekeeping,
        loop,
        int(max_mb * 1024 * 1024),
        report,
        metrics,
        20 if notices is None else notices,
    )


def loopback_host(host: str) -> str:
    """The address to bind for `host`: an IPv4 address in 127.0.0.0/8, ::1, or "localhost" (127.0.0.1).
    Anything else is a ValueError: the endpoint has no authentication."""
    if host.lower() == "localhost":
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"metrics: {host!r} is not a loopback address (127.0.0.0/8, ::1 or localhost)") from None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        # ::ffff:127.0.0.1 is an IPv6 socket open to IPv4 peers; Python 3.13 counts it as loopback, 3.11 not
        raise ValueError(f"metrics: {host!r} is IPv4-mapped, not a loopback address: write 127.0.0.1 or ::1")
    if not address.is_loopback:
        raise ValueError(f"metrics: {host!r} is not a loopback address: the endpoint has no authentication")
    return str(address)


def parse_listen(value: str) -> tuple[str, int]:
    """A `listen:` setting, "127.0.0.1:9464", "localhost:9464" or "[::1]:9464", as (host, port); a
    ValueError (with a readable message) for anything else, a non-loopback host included."""
    host, sep, port_text = value.strip().rpartition(":")
    if not sep or not host:
        raise ValueError(f"metrics: listen {value!r} is not host:port, e.g. 127.0.0.1:9464")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"metrics: listen {value!r}: write an IPv6 address in brackets, e.g. [::1]:9464")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"metrics: listen {value!r}: the port must be a number from 1 to 65535")
    loopback_host(host)
    return host, int(port_text)
