"""The learned model's file (config/model.json): read and verified, or written. The bytes are data only:
core/textmodel.py's `model_from_bytes` parses them with the JSON parser and checks the checksum."""

from __future__ import annotations

from pathlib import Path

from emailrouter.core.textmodel import TextModel, model_from_bytes


def load_model(path: str | Path) -> TextModel:
    """Read and verify a model file. Raises ModelError (with a key) or OSError."""
    return model_from_bytes(Path(path).read_bytes())


def save_model(model: TextModel, path: str | Path) -> None:
    """Write `model` (byte-identical for equal training)."""
    Path(path).write_bytes(model.dumps())
