"""The .eml corpus: `emailrouter explain --json` gives the expected trace for every fixture."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from emailrouter.config.loader import Config
from emailrouter.core.explain import as_json
from emailrouter.core.pipeline import route
from emailrouter.ops.cli import main
from tests.conftest import DATA, NOW, ROOT

EXPECTED: dict[str, dict[str, Any]] = yaml.safe_load((DATA / "expected.yaml").read_text())
FIELDS = {
    "segment": "segment",
    "segment_source": "segment_source",
    "intent": "intent",
    "hard": "hard_complaint",
    "language": "language",
    "rule": "rule",
}


def test_corpus_has_at_least_forty_fixtures_all_with_expectations() -> None:
    """Every .eml fixture has an expectation and every expectation a fixture."""
    files = {p.name for p in DATA.glob("*.eml")}
    assert len(files) >= 40
    assert files == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_is_routed_as_expected(config: Config, name: str) -> None:
    """Segment, source, intent, hard complaint, language and rule match the fixture's expectation."""
    trace = as_json(route((DATA / name).read_bytes(), config, NOW), name, config.version)
    expected = EXPECTED[name]
    got = {key: trace[field] for key, field in FIELDS.items() if key in expected}
    assert got == {key: expected[key] for key in got}, expected.get("note")


def test_every_row_of_the_shipped_table_is_exercised_by_the_corpus(config: Config) -> None:
    """The corpus reaches every row of config/rules.yaml at least once (the catch-all safety net cannot fire)."""
    rules = {expected["rule"] for expected in EXPECTED.values()}
    assert {row.id for row in config.table.rows[:-1]} <= rules


def test_explain_json_for_several_files_is_an_array(capsys: pytest.CaptureFixture[str]) -> None:
    """`explain --json` prints one object per file inside a JSON array, with the documented keys."""
    names = sorted(EXPECTED)[:3]
    assert (
        main(["explain", "-c", str(ROOT / "config" / "emailrouter.yaml"), "--json", *[str(DATA / n) for n in names]])
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert [Path(o["file"]).name for o in out] == names
    keys = {
        "file",
        "segment",
        "segment_source",
        "intent",
        "hard_complaint",
        "hard_score",
        "signals",
        "rule",
        "actions",
        "suppressed",
    }
    for trace in out:
        assert keys <= set(trace)
        for action in trace["actions"]:
            assert set(action) >= {"type", "unit", "to", "subject"}
            assert action["type"] in ("forward", "reply", "escalate", "ticket")


def test_explain_directory_option_changes_the_segment(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`explain --directory other.csv` segments with that directory instead of the configured one."""
    name = "dcs-fault-informal-lemot-gmail-id.eml"
    sender = next(
        line.split("<")[-1].rstrip(">").strip()
        for line in (DATA / name).read_text().splitlines()
        if line.lower().startswith("from:")
    )
    csv = tmp_path / "dir.csv"
    csv.write_text(f"match,segment,name\n{sender},DBS,Test Shop\n")
    config = str(ROOT / "config" / "emailrouter.yaml")
    assert main(["explain", "-c", config, "--json", "--directory", str(csv), str(DATA / name)]) == 0
    trace = json.loads(capsys.readouterr().out)
    assert (trace["segment"], trace["segment_source"], trace["customer_name"]) == ("DBS", "address", "Test Shop")


def test_explain_text_output_names_rule_and_recipients(capsys: pytest.CaptureFixture[str]) -> None:
    """The human-readable trace shows the rule and every outgoing message."""
    name = "dcs-hard-media-threat-informal.eml"
    assert main(["explain", "-c", str(ROOT / "config" / "emailrouter.yaml"), str(DATA / name)]) == 0
    out = capsys.readouterr().out
    assert "rule:       1.2.9-dcs-hard-complaint-educate-forward-escalate" in out
    assert "-> escalate  to coordination-group@cc.example.co.id" in out


def test_explain_unreadable_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A file that cannot be read is reported and gives exit status 2; the others are still explained."""
    status = main(["explain", "-c", str(ROOT / "config" / "emailrouter.yaml"), str(tmp_path / "missing.eml")])
    assert status == 2
    assert "missing.eml" in capsys.readouterr().err
