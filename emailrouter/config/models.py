"""The daemon's part of emailrouter.yaml, described once: keys, types, defaults, limits and help texts.

The loader validates with these models (validation.py maps every error to file:line: key) and
`emailrouter schema config` prints their JSON Schema, so the two cannot drift. A model is the file as
written (`give_up_after_hours`, `at: "03:30"`); settings.py turns a valid one into the frozen objects
the service uses, whose defaults are these.

An optional key may be left out; written with nothing after it, it is an error, never "the default".
An explicit 0 means zero where zero makes sense and is refused where it does not (the descriptions
say which; README, "Configuration").

Just over 400 lines: one model per section of the daemon's part of the file, and the few validators they
share (secrets, loopback addresses); a split would only put the shared pieces in a third module.
"""

from __future__ import annotations

import ipaddress
from datetime import timedelta
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, ValidationInfo, model_validator
from pydantic_core import PydanticCustomError

from emailrouter.config.credentials import SECRET_KINDS, OAuth2Token
from emailrouter.config.validation import Maybe, NotBlank, Section, cross, says
from emailrouter.config.yamlfile import describe
from emailrouter.core.guard import LoopPolicy
from emailrouter.core.pipeline import MAX_MESSAGE_BYTES

Security = Literal["tls", "starttls", "plain"]
SECURITIES: tuple[Security, ...] = get_args(Security)
IMAP_PORTS = {"tls": 993, "starttls": 143, "plain": 143}
SMTP_PORTS = {"tls": 465, "starttls": 587, "plain": 25}
DATA_TIMEOUT = 600.0  # RFC 5321 4.5.3.2.6: a server may take 10 minutes to answer the final "."
SMTP_CONNECTIONS = 2  # connections to the relay that send at once, each reused
MIB = 1024 * 1024
_LOOP = LoopPolicy()
_HOUR = timedelta(hours=1)
_SECRET_FORMS = ", ".join("{" + kind + ": ...}" for kind in SECRET_KINDS)


# --------------------------------------------------------------------------- values

MAILBOX_NAME = r"^[A-Za-z0-9_.-]+$"
IMAP_KEYWORD = r'^[^\s()\]{%*"\\]+$'
HH_MM = r"^([01]?\d|2[0-3]):[0-5]\d$"
MAIL_ADDRESS = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"

MailboxName = Annotated[
    str, Field(pattern=MAILBOX_NAME, json_schema_extra=says(MAILBOX_NAME, "use letters, digits, _ . - only"))
]
ImapKeyword = Annotated[
    str,
    Field(
        pattern=IMAP_KEYWORD,
        json_schema_extra=says(IMAP_KEYWORD, 'not a valid IMAP keyword (no spaces or ( ) ] { % * " \\):'),
    ),
]
Clock = Annotated[str, Field(pattern=HH_MM, json_schema_extra=says(HH_MM, "expected HH:MM"))]
MailAddress = Annotated[str, Field(pattern=MAIL_ADDRESS, json_schema_extra=says(MAIL_ADDRESS, "not an email address:"))]
Port = Annotated[int, Field(ge=1, le=65535)]


def hours_and_minutes(at: str) -> tuple[int, int]:
    """ "07:05" -> (7, 5), for a value that matched HH_MM."""
    hour, minute = at.split(":")
    return int(hour), int(minute)


# --------------------------------------------------------------------------- secrets


class SecretRef(Section):
    """Where a secret comes from: exactly one of env, file, credential, command. Never the secret itself."""

    model_config = ConfigDict(json_schema_extra={"minProperties": 1, "maxProperties": 1})

    env: Maybe[NotBlank] = Field(default=None, description="The environment variable of this name.")
    file: Maybe[NotBlank] = Field(
        default=None, description="The first line of this file (relative paths: next to emailrouter.yaml)."
    )
    credential: Maybe[NotBlank] = Field(
        default=None, description="A systemd credential: $CREDENTIALS_DIRECTORY/NAME (LoadCredential=)."
    )
    command: Maybe[NotBlank] = Field(
        default=None, description="The first line this command prints (run without a shell, like mbsync's PassCmd)."
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> SecretRef:
        if len([kind for kind in SECRET_KINDS if getattr(self, kind) is not None]) != 1:
            raise PydanticCustomError("secret_kinds", f"give exactly one of {_SECRET_FORMS}")
        return self

    def kind_and_reference(self) -> tuple[str, str]:
        kind = next(kind for kind in SECRET_KINDS if getattr(self, kind) is not None)
        return kind, str(getattr(self, kind))


def _secret_given(value: Any) -> Any:
    if value is None:
        raise PydanticCustomError("secret_empty", f"empty: use {_SECRET_FORMS}")
    if isinstance(value, str):
        raise PydanticCustomError(
            "secret_literal",
            "never put a secret in YAML: use {env: NAME}, {file: PATH}, {credential: NAME} or {command: ...}",
        )
    if not isinstance(value, dict):
        raise PydanticCustomError("secret_type", f"expected one of {_SECRET_FORMS}, got {describe(value)}")
    return value


Secret = Annotated[SecretRef | None, BeforeValidator(_secret_given)]


# --------------------------------------------------------------------------- emailrouter.yaml, the daemon's part

_SECURITY_HELP: dict[str, Any] = {
    "enumDescriptions": [
        "Implicit TLS from the first byte (the default).",
        "Plain connection upgraded with STARTTLS (required, never silently plaintext).",
        "No encryption at all (emailrouter warns at start-up).",
    ]
}
_TIMEOUT = "Seconds to wait for the server before giving up (more than 0)."
_CA_FILE = "PEM file of CA certificates to verify the server with instead of the system's."


def _ports(ports: dict[str, int]) -> str:
    return "; the default depends on security: " + ", ".join(f"{security} {port}" for security, port in ports.items())


class OAuth2(Section):
    """Log in with an XOAUTH2 access token instead of a password."""

    token: Secret = Field(description="Where the access token comes from (usually a command that refreshes it).")
    lifetime: float = Field(
        default=OAuth2Token.lifetime,
        ge=0,
        description="Seconds a token is used before it is read again (0: read it for every login).",
    )


class Mailbox(Section):
    """An IMAP mailbox the daemon reads. Give password or oauth2."""

    model_config = ConfigDict(json_schema_extra={"anyOf": [{"required": ["password"]}, {"required": ["oauth2"]}]})

    name: MailboxName = Field(description="Short unique name, used in logs and metrics: letters, digits, _ . -")
    host: NotBlank = Field(description="IMAP server host name.")
    port: Maybe[Port] = Field(default=None, description="IMAP port" + _ports(IMAP_PORTS) + ".")
    security: Security = Field(
        default="tls", description="How the connection is protected.", json_schema_extra=_SECURITY_HELP
    )
    timeout: float = Field(default=30.0, gt=0, description=_TIMEOUT)
    ca_file: Maybe[NotBlank] = Field(default=None, description=_CA_FILE)
    username: NotBlank = Field(description="IMAP login name.")
    password: Secret = Field(
        default=None, description=f"IMAP password. Never the secret itself: one of {_SECRET_FORMS}."
    )
    oauth2: Maybe[OAuth2] = Field(
        default=None, description="Log in with an XOAUTH2 access token instead of a password."
    )
    folder: NotBlank = Field(default="INBOX", description="The folder to read.")
    processed: Literal["keyword", "move"] = Field(
        default="keyword",
        description="How a handled mail is marked on the server.",
        json_schema_extra={
            "enumDescriptions": ["Set the keyword (and \\Seen); the mail stays.", "Move it to move_to."]
        },
    )
    keyword: ImapKeyword = Field(
        default="$Routed", description="IMAP keyword set on handled mail with processed: keyword."
    )
    move_to: NotBlank = Field(default="Routed", description="Folder handled mail goes to with processed: move.")
    poll_interval: float = Field(default=60.0, gt=0, description="Seconds between checks for new mail (more than 0).")
    idle: bool = Field(True, description="Use IMAP IDLE to hear of new mail at once.")
    batch_size: int = Field(default=200, ge=1, description="Mails fetched per round (1 or more).")

    @model_validator(mode="before")
    @classmethod
    def _login(cls, data: Any, info: ValidationInfo) -> Any:
        if isinstance(data, dict) and "password" not in data and "oauth2" not in data:
            cross(info, data, "password", "missing: give password ({env|file|credential|command: ...}) or oauth2")
        return data


class Smtp(Section):
    """The relay every outgoing mail is handed to."""

    model_config = ConfigDict(json_schema_extra={"dependentRequired": {"username": ["password"]}})

    host: NotBlank = Field(description="SMTP server host name.")
    port: Maybe[Port] = Field(default=None, description="SMTP port" + _ports(SMTP_PORTS) + ".")
    security: Security = Field(
        default="tls", description="How the connection is protected.", json_schema_extra=_SECURITY_HELP
    )
    timeout: float = Field(default=30.0, gt=0, description=_TIMEOUT)
    data_timeout: float = Field(
        default=DATA_TIMEOUT,
        gt=0,
        description="Seconds to wait for the relay's answer to the end of a message (RFC 5321 allows 600);"
        " after that the send counts as uncertain: a customer reply is not sent again.",
    )
    ca_file: Maybe[NotBlank] = Field(default=None, description=_CA_FILE)
    username: Maybe[NotBlank] = Field(
        default=None, description="SMTP login name; leave out for a relay that needs no login."
    )
    password: Secret = Field(default=None, description=f"SMTP password; needed with username. One of {_SECRET_FORMS}.")
    connections: int = Field(
        default=SMTP_CONNECTIONS,
        ge=1,
        description="Connections to the relay that send at once, each reused (1: one message at a time).",
    )

    @model_validator(mode="before")
    @classmethod
    def _login(cls, data: Any, info: ValidationInfo) -> Any:
        if isinstance(data, dict) and data.get("username") and "password" not in data:
            cross(info, data, "password", "username given without a password", at="username")
        return data


POSTGRES_URL = r"^postgres(ql)?://"


class State(Section):
    """Where the daemon keeps what it has done: a SQLite file (the default), or a PostgreSQL database (url)."""

    path: Maybe[NotBlank] = Field(
        default=None,
        description="SQLite file; $VARIABLES are expanded, relative paths are next to emailrouter.yaml"
        " (default: $STATE_DIRECTORY/emailrouter.sqlite3, else /var/lib/emailrouter/ for a service or when it"
        " exists, else state/ next to emailrouter.yaml; `emailrouter check` prints where).",
    )
    url: Maybe[
        Annotated[
            str,
            Field(
                pattern=POSTGRES_URL,
                json_schema_extra=says(POSTGRES_URL, "expected a postgresql://[user@]host[:port]/dbname URL:"),
            ),
        ]
    ] = Field(
        default=None,
        description="A PostgreSQL database instead of the SQLite file: postgresql://[user@]host[:port]/dbname"
        " (libpq's URL, ?sslmode=verify-full and the like allowed; never a password: see password). Needs the"
        " [postgres] extra.",
    )
    password: Secret = Field(
        default=None,
        description=f"The PostgreSQL password, with url. One of {_SECRET_FORMS}; left out, libpq's own sources"
        " (~/.pgpass, $PGPASSFILE, $PGPASSWORD) are used.",
    )

    @model_validator(mode="before")
    @classmethod
    def _one_store(cls, data: Any, info: ValidationInfo) -> Any:
        if not isinstance(data, dict):
            return data
        url = data.get("url")
        if "url" in data and "path" in data:
            cross(info, data, "path", "give path (SQLite) or url (PostgreSQL), not both", at="url")
        if "password" in data and "url" not in data:
            cross(info, data, "password", "password given without a url (a SQLite file has none)", at="password")
        if isinstance(url, str) and _url_password(url):
            cross(
                info,
                data,
                "url",
                f"never put a password in the URL: give state.password, one of {_SECRET_FORMS}",
                at="url",
            )
        return data


def _url_password(url: str) -> bool:
    """Whether a libpq URL carries a password (in its user part, or as ?password=)."""
    rest = url.split("://", 1)[-1]
    authority = rest.split("/", 1)[0]
    query = rest.split("?", 1)[1] if "?" in rest else ""
    return ("@" in authority and ":" in authority.rsplit("@", 1)[0]) or any(
        part.split("=", 1)[0] == "password" for part in query.split("&")
    )


class Delivery(Section):
    """Retrying mail the relay did not take (4xx and connection errors), with exponential backoff."""

    retry_initial: float = Field(default=30.0, gt=0, description="Seconds before the first retry (more than 0).")
    retry_max: float = Field(
        default=3600.0, gt=0, description="Longest wait between retries, in seconds (more than 0)."
    )
    give_up_after_hours: float = Field(
        default=120.0,
        ge=0,
        description="After this many hours a temporary failure counts as permanent and router.failures_to is"
        " told (0: at the first temporary failure).",
    )
    outbox_interval: float = Field(default=30.0, gt=0, description="Seconds between looks at the outbox (more than 0).")


class Housekeeping(Section):
    """Daily clean-up of the state file."""

    keep_days: int = Field(
        default=90,
        ge=1,
        description="Days a handled mail's record is kept (1 or more: the records are also what duplicate"
        " detection and the reply limits remember).",
    )
    at: Clock = Field(default="03:30", description="Time of day (UTC), HH:MM.")


class LoopProtection(Section):
    """Limits on automatic replies, per customer address."""

    reply_window_hours: float = Field(
        default=_LOOP.reply_window / _HOUR,
        ge=0,
        description="The same reply template to the same address at most once in this many hours (0: no such limit).",
    )
    replies_per_hour: int = Field(
        default=_LOOP.replies_per_hour,
        ge=0,
        description="At most this many automatic replies to one address per hour (0: no automatic replies).",
    )
    bounce_block_days: float = Field(
        default=_LOOP.bounce_block / timedelta(days=1),
        ge=0,
        description="No automatic reply to an address whose earlier reply bounced within this many days (0: no block).",
    )


class Limits(Section):
    """Hostile input, and how loud the quarantine is."""

    max_message_mb: float = Field(
        default=MAX_MESSAGE_BYTES / MIB,
        gt=0,
        description="A larger mail is not analysed; it goes to router.failures_to with a note (more than 0).",
    )
    quarantine_notices_per_hour: int = Field(
        default=20,
        ge=0,
        description="At most this many notices an hour tell router.failures_to about quarantined mail; the rest"
        " are only logged and counted (0: none).",
    )


class Reports(Section):
    """The daily report mail: the same figures as `emailrouter stats`, for the previous day."""

    daily_to: MailAddress = Field(description="Who gets the report.")
    at: Clock = Field(default="07:00", description="Time of day (UTC), HH:MM.")


def _listen(value: str) -> str:
    try:
        parse_listen(value)
    except ValueError as exc:
        raise PydanticCustomError(
            "listen", f"{exc} (a loopback HOST:PORT such as 127.0.0.1:9464: the endpoint has no authentication)"
        ) from None
    return value


class Metrics(Section):
    """Prometheus metrics at /metrics and a health check at /healthz; off unless configured."""

    listen: Annotated[str, AfterValidator(_listen)] = Field(
        description="A loopback HOST:PORT such as 127.0.0.1:9464 or [::1]:9464 (the endpoint has no authentication)."
    )


class DaemonSettings(Section):
    """The daemon's part of emailrouter.yaml; all of it optional for `check` and `explain`."""

    mailboxes: list[Mailbox] = Field(default=[], description="IMAP mailboxes the daemon (`emailrouter run`) reads.")
    smtp: Maybe[Smtp] = None
    state: State = Field(default_factory=State)
    delivery: Delivery = Field(default_factory=Delivery)
    housekeeping: Housekeeping = Field(default_factory=Housekeeping)
    loop_protection: LoopProtection = Field(default_factory=LoopProtection)
    limits: Limits = Field(default_factory=Limits)
    reports: Maybe[Reports] = None
    metrics: Maybe[Metrics] = None
    workers: Maybe[int] = Field(
        default=None,
        ge=1,
        description="Worker processes that route a backlog (default: the number of cores; 1: the service routes"
        " every mail in its own process).",
    )

    @model_validator(mode="before")
    @classmethod
    def _unique_names(cls, data: Any, info: ValidationInfo) -> Any:
        mailboxes = data.get("mailboxes") if isinstance(data, dict) else None
        names: set[str] = set()
        for item in mailboxes if isinstance(mailboxes, list) else ():
            name = item.get("name") if isinstance(item, dict) else None
            if isinstance(name, str):
                if name in names:
                    cross(info, item, "name", f"mailbox name {name!r} is used twice", at="name")
                names.add(name)
        return data


# --------------------------------------------------------------------------- metrics.listen


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
