"""Training the text model: corpus readers, fitting, stratified cross-validation, tuning the combination.

Training needs scikit-learn (`pip install 'emailrouter[train]'`); using a trained model does not.
Everything is deterministic for a given corpus, seed and settings: the same input gives a
byte-identical model file.

A corpus is one of:
- a JSON Lines file (`.jsonl`) of {"id", "subject", "text", "intent", "hard", ...} objects;
- a CSV file with a header row naming at least `text`, `intent` and `hard` (`id`, `subject` optional);
- a folder with a `labels.csv` (file,intent,hard): the named `.eml` files, read with the router's own
  `parse` (the customer's text without the quoted history);
- any other folder: every `.jsonl` and `.csv` file in it (sorted by name);
- `imap:FOLDER`: the subfolders of FOLDER in a configured mailbox, named by label, read with EXAMINE
  (nothing is changed on the server). `FOLDER/fault`, `FOLDER/information`, `FOLDER/request` and
  `FOLDER/unknown` give the intent (not hard); `FOLDER/hard/<intent>` gives the intent and hard;
  a mail directly in `FOLDER/hard` is hard, and takes its intent from a copy of the same mail
  (same Message-ID) in an intent folder; without one it teaches only the hard-complaint model.

Over 400 lines: the corpus readers (JSONL/CSV, .eml folders, IMAP folders), fitting, cross-validation
and the tuning of `combine:` are the one `train` command; each reader is small.
"""

from __future__ import annotations

import csv
import hashlib
import importlib
import io
import json
import math
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emailrouter.core.combine import CombineSettings, combine_hard, combine_intent, decide_intent
from emailrouter.core.errors import EmailRouterError
from emailrouter.core.model import INTENTS, Intent
from emailrouter.core.textmodel import (
    DENSE_FEATURES,
    FeatureSettings,
    Prediction,
    TextModel,
    document,
    feature_values,
    read,
    rounded,
)
from emailrouter.ops.evaluate import Figures, figures

if TYPE_CHECKING:
    from emailrouter.config.loader import Config
    from emailrouter.core.classify import Signals

INSTALL_HINT = (
    "training needs scikit-learn: pip install 'emailrouter[train]' (in a checkout: .venv/bin/pip install -e '.[train]')"
)
HARD_FOLDER = "hard"
_TRUE = {"true", "yes", "1", "y", "hard"}
_FALSE = {"false", "no", "0", "n", "", "not hard"}


class CorpusError(EmailRouterError):
    """A corpus that cannot be read; the message names the file (and line) and what is wrong."""


class TrainingUnavailable(EmailRouterError):
    """scikit-learn is not installed."""


@dataclass(frozen=True)
class Example:
    """One labelled message: the customer's subject and own text, the intent (None: hard label only), hard."""

    id: str
    subject: str
    text: str
    intent: Intent | None
    hard: bool


# --------------------------------------------------------------------------- reading corpora


def _intent(value: Any, where: str) -> Intent:
    text = str(value).strip().lower()
    for intent in INTENTS:
        if text == intent:
            return intent
    raise CorpusError(f"{where}: intent: unknown intent {value!r} (known: {', '.join(INTENTS)})")


def _hard(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise CorpusError(f"{where}: hard: expected true or false, got {value!r}")


def read_jsonl(path: Path) -> list[Example]:
    out = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                raise CorpusError(f"{where}: not JSON: {exc.msg}") from None
            if not isinstance(item, dict) or not isinstance(item.get("text"), str):
                raise CorpusError(f"{where}: expected an object with a text string")
            subject = item.get("subject") or ""
            if not isinstance(subject, str):
                raise CorpusError(f"{where}: subject: expected a string")
            out.append(
                Example(
                    str(item.get("id") or f"{path.name}:{number}"),
                    subject,
                    item["text"],
                    _intent(item.get("intent"), where),
                    _hard(item.get("hard", False), where),
                )
            )
    return out


def read_csv(path: Path) -> list[Example]:
    text = path.read_text(encoding="utf-8-sig")
    reader = csv.DictReader(io.StringIO(text))
    missing = {"text", "intent", "hard"} - set(reader.fieldnames or ())
    if missing:
        raise CorpusError(f"{path}:1: header: missing column(s) {', '.join(sorted(missing))}")
    out = []
    for row in reader:
        where = f"{path}:{reader.line_num}"
        out.append(
            Example(
                row.get("id") or f"{path.name}:{reader.line_num}",
                row.get("subject") or "",
                row["text"] or "",
                _intent(row["intent"], where),
                _hard(row["hard"], where),
            )
        )
    return out


def read_eml_folder(folder: Path) -> list[Example]:
    from emailrouter.core.parse import parse

    labels = folder / "labels.csv"
    reader = csv.DictReader(io.StringIO(labels.read_text(encoding="utf-8-sig")))
    missing = {"file", "intent", "hard"} - set(reader.fieldnames or ())
    if missing:
        raise CorpusError(f"{labels}:1: header: missing column(s) {', '.join(sorted(missing))}")
    out = []
    for row in reader:
        where = f"{labels}:{reader.line_num}"
        name = row["file"] or ""
        path = folder / name
        if not name or Path(name).is_absolute() or ".." in Path(name).parts or not path.is_file():
            raise CorpusError(f"{where}: file: no such .eml file in {folder}: {name!r}")
        view = parse(path.read_bytes())
        out.append(Example(name, view.subject, view.text, _intent(row["intent"], where), _hard(row["hard"], where)))
    return out


def read_imap(config: Config, folder: str, mailbox: str | None = None) -> list[Example]:
    """The labelled subfolders of FOLDER in a configured mailbox, read-only (see the module docstring)."""
    from emailrouter.core.parse import parse
    from emailrouter.service.imap import ImapMailbox

    boxes = config.settings.mailboxes
    chosen = next((m for m in boxes if m.name == mailbox), None) if mailbox else (boxes[0] if boxes else None)
    if chosen is None:
        raise CorpusError(f"{config.path}: mailboxes: no mailbox {mailbox or ''!r} to read imap:{folder} from")
    conn = ImapMailbox(chosen)
    conn.connect(None, readonly=True)
    try:
        client = conn._client
        separator = "/"
        listed = client.list_folders()  # all of them: a mailbox has few, and the separator comes with them
        names = []
        for flags, delimiter, name in listed:
            if delimiter:
                separator = delimiter.decode() if isinstance(delimiter, bytes) else str(delimiter)
            if not {b"\\Noselect", b"\\NonExistent"} & {bytes(f).title() for f in flags}:
                names.append(name)
        prefix = folder.split(separator)
        names = [n for n in names if n.split(separator)[: len(prefix)] == prefix]
        if not names:
            raise CorpusError(f"imap:{folder}: no such folder in mailbox {chosen.name}")
        by_id: dict[str, tuple[Intent | None, bool, str, str]] = {}
        order: list[str] = []
        for name in sorted(names):
            labels = [p.lower() for p in name.split(separator)[len(prefix) :]]
            if not labels:
                continue
            hard = labels[0] == HARD_FOLDER
            rest = labels[1:] if hard else labels
            if len(rest) > 1 or (rest and rest[0] not in INTENTS):
                continue  # not a label folder (reported below if nothing is found at all)
            intent: Intent | None = _intent(rest[0], f"imap:{name}") if rest else None
            conn.select(name, readonly=True)
            uids = conn.all_uids()
            for start in range(0, len(uids), 200):
                for uid, fetched in sorted(conn.fetch(uids[start : start + 200]).items()):
                    view = parse(fetched.raw)
                    key = view.message_id or f"{name}:{uid}"
                    if key in by_id:
                        old_intent, old_hard, subject, text = by_id[key]
                        by_id[key] = (old_intent or intent, old_hard or hard, subject, text)
                    else:
                        by_id[key] = (intent, hard, view.subject, view.text)
                        order.append(key)
        if not order:
            known = ", ".join(f"{folder}{separator}{i}" for i in (*INTENTS, HARD_FOLDER))
            raise CorpusError(f"imap:{folder}: no mail in the label folders ({known})")
        return [Example(key, by_id[key][2], by_id[key][3], by_id[key][0], by_id[key][1]) for key in order]
    finally:
        conn.close()


def read_corpus(source: str, config: Config | None = None, mailbox: str | None = None) -> list[Example]:
    """Every example of a corpus (see the module docstring for the kinds)."""
    if source.startswith("imap:"):
        if config is None:
            raise CorpusError(f"{source}: reading from IMAP needs a config with the mailbox (-c CONFIG)")
        return read_imap(config, source[5:].strip("/"), mailbox)
    path = Path(source)
    if path.is_dir():
        if (path / "labels.csv").is_file():
            return read_eml_folder(path)
        files = sorted(p for p in path.iterdir() if p.suffix in (".jsonl", ".csv") and p.is_file())
        if not files:
            raise CorpusError(f"{path}: no labels.csv, .jsonl or .csv files in this folder")
        return [e for f in files for e in read_corpus(str(f))]
    if not path.is_file():
        raise CorpusError(f"{path}: no such file or folder")
    if path.suffix == ".csv":
        return read_csv(path)
    return read_jsonl(path)


# --------------------------------------------------------------------------- fitting


@dataclass(frozen=True)
class TrainSettings:
    """How the model is trained. The defaults did best in cross-validation on corpus/train (5 stratified folds
    and, to measure how it carries over to another writer, 3 folds of one writer each): see the README."""

    features: FeatureSettings = field(default_factory=FeatureSettings)
    intent_c: float = 1.0  # inverse regularisation strength of the intent model
    hard_c: float = 0.5  # ... and of the hard-complaint model
    # features are weighted by their inverse document frequency to this power while fitting (see `fit`): common
    # words and n-grams need more evidence; more so for hard complaints, which specific words make
    idf_power: float = 1.0
    hard_idf_power: float = 2.0
    min_df: int = 2  # a feature must occur in at least this many training texts ...
    max_features: int = 20_000  # ... and only the most frequent this many n-grams are kept (and every known word)
    seed: int = 1
    # also train on a copy of each text inside a greeting, closing and signature: off, since the features leave
    # out greetings, closings, signatures and names themselves (no better in cross-validation, twice the time)
    wrap: bool = False


# Real mail opens and closes politely whatever it is about; a corpus of short messages does not. Training on
# a wrapped copy of each text teaches the model that these words say nothing about the intent.
GREETINGS = (
    "Selamat pagi,",
    "Selamat siang Bapak/Ibu,",
    "Selamat sore min,",
    "Dengan hormat,",
    "Yth. Tim Layanan Pelanggan,",
    "Kepada Yth. Customer Service,",
    "Halo kak,",
    "Assalamualaikum wr. wb.",
    "Pagi min",
    "Dear team,",
    "Dear Sir/Madam,",
    "Hello,",
    "Good morning,",
    "Hi,",
)
CLOSINGS = (
    "Terima kasih.",
    "Terima kasih atas perhatiannya.",
    "Atas perhatian dan kerja samanya kami ucapkan terima kasih.",
    "Mohon bantuannya, terima kasih.",
    "Salam,",
    "Hormat kami,",
    "makasih",
    "Thank you.",
    "Thanks in advance,",
    "Best regards,",
    "Kind regards,",
)
SIGNATURES = (
    "Budi",
    "Rina Wulandari",
    "Agus Setiawan\n0812-0000-0000",
    "Dewi Lestari\nStaf Administrasi\nCV Maju Bersama",
    "Hendra Gunawan\nIT Manager\nPT Contoh Sejahtera Tbk\nTelp. (021) 000-0000",
    "Siti Aminah\nBagian Umum, Dinas Perhubungan Kabupaten Contoh",
    "Yoga\nNo. pelanggan 1310000000",
    "John Tan\nOperations",
)


def wrapped(example: Example, rng: random.Random) -> Example:
    """The example inside a greeting, a closing and a signature (same labels)."""
    parts = [rng.choice(GREETINGS), example.text, rng.choice(CLOSINGS), rng.choice(SIGNATURES)]
    return replace(example, id=example.id + "+wrapped", text="\n\n".join(parts))


def _sklearn() -> Any:
    """scikit-learn's LogisticRegression (imported by name: it is an optional dependency without type hints)."""
    try:
        return importlib.import_module("sklearn.linear_model").LogisticRegression
    except ImportError:
        raise TrainingUnavailable(INSTALL_HINT) from None


def _matrix(rows: Sequence[dict[str, float]], vocabulary: dict[str, int]) -> Any:
    csr_matrix = importlib.import_module("scipy.sparse").csr_matrix
    data: list[float] = []
    indices: list[int] = []
    indptr = [0]
    for values in rows:
        for name in sorted(values):
            column = vocabulary.get(name)
            if column is not None:
                indices.append(column)
                data.append(values[name])
        indptr.append(len(indices))
    return csr_matrix((data, indices, indptr), shape=(len(rows), len(vocabulary)), dtype="float64")


def _fit_one(
    lr: Any, x: Any, labels: Sequence[str], classes: Sequence[str], c: float
) -> tuple[list[list[float]], list[float]]:
    """Weights (per class, per column) and biases; classes absent from `labels` get zero weight and -10."""
    import numpy as np

    present = sorted(set(labels))
    width = x.shape[1]
    if len(present) < 2:
        bias = [10.0 if cls in present else -10.0 for cls in classes]
        return [[0.0] * width for _ in classes], bias
    model = lr(C=c, max_iter=5000, tol=1e-6)
    model.fit(x, np.array(labels))
    coef, intercept = model.coef_, model.intercept_
    if len(present) == 2:  # sklearn gives one row for two classes: split it evenly, centred
        coef = np.vstack([-coef[0] / 2, coef[0] / 2])
        intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
    rows = {cls: (coef[i], float(intercept[i])) for i, cls in enumerate(model.classes_)}
    weights = [list(map(float, rows[cls][0])) if cls in rows else [0.0] * width for cls in classes]
    bias = [rows[cls][1] if cls in rows else -10.0 for cls in classes]
    return weights, bias


def known_words(examples: Sequence[Example], min_df: int) -> frozenset[str]:
    """The words the model learns as words: those written in at least `min_df` texts other than capitalised
    inside a sentence, and in at least a third as many texts so as capitalised. A word mostly written
    capitalised inside a sentence (`Rina`, `Braga`, `Jl.`) is a name, and the model learns nothing from it:
    not here, and not from the same word written so in a mail it reads later (see textmodel.words_of)."""
    lower: Counter[str] = Counter()
    upper: Counter[str] = Counter()
    for e in examples:
        words, capitalised = read(f"{e.subject}\n{e.text}")
        lower.update(set(words) - capitalised)
        upper.update(capitalised)
    return frozenset(w for w, n in lower.items() if n >= min_df and 3 * n >= upper[w])


def fit(examples: Sequence[Example], settings: TrainSettings, note: dict[str, Any] | None = None) -> TextModel:
    """Train the intent and hard-complaint models on these examples."""
    lr = _sklearn()
    threadpool_limits = importlib.import_module("threadpoolctl").threadpool_limits
    diags = importlib.import_module("scipy.sparse").diags

    fs = settings.features
    originals = list(examples)
    known = known_words(originals, settings.min_df)
    if settings.wrap:
        rng = random.Random(settings.seed)
        examples = [*originals, *(wrapped(e, rng) for e in originals)]
    rows = [feature_values(document(e.subject, e.text, fs, known), fs) for e in examples]
    df: Counter[str] = Counter()
    for values in rows:
        df.update(values.keys())
    kept = sorted(
        (name for name, n in df.items() if n >= settings.min_df and name[:2] in ("c:", "b:", "q:")),
        key=lambda name: (-df[name], name),
    )[: settings.max_features]
    names = sorted({*kept, *(f"w:{w}" for w in known), *(n for n in DENSE_FEATURES if n in df)})
    vocabulary = {name: i for i, name in enumerate(names)}
    # each feature is scaled by its inverse document frequency while fitting, and its weight by the same factor
    # afterwards: the model computes exactly the same, but a feature found in many texts (a common word, an
    # n-gram of many words) costs more regularisation per unit of effect, so the model leans on specific words
    base = [math.log((1 + len(rows)) / (1 + df[name])) + 1 for name in names]
    idf = [b**settings.idf_power for b in base]
    hard_idf = [b**settings.hard_idf_power for b in base]
    x = _matrix(rows, vocabulary)
    xi, xh = x @ diags(idf), x @ diags(hard_idf)
    labelled = [i for i, e in enumerate(examples) if e.intent is not None]
    with threadpool_limits(limits=1):
        intent_w, intent_b = _fit_one(
            lr, xi[labelled], [str(examples[i].intent) for i in labelled], INTENTS, settings.intent_c
        )
        hard_w, hard_b = _fit_one(lr, xh, ["yes" if e.hard else "no" for e in examples], ("no", "yes"), settings.hard_c)
    # centre the intent weights per feature (softmax does not change), so each number is a push toward an intent
    weights: dict[str, list[float]] = {}
    for j, name in enumerate(names):
        column = [intent_w[k][j] * idf[j] for k in range(len(INTENTS))]
        mean = sum(column) / len(column)
        vector = rounded([*(w - mean for w in column), (hard_w[1][j] - hard_w[0][j]) * hard_idf[j]])
        if any(vector) or name.startswith("w:"):  # every known word stays known (see `known_words`)
            weights[name] = vector
    mean_b = sum(intent_b) / len(intent_b)
    bias = rounded([*(b - mean_b for b in intent_b), hard_b[1] - hard_b[0]])
    training = {
        "examples": len(originals),
        "wrapped_copies": settings.wrap,
        "intents": {i: sum(1 for e in originals if e.intent == i) for i in INTENTS},
        "hard": sum(1 for e in originals if e.hard),
        "seed": settings.seed,
        "intent_c": settings.intent_c,
        "hard_c": settings.hard_c,
        "idf_power": settings.idf_power,
        "hard_idf_power": settings.hard_idf_power,
        "min_df": settings.min_df,
        "max_features": settings.max_features,
        **(note or {}),
    }
    return TextModel(fs, bias, weights, training)


# --------------------------------------------------------------------------- cross-validation


def assign_folds(examples: Sequence[Example], k: int, seed: int) -> list[int]:
    """A fold (0..k-1) per example, stratified by (intent, hard): each label mix is dealt round the folds."""
    if k < 2:
        raise ValueError("cross-validation needs at least 2 folds")
    groups: dict[tuple[str, bool], list[int]] = {}
    for i, e in enumerate(examples):
        groups.setdefault((str(e.intent), e.hard), []).append(i)
    rng = random.Random(seed)
    fold = [0] * len(examples)
    start = 0
    for key in sorted(groups):
        members = groups[key]
        rng.shuffle(members)
        for j, i in enumerate(members):
            fold[i] = (start + j) % k
        start = (start + len(members)) % k  # the next group's first member goes to the next fold
    return fold


@dataclass(frozen=True)
class CrossValidation:
    folds: int
    predictions: tuple[Prediction, ...]  # out of fold, one per example
    model: Figures  # the model alone: argmax intent, hard at probability 0.5
    combined: Figures | None = None  # the model with the config's signals, under `combine`
    combine: CombineSettings | None = None  # tuned on the folds (only with signals)


def out_of_fold(
    examples: Sequence[Example],
    settings: TrainSettings,
    k: int,
    progress: Callable[[int], None] | None = None,
) -> list[Prediction]:
    """Each example predicted by a model trained on the other folds."""
    fold = assign_folds(examples, k, settings.seed)
    predictions: list[Prediction | None] = [None] * len(examples)
    for f in range(k):
        train = [e for e, g in zip(examples, fold, strict=True) if g != f]
        model = fit(train, settings)
        for i, (e, g) in enumerate(zip(examples, fold, strict=True)):
            if g == f:
                predictions[i] = model.predict(e.subject, e.text)
        if progress is not None:
            progress(f + 1)
    return [p for p in predictions if p is not None]


def model_figures(examples: Sequence[Example], predictions: Sequence[Prediction]) -> Figures:
    """Figures of the model alone: the most probable intent, hard when its probability is 0.5 or more."""
    predicted: list[Intent] = [max(INTENTS, key=lambda i: p.intent_probabilities[i]) for p in predictions]
    return figures(
        [e.intent for e in examples],
        predicted,
        [e.hard for e in examples],
        [p.hard_probability >= 0.5 for p in predictions],
        [max(p.intent_probabilities.values()) for p in predictions],
        [p.intent_probabilities for p in predictions],
    )


@dataclass(frozen=True)
class SignalEvidence:
    """What the signals alone say about one example (the input the combination adds to the model)."""

    scores: dict[str, float]
    hard_score: float


def signal_evidence(examples: Sequence[Example], signals: Signals) -> list[SignalEvidence]:
    from emailrouter.core.classify import classify

    plain = replace(signals, model=None)
    out = []
    for e in examples:
        c = classify(e.subject, e.text, plain)
        out.append(SignalEvidence(dict(c.intent_scores), c.hard_score))
    return out


def combined_figures(
    examples: Sequence[Example],
    predictions: Sequence[Prediction],
    evidence: Sequence[SignalEvidence],
    settings: CombineSettings,
) -> Figures:
    intents = [
        combine_intent(s.scores, p.intent_probabilities, settings) for s, p in zip(evidence, predictions, strict=True)
    ]
    hards = [
        combine_hard(s.hard_score, p.hard_probability, settings) for s, p in zip(evidence, predictions, strict=True)
    ]
    return figures(
        [e.intent for e in examples],
        [v.intent for v in intents],
        [e.hard for e in examples],
        [h.hard for h in hards],
        [v.confidence for v in intents],
        [v.probabilities for v in intents],
    )


SIGNALS_WEIGHTS = (0.0, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5)
MODEL_WEIGHTS = (0.5, 0.75, 1.0, 1.5, 2.0)
THRESHOLDS = tuple(round(0.25 + 0.05 * i, 2) for i in range(12))  # 0.25 .. 0.80


TOLERANCE = 0.005  # settings this close to the best count as equally good


def _prefer(scores: dict[tuple[float, float], tuple[float, float]]) -> tuple[float, float, float]:
    """(signals weight, model weight, threshold): among the weight pairs within TOLERANCE of the best score,
    the one that gives the signals most weight relative to the model, then the one that softens the model's
    own probabilities most (the smallest model weight: a model sure of itself on mail unlike its corpus then
    decides less on its own); with its best threshold."""
    best = max(score for score, _ in scores.values())
    close = [(sw, mw) for (sw, mw), (score, _) in scores.items() if score >= best - TOLERANCE]
    sw, mw = max(close, key=lambda pair: (round(pair[0] / pair[1], 6), -pair[1]))
    return sw, mw, scores[(sw, mw)][1]


def tune_combine(
    examples: Sequence[Example], predictions: Sequence[Prediction], evidence: Sequence[SignalEvidence]
) -> CombineSettings:
    """The combine settings that do best on out-of-fold predictions: for the intent, accuracy (unknown counts
    as a class, so leaving mail unknown costs); for hard complaints, F1. Among settings within half a point
    of the best, the one that trusts the signals most: they are written by people for real customers' mail,
    while the model has only seen its training corpus, so on mail unlike it the signals are the safer evidence."""
    labelled = [i for i, e in enumerate(examples) if e.intent is not None]
    intent_scores: dict[tuple[float, float], tuple[float, float]] = {}
    for sw in SIGNALS_WEIGHTS:
        for mw in MODEL_WEIGHTS:
            verdicts = [
                combine_intent(evidence[i].scores, predictions[i].intent_probabilities, CombineSettings(sw, mw, 0.0))
                for i in labelled
            ]
            for t in THRESHOLDS:
                correct = sum(
                    decide_intent(v, t) == examples[i].intent for i, v in zip(labelled, verdicts, strict=True)
                )
                score = correct / max(1, len(labelled))
                if (sw, mw) not in intent_scores or score > intent_scores[(sw, mw)][0] + 1e-12:
                    intent_scores[(sw, mw)] = (score, t)
    hard_scores: dict[tuple[float, float], tuple[float, float]] = {}
    truth = [e.hard for e in examples]
    for sw in SIGNALS_WEIGHTS:
        for mw in MODEL_WEIGHTS:
            base = CombineSettings(hard_signals_weight=sw, hard_model_weight=mw)
            confidences = [
                combine_hard(s.hard_score, p.hard_probability, base).confidence
                for s, p in zip(evidence, predictions, strict=True)
            ]
            for t in THRESHOLDS:
                tp = sum(1 for c, h in zip(confidences, truth, strict=True) if c >= t and h)
                fp = sum(1 for c, h in zip(confidences, truth, strict=True) if c >= t and not h)
                fn = sum(1 for c, h in zip(confidences, truth, strict=True) if c < t and h)
                f1 = 2 * tp / (2 * tp + fp + fn) if tp else 0.0
                if (sw, mw) not in hard_scores or f1 > hard_scores[(sw, mw)][0] + 1e-12:
                    hard_scores[(sw, mw)] = (f1, t)
    isw, imw, it = _prefer(intent_scores)
    hsw, hmw, ht = _prefer(hard_scores)
    return CombineSettings(isw, imw, it, hsw, hmw, ht)


def cross_validate(
    examples: Sequence[Example],
    settings: TrainSettings,
    k: int,
    signals: Signals | None = None,
    progress: Callable[[int], None] | None = None,
) -> CrossValidation:
    """Stratified k-fold figures of the model alone and, with signals, of the tuned combination."""
    predictions = out_of_fold(examples, settings, k, progress)
    alone = model_figures(examples, predictions)
    if signals is None:
        return CrossValidation(k, tuple(predictions), alone)
    evidence = signal_evidence(examples, signals)
    tuned = tune_combine(examples, predictions, evidence)
    return CrossValidation(
        k, tuple(predictions), alone, combined_figures(examples, predictions, evidence, tuned), tuned
    )


def corpus_digest(examples: Sequence[Example]) -> str:
    """SHA-256 of the examples' content and labels: which corpus a model was trained on."""
    digest = hashlib.sha256()
    for e in examples:
        digest.update(json.dumps([e.id, e.subject, e.text, e.intent, e.hard], ensure_ascii=False).encode() + b"\n")
    return digest.hexdigest()


def describe_corpus(examples: Sequence[Example]) -> str:
    counts = Counter(str(e.intent) for e in examples)
    parts = [f"{i} {counts[i]}" for i in INTENTS if counts[i]]
    if counts["None"]:
        parts.append(f"hard-only {counts['None']}")
    return f"{len(examples)} examples ({', '.join(parts)}; hard {sum(e.hard for e in examples)})"


def combine_yaml(settings: CombineSettings) -> str:
    """The `combine:` section for signals.yaml with these settings."""
    return "\n".join(
        [
            "combine:",
            f"  signals_weight: {settings.signals_weight:g}",
            f"  model_weight: {settings.model_weight:g}",
            f"  threshold: {settings.threshold:g}",
            f"  hard_signals_weight: {settings.hard_signals_weight:g}",
            f"  hard_model_weight: {settings.hard_model_weight:g}",
            f"  hard_threshold: {settings.hard_threshold:g}",
        ]
    )
