"""JSON Schemas for editors: the shipped files pass, typical mistakes are flagged, and they agree with the loader."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from emailrouter.config.credentials import SECRET_KINDS
from emailrouter.config.history import load_history
from emailrouter.config.loader import load_config
from emailrouter.config.models import DaemonSettings
from emailrouter.config.routing import DOMAIN_PATTERN
from emailrouter.config.schema import SCHEMAS, main_schema, rules_schema, signals_schema
from emailrouter.config.settings import SECURITIES
from emailrouter.config.signals import SignalsFile
from emailrouter.config.validation import json_schema
from emailrouter.core.decide import HIT_POLICIES
from emailrouter.core.directory import DomainTable
from emailrouter.core.errors import ConfigError
from emailrouter.core.facts import FACTS
from emailrouter.core.model import INTENTS, LANGUAGES, SEGMENT_SOURCES

ROOT = Path(__file__).parent.parent
FILES = {"config": "emailrouter.yaml", "rules": "rules.yaml", "signals": "signals.yaml"}
MAILBOX = {"name": "jkt", "host": "imap.example.co.id", "username": "cs-jkt", "password": {"credential": "imap-jkt"}}
NO_PASSWORD = {key: value for key, value in MAILBOX.items() if key != "password"}
SMTP = {"host": "smtp.example.co.id", "username": "router", "password": {"env": "SMTP_PASSWORD"}}

Path_ = tuple[str | int, ...]
Edit = Callable[[Any], None]


def _shipped(name: str) -> Any:
    return yaml.safe_load((ROOT / "config" / FILES[name]).read_text(encoding="utf-8"))


def _base(name: str) -> Any:
    """The shipped file; the main file also gets a mailbox and a relay, so daemon settings can be edited."""
    doc = _shipped(name)
    if name == "config":
        doc["mailboxes"] = [copy.deepcopy(MAILBOX)]
        doc["smtp"] = copy.deepcopy(SMTP)
    return doc


def _errors(name: str, doc: Any) -> list[jsonschema.ValidationError]:
    return list(jsonschema.Draft202012Validator(SCHEMAS[name]()).iter_errors(doc))


def _node(doc: Any, path: Path_) -> Any:
    for key in path:
        doc = doc[key]
    return doc


def _set(path: Path_, value: Any) -> Edit:
    return lambda doc: _node(doc, path[:-1]).__setitem__(path[-1], copy.deepcopy(value))


def _delete(*paths: Path_) -> Edit:
    def edit(doc: Any) -> None:
        for path in paths:
            del _node(doc, path[:-1])[path[-1]]

    return edit


def _rename(path: Path_, new: str) -> Edit:
    def edit(doc: Any) -> None:
        parent = _node(doc, path[:-1])
        parent[new] = parent.pop(path[-1])

    return edit


def _edited(name: str, edit: Edit) -> Any:
    doc = _base(name)
    edit(doc)
    return doc


def _load_edited(config_copy: Path, name: str, edit: Edit) -> None:
    """Write the edited file into the config copy (the main file keeps its mailbox and relay) and load it."""
    for other in FILES:
        doc = _edited(other, edit) if other == name else _base(other)
        (config_copy.parent / FILES[other]).write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    load_config(config_copy)


# (file, what, edit, where the editor should flag it)
MISTAKES: list[tuple[str, str, Edit, Path_]] = [
    ("rules", "misspelt key in a row (acions)", _rename(("rows", 1, "actions"), "acions"), ("rows", 1)),
    ("rules", "unknown hit policy", _set(("hit_policy",), "last"), ("hit_policy",)),
    ("rules", "unknown condition fact", _set(("rows", 1, "when", "weekday"), "monday"), ("rows", 1, "when")),
    ("rules", "hard as a string", _set(("rows", 4, "when", "hard"), "yes"), ("rows", 4, "when", "hard")),
    ("rules", "unknown intent value", _set(("rows", 1, "when", "intent"), ["fault", "complaint"]), ("rows", 1)),
    ("rules", "action with two kinds", _set(("rows", 1, "actions", 0, "forward"), "ticketing"), ("rows", 1)),
    ("rules", "unit on a forward", _set(("rows", 1, "actions", 0, "unit"), "ticketing"), ("rows", 1)),
    ("rules", "row without actions", _set(("rows", 1, "actions"), []), ("rows", 1, "actions")),
    ("rules", "record tag in capitals", _set(("rows", 0, "actions", 0, "record"), "Automated"), ("rows", 0)),
    ("rules", "empty table", _set(("rows",), []), ("rows",)),
    ("config", "password as a plain string", _set(("mailboxes", 0, "password"), "hunter2"), ("mailboxes", 0)),
    ("config", "security: ssl", _set(("mailboxes", 0, "security"), "ssl"), ("mailboxes", 0, "security")),
    ("config", "smtp security: ssl", _set(("smtp", "security"), "ssl"), ("smtp", "security")),
    ("config", "mailbox without password or oauth2", _delete(("mailboxes", 0, "password")), ("mailboxes", 0)),
    ("config", "secret of two kinds", _set(("smtp", "password", "file"), "pw.txt"), ("smtp", "password")),
    ("config", "secret of an unknown kind", _set(("smtp", "password"), {"vault": "x"}), ("smtp", "password")),
    ("config", "smtp username without password", _delete(("smtp", "password")), ("smtp",)),
    ("config", "misspelt top-level key", _rename(("units",), "unit"), ()),
    ("config", "trust without authserv_id", _delete(("trust", "authserv_id")), ("trust",)),
    ("config", "unit without next_steps", _delete(("units", "dcs_unit", "next_steps")), ("units", "dcs_unit")),
    ("config", "unit name missing a language", _delete(("units", "dcs_unit", "name", "en")), ("units", "dcs_unit")),
    ("config", "router address not an address", _set(("router", "address"), "emailrouter"), ("router", "address")),
    ("config", "lower-case segment code", _set(("segmentation", "segments", "des"), "x"), ("segmentation",)),
    (
        "config",
        "domain rule with @",
        _set(("segmentation", "domain_rules", 2, "match"), "@gmail.com"),
        ("segmentation",),
    ),
    ("config", "housekeeping at 25:00", _set(("housekeeping",), {"at": "25:00"}), ("housekeeping", "at")),
    ("config", "batch_size 0", _set(("mailboxes", 0, "batch_size"), 0), ("mailboxes", 0, "batch_size")),
    ("config", "keep_days 0", _set(("housekeeping",), {"keep_days": 0}), ("housekeeping", "keep_days")),
    ("config", "a timer of 0 seconds", _set(("delivery",), {"outbox_interval": 0}), ("delivery", "outbox_interval")),
    ("config", "an empty folder name", _set(("mailboxes", 0, "folder"), ""), ("mailboxes", 0, "folder")),
    ("config", "a port as a string", _set(("smtp", "port"), "587"), ("smtp", "port")),
    ("config", "reports without daily_to", _set(("reports",), {"at": "07:00"}), ("reports",)),
    ("config", "misspelt metrics key", _set(("metrics",), {"listen_on": "127.0.0.1:9464"}), ("metrics",)),
    ("config", "reference prefix in lower case", _set(("router", "reference_prefix"), "er"), ("router",)),
    (
        "signals",
        "signal with no matcher",
        _delete(("hard_complaint", "signals", 0, "keywords"), ("hard_complaint", "signals", 0, "phrases")),
        ("hard_complaint", "signals", 0),
    ),
    ("signals", "keyword of two words", _set(("intent", "signals", 0, "keywords", 0), "tidak bisa"), ("intent",)),
    ("signals", "regex and keywords together", _set(("intent", "signals", 0, "regex"), ["mati"]), ("intent",)),
    (
        "signals",
        "history on an intent signal",
        _set(("intent", "signals", 0, "history"), {"previous": 2, "within_days": 7}),
        ("intent",),
    ),
    (
        "signals",
        "caps_ratio as a percentage",
        _set(("hard_complaint", "signals", 8, "caps_ratio"), 60),
        ("hard_complaint",),
    ),
    ("signals", "signal counting toward unknown", _set(("intent", "signals", 0, "intent"), "unknown"), ("intent",)),
    ("signals", "signal without weight", _delete(("intent", "signals", 0, "weight")), ("intent", "signals", 0)),
    ("signals", "misspelt section", _rename(("hard_complaint",), "hard_complaints"), ()),
    ("signals", "intent threshold 0", _set(("intent", "threshold"), 0), ("intent", "threshold")),
    ("signals", "hard threshold 0", _set(("hard_complaint", "threshold"), 0), ("hard_complaint", "threshold")),
    ("signals", "negative margin", _set(("intent", "margin"), -1), ("intent", "margin")),
    ("signals", "near within 0", _set(("intent", "signals", 2, "near", "within"), 0), ("intent", "signals", 2, "near")),
    (
        "signals",
        "near without with",
        _delete(("intent", "signals", 2, "near", "with")),
        ("intent", "signals", 2, "near"),
    ),
    ("signals", "near with a misspelt key", _rename(("intent", "signals", 2, "near", "with"), "wth"), ("intent",)),
    (
        "signals",
        "history for the third mail within 0 days",
        _set(("hard_complaint", "signals", 6, "history", "within_days"), 0),
        ("hard_complaint", "signals", 6, "history", "within_days"),
    ),
    ("signals", "an empty keyword list", _set(("intent", "signals", 0, "keywords"), []), ("intent", "signals", 0)),
    ("signals", "an empty signal name", _set(("intent", "signals", 0, "name"), " "), ("intent", "signals", 0, "name")),
    (
        "signals",
        "min_letters without caps_ratio",
        _set(("hard_complaint", "signals", 0, "min_letters"), 5),
        ("hard_complaint", "signals", 0),
    ),
    (
        "signals",
        "in_question on a regex signal",
        _set(("hard_complaint", "signals", 4, "in_question"), 1),
        ("hard_complaint", "signals", 4),
    ),
    ("signals", "requires as a string", _set(("intent", "signals", 2, "requires"), "fault"), ("intent", "signals", 2)),
    ("signals", "a question phrase of nothing", _set(("intent", "question", "phrases"), [""]), ("intent", "question")),
]

# (file, what, edit): edits the loader accepts, so the schema must too
ACCEPTED: list[tuple[str, str, Edit]] = [
    ("config", "a mailbox and a relay", lambda doc: None),
    ("config", "trust switched off, no authserv_id", _set(("trust",), {"enabled": False})),
    ("config", "a unit name for every language", _set(("units", "dcs_unit", "name"), "Consumer Care")),
    (
        "config",
        "oauth2 instead of a password",
        _set(("mailboxes", 0), {**NO_PASSWORD, "oauth2": {"token": {"command": "get-token jkt"}, "lifetime": 600}}),
    ),
    ("config", "a relay without login", _set(("smtp",), {"host": "localhost", "port": 25, "security": "plain"})),
    (
        "config",
        "every mailbox setting",
        _set(
            ("mailboxes", 0),
            {
                **MAILBOX,
                "port": 1993,
                "security": "starttls",
                "timeout": 10,
                "ca_file": "ca.pem",
                "folder": "Support",
                "processed": "move",
                "keyword": "$Handled",
                "move_to": "Done",
                "poll_interval": 30.5,
                "idle": False,
                "batch_size": 50,
            },
        ),
    ),
    ("config", "domain rules in any case", _set(("segmentation", "domain_rules", 0, "match"), " *.Go.ID ")),
    (
        "config",
        "every daemon section",
        lambda doc: doc.update(
            state={"path": "$STATE_DIRECTORY/x.sqlite3"},
            delivery={"retry_initial": 5, "retry_max": 600.5, "give_up_after_hours": 48, "outbox_interval": 10},
            housekeeping={"keep_days": 30, "at": "4:05"},
            loop_protection={"reply_window_hours": 12, "replies_per_hour": 1, "bounce_block_days": 7.5},
            limits={"max_message_mb": 10},
        ),
    ),
    (
        "config",
        "the daily report and metrics",
        lambda doc: doc.update(reports={"daily_to": "supervisor@cc.example.co.id"}, metrics={"listen": "[::1]:9464"}),
    ),
    (
        "config",
        "zeros that mean zero",
        lambda doc: doc.update(
            loop_protection={"reply_window_hours": 0, "replies_per_hour": 0, "bounce_block_days": 0},
            delivery={"give_up_after_hours": 0},
            limits={"quarantine_notices_per_hour": 0},
        ),
    ),
    ("rules", "hit policy collect", _set(("hit_policy",), "collect")),
    ("rules", "no hit policy", _delete(("hit_policy",))),
    ("rules", "an empty when on the last row", _set(("rows", -1, "when"), {})),
    (
        "rules",
        "every fact, as value and as list",
        _set(
            ("rows", 1, "when"),
            {
                "segment": ["DES"],
                "segment_source": "address",
                "intent": ["fault", "request"],
                "hard": [True, False],
                "language": "en",
                "has_attachments": False,
                "automated": [False],
            },
        ),
    ),
    ("rules", "a reply without unit", _set(("rows", 1, "actions", 1), {"reply": "ticket_ack"})),
    ("signals", "keywords and phrases together", _set(("intent", "signals", 0, "phrases"), ["kabel putus"])),
    ("signals", "only defaults in language", _delete(("language", "default"), ("language", "english_min"))),
    ("signals", "no margin", _delete(("intent", "margin"))),
    ("signals", "boundary values", lambda doc: doc["hard_complaint"]["signals"][8].update(caps_ratio=1, min_letters=0)),
    ("signals", "a weight of 0", _set(("intent", "signals", 0, "weight"), 0)),
    ("signals", "a negative weight on a hard signal", _set(("hard_complaint", "signals", 0, "weight"), -1.5)),
    ("signals", "an in_question of 0", _set(("intent", "signals", 0, "in_question"), 0)),
    ("signals", "near with its defaults", _delete(("intent", "signals", 2, "near", "within"))),
    ("signals", "no question", _delete(("intent", "question"))),
    ("signals", "history with its default", _delete(("hard_complaint", "signals", 6, "history", "same_intent"))),
    ("signals", "roots switched off", _set(("intent", "signals", 0, "roots"), False)),
    ("signals", "no normalise, model or combine", _delete(("normalise",), ("model",), ("combine",))),
]


MISTAKE_PARAMS = [pytest.param(name, edit, where, id=f"{name}: {what}") for name, what, edit, where in MISTAKES]
ACCEPTED_PARAMS = [pytest.param(name, edit, id=f"{name}: {what}") for name, what, edit in ACCEPTED]


def _enum_at(schema: dict[str, Any], *path: str) -> list[Any]:
    node: Any = schema
    for key in path:
        node = node["properties"][key]
    return list(node["enum"])


# --------------------------------------------------------------------------- the schemas themselves


@pytest.mark.parametrize("name", FILES)
def test_shipped_file_validates(name: str) -> None:
    """The shipped config/emailrouter.yaml, rules.yaml and signals.yaml pass their schema."""
    assert [e.message for e in _errors(name, _shipped(name))] == []


@pytest.mark.parametrize("name", FILES)
def test_schema_is_a_valid_draft_2020_12_schema(name: str) -> None:
    """Each schema is itself a valid draft 2020-12 JSON Schema, with $schema, $id and title."""
    schema = SCHEMAS[name]()
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == f"https://emailrouter.invalid/schema/{name}.json"
    assert schema["title"] and "emailrouter check" in schema["description"]


@pytest.mark.parametrize("name", FILES)
def test_schema_survives_json(name: str) -> None:
    """What `emailrouter schema` prints reads back as the same schema (no tuples or other non-JSON values)."""
    schema = SCHEMAS[name]()
    assert json.loads(json.dumps(schema, indent=2)) == schema


def _properties(node: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.get("properties", {}).items():
            yield f"{path}.{key}", value
        if isinstance(node.get("additionalProperties"), dict):
            yield f"{path}.*", node["additionalProperties"]
        for key, value in node.items():
            if key != "if":  # a condition's properties are tests, not something written in the file
                yield from _properties(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _properties(value, f"{path}[{i}]")


@pytest.mark.parametrize("name", FILES)
def test_every_property_has_a_description(name: str) -> None:
    """Every property (and every free-form map value) carries a description, which editors show on hover."""
    missing = [path for path, value in _properties(SCHEMAS[name]()) if not value.get("description")]
    assert missing == []


def test_schema_functions_are_the_registered_ones() -> None:
    """SCHEMAS maps config, rules and signals to the three schema functions."""
    assert {"config": main_schema, "rules": rules_schema, "signals": signals_schema} == SCHEMAS


# --------------------------------------------------------------------------- mistakes and what is accepted


@pytest.mark.parametrize(("name", "edit", "where"), MISTAKE_PARAMS)
def test_typical_mistake_is_flagged_where_it_is(name: str, edit: Edit, where: Path_) -> None:
    """A typical mistake is rejected, and every complaint points at the part of the file that has it."""
    errors = _errors(name, _edited(name, edit))
    assert errors, "the schema accepted the mistake"
    for error in errors:
        assert tuple(error.absolute_path)[: len(where)] == where, error.message


@pytest.mark.parametrize(("name", "edit", "where"), MISTAKE_PARAMS)
def test_typical_mistake_is_one_the_loader_rejects(config_copy: Path, name: str, edit: Edit, where: Path_) -> None:
    """Every mistake the schema flags is a real one: loading the edited files fails too."""
    with pytest.raises(ConfigError):
        _load_edited(config_copy, name, edit)


@pytest.mark.parametrize(("name", "edit"), ACCEPTED_PARAMS)
def test_what_the_loader_accepts_the_schema_accepts(config_copy: Path, name: str, edit: Edit) -> None:
    """An edit the loader accepts is accepted by the schema too: the editor never flags a working config."""
    _load_edited(config_copy, name, edit)
    assert [e.message for e in _errors(name, _edited(name, edit))] == []


@pytest.mark.parametrize(
    "pattern",
    ["gmail.com", "*.go.id", " *.Go.ID ", "localhost", "a-b.example", "@gmail.com", "*gmail.com", "http://x.com",
     "a..b", "-a.com", "a_b.com", "*.", "", "x" * 64 + ".com", ("a" * 60 + ".") * 4 + "com"],
)  # fmt: skip
def test_domain_rule_pattern_matches_the_loader(pattern: str) -> None:
    """The schema's domain-rule pattern accepts exactly the patterns DomainTable.parse_pattern accepts."""
    assert (re.search(DOMAIN_PATTERN, pattern) is not None) == (DomainTable.parse_pattern(pattern) is not None)


# --------------------------------------------------------------------------- in step with the code


def test_hit_policies_are_the_codes() -> None:
    """The rules schema's hit_policy enum is decide.HIT_POLICIES."""
    assert _enum_at(rules_schema(), "hit_policy") == list(HIT_POLICIES)


@pytest.mark.parametrize(("fact", "kind"), [(f.name, f.kind) for f in FACTS])
def test_every_condition_fact_is_allowed_under_when(fact: str, kind: type) -> None:
    """Each fact of the registry (core/facts.py) is allowed under `when`, with values of its type and no other."""
    when = rules_schema()["properties"]["rows"]["items"]["properties"]["when"]
    assert fact in when["properties"]
    good: Any = {bool: True, str: "DES"}[kind]
    enum = when["properties"][fact]["anyOf"][0].get("enum")
    if enum:
        good = enum[0]
    bad: Any = "yes" if kind is bool else 1
    for value, ok in ((good, True), ([good], True), (bad, False), ([], False), ({"x": good}, False)):
        doc = _base("rules")
        doc["rows"][1]["when"] = {fact: value}
        assert (not _errors("rules", doc)) is ok, (fact, value)


def test_condition_facts_are_exactly_the_codes() -> None:
    """`when` allows no fact that the registry does not know."""
    when = rules_schema()["properties"]["rows"]["items"]["properties"]["when"]
    assert list(when["properties"]) == [f.name for f in FACTS]
    assert when["additionalProperties"] is False


def test_fact_values_are_the_codes() -> None:
    """Intent, language and segment-source values under `when` are model.INTENTS, LANGUAGES and SEGMENT_SOURCES."""
    facts = rules_schema()["properties"]["rows"]["items"]["properties"]["when"]["properties"]
    assert facts["intent"]["anyOf"][0]["enum"] == list(INTENTS)
    assert facts["language"]["anyOf"][0]["enum"] == list(LANGUAGES)
    assert facts["segment_source"]["anyOf"][0]["enum"] == list(SEGMENT_SOURCES)


def test_security_and_secret_kinds_are_the_codes() -> None:
    """Mailbox and relay security values are settings.SECURITIES; secret kinds are credentials.SECRET_KINDS."""
    schema = main_schema()
    mailbox = schema["properties"]["mailboxes"]["items"]
    assert mailbox["properties"]["security"]["enum"] == list(SECURITIES)
    assert _enum_at(schema, "smtp", "security") == list(SECURITIES)
    assert list(mailbox["properties"]["password"]["properties"]) == list(SECRET_KINDS)
    assert list(schema["properties"]["smtp"]["properties"]["password"]["properties"]) == list(SECRET_KINDS)


def test_signal_intents_and_languages_are_the_codes() -> None:
    """A signal counts toward one of the intents other than unknown; the default language is one of LANGUAGES."""
    schema = signals_schema()
    signal = schema["properties"]["intent"]["properties"]["signals"]["items"]
    assert signal["properties"]["intent"]["enum"] == [i for i in INTENTS if i != "unknown"]
    assert _enum_at(schema, "language", "default") == list(LANGUAGES)


def _patterns(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if "pattern" in node:
            yield node
        for value in node.values():
            yield from _patterns(value)
    elif isinstance(node, list):
        for value in node:
            yield from _patterns(value)


@pytest.mark.parametrize("name", FILES)
def test_every_pattern_explains_itself(name: str) -> None:
    """Every pattern comes with a patternErrorMessage, so the editor says what is wrong instead of showing a regex."""
    assert [n["pattern"] for n in _patterns(SCHEMAS[name]()) if not n.get("patternErrorMessage")] == []


def test_schema_command_prints_each_schema(capsys: pytest.CaptureFixture[str]) -> None:
    """`emailrouter schema NAME` prints that schema as JSON."""
    import json

    from emailrouter.ops.cli import main

    for name in ("config", "rules", "signals"):
        assert main(["schema", name]) == 0
        assert json.loads(capsys.readouterr().out)["$id"].endswith(f"/{name}.json")


# --------------------------------------------------------------------------- one description: the models


def test_the_daemon_part_is_the_models_schema() -> None:
    """Every daemon section of the main schema is generated from models.DaemonSettings, not written by hand."""
    generated = json_schema(DaemonSettings)["properties"]
    schema = main_schema()
    assert {key: schema["properties"][key] for key in DaemonSettings.model_fields} == generated
    assert set(generated) == {
        "mailboxes", "smtp", "state", "delivery", "housekeeping", "loop_protection", "limits", "reports", "metrics",
        "workers",
    }  # fmt: skip


def test_the_signals_schema_is_the_models_schema() -> None:
    """The whole signals schema, the signal lists included, is generated from signals.SignalsFile: nothing by hand."""
    schema = signals_schema()
    generated = json_schema(SignalsFile)
    assert schema["properties"] == generated["properties"]
    assert schema["required"] == generated["required"] == ["intent", "hard_complaint", "language"]
    assert set(schema["properties"]) == set(SignalsFile.model_fields)


def _signal_properties() -> tuple[set[str], set[str]]:
    schema = signals_schema()["properties"]
    return (
        set(schema["intent"]["properties"]["signals"]["items"]["properties"]),
        set(schema["hard_complaint"]["properties"]["signals"]["items"]["properties"]),
    )


def test_every_documented_signal_key_and_section_is_in_the_schema() -> None:
    """Every key the shipped signals.yaml documents in its header (keywords, near, in_question, requires, ...) and
    every signals.yaml section the README names is one the schema describes, for the right kind of signal."""
    header = (ROOT / "config" / "signals.yaml").read_text(encoding="utf-8").split("\n\n", 1)[0]
    documented = {
        key for match in re.finditer(r"^#   (\w+)(?: \+ (\w+))?:", header, re.M) for key in match.groups() if key
    }
    intent, hard = _signal_properties()
    assert {
        "keywords",
        "phrases",
        "near",
        "regex",
        "caps_ratio",
        "min_letters",
        "in_question",
        "requires",
    } <= documented
    assert documented - {"history"} <= intent and documented <= hard
    assert "history" not in intent and "intent" not in hard
    readme = README.read_text(encoding="utf-8")
    named = set(re.findall(r"`(\w+):` in signals\.yaml|signals\.yaml (\w+):", readme))
    sections = {key for pair in named for key in pair if key}
    assert {"normalise", "combine"} <= sections <= set(signals_schema()["properties"])


def test_the_schemas_defaults_are_the_loaders(config_copy: Path) -> None:
    """The defaults an editor shows are the values the loader uses when a key is left out."""
    settings = load_config(config_copy).settings
    daemon = main_schema()["properties"]
    loop = daemon["loop_protection"]["properties"]
    assert loop["replies_per_hour"]["default"] == settings.loop.replies_per_hour
    assert loop["reply_window_hours"]["default"] * 3600 == settings.loop.reply_window.total_seconds()
    assert daemon["delivery"]["properties"]["give_up_after_hours"]["default"] * 3600 == settings.delivery.give_up_after
    assert daemon["housekeeping"]["properties"]["keep_days"]["default"] == settings.housekeeping.keep_days
    assert daemon["limits"]["properties"]["quarantine_notices_per_hour"]["default"] == 20


README = ROOT / "README.md"
MAIN_KEYS = set(main_schema()["properties"])


def _readme_examples() -> Iterator[tuple[int, str, Any]]:
    """(line, kind, data) of every ```yaml block in the README; kind says which schema describes it."""
    text = README.read_text(encoding="utf-8")
    for match in re.finditer(r"^ *```yaml\n(.*?)^ *```", text, re.M | re.S):
        line = text.count("\n", 0, match.start()) + 1
        data = yaml.safe_load(match[1])
        if data is None:
            kind = "comment"
        elif isinstance(data, dict) and set(data) <= MAIN_KEYS:
            kind = "config"
        elif isinstance(data, list) and all({"id", "actions"} <= set(item) for item in data):
            kind = "rules"
        elif isinstance(data, list) and all({"name", "weight"} <= set(item) for item in data):
            kind = "signals"
        elif isinstance(data, list) and all({"message", "expect"} <= set(item) for item in data):
            kind = "rule test"  # config/tests/*.yaml: read by `emailrouter test`, which has no schema
        elif isinstance(data, dict) and set(data) <= {"replies", "contacts", "bounced"}:
            kind = "history"  # an `explain --history` file: its model is config/history.py, it has no schema
        else:
            kind = "unknown"
        yield line, kind, data


def test_every_readme_yaml_example_is_one_the_schemas_know() -> None:
    """Each YAML example in the README is a main-file section, a row, a signal, a rule test, a history file or a
    comment, and the documented daemon sections (reports and metrics included) are among them."""
    examples = list(_readme_examples())
    assert [(line, kind) for line, kind, _ in examples if kind == "unknown"] == []
    shown = {key for _, kind, data in examples if kind == "config" for key in data}
    assert {"reports", "metrics", "mailboxes", "smtp", "state", "delivery", "housekeeping"} <= shown


@pytest.mark.parametrize(
    ("kind", "data"),
    [pytest.param(kind, data, id=f"README.md:{line} {kind}") for line, kind, data in _readme_examples()],
)
def test_every_readme_example_validates(config_copy: Path, kind: str, data: Any) -> None:
    """A documented example passes its schema (in the shipped file, for a main-file section), and the loader
    takes a main-file section too: the editor never flags what the README tells ops to write."""
    if kind == "config":
        shipped = _shipped("config")
        doc = {**shipped, **data}
        if "units" in data:  # an example that adds or changes a unit: the rules still name the others
            doc["units"] = {**shipped["units"], **data["units"]}
        assert [e.message for e in _errors("config", doc)] == []
        config_copy.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
        load_config(config_copy)
    elif kind == "rules":
        assert [e.message for e in _errors("rules", {"rows": data})] == []
    elif kind == "signals":
        doc = _shipped("signals")
        doc["intent"]["signals"] = data
        assert [e.message for e in _errors("signals", doc)] == []
    elif kind == "history":
        config_copy.with_name("history.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")
        assert load_history(config_copy.with_name("history.yaml"))[1] == []
    else:
        assert kind in ("comment", "rule test")
