"""The customer directory (CSV) and domain patterns: who is who, before any mail is read."""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from emailrouter.core.errors import Problem

T = TypeVar("T")

_DOMAIN = re.compile(r"^(?=.{1,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_ADDRESS = re.compile(r"^[^\s@<>(),;:\"\\\[\]]+@[^\s@]+$")
_ACCOUNT = re.compile(r"^[A-Za-z0-9]+$")


@dataclass
class DomainTable(Generic[T]):
    """Domain patterns: `example.co.id` matches exactly; `*.example.co.id` also matches every subdomain.

    The most specific pattern wins: an exact entry, then the longest wildcard suffix.
    """

    exact: dict[str, T] = field(default_factory=dict)
    wildcard: dict[str, T] = field(default_factory=dict)

    @staticmethod
    def parse_pattern(pattern: str) -> tuple[str, bool] | None:
        """`(domain, is_wildcard)` for a valid pattern, else None."""
        pattern = pattern.strip().lower()
        wildcard = pattern.startswith("*.")
        domain = pattern[2:] if wildcard else pattern
        return (domain, wildcard) if _DOMAIN.match(domain) else None

    def add(self, domain: str, wildcard: bool, value: T) -> bool:
        """Add an entry; False if the same pattern is already there (the first one stays)."""
        table = self.wildcard if wildcard else self.exact
        if domain in table:
            return False
        table[domain] = value
        return True

    def lookup(self, domain: str) -> tuple[str, T] | None:
        """`(pattern, value)` of the most specific entry matching `domain`."""
        domain = domain.lower()
        if domain in self.exact:
            return domain, self.exact[domain]
        candidate = domain
        while True:
            if candidate in self.wildcard:
                return "*." + candidate, self.wildcard[candidate]
            _, dot, rest = candidate.partition(".")
            if not dot:
                return None
            candidate = rest

    def __len__(self) -> int:
        return len(self.exact) + len(self.wildcard)


@dataclass(frozen=True)
class Entry:
    """One directory row."""

    match: str
    segment: str
    name: str
    file: str
    line: int

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass
class Directory:
    addresses: dict[str, Entry] = field(default_factory=dict)
    accounts: dict[str, Entry] = field(default_factory=dict)
    domains: DomainTable[Entry] = field(default_factory=DomainTable)

    def __len__(self) -> int:
        return len(self.addresses) + len(self.accounts) + len(self.domains)


def normalise_address(address: str) -> str:
    """Local part as written, domain lower-cased (RFC 5321: only the domain is case-insensitive)."""
    local, _, domain = address.strip().rpartition("@")
    return f"{local}@{domain.lower()}"


def load_directory(text: str, filename: str, segments: set[str], problems: list[Problem]) -> Directory:
    """Parse the directory CSV (header `match,segment,name`); every bad row becomes a problem."""
    directory = Directory()
    # a spreadsheet's "CSV UTF-8" starts with a byte-order mark: it is not part of the first column's name
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff")))
    try:
        header = next(reader)
    except StopIteration:
        problems.append(Problem(filename, 1, "", "empty file: expected the header match,segment,name"))
        return directory
    except csv.Error as exc:
        problems.append(Problem(filename, 1, "", f"bad CSV: {exc}"))
        return directory
    columns = [h.strip().lower() for h in header]
    missing = [c for c in ("match", "segment", "name") if c not in columns]
    if missing:
        problems.append(
            Problem(filename, 1, ",".join(missing), "missing column(s); the header must be match,segment,name")
        )
        return directory
    i_match, i_segment, i_name = (columns.index(c) for c in ("match", "segment", "name"))
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            problems.append(Problem(filename, reader.line_num, "", f"bad CSV: {exc}"))
            break
        line = reader.line_num
        if not row or all(not cell.strip() for cell in row) or row[0].lstrip().startswith("#"):
            continue
        if len(row) > len(columns) and any(cell.strip() for cell in row[len(columns) :]):
            problems.append(
                Problem(
                    filename,
                    line,
                    "name",
                    f"{len(row)} columns where the header has {len(columns)}: a name with a comma must be in"
                    f' double quotes ("PT Maju, Tbk")',
                )
            )
            continue
        cells = [*row, "", "", ""]
        match, segment, name = (cells[i].strip() for i in (i_match, i_segment, i_name))
        if not segment:
            problems.append(Problem(filename, line, "segment", f"missing segment for {match!r}"))
            continue
        if segment not in segments:
            known = ", ".join(sorted(segments))
            problems.append(Problem(filename, line, "segment", f"unknown segment {segment!r} (known: {known})"))
            continue
        entry = Entry(match=match, segment=segment, name=name, file=filename, line=line)
        first: Entry
        if match.lower().startswith("acct:"):
            number = match[5:].strip()
            if not _ACCOUNT.match(number):
                problems.append(
                    Problem(filename, line, "match", f"bad account number {number!r} (letters and digits only)")
                )
                continue
            first = directory.accounts.setdefault(number, entry)
        elif "@" in match:
            if not _ADDRESS.match(match) or DomainTable.parse_pattern(match.rpartition("@")[2]) is None:
                problems.append(Problem(filename, line, "match", f"bad address {match!r}"))
                continue
            first = directory.addresses.setdefault(normalise_address(match), entry)
        else:
            parsed = DomainTable.parse_pattern(match)
            if parsed is None:
                problems.append(
                    Problem(
                        filename,
                        line,
                        "match",
                        f"bad match {match!r}: expected an address, a domain, *.domain or acct:NUMBER",
                    )
                )
                continue
            domain, wildcard = parsed
            directory.domains.add(domain, wildcard, entry)
            first = (directory.domains.wildcard if wildcard else directory.domains.exact)[domain]
        if first is not entry:
            problems.append(Problem(filename, line, "match", f"{match!r} is listed twice (first at line {first.line})"))
    return directory
