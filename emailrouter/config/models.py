"""The daemon's part of emailrouter.yaml, described once: keys, types, defaults, limits and help texts.

The loader validates with these models and `emailrouter schema config` prints their JSON Schema, so
the two cannot drift. A model is the file as written (`give_up_after_hours`, `at: "03:30"`);
settings.py turns a valid one into the frozen objects the service uses.

`validate()` maps each pydantic error's location to the line of that key (yamlfile's LineDict and
LineList remember lines) and reports `file:line: key: reason`, every error at once. Rules across keys
(password or oauth2, a relay login needs a password, mailbox names unique) are validators here too;
they run before the fields are checked and report through the validation context, so a bad field
never hides them (pydantic skips a model's "after" validators once a field failed).

An optional key may be left out; written with nothing after it, it is an error, never "the default".
Explicit zeros mean zero where zero makes sense and are refused where it does not (see README).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated, Any, Literal, TypeVar, get_args, get_origin

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

from emailrouter.config.credentials import SECRET_KINDS, OAuth2Token
from emailrouter.config.yamlfile import LineDict, LineList, Reader, describe
from emailrouter.core.guard import LoopPolicy
from emailrouter.core.pipeline import MAX_MESSAGE_BYTES

T = TypeVar("T")
Security = Literal["tls", "starttls", "plain"]
SECURITIES: tuple[Security, ...] = get_args(Security)
IMAP_PORTS = {"tls": 993, "starttls": 143, "plain": 143}
SMTP_PORTS = {"tls": 465, "starttls": 587, "plain": 25}
DATA_TIMEOUT = 600.0  # RFC 5321 4.5.3.2.6: a server may take 10 minutes to answer the final "."
MIB = 1024 * 1024
_LOOP = LoopPolicy()
_HOUR = timedelta(hours=1)
_SECRET_FORMS = ", ".join("{" + kind + ": ...}" for kind in SECRET_KINDS)
CROSS_CHECKS = "cross_checks"  # the validation context's list for problems across keys


class Section(BaseModel):
    """Strict: a number is not a string, `1` is not `true`, and an unknown key is an error."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, regex_engine="python-re")


# --------------------------------------------------------------------------- building blocks

PATTERN_MESSAGES: dict[str, str] = {}  # pattern -> what is wrong when a value does not match it


def _says(pattern: str, message: str) -> dict[str, Any]:
    """Register what the loader says when `pattern` does not match; editors get the same sentence."""
    PATTERN_MESSAGES[pattern] = message
    return {"patternErrorMessage": f"{message[0].upper()}{message[1:]}."}


NOT_BLANK = r"\S"
MAILBOX_NAME = r"^[A-Za-z0-9_.-]+$"
IMAP_KEYWORD = r'^[^\s()\]{%*"\\]+$'
HH_MM = r"^([01]?\d|2[0-3]):[0-5]\d$"
MAIL_ADDRESS = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"

NotBlank = Annotated[str, Field(pattern=NOT_BLANK, json_schema_extra=_says(NOT_BLANK, "must not be empty"))]
MailboxName = Annotated[
    str, Field(pattern=MAILBOX_NAME, json_schema_extra=_says(MAILBOX_NAME, "use letters, digits, _ . - only"))
]
ImapKeyword = Annotated[
    str,
    Field(
        pattern=IMAP_KEYWORD,
        json_schema_extra=_says(IMAP_KEYWORD, 'not a valid IMAP keyword (no spaces or ( ) ] { % * " \\)'),
    ),
]
Clock = Annotated[str, Field(pattern=HH_MM, json_schema_extra=_says(HH_MM, "expected HH:MM"))]
MailAddress = Annotated[str, Field(pattern=MAIL_ADDRESS, json_schema_extra=_says(MAIL_ADDRESS, "not an email address"))]
Port = Annotated[int, Field(ge=1, le=65535)]


def _given(value: Any) -> Any:
    if value is None:
        raise PydanticCustomError("empty", "empty: give a value or leave the key out")
    return value


# An optional key: left out, it is None (or its default); written empty, it is an error.
Maybe = Annotated[T | None, BeforeValidator(_given)]


def hours_and_minutes(at: str) -> tuple[int, int]:
    """ "07:05" -> (7, 5), for a value that matched HH_MM."""
    hour, minute = at.split(":")
    return int(hour), int(minute)


def _cross(info: ValidationInfo, node: Any, key: str, reason: str, *, at: str | None = None) -> None:
    """A problem across keys of `node`, named `key` and shown at the line of `at` (else of the node).
    Validated outside the loader (no context), the problem is an ordinary validation error."""
    found = info.context.get(CROSS_CHECKS) if isinstance(info.context, dict) else None
    if found is None:
        raise PydanticCustomError("cross_check", reason)
    found.append(CrossProblem(node, key, at, reason))


@dataclass(frozen=True)
class CrossProblem:
    node: Any
    key: str
    at: str | None
    reason: str


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
            _cross(info, data, "password", "missing: give password ({env|file|credential|command: ...}) or oauth2")
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

    @model_validator(mode="before")
    @classmethod
    def _login(cls, data: Any, info: ValidationInfo) -> Any:
        if isinstance(data, dict) and data.get("username") and "password" not in data:
            _cross(info, data, "password", "username given without a password", at="username")
        return data


class State(Section):
    """Where the daemon keeps what it has done."""

    path: Maybe[NotBlank] = Field(
        default=None,
        description="SQLite file; $VARIABLES are expanded, relative paths are next to emailrouter.yaml"
        " (default: $STATE_DIRECTORY/emailrouter.sqlite3).",
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

    @model_validator(mode="before")
    @classmethod
    def _unique_names(cls, data: Any, info: ValidationInfo) -> Any:
        mailboxes = data.get("mailboxes") if isinstance(data, dict) else None
        names: set[str] = set()
        for item in mailboxes if isinstance(mailboxes, list) else ():
            name = item.get("name") if isinstance(item, dict) else None
            if isinstance(name, str):
                if name in names:
                    _cross(info, item, "name", f"mailbox name {name!r} is used twice", at="name")
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


# --------------------------------------------------------------------------- validation: errors -> file:line: key

M = TypeVar("M", bound=BaseModel)

_EXPECTED = {
    "string_type": "a string",
    "int_type": "a whole number",
    "float_type": "a number",
    "bool_type": "true or false",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "dict_type": "a mapping",
    "list_type": "a list",
}


def validate(model: type[M], node: LineDict, r: Reader, path: str = "") -> M | None:
    """`node` as a `model`, or None with every problem recorded in `r` (file:line: key: reason)."""
    crossed: list[CrossProblem] = []
    result: M | None = None
    found = Reader(r.file, [])
    try:
        result = model.model_validate(node, context={CROSS_CHECKS: crossed})
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            loc = tuple(error["loc"])
            line_key = None if error["type"] == "missing" else loc[-1] if loc else None
            found.fail(_walk(node, loc[:-1]), line_key, _join(path, loc), _reason(model, error, loc))
    paths = dict(_paths(node, path)) if crossed else {}
    for problem in crossed:
        found.fail(problem.node, problem.at, f"{paths[id(problem.node)]}.{problem.key}".lstrip("."), problem.reason)
    r.problems.extend(sorted(found.problems, key=lambda p: p.line or 0))  # in the order of the file
    return result if not found.problems else None


def _reason(model: type[BaseModel], error: Any, loc: tuple[Any, ...]) -> str:
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    if kind == "missing":
        return "missing"
    if kind == "extra_forbidden":
        owner = _model_at(model, loc[:-1])
        return f"unknown key (expected one of: {', '.join(sorted(owner.model_fields) if owner else ())})"
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {describe(value)}"
    if kind == "literal_error":
        return f"expected one of {', '.join(_QUOTED.findall(ctx['expected']))}, got {value!r}"
    if kind == "string_pattern_mismatch":
        return f"{PATTERN_MESSAGES.get(ctx['pattern'], 'not allowed')}, got {value!r}"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal"):
        return _bound(kind, ctx)
    message = str(error["msg"])
    return message if kind in _OURS else message[:1].lower() + message[1:]


_QUOTED = re.compile(r"'([^']*)'")
_OURS = {"empty", "secret_empty", "secret_literal", "secret_type", "secret_kinds", "listen", "cross_check"}


def _bound(kind: str, ctx: dict[str, Any]) -> str:
    if kind == "greater_than_equal":
        return f"must be {ctx['ge']:g} or more"
    if kind == "greater_than":
        return f"must be more than {ctx['gt']:g}"
    return f"must be {ctx['le']:g} or less"


def _walk(node: Any, loc: tuple[Any, ...]) -> Any:
    for part in loc:
        inside = part in node if isinstance(node, dict) else isinstance(part, int) and part < len(node)
        if not isinstance(node, dict | list) or not inside:
            break
        node = node[part]
    return node


def _join(path: str, loc: tuple[Any, ...]) -> str:
    out = path
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _paths(node: Any, path: str) -> Iterator[tuple[int, str]]:
    """(id, key path) of every mapping and list under `node`."""
    yield id(node), path
    if isinstance(node, LineDict):
        for key, value in node.items():
            yield from _paths(value, f"{path}.{key}" if path else key)
    elif isinstance(node, LineList):
        for i, value in enumerate(node):
            yield from _paths(value, f"{path}[{i}]")


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class that describes the mapping at `loc`."""
    kind: Any = model
    for part in loc:
        kind = _bare(kind)
        if isinstance(part, int):
            kind = get_args(kind)[0] if get_origin(kind) is list else None
        elif isinstance(kind, type) and issubclass(kind, BaseModel) and part in kind.model_fields:
            kind = kind.model_fields[part].annotation
        else:
            return None
    kind = _bare(kind)
    return kind if isinstance(kind, type) and issubclass(kind, BaseModel) else None


def _bare(kind: Any) -> Any:
    """Without Annotated[...] and `| None`."""
    while True:
        if get_origin(kind) is Annotated:
            kind = get_args(kind)[0]
        elif (args := get_args(kind)) and type(None) in args and get_origin(kind) is not list:
            kind = next(a for a in args if a is not type(None))
        else:
            return kind


# --------------------------------------------------------------------------- JSON Schema


class _Generator(GenerateJsonSchema):
    def nullable_schema(self, schema: core_schema.NullableSchema) -> JsonSchemaValue:
        """An optional key may be left out, never written as null."""
        return self.generate_inner(schema["schema"])


def json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON Schema (draft 2020-12), with definitions inlined and pydantic's titles left out."""
    raw = model.model_json_schema(schema_generator=_Generator)
    definitions = raw.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                node = {**definitions[node["$ref"].rsplit("/", 1)[1]], **{k: v for k, v in node.items() if k != "$ref"}}
            return {
                k: inline(v)
                for k, v in node.items()
                if not (k == "title" and isinstance(v, str)) and not (k == "default" and v is None)
            }
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    out: dict[str, Any] = inline(raw)
    return out
