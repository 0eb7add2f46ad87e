"""CPU per message for parse -> segment -> classify -> decide -> compose, on one core.

Generates a synthetic corpus (default 10,000 messages: 70% small, 25% with a 20-300 KB attachment,
5% over 1 MB; customer text log-normal around 700 characters, 30% replies quoting earlier mail,
half of the small ones multipart/alternative with HTML), runs every message through the router's
pure pipeline, and, in the same run, through a baseline: the standard library parsing the message
(policy.default) and serialising it again, which is the least any mail tool does with a message.
Prints the median and p95 CPU time per message for the router and the baseline, their ratio, and
the figure the target is about: the median for messages of at most 16 KB (target: <= 1 ms).

    .venv/bin/python benchmarks/pipeline.py [--count N] [--seed S]
"""

from __future__ import annotations

import argparse
import base64
import email
import os
import random
import statistics
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from email.policy import default
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from emailrouter.config.loader import load_config  # noqa: E402
from emailrouter.core.pipeline import route  # noqa: E402

SENDERS = [
    "budi.santoso@gmail.com",
    "sinarjaya.printing@gmail.com",
    "noc@it.pertamina.co.id",
    "admin@kominfo.jakarta.go.id",
    "owner@tokobungamelati.id",
    "finance@unknown-company.co.id",
    "rina@yahoo.co.id",
]
SENTENCES = [
    "Selamat pagi, internet di rumah saya mati sejak kemarin malam.",
    "min inet sy lemot bgt dr kmrn, udh restart modem tetap gk bisa.",
    "Mau tanya harga paket 100 Mbps untuk kantor cabang kami?",
    "Kami ingin pasang baru layanan internet di cabang Bandung.",
    "Dear team, our dedicated link has been down since 07:00 this morning.",
    "How much does the business package cost per month?",
    "Sudah berkali-kali lapor tapi belum ada solusi, saya viralkan di medsos!!!",
    "Mohon bantuannya untuk pengecekan, nomor pelanggan 4001234.",
    "Could you tell me the procedure to relocate our line to the new office?",
    "Terima kasih atas perhatiannya. Salam, Budi",
]
FILLER = [
    "Kami sudah mencoba mematikan dan menyalakan kembali perangkatnya.",
    "Lokasi kami di Jalan Merdeka nomor 12, dekat kantor kecamatan.",
    "Please find the details of our site below for your reference.",
    "Mohon dapat ditindaklanjuti secepatnya karena kami bekerja dari rumah.",
    "The equipment was installed by your technician last year.",
    "Untuk konfirmasi bisa hubungi saya di nomor yang tertera di bawah.",
]


def _text(rng: random.Random, size: int) -> str:
    """About `size` characters: signal-bearing sentences mixed with neutral ones, as customers write."""
    out: list[str] = []
    total = 0
    while total < size:
        line = rng.choice(SENTENCES if rng.random() < 0.4 else FILLER)
        out.append(line)
        total += len(line) + 1
    return "\n".join(out)


def _length(rng: random.Random) -> int:
    """Characters a customer writes: log-normal, median ~700, clipped to 100..8000."""
    return int(min(8000, max(100, rng.lognormvariate(6.55, 0.8))))


def make_message(rng: random.Random, i: int) -> tuple[str, bytes]:
    """One synthetic message and its size class."""
    roll = rng.random()
    kind = "small" if roll < 0.70 else ("attachment" if roll < 0.95 else "large")
    sender = rng.choice(SENDERS)
    head = (
        f"From: Customer {i} <{sender}>\r\nTo: cs@cc.example.co.id\r\n"
        f"Subject: {rng.choice(SENTENCES)[:60]}\r\nMessage-ID: <bench-{i}@example.com>\r\n"
        f"Date: Mon, 23 Nov 2026 08:00:00 +0700\r\nMIME-Version: 1.0\r\n"
    )
    text = _text(rng, _length(rng))
    if rng.random() < 0.3:  # a reply: the earlier exchange is quoted below
        text += "\n\nPada Sen, 22 Nov 2026 CS menulis:\n> " + _text(rng, rng.randint(500, 4000)).replace("\n", "\n> ")
    if kind == "small":
        plain = "Content-Type: text/plain; charset=utf-8\r\n\r\n" + text.replace("\n", "\r\n")
        if rng.random() < 0.5:  # most clients send text and HTML
            html = "<html><body>" + "".join(f"<p>{line}</p>" for line in text.splitlines()) + "</body></html>"
            plain = (
                'Content-Type: multipart/alternative; boundary="==a=="\r\n\r\n--==a==\r\n'
                + plain
                + "\r\n--==a==\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
                + html
                + "\r\n--==a==--\r\n"
            )
        return kind, (head + plain).encode()
    size = rng.randint(20_000, 300_000) if kind == "attachment" else rng.randint(1_050_000, 1_500_000)
    payload = base64.encodebytes(rng.randbytes(size)).decode().replace("\n", "\r\n")
    body = (
        'Content-Type: multipart/mixed; boundary="==b=="\r\n\r\n--==b==\r\n'
        "Content-Type: text/plain; charset=utf-8\r\n\r\n" + text.replace("\n", "\r\n") + "\r\n--==b==\r\n"
        'Content-Type: application/pdf; name="scan.pdf"\r\nContent-Disposition: attachment; filename="scan.pdf"\r\n'
        "Content-Transfer-Encoding: base64\r\n\r\n" + payload + "--==b==--\r\n"
    )
    return kind, (head + body).encode()


def corpus(count: int, seed: int) -> Iterator[tuple[str, bytes]]:
    rng = random.Random(seed)
    for i in range(count):
        yield make_message(rng, i)


def baseline(raw: bytes) -> None:
    email.message_from_bytes(raw, policy=default).as_bytes()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("-c", "--config", default=str(ROOT / "config" / "emailrouter.yaml"))
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core
    config = load_config(args.config)
    now = datetime(2026, 11, 29, tzinfo=UTC)
    router: dict[str, list[int]] = {"small": [], "attachment": [], "large": []}
    base: dict[str, list[int]] = {"small": [], "attachment": [], "large": []}
    upto16k: list[int] = []
    base16k: list[int] = []
    clock = time.thread_time_ns
    for kind, raw in corpus(args.count, args.seed):
        t0 = clock()
        route(raw, config, now)
        t1 = clock()
        baseline(raw)
        t2 = clock()
        router[kind].append(t1 - t0)
        base[kind].append(t2 - t1)
        if len(raw) <= 16_384:
            upto16k.append(t1 - t0)
            base16k.append(t2 - t1)

    def ms(values: list[int], q: float = 0.5) -> float:
        if not values:
            return float("nan")
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6

    print(f"corpus: {args.count} messages (seed {args.seed}); CPU time per message on one core, in ms")
    print(f"{'class':<12}{'n':>7}{'router p50':>12}{'router p95':>12}{'base p50':>10}{'ratio':>8}")
    for kind in ("small", "attachment", "large"):
        r, b = router[kind], base[kind]
        ratio = statistics.median(r) / statistics.median(b) if r and b else float("nan")
        print(f"{kind:<12}{len(r):>7}{ms(r):>12.3f}{ms(r, 0.95):>12.3f}{ms(b):>10.3f}{ratio:>8.2f}")
    all_r = [v for vs in router.values() for v in vs]
    all_b = [v for vs in base.values() for v in vs]
    print(
        f"{'all':<12}{len(all_r):>7}{ms(all_r):>12.3f}{ms(all_r, 0.95):>12.3f}{ms(all_b):>10.3f}"
        f"{statistics.median(all_r) / statistics.median(all_b):>8.2f}"
    )
    median16 = ms(upto16k)
    ratio16 = statistics.median(upto16k) / statistics.median(base16k)
    verdict = "meets" if median16 <= 1.0 else "MISSES"
    print(
        f"\nmessages <= 16 KB: n={len(upto16k)}, router median {median16:.3f} ms/message "
        f"(baseline parse+serialise {ms(base16k):.3f} ms, ratio {ratio16:.2f}); target <= 1 ms: {verdict}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
