"""Fuzz: 10,000 generated and mutated messages through parse -> compose. Nothing escapes, no header breaks."""

from __future__ import annotations

import random
import time

from emailrouter.config.loader import Config
from emailrouter.core.pipeline import route
from tests.conftest import DATA, NOW

SEEDS = [p.read_bytes() for p in sorted(DATA.glob("*.eml"))]
NASTY_HEADERS = [
    b"Subject: =?utf-8?q?Halo=0D=0ABcc:_victim@evil.example?=",
    b"Subject: =?utf-8?b?SGFsbw0KDQpCY2M6IHZpY3RpbUBldmlsLmV4YW1wbGU=?=",
    b"From: =?utf-8?q?Budi=0D=0ABcc=3A_x=40evil.example?= <budi@gmail.com>",
    b'From: "a\r\n b" <a@b.example>',
    b"From: alice@example.org)<bob@example.com>",
    b"From: <>",
    b"From: a@b.example, c@d.example",
    b"From: =?x-unknown?q?zz?= <z@z.example>",
    b"Reply-To: x@y.example\r\nBcc: spoof@evil.example",
    b"Message-ID: <a\r\n b@c>",
    b"References: " + b"<r@x> " * 500,
    b"Subject: " + b"A" * 50_000,
    b"Subject: \xff\xfe\x00 broken \xe2\x80\xa8 line",
    b"Content-Type: multipart/mixed",
    b'Content-Type: text/plain; charset="klingon"',
    b"Content-Transfer-Encoding: base64",
    b"Content-Type: multipart/report; report-type=delivery-status; boundary=b",
    b"Auto-Submitted: auto-replied",
    b"Authentication-Results: mx.cc.example.co.id; dmarc=pass header.from=pertamina.co.id",
]


def deep_nesting(depth: int) -> bytes:
    head = b"From: deep@gmail.com\r\nSubject: deep\r\nMIME-Version: 1.0\r\n"
    body = b"internet mati\r\n"
    for i in range(depth):
        body = (
            f'Content-Type: multipart/mixed; boundary="b{i}"\r\n\r\n--b{i}\r\n'.encode()
            + body
            + f"\r\n--b{i}--\r\n".encode()
        )
    return head + body


def many_parts(count: int) -> bytes:
    parts = b"".join(b"--b\r\nContent-Type: text/plain\r\n\r\nbagian\r\n" for _ in range(count))
    return (
        b"From: parts@gmail.com\r\nSubject: parts\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n' + parts + b"--b--\r\n"
    )


def mutate(rng: random.Random, raw: bytes) -> bytes:
    choice = rng.randrange(7)
    data = bytearray(raw)
    if choice == 0:  # flip bytes
        for _ in range(rng.randint(1, 30)):
            if data:
                data[rng.randrange(len(data))] = rng.randrange(256)
    elif choice == 1:  # truncate
        del data[rng.randrange(len(data) + 1) :]
    elif choice == 2:  # add nasty headers on top
        for header in rng.sample(NASTY_HEADERS, rng.randint(1, 4)):
            data[0:0] = header + b"\r\n"
    elif choice == 3:  # splice two messages
        other = rng.choice(SEEDS)
        cut = rng.randrange(len(data) + 1)
        data = data[:cut] + other[rng.randrange(len(other) + 1) :]
    elif choice == 4:  # insert CR/LF and NULs at random places
        for _ in range(rng.randint(1, 10)):
            data[rng.randrange(len(data) + 1) : 0] = rng.choice([b"\r", b"\n", b"\r\n ", b"\x00", b"=?", b"?="])
    elif choice == 5:
        return deep_nesting(rng.randint(1, 200)) if rng.random() < 0.5 else many_parts(rng.randint(1, 1500))
    else:  # random junk, sometimes with a header block
        junk = rng.randbytes(rng.randint(0, 3000))
        return (b"From: junk@gmail.com\r\nSubject: junk\r\n\r\n" + junk) if rng.random() < 0.5 else junk
    return bytes(data)


def test_ten_thousand_mutated_messages_never_break_the_pipeline(config: Config) -> None:
    """10,000 mutated fixtures, nested and huge-part mails, and junk: no exception, no CR/LF in any header we
    compose, every composed message serialises, and each mail takes bounded time."""
    rng = random.Random(20261129)
    slowest = 0.0
    for i in range(10_000):
        raw = mutate(rng, rng.choice(SEEDS))
        started = time.perf_counter()
        routing = route(raw, config, NOW)
        slowest = max(slowest, time.perf_counter() - started)
        for out in routing.outgoing:
            for name, value in out.message.raw_items():
                assert "\r" not in str(value) and "\n" not in str(value), (i, name)
            if i % 10 == 0:
                head = out.message.as_bytes().split(b"\r\n\r\n", 1)[0]
                assert not any(line.lower().startswith(b"bcc:") for line in head.split(b"\r\n")), i
    assert slowest < 5.0, slowest
