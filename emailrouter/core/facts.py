"""The facts a decision-table row can test: one registry, used by every stage that knows facts.

Each fact says its name, the YAML type of its values, the values it can take (for `check`'s walk of the
whole fact space and the loader's "unknown value" errors), its help text (for the JSON Schema) and how it
is read off one mail. Adding a fact is one entry here: `decide`, `verify`, the loader and the schema
follow.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from emailrouter.core.model import (
    INTENTS,
    LANGUAGES,
    SEGMENT_SOURCES,
    UNKNOWN_SEGMENT,
    Classification,
    MessageView,
    Segmentation,
)

FactValue = str | bool


@dataclass(frozen=True)
class Observed:
    """What the facts are read from: one mail after segment and classify."""

    view: MessageView
    segmentation: Segmentation
    classification: Classification
    automated: bool


@dataclass(frozen=True)
class Fact:
    name: str
    kind: type  # str or bool: the YAML type of the values a row writes
    help: str
    values: Callable[[Sequence[str]], tuple[FactValue, ...]]  # every value, given the config's segments
    read: Callable[[Observed], FactValue]
    enum: bool = True  # the schema lists the values (segment codes come from the config: a pattern instead)


_BOTH: tuple[FactValue, ...] = (False, True)
FACTS: tuple[Fact, ...] = (
    Fact(
        "segment",
        str,
        f"The sender's segment: a code from emailrouter.yaml, or {UNKNOWN_SEGMENT} (no usable sender).",
        lambda segments: (*segments, UNKNOWN_SEGMENT),
        lambda o: o.segmentation.segment,
        enum=False,
    ),
    Fact(
        "segment_source",
        str,
        "How the segment was found.",
        lambda _: SEGMENT_SOURCES,
        lambda o: o.segmentation.source,
    ),
    Fact(
        "intent",
        str,
        f"What the mail is about; {INTENTS[-1]} when no intent won clearly.",
        lambda _: INTENTS,
        lambda o: o.classification.intent,
    ),
    Fact("hard", bool, "Whether it is a hard complaint.", lambda _: _BOTH, lambda o: o.classification.hard),
    Fact(
        "language",
        str,
        "The language the customer wrote in (and the reply's).",
        lambda _: LANGUAGES,
        lambda o: o.classification.language,
    ),
    Fact(
        "has_attachments",
        bool,
        "Whether the mail has attachments.",
        lambda _: _BOTH,
        lambda o: bool(o.view.attachments),
    ),
    Fact(
        "automated",
        bool,
        "Out-of-office, bounce, mailing list, robot or our own mail; it never gets an automatic reply.",
        lambda _: _BOTH,
        lambda o: o.automated,
    ),
)
BY_NAME: Mapping[str, Fact] = {f.name: f for f in FACTS}
NAMES: tuple[str, ...] = tuple(BY_NAME)


class Facts(Mapping[str, FactValue]):
    """The facts of one mail (or one point of the fact space), by name, in registry order."""

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[str, FactValue]) -> None:
        missing = [n for n in NAMES if n not in values]
        unknown = [n for n in values if n not in BY_NAME]
        if missing or unknown:
            raise ValueError(f"facts: missing {missing}, unknown {unknown}")
        self._values = {n: values[n] for n in NAMES}

    def __getitem__(self, name: str) -> FactValue:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Facts({self._values!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Facts) and self._values == other._values

    def __hash__(self) -> int:
        return hash(tuple(self._values.items()))


def facts_of(view: MessageView, seg: Segmentation, cls: Classification, automated: bool = False) -> Facts:
    """Every registered fact, read off one mail."""
    observed = Observed(view, seg, cls, automated)
    return Facts({f.name: f.read(observed) for f in FACTS})


def allowed_values(segments: Sequence[str]) -> dict[str, tuple[FactValue, ...]]:
    """fact -> every value it can take, for this config's segments."""
    return {f.name: f.values(segments) for f in FACTS}
