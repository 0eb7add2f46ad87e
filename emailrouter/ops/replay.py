"""Replay diff: run a corpus through an old and a new config and show which mails would be handled
differently, and how (rule, recipients, templates). Nothing is sent, nothing is marked.

SOURCE is a folder of .eml files, or `imap:MAILBOX[/FOLDER]` for a mailbox of the new config, read
with EXAMINE (read-only) and BODY.PEEK[].

A mail on which a reply template fails (under either config), or that a stage cannot handle at all, is
listed with the reason; the replay goes on with the next mail.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from emailrouter.config.loader import Config
from emailrouter.core.explain import EVALUATION_TIME, outcome
from emailrouter.core.pipeline import Routing, route

COMPARED = ("segment", "intent", "hard", "rule", "recipients", "templates", "failed")


def summary_of(routing: Routing) -> dict[str, Any]:
    full = outcome(routing)
    return {key: full[key] for key in COMPARED}


@dataclass
class ReplayResult:
    total: int = 0
    changes: list[dict[str, Any]] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    # per mail and config: replies whose template failed, or the error that stopped routing altogether
    failures: list[dict[str, Any]] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "changed": len(self.changes),
            "counts": dict(self.counts),
            "messages": self.changes,
            "failed": len({f["source"] for f in self.failures}),
            "failures": self.failures,
        }


def _route(name: str, raw: bytes, config: Config, which: str, failures: list[dict[str, Any]]) -> Routing | None:
    """Route under one config; a failed reply render or a stage error is noted in `failures`."""
    try:
        routing = route(raw, config, EVALUATION_TIME)
    except Exception as exc:  # a stage broke on this mail: note it, replay the others
        failures.append({"source": name, "config": which, "error": f"{type(exc).__name__}: {exc}"})
        return None
    if routing.failed:
        failures.append(
            {
                "source": name,
                "config": which,
                "message_id": routing.view.message_id,
                "subject": routing.view.subject,
                "failed": [f.describe() for f in routing.failed],
            }
        )
    return routing


def compare(
    name: str, raw: bytes, old: Config, new: Config, failures: list[dict[str, Any]] | None = None
) -> dict[str, Any] | None:
    """How the new config handles this mail differently from the old one (None: the same, or not comparable
    because a stage failed under one of them, which `failures` then records)."""
    failures = [] if failures is None else failures
    before_routing = _route(name, raw, old, "old", failures)
    after_routing = _route(name, raw, new, "new", failures)
    if before_routing is None or after_routing is None:
        return None
    before = summary_of(before_routing)
    after = summary_of(after_routing)
    changed = [key for key in before if before[key] != after[key]]
    if not changed:
        return None
    return {
        "source": name,
        "message_id": after_routing.view.message_id,
        "subject": after_routing.view.subject,
        "changed": changed,
        "old": before,
        "new": after,
    }


def eml_folder(folder: Path) -> Iterator[tuple[str, bytes]]:
    for path in sorted(folder.rglob("*.eml")):
        yield str(path), path.read_bytes()


def imap_folder(config: Config, spec: str) -> Iterator[tuple[str, bytes]]:
    """Every mail of a configured mailbox's folder, read-only (EXAMINE), in batches of 200."""
    from emailrouter.core.errors import MailboxError
    from emailrouter.service.imap import ImapMailbox

    name, _, folder = spec.partition("/")
    mailbox = next((m for m in config.settings.mailboxes if m.name == name), None)
    if mailbox is None:
        raise MailboxError(f"no mailbox {name!r} in {config.path}")
    conn = ImapMailbox(mailbox)
    try:
        conn.connect(folder or None, readonly=True)
        uids = conn.all_uids()
        for start in range(0, len(uids), 200):
            for uid, fetched in sorted(conn.fetch(uids[start : start + 200]).items()):
                yield f"{name}/{folder or mailbox.folder}:{uid}", fetched.raw
    finally:
        conn.close()


class Progress:
    """A one-line progress bar on stderr (only on a terminal, unless forced)."""

    def __init__(self, total: int | None, stream: TextIO | None = None, force: bool = False) -> None:
        self.total = total
        self.stream = stream or sys.stderr
        self.enabled = force or self.stream.isatty()
        self.last = -1

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        if self.total:
            percent = done * 100 // self.total
            if percent == self.last:
                return
            self.last = percent
            bar = "#" * (percent // 4)
            self.stream.write(f"\rreplay [{bar:<25}] {done}/{self.total} ({percent}%)")
        elif done % 100 == 0:
            self.stream.write(f"\rreplay {done} mails")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")


def replay(source: Iterator[tuple[str, bytes]], old: Config, new: Config, progress: Progress) -> ReplayResult:
    result = ReplayResult()
    for name, raw in source:
        result.total += 1
        change = compare(name, raw, old, new, result.failures)
        if change is not None:
            result.changes.append(change)
            result.counts.update(change["changed"])
        progress.update(result.total)
    progress.close()
    return result


def as_text(result: ReplayResult) -> str:
    lines = []
    for change in result.changes:
        lines.append(f"{change['source']}  ({change['subject'][:60]})")
        for key in change["changed"]:
            old, new = change["old"][key], change["new"][key]
            if isinstance(old, list):
                gone, added = sorted(set(old) - set(new)), sorted(set(new) - set(old))
                lines.append(f"    {key}: " + ", ".join([*(f"-{x}" for x in gone), *(f"+{x}" for x in added)]))
            else:
                lines.append(f"    {key}: {old} -> {new}")
    for failure in result.failures:
        head = f"{failure['source']}  ({failure['subject'][:60]})" if "subject" in failure else failure["source"]
        lines.append(f"{head}  FAILED under the {failure['config']} config")
        if "error" in failure:
            lines.append(f"    error: {failure['error']}")
        for f in failure.get("failed", ()):
            lines.append(f"    reply {f['template']} ({f['language']}) not rendered: {f['reason']}")
    counts = ", ".join(f"{k} {v}" for k, v in sorted(result.counts.items())) or "none"
    summary = f"\n{result.total} mails replayed, {len(result.changes)} handled differently ({counts})"
    if result.failures:
        summary += f"; {len({f['source'] for f in result.failures})} failed under one config or both (listed above)"
    lines.append(summary)
    return "\n".join(lines)
