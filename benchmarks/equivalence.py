"""Whether a change to the pipeline changed any result: a digest of every route() result over a fixed set of mails.

The mails: the benchmark's synthetic corpus (benchmarks/pipeline.py, 3,000 messages, seed 2026, and 1,000 more
with seed 7), every tests/data/**/*.eml, and every text of corpus/ (train and held-out) sent as a mail body in a
few shapes (plain, multipart/alternative with HTML, a reply quoting earlier mail, an encoded subject, latin-1),
from senders of every segment, some of them with earlier contacts in their history. For each mail, each part of
the result is digested on its own: the parsed view, the segmentation, the classification (signals, scores,
model output, the normalised reading), the facts, the decision, what `explain` prints (text and JSON), the
suppressed and failed replies, and the bytes of every outgoing message (mime.as_bytes). So a mismatch names the
mail and the part.

    .venv/bin/python benchmarks/equivalence.py write FILE   # before a change
    .venv/bin/python benchmarks/equivalence.py check FILE   # after it: exit status 1 if anything differs
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.header import Header
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import pipeline as bench  # noqa: E402

from emailrouter.config.loader import Config, load_config  # noqa: E402
from emailrouter.core import mime  # noqa: E402
from emailrouter.core.classify import Contact  # noqa: E402
from emailrouter.core.explain import as_json, as_text, outcome  # noqa: E402
from emailrouter.core.pipeline import NO_MEMORY, Memory, Routing, route  # noqa: E402

NOW = datetime(2026, 11, 29, 10, 30, tzinfo=UTC)
SENDERS = [
    *bench.SENDERS,
    "Budi Santoso <budi.santoso@gmail.com>",
    '"Rina, Finance" <rina@yahoo.co.id>',
    "=?utf-8?q?Dewi_Lestari?= <dewi@example.co.id>",
    "procurement@bank-mandiri.co.id",
    "helpdesk@kemenkeu.go.id",
    "mailer-daemon@example.com",
]
INTENTS = ("fault", "information", "request", "unknown")


def _history(i: int) -> Memory:
    """Earlier contacts for some senders: none, one, three or five about varying intents (history signals)."""
    count = (0, 0, 1, 3, 5)[i % 5]
    return Memory(tuple(Contact(NOW - timedelta(days=1 + k * 2), INTENTS[(i + k) % 4]) for k in range(count)))


def _corpus_mail(i: int, subject: str, text: str) -> bytes:
    """A corpus text as the body of a mail; the shape depends on `i`."""
    sender = SENDERS[i % len(SENDERS)]
    shape = i % 6
    if shape == 4 and not subject.isascii():
        subject_header = subject
    elif shape == 4:
        subject_header = Header(subject + " — tolong", "utf-8").encode()
    else:
        subject_header = subject
    head = (
        f"From: {sender if '<' in sender else 'Pelanggan ' + str(i) + ' <' + sender + '>'}\r\n"
        f"To: cs@cc.example.co.id\r\nSubject: {subject_header}\r\nMessage-ID: <eq-{i}@example.com>\r\n"
        f"Date: Mon, 23 Nov 2026 08:00:00 +0700\r\nMIME-Version: 1.0\r\n"
    )
    if i % 7 == 0:
        head += "In-Reply-To: <er.abc@cc.example.co.id>\r\nReferences: <a@x> <er.abc@cc.example.co.id>\r\n"
    if i % 11 == 0:
        head += "Auto-Submitted: auto-replied\r\n"
    if i % 13 == 0:
        head += "X-Auto-Response-Suppress: All\r\n"
    body = text
    if shape == 2:
        body += "\n\nPada Sen, 22 Nov 2026 CS menulis:\n> Terima kasih telah menghubungi kami.\n> Salam"
    if shape == 3:
        html = "<html><body>" + "".join(f"<p>{line}</p>" for line in body.splitlines()) + "</body></html>"
        part = "Content-Type: text/plain; charset=utf-8\r\n\r\n" + body.replace("\n", "\r\n")
        mail = (
            head
            + 'Content-Type: multipart/alternative; boundary="==a=="\r\n\r\n--==a==\r\n'
            + part
            + "\r\n--==a==\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
            + html
            + "\r\n--==a==--\r\n"
        )
        return mail.encode("utf-8", "surrogateescape")
    if shape == 5:  # HTML only
        html = "<html><body>" + "".join(f"<div>{line}</div>" for line in body.splitlines()) + "</body></html>"
        return (head + "Content-Type: text/html; charset=utf-8\r\n\r\n" + html).encode("utf-8", "surrogateescape")
    if shape == 1:
        data = body.encode("latin-1", "replace")
        return (head + "Content-Type: text/plain; charset=iso-8859-1\r\n\r\n").encode() + data.replace(b"\n", b"\r\n")
    newline = "\n" if i % 4 == 0 else "\r\n"
    return (head.replace("\r\n", newline) + "Content-Type: text/plain; charset=utf-8" + newline * 2).encode() + (
        body.replace("\n", newline).encode("utf-8", "surrogateescape")
    )


def mails() -> Iterator[tuple[str, bytes, Memory]]:
    """(name, raw mail, history) for every mail checked."""
    for seed, count in ((2026, 3000), (7, 1000)):
        for i, (_, raw) in enumerate(bench.corpus(count, seed)):
            yield f"bench-{seed}-{i}", raw, _history(i) if seed == 7 else NO_MEMORY
    for n, path in enumerate(sorted((ROOT / "tests" / "data").rglob("*.eml"))):
        raw = path.read_bytes()
        name = str(path.relative_to(ROOT))
        yield name, raw, NO_MEMORY
        yield name + "+history", raw, _history(n % 4 + 2)
    i = 0
    for path in sorted((ROOT / "corpus").rglob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            subject, text = str(item.get("subject") or ""), str(item.get("text") or "")
            yield f"{path.name}:{item.get('id', i)}", _corpus_mail(i, subject, text), _history(i)
            i += 1


def _json(value: object) -> str:
    return json.dumps(value, sort_keys=True, default=repr, ensure_ascii=False)


def parts(routing: Routing, name: str, config: Config) -> dict[str, str]:
    """Every part of a result, as text to digest."""
    view = routing.view
    view_fields = {k: getattr(view, k) for k in view.__dataclass_fields__ if k not in ("raw", "message")}
    cls = routing.classification
    out = {
        "view": _json(view_fields),
        "segmentation": repr(routing.segmentation),
        "classification": repr(cls) + "\n" + cls.normalised,
        "facts": repr(routing.facts),
        "decision": repr(routing.decision),
        "explain": as_text(routing, name) + "\n" + _json(as_json(routing, name, config.version)),
        "outcome": _json(outcome(routing)),
        "suppressed": repr(routing.suppressed),
        "failed": repr(routing.failed),
        "automated": repr((routing.automated, routing.bounced)),
    }
    for k, o in enumerate(routing.outgoing):
        out[f"outgoing{k}"] = repr((o.action, o.to, o.subject, o.message_id))
        raw = mime.as_bytes(o.message) if o.message is not None else o.call.body if o.call is not None else b""
        out[f"bytes{k}"] = raw.decode("utf-8", "surrogateescape")
    return out


def digests(config: Config) -> dict[str, dict[str, str]]:
    result: dict[str, dict[str, str]] = {}
    for name, raw, history in mails():
        routing = route(raw, config, NOW, history)
        result[name] = {
            k: hashlib.sha256(v.encode("utf-8", "surrogatepass")).hexdigest()[:20]
            for k, v in parts(routing, name, config).items()
        }
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("write", "check"))
    parser.add_argument("file", type=Path)
    parser.add_argument("-c", "--config", default=str(ROOT / "config" / "emailrouter.yaml"))
    args = parser.parse_args()
    current = digests(load_config(args.config))
    if args.mode == "write":
        args.file.write_text(json.dumps(current, indent=0, sort_keys=True) + "\n")
        print(f"{len(current)} mails digested into {args.file}")
        return 0
    before: dict[str, dict[str, str]] = json.loads(args.file.read_text())
    differ = 0
    for name in sorted(before.keys() | current.keys()):
        old, new = before.get(name), current.get(name)
        if old == new:
            continue
        differ += 1
        if old is None or new is None:
            print(f"{name}: only {'after' if old is None else 'before'}")
            continue
        changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
        if differ <= 50:
            print(f"{name}: {', '.join(changed)} differ")
    print(f"{len(current)} mails, {differ} differ" + (" (first 50 shown)" if differ > 50 else ""))
    return 1 if differ else 0


if __name__ == "__main__":
    raise SystemExit(main())
