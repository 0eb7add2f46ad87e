from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import structlog

from emailrouter.config.loader import Config, load_config
from tests.support.postgres import Postgres, make_base, postgres_available

ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = ROOT / "config"
DATA = Path(__file__).resolve().parent / "data"
NOW = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """Each test starts with structlog's defaults (a test may have pointed logs at a captured stream)."""
    yield
    structlog.reset_defaults()


@pytest.fixture(autouse=True)
def _not_a_service(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests resolve the state's place as from a shell on a machine without the service, even when the
    suite itself runs under systemd (a CI runner's unit sets $INVOCATION_ID) or beside an installed one."""
    from emailrouter.config import settings

    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    monkeypatch.delenv("INVOCATION_ID", raising=False)
    monkeypatch.setattr(settings, "SERVICE_STATE_DIRECTORY", Path("/nonexistent/emailrouter-tests/var-lib"))


@pytest.fixture(scope="session")
def config() -> Config:
    """The shipped configuration."""
    return load_config(CONFIG_DIR / "emailrouter.yaml")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Postgres]:
    """One real PostgreSQL server for the session (initdb takes seconds); tests take a database each
    (`postgres_database`). Skipped without PostgreSQL, a failure under CI=true, where it must be there."""
    reason = postgres_available()
    if reason is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is required under CI=true: {reason}")
        pytest.skip(reason)
    base = make_base()
    try:
        with Postgres(base) as server:
            yield server
    finally:
        shutil.rmtree(base, ignore_errors=True)


_DATABASES = itertools.count(1)


@pytest.fixture
def postgres_database(postgres_server: Postgres) -> Iterator[str]:
    """The URL of a new, empty database on the session's server (no password in it), dropped afterwards."""
    name = f"test_{os.getpid()}_{next(_DATABASES)}"
    url = postgres_server.create_database(name)
    try:
        yield url
    finally:
        postgres_server.drop_database(name)


@pytest.fixture
def config_copy(tmp_path: Path) -> Path:
    """A writable copy of the shipped config folder; returns the path of its emailrouter.yaml."""
    target = tmp_path / "config"
    shutil.copytree(CONFIG_DIR, target, ignore=shutil.ignore_patterns("samples", "tests"))
    return target / "emailrouter.yaml"


AUTHSERV = "mx.cc.example.co.id"


def eml(
    *headers: str, body: str = "", content_type: str = "text/plain; charset=utf-8", authenticated: bool = True
) -> bytes:
    """A small mail built from header lines and a body; by default as our own MX passes it on, with an
    Authentication-Results header saying dmarc=pass for the From: domain."""
    head = list(headers)
    sender = next((h for h in head if h.lower().startswith("from:")), None)
    if authenticated and sender and "@" in sender:
        domain = sender.rsplit("@", 1)[1].strip().rstrip(">").strip().lower()
        head.insert(0, f"Authentication-Results: {AUTHSERV}; dmarc=pass header.from={domain}")
    if not any(h.lower().startswith("content-type:") for h in head):
        head.append(f"Content-Type: {content_type}")
    return ("\r\n".join(head) + "\r\n\r\n" + body).encode("utf-8")
