"""The configuration shipped inside the package: what `emailrouter demo` runs and `emailrouter init` copies.

It is package data in emailrouter/data/; in the repository that folder is a link to config/, the one copy
that is edited, checked by `.ci/test` and used by the tests (a wheel holds the files themselves).
"""

from __future__ import annotations

from pathlib import Path

SHIPPED_DIR = Path(__file__).resolve().parent.parent / "data"
MAIN_FILE = "emailrouter.yaml"
_LEFT_OUT = {"state", "__pycache__"}  # a clone's state store (the default place next to the config)


def shipped_config() -> Path:
    """The shipped main file (its samples/ are the demo's mails)."""
    return SHIPPED_DIR / MAIN_FILE


def starter_files() -> list[Path]:
    """The files `init` writes, relative to the shipped folder, in a stable order."""
    return sorted(
        path.relative_to(SHIPPED_DIR)
        for path in SHIPPED_DIR.rglob("*")
        if path.is_file() and not _LEFT_OUT & set(path.relative_to(SHIPPED_DIR).parts)
    )
