"""`emailrouter demo`: the real daemon code over real IMAP (pymap) and SMTP (aiosmtpd) on loopback."""

from __future__ import annotations

import email
import shutil
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


def test_the_demo_table_shows_a_reply_the_limit_held_back_as_not_sent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A second mail from the same customer gets no second reply: the table says so and why, never `sent`."""
    config = tmp_path / "config"
    shutil.copytree(CONFIG_DIR, config, ignore=shutil.ignore_patterns("tests"))
    first = (config / "samples" / "dcs-fault-outlook-en.eml").read_bytes()
    again = first.replace(b"@AM0PR07MB4417.", b"@again.AM0PR07MB4417.").replace(
        b"Subject: Home internet not working", b"Subject: Still: home internet not working"
    )
    (config / "samples" / "dcs-fault-outlook-en2.eml").write_bytes(again)
    out = tmp_path / "demo"
    assert main(["demo", "-c", str(config / "emailrouter.yaml"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    block = printed.split("dcs-fault-outlook-en2.eml", 1)[1].split("\n")[1:]
    block = block[: next(i for i, line in enumerate(block) if not line.startswith(" "))]
    assert [line.split()[:2] for line in block] == [["->", "forward"], ["-x", "reply"]]
    assert "[sent]" in block[0] and "not sent:" in block[1] and "thomas.becker@outlook.com" not in block[0]
    sent = len(list((out / "sent").glob("*.eml")))
    assert printed.count("[sent]") == sent
