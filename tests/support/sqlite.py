"""Looking into a state file from a test: a connection that is committed and, unlike `with sqlite3.connect()`,
closed at the end of the block (Python 3.13 warns about every connection left open)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def opened(path: str | Path) -> Iterator[sqlite3.Connection]:
    """`with opened(path) as db:` commits on success, rolls back on an exception, and always closes."""
    db = sqlite3.connect(path)
    try:
        with db:
            yield db
    finally:
        db.close()
