"""JSON Schemas (draft 2020-12) for the YAML files ops edit, for validation-as-you-type in editors.

`emailrouter schema config|rules|signals` prints them; yaml-language-server (VS Code's YAML extension and
others) then flags mistakes while the file is being written. The main file's and the decision table's
schemas are generated from the models the loader validates with (routing.MainFile, which holds
models.DaemonSettings; rules.RulesFile), so they cannot drift; so are signals.yaml's normalise,
language, model and combine sections (signals.py). Its intent and hard_complaint sections (the signal
lists) are still written out here, with every enumeration taken from the code's own constants;
tests/test_schema.py holds them to what the loader accepts.

A schema sees one file at a time: whether a unit key, segment code or template name exists, whether a
name is used twice, and whether the last row has no conditions is `emailrouter check`'s job.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from emailrouter.config import routing, rules, signals
from emailrouter.config.loader import _MATCHERS
from emailrouter.config.validation import NOT_BLANK, json_schema
from emailrouter.core.model import INTENTS

Schema = dict[str, Any]

DIALECT = "https://json-schema.org/draft/2020-12/schema"
BASE_ID = "https://emailrouter.invalid/schema/"
CHECK = (
    "Cross-references (unit keys, segment codes, template names, unique names) are not checked here:"
    " run `emailrouter check`."
)

# Patterns the loader applies to signals.yaml, in a form both Python and ECMA-262 (the editors' regex
# dialect) read the same way.
ONE_WORD = r"^\s*\S+\s*$"

# what editors say when a pattern does not match (yaml-language-server's patternErrorMessage)
PATTERN_MESSAGES = {
    NOT_BLANK: "Must not be empty.",
    ONE_WORD: "Keywords are single words; put word sequences under phrases.",
}

# signals that may combine in one entry (config._signal); every other matcher stands alone
COMBINABLE_MATCHERS = ("keywords", "phrases", "near")
HARD_ONLY_MATCHERS = ("history",)


SIGNAL_INTENTS = INTENTS[:3]  # what a signal may count toward; "unknown" is what is left when none wins


# --------------------------------------------------------------------------- building blocks


def _scalar(kind: str, description: str, **extra: Any) -> Schema:
    return {"description": description, "type": kind, **extra}


def _pattern(pattern: str) -> Schema:
    out: Schema = {"pattern": pattern}
    if (message := PATTERN_MESSAGES.get(pattern)) is not None:
        out["patternErrorMessage"] = message
    return out


def _string(description: str, pattern: str | None = None, **extra: Any) -> Schema:
    return _scalar("string", description, **(_pattern(pattern) if pattern else {}), **extra)


def _number(description: str, **extra: Any) -> Schema:
    return _scalar("number", description, **extra)


def _integer(description: str, **extra: Any) -> Schema:
    return _scalar("integer", description, **extra)


def _boolean(description: str, **extra: Any) -> Schema:
    return _scalar("boolean", description, **extra)


def _enum(values: Sequence[str], description: str, value_help: Mapping[str, str] | None = None, **extra: Any) -> Schema:
    schema = _string(description, enum=list(values), **extra)
    if value_help:
        schema["enumDescriptions"] = [value_help.get(v, "") for v in values]  # shown next to completions (VS Code)
    return schema


def _list(description: str, items: Schema, **extra: Any) -> Schema:
    return {"description": description, "type": "array", "items": items, **extra}


def _object(description: str, properties: Schema, required: Iterable[str] = (), **extra: Any) -> Schema:
    schema: Schema = {"description": description, "type": "object", "properties": properties}
    if required := list(required):
        schema["required"] = required
    schema["additionalProperties"] = False
    schema.update(extra)
    return schema


def _document(name: str, title: str, description: str, properties: Schema, required: Iterable[str]) -> Schema:
    body = _object(f"{description} {CHECK}", properties, required)
    return {"$schema": DIALECT, "$id": f"{BASE_ID}{name}.json", "title": title, **body}


# --------------------------------------------------------------------------- emailrouter.yaml


def _document_of(model: Any, name: str, title: str) -> dict[str, Any]:
    """A whole file's schema generated from the loader's own model of it."""
    schema = json_schema(model)
    schema["description"] = f"{schema['description']} {CHECK}"
    return {"$schema": DIALECT, "$id": f"{BASE_ID}{name}.json", "title": title, **schema}


def main_schema() -> dict[str, Any]:
    """The schema of the main file, emailrouter.yaml: generated from routing.MainFile, the loader's own model."""
    return _document_of(routing.MainFile, "config", "emailrouter configuration (emailrouter.yaml)")


# --------------------------------------------------------------------------- rules.yaml


def rules_schema() -> dict[str, Any]:
    """The schema of the decision table, rules.yaml: generated from rules.RulesFile, the loader's own model."""
    return _document_of(rules.RulesFile, "rules", "emailrouter decision table (rules.yaml)")


# --------------------------------------------------------------------------- signals.yaml

_MATCHER_HELP = {
    "keywords": "Whole words, as written, in normal form or by root (a root matches its affixed forms);"
    " e-mail addresses and links are taken out of the text first. May be combined with phrases and near.",
    "phrases": "Word sequences in one clause, any spacing; as written, in normal form or by roots."
    " May be combined with keywords and near.",
    "near": "A word of each list (any form) at most `within` words apart, in one sentence."
    " May be combined with keywords and phrases.",
    "regex": "Python regular expressions, run on the lower-cased text as written (write them in lower case).",
    "caps_ratio": "Shouting: fires when at least this share of the letters are capitals (more than 0, at most 1).",
    "exclamation_run": 'Fires on a run of at least this many "!".',
    "history": "Earlier mails from the same sender (hard complaint signals only; `explain` has no history).",
}


def _matcher(kind: str) -> Schema:
    description = _MATCHER_HELP.get(kind, kind)
    if kind in ("keywords", "phrases", "regex"):
        item = {
            "keywords": _string("A single word.", pattern=ONE_WORD),
            "phrases": _string("A phrase.", pattern=NOT_BLANK),
        }.get(kind, _string("A regular expression.", pattern=NOT_BLANK))
        return _list(description, item, minItems=1)
    if kind == "caps_ratio":
        return _number(description, exclusiveMinimum=0, maximum=1)
    if kind == "exclamation_run":
        return _integer(description, minimum=1)
    if kind == "near":
        words = _list("Single words.", _string("A single word.", pattern=ONE_WORD), minItems=1)
        return _object(
            description,
            {
                "words": words,
                "with": words,
                "within": _integer("At most this many words apart (default 3).", minimum=1, default=3),
                "ordered": _boolean("The word of `with` must come after the word of `words`.", default=False),
            },
            required=["words", "with"],
        )
    if kind == "history":
        return _object(
            description,
            {
                "previous": _integer("At least this many earlier mails (1 or more) ...", minimum=1),
                "within_days": _number("... within this many days (more than 0) ...", exclusiveMinimum=0),
                "same_intent": _boolean("... about the same intent only (default true).", default=True),
            },
            required=["previous", "within_days"],
        )
    return {"description": description}


def _signal(intent: bool) -> Schema:
    matchers = [m for m in _MATCHERS if not intent or m not in HARD_ONLY_MATCHERS]
    properties: Schema = {"name": _string("Unique name (across all signals); agents see it in forwards.")}
    if intent:
        properties["intent"] = _enum(SIGNAL_INTENTS, "The intent this signal counts toward.")
    properties["weight"] = _number("Added to the score when the signal fires (at most once per mail).")
    for kind in matchers:
        properties[kind] = _matcher(kind)
    properties["min_letters"] = _integer("With caps_ratio: only texts of at least this many letters count.")
    properties["in_question"] = _number(
        "The weight when every match stands in a question (keywords, phrases and near signals only)."
    )
    names = _list("Signal names (above this one) or groups.", _string("A signal name or a group."), minItems=1)
    properties["requires"] = {**names, "description": "Fires only when one of these fired too."}
    properties["unless"] = {**names, "description": "Fires only when none of these fired."}
    properties["roots"] = _boolean(
        "false: keywords, phrases and near words match as written or in normal form only, not by root.",
        default=True,
    )
    combinable = [m for m in matchers if m in COMBINABLE_MATCHERS]
    alone = [m for m in matchers if m not in COMBINABLE_MATCHERS]
    return _object(
        f"One signal: name, weight and exactly one way to match ({', '.join(matchers)});"
        f" only {' and '.join(combinable)} may be combined.",
        properties,
        required=["name", "intent", "weight"] if intent else ["name", "weight"],
        oneOf=[{"anyOf": [{"required": [m]} for m in combinable]}, *({"required": [m]} for m in alone)],
    )


def signals_schema() -> dict[str, Any]:
    """The schema of the classification signals, signals.yaml."""
    return _document(
        "signals",
        "emailrouter classification signals (signals.yaml)",
        "Words and weights that decide a mail's intent, whether it is a hard complaint, and its language."
        " Only the subject and what the customer wrote count, never quoted history.",
        {
            "normalise": json_schema(signals.Normalise),
            "intent": _object(
                f"Intent: {', '.join(SIGNAL_INTENTS)}. The best-scoring intent wins if it reaches threshold and"
                f" leads the runner-up by margin; otherwise the intent is {INTENTS[-1]}.",
                {
                    "threshold": _number("The score an intent needs."),
                    "margin": _number("How far the winner must lead the runner-up (default 0).", default=0),
                    "question": _object(
                        'What makes a sentence a question besides a "?" (for signals with in_question).',
                        {
                            "keywords": _list("Single words.", _string("A single word.", pattern=ONE_WORD)),
                            "phrases": _list("Phrases.", _string("A phrase.", pattern=NOT_BLANK)),
                        },
                    ),
                    "signals": _list("The intent signals.", _signal(intent=True)),
                },
                required=["threshold", "signals"],
            ),
            "hard_complaint": _object(
                "Hard complaint: yes when the weights of the signals that fired add up to threshold or more.",
                {
                    "threshold": _number("The score that makes a hard complaint."),
                    "signals": _list("The hard complaint signals.", _signal(intent=False)),
                },
                required=["threshold", "signals"],
            ),
            "language": json_schema(signals.LanguageSection),
            "model": json_schema(signals.ModelFile),
            "combine": json_schema(signals.Combine),
        },
        required=["intent", "hard_complaint", "language"],
    )


SCHEMAS: dict[str, Callable[[], dict[str, Any]]] = {
    "config": main_schema,
    "rules": rules_schema,
    "signals": signals_schema,
}
