"""Figures of a classifier on a labelled corpus: what `emailrouter evaluate` and `train` print. Pure.

`evaluate(examples, signals)` runs the full configured classifier (`classify`: the signals, the
model and their combination) over every example. `figures(...)` turns labels and verdicts into:
intent accuracy, per-intent precision/recall/F1, the confusion matrix, the share left `unknown`,
the accuracy where it committed to an intent, hard-complaint precision/recall, and a table of
coverage against accuracy across confidence thresholds, so ops can choose `combine.threshold`.

Two `unknown` figures, since a corpus has mail whose right answer *is* unknown (thanks, spam):
`unknown_share` is the share of all mail the classifier left unknown; `missed_to_unknown` is the
share of the mail that had a real intent (fault, information, request) and was left unknown
anyway — the mail that goes to the human queue although it could have been handled.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from emailrouter.core.model import INTENTS, Intent

if TYPE_CHECKING:
    from emailrouter.core.classify import Signals
    from emailrouter.ops.training import Example

COVERAGE_THRESHOLDS = (0.3, 0.4, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9)


@dataclass(frozen=True)
class ClassFigures:
    precision: float
    recall: float
    f1: float
    support: int  # mails with this intent
    predicted: int  # mails given this intent


@dataclass(frozen=True)
class HardFigures:
    precision: float
    recall: float
    f1: float
    tp: int
    fp: int
    fn: int
    tn: int


@dataclass(frozen=True)
class CoverageRow:
    threshold: float
    coverage: float  # share of mail given an intent (not unknown) at this threshold
    committed_accuracy: float  # accuracy on that mail
    accuracy: float  # over all mail (unknown is right when the label is unknown)


@dataclass(frozen=True)
class Figures:
    n: int  # mails with an intent label
    accuracy: float
    per_class: dict[str, ClassFigures]
    confusion: dict[str, dict[str, int]]  # label -> verdict -> count
    unknown_share: float
    missed_to_unknown: float
    committed: int
    committed_accuracy: float
    hard_n: int
    hard: HardFigures
    coverage: tuple[CoverageRow, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "accuracy": _r(self.accuracy),
            "per_class": {
                k: {
                    "precision": _r(v.precision),
                    "recall": _r(v.recall),
                    "f1": _r(v.f1),
                    "support": v.support,
                    "predicted": v.predicted,
                }
                for k, v in self.per_class.items()
            },
            "confusion": self.confusion,
            "unknown_share": _r(self.unknown_share),
            "missed_to_unknown": _r(self.missed_to_unknown),
            "committed": self.committed,
            "committed_accuracy": _r(self.committed_accuracy),
            "hard": {
                "n": self.hard_n,
                "precision": _r(self.hard.precision),
                "recall": _r(self.hard.recall),
                "f1": _r(self.hard.f1),
                "tp": self.hard.tp,
                "fp": self.hard.fp,
                "fn": self.hard.fn,
                "tn": self.hard.tn,
            },
            "coverage": [
                {
                    "threshold": row.threshold,
                    "coverage": _r(row.coverage),
                    "committed_accuracy": _r(row.committed_accuracy),
                    "accuracy": _r(row.accuracy),
                }
                for row in self.coverage
            ],
        }


def _r(value: float) -> float:
    return round(value, 4)


def _ratio(a: int, b: int) -> float:
    return a / b if b else 0.0


def _commit(probabilities: Mapping[str, float], threshold: float) -> Intent:
    best = max(INTENTS, key=lambda i: probabilities.get(i, 0.0))
    return best if best != "unknown" and probabilities.get(best, 0.0) >= threshold else "unknown"


def figures(
    truth: Sequence[Intent | None],
    predicted: Sequence[Intent],
    hard_truth: Sequence[bool],
    hard_predicted: Sequence[bool],
    confidences: Sequence[float | None] = (),
    probabilities: Sequence[Mapping[str, float] | None] = (),
) -> Figures:
    """All figures from labels and verdicts. A label of None (hard-only example) counts only for hard."""
    pairs = [(t, p) for t, p in zip(truth, predicted, strict=True) if t is not None]
    n = len(pairs)
    confusion: dict[str, dict[str, int]] = {t: {p: 0 for p in INTENTS} for t in INTENTS}
    for t, p in pairs:
        confusion[t][p] += 1
    correct = sum(confusion[i][i] for i in INTENTS)
    per_class: dict[str, ClassFigures] = {}
    for i in INTENTS:
        tp = confusion[i][i]
        support = sum(confusion[i].values())
        said = sum(confusion[t][i] for t in INTENTS)
        precision, recall = _ratio(tp, said), _ratio(tp, support)
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[i] = ClassFigures(precision, recall, f1, support, said)
    unknown = sum(1 for _, p in pairs if p == "unknown")
    real = [(t, p) for t, p in pairs if t != "unknown"]
    committed = [(t, p) for t, p in pairs if p != "unknown"]
    tp = sum(1 for t, p in zip(hard_truth, hard_predicted, strict=True) if t and p)
    fp = sum(1 for t, p in zip(hard_truth, hard_predicted, strict=True) if not t and p)
    fn = sum(1 for t, p in zip(hard_truth, hard_predicted, strict=True) if t and not p)
    tn = len(hard_truth) - tp - fp - fn
    hp, hr = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    hard = HardFigures(hp, hr, 2 * hp * hr / (hp + hr) if hp + hr else 0.0, tp, fp, fn, tn)
    coverage: list[CoverageRow] = []
    labelled = [(t, pr) for t, pr in zip(truth, probabilities, strict=False) if t is not None and pr is not None]
    if probabilities and len(labelled) == n and n:
        for threshold in COVERAGE_THRESHOLDS:
            said_at = [(t, _commit(pr, threshold)) for t, pr in labelled]
            done = [(t, p) for t, p in said_at if p != "unknown"]
            coverage.append(
                CoverageRow(
                    threshold,
                    _ratio(len(done), n),
                    _ratio(sum(1 for t, p in done if t == p), len(done)),
                    _ratio(sum(1 for t, p in said_at if t == p), n),
                )
            )
    return Figures(
        n=n,
        accuracy=_ratio(correct, n),
        per_class=per_class,
        confusion=confusion,
        unknown_share=_ratio(unknown, n),
        missed_to_unknown=_ratio(sum(1 for _, p in real if p == "unknown"), len(real)),
        committed=len(committed),
        committed_accuracy=_ratio(sum(1 for t, p in committed if t == p), len(committed)),
        hard_n=len(hard_truth),
        hard=hard,
        coverage=tuple(coverage),
    )


def evaluate(examples: Sequence[Example], signals: Signals) -> Figures:
    """Figures of the full configured classifier (signals, model and combination) on these examples."""
    from emailrouter.core.classify import classify

    predicted: list[Intent] = []
    hard: list[bool] = []
    confidences: list[float | None] = []
    probabilities: list[Mapping[str, float] | None] = []
    for e in examples:
        c = classify(e.subject, e.text, signals)
        predicted.append(c.intent)
        hard.append(c.hard)
        confidences.append(c.model.confidence if c.model else None)
        probabilities.append(c.model.combined if c.model else None)
    return figures(
        [e.intent for e in examples],
        predicted,
        [e.hard for e in examples],
        hard,
        confidences,
        probabilities if all(p is not None for p in probabilities) else (),
    )


def _pct(value: float) -> str:
    return f"{100 * value:5.1f}%"


def as_text(f: Figures) -> str:
    """The figures as a report for people."""
    lines = [
        f"intent accuracy     {_pct(f.accuracy)}  ({f.n} mails)",
        f"left unknown        {_pct(f.unknown_share)}  of all mail"
        f"  ({_pct(f.missed_to_unknown).strip()} of the mail with a real intent)",
        f"accuracy committed  {_pct(f.committed_accuracy)}  (on the {f.committed} mails given an intent)",
        f"hard complaint      precision {_pct(f.hard.precision)}  recall {_pct(f.hard.recall)}"
        f"  F1 {_pct(f.hard.f1)}  (tp {f.hard.tp}, fp {f.hard.fp}, fn {f.hard.fn}, tn {f.hard.tn})",
        "",
        f"{'intent':<13}{'precision':>10}{'recall':>9}{'F1':>8}{'support':>9}",
    ]
    for intent, c in f.per_class.items():
        lines.append(f"{intent:<13}{_pct(c.precision):>10}{_pct(c.recall):>9}{_pct(c.f1):>8}{c.support:>9}")
    lines += ["", "confusion (rows: label, columns: verdict)", f"{'':<13}" + "".join(f"{i[:11]:>12}" for i in INTENTS)]
    for t in INTENTS:
        lines.append(f"{t:<13}" + "".join(f"{f.confusion[t][p]:>12}" for p in INTENTS))
    if f.coverage:
        lines += ["", "confidence threshold: coverage vs accuracy (choose combine.threshold)"]
        lines.append(f"{'threshold':>10}{'coverage':>10}{'acc. committed':>16}{'accuracy':>10}")
        for row in f.coverage:
            lines.append(
                f"{row.threshold:>10.2f}{_pct(row.coverage):>10}{_pct(row.committed_accuracy):>16}{_pct(row.accuracy):>10}"
            )
    return "\n".join(lines)
