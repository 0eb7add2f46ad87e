"""Drain a backlog from a real Dovecot INBOX to an SMTP sink in another process: router vs raw baseline.

The backlog (benchmarks/backlog.py) has a sender per mail, every segment (privileged ones in the
directory and authenticated), the corpus's intents and about 8 % hard complaints, so that about two
mails go out per mail in; the mix of what was sent is printed.

In one run:
  (a) baseline: imapclient fetches every unread message in batches of 200 with BODY.PEEK[] and one
      aiosmtplib connection re-sends each message as-is to the sink;
  (b) `emailrouter run --once` drains the same backlog (same Dovecot, same sink);
then prints messages/s for both (counting incoming messages), their ratio, and the router's peak
RSS; and (c) with the daemon running under IDLE, mails appended at 10 msg/s: the time from APPEND
to the first routed message at the sink, p50 and p95.

Needs Dovecot (`.ci/setup` installs it as root). The sink is Postfix's smtp-sink when installed
(`--sink postfix`, C, so that the sink is not the bottleneck), else emailrouter's own aiosmtpd sink.

    .venv/bin/python benchmarks/drain.py [--count 5000] [--idle-seconds 20] [--postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(Path(__file__).resolve().parent)]

import aiosmtplib  # noqa: E402
import backlog  # noqa: E402  (benchmarks/backlog.py, next to this file)
from common import ExternalSink, default_sink, run_router_once, write_config  # noqa: E402
from imapclient import IMAPClient  # noqa: E402

from emailrouter.config.settings import default_workers  # noqa: E402
from tests.support.dovecot import Dovecot, dovecot_available, make_base  # noqa: E402
from tests.support.postgres import Postgres, postgres_available  # noqa: E402
from tests.support.postgres import make_base as make_pg_base  # noqa: E402
from tests.support.sink import SmtpSink  # noqa: E402
from tests.support.sqlite import opened  # noqa: E402


def with_token(raw: bytes, token: str) -> bytes:
    """The mail with `token` at the start of its subject (to find it again at the sink)."""
    return raw.replace(b"\r\nSubject: ", f"\r\nSubject: {token} ".encode(), 1)


async def baseline(dovecot: Dovecot, sink_port: int) -> tuple[int, float]:
    started = time.perf_counter()

    def fetch_all() -> list[bytes]:
        client = IMAPClient("127.0.0.1", port=dovecot.port, ssl=False)
        client.login("router", dovecot.users["router"])
        client.select_folder("INBOX")
        uids = client.search(["UNSEEN"])
        out = []
        for i in range(0, len(uids), 200):
            for item in client.fetch(uids[i : i + 200], ["BODY.PEEK[]"]).values():
                out.append(item[b"BODY[]"])
        client.logout()
        return out

    # fetch batch by batch and send as we go, like the router does
    messages = await asyncio.to_thread(fetch_all)
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=sink_port, start_tls=False)
    await smtp.connect()
    for raw in messages:
        await smtp.sendmail("bench@example.com", ["sink@example.com"], raw)
    await smtp.quit()
    return len(messages), time.perf_counter() - started


class StateQueries:
    """The two figures drain.py reads back from a state store: SQLite file or PostgreSQL database."""

    def __init__(self, sqlite: Path | None = None, postgres: tuple[Postgres, str] | None = None) -> None:
        self.sqlite, self.postgres = sqlite, postgres

    def _rows(self, sql: str) -> list[tuple[Any, ...]]:
        if self.postgres is not None:
            server, dbname = self.postgres
            return server.execute(sql, dbname)
        assert self.sqlite is not None
        with opened(self.sqlite) as db:
            return [tuple(r) for r in db.execute(sql)]

    def sends(self) -> dict[str, int]:
        """Mails the router sent, by kind (forward, reply, ticket, escalate, ...)."""
        rows = self._rows("SELECT kind, count(*) FROM outbox WHERE status='sent' GROUP BY kind ORDER BY 2 DESC")
        return {str(kind): int(n) for kind, n in rows}

    def route_seconds(self) -> float:
        """The time routing took (parse -> compose, as each decision's trace says), wherever it ran."""
        if self.postgres is not None:
            sql = "SELECT sum((decision::json->'timings'->>'decide_ms')::float) FROM messages"
        else:
            sql = "SELECT sum(json_extract(decision, '$.timings.decide_ms')) FROM messages"
        return float(self._rows(sql)[0][0] or 0) / 1000


def unmark(dovecot: Dovecot) -> None:
    """Every mail unread and not routed again, for the next run."""
    client = dovecot.client()
    client.select_folder("INBOX")
    client.remove_flags(client.search(["ALL"]), [b"$Routed", b"\\Seen"], silent=True)
    client.logout()


def idle_latency(workdir: Path, dovecot: Dovecot, seconds: float, rate: float) -> list[float]:
    """Append at `rate` msg/s for `seconds` with the daemon under IDLE; APPEND -> first routed message at the sink."""
    dovecot.delete_all("router", "INBOX")
    with SmtpSink() as sink:
        config = write_config(workdir, dovecot, sink.port, idle=True)
        daemon = subprocess.Popen(
            [sys.executable, "-m", "emailrouter", "run", "--log-level", "warning", "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=ROOT,
        )
        try:
            time.sleep(3)  # connect and enter IDLE
            _, fresh = backlog.mails(7, int(seconds * rate))
            appended: dict[str, float] = {}
            client = dovecot.client()
            count = int(seconds * rate)
            start = time.monotonic()
            for i, (raw, _, _) in enumerate(fresh):
                token = f"bench-token-{i:05d}"
                raw = with_token(raw, token)
                time.sleep(max(0.0, start + i / rate - time.monotonic()))
                appended[token] = time.time()
                client.append("INBOX", raw)
            client.logout()
            deadline = time.monotonic() + 30
            arrived: dict[str, float] = {}
            while time.monotonic() < deadline and len(arrived) < count:
                for r in sink.received:
                    head = r.data[:4000].decode("utf-8", "replace")
                    for token in appended:
                        if token not in arrived and token in head:
                            arrived[token] = r.when
                time.sleep(0.2)
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=60)
    return sorted(arrived[t] - appended[t] for t in arrived)


def mix(counts: Counter[str]) -> str:
    total = sum(counts.values()) or 1
    return ", ".join(f"{key} {n} ({n / total:.0%})" for key, n in counts.most_common())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--sink", choices=["postfix", "python"], default=default_sink())
    parser.add_argument("--idle-seconds", type=float, default=20.0)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--postgres", action="store_true", help="the same runs against a PostgreSQL state store too")
    args = parser.parse_args()
    if (reason := dovecot_available()) is not None:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    if args.postgres and (reason := postgres_available()) is not None:
        print(f"cannot run --postgres: {reason}", file=sys.stderr)
        return 2
    pg_base = make_pg_base() if args.postgres else None
    pg = Postgres(pg_base).__enter__() if pg_base is not None else None
    if pg is not None:
        atexit.register(pg.stop)  # also when a run fails: the server runs in its own process group
    base = make_base("emailrouter-drain-")
    workdir = Path(tempfile.mkdtemp(prefix="emailrouter-drain-work-"))
    senders, mails = backlog.mails(args.seed, args.count)
    segments: Counter[str] = Counter()
    intents: Counter[str] = Counter()
    with Dovecot(base) as dovecot:
        client = dovecot.client()
        total = 0
        for raw, sender, text in mails:
            total += len(raw)
            segments[sender.segment] += 1
            intents["hard complaint" if text.hard else text.intent] += 1
            client.append("INBOX", raw)
        client.logout()
        print(
            f"backlog: {args.count} mails from {senders.count} senders, average {total / args.count / 1024:.1f} KB, "
            f"in Dovecot {dovecot.port}; sink: {args.sink} (another process)"
        )
        print(f"  segments: {mix(segments)}; intents: {mix(intents)}")
        sink = ExternalSink(args.sink, workdir)
        runs: list[tuple[str, float]] = []
        try:
            n, base_s = asyncio.run(baseline(dovecot, sink.port))
            base_rate = n / base_s
            print(f"baseline (fetch + re-send as-is): {n} msgs in {base_s:.1f} s = {base_rate:.0f} msg/s")
            backends: list[tuple[str, Postgres | None]] = [("SQLite", None)]
            if pg is not None:
                backends.append(("PostgreSQL", pg))
            for backend, server in backends:
                for label, workers in (("workers: 1", 1), (f"workers: default ({default_workers()})", None)):
                    name = f"drain-{workers or 'default'}"
                    url = None
                    if server is not None:
                        url = server.create_database(name.replace("-", "_"))
                        (workdir / "pg-password").write_text(server.password + "\n")
                    state = f"{name}.sqlite3"
                    config = write_config(
                        workdir, dovecot, sink.port, idle=False, state=state, workers=workers, postgres=url
                    )
                    directory = config.parent / "customers.csv"
                    if "dinas" not in directory.read_text():
                        directory.write_text(directory.read_text() + senders.directory_csv().split("\n", 1)[1])
                    unmark(dovecot)
                    run = run_router_once(config)
                    routed = len(dovecot.uids("router", "INBOX", ["KEYWORD", "$Routed"]))
                    queries = StateQueries(
                        workdir / state, (server, name.replace("-", "_")) if server is not None else None
                    )
                    sent, route_s = queries.sends(), queries.route_seconds()
                    rate = routed / run.seconds
                    per_mail = 1000 / max(routed, 1)
                    print(
                        f"emailrouter run --once, {backend}, {label}: {routed} msgs in {run.seconds:.1f} s = "
                        f"{rate:.0f} msg/s, ratio {rate / base_rate:.2f} (exit {run.status}; "
                        f"{sum(sent.values()) / max(routed, 1):.1f} mails sent per mail in)"
                    )
                    # the service's own CPU is the shell's, plus the routing when no worker did it; a worker's
                    # is sampled from /proc (the fork server's children are never reaped by the service)
                    pooled = run.descendants_cpu > 0.05 * run.cpu
                    shell = run.cpu if pooled else run.cpu - route_s
                    print(
                        f"  CPU per mail {(run.cpu + run.descendants_cpu) * per_mail:.1f} ms (service "
                        f"{run.cpu * per_mail:.1f}, workers {run.descendants_cpu * per_mail:.1f}): route "
                        f"{route_s * per_mail:.1f} ms (wall, in {'the workers' if pooled else 'the service'}), shell "
                        f"{shell * per_mail:.1f} ms (target <= 1.5 ms); peak RSS {run.peak_kib / 1024:.0f} MB, "
                        f"with its workers {run.tree_peak_kib / 1024:.0f} MB, their PSS (a shared page counted "
                        f"once) {run.tree_pss_kib / 1024:.0f} MB (target <= 150 MB)"
                    )
                    print(f"  sent: {mix(Counter(sent))}")
                    runs.append((f"{backend}, {label}", rate / base_rate))
        finally:
            sink.stop()
        print(
            "ratios router/baseline: "
            + ", ".join(f"{label} {ratio:.2f}" for label, ratio in runs)
            + " (targets: >= 0.25 with workers: 1, >= 0.45 with the default)"
        )
        if pg is not None:
            by = dict(runs)
            default = f"workers: default ({default_workers()})"
            print(
                f"PostgreSQL / SQLite, {default}: {by[f'PostgreSQL, {default}'] / by[f'SQLite, {default}']:.0%} "
                "(target >= 80 %; the test server runs without fsync, see tests/support/postgres.py)"
            )
        if args.idle_seconds > 0:
            lat = idle_latency(workdir, dovecot, args.idle_seconds, 10.0)
            if lat:
                p95 = lat[min(len(lat) - 1, int(0.95 * len(lat)))]
                print(
                    f"IDLE at 10 msg/s for {args.idle_seconds:g} s: {len(lat)} delivered, latency p50 "
                    f"{statistics.median(lat):.2f} s, p95 {p95:.2f} s (target p95 <= 0.5 s)"
                )
            else:
                print("IDLE: nothing arrived")
    if pg is not None and pg_base is not None:
        pg.stop()
        atexit.unregister(pg.stop)
        shutil.rmtree(pg_base, ignore_errors=True)
    shutil.rmtree(base, ignore_errors=True)
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
