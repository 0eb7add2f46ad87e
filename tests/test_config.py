"""Config loading and validation: every problem names file, line and key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from emailrouter.config.loader import load_config
from emailrouter.core.errors import ConfigError
from emailrouter.ops.cli import main


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"test setup: {old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def _line_of(path: Path, needle: str) -> int:
    """The first line holding `needle` that is not a comment (the shipped files carry commented examples)."""
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if needle in line and not line.lstrip().startswith("#"):
            return number
    raise AssertionError(f"{needle!r} not in {path}")


def _problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return [str(p) for p in info.value.problems]


def test_shipped_config_loads_with_every_part(config_copy: Path) -> None:
    """The shipped config loads: 8 rows ending in a catch-all, all units and both templates."""
    config = load_config(config_copy)
    assert [r.id for r in config.table.rows][-1] == "open-catch-all-to-human-queue"
    assert config.table.rows[-1].when == {}
    assert {"dcs_unit", "dbs_unit", "coordination", "ticketing", "human_queue"} <= set(config.units)
    assert config.templates.names == {"education", "ticket_ack"}
    assert config.segmentation.default == "DCS"
    assert not config.warnings


def test_unknown_unit_in_a_row_is_named_with_file_line_and_key(config_copy: Path) -> None:
    """A row that forwards to a unit that does not exist fails with rules.yaml:line: rows[i].actions[j].forward."""
    rules = config_copy.parent / "rules.yaml"
    _edit(rules, "      - forward: dbs_unit", "      - forward: dbs_unti")
    line = _line_of(rules, "forward: dbs_unti")
    problems = _problems(config_copy)
    assert any(
        p.startswith(f"{rules}:{line}: rows[3].actions[1].forward: unknown unit 'dbs_unti'") for p in problems
    ), problems


def test_unknown_template_is_named_with_file_line_and_key(config_copy: Path) -> None:
    """A reply with a template that has no files fails, naming the files it looked for."""
    rules = config_copy.parent / "rules.yaml"
    _edit(rules, "      - reply: ticket_ack", "      - reply: tiket_ack")
    line = _line_of(rules, "reply: tiket_ack")
    problems = _problems(config_copy)
    assert any(
        p.startswith(f"{rules}:{line}: rows[1].actions[1].reply: unknown template 'tiket_ack'")
        and "tiket_ack.id.txt" in p
        for p in problems
    ), problems


def test_bad_yaml_names_the_line(config_copy: Path) -> None:
    """A YAML syntax error names the file and the line where the parser gave up."""
    rules = config_copy.parent / "rules.yaml"
    _edit(rules, "\nhit_policy: first\n", "\nhit_policy: [first\n")
    problems = _problems(config_copy)
    assert len(problems) >= 1
    assert re.match(rf"{re.escape(str(rules))}:\d+: bad YAML", problems[0]), problems


def test_missing_segment_in_directory_names_csv_line(config_copy: Path) -> None:
    """A directory row without a segment fails with customers.csv:line: segment."""
    csv = config_copy.parent / "customers.csv"
    _edit(csv, "tokobungamelati.id,DBS,Toko Bunga Melati", "tokobungamelati.id,,Toko Bunga Melati")
    line = _line_of(csv, "tokobungamelati.id")
    problems = _problems(config_copy)
    assert f"{csv}:{line}: segment: missing segment for 'tokobungamelati.id'" in problems


def test_missing_segment_in_domain_rule_names_yaml_line(config_copy: Path) -> None:
    """A domain rule without a segment fails with emailrouter.yaml:line: segmentation.domain_rules[i].segment."""
    _edit(config_copy, '    - match: "*.mil.id"\n      segment: DGS\n', '    - match: "*.mil.id"\n')
    line = _line_of(config_copy, '- match: "*.mil.id"')
    problems = _problems(config_copy)
    assert f"{config_copy}:{line}: segmentation.domain_rules[1].segment: missing" in problems


def test_unknown_segment_in_a_row_is_rejected(config_copy: Path) -> None:
    """A row condition naming a segment that does not exist is an error, not a row that never fires."""
    rules = config_copy.parent / "rules.yaml"
    _edit(rules, "      segment: DBS\n      intent: request", "      segment: DSB\n      intent: request")
    line = _line_of(rules, "segment: DSB")
    problems = _problems(config_copy)
    assert any(p.startswith(f"{rules}:{line}: rows[3].when.segment: unknown value 'DSB'") for p in problems), problems


def test_a_lower_case_segment_code_is_told_the_codes_are_upper_case(config_copy: Path) -> None:
    """`segment: dbs` lists the codes as they are written (DBS, ...) and says to write DBS."""
    rules = config_copy.parent / "rules.yaml"
    _edit(rules, "      segment: DBS\n      intent: request", "      segment: dbs\n      intent: request")
    line = _line_of(rules, "segment: dbs")
    problems = _problems(config_copy)
    want = (
        f"{rules}:{line}: rows[3].when.segment: unknown value 'dbs' (known: DBS, DCS, DES, DGS, unknown);"
        " segment codes are upper-case: DBS"
    )
    assert want in problems, problems


@pytest.mark.parametrize("name", ["rules.yaml", "signals.yaml"])
@pytest.mark.parametrize("text", ["", "# nothing but a comment\n"])
def test_an_empty_rules_or_signals_file_is_named_with_the_reason(config_copy: Path, name: str, text: str) -> None:
    """An empty or comment-only rules.yaml / signals.yaml is reported on that file, line 1, saying it is empty."""
    target = config_copy.parent / name
    target.write_text(text)
    problems = _problems(config_copy)
    assert any(p.startswith(f"{target}:1: empty (or only comments)") for p in problems), problems
    assert not any("configuration incomplete" in p for p in problems)


def test_an_unclosed_quote_is_reported_where_it_opens(config_copy: Path) -> None:
    """A quote never closed is named at its own line, not at the end of the file where YAML notices it."""
    rules = config_copy.parent / "rules.yaml"
    _edit(rules, "    description: DES/DGS/DBS customer reports", '    description: "DES/DGS/DBS customer reports')
    line = _line_of(rules, 'description: "DES/DGS/DBS customer reports')
    problems = _problems(config_copy)
    assert any(p.startswith(f"{rules}:{line}: bad YAML: an unclosed quote") for p in problems), problems


def test_a_file_that_is_not_utf8_is_named_with_its_line(config_copy: Path) -> None:
    """A byte that is not UTF-8 is reported with the line it is on and what to do, not as a byte offset."""
    signals = config_copy.parent / "signals.yaml"
    lines = signals.read_bytes().split(b"\n")
    lines[9] += "  # café".encode("latin-1")
    signals.write_bytes(b"\n".join(lines))
    assert f"{signals}:10: not UTF-8 (bytes e9): save the file as UTF-8" in _problems(config_copy)


def test_a_missing_rules_file_is_named_at_its_key(config_copy: Path) -> None:
    """files.rules naming a file that is not there is reported at that key's line in emailrouter.yaml."""
    _edit(config_copy, "rules: rules.yaml", "rules: nope.yaml")
    line = _line_of(config_copy, "rules: nope.yaml")
    problems = _problems(config_copy)
    assert any(p.startswith(f"{config_copy}:{line}: files.rules: nope.yaml: not found") for p in problems), problems


def test_a_broken_template_is_reported_once_not_at_every_row_using_it(config_copy: Path) -> None:
    """A template with a syntax error gives its own error, and no 'unknown template' for the rows replying with it."""
    template = config_copy.parent / "templates" / "ticket_ack.en.txt"
    template.write_text(template.read_text(encoding="utf-8") + "{% if %}\n", encoding="utf-8")
    problems = _problems(config_copy)
    assert [p for p in problems if "ticket_ack" in p] == [
        p for p in problems if p.startswith(f"{template}:") and "template syntax" in p
    ]
    assert len(problems) == 1, problems


def test_a_broken_unit_is_reported_once_not_at_every_row_using_it(config_copy: Path) -> None:
    """A unit with a bad address gives that one error, not 'unknown unit' at every row and action naming it."""
    _edit(config_copy, "\n    address: dcs-care@cc.example.co.id", "\n    address: not-an-address")
    problems = _problems(config_copy)
    assert len(problems) == 1, problems
    assert "units.dcs_unit.address: not an email address: 'not-an-address'" in problems[0]


def test_bad_regex_names_the_signal_and_item(config_copy: Path) -> None:
    """An invalid regular expression in signals.yaml is reported with its line and index."""
    signals = config_copy.parent / "signals.yaml"
    _edit(signals, r"regex: ['\b(?:sudah", r"regex: ['\b(?:sudah[")
    line = _line_of(signals, r"regex: ['\b(?:sudah[")
    problems = _problems(config_copy)
    assert any(p.startswith(f"{signals}:{line}: hard_complaint.signals[4].regex[0]: bad regex") for p in problems), (
        problems
    )


def test_last_row_must_catch_everything(config_copy: Path) -> None:
    """A table whose last row has conditions could drop mail, so it is refused."""
    rules = config_copy.parent / "rules.yaml"
    text = rules.read_text()
    head, _, _ = text.partition("  - id: open-catch-all-to-human-queue")
    rules.write_text(head)
    problems = _problems(config_copy)
    assert any("the last row must have no conditions" in p for p in problems), problems


def test_unknown_keys_are_reported_not_ignored(config_copy: Path) -> None:
    """A misspelt key (here `acions`) is an error naming the key, not silently ignored."""
    rules = config_copy.parent / "rules.yaml"
    _edit(rules, "    actions:\n      - forward: human_queue", "    acions:\n      - forward: human_queue")
    problems = _problems(config_copy)
    assert any("rows[8].acions: unknown key" in p for p in problems), problems
    assert any("rows[8].actions: missing" in p for p in problems), problems


def test_template_syntax_error_names_template_line(config_copy: Path) -> None:
    """A Jinja syntax error is reported with the template file and line."""
    tpl = config_copy.parent / "templates" / "education.en.txt"
    _edit(tpl, "What happens next: {{ unit.next_steps }}", "What happens next: {{ unit.next_steps }")
    line = _line_of(tpl, "What happens next:")
    problems = _problems(config_copy)
    assert any(p.startswith(f"{tpl.parent}/education.en.txt:{line}: education: template syntax") for p in problems), (
        problems
    )


def test_template_with_unknown_variable_fails_check(config_copy: Path) -> None:
    """check renders every template with sample data, so a misspelt variable is caught before mail arrives."""
    tpl = config_copy.parent / "templates" / "ticket_ack.id.txt"
    _edit(tpl, "{{ reference }}", "{{ referense }}")
    problems = _problems(config_copy)
    assert any("ticket_ack.id.txt" in p and "does not render" in p and "referense" in p for p in problems), problems


def test_template_without_subject_line_fails_check(config_copy: Path) -> None:
    """A template must start with a Subject: line."""
    tpl = config_copy.parent / "templates" / "education.id.txt"
    tpl.write_text(tpl.read_text().split("\n", 1)[1])
    problems = _problems(config_copy)
    assert any("education.id.txt" in p and "Subject:" in p for p in problems), problems


def test_duplicate_yaml_key_is_an_error(config_copy: Path) -> None:
    """A key given twice in one mapping is reported with both lines, not last-one-wins."""
    _edit(config_copy, "  reference_prefix: ER\n", "  reference_prefix: ER\n  name: Other\n")
    problems = _problems(config_copy)
    assert any("router.name" not in p and ": name: duplicate key (first at line" in p for p in problems), problems


def test_check_command_exit_codes(config_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`emailrouter check` exits 0 on the shipped config and 1, printing file:line:key, on a broken one."""
    assert main(["check", "-c", str(config_copy)]) == 0
    assert "OK" in capsys.readouterr().out
    _edit(config_copy.parent / "rules.yaml", "      - escalate: coordination", "      - escalate: nobody")
    assert main(["check", "-c", str(config_copy)]) == 1
    err = capsys.readouterr().err
    assert re.search(r"rules\.yaml:\d+: rows\[4\]\.actions\[2\]\.escalate: unknown unit 'nobody'", err), err


def test_missing_config_file_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A config path that does not exist gives exit 1 and names the file."""
    assert main(["check", "-c", str(tmp_path / "nope.yaml")]) == 1
    assert f"{tmp_path / 'nope.yaml'}: file not found" in capsys.readouterr().err


def test_every_problem_of_the_routing_part_is_listed_with_its_line(config_copy: Path) -> None:
    """Shape mistakes (from the model) and cross-references (hand-written) in the main file are all listed at
    once, each at its own line and key, with the wording check always used."""
    _edit(config_copy, "  reference_prefix: ER\n", "  reference_prefix: er\n")
    _edit(config_copy, "  failures_to: human_queue\n", "  failures_to: human_queu\n")
    _edit(config_copy, "    DES: Digital Enterprise", "    des: Digital Enterprise")
    _edit(config_copy, '    - match: "*.mil.id"\n      segment: DGS', '    - match: "@mil.id"\n      segment: DGS')
    _edit(config_copy, "    - match: gmail.com\n      segment: DCS", "    - match: gmail.com\n      segment: DXS")
    _edit(config_copy, "    - match: yahoo.com\n", "    - match: hotmail.com\n")
    _edit(config_copy, "  authserv_id: mx.cc.example.co.id\n", "")
    _edit(config_copy, "  dcs_unit:\n    address: dcs-care@cc.example.co.id", "  dcs unit:\n    address: dcs-care")
    _edit(config_copy, "    next_steps:\n      id: Tim kami", "    next_step:\n      id: Tim kami")
    at = {needle: _line_of(config_copy, needle) for needle in (
        "reference_prefix: er", "failures_to: human_queu", "des: Digital", '@mil.id', "segment: DXS",
        "- match: live.com", "require: dmarc", "dcs unit:", "address: dcs-care", "next_step:",
    )}  # fmt: skip
    problems = _problems(config_copy)
    expected = [
        f"{at['reference_prefix: er']}: router.reference_prefix: use 1-10 capital letters or digits, got 'er'",
        f"{at['des: Digital']}: segmentation.segments.des: segment codes are 2-10 capital letters, got 'des'",
        f"{at['@mil.id']}: segmentation.domain_rules[1].match: not a domain or *.domain: '@mil.id'",
        f"{at['require: dmarc']}: trust.authserv_id: missing",  # a mapping's line is its first key's
        f"{at['dcs unit:']}: units.dcs unit: unit keys may use letters, digits, _ and - only, got 'dcs unit'",
        f"{at['address: dcs-care']}: units.dcs unit.address: not an email address: 'dcs-care'",
        f"{at['address: dcs-care']}: units.dcs unit.next_steps: missing",
        f"{at['next_step:']}: units.dcs unit.next_step: unknown key (expected one of: address, name, next_steps,"
        " webhook)",
        f"{at['failures_to: human_queu']}: router.failures_to: unknown unit 'human_queu' (known: account_managers,",
        f"{at['segment: DXS']}: segmentation.domain_rules[2].segment: unknown segment 'DXS' (known: des, DGS, DBS,"
        " DCS)",
        # the second hotmail.com, the rule just above live.com
        f"{at['- match: live.com'] - 2}: segmentation.domain_rules[7].match: 'hotmail.com' is listed twice",
    ]
    for line in expected:
        assert any(p.startswith(f"{config_copy}:{line}") for p in problems), (line, problems)


def test_the_main_file_schema_is_the_loaders_model() -> None:
    """`emailrouter schema config` is routing.MainFile's schema: the loader and the editor read one description."""
    from emailrouter.config.routing import MainFile
    from emailrouter.config.schema import main_schema
    from emailrouter.config.validation import json_schema

    generated = json_schema(MainFile)
    schema = main_schema()
    assert schema["properties"] == generated["properties"]
    assert schema["required"] == ["router", "files", "segmentation", "trust", "units"]


def test_an_empty_router_name_is_an_error_not_the_default(config_copy: Path) -> None:
    """`name: ""` under router used to mean "emailrouter"; now it is a problem naming the key."""
    _edit(config_copy, "  name: Contact Centre Email Router\n", '  name: ""\n')
    line = _line_of(config_copy, 'name: ""')
    assert f"{config_copy}:{line}: router.name: must not be empty, got ''" in _problems(config_copy)


def test_rules_shape_and_cross_checks_are_listed_together_in_file_order(config_copy: Path) -> None:
    """A bad type, an unknown fact and an unknown unit in one row are each reported, in the order of the file."""
    rules = config_copy.parent / "rules.yaml"
    _edit(rules, "      - forward: dbs_unit", "      - forward: dbs_unti")
    text = rules.read_text()
    row = text.index("      - forward: dbs_unti")
    when = text.rindex("    when:", 0, row)
    rules.write_text(f"{text[:when]}    when: {{hard: 'yes', weekday: monday}}\n    old_when:{text[when + 9 :]}")
    problems = [p.split(": ", 1)[1] for p in _problems(config_copy) if p.startswith(str(rules))]
    expected = [
        "rows[3].when.hard: expected true or false, got str 'yes'",
        "rows[3].when.weekday: unknown fact (known: segment, segment_source, intent, hard, language, "
        "has_attachments, automated)",
        "rows[3].old_when: unknown key (expected one of: actions, description, id, when)",
    ]
    assert problems[:3] == expected, problems
    assert any(p.startswith("rows[3].actions[1].forward: unknown unit 'dbs_unti'") for p in problems), problems


def test_an_action_of_two_kinds_or_none_says_which_kinds_exist(config_copy: Path) -> None:
    """An action with no kind, or with a unit beside a forward, is named at its line with what is allowed."""
    rules = config_copy.parent / "rules.yaml"
    _edit(rules, "      - forward: dbs_unit", "      - forward: dbs_unit\n        unit: dbs_unit\n      - {}")
    problems = _problems(config_copy)
    line = _line_of(rules, "forward: dbs_unit")
    assert f"{rules}:{line}: rows[3].actions[1]: unit goes with reply only, not with forward" in problems, problems
    assert f"{rules}:{line + 2}: rows[3].actions[2]: give exactly one of forward, escalate, ticket, reply, record" in (
        problems
    ), problems


def test_signals_sections_list_every_problem_with_line_and_key(config_copy: Path) -> None:
    """An unknown language, english_min 0 and a misspelt key in language: are each named; 0 is not taken as 1."""
    signals = config_copy.parent / "signals.yaml"
    _edit(
        signals,
        "language:\n  default: id\n  english_min: 3\n",
        "language:\n  default: fr\n  english_min: 0\n  spanish: [el]\n",
    )
    line = _line_of(signals, "default: fr")
    problems = _problems(config_copy)
    assert f"{signals}:{line}: language.default: unknown language 'fr' (known: id, en)" in problems, problems
    assert f"{signals}:{line + 1}: language.english_min: must be 1 or more" in problems, problems
    assert any(p.startswith(f"{signals}:{line + 2}: language.spanish: unknown key") for p in problems), problems


def test_signal_lists_report_every_problem_at_once_with_line_and_key(config_copy: Path) -> None:
    """Problems of the shape and of the cross-references in different signals of both lists are all named
    in one `check`, each at its file, line and key, in the order of the file."""
    signals = config_copy.parent / "signals.yaml"
    _edit(
        signals, "    - name: fault_device\n      intent: fault\n", "    - name: fault_device\n      intent: faults\n"
    )
    _edit(signals, "        within: 3\n      unless: [fault_outage]", "        within: 3\n      unless: [fault_outag]")
    _edit(signals, "    - name: refund\n      weight: 2\n", "    - name: refund\n      weight: two\n")
    _edit(signals, "    - name: masked_profanity", "    - name: insult")
    _edit(signals, "      exclamation_run: 3", "      exclamation_run: 3\n      keywords: [wah]")
    problems = _problems(config_copy)
    expected = [
        f"{signals}:{_line_of(signals, 'unless: [fault_outag]')}: intent.signals[2].unless[0]: unknown signal"
        " 'fault_outag': name a signal above this one, or one of fault, information, request",
        f"{signals}:{_line_of(signals, 'intent: faults')}: intent.signals[4].intent: unknown intent 'faults'"
        " (known: fault, information, request)",
        f"{signals}:{_line_of(signals, 'exclamation_run: 3')}: hard_complaint.signals[9].exclamation_run:"
        " give only one of keywords, exclamation_run per signal",
        f"{signals}:{_line_of(signals, 'weight: two')}: hard_complaint.signals[12].weight: expected a number,"
        " got str 'two'",
    ]
    assert [p for p in problems if p in expected] == expected, problems
    assert any(p.endswith(": hard_complaint.signals[17].name: signal name 'insult' is used twice") for p in problems)


@pytest.mark.parametrize(
    ("old", "new", "key", "reason"),
    [
        ("  threshold: 2", "  threshold: 0", "intent.threshold", "must be more than 0"),
        ("  threshold: 4", "  threshold: 0", "hard_complaint.threshold", "must be more than 0"),
        ("  margin: 1", "  margin: -1", "intent.margin", "must be 0 or more"),
        ("        within: 4", "        within: 0", "hard_complaint.signals[2].near.within", "must be 1 or more"),
        ("        previous: 2", "        previous: 0", "signals[6].history.previous", "must be 1 or more"),
        ("        within_days: 7", "        within_days: 0", "signals[6].history.within_days", "must be more than 0"),
        ("      caps_ratio: 0.6", "      caps_ratio: 0", "signals[8].caps_ratio", "must be between 0 and 1"),
        ("      exclamation_run: 3", "      exclamation_run: 0", "signals[9].exclamation_run", "must be 1 or more"),
    ],
)  # fmt: skip
def test_a_zero_where_zero_makes_no_sense_is_refused(
    config_copy: Path, old: str, new: str, key: str, reason: str
) -> None:
    """A threshold, distance, count or share of 0 is refused with the reason, at its line: never read as the default."""
    signals = config_copy.parent / "signals.yaml"
    _edit(signals, old, new)
    line = _line_of(signals, new)
    problems = _problems(config_copy)
    assert any(p.startswith(f"{signals}:{line}: ") and f"{key}: {reason}" in p for p in problems), problems


def test_zero_and_negative_weights_mean_what_they_say(config_copy: Path) -> None:
    """A weight of 0 counts nothing (the signal still fires for requires/unless); a negative one counts against."""
    signals = load_config(config_copy).signals
    weights = {s.name: s.weight for s in (*signals.intent_signals, *signals.hard_signals)}
    assert weights["topic"] == 0 and weights["praise"] == 0
    assert weights["no_ask"] == weights["no_ask_request"] == weights["no_ask_information"] == -3
