"""Parts of signals.yaml described once: normalise, language, model and combine.

The loader validates each section with these models (validation.py maps every error to file:line: key)
and `emailrouter schema signals` takes those sections' JSON Schema from them. The signal lists under
intent and hard_complaint (matchers, near, history, requires/unless, question) are still read and
described by hand in loader.py and schema.py. What one section cannot say stays in the loader: the
slang file and the stemmer being available, the model file, combine without a model (a warning).
"""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, WithJsonSchema, field_validator
from pydantic_core import PydanticCustomError

from emailrouter.config.validation import Maybe, NotBlank, Section
from emailrouter.core.combine import CombineSettings
from emailrouter.core.model import LANGUAGES, Language
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
