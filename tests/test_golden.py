"""Golden bytes: a composed forward, escalation and reply are byte for byte what they were.

core/mime.py writes headers and parts through private parts of the standard library's email package
(`Message._headers`, `Generator._fp`, see mime.py). A Python release that changes them would change what
goes out without any other test noticing; these files hold every composed byte, on every supported
Python. The learned model is left out (`model=False`), so retraining it does not touch them; a change
to the signals, the templates or compose does, on purpose: then regenerate with
`EMAILROUTER_GOLDEN=write .venv/bin/pytest tests/test_golden.py` and review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from emailrouter.config.loader import Config, load_config
from emailrouter.core.pipeline import route
from tests.conftest import CONFIG_DIR, NOW, eml

GOLDEN = Path(__file__).parent / "golden"  # not under data/: replay and the fixture tests read every .eml there
HARD_DCS = eml(
    'From: "Budi Santoso" <budi.santoso@gmail.com>',
    "To: cs@cc.example.co.id",
    "Subject: Internet mati lagi",
    "Message-ID: <golden-1@mail.gmail.com>",
    "References: <older@mail.gmail.com>",
    "Date: Mon, 23 Nov 2026 08:00:00 +0700",
    body="Internet saya mati dr kmrn, sudah berkali-kali lapor. Saya viralkan di medsos!\n",
)


@pytest.fixture(scope="module")
def signals_only() -> Config:
    return load_config(CONFIG_DIR / "emailrouter.yaml", model=False)


def test_a_forward_an_escalation_and_a_reply_are_the_golden_bytes(signals_only: Config) -> None:
    """Every byte of each message composed for a hard complaint equals its golden file."""
    routing = route(HARD_DCS, signals_only, NOW)
    # where the clone lives is the one thing that may differ (the summary names the config file's line)
    here = str(CONFIG_DIR).encode()
    got = {o.action.type: o.message.as_bytes().replace(here, b"CONFIG_DIR") for o in routing.outgoing}
    assert set(got) == {"reply", "forward", "escalate"}
    for kind, data in sorted(got.items()):
        path = GOLDEN / f"hard-dcs-{kind}.eml"
        if os.environ.get("EMAILROUTER_GOLDEN") == "write":
            path.write_bytes(data)
        assert data == path.read_bytes(), f"{path.name} differs (see this module's docstring)"
