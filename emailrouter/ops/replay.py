"""Replay diff: run a corpus through an old and a new config and show which mails would be handled
differently, and how (rule, recipients, templates, suppressed replies). Nothing is sent, nothing is marked.

SOURCE is a folder of .eml files (replayed in the order of their Date: headers), or `imap:MAILBOX[/FOLDER]`
for a mailbox of the new config (in UID order, the order the daemon takes them), read with EXAMINE
(read-only) and BODY.PEEK[].

Each config remembers what the daemon would, mail after mail (`Simulation`: its own state store in
memory, filled and read by the daemon's code, service/memory.py): a reply planned for an earlier mail of
the replay counts for the later ones from the same sender (the reply limits), so do the sender's earlier
mails (the history signals), and a mail whose Message-ID and content came earlier is a duplicate and is
not compared. Each mail is decided at the time of its Date: header, never earlier than the mail before
it (without a readable Date:, at the time of the mail before it).

A mail on which a reply template fails (under either config), or that a stage cannot handle at all, is
listed with the reason; the replay goes on with the next mail.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, TextIO

from emailrouter.config.loader import Config
from emailrouter.core.dedupe import content_hash, dedupe_id, duplicate_of
from emailrouter.core.explain import EVALUATION_TIME, outcome
from emailrouter.core.pipeline import Routing, read, route
from emailrouter.service.memory import Batch, remembered
from emailrouter.service.store import MessageKey, Plan, Store

COMPARED = ("segment", "intent", "hard", "rule", "recipients", "templates", "failed", "suppressed")


def summary_of(routing: Routing) -> dict[str, Any]:
    """The compared parts of a routing; what was suppressed is compared by type (a limit's reason names the
    config's value, "within 24 h", which is no change of handling) and shown with its reasons (`why`)."""
    full = outcome(routing)
    summary = {key: full[key] for key in COMPARED}
    summary["suppressed"] = [s.type for s in routing.suppressed]
    summary["why"] = full["suppressed"]
    return summary


@dataclass
class ReplayResult:
    total: int = 0
    changes: list[dict[str, Any]] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    # per mail and config: replies whose template failed, or the error that stopped routing altogether
    failures: list[dict[str, Any]] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)  # mails that came earlier in the replay: not compared

    def as_json(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "changed": len(self.changes),
            "counts": dict(self.counts),
            "messages": self.changes,
            "failed": len({f["source"] for f in self.failures}),
            "failures": self.failures,
            "duplicates": self.duplicates,
        }


class Simulation:
    """What the daemon would remember under one config over the replay so far: a state store in memory,
    filled with each mail's plan (its contact, replies, bounces and identity) the way the processor fills
    the real one, and read back through the same `Batch`."""

    def __init__(self, config: Config, which: str) -> None:
        self.config = config
        self.which = which
        self.store = Store(":memory:")
        self.batch = Batch(self.store)
        self.taken = 0

    def route(self, name: str, raw: bytes, now: datetime, failures: list[dict[str, Any]]) -> Routing | str | None:
        """The routing of this mail given the memory so far ("duplicate" for a mail seen earlier; None when a
        stage failed, which `failures` records), and what the daemon would remember of it."""
        config = self.config
        try:
            view = read(raw, config)
            dedupe, content = dedupe_id(view.message_id, raw), content_hash(raw)
            if duplicate_of(content, self.batch.seen(dedupe)) is not None:
                return "duplicate"
            memory = self.batch.memory(view, now, config.signals.history_days, config.settings.loop)
            routing = route(view, config, now, memory)
        except Exception as exc:  # a stage broke on this mail: note it, replay the others
            failures.append({"source": name, "config": self.which, "error": f"{type(exc).__name__}: {exc}"})
            return None
        if routing.failed:
            failures.append(
                {
                    "source": name,
                    "config": self.which,
                    "message_id": routing.view.message_id,
                    "subject": routing.view.subject,
                    "failed": [f.describe() for f in routing.failed],
                }
            )
        self.taken += 1
        kept = remembered(routing, self.store)
        key = MessageKey("replay", self.which, 1, self.taken)
        rule = routing.decision.rule
        plan = Plan(
            key, dedupe, rule, {}, (), now, kept.contact, "done", kept.replies, kept.bounced, content_hash=content
        )
        self.batch.add(plan)
        if self.batch.full():
            self.batch.commit()
        return routing

    def close(self) -> None:
        self.store.close()


def compare(
    name: str, raw: bytes, now: datetime, old: Simulation, new: Simulation, failures: list[dict[str, Any]]
) -> dict[str, Any] | str | None:
    """How the new config handles this mail differently from the old one (None: the same, or not comparable
    because a stage failed under one of them, which `failures` then records; "duplicate": the mail came
    earlier in the replay)."""
    before_routing = old.route(name, raw, now, failures)
    after_routing = new.route(name, raw, now, failures)
    if before_routing == "duplicate" and after_routing == "duplicate":
        return "duplicate"
    if not isinstance(before_routing, Routing) or not isinstance(after_routing, Routing):
        return None
    before = summary_of(before_routing)
    after = summary_of(after_routing)
    changed = [key for key in COMPARED if before[key] != after[key]]
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


def sent_at(raw: bytes) -> datetime | None:
    """When the mail says it was written (its Date: header), if that can be read; a time without a zone is UTC."""
    try:
        date = BytesHeaderParser(policy=compat32).parsebytes(raw[:65536]).get("date")
        when = parsedate_to_datetime(str(date)) if date else None
    except Exception:  # any header a sender can write: unreadable is no date
        return None
    return when.replace(tzinfo=UTC) if when is not None and when.tzinfo is None else when


def _head(path: Path, size: int = 65536) -> bytes:
    """The start of a file, where its headers are: only that is read to sort the folder."""
    with path.open("rb") as f:
        return f.read(size)


def eml_folder(folder: Path) -> Iterator[tuple[str, bytes]]:
    """Every .eml file under `folder`, in the order they were written (Date:; the undated last, by name)."""
    paths = sorted(folder.rglob("*.eml"))
    dates = {path: sent_at(_head(path)) for path in paths}
    latest = datetime.max.replace(tzinfo=UTC)
    for path in sorted(paths, key=lambda p: (dates[p] or latest, str(p))):
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
    simulations = Simulation(old, "old"), Simulation(new, "new")
    clock: datetime | None = None  # the replay's time: the latest Date: so far
    try:
        for name, raw in source:
            result.total += 1
            when = sent_at(raw)
            if when is not None and (clock is None or when > clock):
                clock = when
            change = compare(name, raw, clock or EVALUATION_TIME, *simulations, result.failures)
            if change == "duplicate":
                result.duplicates.append(name)
            elif isinstance(change, dict):
                result.changes.append(change)
                result.counts.update(change["changed"])
            progress.update(result.total)
    finally:
        for simulation in simulations:
            simulation.close()
    progress.close()
    return result


def as_text(result: ReplayResult) -> str:
    lines = []
    for change in result.changes:
        lines.append(f"{change['source']}  ({change['subject'][:60]})")
        for key in change["changed"]:
            shown = "why" if key == "suppressed" else key  # what was suppressed, with the reasons
            old, new = change["old"][shown], change["new"][shown]
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
    if result.duplicates:
        summary += f"; {len(result.duplicates)} duplicates of an earlier mail, not compared (the daemon skips them)"
    lines.append(summary)
    return "\n".join(lines)
