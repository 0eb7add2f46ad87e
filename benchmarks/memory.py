"""Peak memory of the router draining big mail from a real Dovecot to an SMTP sink in another process.

A batch of big mails (default 32 of 21 MB: a few lines of customer text and scanned documents attached
base64-encoded, 76-character lines, as mail clients send them) plus one mail over the 25 MB size cap
(default 30 MB), appended to a Dovecot INBOX. In one run it measures the peak RSS (VmHWM from
/proc/<pid>/status) of three processes:

  (a) idle: `emailrouter run --once` over an empty mailbox (imports, config, state store, no mail);
  (b) raw: imapclient fetching one mail of the batch and then the oversized one (BODY.PEEK[], one at a
      time, imaplib's trace off as in the router) and aiosmtplib's sendmail re-sending each as-is: what relaying
      these mails with the usual libraries holds (sendmail copies a message three times on its way out);
  (c) `emailrouter run --once` draining the batch (every mail forwarded with its original attached);

and prints them, with (c)'s growth over (a) per mail of the batch. Target: (c) <= 150 MB.

Needs Dovecot (`.ci/setup` installs it as root). The sink is Postfix's smtp-sink when installed, else
emailrouter's own (`python -m tests.support.sink --count-only`). Takes about a minute and 1.5 GB of /tmp.

    .venv/bin/python benchmarks/memory.py [--count 32] [--size-mb 21] [--oversized-mb 30]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]

import aiosmtplib  # noqa: E402
from common import ExternalSink, default_sink, run_measured, run_router_once, write_config  # noqa: E402
from imapclient import IMAPClient  # noqa: E402

from tests.support.dovecot import Dovecot, dovecot_available, make_base  # noqa: E402
from tests.support.sqlite import opened  # noqa: E402

MB = 1024 * 1024
TEXT = (
    "Selamat siang, bersama ini kami kirimkan dokumen pendukung untuk pengajuan pemasangan baru\r\n"
    "di kantor cabang kami: hasil pindai formulir, KTP penanggung jawab dan denah lokasi.\r\n"
    "Mohon dapat diproses secepatnya. Terima kasih.\r\n\r\nSalam,\r\nRina\r\n"
)
TIMEOUT = 600.0  # seconds any measured process may take before it is killed


def big_mail(rng: random.Random, i: int, size: int) -> bytes:
    """A mail of about `size` bytes: text/plain plus three attachments, base64 in 76-character lines."""
    head = (
        f"From: Rina {i} <rina.{i}@yahoo.co.id>\r\nTo: cs@cc.example.co.id\r\n"
        f"Subject: Dokumen pengajuan pasang baru {i}\r\nMessage-ID: <memory-{i}-{rng.random()}@bench>\r\n"
        'Date: Mon, 23 Nov 2026 08:00:00 +0700\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="m"\r\n'
        "\r\n--m\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + TEXT
    ).encode()
    names = [("formulir.pdf", "application/pdf"), ("ktp.jpg", "image/jpeg"), ("denah.png", "image/png")]
    raw_total = max(0, size - len(head) - 600) * 57 // 78  # base64 in 76-character lines + CRLF: 57 bytes per 78
    parts = [head]
    for n, (name, kind) in enumerate(names):
        share = raw_total // len(names) + (raw_total % len(names) if n == 0 else 0)
        parts.append(
            f'--m\r\nContent-Type: {kind}; name="{name}"\r\nContent-Transfer-Encoding: base64\r\n'
            f'Content-Disposition: attachment; filename="{name}"\r\n\r\n'.encode()
        )
        parts.append(base64.encodebytes(rng.randbytes(share)).replace(b"\n", b"\r\n"))
    parts.append(b"--m--\r\n")
    return b"".join(parts)


def fill(dovecot: Dovecot, rng: random.Random, count: int, size: int, oversized: int) -> tuple[int, int]:
    """Append the batch (and the oversized mail last); returns (mails, bytes)."""
    total = n = 0
    client = dovecot.client(timeout=120)
    try:
        for i in range(count):
            raw = big_mail(rng, i, size)
            client.append("INBOX", raw)
            total, n = total + len(raw), n + 1
        if oversized:
            raw = big_mail(rng, count, oversized)
            client.append("INBOX", raw)
            total, n = total + len(raw), n + 1
    finally:
        client.logout()
    return n, total


async def raw_relay(imap_port: int, password: str, sink_port: int) -> int:
    """Fetch a mail and re-send it as-is, then the largest: what relaying these mails costs at the least.

    One at a time, each dropped before the next; imaplib's trace is off, as in the router."""
    client = IMAPClient("127.0.0.1", port=imap_port, ssl=False, timeout=120)
    client._imap.debug = 0  # as emailrouter.service.imap.quiet_imaplib does: no %r copies of every literal
    client.login("router", password)
    client.select_folder("INBOX", readonly=True)
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=sink_port, start_tls=False, timeout=120)
    await smtp.connect()
    sent = 0
    uids = client.search(["UNSEEN"])
    for uid in sorted(set(uids[:1] + uids[-1:])):  # one mail of the batch and the last (the oversized one)
        raw = client.fetch([uid], ["BODY.PEEK[]"])[uid][b"BODY[]"]
        await smtp.sendmail("bench@example.com", ["sink@example.com"], raw)
        del raw
        sent += 1
    await smtp.quit()
    client.logout()
    return sent


def routed_and_sent(dovecot: Dovecot, state: Path) -> tuple[int, int, int]:
    """(mails marked processed in the mailbox, outgoing messages sent, outgoing messages not sent)."""
    routed = len(dovecot.uids("router", "INBOX", ["KEYWORD", "$Routed"]))
    with opened(state) as db:
        sent = int(db.execute("SELECT count(*) FROM outbox WHERE status='sent'").fetchone()[0])
        other = int(db.execute("SELECT count(*) FROM outbox WHERE status!='sent'").fetchone()[0])
    return routed, sent, other


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=32, help="mails in the batch (default %(default)s)")
    parser.add_argument("--size-mb", type=float, default=21.0, help="size of each (default %(default)s MB)")
    parser.add_argument(
        "--oversized-mb",
        type=float,
        default=30.0,
        help="one more mail over the size cap; 0: none (default %(default)s)",
    )
    parser.add_argument("--sink", choices=["postfix", "python"], default=default_sink())
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument(
        "--raw-relay", nargs=3, type=str, metavar=("IMAP_PORT", "PASSWORD", "SINK_PORT"), help=argparse.SUPPRESS
    )  # (b), run in its own process by main
    args = parser.parse_args()
    if args.raw_relay:
        imap_port, password, sink_port = args.raw_relay
        print(asyncio.run(raw_relay(int(imap_port), password, int(sink_port))))
        return 0
    if (reason := dovecot_available()) is not None:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    base = make_base("emailrouter-memory-")
    workdir = Path(tempfile.mkdtemp(prefix="emailrouter-memory-work-"))
    rng = random.Random(args.seed)
    try:
        with Dovecot(base) as dovecot:
            sink = ExternalSink(args.sink, workdir)
            try:
                idle = run_router_once(write_config(workdir, dovecot, sink.port, idle=False, state="idle.sqlite3"))
                started = time.perf_counter()
                n, total = fill(dovecot, rng, args.count, int(args.size_mb * MB), int(args.oversized_mb * MB))
                print(
                    f"batch: {args.count} mails of {args.size_mb:g} MB"
                    + (f" + 1 of {args.oversized_mb:g} MB over the size cap" if args.oversized_mb else "")
                    + f", {total / MB:.0f} MB in all, appended to Dovecot in {time.perf_counter() - started:.0f} s;"
                    f" sink: {args.sink} (another process)"
                )
                relay_cmd = [sys.executable, __file__, "--raw-relay", str(dovecot.port), dovecot.users["router"]]
                raw = run_measured([*relay_cmd, str(sink.port)], TIMEOUT)
                config = write_config(workdir, dovecot, sink.port, idle=False, state="memory.sqlite3")
                router = run_router_once(config, TIMEOUT)
            finally:
                sink.stop()
            if router.status != 0:
                print(router.stderr.decode("utf-8", "replace")[-3000:], file=sys.stderr)
            routed, sent, unsent = routed_and_sent(dovecot, workdir / "memory.sqlite3")
    finally:
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)
    grown = (router.peak_kib - idle.peak_kib) / 1024
    print(f"(a) router, no mail (imports, config, state):  peak RSS {idle.peak_kib / 1024:6.0f} MB")
    print(
        f"(b) raw fetch + re-send, one at a time:         peak RSS {raw.peak_kib / 1024:6.0f} MB"
        f"  ({raw.seconds:.0f} s, exit {raw.status})"
    )
    print(
        f"(c) emailrouter run --once over the batch:      peak RSS {router.peak_kib / 1024:6.0f} MB"
        f"  ({router.seconds:.0f} s, exit {router.status}; {routed} of {n} mails routed, {sent} sent, {unsent} not)"
    )
    print(f"    growth over (a): {grown:.0f} MB = {grown / max(n, 1):.1f} MB per mail of the batch")
    print(f"target: (c) <= 150 MB: {'met' if router.peak_kib <= 150 * 1024 else 'NOT met'}")
    return 0 if router.status == 0 and routed == n else 1


if __name__ == "__main__":
    raise SystemExit(main())
