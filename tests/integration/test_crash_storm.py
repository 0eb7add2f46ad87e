"""A random crash storm: `kill -9` at random instants over a backlog in a real Dovecot, then one clean pass.

A few hundred distinct mails (replies, forwards, escalations, tickets, automated mail and exact copies) arrive
in waves; `emailrouter run --once` is killed with SIGKILL at random instants (start-up, fetch, plan commit,
sending, marking), and once the long-running `emailrouter run` service too. After one clean pass:
nothing is lost (every mail flagged processed and recorded with its one final outcome), no customer got an
auto-reply twice (a reply that never reached the relay is recorded `uncertain`), and every forward,
escalation and ticket reached the relay at least once and at most twice (plus once for each kill that came
right after the relay had taken that very message: a crash re-sends at most the message in flight).

The seed is random unless EMAILROUTER_STORM_SEED is set; it is printed with the figures and in every
failure (the kill instants depend on the machine's speed too, so a seed repeats the mails and the delays,
not the exact interleaving). `benchmarks/crash_storm.py` runs a bigger storm with the same code.
"""

from __future__ import annotations

import json
import os
import random
import re
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from email.policy import compat32
from pathlib import Path

from emailrouter.config.loader import load_config
from emailrouter.core.pipeline import route
from emailrouter.service.health import utcnow
from tests.conftest import DATA, ROOT
from tests.integration.test_daemon import ROUTED, start_daemon, write_config
from tests.support.dovecot import Dovecot
from tests.support.sink import SmtpSink

MAILS = 300
KILLS = 15
COPIES = 0.1  # the share of mails that are an exact copy of an earlier one (recorded as duplicates)
FIRST_WAVE = 0.4  # the share of the mails in the INBOX before the first run; the rest arrive between runs
KILL_AFTER = (0.05, 1.0)  # seconds after the start of a run: start-up (~0.5 s), fetch, decisions, plan commits
ATTEMPTS = 3  # at most this many runs per kill wanted
BATCH_SIZE = 60  # several batches per run, and a plan commit inside a batch (the daemon's PLAN_BATCH is 50)

# Together these plan every kind of outgoing mail and every outcome a mail can have without a fault.
FIXTURES = (
    "dcs-fault-outlook-en.eml",  # reply + forward
    "dcs-hard-media-threat-informal.eml",  # reply + forward + escalation
    "dcs-hard-insult-exclamations-id.eml",  # reply + forward + escalation
    "des-fault-pertamina-id.eml",  # ticket + reply
    "dgs-fault-go-id-jatengprov-id.eml",  # ticket + reply
    "des-info-pricing-pertamina-en.eml",  # forward + reply
    "dgs-request-new-installation-go-id-en.eml",  # reply + forward
    "dbs-unknown-intent-attachments-only-tokobunga.eml",  # reply + forward (with attachments)
    "dbs-info-harga-tokobunga-id.eml",  # forward + reply
    "automated-out-of-office-en.eml",  # recorded as automated, nothing sent
    "unknown-no-from-header-id.eml",  # forward only (no sender to reply to)
)
ROUTING_KINDS = ("forward", "reply", "escalate", "ticket")


def variant(raw: bytes, n: int) -> bytes:
    """A fixture as the distinct mail number `n`: its own Message-ID, and its own sender (the same domain, so
    the same segment; a new address, so no reply limit applies)."""
    raw = re.sub(rb"^Message-ID: <[^>]+>", f"Message-ID: <storm.{n}@storm.example>".encode(), raw, count=1,
                 flags=re.M | re.I)  # fmt: skip
    return re.sub(rb"^(From:[^\n]*?<)", lambda m: m.group(1) + f"s{n}.".encode(), raw, count=1, flags=re.M)


def make_mails(rng: random.Random, count: int) -> list[bytes]:
    """`count` mails drawn from FIXTURES; about COPIES of them are byte-for-byte copies of an earlier one."""
    fixtures = [(DATA / name).read_bytes() for name in FIXTURES]
    mails: list[bytes] = []
    for n in range(count):
        if mails and rng.random() < COPIES:
            mails.append(rng.choice(mails))
        else:
            mails.append(variant(rng.choice(fixtures), n))
    return mails


@dataclass
class Storm:
    """What happened: the seed, the kills, how each run ended and how long it all took."""

    seed: int
    killed: int = 0  # runs ended by SIGKILL
    finished: int = 0  # runs that ended by themselves before their kill was due
    kills_by: Counter[str] = field(default_factory=Counter)  # time, decision, send, service
    seconds: float = 0.0
    # how often a kill came right after the relay took this message: each such kill may add one copy
    targeted: Counter[str] = field(default_factory=Counter)
    ends: list[str] = field(default_factory=list)  # per run, e.g. "kill(send 12, +9 mails)@0.61s"


def _append(dovecot: Dovecot, mails: Iterable[bytes]) -> None:
    with dovecot.client() as imap:
        for raw in mails:
            imap.append("INBOX", raw)


def _once(config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "EMAILROUTER_CRASH_AT"}
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "emailrouter", "run", "--once", "-c", str(config)],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


@dataclass(frozen=True)
class Kill:
    """When to kill a run: `after` seconds from its start, or right after its `n`th decision or its `n`th message
    the relay accepted (`on` = "decision" or "send")."""

    on: str  # "time", "decision" or "send"
    after: float = 0.0
    n: int = 0

    def __str__(self) -> str:
        return f"{self.after:.2f}s" if self.on == "time" else f"{self.on} {self.n}"


DECISION = b'"event": "decision"'


def _kill_when(proc: subprocess.Popen[bytes], kill: Kill, sink: SmtpSink, log: Path) -> tuple[int, str | None]:
    """SIGKILL `proc` as `kill` says. Returns the exit status (-9 if the kill landed, else what the process
    ended with by itself) and, for a kill after a send, the Message-ID of the message the relay had just taken.
    The run's log lines are appended to `log` (each line is flushed as it is written)."""
    if kill.on == "time":
        try:
            return proc.wait(timeout=kill.after), None
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait(timeout=30), None
    start, target, decisions, trigger = log.stat().st_size, sink.count + kill.n, 0, None
    with log.open("rb") as lines:
        lines.seek(start)
        while (status := proc.poll()) is None:
            if kill.on == "send":
                try:
                    received = sink.wait_for(target, timeout=0.005)
                except TimeoutError:
                    continue
                (trigger,) = header_ids([received[target - 1].data])
            else:
                decisions += lines.read().count(DECISION)  # a line split between two reads is counted next time
                if decisions < kill.n:
                    time.sleep(0.002)
                    continue
            proc.kill()
            return proc.wait(timeout=30), trigger
    return status, None


def _work_left(state: Path, appended: int) -> tuple[int, int]:
    """How many mails have no outcome yet, and about how many messages are still to send (the unsent ones in
    the outbox, and two for each mail without an outcome)."""
    recorded = unsent = 0
    if state.exists():
        db = sqlite3.connect(state)
        try:
            (recorded,) = db.execute("SELECT count(*) FROM messages").fetchone()
            (unsent,) = db.execute("SELECT count(*) FROM outbox WHERE status IN ('pending', 'sending')").fetchone()
        finally:
            db.close()
    return appended - recorded, unsent + 2 * (appended - recorded)


def storm(
    config: Path,
    dovecot: Dovecot,
    sink: SmtpSink,
    seed: int,
    mails: int = MAILS,
    kills: int = KILLS,
    service_kill: bool = True,
) -> Storm:
    """Runs until `kills` of them were killed, then one clean `run --once`, which must succeed.

    Before each run new mail arrives (FIRST_WAVE of the mails before the first, the rest spread over the runs and
    the clean pass).
    Each run is sent SIGKILL at a random instant, one of three kinds alike: KILL_AFTER seconds after its start
    (start-up, IMAP, fetch), right after its nth decision (deciding, plan commits), or right after the relay
    accepted its nth message (sending, recording), n at random up to what the run has to do. One of the runs is
    the `run` service instead of `run --once`, killed at a random time. A run may end before its kill is due:
    then another follows."""
    rng = random.Random(seed)
    backlog = make_mails(rng, mails)
    service_at = rng.randrange(kills // 3, kills) if service_kill and kills > 1 else -1
    state = load_config(config).settings.state_path
    log = config.parent.parent / "storm.log"
    log.touch()
    result = Storm(seed)
    started = time.monotonic()
    taken = run = 0
    while result.killed < kills and run < ATTEMPTS * kills:
        wave = round(mails * FIRST_WAVE) if run == 0 else (len(backlog) - taken) // (kills - result.killed + 1)
        size = rng.randint(wave // 2, wave + wave // 2)
        _append(dovecot, backlog[taken : taken + size])
        taken += size
        service = result.killed == service_at and not result.kills_by["service"]
        undecided, unsent = _work_left(state, taken)
        kinds = ["time"] + ["decision"] * (undecided > 0) + ["send"] * (unsent > 0)
        on = "time" if service else rng.choice(kinds)
        kill = Kill(
            on,
            after=rng.uniform(*KILL_AFTER),
            n=rng.randint(1, max(1, undecided if on == "decision" else unsent)),
        )
        begun = time.monotonic()
        if service:
            with log.open("ab") as out:
                proc = start_daemon(config, stdout=out, stderr=subprocess.STDOUT)
        else:
            proc = _once(config, log)
        status, trigger = _kill_when(proc, kill, sink, log)
        took = time.monotonic() - begun
        what = f"{'service ' if service else ''}{kill}, +{size} mails"
        if status == -9:
            result.killed += 1
            if trigger is not None:
                result.targeted[trigger] += 1
            result.kills_by["service" if service else kill.on] += 1
            result.ends.append(f"kill({what})@{took:.2f}s")
        elif status == 0:
            result.finished += 1
            result.ends.append(f"exit0({what})@{took:.2f}s")
        else:
            raise AssertionError(f"seed {seed}: run {run} ended with status {status}: {_tail(log)}")
        run += 1
    _append(dovecot, backlog[taken:])  # the last wave: for the clean pass
    clean = subprocess.run(
        [sys.executable, "-m", "emailrouter", "run", "--once", "-c", str(config)],
        capture_output=True, text=True, timeout=120, cwd=ROOT, check=False,
    )  # fmt: skip
    result.seconds = time.monotonic() - started
    if clean.returncode != 0:
        output = (clean.stdout + clean.stderr)[-3000:]
        raise AssertionError(f"seed {seed}: the clean pass failed ({clean.returncode}): {output}")
    return result


def _tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else ""


@dataclass
class Figures:
    """The counts a storm ends with (the README and the issue note quote them)."""

    mails: int = 0
    duplicates: int = 0
    automated: int = 0
    planned: Counter[str] = field(default_factory=Counter)  # outgoing messages planned, by kind
    delivered: int = 0  # messages the relay accepted, resends included
    resent: int = 0  # extra copies of forwards/escalations/tickets (same Message-ID) the relay got
    over_twice: int = 0  # ... of those, the ones the relay got more than twice (a kill right after each)
    most: int = 0  # the most copies of one forward/escalation/ticket the relay got
    lost: int = 0  # mails with no outcome, or not flagged processed on the server
    doubled: int = 0  # customer replies the relay got more than once
    uncertain_replies: int = 0  # replies written off after a kill in the middle of their send
    uncertain_arrived: int = 0  # ... of which the relay did have a copy

    def line(self, result: Storm) -> str:
        planned = ", ".join(f"{n} {k}" for k, n in sorted(self.planned.items()))
        by = result.kills_by
        return (
            f"crash storm seed {result.seed}: {self.mails} mails ({self.duplicates} copies, {self.automated} "
            f"automated); {result.killed} kills ({by['time']} timed, {by['decision']} after a decision, "
            f"{by['send']} after a send, {by['service']} of the service; {result.finished} more runs ended before "
            f"their kill); planned {sum(self.planned.values())} messages ({planned}); the relay accepted "
            f"{self.delivered}: {self.resent} forwards/escalations/tickets again ({self.over_twice} more than twice, "
            f"at most {self.most} copies of one), {self.uncertain_replies} replies "
            f"uncertain ({self.uncertain_arrived} of them had arrived); {self.lost} lost, {self.doubled} doubled "
            f"replies; {result.seconds:.1f} s"
        )


def header_ids(messages: Iterable[bytes]) -> Counter[str]:
    """How often each Message-ID is among these messages (headers only are parsed)."""
    parser = BytesHeaderParser(policy=compat32)
    return Counter(" ".join(str(parser.parsebytes(raw)["Message-ID"]).split()) for raw in messages)


def verdict(
    config_path: Path, dovecot: Dovecot, delivered: Counter[str], targeted: Counter[str] | None = None
) -> tuple[Figures, list[str]]:
    """Check the end state against the promise; returns the figures and every broken promise (none: kept).

    `delivered`: how often each Message-ID reached the relay; `targeted`: how often a kill came right after the
    relay took it (a forward may go once more for each: twice plus that is the most allowed)."""
    targeted = targeted or Counter()
    config = load_config(config_path)
    state = config.settings.state_path
    problems: list[str] = []
    figures = Figures()
    inbox = dovecot.fetch_all("router", "INBOX")
    flags = dovecot.flags("router", "INBOX")
    figures.mails = len(inbox)
    db = sqlite3.connect(state)
    db.row_factory = sqlite3.Row
    try:
        rows = {int(r["uid"]): r for r in db.execute("SELECT uid, outcome FROM messages")}
        sends: dict[int, list[sqlite3.Row]] = {}
        for r in db.execute(
            "SELECT m.uid, o.kind, o.recipients, o.message_id, o.status FROM outbox o"
            " JOIN messages m ON m.key = o.msg_key ORDER BY o.id"
        ):
            sends.setdefault(int(r["uid"]), []).append(r)
    finally:
        db.close()

    now, seen = utcnow(), set()
    for uid, raw in sorted(inbox.items()):
        routing = route(raw, config, now)
        copy = raw in seen
        seen.add(raw)
        expected = "duplicate" if copy else "automated" if routing.automated else "done"
        figures.duplicates += copy
        figures.automated += expected == "automated"
        figures.lost += ROUTED not in flags.get(uid, ()) or uid not in rows
        if ROUTED not in flags.get(uid, ()):
            problems.append(f"uid {uid}: not flagged processed on the server (flags {flags.get(uid)})")
        row = rows.pop(uid, None)
        if row is None:
            problems.append(f"uid {uid}: lost (no outcome recorded)")
            continue
        if row["outcome"] != expected:
            problems.append(f"uid {uid}: outcome {row['outcome']!r}, expected {expected!r}")
        planned = sorted((o.action.type, ",".join(o.to)) for o in routing.outgoing) if not copy else []
        got = sorted((r["kind"], ",".join(json.loads(r["recipients"]))) for r in sends.get(uid, []))
        if got != planned:
            problems.append(f"uid {uid}: outbox holds {got}, the table plans {planned}")
    problems += [f"uid {uid}: recorded but not in the INBOX" for uid in sorted(rows)]

    entries = [r for uid in sorted(sends) for r in sends[uid]]
    known = {r["message_id"] for r in entries}
    problems += [f"{mid}: at the relay {n}x but in no outbox" for mid, n in delivered.items() if mid not in known]
    replies_to: Counter[str] = Counter()
    for r in entries:
        figures.planned[r["kind"]] += 1
        n, status = delivered[r["message_id"]], r["status"]
        if r["kind"] == "reply":
            replies_to[r["recipients"]] += n
            if status == "uncertain":
                figures.uncertain_replies += 1
                figures.uncertain_arrived += n
            figures.doubled += n > 1
            if n > 1:
                problems.append(f"reply {r['message_id']}: at the relay {n} times")
            elif n == 0 and status != "uncertain":
                problems.append(f"reply {r['message_id']}: never at the relay, yet recorded {status!r}")
            elif status not in ("sent", "uncertain"):
                problems.append(f"reply {r['message_id']}: unexpected status {status!r}")
        else:
            figures.resent += n - 1 if n > 1 else 0
            figures.over_twice += n > 2
            figures.most = max(figures.most, n)
            most = 2 + targeted[r["message_id"]]
            if not 1 <= n <= most:
                problems.append(f"{r['kind']} {r['message_id']}: at the relay {n} times (expected 1 to {most})")
            if status != "sent":
                problems.append(f"{r['kind']} {r['message_id']}: unexpected status {status!r}")
    problems += [f"customer {to}: {n} auto-replies" for to, n in replies_to.items() if n > 1]
    figures.delivered = sum(delivered.values())
    return figures, problems


def covered(figures: Figures) -> list[str]:
    """What the storm failed to exercise (the fixtures' routing changed): empty when every kind was there."""
    missing = [k for k in ROUTING_KINDS if not figures.planned[k]]
    if not figures.duplicates:
        missing.append("duplicates")
    if not figures.automated:
        missing.append("automated mail")
    return missing


def run_storm(
    tmp_path: Path, dovecot: Dovecot, sink: SmtpSink, seed: int, *, mails: int = MAILS, kills: int = KILLS,
    service_kill: bool = True,
) -> tuple[Storm, Figures, list[str]]:  # fmt: skip
    """Configure, storm and judge (what the test and benchmarks/crash_storm.py share)."""
    path = write_config(tmp_path, dovecot, sink)
    path.write_text(path.read_text().replace("    idle: false\n", f"    idle: false\n    batch_size: {BATCH_SIZE}\n"))
    result = storm(path, dovecot, sink, seed, mails, kills, service_kill)
    figures, problems = verdict(path, dovecot, header_ids(r.data for r in sink.received), result.targeted)
    return result, figures, problems


def test_a_random_crash_storm_loses_nothing_and_doubles_no_reply(tmp_path: Path, dovecot: Dovecot) -> None:
    """About 15 SIGKILLs at random instants over 300 mails, then a clean pass: 0 lost, every mail with one
    outcome, no reply twice (one never sent is `uncertain`), every other message delivered once or twice."""
    seed = int(os.environ.get("EMAILROUTER_STORM_SEED") or random.SystemRandom().randrange(2**32))
    with SmtpSink() as sink:
        result, figures, problems = run_storm(tmp_path, dovecot, sink, seed)
    where = f"seed {seed} (EMAILROUTER_STORM_SEED={seed} repeats it), runs: {' '.join(result.ends)}"
    print(f"\n{figures.line(result)}\n{where}")
    assert not problems, f"{where}: {len(problems)} broken promises: " + "; ".join(problems[:20])
    assert not covered(figures), f"{where}: the storm did not exercise {covered(figures)}"
    assert result.killed == KILLS, f"{where}: only {result.killed} runs were killed"
