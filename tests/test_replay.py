"""`emailrouter replay`: a config change shows exactly the mails it would handle differently."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from emailrouter.cli import main
from tests.conftest import CONFIG_DIR, DATA

EXPECTED = yaml.safe_load((DATA / "expected.yaml").read_text())


def changed_config(tmp_path: Path) -> Path:
    """DBS requests now go to the account managers instead of the DBS unit."""
    new = tmp_path / "new"
    shutil.copytree(CONFIG_DIR, new, ignore=shutil.ignore_patterns("samples", "tests"))
    rules = new / "rules.yaml"
    text = rules.read_text()
    start = text.index("  - id: 1.2.7-dbs-request-educate-forward")
    end = text.index("  - id: 1.2.9-dcs-hard-complaint")
    rules.write_text(text[:start] + text[start:end].replace("dbs_unit", "account_managers") + text[end:])
    return new / "emailrouter.yaml"


def test_replay_lists_exactly_the_mails_the_change_affects(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Only the fixtures routed by the changed row differ, in their recipients; --json gives the counts."""
    new = changed_config(tmp_path)
    assert main(["replay", "--old", str(CONFIG_DIR / "emailrouter.yaml"), "--new", str(new), "--json", str(DATA)]) == 0
    result = json.loads(capsys.readouterr().out)
    expected = sorted(n for n, e in EXPECTED.items() if e["rule"] == "1.2.7-dbs-request-educate-forward")
    assert expected
    assert sorted(Path(m["source"]).name for m in result["messages"]) == expected
    assert result["total"] == len(EXPECTED) and result["changed"] == len(expected)
    assert result["counts"] == {"recipients": len(expected)}
    for m in result["messages"]:
        assert "forward:dbs-business@cc.example.co.id" in m["old"]["recipients"]
        assert "forward:account-managers@cc.example.co.id" in m["new"]["recipients"]


def test_replay_text_output_and_no_changes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The text report shows -/+ recipients and a summary; the same config twice changes nothing."""
    new = changed_config(tmp_path)
    assert (
        main(["replay", "--old", str(CONFIG_DIR / "emailrouter.yaml"), "--new", str(new), "--progress", str(DATA)]) == 0
    )
    captured = capsys.readouterr()
    assert "-forward:dbs-business@cc.example.co.id, +forward:account-managers@cc.example.co.id" in captured.out
    assert "replay [" in captured.err and "100%" in captured.err
    same = str(CONFIG_DIR / "emailrouter.yaml")
    assert main(["replay", "--old", same, "--new", same, str(DATA)]) == 0
    assert f"{len(EXPECTED)} mails replayed, 0 handled differently" in capsys.readouterr().out
