"""The memory-lean paths give what the plain ones give: parse, the forward's bytes, the content hash, the outbox."""

from __future__ import annotations

import base64
import platform
import random
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from email.message import Message
from pathlib import Path

import pytest

from emailrouter.core import dedupe, guard, mime, parse
from emailrouter.core.model import MessageView
from emailrouter.service.store import MessageKey, Plan, PlannedSend, Store
from tests.conftest import DATA, NOW
from tests.support.sqlite import opened

ROUTER = "router@cc.example.co.id"
OURS = "<er.0123456789abcdef01234567.reply@cc.example.co.id>"  # a Message-ID of the form we generate


def big_mail(attachments: int = 3, size: int = 400_000, seed: int = 1) -> bytes:
    """A mail with customer text, an HTML alternative and base64 attachments."""
    rng = random.Random(seed)
    parts = [
        b'Content-Type: multipart/alternative; boundary="alt"\r\n\r\n--alt\r\nContent-Type: text/plain; charset=utf-8'
        b"\r\n\r\nInternet mati sejak kemarin, mohon bantuan.\r\n--alt\r\n"
        b"Content-Type: text/html; charset=utf-8\r\n\r\n"
        b"<p>Internet mati sejak kemarin</p>\r\n--alt--\r\n"
    ]
    for n in range(attachments):
        data = base64.encodebytes(rng.randbytes(size)).replace(b"\n", b"\r\n")
        parts.append(
            f'Content-Type: image/jpeg; name="foto{n}.jpg"\r\nContent-Transfer-Encoding: base64\r\n'
            f'Content-Disposition: attachment; filename="foto{n}.jpg"\r\n\r\n'.encode()
            + data
        )
    body = b"".join(b"--mix\r\n" + p for p in parts) + b"--mix--\r\n"
    head = (
        b"From: Budi <budi@gmail.com>\r\nTo: cs@cc.example.co.id\r\nSubject: Internet mati\r\n"
        b'Message-ID: <lean@example.com>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="mix"\r\n\r\n'
    )
    return head + body


# ---------------------------------------------------------------------- parse: the skeleton


def _entity(rng: random.Random, depth: int, boundary: str) -> bytes:
    """A random MIME entity (LF line ends): nested multiparts whose boundaries extend their parent's, attached
    messages and reports, base64 leaves with odd endings, fake delimiters in the middle of lines."""
    pick = rng.random()
    if depth < 4 and pick < 0.35:
        sub = boundary + rng.choice(["", "x", "_alt", "-1"]) + str(depth)
        kind = rng.choice(["mixed", "alternative", "related", "report; report-type=delivery-status", "digest"])
        quoted = rng.choice(['"{}"', "{}", ' "{}" ']).format(sub)
        parts = [_entity(rng, depth + 1, sub) for _ in range(rng.randint(0, 4))]
        preamble = rng.choice([b"", b"preamble\n", f"--{sub}x is no delimiter\n".encode()])
        body = b"".join(f"--{sub}".encode() + rng.choice([b"", b" ", b"\t "]) + b"\n" + p + b"\n" for p in parts)
        close = rng.choice([f"--{sub}--\n".encode(), f"--{sub}-- \nepilogue\n".encode(), b""])
        return f"Content-Type: multipart/{kind}; boundary={quoted}\n\n".encode() + preamble + body + close
    if depth < 4 and pick < 0.45:
        ctype = rng.choice(["message/rfc822", "message/global", "message/delivery-status", "text/rfc822-headers"])
        inner = f"Message-ID: {OURS}\nFrom: x@y.example\n".encode() + _entity(rng, depth + 1, boundary + "m")
        if ctype == "message/delivery-status":
            inner = b"Reporting-MTA: dns; mx\n\nFinal-Recipient: rfc822; a@b.example\nAction: failed\nStatus: 5.1.1\n"
        encoding = rng.choice([b"", b"Content-Transfer-Encoding: base64\n"])
        return f"Content-Type: {ctype}\n".encode() + encoding + b"\n" + inner
    ctype = rng.choice(["application/pdf", "image/jpeg", "text/plain", "text/html", "text/csv", "application/zip"])
    disposition = rng.choice(
        [
            "",
            'Content-Disposition: attachment; filename="f.bin"\n',
            "Content-Disposition: inline\n",
            "Content-Disposition: attachment; filename*=utf-8''%E2%82%AC.pdf\n",
        ]
    )
    data = rng.randbytes(rng.randint(0, 3000))
    cte = ""
    if rng.random() < 0.85:
        cte = "Content-Transfer-Encoding: base64\n"
        data = base64.encodebytes(data)
        if rng.random() < 0.2:
            data = data.rstrip(b"\n") + rng.choice([b"", b"\n\n\n", b"  \n", b"\x0c\n", b"=\n"])
    else:
        data = data.replace(b"\r", b"").replace(b"\0", b"")
    if rng.random() < 0.3:  # something like a delimiter inside the body
        fake = rng.choice([b" text --", b"\n--"]) + boundary.encode() + rng.choice([b"\n", b"x\n", b"-- x\n"])
        data = data.replace(b"\n", fake, 1)
    name = rng.choice(['; name="n"', "", ""])
    odd = rng.choice(["", "", "X-Junk line without colon\n", " folded start\n", "Content-Type: image/png\n"])
    return f"Content-Type: {ctype}{name}\n{disposition}{cte}{odd}\n".encode() + data


def generated_mails(count: int, seed: int) -> Iterator[bytes]:
    """Random MIME mails with LF, CRLF, CR or mixed line ends, half of them damaged afterwards."""
    rng = random.Random(seed)
    head = b"From: Budi <budi@gmail.com>\nTo: cs@cc.example.co.id\nSubject: uji\nMessage-ID: <g@x>\nMIME-Version: 1.0\n"
    for _ in range(count):
        raw = head + _entity(rng, 0, rng.choice(["b", "=_b", "--b"]))
        ends = rng.random()
        if ends < 0.5:
            raw = raw.replace(b"\n", b"\r\n")
        elif ends < 0.6:
            raw = raw.replace(b"\n", b"\r")
        elif ends < 0.7:
            raw = raw.replace(b"\n", b"\r\n", rng.randint(0, 50))
        if rng.random() < 0.5:
            data = bytearray(raw)
            for _ in range(rng.randint(1, 5)):
                at = rng.randrange(len(data) + 1)
                data[at:at] = rng.choice([b"\r", b"\n", b"\r\n", b"\n\n", b"--b\n", b"--b--\n", b"\r\r\n", b"=", b":"])
            raw = bytes(data[: rng.randint(len(data) // 2, len(data))])
        yield raw


def _tree(msg: Message | None) -> list[tuple[object, ...]]:
    """Every part: type, headers (but the skeleton's), defects, payload (None for a body left out), preamble,
    epilogue."""
    if msg is None:
        return []
    out: list[tuple[object, ...]] = []
    for part in msg.walk():
        payload = part._payload  # type: ignore[attr-defined]  # as parsed, not decoded
        omitted = part.get(parse.OMITTED) is not None
        out.append(
            (
                part.get_content_type(),
                [(k, str(v)) for k, v in part.items() if k != parse.OMITTED],
                [type(d).__name__ for d in part.defects],
                payload if isinstance(payload, str) and not omitted else None,
                part.preamble,
                part.epilogue,
            )
        )
    return out


def _lean_and_plain(raw: bytes, monkeypatch: pytest.MonkeyPatch) -> tuple[MessageView, MessageView]:
    """parse(raw) with every base64 attachment left out, and parse(raw) whole."""
    with monkeypatch.context() as m:
        m.setattr(parse, "SKELETON_FROM", 0)
        m.setattr(parse, "BIG_LEAF", 0)
        lean = parse.parse(raw)
    with monkeypatch.context() as m:
        m.setattr(parse, "skeleton", lambda raw: raw)
        plain = parse.parse(raw)
    return lean, plain


def _same_for_the_router(lean: MessageView, plain: MessageView) -> bool:
    """The views are equal, and so are the part trees (where the skeleton kept a body) and the guard's findings."""
    lean_tree, plain_tree = _tree(lean.message), _tree(plain.message)
    if lean != plain or len(lean_tree) != len(plain_tree):
        return False
    for a, b in zip(lean_tree, plain_tree, strict=True):
        if a[:3] + a[4:] != b[:3] + b[4:] or (a[3] is not None and a[3] != b[3]):
            return False
    own = frozenset({ROUTER})
    return guard.bounce_reports(lean, ROUTER) == guard.bounce_reports(plain, ROUTER) and guard.automated_reason(
        lean, own, ROUTER
    ) == guard.automated_reason(plain, own, ROUTER)


def test_a_big_mail_parses_the_same_without_its_attachment_bodies(monkeypatch: pytest.MonkeyPatch) -> None:
    """At the shipped thresholds a 1.6 MB mail is parsed as a skeleton of a few kB, and the view (text, names,
    decoded sizes, defects) is what the whole mail gives."""
    raw = big_mail()
    assert len(parse.skeleton(raw)) < 5_000
    lean = parse.parse(raw)
    monkeypatch.setattr(parse, "SKELETON_FROM", 10**12)
    plain = parse.parse(raw)
    assert lean == plain and lean.text.startswith("Internet mati sejak kemarin")
    assert [(a.filename, a.size) for a in lean.attachments] == [(f"foto{n}.jpg", 400_000) for n in range(3)]


def test_a_small_mail_is_parsed_whole() -> None:
    """Below SKELETON_FROM the skeleton is the mail itself."""
    raw = big_mail(1, 10_000)
    assert parse.skeleton(raw) is raw


@pytest.mark.parametrize("name", sorted(p.name for p in DATA.glob("*.eml")))
def test_each_fixture_parses_the_same_as_a_skeleton(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every fixture, with all its base64 attachments left out, gives the router what the whole mail gives."""
    lean, plain = _lean_and_plain((DATA / name).read_bytes(), monkeypatch)
    assert _same_for_the_router(lean, plain)


def test_generated_and_damaged_mime_parses_the_same_as_a_skeleton(monkeypatch: pytest.MonkeyPatch) -> None:
    """1,500 random MIME trees (boundaries that extend their parent's, attached messages and delivery reports,
    fake delimiters, every kind of line end, damaged): the skeleton changes nothing the router sees, and it does
    leave bodies out of many of them."""
    emptied = 0
    for n, raw in enumerate(generated_mails(1_500, seed=20261201)):
        lean, plain = _lean_and_plain(raw, monkeypatch)
        assert _same_for_the_router(lean, plain), n
        emptied += any(part.get(parse.OMITTED) is not None for part in (lean.message or Message()).walk())
    assert emptied > 200


def test_an_attachments_own_omitted_header_on_a_real_body_is_ignored() -> None:
    """A part that carries the skeleton's header itself but has a body is counted by its body."""
    raw = (
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhalo\r\n'
        b"--b\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n"
        b"X-EmailRouter-Omitted-Bytes: 999999\r\n\r\nAAAA\r\n--b--\r\n"
    )
    assert [a.size for a in parse.parse(raw).attachments] == [3]


# ---------------------------------------------------------------------- mime: the forward's bytes


def test_the_forward_bytes_are_the_standard_generators() -> None:
    """mime.as_bytes gives byte for byte what as_bytes() gives, the original spliced in once."""
    msg = mime.new([("From", "a@example.com"), ("Message-ID", "<f@example.com>")])
    mime.mixed(msg, [mime.text_part("ringkasan"), mime.message_part(big_mail(1, 50_000))])
    assert mime.as_bytes(msg) == msg.as_bytes()


def test_a_marker_in_the_text_falls_back_to_the_standard_generator() -> None:
    """Text that holds the splice marker itself (a customer may write anything) still gives the standard bytes."""
    msg = mime.new([("From", "a@example.com"), ("Message-ID", "<g@example.com>")])
    text = mime.text_part("ringkasan")
    text.set_payload("a \x00emailrouter-prebuilt\x00 b")
    mime.mixed(msg, [text, mime.message_part(big_mail(1, 5_000))])
    assert b"\x00emailrouter-prebuilt\x00" in mime.as_bytes(msg)
    assert mime.as_bytes(msg) == msg.as_bytes()


@pytest.mark.parametrize("raw", [b"", b"abc", b"ab\r\ncdef\r\n", b"a\rb", b"x" * 5 + b"\n" + b"y" * 3, b"a\r\r\nb\r"])
def test_longest_line_is_the_longest_line(raw: bytes) -> None:
    """longest_line agrees with splitting the mail into lines (CR LF and LF ends)."""
    assert mime.longest_line(raw) == max(map(len, raw.replace(b"\r\n", b"\n").split(b"\n")))


def test_longest_line_finds_a_long_line_across_blocks() -> None:
    """Whatever the block size, the longest line is found whole."""
    raw = b"ab\r\n" * 10 + b"z" * 2_000 + b"\r\n" + b"cd\n" * 10
    assert {mime.longest_line(raw, block) for block in (1, 3, 100, 1 << 20)} == {2_000}


def test_a_crlf_original_is_attached_as_it_is_and_others_made_crlf() -> None:
    """A CRLF mail is attached without a copy; LF and CR line ends are made CRLF."""
    crlf = b"Subject: a\r\n\r\nhalo\r\n"
    attached = mime.message_part(crlf).get_payload(0)
    assert isinstance(attached, mime.Prebuilt) and attached.raw is crlf
    for other in (b"Subject: a\n\nhalo\n", b"Subject: a\r\rhalo\r", b"Subject: a\r\n\nhalo\r"):
        again = mime.message_part(other).get_payload(0)
        assert isinstance(again, mime.Prebuilt) and again.raw == crlf


# ---------------------------------------------------------------------- dedupe: the content hash


def test_the_content_hash_does_not_depend_on_the_block_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hashing the body in blocks gives the hash of the whole, whatever the block size."""
    rng = random.Random(5)
    samples = [b"From: a\r\n\r\n" + bytes(rng.choice(b"ab \t\r\n") for _ in range(80)) for _ in range(300)]
    whole = [dedupe.content_hash(s) for s in samples]
    blocks = dedupe._blocks
    for size in (1, 2, 3, 7):
        monkeypatch.setattr(dedupe, "_blocks", lambda raw, start, size=size: blocks(raw, start, size))
        assert [dedupe.content_hash(s) for s in samples] == whole


def test_the_content_hash_keeps_its_values() -> None:
    """The hashes are those state files already hold (computed by the code before blocks)."""
    samples = [
        b"From: Budi <budi@gmail.com>\r\nSubject: Internet mati\r\n\r\nInternet mati \t\r\nsejak kemarin.\r\n\r\n \r\n",
        b"From: a@b.example\n\nline one  \nline two\r\n\t\n",
        b"Subject: x\r\n\r\n" + b"abc \r\n" * 300_000 + b" \r\n" * 10,
    ]
    assert [dedupe.content_hash(s)[7:19] for s in samples] == ["816311a1f6b6", "f953ec141cb1", "2c8e7ccd089c"]


# ---------------------------------------------------------------------- the outbox's bodies


def test_an_outbox_body_round_trips_and_only_its_headers_stay_once_sent(tmp_path: Path) -> None:
    """The body is written in slices and read whole; a claim leaves it alone; once sent only the headers stay,
    in the outbox row, and the body row is gone."""
    path = tmp_path / "state.sqlite3"
    store = Store(path)
    head = b"Subject: x\r\nMessage-ID: <m@x>\r\n\r\n"
    raw = head + random.Random(2).randbytes(3_000_000)
    send = PlannedSend("forward", "dcs", "router@x", ("unit@x",), "<m@x>", raw)
    store.plan([Plan(MessageKey("a", "INBOX", 1, 1), "<x>", "r", {}, [send], NOW, None)])
    (entry_id,) = store.due_ids(NOW)
    assert store.claim(entry_id, durable=False)
    entry = store.entry(entry_id)
    assert entry is not None and entry.raw == raw
    with opened(path) as db:
        assert db.execute("SELECT raw FROM outbox").fetchone()[0] == head
    store.mark_sent([entry_id], NOW)
    entry = store.entry(entry_id)
    assert entry is not None and entry.raw == head
    with opened(path) as db:
        assert db.execute("SELECT count(*) FROM outbox_bodies").fetchone()[0] == 0
    store.close()


# ---------------------------------------------------------------------- the C library


def _freed_mib(release: bool) -> int:
    """MiB of RSS a subprocess gets back when it frees its second 20 MiB block, under small blocks."""
    script = textwrap.dedent(
        f"""
        from emailrouter.service.daemon import release_big_blocks
        if {release}:
            release_big_blocks()
        def rss():
            return int(open("/proc/self/statm").read().split()[1]) * 4096 // 2**20
        big = b"x" * (20 << 20)
        del big  # the first big block is mapped on its own either way, and glibc raises its threshold
        big = b"y" * (20 << 20)
        pins = [b"z" * 1000 for _ in range(2000)]  # small blocks after it
        before = rss()
        del big
        print(before - rss())
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return int(done.stdout)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc" or not Path("/proc/self/statm").exists(), reason="glibc only")
def test_big_blocks_go_back_to_the_system_once_freed() -> None:
    """After release_big_blocks (make_router calls it) a freed big block leaves RSS; by default it stays."""
    assert _freed_mib(True) >= 15 and _freed_mib(False) <= 5
