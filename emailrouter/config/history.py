"""A sender's memory written by hand: what `explain --history FILE` and a rule test's `history:` describe.

The daemon remembers, per sender, the earlier mail (for the history signals such as `repeated_contact`),
the auto-replies it sent and when an address bounced one (for the reply limits). A history file says the
same in YAML (or JSON), with times given as an age or as a moment:

    replies:                     # auto-replies sent earlier
      - {template: education, ago: 10m}
      - {template: ticket_ack, at: 2026-01-01T08:30:00+07:00, address: other@example.com}
    contacts:                    # the sender's earlier mail, with its intent
      - {intent: fault, ago: 2d}
    bounced:                     # when an auto-reply of ours to the address bounced
      - {ago: 3d}

`address` defaults to the mail's sender; `ago` is a number with s, m, h or d (`90m`, `2h`, `3d`) before
the moment the mail is decided at (now for `explain`, 2026-01-01 09:00 UTC for rule tests); `at` is an
ISO 8601 time with a time zone. Every error names file, line and key (validation.py).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field, ValidationInfo, model_validator
from pydantic_core import PydanticCustomError

from emailrouter.config.validation import Maybe, NotBlank, Section, cross, says, validate
from emailrouter.config.yamlfile import LineDict, Reader, describe, load_yaml
from emailrouter.core.classify import Contact
from emailrouter.core.errors import Problem
from emailrouter.core.guard import LoopPolicy
from emailrouter.core.model import Intent
from emailrouter.core.pipeline import Memory

AGE = r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$"
_AGE = re.compile(AGE)
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def _age(value: Any) -> Any:
    if isinstance(value, int | float) and not isinstance(value, bool):  # `ago: 10`: ten what?
        raise PydanticCustomError("age", "give the unit too: 10m, 10h or 10d, not {given}", {"given": value})
    return value


Age = Annotated[
    str,
    BeforeValidator(_age),
    Field(
        pattern=AGE,
        description="how long before the mail: a number with s, m, h or d (90m, 2h, 3d)",
        json_schema_extra=says(AGE, "expected an age such as 90m, 2h or 3d, got:"),
    ),
]
EMAIL = r"^[^\s@<>]+@[^\s@<>]+$"
Address = Annotated[str, Field(pattern=EMAIL, json_schema_extra=says(EMAIL, "not an email address:"))]


def _moment(value: Any) -> Any:
    """A YAML timestamp arrives as a datetime, a JSON one as a string: both become a datetime."""
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.strip())
        except ValueError:
            raise PydanticCustomError(
                "moment", "expected an ISO 8601 time such as 2026-01-01T08:30:00+07:00, got {given}", {"given": value}
            ) from None
    if isinstance(value, date) and not isinstance(value, datetime):
        raise PydanticCustomError("moment", "a date without a time: write 2026-01-01T08:30:00+07:00")
    if not isinstance(value, datetime):
        raise PydanticCustomError("moment", "expected an ISO 8601 time, got {given}", {"given": describe(value)})
    return value


def _zoned(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise PydanticCustomError("moment", "give the time zone too: ...T08:30:00+07:00 or ...T01:30:00Z")
    return value


Moment = Annotated[datetime, BeforeValidator(_moment), AfterValidator(_zoned)]


class When(Section):
    """One moment: `ago` or `at`, exactly one."""

    ago: Maybe[Age] = None
    at: Maybe[Moment] = None

    @model_validator(mode="before")
    @classmethod
    def _one_time(cls, data: Any, info: ValidationInfo) -> Any:
        if isinstance(data, dict) and ("ago" in data) == ("at" in data):
            both = "ago" in data
            cross(info, data, "ago", "give ago or at, not both" if both else "missing: give ago (2h) or at (a time)")
        return data

    def moment(self, now: datetime) -> datetime:
        if self.at is not None:
            return self.at
        match = _AGE.match(self.ago or "")
        assert match is not None  # the pattern was checked
        return now - timedelta(**{_UNITS[match[2]]: float(match[1])})


class EarlierReply(When):
    """An auto-reply sent earlier."""

    template: NotBlank
    address: Maybe[Address] = Field(default=None, description="who got it (default: the mail's sender)")


class EarlierContact(When):
    """An earlier mail from the sender, for the history signals."""

    intent: Intent


class Bounce(When):
    """When an auto-reply of ours to the address bounced."""

    address: Maybe[Address] = Field(default=None, description="the address (default: the mail's sender)")


class HistoryFile(Section):
    """What the router remembers about a sender, as of the mail."""

    replies: list[EarlierReply] = Field(default_factory=list)
    contacts: list[EarlierContact] = Field(default_factory=list)
    bounced: list[Bounce] = Field(default_factory=list)

    def memory(self, sender: str | None, now: datetime, loop: LoopPolicy) -> Memory:
        """The snapshot `route` takes for a mail from `sender` decided at `now`, under these reply limits. An
        entry without `address` is about the sender (and about nobody when the mail has no usable sender)."""

        def who(address: str | None) -> str | None:
            return (address or sender or "").lower() or None

        replies = [(a, r.template, r.moment(now)) for r in self.replies if (a := who(r.address))]
        bounced: dict[str, datetime] = {}
        for b in self.bounced:
            if (a := who(b.address)) is not None:
                bounced[a] = max(bounced.get(a, b.moment(now)), b.moment(now))
        contacts = sorted((Contact(c.moment(now), c.intent) for c in self.contacts), key=lambda c: c.at)
        return Memory(tuple(contacts) if sender else (), tuple(replies), bounced, loop)


def read_history(node: Any, r: Reader, path: str = "", parent: LineDict | None = None) -> HistoryFile | None:
    """`node` (a rule test's `history:`, found under `parent`; or a whole history file) as a HistoryFile, or None
    with every problem recorded in `r`."""
    if node is None and parent is None:
        return HistoryFile()  # an empty file: nothing remembered
    if not isinstance(node, LineDict):
        where, key = (parent, path.rpartition(".")[2]) if parent is not None else (node, None)
        r.fail(where, key, path, f"expected a mapping with replies, contacts, bounced; got {describe(node)}")
        return None
    return validate(HistoryFile, node, r, path)


def load_history(path: Path) -> tuple[HistoryFile | None, Sequence[Problem]]:
    """A history file (YAML or JSON), or None and the problems (file:line: key: reason)."""
    shown = str(path)
    problems: list[Problem] = []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        return None, [Problem(shown, None, "", f"cannot read: {reason}")]
    doc = load_yaml(text, shown, problems)
    if problems:
        return None, problems
    history = read_history(doc, Reader(shown, problems))
    return (history if not problems else None), problems
