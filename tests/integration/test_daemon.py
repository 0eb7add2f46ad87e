"""The daemon end to end against a real Dovecot and a real SMTP sink on loopback."""

from __future__ import annotations

import asyncio
import email
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from email.policy import default
from pathlib import Path
from typing import Any

import pytest
import yaml

from emailrouter.config.loader import Config, load_config
from emailrouter.core.pipeline import route
from emailrouter.service.daemon import make_router, run_once
from emailrouter.service.router import PollReport
from tests.conftest import CONFIG_DIR, DATA, NOW, ROOT
from tests.support.dovecot import Dovecot
from tests.support.sink import SmtpSink
from tests.support.sqlite import opened

EXPECTED: dict[str, dict[str, Any]] = yaml.safe_load((DATA / "expected.yaml").read_text())


def _one_per_rule() -> list[str]:
    """A fixture for every row of the table, each from a different sender (so no reply limit applies)."""
    from emailrouter.core.parse import parse

    chosen: dict[str, str] = {}
    senders: set[str | None] = set()
    for name, e in sorted(EXPECTED.items()):
        view = parse((DATA / name).read_bytes())
        sender = view.sender.address if view.sender else None
        if e["rule"] not in chosen and (sender is None or sender not in senders):
            chosen[e["rule"]] = name
            senders.add(sender)
    return sorted(chosen.values())


ONE_PER_RULE = _one_per_rule()
ROUTED = b"$Routed"


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[SmtpSink]:
    with SmtpSink(save_to=tmp_path / "sent") as s:
        yield s


def write_config(
    tmp: Path, dovecot: Dovecot, sink: SmtpSink, processed: str = "keyword", smtp_extra: str = "", extra: str = ""
) -> Path:
    """The shipped config plus a mailbox on the test Dovecot and the sink as relay (`smtp_extra`: more
    `smtp:` keys, indented; `extra`: more top-level YAML)."""
    target = tmp / "config"
    if not target.exists():
        shutil.copytree(CONFIG_DIR, target, ignore=shutil.ignore_patterns("samples", "tests"))
    (tmp / "imap-password").write_text(dovecot.users["router"] + "\n")
    main = target / "emailrouter.yaml"
    text = (CONFIG_DIR / "emailrouter.yaml").read_text()
    main.write_text(
        text
        + f"""
mailboxes:
  - name: jkt
    host: 127.0.0.1
    port: {dovecot.port}
    security: plain
    timeout: 10
    username: router
    password: {{file: {tmp / "imap-password"}}}
    processed: {processed}
    idle: false
smtp:
  host: {sink.host}
  port: {sink.port}
  security: plain
  timeout: 10
{smtp_extra}state:
  path: {tmp / "state.sqlite3"}
delivery:
  retry_initial: 0.01
  retry_max: 0.05
{extra}"""
    )
    return main


def once(config: Config) -> tuple[int, list[PollReport]]:
    router = make_router(config, dry_run=False)
    try:
        return asyncio.run(run_once(router))
    finally:
        router.store.close()


def planned_recipients(config: Config, names: list[str]) -> list[tuple[str, str]]:
    """(type, recipient) of every message the table plans for these fixtures."""
    out: list[tuple[str, str]] = []
    for name in names:
        for o in route((DATA / name).read_bytes(), config, NOW).outgoing:
            out.extend((o.action.type, to) for to in o.to)
    return sorted(out)


def received_by_kind(sink: SmtpSink) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for r in sink.received:
        msg = email.message_from_bytes(r.data, policy=default)
        mid = str(msg["Message-ID"])
        kind = mid.split(".")[2].split("@")[0] if mid.startswith("<er.") else "?"
        out.extend((kind, to) for to in r.rcpt_tos)
    return sorted(out)


def test_every_row_of_the_instruction_end_to_end(tmp_path: Path, dovecot: Dovecot, sink: SmtpSink) -> None:
    """One mail per table row appended to the INBOX -> the planned mails at the sink -> each mail marked processed."""
    config = load_config(write_config(tmp_path, dovecot, sink))
    assert {EXPECTED[n]["rule"] for n in ONE_PER_RULE} == {r.id for r in config.table.rows[:-1]}
    for name in ONE_PER_RULE:
        dovecot.append("router", "INBOX", (DATA / name).read_bytes())
    status, reports = once(config)
    assert status == 0, reports
    assert reports[0].planned == len(ONE_PER_RULE)
    assert received_by_kind(sink) == planned_recipients(config, ONE_PER_RULE)
    flags = dovecot.flags("router", "INBOX")
    assert len(flags) == len(ONE_PER_RULE)
    assert all(ROUTED in f and b"\\Seen" in f for f in flags.values()), flags
    replies = [r for r in sink.received if email.message_from_bytes(r.data, policy=default)["Auto-Submitted"]]
    assert replies and all(len(r.rcpt_tos) == 1 for r in replies)


def test_a_second_run_sends_nothing(tmp_path: Path, dovecot: Dovecot, sink: SmtpSink) -> None:
    """Running again over the same mailbox sends nothing more."""
    config = load_config(write_config(tmp_path, dovecot, sink))
    for name in ONE_PER_RULE[:3]:
        dovecot.append("router", "INBOX", (DATA / name).read_bytes())
    assert once(config)[0] == 0
    first = sink.count
    assert first > 0
    status, reports = once(config)
    assert status == 0 and reports[0].fetched == 0
    assert sink.count == first


def test_mail_already_read_by_a_person_is_still_processed(tmp_path: Path, dovecot: Dovecot, sink: SmtpSink) -> None:
    """After the first start, a mail a person opened (\\Seen) before the router saw it is still routed."""
    config = load_config(write_config(tmp_path, dovecot, sink))
    assert once(config)[0] == 0  # first start on an empty INBOX: the checkpoint
    dovecot.append("router", "INBOX", (DATA / "dcs-fault-outlook-en.eml").read_bytes(), flags=[b"\\Seen"])
    status, reports = once(config)
    assert status == 0 and reports[0].planned == 1
    assert sink.count == 2  # education reply + forward to the DCS unit
    assert all(ROUTED in f for f in dovecot.flags("router", "INBOX").values())


def test_first_start_takes_only_unread_mail(tmp_path: Path, dovecot: Dovecot, sink: SmtpSink) -> None:
    """On the very first start, mail already read is left alone; unread mail is routed."""
    config = load_config(write_config(tmp_path, dovecot, sink))
    dovecot.append("router", "INBOX", (DATA / "dcs-fault-outlook-en.eml").read_bytes(), flags=[b"\\Seen"])
    dovecot.append("router", "INBOX", (DATA / "dcs-info-promo-yahoo-id.eml").read_bytes())
    status, reports = once(config)
    assert status == 0 and reports[0].planned == 1
    flags = sorted(dovecot.flags("router", "INBOX").items())
    assert ROUTED not in flags[0][1] and ROUTED in flags[1][1]


def test_smtp_down_then_up_delivers_every_mail_once(tmp_path: Path, dovecot: Dovecot, sink: SmtpSink) -> None:
    """With the relay down the plan waits in the outbox, unmarked; when it is back every mail goes out once."""
    config = load_config(write_config(tmp_path, dovecot, sink))
    names = [n for n in ONE_PER_RULE if not n.startswith("automated")][:4]  # each has something to send
    for name in names:
        dovecot.append("router", "INBOX", (DATA / name).read_bytes())
    sink.set_down(True)
    status, reports = once(config)
    assert status == 0 and reports[0].planned == len(names)  # the mailbox itself was fine
    assert sink.count == 0
    assert not any(ROUTED in f for f in dovecot.flags("router", "INBOX").values())
    sink.set_down(False)
    time.sleep(0.1)  # past the (test-short) retry backoff
    assert once(config)[0] == 0
    assert received_by_kind(sink) == planned_recipients(config, names)
    assert all(ROUTED in f for f in dovecot.flags("router", "INBOX").values())
    assert once(config)[0] == 0
    assert received_by_kind(sink) == planned_recipients(config, names)


def test_permanent_smtp_failure_goes_to_the_human_queue(tmp_path: Path, dovecot: Dovecot, sink: SmtpSink) -> None:
    """A 550 is recorded as permanent and the human queue gets a failure notice with the undelivered mail."""
    config = load_config(write_config(tmp_path, dovecot, sink))
    dovecot.append("router", "INBOX", (DATA / "dcs-fault-outlook-en.eml").read_bytes())
    sink.script("550")  # the first message of the plan (the reply) is refused
    assert once(config)[0] == 0
    kinds = received_by_kind(sink)
    assert ("failure", "email-triage@cc.example.co.id") in kinds
    assert ("forward", "dcs-care@cc.example.co.id") in kinds
    assert not any(k == "reply" for k, _ in kinds)
    assert all(ROUTED in f for f in dovecot.flags("router", "INBOX").values())


def test_same_mail_in_two_mailboxes_is_handled_once(tmp_path: Path, dovecot: Dovecot, sink: SmtpSink) -> None:
    """The same Message-ID reaching a second polled mailbox is recorded as a duplicate and not routed again."""
    path = write_config(tmp_path, dovecot, sink)
    text = path.read_text()
    second = text.split("\nmailboxes:\n", 1)[1].split("\nsmtp:", 1)[0].replace("name: jkt", "name: bdg") + "\n"
    second = second.replace("username: router", "username: other")
    path.write_text(text.replace("\nsmtp:\n", "\n" + second + "smtp:\n", 1))
    (tmp_path / "imap-password").write_text(dovecot.users["router"] + "\n")
    assert dovecot.users["router"] == dovecot.users["other"]
    raw = (DATA / "dcs-fault-outlook-en.eml").read_bytes()
    dovecot.append("router", "INBOX", raw)
    dovecot.append("other", "INBOX", raw)
    status, reports = once(load_config(path))
    assert status == 0
    assert [(r.planned, r.duplicates) for r in reports] == [(1, 0), (0, 1)]
    assert sink.count == 2
    assert all(ROUTED in f for f in dovecot.flags("other", "INBOX").values())


def test_move_mode_moves_processed_mail(tmp_path: Path, dovecot: Dovecot, sink: SmtpSink) -> None:
    """With processed: move, routed mail leaves the INBOX for the Routed folder."""
    config = load_config(write_config(tmp_path, dovecot, sink, processed="move"))
    dovecot.append("router", "INBOX", (DATA / "dcs-fault-outlook-en.eml").read_bytes())
    assert once(config)[0] == 0
    assert dovecot.uids("router", "INBOX") == []
    assert len(dovecot.uids("router", "Routed")) == 1


def test_dovecot_restart_mid_run_recovers_by_itself(tmp_path: Path, dovecot: Dovecot, sink: SmtpSink) -> None:
    """The same router keeps working after the IMAP server restarts under it: it reconnects on its own."""
    config = load_config(write_config(tmp_path, dovecot, sink))
    router = make_router(config, dry_run=False)
    mailbox = config.settings.mailboxes[0]

    async def scenario() -> list[PollReport]:
        reports = [await router.poll_once(mailbox)]
        dovecot.restart()
        dovecot.append("router", "INBOX", (DATA / "dcs-fault-outlook-en.eml").read_bytes())
        for _ in range(5):
            report = await router.poll_once(mailbox)
            reports.append(report)
            if report.ok and report.planned:
                break
            await asyncio.sleep(router.health[mailbox.name].retry_at - time.monotonic())
        await router.close()
        return reports

    try:
        reports = asyncio.run(scenario())
    finally:
        router.store.close()
    assert reports[0].ok
    assert reports[-1].ok and reports[-1].planned == 1
    assert sink.count == 2


def test_mailbox_failure_is_reported_and_does_not_stop_others(tmp_path: Path, dovecot: Dovecot, sink: SmtpSink) -> None:
    """A mailbox with a wrong password fails (exit 1) while the other mailbox is still processed."""
    path = write_config(tmp_path, dovecot, sink)
    text = path.read_text()
    bad = text.split("\nmailboxes:\n", 1)[1].split("\nsmtp:", 1)[0].replace("name: jkt", "name: broken") + "\n"
    bad = bad.replace(str(tmp_path / "imap-password"), str(tmp_path / "wrong-password"))
    (tmp_path / "wrong-password").write_text("not-the-password\n")
    path.write_text(text.replace("\nmailboxes:\n", "\nmailboxes:\n" + bad, 1))
    dovecot.append("router", "INBOX", (DATA / "dcs-fault-outlook-en.eml").read_bytes())
    status, reports = once(load_config(path))
    assert status == 1
    assert [(r.mailbox, r.ok) for r in reports] == [("broken", False), ("jkt", True)]
    assert "not-the-password" not in (reports[0].error or "")
    assert sink.count == 2


def start_daemon(config: Path, **popen: Any) -> subprocess.Popen[bytes]:
    """`emailrouter run -c CONFIG` in the background (output discarded unless redirected in `popen`)."""
    options: dict[str, Any] = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, **popen}
    return subprocess.Popen([sys.executable, "-m", "emailrouter", "run", "-c", str(config)], cwd=ROOT, **options)


def _run_cli(config: Path, *args: str, crash_at: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "EMAILROUTER_CRASH_AT"}
    if crash_at:
        env["EMAILROUTER_CRASH_AT"] = crash_at
    return subprocess.run(
        [sys.executable, "-m", "emailrouter", "run", "--once", "-c", str(config), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=ROOT,
        check=False,
    )


@pytest.mark.parametrize("crash_at", ["after-plan", "after-smtp-accepted", "after-send-recorded"])
def test_killed_process_resumes_without_loss_or_second_reply(
    tmp_path: Path, dovecot: Dovecot, sink: SmtpSink, crash_at: str
) -> None:
    """SIGKILL after the plan commit, after an SMTP 250, or after recording a send: on restart nothing is lost and
    no customer gets a second auto-reply; other mails are re-sent at most with the same Message-ID."""
    path = write_config(tmp_path, dovecot, sink)
    config = load_config(path)
    names = ["dcs-hard-media-threat-informal.eml", "des-fault-pertamina-id.eml"]
    for name in names:
        dovecot.append("router", "INBOX", (DATA / name).read_bytes())
    crashed = _run_cli(path, crash_at=crash_at)
    assert crashed.returncode == -9, crashed.stderr[-2000:]
    assert not any(ROUTED in f for f in dovecot.flags("router", "INBOX").values())
    finished = _run_cli(path)
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert all(ROUTED in f for f in dovecot.flags("router", "INBOX").values())
    planned = planned_recipients(config, names)
    got = received_by_kind(sink)
    # every planned message arrived; replies exactly once, others at least once with one Message-ID each
    assert sorted(set(got)) == sorted(set(planned))
    replies = [k for k in got if k[0] == "reply"]
    assert sorted(replies) == sorted(k for k in planned if k[0] == "reply")
    ids: dict[str, set[str]] = {}
    for r in sink.received:
        msg = email.message_from_bytes(r.data, policy=default)
        ids.setdefault(f"{msg['To']}|{msg['Subject']}", set()).add(str(msg["Message-ID"]))
    assert all(len(v) == 1 for v in ids.values()), ids
    assert _run_cli(path).returncode == 0
    assert received_by_kind(sink) == got  # and a third run sends nothing


def _wait(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_daemon_idle_reload_and_sigterm(tmp_path: Path, dovecot: Dovecot, sink: SmtpSink) -> None:
    """`emailrouter run`: IDLE brings new mail at once; a broken config on SIGHUP is rejected and the old one keeps
    running; SIGTERM exits cleanly; every mail has exactly one JSON `decision` log line with its identity; systemd
    hears READY=1, STATUS= and WATCHDOG=1."""
    import signal
    import socket

    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.setblocking(False)
    env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify.sock"), "WATCHDOG_USEC": "2000000"}

    path = write_config(tmp_path, dovecot, sink)
    path.write_text(path.read_text().replace("    idle: false\n", "    idle: true\n    poll_interval: 600\n"))
    log_file = tmp_path / "daemon.log"
    with log_file.open("w") as out:
        proc = start_daemon(path, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        _wait(lambda: '"event": "imap_connected"' in log_file.read_text(), 20, "the first connection")
        _wait(lambda: '"event": "idle_active"' in log_file.read_text(), 20, "the IDLE watcher saying it is active")
        started = time.monotonic()
        dovecot.append("router", "INBOX", (DATA / "dcs-fault-outlook-en.eml").read_bytes())
        _wait(lambda: sink.count >= 2, 15, "the first mail at the sink")
        latency = time.monotonic() - started
        assert latency < 10, latency  # far below the 600 s poll interval: IDLE did it
        rules = path.parent / "rules.yaml"
        good = rules.read_text()
        rules.write_text(good.replace("      - forward: dbs_unit", "      - forward: no_such_unit"))
        proc.send_signal(signal.SIGHUP)
        _wait(lambda: '"event": "reload_rejected"' in log_file.read_text(), 10, "the rejected reload")
        # a table that fails verification (a shadowed row) is rejected the same way
        shadowed = "  - id: never-fires\n    when:\n      segment: DCS\n    actions:\n      - forward: dcs_unit\n\n"
        rules.write_text(good.replace("  - id: open-no-usable-sender", shadowed + "  - id: open-no-usable-sender"))
        proc.send_signal(signal.SIGHUP)
        _wait(lambda: log_file.read_text().count('"event": "reload_rejected"') == 2, 10, "the second rejection")
        assert "'never-fires' can never fire" in log_file.read_text()
        dovecot.append("router", "INBOX", (DATA / "dcs-info-promo-yahoo-id.eml").read_bytes())
        _wait(lambda: sink.count >= 4, 15, "the second mail at the sink (old config still running)")
        time.sleep(1.5)  # one watchdog period
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    datagrams = []
    while True:
        try:
            datagrams.append(notify.recv(4096).decode())
        except BlockingIOError:
            break
    notify.close()
    assert any("READY=1" in d for d in datagrams), datagrams
    assert any(d.startswith("STATUS=") and "done" in d for d in datagrams), datagrams
    assert any("WATCHDOG=1" in d for d in datagrams), datagrams
    lines = [line for line in log_file.read_text().splitlines() if line.startswith("{")]
    events = [__import__("json").loads(line) for line in lines]
    decisions = [e for e in events if e["event"] == "decision"]
    assert len(decisions) == 2
    assert all(e["mailbox"] == "jkt" and e["uid"] and e["message_id"] and e["rule"] for e in decisions)
    assert any(e["event"] == "stopped" for e in events)
    assert "no_such_unit" in next(e for e in events if e["event"] == "reload_rejected")["problems"][0]


def test_dry_run_sends_nothing_and_marks_nothing(tmp_path: Path, dovecot: Dovecot, sink: SmtpSink) -> None:
    """`run --once --dry-run` decides and logs each mail but sends nothing, marks nothing and keeps no state."""
    path = write_config(tmp_path, dovecot, sink)
    for name in ONE_PER_RULE[:3]:
        dovecot.append("router", "INBOX", (DATA / name).read_bytes())
    done = _run_cli(path, "--dry-run")
    assert done.returncode == 0, done.stderr
    decisions = [line for line in done.stdout.splitlines() if '"event": "decision"' in line]
    assert len(decisions) == 3 and all('"outcome": "dry-run"' in line for line in decisions)
    assert sink.count == 0
    assert not any(ROUTED in f or b"\\Seen" in f for f in dovecot.flags("router", "INBOX").values())
    real = _run_cli(path)
    assert real.returncode == 0
    assert received_by_kind(sink) == planned_recipients(load_config(path), ONE_PER_RULE[:3])


def test_third_mail_about_the_same_thing_counts_toward_a_hard_complaint(
    tmp_path: Path, dovecot: Dovecot, sink: SmtpSink
) -> None:
    """The state store remembers each sender's mail: the third fault report within 7 days fires repeated_contact,
    also when all three arrive in the same batch."""
    import json
    import re

    config = load_config(write_config(tmp_path, dovecot, sink))
    raw = (DATA / "dcs-fault-outlook-en.eml").read_bytes()
    for n in range(3):
        dovecot.append("router", "INBOX", re.sub(rb"Message-ID: <[^>]+>", f"Message-ID: <again-{n}@x>".encode(), raw))
    assert once(config)[0] == 0
    with opened(tmp_path / "state.sqlite3") as db:
        traces = [json.loads(row[0]) for row in db.execute("SELECT decision FROM messages ORDER BY uid")]
    fired = [[s["name"] for s in t["signals"] if s["group"] == "hard"] for t in traces]
    assert ["repeated_contact" in names for names in fired] == [False, False, True]


def test_concurrent_flushes_never_send_twice(tmp_path: Path, dovecot: Dovecot, sink: SmtpSink) -> None:
    """The outbox job and a mailbox job flushing at the same moment send each planned message once."""
    config = load_config(write_config(tmp_path, dovecot, sink))
    for name in ONE_PER_RULE:
        dovecot.append("router", "INBOX", (DATA / name).read_bytes())
    sink.set_down(True)
    router = make_router(config, dry_run=False)
    mailbox = config.settings.mailboxes[0]

    async def scenario() -> None:
        await router.poll_once(mailbox)  # planned, nothing sent: the relay is down
        sink.set_down(False)
        await asyncio.sleep(0.1)  # past the test's short retry backoff
        await asyncio.gather(router.flush_outbox(), router.flush_outbox(), router.flush_outbox())
        await router.close()

    try:
        asyncio.run(scenario())
    finally:
        router.store.close()
    assert received_by_kind(sink) == planned_recipients(config, ONE_PER_RULE)


def test_a_second_run_on_the_same_state_is_refused(tmp_path: Path, dovecot: Dovecot, sink: SmtpSink) -> None:
    """While `emailrouter run` holds the state store, `run --once` on the same state refuses to start."""
    path = write_config(tmp_path, dovecot, sink)
    daemon = start_daemon(path)
    try:
        _wait(lambda: (tmp_path / "state.sqlite3.lock").exists(), 20, "the daemon's lock")
        time.sleep(0.5)
        second = _run_cli(path)
        assert second.returncode == 1
        assert "another `emailrouter run` is using" in second.stderr
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
    assert _run_cli(path).returncode == 0  # free again
