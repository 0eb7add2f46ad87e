"""Table verification in `check`: shadowed rows and overlaps are errors, gaps are warnings."""

from __future__ import annotations

from pathlib import Path

import pytest

from emailrouter.config.loader import load_config
from emailrouter.core.errors import ConfigError
from emailrouter.ops.cli import main


def _insert_before(rules: Path, row_id: str, block: str) -> None:
    text = rules.read_text()
    marker = f"  - id: {row_id}\n"
    assert marker in text
    rules.write_text(text.replace(marker, block + "\n" + marker, 1))


def test_shipped_table_has_no_shadowed_rows_and_no_gaps(config_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The shipped table passes verification without a single warning."""
    assert main(["check", "-c", str(config_copy)]) == 0
    assert capsys.readouterr().err == ""


def test_a_shadowed_row_is_an_error_naming_the_rows_that_take_its_mail(config_copy: Path) -> None:
    """A row placed after rows that already take every mail it matches can never fire: check fails."""
    rules = config_copy.parent / "rules.yaml"
    _insert_before(
        rules,
        "open-no-usable-sender-to-human-queue",
        """  - id: dcs-fault-special
    when:
      segment: DCS
      intent: fault
    actions:
      - forward: dcs_unit
""",
    )
    with pytest.raises(ConfigError) as info:
        load_config(config_copy)
    (problem,) = info.value.problems
    assert problem.file == str(rules) and problem.key == "rows[8]"
    assert "'dcs-fault-special' can never fire" in problem.reason
    assert "1.2.8-dcs-educate-forward" in problem.reason and "1.2.9-dcs-hard-complaint" in problem.reason


def test_a_gap_is_a_warning_listing_the_combinations(config_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without the DES/DGS request row, those requests reach only the catch-all: check lists them and passes."""
    rules = config_copy.parent / "rules.yaml"
    text = rules.read_text()
    start = text.index("  - id: open-des-dgs-request-to-account-managers")
    end = text.index("  - id: 1.2.3-corporate-unclear-intent-to-human-queue")
    rules.write_text(text[:start] + text[end:])
    # and make 1.2.3 about unknown intent only, so nothing else takes those requests
    rules.write_text(
        rules.read_text().replace(
            "      segment: [DES, DGS, DBS]\n    actions:\n      - reply: education\n        unit: human_queue",
            "      segment: [DES, DGS, DBS]\n      intent: unknown\n    actions:\n      - reply: education\n"
            "        unit: human_queue",
        )
    )
    assert main(["check", "-c", str(config_copy)]) == 0
    err = capsys.readouterr().err
    gaps = sorted(line.split("takes ", 1)[1] for line in err.splitlines() if "gap:" in line)
    assert gaps == [
        "segment DES x intent request x hard no",
        "segment DES x intent request x hard yes",
        "segment DGS x intent request x hard no",
        "segment DGS x intent request x hard yes",
    ]


def test_unique_hit_policy_refuses_overlapping_rows(config_copy: Path) -> None:
    """Under hit policy unique, the DCS hard row and the DCS catch-everything row overlapping is an error."""
    rules = config_copy.parent / "rules.yaml"
    text = rules.read_text().replace("\nhit_policy: first\n", "\nhit_policy: unique\n")
    text = text.replace("      segment: DCS\n      hard: false\n", "      segment: DCS\n")
    rules.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(config_copy)
    assert any("overlap, but the hit policy is unique" in p.reason for p in info.value.problems)
