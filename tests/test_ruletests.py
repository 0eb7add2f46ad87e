"""`emailrouter test`: rule tests ops write as YAML, with a pass/fail table and the difference for each failure."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from emailrouter.cli import main
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
