"""The shape of rules.yaml, described once: hit_policy and rows of id, description, when and actions.

`when` is built from the facts registry (core/facts.py) and an action from the actions registry
(core/model.py ACTIONS), so a new fact or action needs no edit here. The loader validates RulesFile
(validation.py maps every error to file:line: key) and `emailrouter schema rules` prints its JSON Schema.
What one file cannot say stays in the loader, hand-written with its wording: whether a value of a
fact, a unit or a template exists, row ids used twice, the last row's conditions, shadowed rows.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import ConfigDict, Field, PlainValidator, ValidationInfo, WithJsonSchema, create_model, model_validator
from pydantic_core import PydanticCustomError

from emailrouter.config.routing import UnitKey
from emailrouter.config.validation import Maybe, NotBlank, Section, cross, says
from emailrouter.config.yamlfile import describe
from emailrouter.core.decide import HIT_POLICIES, HitPolicy
from emailrouter.core.facts import FACTS, NAMES, Fact
from emailrouter.core.model import ACTION_KINDS, ACTIONS, RECORD_TAG, UNKNOWN_SEGMENT

TEMPLATE_NAME = r"^[-A-Za-z0-9_]+$"  # the <name> of templates/<name>.<lang>.txt
FACT_SEGMENT = rf"^(?:[A-Z]{{2,10}}|{re.escape(UNKNOWN_SEGMENT)})$"
RECORD_TAG_PATTERN = rf"^{RECORD_TAG}$"

TemplateName = Annotated[
    str,
    Field(
        pattern=TEMPLATE_NAME,
        json_schema_extra=says(TEMPLATE_NAME, "template names may use letters, digits, _ and - only"),
    ),
]
RecordTag = Annotated[
    str,
    Field(
        pattern=RECORD_TAG_PATTERN,
        json_schema_extra=says(
            RECORD_TAG_PATTERN, "a tag of lower-case letters, digits, _ and -, starting with a letter (at most 31)"
        ),
    ),
]
HIT_POLICY_HELP = {
    "first": "The first row whose conditions all hold decides (top to bottom).",
    "unique": "Like first, but `check` refuses two rows that can match the same mail.",
    "collect": "Every matching row adds its actions (in table order, no duplicates).",
}

# --------------------------------------------------------------------------- when: one field per fact

_JSON_TYPES: dict[type, str] = {str: "string", bool: "boolean"}
_EXPECTED: dict[type, str] = {str: "a string", bool: "true or false"}


def _value_schema(fact: Fact) -> dict[str, Any]:
    value: dict[str, Any] = {"type": _JSON_TYPES[fact.kind]}
    if fact.name == "segment":  # the codes come from emailrouter.yaml: a pattern instead of an enum
        value.update(
            {
                "pattern": FACT_SEGMENT,
                "patternErrorMessage": f"A segment code (2-10 capital letters) or {UNKNOWN_SEGMENT}.",
            }
        )
    elif fact.enum and fact.kind is str:
        value["enum"] = list(fact.values(()))
    return value


def _fact_values(fact: Fact) -> Any:
    """A value of the fact's type, or a non-empty list of them; which values exist is the loader's check."""

    def check(value: Any) -> tuple[Any, ...]:
        if value is None:
            raise PydanticCustomError("empty", "empty: give a value or leave the key out")
        values = list(value) if isinstance(value, list) else [value]
        if not values:
            raise PydanticCustomError("too_short", "must not be empty")
        for v in values:
            if type(v) is not fact.kind:
                raise PydanticCustomError("fact_type", f"expected {_EXPECTED[fact.kind]}, got {describe(v)}")
        return tuple(values)

    value = _value_schema(fact)
    schema = {
        "description": f"{fact.help} A list means any of these.",
        "anyOf": [value, {"type": "array", "minItems": 1, "items": value}],
    }
    return Annotated[tuple[Any, ...] | None, PlainValidator(check), WithJsonSchema(schema)]


class _When(Section):
    @model_validator(mode="before")
    @classmethod
    def _unknown_facts(cls, data: Any, info: ValidationInfo) -> Any:
        """An unknown fact, in today's words; it is left out, so the known ones are still checked."""
        if not isinstance(data, dict):
            return data
        for key in data:
            if key not in NAMES:
                cross(info, data, str(key), f"unknown fact (known: {', '.join(NAMES)})", at=str(key))
        return {k: v for k, v in data.items() if k in NAMES}


_FACT_FIELDS: dict[str, Any] = {fact.name: (_fact_values(fact), None) for fact in FACTS}
When = create_model(
    "When",
    __base__=_When,
    __doc__="Conditions; all must hold. A fact left out matches anything. The last row must have none"
    " (it catches every mail no other row took; `check` verifies it).",
    **_FACT_FIELDS,
)

# --------------------------------------------------------------------------- an action: one field per kind

_TARGETS: dict[str, Any] = {"reply": TemplateName, "record": RecordTag}


class _Action(Section):
    model_config = ConfigDict(
        json_schema_extra={
            "oneOf": [{"required": [kind]} for kind in ACTION_KINDS],
            "dependentRequired": {"unit": ["reply"]},
        }
    )

    @model_validator(mode="before")
    @classmethod
    def _one_kind(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise PydanticCustomError("action", f"expected a mapping such as 'forward: UNIT', got {describe(data)}")
        kinds = [k for k in ACTION_KINDS if k in data]
        if len(kinds) != 1:
            raise PydanticCustomError("action", f"give exactly one of {', '.join(ACTION_KINDS)}")
        if "unit" in data and kinds[0] != "reply":
            raise PydanticCustomError("action", f"unit goes with reply only, not with {kinds[0]}")
        return data


def _optional(kind: Any) -> Any:
    return Maybe[kind]  # type: ignore[misc]


_ACTION_FIELDS: dict[str, Any] = {
    action.type: (_optional(_TARGETS.get(action.type, UnitKey)), Field(default=None, description=action.help))
    for action in ACTIONS
}
_ACTION_FIELDS["unit"] = (
    _optional(UnitKey),
    Field(default=None, description="With reply: the unit (key) the reply tells the customer about."),
)
Action = create_model(
    "Action", __base__=_Action, __doc__=f"One action: exactly one of {', '.join(ACTION_KINDS)}.", **_ACTION_FIELDS
)


class Row(Section):
    """One row: when all its conditions hold, its actions run."""

    id: NotBlank = Field(description="Unique row id, shown in logs, forwards and `explain`.")
    description: Maybe[str] = Field(default="", description="What the row is for, for people.")
    when: Maybe[When] = None  # type: ignore[valid-type]
    actions: Annotated[list[Action], Field(min_length=1)] = Field(  # type: ignore[valid-type]
        description="What to do, in this order; at least one."
    )


class RulesFile(Section):
    """Rows of conditions and actions. The last row must have no conditions, so no mail is ever dropped."""

    hit_policy: HitPolicy = Field(
        default=HIT_POLICIES[0],
        description=f"How rows combine (default {HIT_POLICIES[0]}).",
        json_schema_extra={"enumDescriptions": [HIT_POLICY_HELP.get(p, "") for p in HIT_POLICIES]},
    )
    rows: Annotated[list[Row], Field(min_length=1)] = Field(description="The rows, top to bottom.")
