"""Plain, typed data passed between the stages: parse -> segment -> classify -> decide -> compose."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage, Message
from typing import Any, ClassVar, Literal

Intent = Literal["fault", "information", "request", "unknown"]
INTENTS: tuple[Intent, ...] = ("fault", "information", "request", "unknown")
Language = Literal["id", "en"]
LANGUAGES: tuple[Language, ...] = ("id", "en")
UNKNOWN_SEGMENT = "unknown"
SEGMENT_SOURCES = ("address", "account", "directory-domain", "domain-rule", "default", "none")


# --------------------------------------------------------------------------- parse


@dataclass(frozen=True)
class Sender:
    """The customer's address, parsed strictly."""

    address: str  # lower-cased domain, local part as written
    name: str

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2]


@dataclass(frozen=True)
class Attachment:
    filename: str | None
    content_type: str
    size: int


@dataclass(frozen=True)
class MessageView:
    """What the router knows about one incoming mail. Built by `parse.parse`, never raises."""

    raw: bytes = field(repr=False)
    message_id: str | None
    subject: str
    sender: Sender | None
    sender_problem: str | None  # why there is no sender, if there is none
    date: str | None
    in_reply_to: str | None
    references: tuple[str, ...]
    text: str  # what the customer wrote
    quoted: str  # quoted history, kept apart: it never counts as a signal
    html_only: bool
    attachments: tuple[Attachment, ...]
    defects: tuple[str, ...]
    headers: tuple[tuple[str, str], ...] = field(repr=False)  # (lower-case name, decoded value)
    message: Message | None = field(default=None, repr=False, compare=False)

    @property
    def size(self) -> int:
        return len(self.raw)

    def header_values(self, name: str) -> list[str]:
        name = name.lower()
        return [value for key, value in self.headers if key == name]


# --------------------------------------------------------------------------- segment


@dataclass(frozen=True)
class Segmentation:
    segment: str
    source: str  # one of SEGMENT_SOURCES
    detail: str  # human-readable: what matched, and where it is configured
    customer_name: str | None = None
    accounts: tuple[str, ...] = ()  # account numbers from the directory found in the mail


# --------------------------------------------------------------------------- classify


@dataclass(frozen=True)
class SignalHit:
    name: str
    group: str  # fault | information | request | hard
    weight: float
    matched: tuple[str, ...]


@dataclass(frozen=True)
class ModelOutput:
    """What the learned text model said about a mail, how it combined with the signals, and why."""

    model: str  # the model file's short checksum: which model decided
    probabilities: dict[str, float]  # the model's own, over the four intents
    hard_probability: float  # the model's own
    combined: dict[str, float]  # over the four intents, after adding the signals' evidence
    confidence: float  # combined probability of the most probable intent
    threshold: float  # under this confidence the intent is unknown (combine.threshold)
    hard_confidence: float  # combined probability of a hard complaint
    hard_threshold: float  # combine.hard_threshold
    intent_features: tuple[tuple[str, float], ...]  # (feature, contribution) toward the verdict's intent
    hard_features: tuple[tuple[str, float], ...]  # (feature, contribution) toward a hard complaint


@dataclass(frozen=True)
class Classification:
    intent: Intent
    intent_scores: dict[str, float]
    hard: bool
    hard_score: float
    hard_threshold: float
    signals: tuple[SignalHit, ...]
    language: Language
    model: ModelOutput | None = None  # None: the signals alone decided (no `model:` in signals.yaml)
    # the text as the signals read it, worked out only when asked (`explain`): see `normalised`
    reading: Callable[[], str] | None = field(default=None, repr=False, compare=False)

    @property
    def hard_signals(self) -> tuple[SignalHit, ...]:
        return tuple(s for s in self.signals if s.group == "hard")

    @property
    def normalised(self) -> str:
        """The text as the signals read it: normal form, each root in brackets where it differs."""
        return self.reading() if self.reading is not None else ""


# --------------------------------------------------------------------------- decide


@dataclass(frozen=True)
class Forward:
    """Send the mail to a unit, original attached, Reply-To the customer."""

    type: ClassVar[str] = "forward"  # its key in rules.yaml
    help: ClassVar[str] = "Send the mail to this unit (key), original attached, Reply-To the customer."
    unit: str

    def describe(self) -> str:
        return f"forward to {self.unit}"


@dataclass(frozen=True)
class Reply:
    """Answer the customer from a template; `unit` is the unit the reply tells them about."""

    type: ClassVar[str] = "reply"  # its key in rules.yaml
    help: ClassVar[str] = "An automatic answer to the customer from templates/NAME.<language>.txt."
    template: str
    unit: str | None = None

    def describe(self) -> str:
        about = f" (about {self.unit})" if self.unit else ""
        return f"reply with template {self.template}{about}"


@dataclass(frozen=True)
class Escalate:
    """Escalation notice to a coordination unit: why it is hard, original attached."""

    type: ClassVar[str] = "escalate"  # its key in rules.yaml
    help: ClassVar[str] = "Escalation notice (why it is hard) to this unit (key), original attached."
    unit: str

    def describe(self) -> str:
        return f"escalate to {self.unit}"


@dataclass(frozen=True)
class OpenTicket:
    """A structured trouble-ticket request to a ticketing mailbox."""

    type: ClassVar[str] = "ticket"  # its key in rules.yaml
    help: ClassVar[str] = "A trouble-ticket request with a reference number, to this unit (key)."
    unit: str

    def describe(self) -> str:
        return f"open a ticket via {self.unit}"


@dataclass(frozen=True)
class Record:
    """Send nothing: record the mail with this outcome (and flag it on the server as $Automated etc.)."""

    type: ClassVar[str] = "record"  # its key in rules.yaml
    help: ClassVar[str] = "Send nothing: record the mail with this tag and flag it on the server."
    tag: str

    def describe(self) -> str:
        return f"record as {self.tag}, send nothing"


Action = Forward | Reply | Escalate | OpenTicket | Record
# The registry of actions, in the order rules.yaml documents them: the loader, the schema and `check`
# take their kinds and help from here; compose and explain handle each with an exhaustive match.
ACTIONS: tuple[type[Action], ...] = (Forward, Escalate, OpenTicket, Reply, Record)
ACTION_KINDS: tuple[str, ...] = tuple(a.type for a in ACTIONS)
RECORD_TAG = r"[a-z][a-z0-9_-]{0,30}"  # what `record:` takes: lower-case letters, digits, _ and -


@dataclass(frozen=True)
class Decision:
    rule: str  # id of the first row that matched
    rules: tuple[str, ...]  # every row that contributed (more than one only with hit policy collect)
    actions: tuple[Action, ...]
    reference: str  # ticket / reference number quoted to the customer


# --------------------------------------------------------------------------- compose


@dataclass(frozen=True)
class WebhookCall:
    """One composed HTTP POST to a unit's endpoint (core/webhook.py writes it down for the outbox)."""

    url: str
    body: bytes  # the JSON document, rendered from the unit's webhook template and checked to be JSON
    idempotency_key: str  # ids.idempotency_key of the call's identity: the endpoint sees a repeat as one


@dataclass(frozen=True)
class Outgoing:
    """One composed message, or webhook call, and the action it carries out."""

    action: Action
    message: EmailMessage | None = field(compare=False)  # None for a webhook call
    # what the headers say, kept as plain values: reading headers back means parsing them again
    to: tuple[str, ...] = ()  # for a webhook call: its URL
    subject: str = ""
    message_id: str = ""  # for a webhook call: its identity (ids.WEBHOOK kind), the outbox's key
    call: WebhookCall | None = field(default=None, compare=False)

    @property
    def unit(self) -> str | None:
        return self.action.unit if isinstance(self.action, (Forward, Escalate, OpenTicket)) else None

    def describe(self) -> dict[str, object]:
        described: dict[str, object] = {
            "type": self.action.type,
            "unit": self.unit,
            "to": list(self.to),
            "subject": self.subject,
            "message_id": self.message_id,
        }
        if self.call is not None:
            described["via"] = "webhook"
            described["idempotency_key"] = self.call.idempotency_key
        return described


@dataclass(frozen=True)
class Suppressed:
    """An action the plan had but that will not be carried out, and why."""

    type: str  # reply | forward | escalate | ticket | all
    reason: str

    def describe(self) -> dict[str, str]:
        return {"type": self.type, "reason": self.reason}


@dataclass(frozen=True)
class RenderFailure:
    """A message the plan had whose template failed on this mail: a reply, or the webhook call of a forward,
    escalation or ticket (its JSON body). Not sent; the rest of the plan goes ahead, and the failure unit is
    told (`compose.compose_render_failure_notice`, with the customer's mail when the call was all the unit
    was to get)."""

    action: Reply | Forward | Escalate | OpenTicket
    template: str  # the reply template's name, or "UNIT webhook body"
    language: Language
    reason: str  # where and why: "config/templates/education.id.txt:3: list object has no element 0"
    message_id: str = ""  # the Message-ID the reply (or the call's identity) would have had; the notice's derives

    @property
    def type(self) -> str:
        return self.action.type

    @property
    def call(self) -> bool:
        """A webhook call, not a reply."""
        return not isinstance(self.action, Reply)

    def describe(self) -> dict[str, str]:
        return {
            "type": self.type,
            "template": self.template,
            "language": self.language,
            "reason": self.reason,
            "message_id": self.message_id,
        }


# --------------------------------------------------------------------------- config pieces


@dataclass(frozen=True)
class Webhook:
    """A unit's HTTP endpoint: forwards, escalations and tickets to the unit are POSTed there as JSON.

    `render` is the unit's sandboxed body template (config/loader.py compiles it); its secret (a bearer
    token) is no part of the core: the service reads it when it calls."""

    url: str
    render: Callable[[dict[str, Any]], str] = field(repr=False, compare=False)
    source: str = ""  # where the template is configured (file:line), for errors


@dataclass(frozen=True)
class Unit:
    """A unit the router sends to: a mailbox, an HTTP endpoint or both; its name and next steps are shown to
    customers."""

    key: str
    address: str  # "" when the unit is only an endpoint
    name: dict[str, str]  # language -> name
    next_steps: dict[str, str]  # language -> what happens next
    webhook: Webhook | None = None


@dataclass(frozen=True)
class RouterIdentity:
    address: str
    name: str
    reference_prefix: str
    failures_to: str = "human_queue"  # unit told when a send fails permanently

    @property
    def domain(self) -> str:
        return self.address.rpartition("@")[2]
