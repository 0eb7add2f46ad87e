"""How the signals and the learned model combine into one verdict. Pure.

Both sources are turned into log-odds and added, then turned back into probabilities:

    intent:  logit(c) = model_weight * ln P_model(c) + signals_weight * score(c)
             P(c) = softmax over the four intents (unknown has no signal score)
             the intent is the most probable one if that is not `unknown` and its P reaches
             `threshold`; otherwise `unknown`. The confidence is that top P.
    hard:    logit = hard_model_weight * logit(P_model(hard)) + hard_signals_weight * hard_score
             hard when sigmoid(logit) >= hard_threshold. The hard confidence is sigmoid(logit).

So a point of signal weight multiplies the odds of its intent (or of a hard complaint) by
e^signals_weight: with signals_weight 1, a fired signal of weight 3 multiplies them by 20. A mail
on which no signal fires is judged by the model alone; signals add evidence, their absence is none.
model_weight sharpens (> 1) or softens (< 1) the model's own probabilities. Both weights must be
more than 0: to run on the signals alone, leave out the `model:` section of signals.yaml.

The model's probabilities count as at least MODEL_FLOOR (1 %) each, so the model alone never puts the
odds against an intent (or a hard complaint) beyond 99:1. A model trained on a few thousand messages is
that sure in cross-validation and right, but mail unlike its corpus (a long formal mail, a writer it has
not seen) can make it as sure and wrong; clear signal evidence must then be able to outweigh it: with
signals_weight 1, information 5 against fault -3 wins over a model 99 % sure of a fault. (In
cross-validation on corpus/train the floor costs nothing.)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from emailrouter.core.model import INTENTS, Classification, Intent, ModelOutput

MODEL_FLOOR = 0.01  # the model's probabilities count as at least this (see the module docstring)


@dataclass(frozen=True)
class CombineSettings:
    """The `combine:` section of signals.yaml (these defaults apply to a missing key)."""

    signals_weight: float = 0.5
    model_weight: float = 1.0
    threshold: float = 0.5
    hard_signals_weight: float = 0.5
    hard_model_weight: float = 1.0
    hard_threshold: float = 0.5


DEFAULT_COMBINE = CombineSettings()


@dataclass(frozen=True)
class IntentVerdict:
    intent: Intent
    probabilities: dict[str, float]  # combined, over the four intents
    confidence: float  # the combined probability of the most probable intent


@dataclass(frozen=True)
class HardVerdict:
    hard: bool
    confidence: float  # combined probability that the mail is a hard complaint


def combine_intent(
    signal_scores: Mapping[str, float], model_probabilities: Mapping[str, float], settings: CombineSettings
) -> IntentVerdict:
    """The intent from the signals' scores (fault/information/request) and the model's probabilities."""
    logits = [
        settings.model_weight * math.log(max(model_probabilities.get(intent, 0.0), MODEL_FLOOR))
        + settings.signals_weight * signal_scores.get(intent, 0.0)
        for intent in INTENTS
    ]
    top = max(logits)
    exps = [math.exp(v - top) for v in logits]
    total = sum(exps)
    probabilities: dict[str, float] = {intent: e / total for intent, e in zip(INTENTS, exps, strict=True)}
    best = max(INTENTS, key=lambda i: probabilities[i])  # ties: the first in INTENTS order
    confidence = probabilities[best]
    intent: Intent = best if best != "unknown" and confidence >= settings.threshold else "unknown"
    return IntentVerdict(intent, probabilities, confidence)


def decide_intent(verdict: IntentVerdict, threshold: float) -> Intent:
    """The intent the same combination gives under another threshold (what `evaluate` tabulates)."""
    best = max(INTENTS, key=lambda i: verdict.probabilities[i])
    return best if best != "unknown" and verdict.probabilities[best] >= threshold else "unknown"


def combine_hard(hard_score: float, model_probability: float, settings: CombineSettings) -> HardVerdict:
    """Hard complaint from the fired hard signals' total weight and the model's probability."""
    p = min(max(model_probability, MODEL_FLOOR), 1 - MODEL_FLOOR)
    logit = settings.hard_model_weight * math.log(p / (1 - p)) + settings.hard_signals_weight * hard_score
    confidence = 1.0 / (1.0 + math.exp(-logit)) if logit > -700 else 0.0
    return HardVerdict(confidence >= settings.hard_threshold, confidence)


# --------------------------------------------------------------------------- how it is shown


def _features(features: tuple[tuple[str, float], ...]) -> str:
    return ", ".join(f"{name} +{weight:.2f}" for name, weight in features) or "(none)"


def output_json(output: ModelOutput | None) -> dict[str, object] | None:
    """The model's part of a decision, for `explain --json` and the decision record."""
    if output is None:
        return None
    return {
        "model": output.model,
        "probabilities": {k: round(v, 4) for k, v in output.probabilities.items()},
        "hard_probability": round(output.hard_probability, 4),
        "combined": {k: round(v, 4) for k, v in output.combined.items()},
        "confidence": round(output.confidence, 4),
        "threshold": output.threshold,
        "hard_confidence": round(output.hard_confidence, 4),
        "hard_threshold": output.hard_threshold,
        "intent_features": [{"feature": n, "weight": w} for n, w in output.intent_features],
        "hard_features": [{"feature": n, "weight": w} for n, w in output.hard_features],
    }


def output_rows(output: ModelOutput | None, intent: str) -> list[tuple[str, str]]:
    """The model's part of a decision as (label, text) rows, for people (`explain`, the forwards' summary)."""
    if output is None:
        return []
    model = ", ".join(f"{k} {100 * v:.0f}%" for k, v in output.probabilities.items())
    combined = ", ".join(f"{k} {100 * v:.0f}%" for k, v in output.combined.items())
    return [
        ("model", f"{model}; hard {100 * output.hard_probability:.0f}% (model {output.model})"),
        (
            "combined",
            f"{combined} (confidence {100 * output.confidence:.0f}%, threshold {100 * output.threshold:.0f}%);"
            f" hard {100 * output.hard_confidence:.0f}% (threshold {100 * output.hard_threshold:.0f}%)",
        ),
        ("driven by", f"{intent}: {_features(output.intent_features)}; hard: {_features(output.hard_features)}"),
    ]


def hard_summary(cls: Classification) -> str:
    """The hard verdict and what decided it, in one line (the forwards' `Hard complaint:`): the signals' score
    against their threshold and, with a model, its own confidence and the combined one against theirs."""
    verdict = "YES" if cls.hard else "no"
    signals = f"score {cls.hard_score:g}, threshold {cls.hard_threshold:g}"
    reached = cls.hard_score >= cls.hard_threshold
    out = cls.model
    if out is None:
        if not cls.hard and reached:
            return f"no: automated mail (the signals' {signals})"
        return f"{verdict} ({signals})"
    model = f"{_pct(out.hard_probability)} hard"
    combined = f"combined {_pct(out.hard_confidence)}, threshold {_pct(out.hard_threshold)}"
    if cls.hard and reached:
        return f"YES ({signals}); the model: {model}, {combined}"
    if cls.hard:
        return (
            f"YES by the model: it rates the mail {model}; with the signals' score {cls.hard_score:g} (under their"
            f" threshold {cls.hard_threshold:g}) the combined confidence {_pct(out.hard_confidence)} reached the"
            f" threshold {_pct(out.hard_threshold)}"
        )
    if out.hard_confidence >= out.hard_threshold:  # hard by the evidence, and yet no: only automated mail is so
        return f"no: automated mail (the signals' {signals}; the model: {model}, {combined})"
    if reached:
        return (
            f"no: the signals' score {cls.hard_score:g} reached their threshold {cls.hard_threshold:g}, but the"
            f" model rates the mail {model}: {combined} not reached"
        )
    return f"no ({signals}; the model: {model}, {combined})"


def hard_why(cls: Classification) -> tuple[str, str | None]:
    """For an escalation: the line that says why the mail is hard (the hard signals are listed after it), and
    a line on the model's part (None without a model)."""
    out = cls.model
    if cls.hard_score >= cls.hard_threshold or out is None:
        head = f"Why it is hard: score {cls.hard_score:g} reached the threshold {cls.hard_threshold:g} with:"
        if out is None:
            return head, None
        agrees = "agrees" if out.hard_probability >= 0.5 else "does not agree, the signals outweigh it"
        return head, (
            f"The learned model {agrees}: it rates the mail {_pct(out.hard_probability)} hard"
            f" (combined {_pct(out.hard_confidence)}, threshold {_pct(out.hard_threshold)}; driven by"
            f" {_features(out.hard_features)})."
        )
    head = (
        f"Why it is hard: the learned model rates the mail {_pct(out.hard_probability)} hard (driven by"
        f" {_features(out.hard_features)}); with the signals' score {cls.hard_score:g}, under their own threshold"
        f" {cls.hard_threshold:g}, the combined confidence {_pct(out.hard_confidence)} reached the threshold"
        f" {_pct(out.hard_threshold)}. The hard signals that fired:"
    )
    return head, None


def _pct(p: float) -> str:
    return f"{100 * p:.0f}%"
