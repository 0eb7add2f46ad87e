"""Intent and hard-complaint classification from weighted, YAML-defined signals. Pure."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from emailrouter.model import Classification, Intent, Language, SignalHit

# Text past this many characters is not scanned: signals live at the top of a mail,
# and a pathological body must not cost more than a normal one.
MAX_SCANNED_CHARS = 20_000
MAX_MATCHES_SHOWN = 5

_WORD = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*")
_APOSTROPHES = str.maketrans({"’": "'", "‘": "'", "`": "'"})


@dataclass(frozen=True)
class Text:
    """The customer's own words, prepared once for every signal."""

    original: str  # subject + "\n" + text, as written
    folded: str  # case-folded, typographic apostrophes straightened
    words: tuple[str, ...]  # folded words in order
    word_set: frozenset[str]

    @classmethod
    def of(cls, subject: str, text: str) -> Text:
        original = f"{subject}\n{text}"[:MAX_SCANNED_CHARS]
        folded = original.casefold().translate(_APOSTROPHES)
        words = tuple(_WORD.findall(folded))
        return cls(original, folded, words, frozenset(words))


@dataclass(frozen=True)
class Signal:
    """One named, weighted signal. Exactly one way of matching is set."""

    name: str
    group: str  # fault | information | request | hard
    weight: float
    keywords: frozenset[str] = frozenset()
    pattern: re.Pattern[str] | None = None  # phrases (on folded text) or regexes (on original text)
    on_folded: bool = True
    caps_ratio: float | None = None
    min_letters: int = 0
    exclamation_run: int | None = None

    def match(self, text: Text) -> tuple[str, ...]:
        """The terms that made this signal fire (empty: it did not)."""
        found: list[str] = []
        if self.keywords:
            found.extend(sorted(self.keywords & text.word_set))
        if self.pattern is not None:
            haystack = text.folded if self.on_folded else text.original
            for m in self.pattern.finditer(haystack):
                term = " ".join(m.group(0).split())
                if term not in found:
                    found.append(term)
                if len(found) >= MAX_MATCHES_SHOWN:
                    break
        if self.caps_ratio is not None:
            letters = [c for c in text.original if c.isalpha()]
            if len(letters) >= self.min_letters:
                upper = sum(1 for c in letters if c.isupper())
                if upper / len(letters) >= self.caps_ratio:
                    found.append(f"{round(100 * upper / len(letters))}% capitals")
        if self.exclamation_run is not None:
            runs = re.findall("!{" + str(self.exclamation_run) + ",}", text.original)
            if runs:
                found.append(f"{len(runs)}x {'!' * self.exclamation_run}")
        return tuple(found[:MAX_MATCHES_SHOWN])


def phrase_pattern(phrases: Iterable[str]) -> re.Pattern[str]:
    """One regex for a list of phrases: word boundaries at both ends, any whitespace between words."""
    alternatives = sorted(
        (r"\s+".join(re.escape(w) for w in p.casefold().translate(_APOSTROPHES).split()) for p in phrases),
        key=len,
        reverse=True,
    )
    return re.compile(r"(?<!\w)(?:" + "|".join(alternatives) + r")(?!\w)")


@dataclass(frozen=True)
class Signals:
    """Everything classification needs, validated at load (see config/signals.yaml)."""

    intent_signals: tuple[Signal, ...]
    intent_threshold: float
    intent_margin: float
    hard_signals: tuple[Signal, ...]
    hard_threshold: float
    default_language: Language
    english_words: frozenset[str]
    indonesian_words: frozenset[str]
    english_min: int


def detect_language(text: Text, signals: Signals) -> Language:
    """English when English marker words clearly outnumber Indonesian ones; otherwise the default."""
    english = sum(1 for w in text.words if w in signals.english_words)
    indonesian = sum(1 for w in text.words if w in signals.indonesian_words)
    if english >= signals.english_min and english > indonesian:
        return "en"
    if indonesian > english:
        return "id"
    return signals.default_language


def classify(subject: str, text: str, signals: Signals) -> Classification:
    """Score intent and hard complaint over the subject and the customer's own text (never the quoted part)."""
    prepared = Text.of(subject, text)
    hits: list[SignalHit] = []
    scores: dict[str, float] = {"fault": 0.0, "information": 0.0, "request": 0.0}
    for signal in signals.intent_signals:
        matched = signal.match(prepared)
        if matched:
            scores[signal.group] += signal.weight
            hits.append(SignalHit(signal.name, signal.group, signal.weight, matched))
    ranked = sorted(scores.items(), key=lambda kv: kv[1], reverse=True)
    (best, best_score), (_, runner_up) = ranked[0], ranked[1]
    intent: Intent = "unknown"
    if best_score >= signals.intent_threshold and best_score - runner_up >= signals.intent_margin:
        intent = best  # type: ignore[assignment]
    hard_score = 0.0
    for signal in signals.hard_signals:
        matched = signal.match(prepared)
        if matched:
            hard_score += signal.weight
            hits.append(SignalHit(signal.name, "hard", signal.weight, matched))
    return Classification(
        intent=intent,
        intent_scores=scores,
        hard=hard_score >= signals.hard_threshold,
        hard_score=hard_score,
        hard_threshold=signals.hard_threshold,
        signals=tuple(hits),
        language=detect_language(prepared, signals),
    )
