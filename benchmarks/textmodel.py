"""CPU per mail for the learned text model's inference, on one core (target: <= 0.3 ms for mail of <= 16 KB).

Times what `classify` asks of the model for every mail: the prediction (features of the first
`max_chars` characters, the intent softmax, the hard-complaint sigmoid) and the top features for the
chosen intent and for hard. Texts are synthetic customer mail (log-normal around 700 characters,
Indonesian and English sentences, slang, elongation) and, as the worst case, texts of exactly 16 KB.
The model's word cache starts empty and fills as in the daemon; the first pass over the texts is
counted too ("cold"), since a new word costs more than one seen before.

    .venv/bin/python benchmarks/textmodel.py [--model config/model.json] [--count N] [--seed S]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from emailrouter.config.modelfile import load_model  # noqa: E402
from emailrouter.core.textmodel import TextModel  # noqa: E402

SENTENCES = [
    "Selamat pagi min, internet di rumah saya mati sejak kemarin malam.",
    "inet lemottt bgt dr kmrn, udh restart modem tp tetep gk bisa buka yt",
    "Mau tanya harga paket 100 Mbps untuk kantor cabang kami di Bandung?",
    "Kami ingin pasang baru layanan internet di ruko Jl. Melati No. 8.",
    "Dear team, our dedicated link has been down since 07:00 this morning.",
    "How much does the business package cost per month, including the router?",
    "SUDAH BERKALI2 LAPOR TAPI GA ADA SOLUSI, SAYA VIRALKAN DI MEDSOS!!!",
    "Mohon bantuannya untuk pengecekan, nomor pelanggan 1310555123.",
    "ping ke server game 300ms terus, ngelag parah pas mabar malam",
    "Terima kasih atas perhatiannya. Hormat kami, Budi Santoso, Staf IT",
    "tolong dikoreksi tagihan bulan ini, ada biaya yang tidak pernah saya pakai",
    "bagaimana cara berhenti berlangganan? apa harus datang ke kantor?",
]


def text_of(rng: random.Random, size: int) -> str:
    out: list[str] = []
    total = 0
    while total < size:
        line = rng.choice(SENTENCES)
        out.append(line)
        total += len(line) + 1
    return "\n".join(out)[:size]


def timed(model: TextModel, texts: list[str]) -> list[int]:
    clock = time.thread_time_ns
    out = []
    for text in texts:
        t0 = clock()
        p = model.predict("Re: layanan", text)
        p.top_features(max(p.intent_probabilities, key=p.intent_probabilities.__getitem__))
        p.top_features("hard")
        out.append(clock() - t0)
    return out


def ms(values: list[int], q: float = 0.5) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(ROOT / "config" / "model.json"))
    parser.add_argument("--count", type=int, default=5_000)
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    t0 = time.perf_counter()
    model = load_model(args.model)
    loaded = time.perf_counter() - t0
    rng = random.Random(args.seed)
    typical = [text_of(rng, int(min(8000, max(20, rng.lognormvariate(6.55, 0.8))))) for _ in range(args.count)]
    full = [text_of(rng, 16_384) for _ in range(max(1, args.count // 5))]
    cold = timed(model, typical)
    warm = timed(model, typical)
    worst = timed(model, full)
    size = Path(args.model).stat().st_size
    print(f"model {args.model}: {len(model.weights):,} features, {size:,} bytes, loaded in {loaded * 1000:.0f} ms")
    print(f"features of the first {model.settings.max_chars} characters; CPU time per mail on one core, in ms")
    print(f"{'texts':<28}{'n':>7}{'p50':>9}{'p95':>9}")
    print(f"{'typical (first pass)':<28}{len(cold):>7}{ms(cold):>9.3f}{ms(cold, 0.95):>9.3f}")
    print(f"{'typical (words seen)':<28}{len(warm):>7}{ms(warm):>9.3f}{ms(warm, 0.95):>9.3f}")
    print(f"{'16 KB':<28}{len(worst):>7}{ms(worst):>9.3f}{ms(worst, 0.95):>9.3f}")
    verdict = "meets" if ms(worst) <= 0.3 else "MISSES"
    print(f"\nmail of 16 KB: median {ms(worst):.3f} ms/mail; target <= 0.3 ms: {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
