"""JSON Schemas (draft 2020-12) for the YAML files ops edit, for validation-as-you-type in editors.

`emailrouter schema config|rules|signals` prints them; yaml-language-server (VS Code's YAML extension and
others) then flags mistakes while the file is being written. Each is generated from the model the loader
validates that file with (routing.MainFile, which holds models.DaemonSettings; rules.RulesFile;
signals.SignalsFile), so a schema and the loader cannot drift; tests/test_schema.py holds them to what the
loader accepts.

A schema sees one file at a time: whether a unit key, segment code or template name exists, whether a
name is used twice, whether a signal named by requires exists above it, whether a regex compiles and
whether the last row has no conditions is `emailrouter check`'s job.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from emailrouter.config import routing, rules, signals
from emailrouter.config.validation import json_schema

DIALECT = "https://json-schema.org/draft/2020-12/schema"
BASE_ID = "https://emailrouter.invalid/schema/"
CHECK = (
    "Cross-references (unit keys, segment codes, template names, unique names) are not checked here:"
    " run `emailrouter check`."
)


def _document_of(model: Any, name: str, title: str) -> dict[str, Any]:
    """A whole file's schema generated from the loader's own model of it."""
    schema = json_schema(model)
    schema["description"] = f"{schema['description']} {CHECK}"
    return {"$schema": DIALECT, "$id": f"{BASE_ID}{name}.json", "title": title, **schema}


def main_schema() -> dict[str, Any]:
    """The schema of the main file, emailrouter.yaml: generated from routing.MainFile, the loader's own model."""
    return _document_of(routing.MainFile, "config", "emailrouter configuration (emailrouter.yaml)")


def rules_schema() -> dict[str, Any]:
    """The schema of the decision table, rules.yaml: generated from rules.RulesFile, the loader's own model."""
    return _document_of(rules.RulesFile, "rules", "emailrouter decision table (rules.yaml)")


def signals_schema() -> dict[str, Any]:
    """The schema of the classification signals, signals.yaml: generated from signals.SignalsFile."""
    return _document_of(signals.SignalsFile, "signals", "emailrouter classification signals (signals.yaml)")


SCHEMAS: dict[str, Callable[[], dict[str, Any]]] = {
    "config": main_schema,
    "rules": rules_schema,
    "signals": signals_schema,
}
