"""Intent and hard-complaint classification from weighted, YAML-defined signals. Pure."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from emailrouter.combine import DEFAULT_COMBINE, CombineSettings, combine_hard, combine_intent
from emailrouter.model import Classification, Intent, Language, ModelOutput, SignalHit
from emailrouter.textmodel import TextModel

# Text past this many characters is not scanned: signals live at the top of a mail,
# and a pathological body must not cost more than a normal one.
MAX_SCANNED_CHARS = 20_000
MAX_MATCHES_SHOWN = 5
SHOUTING_SAMPLE = 4_000  # characters looked at for the share of capitals

_ADDRESSES_AND_LINKS = re.compile(r"[^\s<>()\[\]]+@[^\s<>()\[\]]+|\b(?:https?://|www\.)\S+")
_WORD = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*")
# Latin-1 byte tables: counting letters and capitals with bytes.translate runs at C speed.
_NOT_LETTER = bytes(c for c in range(256) if not chr(c).isalpha())
_NOT_UPPER = bytes(c for c in range(256) if not chr(c).isupper())


def fold(text: str) -> str:
    """Case-folded, typographic apostrophes straightened: what keywords, phrases and regexes see."""
    folded = text.casefold()
    return folded.replace("’", "'").replace("‘", "'") if not folded.isascii() else folded


class Text:
    """The customer's own words (subject and text, never the quoted part), prepared once for every signal."""

    __slots__ = ("folded", "original", "word_counts", "word_set")

    def __init__(self, subject: str, text: str) -> None:
        original = f"{subject}\n{text}"[:MAX_SCANNED_CHARS]
        if "@" in original or "://" in original or "www." in original:
            original = _ADDRESSES_AND_LINKS.sub(" ", original)  # "info@..." is not a question
        self.original = original
        self.folded = fold(self.original)
        self.word_counts = Counter(_WORD.findall(self.folded))
        self.word_set = self.word_counts.keys()

    def capitals(self) -> tuple[int, int]:
        """(letters, capital letters) in the first SHOUTING_SAMPLE characters (Latin-1 letters)."""
        sample = self.original[:SHOUTING_SAMPLE].encode("latin-1", "ignore")
        letters = sample.translate(None, _NOT_LETTER)
        return len(letters), len(letters.translate(None, _NOT_UPPER))


@dataclass(frozen=True)
class Phrase:
    """A word sequence: matches with word boundaries at both ends and any whitespace between words."""

    text: str
    words: frozenset[str]  # the regex runs only when all of these occur in the text: usually it need not
    pattern: re.Pattern[str]

    @classmethod
    def of(cls, phrase: str) -> Phrase:
        folded = fold(phrase)
        body = r"\s+".join(re.escape(w) for w in folded.split())
        return cls(phrase, frozenset(_WORD.findall(folded)), re.compile(r"(?<!\w)" + body + r"(?!\w)"))


@dataclass(frozen=True)
class Contact:
    """An earlier mail from the same sender, as remembered by the state store."""

    at: datetime
    intent: str


@dataclass(frozen=True)
class HistoryRule:
    """Fires when the sender wrote at least `previous` times within `days` (about the same thing)."""

    previous: int
    days: float
    same_intent: bool

    def match(self, history: Sequence[Contact], intent: str, now: datetime) -> tuple[str, ...]:
        since = now - timedelta(days=self.days)
        earlier = [c for c in history if since <= c.at <= now and (not self.same_intent or c.intent == intent)]
        if len(earlier) < self.previous:
            return ()
        about = f" about {intent}" if self.same_intent else ""
        return (f"{len(earlier)} earlier mail(s){about} within {self.days:g} days",)


@dataclass(frozen=True)
class Signal:
    """One named, weighted signal; see config/signals.yaml for the ways it can match."""

    name: str
    group: str  # fault | information | request | hard
    weight: float
    keywords: frozenset[str] = frozenset()
    phrases: tuple[Phrase, ...] = ()
    regex: re.Pattern[str] | None = None  # runs on the case-folded text
    caps_ratio: float | None = None
    min_letters: int = 0
    exclamation_run: int | None = None
    history: HistoryRule | None = None  # matched by classify() against the sender's earlier mail

    def match(self, text: Text) -> tuple[str, ...]:
        """The terms that made this signal fire (empty: it did not)."""
        found: list[str] = sorted(self.keywords & text.word_set) if self.keywords else []
        spans = sorted(
            m.span()
            for phrase in self.phrases
            if phrase.words <= text.word_set and (m := phrase.pattern.search(text.folded))
        )
        end = -1
        for start, stop in spans:  # in text order; a phrase inside a longer match is not repeated
            if stop > end:
                found.append(" ".join(text.folded[start:stop].split()))
                end = stop
        if self.regex is not None:
            for m in self.regex.finditer(text.folded):
                term = " ".join(m.group(0).split())
                if term not in found:
                    found.append(term)
                if len(found) >= MAX_MATCHES_SHOWN:
                    break
        if self.caps_ratio is not None:
            letters, upper = text.capitals()
            if letters and letters >= self.min_letters and upper / letters >= self.caps_ratio:
                found.append(f"{round(100 * upper / letters)}% capitals")
        if self.exclamation_run is not None and "!" * self.exclamation_run in text.original:
            runs = len(re.findall("!{" + str(self.exclamation_run) + ",}", text.original))
            found.append(f"{runs}x {'!' * self.exclamation_run}")
        return tuple(found[:MAX_MATCHES_SHOWN])


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
    model: TextModel | None = None  # the learned model (`model:` in signals.yaml); None: signals alone
    combine: CombineSettings = DEFAULT_COMBINE  # how the model and the signals combine (`combine:`)

    @property
    def history_days(self) -> float:
        """How far back classification looks into a sender's history (0: not at all)."""
        return max((s.history.days for s in self.hard_signals if s.history), default=0.0)


def detect_language(text: Text, signals: Signals) -> Language:
    """English when English marker words clearly outnumber Indonesian ones; otherwise the default."""
    counts = text.word_counts
    english = sum(counts[w] for w in signals.english_words & counts.keys())
    indonesian = sum(counts[w] for w in signals.indonesian_words & counts.keys())
    if english >= signals.english_min and english > indonesian:
        return "en"
    if indonesian > english:
        return "id"
    return signals.default_language


def classify(
    subject: str,
    text: str,
    signals: Signals,
    history: Sequence[Contact] = (),
    now: datetime | None = None,
) -> Classification:
    """Score intent and hard complaint over the subject and the customer's own text (never the quoted part)."""
    prepared = Text(subject, text)
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
    prediction = signals.model.predict(subject, text) if signals.model is not None else None
    verdict = combine_intent(scores, prediction.intent_probabilities, signals.combine) if prediction else None
    if verdict is not None:
        intent = verdict.intent
    hard_score = 0.0
    for signal in signals.hard_signals:
        if signal.history is not None:
            matched = signal.history.match(history, intent, now) if now is not None else ()
        else:
            matched = signal.match(prepared)
        if matched:
            hard_score += signal.weight
            hits.append(SignalHit(signal.name, "hard", signal.weight, matched))
    hard = hard_score >= signals.hard_threshold
    output = None
    if prediction is not None and verdict is not None:
        hard_verdict = combine_hard(hard_score, prediction.hard_probability, signals.combine)
        hard = hard_verdict.hard
        output = ModelOutput(
            model=signals.model.short_id if signals.model else "",
            probabilities=prediction.intent_probabilities,
            hard_probability=prediction.hard_probability,
            combined=verdict.probabilities,
            confidence=verdict.confidence,
            threshold=signals.combine.threshold,
            hard_confidence=hard_verdict.confidence,
            hard_threshold=signals.combine.hard_threshold,
            intent_features=prediction.top_features(intent),
            hard_features=prediction.top_features("hard"),
        )
    return Classification(
        intent=intent,
        intent_scores=scores,
        hard=hard,
        hard_score=hard_score,
        hard_threshold=signals.hard_threshold,
        signals=tuple(hits),
        language=detect_language(prepared, signals),
        model=output,
    )
