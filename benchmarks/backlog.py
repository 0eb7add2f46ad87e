"""A backlog that exercises the whole job: thousands of senders, every segment, intent and hard complaints.

The customer text comes from our own training corpus (corpus/train/*.jsonl, written for this project),
so the mix of intents and hard complaints is the one the classifier was built for; each mail gets its
own sender, and senders of a privileged segment (DES, DGS, DBS) come from the directory this module
also writes (`directory_csv`) and carry our receiving server's `Authentication-Results: dmarc=pass`,
as real customers' mail does. The size follows benchmarks/drain.py's legacy mail (text + HTML
alternative, 15 % with a 20-300 KB attachment), so that the baseline moves the same bytes.

Mix (by sender): DCS 60 %, DBS 20 %, DES 12 %, DGS 8 %; about 8 % of mails are hard complaints; the
intent of each mail is the corpus text's label.
"""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
AUTHSERV = "mx.cc.example.co.id"  # config/emailrouter.yaml's trust.authserv_id
SEGMENTS = (("DCS", 0.60), ("DBS", 0.20), ("DES", 0.12), ("DGS", 0.08))
TONES = {"DCS": "consumer", "DBS": "business", "DES": "enterprise", "DGS": "government"}
HARD_SHARE = 0.08
FREEMAIL = ("gmail.com", "yahoo.co.id", "yahoo.com", "outlook.com", "icloud.com")
FIRST = ("budi", "rina", "agus", "siti", "dewi", "andi", "putri", "eko", "wahyu", "nur", "fajar", "intan", "yusuf")
LAST = ("santoso", "wijaya", "lestari", "pratama", "hidayat", "saputra", "kusuma", "nugroho", "rahma", "halim")
WORDS = ("maju", "jaya", "sentosa", "abadi", "makmur", "sejahtera", "mandiri", "nusantara", "prima", "karya")


@dataclass(frozen=True)
class Text:
    subject: str
    text: str
    intent: str
    hard: bool


def corpus_texts() -> dict[tuple[str, bool], list[Text]]:
    """The training corpus by (tone, hard)."""
    by: dict[tuple[str, bool], list[Text]] = {}
    for path in sorted((ROOT / "corpus" / "train").glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            text = Text(row["subject"], row["text"], row["intent"], bool(row["hard"]))
            by.setdefault((row["tone"], text.hard), []).append(text)
    return by


@dataclass(frozen=True)
class Sender:
    address: str
    display: str
    segment: str


class Senders:
    """Customers by segment: consumers on free mail, the rest on their organisation's domain."""

    def __init__(self, rng: random.Random, organisations: int = 400) -> None:
        self.rng = rng
        self.domains: dict[str, list[tuple[str, str]]] = {"DBS": [], "DES": [], "DGS": []}
        for i in range(organisations):
            segment = ("DBS", "DBS", "DES", "DGS")[i % 4]
            word = f"{rng.choice(WORDS)}{rng.choice(WORDS)}{i}"
            if segment == "DGS":
                domain, name = f"dinas{word}.kab{i}.go.id", f"Dinas {word.title()}"
            elif segment == "DES":
                domain, name = f"{word}.co.id", f"PT {word.title()} Tbk"
            else:
                domain, name = f"toko{word}.id", f"CV {word.title()}"
            self.domains[segment].append((domain, name))
        self.count = 0

    def directory_csv(self) -> str:
        """customers.csv rows for every organisation (DGS ones too: *.go.id alone would do for them)."""
        rows = ["match,segment,name"]
        for segment, entries in self.domains.items():
            rows += [f"{domain},{segment},{name}" for domain, name in entries]
        return "\n".join(rows) + "\n"

    def pick(self) -> Sender:
        self.count += 1
        rng = self.rng
        segment = rng.choices([s for s, _ in SEGMENTS], [w for _, w in SEGMENTS])[0]
        first, last = rng.choice(FIRST), rng.choice(LAST)
        local = f"{first}.{last}{self.count}"
        if segment == "DCS":
            return Sender(f"{local}@{rng.choice(FREEMAIL)}", f"{first.title()} {last.title()}", segment)
        domain, _ = rng.choice(self.domains[segment])
        return Sender(f"{local}@{domain}", f"{first.title()} {last.title()}", segment)


def _html(text: str) -> str:
    # a paragraph a line: SMTP refuses lines over 998 bytes (and so does the sink)
    lines = [line for line in text.split("\r\n")]
    return "<html><body>\r\n" + "\r\n".join(f"<p>{line}</p>" for line in lines) + "\r\n</body></html>"


def _wrap(text: str, width: int = 76) -> str:
    out: list[str] = []
    for paragraph in text.splitlines() or [""]:
        line = ""
        for word in paragraph.split(" "):
            if line and len(line) + 1 + len(word) > width:
                out.append(line)
                line = word
            else:
                line = f"{line} {word}" if line else word
        out.append(line)
    return "\r\n".join(out)


def mails(seed: int, count: int) -> tuple[Senders, Iterator[tuple[bytes, Sender, Text]]]:
    """The directory's senders and an iterator over `count` mails: (raw bytes, sender, corpus text)."""
    rng = random.Random(seed)
    senders = Senders(rng)
    texts = corpus_texts()

    def generate() -> Iterator[tuple[bytes, Sender, Text]]:
        for i in range(count):
            sender = senders.pick()
            hard = rng.random() < HARD_SHARE
            pool = texts.get((TONES[sender.segment], hard)) or texts[(TONES[sender.segment], not hard)]
            text = rng.choice(pool)
            body = _wrap(text.text) + "\r\n\r\n" + sender.display + "\r\n"
            subject = text.subject or " ".join(text.text.split()[:6])[:60]
            head = (
                f"From: {sender.display} <{sender.address}>\r\nTo: cs@cc.example.co.id\r\n"
                f"Subject: {subject}\r\nMessage-ID: <backlog-{seed}-{i}@{sender.address.split('@')[1]}>\r\n"
                "Date: Mon, 23 Nov 2026 08:00:00 +0700\r\nMIME-Version: 1.0\r\n"
            )
            if sender.segment != "DCS":
                domain = sender.address.split("@")[1]
                head += f"Authentication-Results: {AUTHSERV}; dmarc=pass header.from={domain}\r\n"
            alt = (
                'Content-Type: multipart/alternative; boundary="a"\r\n\r\n--a\r\nContent-Type: text/plain; '
                f"charset=utf-8\r\n\r\n{body}\r\n--a\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
                f"{_html(body)}\r\n--a--\r\n"
            )
            if rng.random() < 0.15:
                payload = base64.encodebytes(rng.randbytes(rng.randint(20_000, 300_000))).decode()
                mixed = (
                    'Content-Type: multipart/mixed; boundary="m"\r\n\r\n--m\r\n' + alt + "--m\r\n"
                    'Content-Type: application/pdf; name="scan.pdf"\r\nContent-Transfer-Encoding: base64\r\n'
                    'Content-Disposition: attachment; filename="scan.pdf"\r\n\r\n'
                    + payload.replace("\n", "\r\n")
                    + "--m--\r\n"
                )
                raw = head + mixed
            else:
                raw = head + alt
            yield raw.encode(), sender, text

    return senders, generate()
