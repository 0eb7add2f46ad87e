"""The shape of signals.yaml, described once: normalise, intent and hard-complaint signals, language, model, combine.

The loader validates SignalsFile (validation.py maps every error to file:line: key) and `emailrouter
schema signals` prints its JSON Schema. Rules within one signal are model validators: exactly one way
to match (keywords, phrases and near may combine), history on hard signals only, in_question only where
matches stand at a place in the text. What one signal or section cannot say stays in the loader, with
its wording: names used twice, requires/unless naming a signal above or a group, regexes that compile,
the slang file and the stemmer being available, the model file, combine without a model (a warning).
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from emailrouter.config.validation import Maybe, NotBlank, Section, cross, says
from emailrouter.core.combine import CombineSettings
from emailrouter.core.model import INTENTS, LANGUAGES, Language
from emailrouter.core.normalise import STEMMERS, Stem
from emailrouter.core.normalise import Settings as NormaliseSettings

_COMBINE = CombineSettings()


def _probability(value: float) -> float:
    if not 0 <= value <= 1:
        raise PydanticCustomError("probability", "a probability: between 0 and 1")
    return value


def _power(value: float) -> float:
    if value <= 0:
        raise PydanticCustomError("power", "must be more than 0 (to use the signals alone, leave out model:)")
    return value


Probability = Annotated[float, AfterValidator(_probability), Field(json_schema_extra={"minimum": 0, "maximum": 1})]
Power = Annotated[float, AfterValidator(_power), Field(json_schema_extra={"exclusiveMinimum": 0})]
PerPoint = Annotated[float, Field(ge=0)]


class Combine(Section):
    """How the model's probabilities and the signals' scores combine."""

    model_config = ConfigDict(
        json_schema_extra={
            "description": "How the model's probabilities and the signals' scores combine (each point of signal"
            " weight multiplies the odds by e^weight)."
        }
    )

    signals_weight: PerPoint = Field(
        default=_COMBINE.signals_weight, description="Log-odds per point of intent signal weight (0 or more)."
    )
    model_weight: Power = Field(
        default=_COMBINE.model_weight, description="Power of the model's intent probabilities (more than 0)."
    )
    threshold: Probability = Field(
        default=_COMBINE.threshold, description="Under this combined confidence the intent is unknown."
    )
    hard_signals_weight: PerPoint = Field(
        default=_COMBINE.hard_signals_weight, description="Log-odds per point of hard-complaint signal weight."
    )
    hard_model_weight: Power = Field(
        default=_COMBINE.hard_model_weight, description="Power of the model's hard-complaint log-odds (more than 0)."
    )
    hard_threshold: Probability = Field(
        default=_COMBINE.hard_threshold, description="The combined confidence that makes a mail hard."
    )

    def settings(self) -> CombineSettings:
        return CombineSettings(**{f.name: getattr(self, f.name) for f in dataclasses.fields(CombineSettings)})


class ModelFile(Section):
    """The learned text model next to the signals; leave the section out to decide by the signals alone."""

    file: NotBlank = Field(description="The model file (JSON, from `emailrouter train`), relative to signals.yaml.")


def _stem(value: Any) -> Any:
    """true is sastrawi, false none; anything else must name a stemmer."""
    if isinstance(value, bool):
        return "sastrawi" if value else "none"
    if value not in STEMMERS:
        raise PydanticCustomError("stemmer", f"unknown stemmer {value!r} (known: {', '.join(STEMMERS)})")
    return value


class Normalise(Section):
    """How the text is read before any signal runs: slang, spelling and Indonesian affixes."""

    slang: Maybe[NotBlank] = Field(default=None, description="The slang table (slang.yaml), relative to signals.yaml.")
    stem: Annotated[
        Stem,
        BeforeValidator(_stem),
        WithJsonSchema(
            {
                "description": "Indonesian affixes: sastrawi (PySastrawi), rules (our own few) or none;"
                " true is sastrawi, false none (default sastrawi).",
                "enum": [*STEMMERS, True, False],
                "default": "sastrawi",
            }
        ),
    ] = "sastrawi"
    min_stem_length: int = Field(
        default=NormaliseSettings.min_stem_length, ge=1, description="Shorter words are never stemmed (default 5)."
    )
    elongation: bool = Field(default=True, description='"lemottt" -> "lemot" (default true).')
    reduplication: bool = Field(default=True, description='"berkali2" -> "berkali-kali" (default true).')


Word = Annotated[str, Field(description="A word.")]


class LanguageSection(Section):
    """Language of the reply: English when the customer clearly wrote English, else the default."""

    default: Language = Field(
        default="id", description=f"The language when unclear ({', '.join(LANGUAGES)}; default id)."
    )
    english_min: int = Field(
        default=1,
        ge=1,
        description="English needs at least this many English words (default 1) and more than Indonesian ones.",
    )
    english: list[Word] = Field(description="English words (whole words, case-insensitive).")
    indonesian: list[Word] = Field(description="Indonesian words (whole words, case-insensitive).")

    @field_validator("default", mode="before")
    @classmethod
    def _known_language(cls, value: Any) -> Any:
        if isinstance(value, str) and value not in LANGUAGES:
            raise PydanticCustomError("language", f"unknown language {value!r} (known: {', '.join(LANGUAGES)})")
        return value


# --------------------------------------------------------------------------- the signals

SIGNAL_INTENTS = INTENTS[:3]  # what a signal may count toward; "unknown" is what is left when none wins
MATCHERS = ("keywords", "phrases", "near", "regex", "caps_ratio", "exclamation_run", "history")
PLACED = ("keywords", "phrases", "near")  # may be combined; their matches stand at a place (so in_question applies)
HARD_ONLY = ("history",)

ONE_WORD = r"^\s*\S+\s*$"  # read the same way by Python and by the editors' ECMA-262 regexes
OneWord = Annotated[
    str,
    Field(
        pattern=ONE_WORD,
        description="A single word.",
        json_schema_extra=says(ONE_WORD, "single words only (word sequences go under phrases):"),
    ),
]
Words = Annotated[list[OneWord], Field(min_length=1)]
Phrases = Annotated[list[Annotated[NotBlank, Field(description="A phrase.")]], Field(min_length=1)]
Regexes = Annotated[list[Annotated[NotBlank, Field(description="A regular expression.")]], Field(min_length=1)]
Names = Annotated[list[Annotated[str, Field(description="A signal name or a group.")]], Field(min_length=1)]


def _share(value: float) -> float:
    if not 0 < value <= 1:
        raise PydanticCustomError("share", "must be between 0 and 1")
    return value


def _threshold(value: float) -> float:
    if value <= 0:
        raise PydanticCustomError("threshold", "must be more than 0 (a mail that no signal matched would reach 0)")
    return value


Share = Annotated[float, AfterValidator(_share), Field(json_schema_extra={"exclusiveMinimum": 0, "maximum": 1})]
Threshold = Annotated[float, AfterValidator(_threshold), Field(json_schema_extra={"exclusiveMinimum": 0})]

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


class Near(Section):
    """A word of each list (any form) at most `within` words apart, in one sentence."""

    model_config = ConfigDict(json_schema_extra={"required": ["words", "with"]})

    words: Words = Field(default_factory=list, description="Single words.")
    with_: Words = Field(default_factory=list, alias="with", description="Single words.")
    within: int = Field(default=3, ge=1, description="At most this many words apart (default 3).")
    ordered: bool = Field(default=False, description="The word of `with` must come after the word of `words`.")

    @model_validator(mode="before")
    @classmethod
    def _both_lists(cls, data: Any, info: ValidationInfo) -> Any:
        """A missing list is reported as a list that is not there, in today's words."""
        for key in ("words", "with") if isinstance(data, dict) else ():
            if key not in data:
                cross(info, data, key, "expected a non-empty list of words")
        return data


class History(Section):
    """Earlier mails from the same sender."""

    previous: int = Field(ge=1, description="At least this many earlier mails (1 or more) ...")
    within_days: float = Field(gt=0, description="... within this many days (more than 0) ...")
    same_intent: bool = Field(default=True, description="... about the same intent only (default true).")


class _Signal(Section):
    name: NotBlank = Field(description="Unique name (across all signals); agents see it in forwards.")
    weight: float = Field(
        description="Added to the score when the signal fires (at most once per mail). A negative weight counts"
        " against the intent (or against a hard complaint), such as a thank-you that asks for nothing;"
        " 0 counts nothing but still fires, for requires and unless."
    )
    keywords: Maybe[Words] = Field(default=None, description=_MATCHER_HELP["keywords"])
    phrases: Maybe[Phrases] = Field(default=None, description=_MATCHER_HELP["phrases"])
    near: Maybe[Near] = Field(default=None, description=_MATCHER_HELP["near"])
    regex: Maybe[Regexes] = Field(default=None, description=_MATCHER_HELP["regex"])
    caps_ratio: Maybe[Share] = Field(default=None, description=_MATCHER_HELP["caps_ratio"])
    min_letters: Maybe[Annotated[int, Field(ge=0)]] = Field(
        default=None, description="With caps_ratio: only texts of at least this many letters count (default 0)."
    )
    exclamation_run: Maybe[Annotated[int, Field(ge=1)]] = Field(
        default=None, description=_MATCHER_HELP["exclamation_run"]
    )
    in_question: Maybe[float] = Field(
        default=None,
        description="The weight when every match stands in a question (keywords, phrases and near signals only).",
    )
    requires: Maybe[Names] = Field(
        default=None, description="Fires only when one of these signals (above this one) or groups fired too."
    )
    unless: Maybe[Names] = Field(
        default=None, description="Fires only when none of these signals (above this one) or groups fired."
    )
    roots: bool = Field(
        default=True,
        description="false: keywords, phrases and near words match as written or in normal form only, not by root.",
    )

    @model_validator(mode="before")
    @classmethod
    def _one_way_to_match(cls, data: Any, info: ValidationInfo) -> Any:
        """Exactly one way to match (keywords, phrases and near may combine); problems are named on the node."""
        if not isinstance(data, dict):
            return data
        node = data
        if hard_only := "history" in node and "history" not in cls.model_fields:
            cross(info, node, "history", "history signals count toward hard complaints only", at="history")
            data = {k: v for k, v in node.items() if k != "history"}  # reported once, not as an unknown key too
        kinds = [k for k in MATCHERS if k in data]
        if not kinds and not hard_only:
            raise PydanticCustomError("matcher", f"no way to match: give one of {', '.join(MATCHERS)}")
        if len(kinds) > 1 and not set(kinds) <= set(PLACED):
            cross(info, node, kinds[1], f"give only one of {', '.join(kinds)} per signal", at=kinds[1])
        if "in_question" in data and not set(kinds) <= set(PLACED):
            cross(info, node, "in_question", f"only for {', '.join(sorted(PLACED))} signals", at="in_question")
        if "min_letters" in data and "caps_ratio" not in data:
            cross(info, node, "min_letters", "only with caps_ratio", at="min_letters")
        return data


def _signal_schema(hard: bool) -> dict[str, Any]:
    matchers = [m for m in MATCHERS if hard or m not in HARD_ONLY]
    alone = [m for m in matchers if m not in PLACED]
    return {
        "description": f"One signal: name, weight and exactly one way to match ({', '.join(matchers)});"
        f" only {' and '.join(PLACED)} may be combined.",
        "oneOf": [{"anyOf": [{"required": [m]} for m in PLACED]}, *({"required": [m]} for m in alone)],
        "dependentRequired": {"min_letters": ["caps_ratio"]},
        "dependentSchemas": {"in_question": {"not": {"anyOf": [{"required": [m]} for m in alone]}}},
    }


class IntentSignal(_Signal):
    model_config = ConfigDict(json_schema_extra=_signal_schema(hard=False))

    intent: str = Field(
        description="The intent this signal counts toward.", json_schema_extra={"enum": list(SIGNAL_INTENTS)}
    )

    @field_validator("intent")
    @classmethod
    def _known_intent(cls, value: str) -> str:
        if value not in SIGNAL_INTENTS:
            raise PydanticCustomError("intent", f"unknown intent {value!r} (known: {', '.join(SIGNAL_INTENTS)})")
        return value


class HardSignal(_Signal):
    model_config = ConfigDict(json_schema_extra=_signal_schema(hard=True))

    history: Maybe[History] = Field(default=None, description=_MATCHER_HELP["history"])


class Question(Section):
    """What makes a sentence a question besides a "?" (for signals with in_question)."""

    keywords: Maybe[Words] = Field(default=None, description="Single words (any form).")
    phrases: Maybe[Phrases] = Field(default=None, description="Phrases.")


class IntentSection(Section):
    __doc__ = (
        f"Intent: {', '.join(SIGNAL_INTENTS)}. The best-scoring intent wins if it reaches threshold and"
        f" leads the runner-up by margin; otherwise the intent is {INTENTS[-1]}."
    )

    threshold: Threshold = Field(description="The score an intent needs (more than 0).")
    margin: float = Field(default=0, ge=0, description="How far the winner must lead the runner-up (default 0).")
    question: Maybe[Question] = None
    signals: list[IntentSignal] = Field(description="The intent signals.")


class HardSection(Section):
    """Hard complaint: yes when the weights of the signals that fired add up to threshold or more."""

    threshold: Threshold = Field(description="The score that makes a hard complaint (more than 0).")
    signals: list[HardSignal] = Field(description="The hard complaint signals.")


class SignalsFile(Section):
    __doc__ = (
        "Words and weights that decide a mail's intent, whether it is a hard complaint, and its language."
        " Only the subject and what the customer wrote count, never quoted history."
    )

    normalise: Maybe[Normalise] = None
    intent: IntentSection
    hard_complaint: HardSection
    language: LanguageSection
    model: Maybe[ModelFile] = None
    combine: Maybe[Combine] = None
