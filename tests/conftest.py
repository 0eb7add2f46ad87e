from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from emailrouter.config import Config, load_config

ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = ROOT / "config"
DATA = Path(__file__).resolve().parent / "data"
NOW = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="session")
def config() -> Config:
    """The shipped configuration."""
    return load_config(CONFIG_DIR / "emailrouter.yaml")


@pytest.fixture
def config_copy(tmp_path: Path) -> Path:
    """A writable copy of the shipped config folder; returns the path of its emailrouter.yaml."""
    target = tmp_path / "config"
    shutil.copytree(CONFIG_DIR, target, ignore=shutil.ignore_patterns("samples", "tests"))
    return target / "emailrouter.yaml"


def eml(*headers: str, body: str = "", content_type: str = "text/plain; charset=utf-8") -> bytes:
    """A small mail built from header lines and a body."""
    head = list(headers)
    if not any(h.lower().startswith("content-type:") for h in head):
        head.append(f"Content-Type: {content_type}")
    return ("\r\n".join(head) + "\r\n\r\n" + body).encode("utf-8")
