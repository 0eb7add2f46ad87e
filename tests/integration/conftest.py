"""Fixtures for the integration tests, which talk to a real Dovecot IMAP server on 127.0.0.1.

The `dovecot` fixture is function-scoped: every test gets a fresh server (new base directory, new port, empty
mailboxes), since starting one takes well under 0.1 s and stopping it a few milliseconds. Nothing needs
cleaning between tests; the base directory is removed afterwards. Without Dovecot the tests are skipped,
except under CI=true, where they fail.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.dovecot import Dovecot, dovecot_available, make_base

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test under tests/integration with `integration` (the hook sees the whole session's items)."""
    for item in items:
        if HERE in item.path.resolve().parents:
            item.add_marker(pytest.mark.integration)


def require_dovecot() -> None:
    """Skip the test when Dovecot is missing, or fail it under CI=true, where it must be there."""
    reason = dovecot_available()
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"Dovecot is required under CI=true: {reason}")
    pytest.skip(reason)


@pytest.fixture
def dovecot() -> Iterator[Dovecot]:
    """A running Dovecot with users router/secret and other/secret and empty mailboxes, stopped afterwards."""
    require_dovecot()
    base = make_base()
    try:
        with Dovecot(base) as server:
            yield server
    finally:
        shutil.rmtree(base, ignore_errors=True)
