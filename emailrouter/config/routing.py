"""The routing part of emailrouter.yaml, described once: router, files, units, segmentation, trust, guard.

With models.DaemonSettings these make MainFile, the shape of the whole main file: the loader validates
it (validation.py maps every error to file:line: key) and `emailrouter schema config` prints its JSON
Schema. What one file cannot say stays in the loader, hand-written with its wording: whether a unit,
a segment or failures_to exists, a domain listed twice, trust switched off (a warning).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, ValidationInfo, WithJsonSchema, model_validator
from pydantic_core import PydanticCustomError

from emailrouter.config.models import DaemonSettings, Secret
from emailrouter.config.validation import Maybe, NotBlank, Section, cross, json_schema, says
from emailrouter.config.yamlfile import describe
from emailrouter.core.guard import DEFAULT_ROBOT_SENDERS, robot_sender_problem
from emailrouter.core.model import LANGUAGES
from emailrouter.core.trust import TrustPolicy

ADDRESS = (
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$"
)
UNIT_KEY = r"^[A-Za-z0-9_-]+$"
SEGMENT_CODE = r"^[A-Z]{2,10}$"
REFERENCE_PREFIX = r"^[A-Z0-9]{1,10}$"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
# directory.DomainTable.parse_pattern: strip, lower-case, optional "*.", then a domain of at most 253 characters
DOMAIN_PATTERN = rf"^\s*(?:\*\.)?(?=\S{{1,253}}\s*$)(?:{_LABEL}\.)*{_LABEL}\s*$"
ROBOT_SENDER = r"^[^\s@]+@[^\s@]+$"  # what an editor can check of guard.robot_sender_problem

Address = Annotated[str, Field(pattern=ADDRESS, json_schema_extra=says(ADDRESS, "not an email address:"))]
UnitKey = Annotated[
    str, Field(pattern=UNIT_KEY, json_schema_extra=says(UNIT_KEY, "unit keys may use letters, digits, _ and - only"))
]
SegmentCode = Annotated[
    str, Field(pattern=SEGMENT_CODE, json_schema_extra=says(SEGMENT_CODE, "segment codes are 2-10 capital letters"))
]
ReferencePrefix = Annotated[
    str,
    Field(pattern=REFERENCE_PREFIX, json_schema_extra=says(REFERENCE_PREFIX, "use 1-10 capital letters or digits")),
]
DomainPattern = Annotated[
    str, Field(pattern=DOMAIN_PATTERN, json_schema_extra=says(DOMAIN_PATTERN, "not a domain or *.domain:"))
]


def _robot_sender(pattern: str) -> str:
    if (problem := robot_sender_problem(pattern)) is not None:
        raise PydanticCustomError("robot_sender", problem)
    return pattern


RobotSender = Annotated[
    str,
    AfterValidator(_robot_sender),
    Field(
        json_schema_extra={
            "pattern": ROBOT_SENDER,
            "patternErrorMessage": "A glob on the whole address, local@domain, without spaces (monit@*, *icinga*@*).",
        }
    ),
]


class Router(Section):
    """Who the router is when it writes mail."""

    address: Address = Field(description="From: address of every forward, reply, escalation and ticket request.")
    name: NotBlank = Field(default="emailrouter", description="Display name next to that address.")
    reference_prefix: ReferencePrefix = Field(
        default="ER", description="Ticket references look like PREFIX-7K3QX2PA: 1-10 capital letters or digits."
    )
    failures_to: NotBlank = Field(
        default="human_queue",
        description="Key of the unit told when a message cannot be delivered or analysed; one of units.",
    )


class Files(Section):
    """The other files the router reads, relative to the folder of emailrouter.yaml."""

    rules: NotBlank = Field(description="The decision table (what to do), e.g. rules.yaml.")
    signals: NotBlank = Field(description="Words and weights for intent and hard complaints, e.g. signals.yaml.")
    directory: NotBlank = Field(description="The customer directory CSV (who is who), e.g. customers.csv.")
    templates: NotBlank = Field(description="Folder of reply templates, <name>.<language>.txt.")


class LanguageTexts(Section):
    """The text in each language."""

    id: str = Field(description="In Indonesian.")
    en: str = Field(description="In English.")

    def by_language(self) -> dict[str, str]:
        return {lang: str(getattr(self, lang)) for lang in LANGUAGES}


def _every_language(value: Any) -> Any:
    if isinstance(value, str):
        return {lang: value for lang in LANGUAGES}
    if not isinstance(value, dict):
        raise PydanticCustomError(
            "localised", f"expected a string or a mapping of {'/'.join(LANGUAGES)}, got {describe(value)}"
        )
    return value


_ONE_OR_EACH = " One text for every language, or one per language: id (Indonesian), en (English)."
Localised = Annotated[
    LanguageTexts,
    BeforeValidator(_every_language),
    WithJsonSchema({"anyOf": [{"type": "string"}, json_schema(LanguageTexts)]}),
]


WEBHOOK_URL = r"^https?://[^\s/?#]+[^\s]*$"
JSON_PATH = r"^[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*$"


class Webhook(Section):
    """An HTTP endpoint of the unit (a helpdesk's REST API, a chat group's bot or incoming webhook): forwards,
    escalations and tickets to the unit are POSTed there as JSON, exactly once, through the outbox."""

    url: Annotated[
        str, Field(pattern=WEBHOOK_URL, json_schema_extra=says(WEBHOOK_URL, "an http:// or https:// URL"))
    ] = Field(description="Where the JSON is POSTed. No secret in it: put a token in `token`.")
    body: NotBlank = Field(
        description="A Jinja2 template (sandboxed) that renders one JSON document; write every value with `tojson`"
        " ({{ subject | tojson }}). Variables: the ticket fields (reference, segment, customer_address, customer_name,"
        " intent, hard_complaint, subject, summary, rule, ...), action, unit.key, unit.name, language, headline."
    )
    token: Secret = Field(
        default=None,
        description="Sent as `Authorization: Bearer ...`: {env: NAME}, {file: PATH}, {credential: NAME} or"
        " {command: ...}, never the token itself.",
    )
    ticket_number: Maybe[
        Annotated[str, Field(pattern=JSON_PATH, json_schema_extra=says(JSON_PATH, "a dotted path: ticket.id"))]
    ] = Field(
        default=None,
        description="Where the endpoint's answer holds its own ticket number (a dotted path into the JSON, list"
        " positions as digits: data.0.id). The customer's acknowledgement then quotes that number.",
    )
    timeout: float = Field(default=10.0, gt=0, le=120, description="Seconds to wait for the endpoint's answer.")
    reply_waits: float = Field(
        default=900.0,
        ge=0,
        le=86400,
        description="With ticket_number: seconds a customer reply waits for the ticket call at most; after that,"
        " or after the call failed for good, the reply quotes our own reference.",
    )


class Unit(Section):
    """A unit: its address and/or HTTP endpoint, and what customers are told about it in replies."""

    address: Maybe[Address] = Field(
        default=None, description="Where mail for this unit is sent. Required unless the unit has a webhook."
    )
    webhook: Maybe[Webhook] = Field(default=None, description="An HTTP endpoint, instead of or as well as the address.")
    name: Localised = Field(description="The unit's name as customers see it." + _ONE_OR_EACH)
    next_steps: Localised = Field(description="What happens next, as told to customers." + _ONE_OR_EACH)

    @model_validator(mode="before")
    @classmethod
    def _address_or_webhook(cls, data: Any, info: ValidationInfo) -> Any:
        if isinstance(data, dict) and data.get("address") is None and data.get("webhook") is None:
            cross(info, data, "address", "missing: give an address, a webhook, or both")
        return data


class DomainRule(Section):
    """One domain rule."""

    match: DomainPattern = Field(
        description='"example.com" matches exactly that domain; "*.go.id" matches go.id and every subdomain.'
    )
    segment: SegmentCode = Field(description="The segment of senders from that domain; one of segments.")


class Segmentation(Section):
    """Which segment a sender belongs to. Precedence: directory address > account number in the mail
    > directory domain > a domain rule > the default."""

    segments: dict[SegmentCode, Annotated[Any, Field(description="What this segment is, for people.")]] = Field(
        min_length=1,
        description="The segment codes that exist (2-10 capital letters), each with a description for people."
        " Rules, directory rows and domain rules may only use these.",
    )
    default: SegmentCode = Field(description="The segment used when nothing else matched; one of segments.")
    domain_rules: list[DomainRule] = Field(
        default=[],
        description="Sender domains and their segment. The most specific match wins; a directory entry beats these.",
    )


_TRUST = TrustPolicy()


class Trust(Section):
    """Sender trust: a privileged segment claimed by a sender's address or domain only counts when OUR
    receiving mail server authenticated the sender (its Authentication-Results header)."""

    model_config = ConfigDict(
        json_schema_extra={
            "if": {"properties": {"enabled": {"const": False}}, "required": ["enabled"]},
            "else": {"required": ["authserv_id"]},
        }
    )

    enabled: bool = Field(
        default=_TRUST.enabled,
        description="false switches the check off; `check` then warns that anyone can forge a customer's From:"
        " address.",
    )
    authserv_id: Maybe[NotBlank] = Field(
        default=None,
        description="The authserv-id our receiving mail server writes in Authentication-Results; headers from other"
        " servers are ignored. Required unless enabled is false.",
    )
    require: Literal["dmarc", "aligned"] = Field(
        default=_TRUST.require,
        description="What counts as authenticated.",
        json_schema_extra={
            "enumDescriptions": ["dmarc=pass.", "dmarc=pass, or dkim/spf=pass aligned with the From: domain."]
        },
    )
    privileged: Maybe[list[SegmentCode]] = Field(
        default=None,
        description="Segments that need an authenticated sender (default: those of"
        f" {', '.join(sorted(_TRUST.privileged))} that exist).",
    )

    @model_validator(mode="before")
    @classmethod
    def _authserv_id(cls, data: Any, info: ValidationInfo) -> Any:
        if isinstance(data, dict) and data.get("enabled") is not False and "authserv_id" not in data:
            cross(info, data, "authserv_id", "missing")
        return data


class Guard(Section):
    """What else counts as automated mail (never answered automatically; the table decides what else
    happens to it). Headers, reports and system senders are recognised without configuration."""

    robot_senders: list[RobotSender] = Field(
        default=list(DEFAULT_ROBOT_SENDERS),
        description="Senders that are robots, such as monitoring systems: glob patterns on the whole address, any"
        " case (* any characters, ? one). The list replaces the default one.",
    )


class MainFile(DaemonSettings):
    """The main emailrouter file: identity, files, segmentation, trust, units and the daemon's settings.
    Paths are relative to this file's folder."""

    # trust is required too; the loader says how to fill it in (or switch it off)
    model_config = ConfigDict(json_schema_extra={"required": ["router", "files", "segmentation", "trust", "units"]})

    router: Router
    files: Files
    segmentation: Segmentation
    trust: Maybe[Trust] = None
    units: dict[UnitKey, Unit] = Field(
        description="The mailboxes the router sends to, by key (letters, digits, _ and -). Rules refer to units by"
        " key; `check` verifies every reference."
    )
    guard: Guard = Field(default_factory=Guard)
