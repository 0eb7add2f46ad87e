"""`emailrouter demo`: the real daemon code over real IMAP (pymap) and SMTP (aiosmtpd) on loopback."""

from __future__ import annotations

import email
from email.policy import default
from pathlib import Path

import pytest

from emailrouter.ops.cli import main
from tests.conftest import CONFIG_DIR


def test_demo_routes_every_sample_and_leaves_the_sent_mail(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """All shipped samples are processed once; every planned message is a readable .eml in the out folder."""
    out = tmp_path / "demo"
    assert main(["demo", "-c", str(CONFIG_DIR / "emailrouter.yaml"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    samples = sorted((CONFIG_DIR / "samples").glob("*.eml"))
    for sample in samples:
        assert sample.name[:40] in printed
    sent = sorted((out / "sent").glob("*.eml"))
    assert (
        f"{len(samples)} mails in, {len(sent)} mails sent, outcomes: done {len(samples)}, outbox_pending 0" in printed
    )
    assert len(sent) > len(samples)
    for path in sent:
        msg = email.message_from_bytes(path.read_bytes(), policy=default)
        assert msg["Message-ID"] and msg["From"].addresses[0].addr_spec == "emailrouter@cc.example.co.id"
    for rule in (
        "1.2.5-fault-opens-ticket",
        "1.2.9-dcs-hard-complaint-educate-forward-escalate",
        "open-no-usable-sender-to-human-queue",
    ):
        assert rule in printed
