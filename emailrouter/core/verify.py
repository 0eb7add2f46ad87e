"""Decision-table verification, as DMN tools do it: shadowed rows, overlaps, gaps. Pure.

Every fact a row can test is enumerable, so the whole fact space (a few thousand combinations) is
walked: under hit policy `first` a row that no combination reaches first can never fire (an error);
under `unique` two rows matching the same combination overlap (an error); and the combinations that
reach only the catch-all row are listed as gaps (warnings: often intended, always worth a look).
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from dataclasses import dataclass

from emailrouter.core.decide import Row, Table
from emailrouter.core.errors import Problem
from emailrouter.core.facts import Facts, allowed_values
from emailrouter.core.model import UNKNOWN_SEGMENT

# (segment, intent, hard) is what ops reason in; the other facts are folded into the gap report.
MAIN = ("segment", "intent", "hard")


def fact_space(segments: list[str]) -> list[Facts]:
    """Every combination of facts a mail can produce (no sender <=> segment unknown, source none)."""
    values = allowed_values(segments)
    out = []
    for combination in itertools.product(*values.values()):
        facts = Facts(dict(zip(values, combination, strict=True)))
        if (facts["segment"] == UNKNOWN_SEGMENT) != (facts["segment_source"] == "none"):
            continue
        out.append(facts)
    return out


@dataclass(frozen=True)
class Gap:
    segment: str
    intent: str
    hard: bool
    always: bool  # False: only for some values of the other facts

    def __str__(self) -> str:
        tail = "" if self.always else " (for some sources, languages or attachments)"
        return f"segment {self.segment} x intent {self.intent} x hard {'yes' if self.hard else 'no'}{tail}"


@dataclass(frozen=True)
class Report:
    shadowed: dict[str, list[str]]  # row id -> the earlier rows that take all its cases
    overlaps: list[tuple[str, str]]
    gaps: list[Gap]


def analyse(table: Table, segments: list[str]) -> Report:
    rows = table.rows
    catch_all = rows[-1]
    space = [f for f in fact_space(segments) if not f["automated"] or any("automated" in r.when for r in rows)]
    first_hit: dict[int, list[Facts]] = defaultdict(list)
    takers: dict[int, set[str]] = defaultdict(set)
    overlaps: set[tuple[str, str]] = set()
    for facts in space:
        matching = [i for i, r in enumerate(rows) if r.matches(facts)]
        first_hit[matching[0]].append(facts)
        for i in matching[1:]:
            takers[i].add(rows[matching[0]].id)
        specific = [rows[i].id for i in matching if rows[i] is not catch_all]
        if table.hit_policy == "unique" and len(specific) > 1:
            overlaps.add((specific[0], specific[1]))
    shadowed: dict[str, list[str]] = {}
    if table.hit_policy in ("first", "unique"):
        for i, row in enumerate(rows[:-1]):
            if not first_hit.get(i):
                shadowed[row.id] = sorted(takers[i]) or ["(no mail can match its conditions)"]
    gaps = _gaps(first_hit.get(len(rows) - 1, []), space)
    return Report(shadowed, sorted(overlaps), gaps)


def _gaps(to_catch_all: list[Facts], space: list[Facts]) -> list[Gap]:
    def key(f: Facts) -> tuple[str, str, bool]:
        return (str(f["segment"]), str(f["intent"]), bool(f["hard"]))

    total: dict[tuple[str, str, bool], int] = defaultdict(int)
    for f in space:
        if not f["automated"]:
            total[key(f)] += 1
    caught: dict[tuple[str, str, bool], int] = defaultdict(int)
    for f in to_catch_all:
        if not f["automated"]:
            caught[key(f)] += 1
    return [Gap(s, i, h, caught[(s, i, h)] == total[(s, i, h)]) for (s, i, h) in sorted(caught)]


def verify(table: Table, segments: list[str], lines: dict[str, int]) -> list[Problem]:
    """Problems for `check`: shadowed rows and overlaps are errors, gaps are warnings."""
    report = analyse(table, segments)
    problems = []
    by_id = {r.id: r for r in table.rows}
    for row_id, takers in report.shadowed.items():
        problems.append(
            Problem(
                table.file,
                lines.get(row_id),
                f"rows[{_index(table.rows, row_id)}]",
                f"row {row_id!r} can never fire: every mail it matches is taken first by {', '.join(takers)}",
            )
        )
    for a, b in report.overlaps:
        problems.append(
            Problem(
                table.file,
                by_id[b].line,
                f"rows[{_index(table.rows, b)}]",
                f"rows {a!r} and {b!r} overlap, but the hit policy is unique",
            )
        )
    for gap in report.gaps:
        problems.append(
            Problem(
                table.file,
                table.rows[-1].line,
                f"rows[{len(table.rows) - 1}]",
                f"gap: only the catch-all row takes {gap}",
                warning=True,
            )
        )
    return problems


def _index(rows: tuple[Row, ...], row_id: str) -> int:
    return next(i for i, r in enumerate(rows) if r.id == row_id)
