"""segment: directory address > account number > directory domain > domain rule > default."""

from __future__ import annotations

from pathlib import Path

import pytest

from emailrouter.config.loader import Config, load_config
from emailrouter.core.directory import load_directory
from emailrouter.core.errors import Problem
from emailrouter.core.parse import parse
from emailrouter.core.segment import segment
from tests.conftest import eml


def _seg(config: Config, sender: str, subject: str = "halo", body: str = "halo") -> tuple[str, str]:
    result = segment(parse(eml(f"From: {sender}", f"Subject: {subject}", body=body)), config.segmentation)
    return result.segment, result.source


@pytest.mark.parametrize(
    ("sender", "subject", "body", "expected"),
    [
        # a directory address beats the free-mail domain rule (a small business on Gmail)
        ("sinarjaya.printing@gmail.com", "halo", "halo", ("DBS", "address")),
        # domain part of an address is case-insensitive
        ("sinarjaya.printing@GMAIL.com", "halo", "halo", ("DBS", "address")),
        # an account number in the body beats the free-mail default
        ("someone@gmail.com", "halo", "nomor pelanggan 4001234 mati", ("DES", "account")),
        # ... and in the subject
        ("someone@gmail.com", "Gangguan akun 7001122", "halo", ("DGS", "account")),
        # only whole tokens count: 40012345 is another number
        ("someone@gmail.com", "halo", "nomor 40012345", ("DCS", "domain-rule")),
        # an account number beats the directory domain
        ("it@tokobungamelati.id", "halo", "akun 4001234", ("DES", "account")),
        # wildcard directory domain matches subdomains and the domain itself
        ("noc@it.pertamina.co.id", "halo", "halo", ("DES", "directory-domain")),
        ("admin@pertamina.co.id", "halo", "halo", ("DES", "directory-domain")),
        # an exact directory domain does not match subdomains
        ("x@shop.tokobungamelati.id", "halo", "halo", ("DCS", "default")),
        ("x@tokobungamelati.id", "halo", "halo", ("DBS", "directory-domain")),
        # YAML domain rules
        ("kominfo@jakarta.go.id", "halo", "halo", ("DGS", "domain-rule")),
        ("staf@tni.mil.id", "halo", "halo", ("DGS", "domain-rule")),
        ("budi@yahoo.co.id", "halo", "halo", ("DCS", "domain-rule")),
        # nothing matched: the configured default
        ("ceo@unknown-company.co.id", "halo", "halo", ("DCS", "default")),
    ],
)
def test_segment_precedence(config: Config, sender: str, subject: str, body: str, expected: tuple[str, str]) -> None:
    """Each source decides only when every source above it had nothing."""
    assert _seg(config, sender, subject, body) == expected


def test_account_number_in_quoted_history_does_not_count(config: Config) -> None:
    """Only the customer's own text is searched for account numbers, not the quoted history."""
    body = "terima kasih\n\n> akun 4001234"
    assert _seg(config, "someone@gmail.com", "halo", body) == ("DCS", "domain-rule")


def test_no_sender_gives_unknown_segment(config: Config) -> None:
    """Without a usable sender the segment is unknown (source none), even if an account number appears."""
    result = segment(parse(eml("Subject: akun 4001234", body="mati")), config.segmentation)
    assert (result.segment, result.source) == ("unknown", "none")
    assert "no From: header" in result.detail


def test_detail_names_the_directory_row(config: Config) -> None:
    """The trace says which directory line decided, so ops can find it."""
    result = segment(parse(eml("From: noc@it.pertamina.co.id", "Subject: s", body="x")), config.segmentation)
    assert result.detail.startswith("domain *.pertamina.co.id in ") and "customers.csv:2" in result.detail
    assert result.customer_name == "PT Pertamina (Persero)"


def test_directory_override_replaces_the_configured_directory(tmp_path: Path) -> None:
    """`--directory` (load_config(directory=...)) uses another CSV instead of the configured one."""
    csv = tmp_path / "other.csv"
    csv.write_text("match,segment,name\nbudi@gmail.com,DES,Budi Corp\n")
    config = load_config(Path(__file__).parent.parent / "config" / "emailrouter.yaml", directory=csv)
    assert _seg(config, "budi@gmail.com") == ("DES", "address")
    assert _seg(config, "sinarjaya.printing@gmail.com") == ("DCS", "domain-rule")


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ("nonsense value,DES,x", "bad match"),
        ("acct:12-34,DES,x", "bad account number"),
        ("a@b@c.com,DES,x", "bad address"),
        ("example.com,XYZ,x", "unknown segment 'XYZ'"),
        ("example.com,,x", "missing segment"),
        ("maju.co.id,DES,PT Maju, Tbk", "a name with a comma must be in double quotes"),
    ],
)
def test_bad_directory_rows_are_reported_with_line(row: str, reason: str) -> None:
    """Every unusable directory row is a problem naming file and line."""
    problems: list[Problem] = []
    load_directory(f"match,segment,name\nok.com,DES,fine\n{row}\n", "dir.csv", {"DES", "DCS"}, problems)
    assert len(problems) == 1
    assert problems[0].file == "dir.csv" and problems[0].line == 3
    assert reason in problems[0].reason


def test_a_spreadsheets_byte_order_mark_is_not_part_of_the_header() -> None:
    """A CSV saved as "CSV UTF-8" by a spreadsheet (BOM first) reads like any other."""
    problems: list[Problem] = []
    directory = load_directory("\ufeffmatch,segment,name\nx.com,DES,PT X\n", "dir.csv", {"DES"}, problems)
    assert problems == []
    assert directory.domains.exact["x.com"].name == "PT X"


def test_a_quoted_name_may_hold_a_comma() -> None:
    """The comma-in-a-name rule is about unquoted commas: a quoted one is the name, whole."""
    problems: list[Problem] = []
    directory = load_directory('match,segment,name\nx.com,DES,"PT Maju, Tbk"\n', "dir.csv", {"DES"}, problems)
    assert problems == []
    assert directory.domains.exact["x.com"].name == "PT Maju, Tbk"


def test_duplicate_directory_rows_are_reported() -> None:
    """The same match twice is an error naming both lines."""
    problems: list[Problem] = []
    load_directory("match,segment,name\nx.com,DES,a\nx.com,DCS,b\n", "dir.csv", {"DES", "DCS"}, problems)
    assert [(p.line, p.reason) for p in problems] == [(3, "'x.com' is listed twice (first at line 2)")]
