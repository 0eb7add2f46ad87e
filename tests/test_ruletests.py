"""`emailrouter test`: rule tests ops write as YAML, with a pass/fail table and the difference for each failure."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from emailrouter.ops.cli import main
from tests.broken_template import break_template
from tests.conftest import CONFIG_DIR, DATA

CONFIG = str(CONFIG_DIR / "emailrouter.yaml")


def test_shipped_rule_tests_pass_and_cover_every_row(capsys: pytest.CaptureFixture[str]) -> None:
    """config/tests/ passes and has a case for every row the table can reach."""
    assert main(["test", "-c", CONFIG]) == 0
    out = capsys.readouterr().out
    assert "0 failed" in out
    cases = yaml.safe_load((CONFIG_DIR / "tests" / "rows.yaml").read_text())
    covered = {c["expect"]["rule"] for c in cases}
    rows = [r["id"] for r in yaml.safe_load((CONFIG_DIR / "rules.yaml").read_text())["rows"]]
    assert set(rows[:-1]) <= covered  # the last row is the catch-all safety net, which cannot fire


def test_a_failing_case_shows_the_difference_and_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A wrong expectation fails with `field: expected X, got Y`; the passing case still passes."""
    cases = tmp_path / "cases.yaml"
    cases.write_text(
        f"""- name: eml file case
  eml: {DATA / "dcs-fault-outlook-en.eml"}
  expect: {{rule: 1.2.8-dcs-educate-forward, actions: [reply:education, forward:dcs_unit]}}
- name: wrong on purpose
  message: {{from: budi@gmail.com, subject: internet mati, body: sejak pagi}}
  expect: {{segment: DES, hard: false, rule: 1.2.5-fault-opens-ticket}}
"""
    )
    assert main(["test", "-c", CONFIG, str(cases)]) == 1
    out = capsys.readouterr().out
    assert "PASS  eml file case" in out
    assert "FAIL  wrong on purpose" in out
    assert "segment: expected 'DES', got 'DCS'" in out
    assert "rule: expected '1.2.5-fault-opens-ticket', got '1.2.8-dcs-educate-forward'" in out
    assert "hard:" not in out  # fields that match are not listed
    assert "rule tests: 1 passed, 1 failed" in out


def test_broken_case_file_is_an_error_with_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A misspelt key in a case file is reported with file, line and key, and the run fails."""
    cases = tmp_path / "bad.yaml"
    cases.write_text("- name: x\n  mesage: {from: a@b.example}\n  expect: {rule: r}\n")
    assert main(["test", "-c", CONFIG, str(cases)]) == 1
    assert f"{cases}:2: cases[0].mesage: unknown key" in capsys.readouterr().err


def test_a_case_with_a_misspelt_expectation_fails_instead_of_passing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`expect: {rulee: ...}` checks nothing: the case is a FAIL naming the key, never a vacuous PASS."""
    cases = tmp_path / "typo.yaml"
    cases.write_text(
        "- name: typo field\n  message: {from: budi@gmail.com, subject: internet mati, body: sejak pagi}\n"
        "  expect: {rulee: 1.2.8-dcs-educate-forward}\n"
        "- name: empty expectation\n  message: {from: budi@gmail.com, subject: halo, body: halo}\n  expect: {}\n"
    )
    assert main(["test", "-c", CONFIG, str(cases)]) == 1
    out = capsys.readouterr().out
    assert "PASS" not in out
    assert "FAIL  typo field" in out and "expect: unknown key(s) rulee" in out
    assert "FAIL  empty expectation" in out and "expect: nothing to check" in out
    assert "rule tests: 0 passed, 2 failed" in out


def test_a_reply_that_cannot_be_rendered_fails_its_case_with_the_reason(
    config_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A case whose reply template fails on its mail fails with file, line and reason; the other cases still run."""
    tpl, line = break_template(config_copy.parent)
    cases = config_copy.parent / "cases.yaml"
    cases.write_text(
        """- name: urgent mail breaks the template
  message: {from: Budi Santoso <budi.santoso@gmail.com>, subject: URGENT internet mati, body: Internet saya mati.}
  expect: {rule: 1.2.8-dcs-educate-forward}
- name: calm mail is answered
  message: {from: Budi Santoso <budi.santoso@gmail.com>, subject: Internet mati, body: Internet saya mati.}
  expect: {rule: 1.2.8-dcs-educate-forward, actions: [reply:education, forward:dcs_unit]}
"""
    )
    assert main(["test", "-c", str(config_copy), str(cases)]) == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    assert "FAIL  urgent mail breaks the template" in captured.out
    assert f"reply education (id) not rendered: {tpl}:{line}: 'urgent_note' is undefined" in captured.out
    assert "PASS  calm mail is answered" in captured.out
    assert "rule tests: 1 passed, 1 failed" in captured.out


def test_a_mail_a_stage_cannot_handle_fails_its_case_not_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Should routing raise on one case's mail, that case fails with the error and the other cases still run."""
    import emailrouter.ops.ruletests

    real = emailrouter.ops.ruletests.route

    def route(raw: bytes, *args: object, **kwargs: object) -> object:
        if b"boom" in raw:
            raise ValueError("a stage broke")
        return real(raw, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(emailrouter.ops.ruletests, "route", route)
    cases = tmp_path / "cases.yaml"
    cases.write_text(
        """- name: breaks
  message: {from: budi@gmail.com, subject: boom, body: x}
  expect: {segment: DCS}
- name: fine
  message: {from: budi@gmail.com, subject: internet mati, body: sejak pagi}
  expect: {segment: DCS}
"""
    )
    assert main(["test", "-c", CONFIG, str(cases)]) == 1
    out = capsys.readouterr().out
    assert "FAIL  breaks" in out and "error: the mail could not be routed: ValueError: a stage broke" in out
    assert "PASS  fine" in out


HISTORY_CASES = """\
- name: the fourth reply within the hour is suppressed
  message: {from: Budi Santoso <budi.santoso@gmail.com>, subject: Internet mati, body: Internet saya mati.}
  history:
    replies:
      - {template: ticket_ack, ago: 50m}
      - {template: survey, ago: 30m}
      - {template: holiday_notice, at: "2026-01-01T15:50:00+07:00"}
  expect:
    rule: 1.2.8-dcs-educate-forward
    actions: [forward:dcs_unit]
    suppressed: ["reply: budi.santoso@gmail.com already got 3 auto-replies in the last hour"]
- name: two replies in the hour leave room for a third
  message: {from: Budi Santoso <budi.santoso@gmail.com>, subject: Internet mati, body: Internet saya mati.}
  history:
    replies:
      - {template: ticket_ack, ago: 50m}
      - {template: survey, ago: 30m}
      - {template: holiday_notice, ago: 61m}
  expect:
    actions: [reply:education, forward:dcs_unit]
    suppressed: []
- name: expects a reply the history suppresses
  message: {from: Budi Santoso <budi.santoso@gmail.com>, subject: Internet mati, body: Internet saya mati.}
  history: {replies: [{template: education, ago: 23h}]}
  expect: {actions: [reply:education, forward:dcs_unit]}
"""


def test_a_case_history_pins_the_reply_limits(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`history:` gives the case the sender's earlier replies: the 4th in the hour is suppressed, the 3rd is not,
    and a case expecting a reply the history suppresses fails with the difference."""
    cases = tmp_path / "history.yaml"
    cases.write_text(HISTORY_CASES)
    assert main(["test", "-c", CONFIG, str(cases)]) == 1
    out = capsys.readouterr().out
    assert "PASS  the fourth reply within the hour is suppressed" in out
    assert "PASS  two replies in the hour leave room for a third" in out
    assert "FAIL  expects a reply the history suppresses" in out
    assert "actions: expected ['reply:education', 'forward:dcs_unit'], got ['forward:dcs_unit']" in out
    assert "rule tests: 2 passed, 1 failed" in out


def test_a_misspelt_history_key_fails_the_case_loudly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A misspelt key in `history:` (or in one of its entries) is an error with file, line and key, and the case
    is a FAIL, never decided without the history it meant to give."""
    cases = tmp_path / "typo.yaml"
    cases.write_text(
        "- name: misspelt section\n  message: {from: budi@gmail.com, subject: internet mati, body: sejak pagi}\n"
        "  history:\n    replys: [{template: education, ago: 10m}]\n  expect: {actions: [forward:dcs_unit]}\n"
        "- name: misspelt entry\n  message: {from: budi@gmail.com, subject: internet mati, body: sejak pagi}\n"
        "  history:\n    replies:\n      - {templat: education, ago: 10m}\n  expect: {actions: [forward:dcs_unit]}\n"
        "- name: empty history\n  message: {from: budi@gmail.com, subject: internet mati, body: sejak pagi}\n"
        "  history:\n  expect: {actions: [forward:dcs_unit]}\n"
    )
    assert main(["test", "-c", CONFIG, str(cases)]) == 1
    captured = capsys.readouterr()
    assert f"{cases}:4: cases[0].history.replys: unknown key (expected one of: bounced, contacts, replies)" in (
        captured.err
    )
    assert f"{cases}:10: cases[1].history.replies[0].templat: unknown key" in captured.err
    assert f"{cases}:10: cases[1].history.replies[0].template: missing" in captured.err
    assert f"{cases}:14: cases[2].history: expected a mapping" in captured.err
    assert "PASS" not in captured.out
    assert captured.out.count("history: not valid (see the errors above)") == 3
    assert "rule tests: 0 passed, 3 failed, 4 errors" in captured.out
