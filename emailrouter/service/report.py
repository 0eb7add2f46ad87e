"""The daily report: a day's `stats` figures as text and as HTML with bar charts, for a supervisor's mail client.

The HTML is what mail clients render: tables with inline styles (no stylesheet, no images, no scripts, no
web fonts), every bar a table cell whose width is its share of the chart's largest count. Every name in
it (mailbox, rule, unit, error) is escaped: rule ids and errors are text ops or servers wrote.
`emailrouter report --html FILE` writes the same page; `--png FILE` has headless Chromium take a picture.
"""

from __future__ import annotations

import html
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from emailrouter.service.stats import as_text, stats
from emailrouter.service.store import StateStore

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome", "headless_shell")
"""Looked for on $PATH (after $CHROMIUM) by `emailrouter report --png`."""

CHARTS = (  # (title, key in the figures, bar colour)
    ("Mails per mailbox", "per_mailbox", "#2563eb"),
    ("Outcome", "per_outcome", "#0d9488"),
    ("Segment", "per_segment", "#7c3aed"),
    ("Intent", "per_intent", "#ea580c"),
    ("Rule that decided", "per_rule", "#475569"),
    ("Messages sent and their result (type:unit:status)", "actions", "#16a34a"),
    ("Replies held back, and why", "suppressed", "#ca8a04"),
)
FONT = "font-family:Arial,Helvetica,sans-serif"
TABLE = '<table role="presentation" width="100%" cellpadding="0" cellspacing="0" border="0">'


@dataclass(frozen=True)
class DailyReport:
    day: str  # YYYY-MM-DD (UTC)
    subject: str
    text: str
    html: str
    figures: dict[str, Any]


def daily_report(store: StateStore, now: datetime, mailbox_names: dict[str, str]) -> DailyReport:
    """The report of the UTC day before `now`'s (what the daemon sends at `reports.at`)."""
    day_end = now.replace(hour=0, minute=0, second=0, microsecond=0)
    day_start = day_end - timedelta(days=1)
    figures = stats(store, day_start, day_end, mailbox_names)
    day = f"{day_start:%Y-%m-%d}"
    subject = (
        f"emailrouter daily report {day}: {figures['messages']} mails, "
        f"{figures['hard_complaints']} hard complaints, {len(figures['failures'])} failures"
    )
    return DailyReport(
        day, subject, as_text(figures), as_html(figures, f"emailrouter daily report {day} (UTC)"), figures
    )


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _tile(label: str, value: object, alarm: bool = False) -> str:
    colour = "#b91c1c" if alarm else "#111827"
    return (
        f'<td style="padding:10px 12px;border:1px solid #e5e7eb;background:#f9fafb;{FONT};vertical-align:top">'
        f'<div style="font-size:24px;font-weight:bold;color:{colour}">{_e(value)}</div>'
        f'<div style="font-size:12px;color:#6b7280">{_e(label)}</div></td>'
    )


def _bar(count: int, largest: int, colour: str) -> str:
    """A bar as a table of one or two cells: the filled share of the row, then the rest."""
    share = max(1, round(100 * count / largest)) if largest and count else 0
    filled = (
        f'<td width="{share}%" style="width:{share}%;background:{colour};height:14px;font-size:1px;line-height:1px">'
        "&nbsp;</td>"
        if share
        else ""
    )
    rest = '<td style="font-size:1px;line-height:1px">&nbsp;</td>' if share < 100 else ""
    return f"{TABLE}<tr>{filled}{rest}</tr></table>"


def _chart(title: str, counts: Mapping[str, int], colour: str) -> str:
    head = f'<h2 style="{FONT};font-size:15px;color:#111827;margin:22px 0 6px">{_e(title)}</h2>'
    if not counts:
        return head + f'<p style="{FONT};font-size:13px;color:#6b7280;margin:0">none</p>'
    largest = max(counts.values())
    rows = "".join(
        f'<tr><td style="{FONT};font-size:13px;color:#111827;padding:3px 8px 3px 0;width:38%;overflow-wrap:anywhere">'
        f"{_e(name)}</td>"
        f'<td style="padding:3px 0">{_bar(count, largest, colour)}</td>'
        f'<td align="right" style="{FONT};font-size:13px;color:#111827;padding:3px 0 3px 8px;width:48px">'
        f"{_e(count)}</td></tr>"
        for name, count in counts.items()
    )
    return head + (f"{TABLE}{rows}</table>")


def as_html(figures: dict[str, Any], title: str) -> str:
    """The figures of `stats.stats` as one HTML page for a mail client (see the module's docstring)."""
    delay = figures["arrival_to_sent_seconds"]
    failures = figures["failures"]
    tiles = [
        _tile("mails", figures["messages"]),
        _tile("hard complaints", figures["hard_complaints"], alarm=figures["hard_complaints"] > 0),
        _tile("automated", figures["automated"]),
        _tile("failed sends", len(failures), alarm=bool(failures)),
        _tile("outbox pending", figures["outbox_pending"], alarm=figures["outbox_pending"] > 0),
        _tile("quarantine", figures["quarantine"], alarm=figures["quarantine"] > 0),
    ]
    timing = (
        f"arrival to sent: median {delay['median']:g} s, p95 {delay['p95']:g} s"
        if delay["median"] is not None
        else "nothing was sent"
    )
    doubt = (
        f"replies in doubt (the relay's answer was lost; never sent again): {figures['uncertain_replies']}; "
        f"replies not rendered (template failed; the unit was told): {figures['replies_not_rendered']}"
    )
    failure_rows = "".join(
        f'<tr><td style="{FONT};font-size:13px;padding:4px 8px 4px 0;vertical-align:top">{_e(f["kind"])}</td>'
        f'<td style="{FONT};font-size:13px;padding:4px 8px 4px 0;vertical-align:top">{_e(", ".join(f["to"]))}</td>'
        f'<td style="{FONT};font-size:13px;padding:4px 8px 4px 0;vertical-align:top">{_e(f["status"])}</td>'
        f'<td style="{FONT};font-size:13px;padding:4px 0;vertical-align:top;color:#b91c1c">{_e(f["error"])}</td></tr>'
        for f in failures
    )
    failure_block = (
        f"{TABLE}{failure_rows}</table>"
        if failures
        else f'<p style="{FONT};font-size:13px;color:#6b7280;margin:0">none</p>'
    )
    charts = "".join(_chart(name, figures[key], colour) for name, key, colour in CHARTS)
    return (
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title></head>\n"
        '<body style="margin:0;padding:0;background:#ffffff">\n'
        '<table role="presentation" width="100%" cellpadding="0" cellspacing="0" border="0"><tr><td align="center">'
        '<table role="presentation" width="680" cellpadding="0" cellspacing="0" border="0" '
        'style="width:680px;max-width:100%"><tr><td style="padding:16px">\n'
        f'<h1 style="{FONT};font-size:20px;color:#111827;margin:0 0 4px">{_e(title)}</h1>\n'
        f'<p style="{FONT};font-size:12px;color:#6b7280;margin:0 0 14px">'
        f"{_e(figures['since'][:19])} .. {_e(figures['until'][:19])} UTC</p>\n"
        '<table role="presentation" cellpadding="0" cellspacing="4" border="0"><tr>'
        + "".join(tiles)
        + "</tr></table>\n"
        f'<p style="{FONT};font-size:13px;color:#374151;margin:10px 0 0">{_e(timing)}</p>\n'
        f'<p style="{FONT};font-size:13px;color:#374151;margin:4px 0 0">{_e(doubt)}</p>\n'
        + charts
        + f'\n<h2 style="{FONT};font-size:15px;color:#111827;margin:22px 0 6px">Failed and uncertain sends</h2>\n'
        + failure_block
        + "\n</td></tr></table></td></tr></table>\n</body></html>\n"
    )


def chromium() -> str | None:
    """The headless Chromium to use: $CHROMIUM, else the first of CHROMIUM_NAMES on $PATH."""
    given = os.environ.get("CHROMIUM")
    if given:
        return given if shutil.which(given) else None
    return next((found for name in CHROMIUM_NAMES if (found := shutil.which(name))), None)


def screenshot_command(browser: str, page: Path, png: Path, height: int) -> list[str]:
    """The command line that renders `page` to `png` (the README shows the same one)."""
    return [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        f"--window-size=720,{height}",
        f"--screenshot={png}",
        page.resolve().as_uri(),
    ]


def page_height(figures: dict[str, Any]) -> int:
    """About how tall the page is, in CSS pixels: Chromium's screenshot is the window, not the whole page."""
    rows = sum(max(1, len(figures[key])) for _, key, _ in CHARTS) + max(1, len(figures["failures"]))
    return 260 + 50 * (len(CHARTS) + 1) + 24 * rows


def render_png(page_html: str, figures: dict[str, Any], png: Path, timeout: float = 60.0) -> str | None:
    """Render the page to `png` with headless Chromium; None if it worked, else why not (in words for ops)."""
    browser = chromium()
    if browser is None:
        return (
            f"no Chromium found (looked for $CHROMIUM, then {', '.join(CHROMIUM_NAMES)} on $PATH): install one "
            "(Debian: apt-get install chromium) or set $CHROMIUM; or write the page with --html FILE and open it"
        )
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "report.html"
        page.write_text(page_html, encoding="utf-8")
        command = screenshot_command(browser, page, png.resolve(), page_height(figures))
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False, cwd=tmp)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{browser}: {type(exc).__name__}: {exc}"
    if done.returncode != 0 or not png.exists():
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        return f"{browser} exited with {done.returncode}: {tail[0]}"
    return None
