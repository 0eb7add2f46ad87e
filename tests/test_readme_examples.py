"""The README's examples do what the README says they do."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from emailrouter.config.loader import load_config
from emailrouter.core.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def _add_a_row_example() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### Add a row") :]
    found = re.search(r"```yaml\n(.*?)```", section, re.S)
    assert found is not None
    return found.group(1)


def _config_with_row(tmp_path: Path, before_row: str | None) -> Path:
    folder = tmp_path / "config"
    shutil.copytree(ROOT / "config", folder)
    rules = folder / "rules.yaml"
    text = rules.read_text(encoding="utf-8")
    row = _add_a_row_example() + "\n"
    # before_row None: just above the catch-all (the last row)
    cut = text.rindex("  - id: ") if before_row is None else text.index(f"  - id: {before_row}")
    rules.write_text(text[:cut] + row + text[cut:], encoding="utf-8")
    return folder / "emailrouter.yaml"


def test_the_add_a_row_example_passes_check_where_the_readme_puts_it(tmp_path: Path) -> None:
    """Right after guard-automated-mail-recorded, as the README says, the example row loads and is reachable."""
    config = load_config(_config_with_row(tmp_path, "1.2.5-fault-opens-ticket"))
    assert config.table.rows[1].id == "escalate-corporate-hard-complaints"


def test_the_add_a_row_example_above_the_catch_all_is_reported_shadowed(tmp_path: Path) -> None:
    """Where the README says it would never fire, `check` indeed refuses it as shadowed."""
    with pytest.raises(ConfigError) as info:
        load_config(_config_with_row(tmp_path, None))
    assert any(
        "'escalate-corporate-hard-complaints' can never fire: every mail it matches is taken first by" in str(p)
        for p in info.value.problems
    )


def _block_after(heading: str, language: str) -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(rf"```{language}\n(.*?)```", readme[readme.index(heading) :], re.S)
    assert found is not None
    return found.group(1)


def test_the_history_file_example_is_valid_and_remembers_what_it_says(tmp_path: Path) -> None:
    """The README's --history example loads without a problem: two replies and a contact of the sender, a reply
    to another address, one bounce."""
    from datetime import UTC, datetime

    from emailrouter.config.history import load_history
    from emailrouter.core.guard import LoopPolicy

    path = tmp_path / "history.yaml"
    path.write_text(_block_after("takes a YAML (or JSON) file ops write by hand", "yaml"), encoding="utf-8")
    history, problems = load_history(path)
    assert problems == [] and history is not None
    memory = history.memory("budi@example.com", datetime(2026, 1, 1, 9, tzinfo=UTC), LoopPolicy())
    assert [(a, t) for a, t, _ in memory.replies] == [
        ("budi@example.com", "ticket_ack"),
        ("budi@example.com", "education"),
        ("other@example.com", "education"),
    ]
    assert [c.intent for c in memory.contacts] == ["fault"] and list(memory.bounced) == ["budi@example.com"]


def test_the_rule_test_history_example_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The README's rule test with `history:` passes against the shipped config."""
    from emailrouter.ops.cli import main

    cases = tmp_path / "cases.yaml"
    block = _block_after("A case may say what the router remembers", "yaml")
    cases.write_text("\n".join(line[3:] for line in block.splitlines()) + "\n", encoding="utf-8")
    assert main(["test", "-c", str(ROOT / "config" / "emailrouter.yaml"), str(cases)]) == 0
    assert "rule tests: 1 passed, 0 failed" in capsys.readouterr().out
