"""`evaluate`: the figures of the full configured classifier on a labelled corpus, checked by hand on a tiny case."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from emailrouter.config.loader import Config
from emailrouter.config.modelfile import save_model
from emailrouter.core.combine import CombineSettings
from emailrouter.core.textmodel import FeatureSettings, TextModel
from emailrouter.ops.cli import main
from emailrouter.ops.evaluate import as_text, evaluate, figures
from emailrouter.ops.training import read_corpus
from tests.conftest import ROOT

TINY = ROOT / "tests" / "data" / "corpus-small" / "tiny.jsonl"


def hand_model() -> TextModel:
    """One word decides each intent, overwhelmingly; `bodoh` makes a hard complaint; unknown leads otherwise."""
    big = 40.0
    weights = {
        "w:mati": [big, 0.0, 0.0, 0.0, 0.0],
        "w:harga": [0.0, big, 0.0, 0.0, 0.0],
        "w:pasang": [0.0, 0.0, big, 0.0, 0.0],
        "w:bodoh": [0.0, 0.0, 0.0, 0.0, big],
    }
    return TextModel(FeatureSettings(), [0.0, 0.0, 0.0, 3.0, -3.0], weights)


def test_figures_of_a_tiny_case_computed_by_hand() -> None:
    """Accuracy, per-class P/R/F1, confusion, both unknown shares, committed accuracy and hard P/R, by hand."""
    truth = ["fault", "fault", "information", "request", "unknown"]
    said = ["fault", "request", "information", "unknown", "unknown"]
    f = figures(truth, said, [True, False, True, False, False], [True, True, False, False, False])  # type: ignore[arg-type]
    assert f.n == 5 and f.accuracy == 3 / 5
    assert (f.per_class["fault"].precision, f.per_class["fault"].recall) == (1.0, 0.5)
    assert f.per_class["fault"].f1 == pytest.approx(2 / 3)
    assert (f.per_class["request"].precision, f.per_class["request"].recall, f.per_class["request"].f1) == (0, 0, 0)
    assert (f.per_class["unknown"].precision, f.per_class["unknown"].recall) == (0.5, 1.0)
    assert f.confusion["fault"] == {"fault": 1, "information": 0, "request": 1, "unknown": 0}
    assert f.confusion["request"]["unknown"] == 1
    assert f.unknown_share == 2 / 5 and f.missed_to_unknown == 1 / 4
    assert f.committed == 3 and f.committed_accuracy == 2 / 3
    assert (f.hard.tp, f.hard.fp, f.hard.fn, f.hard.tn) == (1, 1, 1, 2)
    assert (f.hard.precision, f.hard.recall) == (0.5, 0.5)
    assert f.coverage == ()  # no probabilities, no threshold table


def test_evaluate_runs_the_full_classifier_over_the_tiny_corpus(config: Config) -> None:
    """Through classify (model + combination, no signals here) the eight tiny examples give the figures
    worked out by hand in tests/data/corpus-small/tiny.jsonl's order:

    said: fault, fault, unknown, information, information, (information|request tie ~0.5), request, unknown
    """
    signals = dataclasses.replace(
        config.signals,
        intent_signals=(),
        hard_signals=(),
        model=hand_model(),
        combine=CombineSettings(0.5, 1.0, 0.5, 0.5, 1.0, 0.5),
    )
    f = evaluate(read_corpus(str(TINY)), signals)
    assert f.n == 8 and f.accuracy == 6 / 8
    assert f.confusion == {
        "fault": {"fault": 2, "information": 0, "request": 0, "unknown": 1},
        "information": {"fault": 0, "information": 2, "request": 0, "unknown": 0},
        "request": {"fault": 0, "information": 0, "request": 1, "unknown": 1},
        "unknown": {"fault": 0, "information": 0, "request": 0, "unknown": 1},
    }
    fault, request, unknown = f.per_class["fault"], f.per_class["request"], f.per_class["unknown"]
    assert (fault.precision, fault.recall) == (1.0, 2 / 3) and fault.f1 == pytest.approx(0.8)
    assert (request.precision, request.recall) == (1.0, 0.5) and request.f1 == pytest.approx(2 / 3)
    assert (unknown.precision, unknown.recall) == (1 / 3, 1.0) and unknown.f1 == pytest.approx(0.5)
    assert f.unknown_share == 3 / 8 and f.missed_to_unknown == 2 / 7
    assert f.committed == 5 and f.committed_accuracy == 1.0
    assert (f.hard.tp, f.hard.fp, f.hard.fn, f.hard.tn) == (1, 1, 1, 5)
    assert (f.hard.precision, f.hard.recall) == (0.5, 0.5)
    # the tie "harga pasang baru berapa" is just under 0.5 for information: committed (wrongly) below 0.5 only
    rows = {row.threshold: (row.coverage, row.committed_accuracy, row.accuracy) for row in f.coverage}
    assert rows[0.3] == rows[0.4] == (6 / 8, 5 / 6, 6 / 8)
    assert rows[0.5] == rows[0.9] == (5 / 8, 1.0, 6 / 8)
    text = as_text(f)
    assert "intent accuracy      75.0%  (8 mails)" in text and "coverage vs accuracy" in text


def test_evaluate_command_prints_figures_and_json(config_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`emailrouter evaluate CORPUS --json` gives every figure, the model and the combine settings in use."""
    save_model(hand_model(), config_copy.parent / "hand.json")
    signals = config_copy.parent / "signals.yaml"
    lines, skipping = [], False
    for line in signals.read_text().splitlines(keepends=True):
        if line[:1] not in (" ", "\n", "#", ""):
            skipping = line.startswith(("model:", "combine:"))
        if not skipping:
            lines.append(line)
    signals.write_text("".join(lines) + "\nmodel:\n  file: hand.json\ncombine:\n  threshold: 0.5\n")
    assert main(["evaluate", str(TINY), "-c", str(config_copy), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["n"] == 8 and out["model"] == hand_model().short_id and out["combine"]["threshold"] == 0.5
    assert {
        "accuracy",
        "per_class",
        "confusion",
        "unknown_share",
        "missed_to_unknown",
        "committed_accuracy",
    } <= out.keys()
    assert [row["threshold"] for row in out["coverage"]][:2] == [0.3, 0.4]
    assert main(["evaluate", str(TINY), "-c", str(config_copy)]) == 0
    text = capsys.readouterr().out
    assert f"model {hand_model().short_id} combined with the signals" in text and "confusion" in text
    assert main(["evaluate", str(TINY.parent / "missing.jsonl"), "-c", str(config_copy)]) == 1
    assert "no such file or folder" in capsys.readouterr().err
