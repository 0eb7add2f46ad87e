"""The daily report (service.report): its figures as text and as an HTML page mail clients render, its MIME
structure, and `emailrouter report` (text, --html, --png)."""

from __future__ import annotations

import email
import re
from datetime import timedelta
from email.policy import default
from pathlib import Path
from typing import Any

import pytest

from emailrouter.config.loader import Config
from emailrouter.core.compose import compose_report
from emailrouter.ops.cli import main
from emailrouter.service.imap import Fetched
from emailrouter.service.memory import Batch
from emailrouter.service.metrics import Metrics
from emailrouter.service.processor import PollReport, Processor
from emailrouter.service.report import as_html, chromium, daily_report
from emailrouter.service.stats import stats
from emailrouter.service.store import Store
from tests.conftest import DATA, NOW
from tests.test_friction import mailbox_config

MAILS = ("dcs-fault-outlook-en.eml", "dcs-hard-compensation-repeated-en.eml", "automated-out-of-office-en.eml")


def _day_in_store(config: Config, path: Path) -> Store:
    """A state store with three mails of NOW's day decided by the shipped config, one of their sends refused."""
    store = Store(path)
    mailbox = mailbox_config()
    processor = Processor(config, Metrics(), lambda: NOW, dry_run=False)
    batch = Batch(store)
    for uid, name in enumerate(MAILS, start=1):
        raw = (DATA / name).read_bytes()
        processor.process(mailbox, 7, Fetched(uid, raw, len(raw)), PollReport(mailbox.name), batch)
    batch.commit()
    first, *rest = store.due_ids(NOW)
    store.mark_failed(first, "550 5.1.1 <nobody@x.example>: no such user & no forwarding")
    store.mark_sent(rest, NOW + timedelta(seconds=3))
    store.settle(NOW)
    return store


def test_the_html_part_has_the_days_figures_and_a_bar_per_count(config: Config, tmp_path: Path) -> None:
    """The page shows the day's counts (as the text does), a bar for each, the failure escaped; no image, no script."""
    store = _day_in_store(config, tmp_path / "s.sqlite3")
    try:
        report = daily_report(store, NOW + timedelta(days=1), {"jkt-account": "jkt"})
    finally:
        store.close()
    figures = report.figures
    assert report.day == f"{NOW:%Y-%m-%d}" and figures["messages"] == 3
    assert report.subject == f"emailrouter daily report {report.day}: 3 mails, 1 hard complaints, 1 failures"
    page = report.html
    assert f"emailrouter daily report {report.day} (UTC)" in page
    assert re.search(r">3</div><div[^>]*>mails<", page) and re.search(r">1</div><div[^>]*>hard complaints<", page)
    for name in [*figures["per_rule"], *figures["per_outcome"], *figures["actions"]]:
        assert f">{name}</td>" in page, name
        assert name in report.text
    assert "&lt;nobody@x.example&gt;: no such user &amp; no forwarding" in page
    assert "<nobody@" not in page
    bars = re.findall(r'<td width="(\d+)%"', page)
    assert len(bars) == sum(len(figures[k]) for k in ("per_mailbox", "per_outcome", "per_segment", "per_intent",
                                                       "per_rule", "actions", "suppressed"))  # fmt: skip
    assert "100" in bars
    for forbidden in ("<img", "<script", "<link", "<style", "src=", "http://", "https://", "url("):
        assert forbidden not in page.lower(), forbidden


def test_every_name_in_the_page_is_escaped(config: Config, tmp_path: Path) -> None:
    """A rule id, a unit or a reason with markup in it is shown as text, never as markup."""
    store = Store(tmp_path / "s.sqlite3")
    try:
        figures: dict[str, Any] = stats(store, NOW, NOW + timedelta(days=1), {})
    finally:
        store.close()
    hostile = '<script>alert("x")</script>'
    figures["per_rule"] = {hostile: 2, "ok-rule": 1}
    figures["suppressed"] = {"reply: <b>bold</b> & 'quoted'": 1}
    page = as_html(figures, f"report {hostile}")
    assert "<script" not in page and "<b>" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "reply: &lt;b&gt;bold&lt;/b&gt; &amp; &#x27;quoted&#x27;" in page
    assert re.search(r'<td width="100%"[^>]*>&nbsp;</td></tr></table></td>\s*<td[^>]*>2</td>', page)
    assert re.search(r'<td width="50%"[^>]*>&nbsp;</td><td[^>]*>&nbsp;</td></tr></table></td>\s*<td[^>]*>1</td>', page)


def test_the_report_mail_is_multipart_alternative_text_then_html(config: Config, tmp_path: Path) -> None:
    """Text first, HTML last (the part a client prefers), both UTF-8; each part is what the report made."""
    store = _day_in_store(config, tmp_path / "s.sqlite3")
    try:
        report = daily_report(store, NOW + timedelta(days=1), {})
    finally:
        store.close()
    msg = compose_report(config.router, "supervisor@cc.example.co.id", report.subject, report.text, NOW, report.html)
    parsed = email.message_from_bytes(msg.as_bytes(), policy=default)
    assert parsed.get_content_type() == "multipart/alternative"
    parts = list(parsed.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert all(p.get_content_charset() == "utf-8" for p in parts)
    text, page = (p.get_content().replace("\r\n", "\n") for p in parts)
    assert text == report.text and page == report.html
    assert parsed["Subject"] == report.subject and parsed["Auto-Submitted"] == "auto-generated"
    plain = compose_report(config.router, "supervisor@cc.example.co.id", report.subject, report.text, NOW)
    assert plain.get_content_type() == "text/plain"  # without a page: the text alone, as before


def _state_config(config_copy: Path, tmp_path: Path, config: Config) -> Path:
    _day_in_store(config, tmp_path / "state.sqlite3").close()
    config_copy.write_text(config_copy.read_text() + f"state:\n  path: {tmp_path / 'state.sqlite3'}\n")
    return config_copy


def test_the_report_command_prints_the_text_and_writes_the_page(
    config: Config, config_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`report --day` prints what the supervisor gets; `--html FILE` writes the mail's HTML part."""
    path = _state_config(config_copy, tmp_path, config)
    capsys.readouterr()  # the decision events of the mails put into the store
    day = f"{NOW:%Y-%m-%d}"
    assert main(["report", "-c", str(path), "--day", day]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"Subject: emailrouter daily report {day}: 3 mails") and "per rule:" in out
    page = tmp_path / "report.html"
    assert main(["report", "-c", str(path), "--day", day, "--html", str(page)]) == 0
    assert "3 mails" not in capsys.readouterr().out
    text = page.read_text()
    assert text.startswith("<!DOCTYPE html>") and "1.2.8-dcs-educate-forward" in text
    assert main(["report", "-c", str(path), "--day", "yesterday"]) == 2


def test_png_without_chromium_says_what_to_do(
    config: Config,
    config_copy: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """No Chromium on $PATH: `--png` exits 1 naming where it looked and what to do instead; no file is left."""
    path = _state_config(config_copy, tmp_path, config)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.delenv("CHROMIUM", raising=False)
    png = tmp_path / "report.png"
    assert main(["report", "-c", str(path), "--png", str(png)]) == 1
    err = capsys.readouterr().err
    assert "no Chromium found" in err and "chromium" in err and "--html FILE" in err
    assert not png.exists()


@pytest.mark.skipif(chromium() is None, reason="no Chromium on this machine ($CHROMIUM or chromium on $PATH)")
def test_png_is_the_page_as_chromium_renders_it(
    config: Config, config_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With Chromium, `--png FILE` writes a PNG picture of the page."""
    path = _state_config(config_copy, tmp_path, config)
    png = tmp_path / "report.png"
    assert main(["report", "-c", str(path), "--day", f"{NOW:%Y-%m-%d}", "--png", str(png)]) == 0
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
