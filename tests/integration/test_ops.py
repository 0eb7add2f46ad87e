"""Operating the rules against a real mailbox: decision audit, stats, the daily report, replay over IMAP."""

from __future__ import annotations

import asyncio
import email
import json
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.policy import default
from pathlib import Path

import pytest

from emailrouter.config.loader import load_config
from emailrouter.ops.cli import main
from emailrouter.service.daemon import make_router, send_daily_report
from tests.conftest import DATA
from tests.integration.test_daemon import ROUTED, once, start_daemon, write_config
from tests.support.dovecot import Dovecot
from tests.support.sink import SmtpSink

NAMES = ["dcs-hard-media-threat-informal.eml", "des-fault-pertamina-id.eml", "automated-out-of-office-en.eml"]


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[SmtpSink]:
    with SmtpSink() as s:
        yield s


def test_audit_record_stats_and_daily_report(
    tmp_path: Path, dovecot: Dovecot, sink: SmtpSink, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every processed mail has a decision record (`show`); `stats` counts it; the daily report mails the same."""
    path = write_config(tmp_path, dovecot, sink)
    path.write_text(path.read_text() + 'reports:\n  daily_to: supervisor@cc.example.co.id\n  at: "07:00"\n')
    for name in NAMES:
        dovecot.append("router", "INBOX", (DATA / name).read_bytes())
    assert once(load_config(path))[0] == 0
    capsys.readouterr()  # the run's own log lines
    message_id = email.message_from_bytes((DATA / NAMES[0]).read_bytes(), policy=default)["Message-ID"]
    assert main(["show", "-c", str(path), str(message_id)]) == 0
    record = json.loads(capsys.readouterr().out)
    decision = record["decision"]
    assert decision["segment"] == "DCS" and decision["segment_source"] == "domain-rule"
    assert decision["rule"] == "1.2.9-dcs-hard-complaint-educate-forward-escalate"
    assert decision["hard_complaint"] and any(s["name"] == "media_threat" for s in decision["signals"])
    assert decision["config_version"] and decision["size"] > 0 and "decide_ms" in decision["timings"]
    assert [s["kind"] for s in record["sends"]] == ["reply", "forward", "escalate"]
    assert all(s["status"] == "sent" for s in record["sends"]) and record["marked_on_server"]

    assert main(["stats", "-c", str(path), "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["messages"] == 3 and figures["hard_complaints"] == 1
    assert figures["per_mailbox"] == {"jkt": 3}
    assert figures["per_outcome"] == {"done": 2, "automated": 1}
    assert figures["per_rule"]["guard-automated-mail-recorded"] == 1
    assert figures["actions"]["escalate:coordination:sent"] == 1
    assert figures["outbox_pending"] == 0 and figures["quarantine"] == 0 and figures["failures"] == []
    assert any(k.startswith("all: automated mail") for k in figures["suppressed"])
    assert figures["arrival_to_sent_seconds"]["median"] is not None
    assert main(["stats", "-c", str(path)]) == 0
    assert "per rule:" in capsys.readouterr().out

    before = sink.count
    router = make_router(load_config(path), dry_run=False)
    try:
        tomorrow = datetime.now(UTC) + timedelta(days=1)
        assert asyncio.run(_report(router, tomorrow))
    finally:
        router.store.close()
    (report,) = sink.received[before:]
    assert report.rcpt_tos == ("supervisor@cc.example.co.id",)
    msg = email.message_from_bytes(report.data, policy=default)
    assert "3 mails, 1 hard complaints, 0 failures" in str(msg["Subject"])
    assert msg.get_content_type() == "multipart/alternative"
    body = msg.get_body(("plain",)).get_content()
    assert "per rule:" in body and "1.2.5-fault-opens-ticket" in body
    page = msg.get_body(("html",)).get_content()
    assert ">1.2.5-fault-opens-ticket</td>" in page and "hard complaints" in page


async def _report(router, now):  # type: ignore[no-untyped-def]
    try:
        return await send_daily_report(router, now)
    finally:
        await router.close()


def test_replay_over_imap_is_read_only(
    tmp_path: Path, dovecot: Dovecot, sink: SmtpSink, capsys: pytest.CaptureFixture[str]
) -> None:
    """`replay imap:MAILBOX` reads with EXAMINE and BODY.PEEK: no flag changes, nothing sent."""
    path = write_config(tmp_path, dovecot, sink)
    new_dir = tmp_path / "new"
    shutil.copytree(path.parent, new_dir)
    rules = new_dir / "rules.yaml"
    rules.write_text(rules.read_text().replace("      - escalate: coordination", "      - escalate: human_queue"))
    for name in NAMES:
        dovecot.append("router", "INBOX", (DATA / name).read_bytes())

    def flags() -> dict[int, set[bytes]]:  # \\Recent belongs to whichever session looked first: not ours to keep
        return {uid: set(f) - {b"\\Recent"} for uid, f in dovecot.flags("router", "INBOX").items()}

    flags_before = flags()
    assert main(["replay", "--old", str(path), "--new", str(new_dir / "emailrouter.yaml"), "--json", "imap:jkt"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["total"] == 3 and result["changed"] == 1
    (changed,) = result["messages"]
    assert "escalate:email-triage@cc.example.co.id" in changed["new"]["recipients"]
    assert flags() == flags_before
    assert not any(ROUTED in f for f in flags_before.values())
    assert sink.count == 0


def test_prometheus_metrics_and_health_endpoint(tmp_path: Path, dovecot: Dovecot, sink: SmtpSink) -> None:
    """With metrics.listen set, the daemon serves counters per mailbox/segment/intent/outcome and per action on
    loopback, and /healthz answers 200 while the mailbox polls."""
    import socket
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = write_config(tmp_path, dovecot, sink)
    path.write_text(path.read_text() + f'metrics:\n  listen: "127.0.0.1:{port}"\n')
    dovecot.append("router", "INBOX", (DATA / "dcs-fault-outlook-en.eml").read_bytes())
    proc = start_daemon(path)
    try:
        deadline = time.monotonic() + 20
        while sink.count < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sink.count == 2
        poll_done = 'emailrouter_last_poll_success_timestamp_seconds{mailbox="jkt"}'
        while True:  # the sends reach the sink before the pass ends (marking comes last): wait for its end
            metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            if poll_done in metrics or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        health = urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert health.status == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert 'emailrouter_messages_total{intent="fault",mailbox="jkt",outcome="done",segment="DCS"} 1.0' in metrics
    assert 'emailrouter_actions_total{result="sent",type="forward",unit="dcs_unit"} 1.0' in metrics
    assert "emailrouter_outbox_pending 0.0" in metrics
    assert 'emailrouter_last_poll_success_timestamp_seconds{mailbox="jkt"}' in metrics
