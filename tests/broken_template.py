"""A config whose education template passes `check` but fails on real mail: any subject starting with URGENT
takes a branch that uses an undefined variable (no sample takes it; a customer can)."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import eml

BRANCH = '{% if original_subject.startswith("URGENT") %}{{ urgent_note }}{% endif %}'

URGENT_MAIL = eml(
    "From: Budi Santoso <budi.santoso@gmail.com>",
    "To: cs@cc.example.co.id",
    "Subject: URGENT internet mati",
    "Message-ID: <urgent-1@mail.gmail.com>",
    "Date: Mon, 23 Nov 2026 08:00:00 +0700",
    body="Internet saya mati sejak pagi, tolong dibantu.\n",
)
CALM_MAIL = URGENT_MAIL.replace(b"URGENT internet", b"Internet").replace(b"urgent-1@", b"calm-1@")


def break_template(config_dir: Path) -> tuple[Path, int]:
    """Add the URGENT branch to `templates/education.id.txt`; returns the template and the branch's line."""
    tpl = config_dir / "templates" / "education.id.txt"
    lines = tpl.read_text().split("\n")
    number = next(i for i, line in enumerate(lines) if line.startswith("Yth."))
    lines[number] += BRANCH
    tpl.write_text("\n".join(lines))
    return tpl, number + 1
