"""Training: corpus readers, stratified folds, deterministic models, the combination, and `check` on model files."""

from __future__ import annotations

import importlib
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

from emailrouter.config.loader import load_config
from emailrouter.config.modelfile import load_model, save_model
from emailrouter.core.combine import CombineSettings, combine_hard, combine_intent, hard_summary, hard_why
from emailrouter.core.errors import ConfigError
from emailrouter.core.model import Classification, ModelOutput, SignalHit
from emailrouter.core.textmodel import FeatureSettings, TextModel
from emailrouter.ops.cli import main
from emailrouter.ops.training import (
    CorpusError,
    Example,
    TrainSettings,
    assign_folds,
    fit,
    known_words,
    read_corpus,
)
from tests.conftest import ROOT

pytest.importorskip("sklearn")

SMALL = ROOT / "tests" / "data" / "corpus-small"


def test_jsonl_csv_and_eml_corpora_are_read_with_their_labels() -> None:
    """Each corpus kind gives subject, the customer's own text (no quoted history for mail), intent and hard."""
    jsonl = read_corpus(str(SMALL / "small.jsonl"))
    assert len(jsonl) == 40 and Counter(e.intent for e in jsonl) == dict.fromkeys(
        ("fault", "information", "request", "unknown"), 10
    )
    assert sum(e.hard for e in jsonl) == 8
    csv = read_corpus(str(SMALL / "small.csv"))
    assert [(e.id, e.intent, e.hard) for e in csv] == [
        ("c1", "fault", False),
        ("c2", "information", False),
        ("c3", "request", False),
        ("c4", "unknown", True),
    ]
    mails = read_corpus(str(SMALL / "eml"))
    first = mails[0]
    assert (first.id, first.subject, first.intent, first.hard) == ("fault-1.mail", "Internet mati", "fault", False)
    assert "harga paket" not in mails[0].text  # the quoted history of the reply is not the customer's text
    assert mails[3].hard and mails[3].intent == "fault"
    folder = read_corpus(str(SMALL))  # a folder: every .jsonl and .csv in it
    assert len(folder) == 4 + 40 + 8


def test_a_bad_label_names_the_file_and_line(tmp_path: Path) -> None:
    """An unknown intent, a bad hard value or a missing column is an error with file and line."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok", "intent": "unknown", "hard": false}\n{"text": "x", "intent": "spam"}\n')
    with pytest.raises(CorpusError, match=r"bad.jsonl:2: intent: unknown intent 'spam'"):
        read_corpus(str(bad))
    bad.write_text('{"text": "x", "intent": "fault", "hard": "maybe"}\n')
    with pytest.raises(CorpusError, match=r"bad.jsonl:1: hard: expected true or false"):
        read_corpus(str(bad))
    csv = tmp_path / "bad.csv"
    csv.write_text("text,intent\nhalo,unknown\n")
    with pytest.raises(CorpusError, match=r"bad.csv:1: header: missing column\(s\) hard"):
        read_corpus(str(csv))


def test_folds_are_stratified_and_seeded() -> None:
    """Every fold gets its share of each (intent, hard) mix; the same seed gives the same folds, another seed others."""
    examples = read_corpus(str(SMALL / "small.jsonl"))
    folds = assign_folds(examples, 5, seed=7)
    assert folds == assign_folds(examples, 5, seed=7) != assign_folds(examples, 5, seed=8)
    assert sorted(Counter(folds).values()) == [8, 8, 8, 8, 8]
    for intent in ("fault", "information", "request", "unknown"):
        per_fold = Counter(f for f, e in zip(folds, examples, strict=True) if e.intent == intent)
        assert max(per_fold.values()) - min(per_fold.values()) <= 1


def test_training_learns_the_corpus_and_explains_with_its_words() -> None:
    """A model trained on the small corpus gets its own examples right and shows words that drove it."""
    examples = read_corpus(str(SMALL / "small.jsonl"))
    model = fit(examples, TrainSettings(min_df=1))
    right = sum(
        max(p.intent_probabilities, key=p.intent_probabilities.__getitem__) == e.intent
        for e in examples
        if (p := model.predict(e.subject, e.text))
    )
    assert right >= 36
    p = model.predict("", "internet mati total dari pagi")
    assert max(p.intent_probabilities, key=p.intent_probabilities.__getitem__) == "fault"
    assert "mati" in [name for name, _ in p.top_features("fault")]


def test_round_trip_train_save_load_predicts_the_same(tmp_path: Path) -> None:
    """train -> save -> load: the loaded model gives exactly the predictions of the trained one."""
    examples = read_corpus(str(SMALL / "small.jsonl"))
    model = fit(examples, TrainSettings(min_df=1))
    save_model(model, tmp_path / "model.json")
    loaded = load_model(tmp_path / "model.json")
    for e in [*examples, Example("new", "", "wifi lemot parah, tolong!!!", "fault", False)]:
        assert loaded.predict(e.subject, e.text) == model.predict(e.subject, e.text)


def test_training_handles_a_missing_class_and_hard_only_examples() -> None:
    """Examples labelled for hard only train the hard model; an intent absent from the corpus is never predicted."""
    examples = [
        Example("1", "", "internet mati", "fault", False),
        Example("2", "", "wifi mati lagi", "fault", False),
        Example("3", "", "harga paket berapa", "information", False),
        Example("4", "", "berapa harga promo", "information", False),
        Example("5", "", "bodoh kalian semua", None, True),
        Example("6", "", "dasar bodoh", None, True),
    ]
    model = fit(examples, TrainSettings(min_df=1))
    p = model.predict("", "mati")
    assert p.intent_probabilities["request"] < 1e-3 and p.intent_probabilities["unknown"] < 1e-3
    assert model.predict("", "bodoh").hard_probability > model.predict("", "harga").hard_probability


def test_train_command_is_deterministic_and_prints_cross_validation(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same corpus and seed give a byte-identical model file; the figures per class and for hard are printed."""
    config = str(ROOT / "config" / "emailrouter.yaml")
    args = ["train", str(SMALL / "small.jsonl"), "-c", config, "--folds", "2", "--seed", "3"]
    assert main([*args, "-o", str(tmp_path / "a.json")]) == 0
    out = capsys.readouterr().out
    assert main([*args, "-o", str(tmp_path / "b.json")]) == 0
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    assert "2-fold cross-validation (stratified, seed 3)" in out and "intent accuracy" in out
    assert "hard complaint      precision" in out and "information" in out
    assert "suggested for signals.yaml" in out and "combine:\n  signals_weight:" in out
    trained = json.loads((tmp_path / "a.json").read_text())
    assert trained["training"]["examples"] == 40 and trained["training"]["cv_folds"] == 2
    assert main([*args[:-2], "--seed", "4", "-o", str(tmp_path / "c.json")]) == 0
    assert (tmp_path / "c.json").read_bytes() != (tmp_path / "a.json").read_bytes()  # the seed is recorded


def test_train_without_scikit_learn_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without scikit-learn, train exits 1 with the pip command; nothing is written."""
    real = importlib.import_module

    def no_sklearn(name: str, package: str | None = None) -> object:
        if name.startswith("sklearn"):
            raise ImportError("No module named 'sklearn'")
        return real(name, package)

    monkeypatch.setattr(importlib, "import_module", no_sklearn)
    out = tmp_path / "m.json"
    assert main(["train", str(SMALL / "small.jsonl"), "-o", str(out)]) == 1
    assert "pip install 'emailrouter[train]'" in capsys.readouterr().err
    assert not out.exists()


def test_combination_without_signals_is_the_model_and_each_signal_point_multiplies_the_odds() -> None:
    """No fired signal: the model's probabilities as they are. A signal of weight w multiplies its intent's odds
    by e^(signals_weight * w). Under the threshold, or when unknown is most probable, the intent is unknown."""
    model = {"fault": 0.2, "information": 0.2, "request": 0.2, "unknown": 0.4}
    settings = CombineSettings(signals_weight=0.5, model_weight=1.0, threshold=0.5)
    alone = combine_intent({"fault": 0, "information": 0, "request": 0}, model, settings)
    assert alone.intent == "unknown" and alone.probabilities == pytest.approx(model)
    pushed = combine_intent({"fault": 4.0, "information": 0, "request": 0}, model, settings)
    odds = pushed.probabilities["fault"] / pushed.probabilities["information"]
    assert odds == pytest.approx(2.718281828**2.0)
    assert pushed.intent == "fault" and pushed.confidence == pytest.approx(pushed.probabilities["fault"])
    strict = combine_intent({"fault": 4.0}, model, CombineSettings(0.5, 1.0, threshold=0.9))
    assert strict.intent == "unknown" and strict.confidence == pushed.confidence
    hard = combine_hard(6.0, 0.1, CombineSettings(hard_signals_weight=0.5, hard_model_weight=1.0, hard_threshold=0.5))
    assert hard.confidence == pytest.approx(1 / (1 + 9 * 2.718281828**-3.0)) and hard.hard
    assert not combine_hard(0.0, 0.1, CombineSettings()).hard


def _without_model(text: str) -> str:
    """signals.yaml without its top-level model: and combine: sections."""
    out, skipping = [], False
    for line in text.splitlines(keepends=True):
        if line[:1] not in (" ", "\n", "#", ""):
            skipping = line.startswith(("model:", "combine:"))
        if not skipping:
            out.append(line)
    return "".join(out)


def _config_with_model(config_copy: Path, model_bytes: bytes | None, extra: str = "") -> Path:
    """The config copy with this model file (None: no model: section) and extra signals.yaml text."""
    folder = config_copy.parent
    signals = folder / "signals.yaml"
    text = _without_model(signals.read_text())
    if model_bytes is not None:
        (folder / "model.json").write_bytes(model_bytes)
        text += "\nmodel:\n  file: model.json\n"
    signals.write_text(text + extra)
    return config_copy


def test_check_rejects_a_tampered_model_file_naming_file_and_key(
    config_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`check` loads the model: a changed weight is a config error naming the model file and the checksum."""
    model = fit(read_corpus(str(SMALL / "small.jsonl")), TrainSettings(min_df=1))
    text = model.dumps().decode()
    name, _, rest = text.partition('"w:internet": [')
    tampered = name + '"w:internet": [9' + rest
    path = _config_with_model(config_copy, tampered.encode())
    assert main(["check", "-c", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path.parent / 'model.json'}: checksum: does not match the content" in err


def test_check_rejects_a_pickle_as_model_and_bad_combine_settings(config_copy: Path) -> None:
    """A pickle in place of the model file, and a combine weight of 0, are config errors naming file and key."""
    import pickle

    path = _config_with_model(
        config_copy, pickle.dumps({"weights": [1, 2]}), "combine:\n  model_weight: 0\n  threshold: 1.5\n"
    )
    with pytest.raises(ConfigError) as error:
        load_config(path)
    problems = {(p.file.rsplit("/", 1)[-1], p.key) for p in error.value.problems}
    assert ("model.json", "") in problems
    assert ("signals.yaml", "combine.model_weight") in problems and ("signals.yaml", "combine.threshold") in problems
    assert any("pickle" in p.reason for p in error.value.problems)


def test_a_good_model_loads_and_classification_shows_it(config_copy: Path) -> None:
    """With a model: section the classification carries the model's probabilities, combined confidence and words."""
    model = fit(read_corpus(str(SMALL / "small.jsonl")), TrainSettings(min_df=1))
    config = load_config(_config_with_model(config_copy, model.dumps()))
    assert config.signals.model is not None and config.signals.model.checksum == model.checksum
    from emailrouter.core.classify import classify

    c = classify("Gangguan", "internet mati dari pagi, lampu los merah", config.signals)
    assert c.model is not None and c.intent == "fault" and c.model.model == model.short_id
    assert c.model.confidence == max(c.model.combined.values())
    assert c.model.intent_features and all(w > 0 for _, w in c.model.intent_features)


def test_without_a_model_section_the_signals_alone_decide(config_copy: Path) -> None:
    """Leaving out model: gives no model output, and the verdict of the signals' threshold and margin."""
    _config_with_model(config_copy, None)
    config = load_config(config_copy)
    assert config.signals.model is None
    from emailrouter.core.classify import classify

    c = classify("", "halo, terima kasih", config.signals)
    assert c.model is None and c.intent == "unknown"


def test_shipped_model_is_data_and_checked(tmp_path: Path) -> None:
    """The shipped config/model.json loads with its checksum and stays small (a few MB at most)."""
    path = ROOT / "config" / "model.json"
    if not path.exists():
        pytest.skip("no shipped model")
    model = load_model(path)
    assert path.stat().st_size < 4_000_000
    assert model.training["examples"] > 1000
    shutil.copy(path, tmp_path / "copy.json")
    assert load_model(tmp_path / "copy.json").checksum == model.checksum


def test_explain_the_decision_record_and_the_forward_show_the_model(config_copy: Path) -> None:
    """explain (text and JSON, which is also the daemon's decision record) and the forward's summary show the
    model's probabilities, the combined confidence and the words that drove it, next to the signals."""
    from emailrouter.core.explain import as_json, as_text
    from emailrouter.core.pipeline import route
    from tests.conftest import DATA, NOW

    model = fit(read_corpus(str(SMALL / "small.jsonl")), TrainSettings(min_df=1))
    config = load_config(_config_with_model(config_copy, model.dumps()))
    routing = route((DATA / "dcs-hard-media-threat-informal.eml").read_bytes(), config, NOW)
    text = as_text(routing, "x.eml")
    assert f"(model {model.short_id})" in text and "  combined:   " in text and "  driven by:  " in text
    trace = as_json(routing, "x.eml", config.version)
    assert trace["model"]["model"] == model.short_id
    assert set(trace["model"]["probabilities"]) == {"fault", "information", "request", "unknown"}
    assert trace["model"]["intent_features"][0]["weight"] > 0 and trace["signals"]
    forward = next(o for o in routing.outgoing if o.action.type == "forward")
    body = forward.message.get_body(preferencelist=("plain",))
    assert body is not None
    summary = body.get_content()
    assert "Model:           " in summary and "Combined:        " in summary and "Driven by:       " in summary
    assert summary.index("Signals:") < summary.index("Model:")


def test_train_works_with_a_config_whose_model_file_is_stale(
    config_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`train -c` does not read the configured model (it makes a new one): a stale or broken file cannot stop it,
    while `check` still refuses that file."""
    path = _config_with_model(config_copy, b'{"format": "emailrouter-textmodel", "format_version": 0}')
    assert main(["check", "-c", str(path)]) == 1
    out = tmp_path / "new.json"
    assert main(["train", str(SMALL / "small.jsonl"), "-c", str(path), "--folds", "0", "-o", str(out)]) == 0
    (config_copy.parent / "model.json").write_bytes(out.read_bytes())
    assert main(["check", "-c", str(path)]) == 0


def test_a_word_only_ever_written_capitalised_inside_a_sentence_is_not_learned() -> None:
    """Names (`Rina`, `Braga`) are not known words, so their features are not learned; a word also written in
    lower case (`internet`), or capitalised only where a sentence starts, is."""
    examples = [
        Example("1", "", "Saya Rina, internet mati di Jl. Braga", "fault", False),
        Example("2", "", "Halo, saya Rina. Internet mati lagi di Braga", "fault", False),
        Example("3", "", "Mati total. internet rumah", "fault", False),
    ]
    known = known_words(examples, 2)
    assert {"internet", "mati"} <= known and not {"rina", "braga", "jl"} & known
    model = fit(examples, TrainSettings(min_df=2))
    assert "w:internet" in model.weights and "w:rina" not in model.weights and "c:<rin" not in model.weights


def test_clear_signals_outweigh_a_model_sure_of_another_intent() -> None:
    """The model's probabilities count as at least 1 %: information 5 against a resolved fault (-3) wins over a
    model 99.99 % sure of a fault, and the model alone cannot make a hard complaint more sure than 99:1."""
    model = {"fault": 0.9999, "information": 0.00003, "request": 0.00003, "unknown": 0.00004}
    settings = CombineSettings(signals_weight=1.0, model_weight=1.0, threshold=0.25)
    verdict = combine_intent({"fault": -3.0, "information": 5.0, "request": 0.0}, model, settings)
    assert verdict.intent == "information" and verdict.confidence > 0.5
    assert combine_intent({"fault": 0, "information": 0, "request": 0}, model, settings).intent == "fault"
    sure = combine_hard(0.0, 1.0, CombineSettings(hard_model_weight=1.0))
    assert sure.confidence == pytest.approx(0.99)


def _hard_case(score: float, hard: bool, model: tuple[float, float] | None) -> Classification:
    """A classification with this hard score (threshold 4), verdict and model (probability, combined) or none."""
    output = None
    if model is not None:
        output = ModelOutput(
            "abc", {"fault": 1.0}, model[0], {"fault": 1.0}, 1.0, 0.25, model[1], 0.75, (), (("kalian", 1.5),)
        )
    hits = (SignalHit("insult", "hard", score, ("bodoh",)),) if score else ()
    return Classification("fault", {"fault": 3.0}, hard, score, 4.0, hits, "id", output)


def test_the_hard_verdict_says_what_decided_it() -> None:
    """Agents read whether the signals' score or the model made a mail hard (or kept it from being hard)."""
    assert hard_summary(_hard_case(8, True, None)) == "YES (score 8, threshold 4)"
    assert hard_summary(_hard_case(8, True, (0.97, 1.0))).startswith("YES (score 8, threshold 4); the model: 97% hard")
    by_model = hard_summary(_hard_case(0, True, (0.98, 0.91)))
    assert by_model == (
        "YES by the model: it rates the mail 98% hard; with the signals' score 0 (under their threshold 4)"
        " the combined confidence 91% reached the threshold 75%"
    )
    kept = hard_summary(_hard_case(4, False, (0.01, 0.6)))
    assert kept.startswith("no: the signals' score 4 reached their threshold 4, but the model rates the mail 1% hard")
    assert hard_summary(_hard_case(8, False, (0.9, 0.99))).startswith("no: automated mail")
    assert hard_summary(_hard_case(0, False, (0.02, 0.1))) == (
        "no (score 0, threshold 4; the model: 2% hard, combined 10%, threshold 75%)"
    )
    head, part = hard_why(_hard_case(8, True, (0.97, 1.0)))
    assert head == "Why it is hard: score 8 reached the threshold 4 with:"
    assert part is not None and part.startswith("The learned model agrees: it rates the mail 97% hard")
    head, part = hard_why(_hard_case(0, True, (0.98, 0.91)))
    assert head.startswith("Why it is hard: the learned model rates the mail 98% hard (driven by kalian +1.50)")
    assert "the combined confidence 91% reached the threshold 75%" in head and part is None


def test_the_escalation_says_the_model_made_the_mail_hard(config_copy: Path) -> None:
    """A DCS mail without hard signals that the model rates hard is escalated, and the notice says the model
    decided; automated mail is never hard; without a text of its own the signals alone decide."""
    from emailrouter.core.classify import classify
    from emailrouter.core.pipeline import route
    from tests.conftest import NOW, eml

    weights = {"w:zorblax": [0.0, 0.0, 0.0, 0.0, 12.0], "w:mati": [6.0, -2.0, -2.0, -2.0, 0.0]}
    model = TextModel(FeatureSettings(), [0.0, 0.0, 0.0, 0.0, -4.0], weights)
    config = load_config(_config_with_model(config_copy, model.dumps()))
    mail = eml("From: Budi <budi@gmail.com>", "Subject: zorblax", body="internet mati, zorblax\n")
    routing = route(mail, config, NOW)
    assert routing.classification.hard and routing.classification.hard_score == 0
    escalation = next(o for o in routing.outgoing if o.action.type == "escalate")
    body = escalation.message.get_body(preferencelist=("plain",))
    assert body is not None
    text = body.get_content()
    because = next(line for line in text.splitlines() if line.startswith("Why it is hard: "))
    assert because.startswith("Why it is hard: the learned model rates the mail ") and "(driven by zorblax +" in because
    assert "with the signals' score 0, under their own threshold 4, the combined confidence" in because
    assert "Hard complaint:  YES by the model: it rates the mail " in text
    assert not classify("zorblax", "internet mati, zorblax", config.signals, automated=True).hard
    subject_only = classify("zorblax", "", config.signals)
    assert subject_only.model is None and not subject_only.hard
