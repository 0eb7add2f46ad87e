"""Leave-one-writer-out figures of the classifier: how well it carries over to someone else's way of writing.

Each file of a training corpus folder (corpus/train/a.jsonl, b.jsonl, ...) was written by one writer. For
each file in turn, a model is trained on the other files (the shipped training settings) and the file is
classified three ways: the signals alone, the model alone, and the signals and the model combined as `route`
does (`classify` with the config's `combine:` settings). The figures of every held-out file are printed, and
those of all files pooled (every message predicted by a model that never saw its writer).

Stratified k-fold (what `emailrouter train` prints) mixes every writer into every fold, so the model has
always seen the writer of the message it predicts; this is the harder and more honest test, the one that
mimics a writer (or a real customer) the corpus does not have. Never point it at corpus/heldout.

`--tune` also prints the `combine:` settings that do best on the pooled held-out predictions (the same search
as `emailrouter train -c`, which tunes on stratified folds), and the figures under them.

    .venv/bin/python benchmarks/writers.py [CORPUS_FOLDER] [-c CONFIG] [--json] [--errors N] [--tune]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from emailrouter.config.loader import find_config, load_config  # noqa: E402
from emailrouter.ops.evaluate import Figures, evaluate  # noqa: E402
from emailrouter.ops.training import (  # noqa: E402
    Example,
    TrainSettings,
    combine_yaml,
    combined_figures,
    fit,
    model_figures,
    read_corpus,
    signal_evidence,
    tune_combine,
)


def _line(name: str, f: Figures) -> str:
    return (
        f"{name:<22} intent {100 * f.accuracy:5.1f}%  unknown {100 * f.unknown_share:5.1f}%"
        f" (real intent left unknown {100 * f.missed_to_unknown:4.1f}%)"
        f"  hard P {100 * f.hard.precision:5.1f}% R {100 * f.hard.recall:5.1f}% (n {f.n})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("corpus", nargs="?", default=str(ROOT / "corpus" / "train"))
    parser.add_argument("-c", "--config", help="config folder or file (default: ./config)")
    parser.add_argument("--json", action="store_true", help="the figures as JSON")
    parser.add_argument("--errors", type=int, default=0, help="print up to N misclassified messages per writer")
    parser.add_argument("--tune", action="store_true", help="also tune combine: on the pooled held-out predictions")
    args = parser.parse_args()

    folder = Path(args.corpus)
    if "heldout" in folder.parts:
        print("error: leave-one-writer-out runs on training data only, never on corpus/heldout", file=sys.stderr)
        return 2
    files = sorted(p for p in folder.iterdir() if p.suffix in (".jsonl", ".csv") and p.is_file())
    if len(files) < 2:
        print(f"error: {folder}: needs at least two files (one per writer)", file=sys.stderr)
        return 2
    config = load_config(find_config(args.config), model=False)
    signals = config.signals
    by_file: dict[str, list[Example]] = {f.stem: read_corpus(str(f)) for f in files}
    settings = TrainSettings()
    results: dict[str, dict[str, Figures]] = {}
    pooled: dict[str, list[tuple[Example, Any]]] = {"signals": [], "model": [], "combined": []}
    started = time.perf_counter()
    for name, held in by_file.items():
        train = [e for other, es in by_file.items() if other != name for e in es]
        model = fit(train, settings)
        predictions = [model.predict(e.subject, e.text) for e in held]
        with_model = dataclasses.replace(signals, model=model)
        plain = dataclasses.replace(signals, model=None)
        results[name] = {
            "signals": evaluate(held, plain),
            "model": model_figures(held, predictions),
            "combined": evaluate(held, with_model),
        }
        pooled["model"] += list(zip(held, predictions, strict=True))
        if args.errors:
            _print_errors(name, held, with_model, args.errors)
    all_examples = [e for es in by_file.values() for e in es]
    # pooled: each message as classified with the model that did not see its writer
    pooled_figures = {
        "signals": _pool([results[n]["signals"] for n in by_file]),
        "model": model_figures(all_examples, [p for _, p in pooled["model"]]),
        "combined": _pool([results[n]["combined"] for n in by_file]),
    }
    elapsed = time.perf_counter() - started
    if args.json:
        out = {
            "corpus": str(folder),
            "writers": {n: {k: f.as_json() for k, f in r.items()} for n, r in results.items()},
            "pooled": {k: f.as_json() for k, f in pooled_figures.items()},
            "combine": dataclasses.asdict(signals.combine),
        }
        print(json.dumps(out, ensure_ascii=False, indent=2))
        return 0
    print(f"leave-one-writer-out on {folder} ({len(all_examples)} messages, {len(files)} writers, {elapsed:.0f} s)")
    print(f"combine: {dataclasses.asdict(signals.combine)}\n")
    for name, r in results.items():
        print(f"held out: {name}")
        for kind in ("signals", "model", "combined"):
            print("  " + _line(kind, r[kind]))
    print("\npooled (every message by a model that never saw its writer)")
    for kind in ("signals", "model", "combined"):
        print("  " + _line(kind, pooled_figures[kind]))
    if args.tune:
        predictions = [p for _, p in pooled["model"]]
        evidence = signal_evidence(all_examples, signals)
        tuned = tune_combine(all_examples, predictions, evidence)
        print("\ncombine settings that do best on the pooled held-out predictions:")
        print(combine_yaml(tuned))
        print("  " + _line("combined, tuned", combined_figures(all_examples, predictions, evidence, tuned)))
        start = 0
        for name, held in by_file.items():
            part = slice(start, start + len(held))
            start += len(held)
            f = combined_figures(held, predictions[part], evidence[part], tuned)
            print("    " + _line(f"held out {name}", f))
    return 0


def _pool(parts: list[Figures]) -> Figures:
    """Figures of several held-out files together, from their confusion matrices and hard counts."""
    from emailrouter.core.model import INTENTS
    from emailrouter.ops.evaluate import figures

    truth: list[Any] = []
    predicted: list[Any] = []
    hard_truth: list[bool] = []
    hard_predicted: list[bool] = []
    for f in parts:
        for t in INTENTS:
            for p in INTENTS:
                truth += [t] * f.confusion[t][p]
                predicted += [p] * f.confusion[t][p]
        h = f.hard
        hard_truth += [True] * h.tp + [False] * h.fp + [True] * h.fn + [False] * h.tn
        hard_predicted += [True] * h.tp + [True] * h.fp + [False] * h.fn + [False] * h.tn
    return figures(truth, predicted, hard_truth, hard_predicted)


def _print_errors(name: str, held: list[Example], signals: Any, limit: int) -> None:
    from emailrouter.core.classify import classify

    shown = 0
    for e in held:
        c = classify(e.subject, e.text, signals)
        if c.intent != e.intent or c.hard != e.hard:
            shown += 1
            text = " ".join(f"{e.subject} | {e.text}".split())[:300]
            said = f"label {e.intent}/{'H' if e.hard else '-'} got {c.intent}/{'H' if c.hard else '-'}"
            print(f"ERR {name} {e.id} {said}: {text}")
            if shown >= limit:
                break


if __name__ == "__main__":
    raise SystemExit(main())
