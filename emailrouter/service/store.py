"""The state store: processed mail, the outbox, checkpoints and contact history.

`StateStore` is the contract: every call the daemon, the cli, `stats` and the daily report make, with
typed rows (`MessageRecord`, `OutboxEntry`, `SendRecord`, `Figures`) and `Literal` statuses; nothing
outside this module sees a database row. `SqliteStore` (alias `Store`) implements it; a shared backend
(PostgreSQL) implements the same contract and joins tests/test_store_contract.py, which any backend must
pass.

The delivery guarantee rests on the order of writes here:
1. `plan()` commits, in one durable transaction, the decision and every outgoing message (with its
   deterministic Message-ID) before anything is sent;
2. each send is recorded (`sending` before a customer reply goes out, `sent` after the 250);
3. the IMAP "processed" mark comes last (`marked()`).
After a crash, `resume()` finds what was planned and not finished. Customer replies found in state
`sending` are never sent again (at most once: a customer never gets the same auto-reply twice);
forwards, escalations and tickets are sent again with the same Message-ID (at least once).

Every outcome of a batch (planned, duplicate, quarantined, automated) is committed in the same
transaction as the checkpoint that passes it, so the checkpoint never passes a mail without one.
A write that fails (disk full, read-only, I/O error) raises `StateError` and changes nothing.

The schema is versioned with `PRAGMA user_version` and ordered migrations, one transaction each:
1 = the first release's tables; 2 = final outcomes and content hashes (a file written before versions
were kept has user_version 0, with or without them: both migrate); 3 = segment, intent, hard,
suppressions and unrendered replies of each decision as columns of their own, backfilled from the
decision trace, so `stats` aggregates in SQL and never decodes a trace; 4 = the bodies of outgoing
messages in a table of their own (`outbox_bodies`), written in slices and read into one buffer with
SQLite's blob I/O: SQLite copies a row whole on every update, so a status change of a 30 MB forward cost
60 MB of memory; `outbox.raw` now keeps only the header block; 5 = `outbox.answer`, what a webhook's endpoint
answered that we keep (its own ticket number). A file of a newer version than this code knows is
refused (`StateError` naming the file), never written.

Over 400 lines: the contract, its row types, the migrations and their SQLite implementation are one
unit that changes together (a column added here is a field of a row, a migration and a query).
"""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, cast, get_args

from emailrouter.config.credentials import CredentialError
from emailrouter.config.settings import Settings
from emailrouter.core.classify import Contact
from emailrouter.core.errors import StateError
from emailrouter.service import statefiles

Outcome = Literal["planned", "done", "duplicate", "automated", "quarantined"]
"""What became of an incoming mail; `planned` while its sends are under way."""
SendStatus = Literal["pending", "sending", "sent", "failed", "uncertain"]
"""Where an outgoing message is: `sending` is claimed; sent, failed and uncertain are final."""
OUTCOMES: Final[frozenset[str]] = frozenset(get_args(Outcome))


def final_outcome(record_tag: str | None) -> str:
    """The one word for what became of a decided mail, used alike by its `decision` log event, the
    `emailrouter_messages_total{outcome}` metric, `stats` and `show`: `done`, or the tag of its `record: TAG`
    row (`automated`). (`duplicate` and `quarantined` are decided before a table row is; `planned` is only
    the store's word for a mail whose sends are still under way, `dry-run` the log's for a dry run.)"""
    return record_tag or "done"


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="microseconds")


# ---------------------------------------------------------------------- rows


@dataclass(frozen=True)
class MessageKey:
    account: str
    folder: str
    uidvalidity: int
    uid: int

    def __str__(self) -> str:
        return f"{self.account}|{self.folder}|{self.uidvalidity}|{self.uid}"

    def in_folder(self, account: str, folder: str) -> bool:
        """Whether this is a mail of that folder of that login (a login's folders share nothing, UIDs included)."""
        return self.account == account and self.folder == folder

    @classmethod
    def parse(cls, text: str) -> MessageKey | None:
        """The key `str()` wrote (an account name may hold a "|"); None for anything else."""
        parts = text.rsplit("|", 3)
        if len(parts) != 4 or not parts[2].isdigit() or not parts[3].isdigit():
            return None
        return cls(parts[0], parts[1], int(parts[2]), int(parts[3]))


@dataclass(frozen=True)
class PlannedSend:
    """One outgoing message as committed to the outbox."""

    kind: str  # forward | reply | escalate | ticket | failure | quarantine
    unit: str | None
    mail_from: str
    recipients: tuple[str, ...]
    message_id: str
    raw: bytes


@dataclass(frozen=True)
class Plan:
    """What was decided for one mail: committed before anything is sent."""

    key: MessageKey
    dedupe_id: str
    rule: str
    decision: dict[str, Any]  # the decision trace (explain.as_json); empty for duplicates and quarantine
    sends: Sequence[PlannedSend]
    now: datetime
    contact: tuple[str, str] | None  # (sender, intent) for the history
    outcome: str = "done"  # once every send is final: done, duplicate, quarantined, or a record tag (automated)
    replies: Sequence[tuple[str, str]] = ()  # (address, template) of the auto-replies planned: for the limits
    bounced: Sequence[str] = ()  # addresses a delivery report says our auto-reply did not reach
    error: str | None = None  # why a quarantined mail could not be handled
    content_hash: str | None = None

    @property
    def size(self) -> int:
        return sum(len(s.raw) for s in self.sends)


@dataclass(frozen=True)
class OutboxEntry(PlannedSend):
    """A planned send as the outbox holds it: which mail it is for, and how far it got."""

    id: int
    msg_key: str
    status: SendStatus
    attempts: int
    created_at: datetime


@dataclass(frozen=True)
class SendRecord:
    """What became of one outgoing message, without its body: the audit (`show`) and stats' failures."""

    id: int
    msg_key: str
    kind: str
    unit: str | None
    recipients: tuple[str, ...]
    message_id: str
    status: SendStatus
    attempts: int
    created_at: datetime
    sent_at: datetime | None
    last_error: str | None
    answer: str | None = None  # a webhook call's: the endpoint's own ticket number, when it gave one


@dataclass(frozen=True)
class Checkpoint:
    uidvalidity: int
    last_uid: int


@dataclass(frozen=True)
class MessageRecord:
    """One incoming mail as the store knows it; its decision trace is read on its own (`decision()`)."""

    key: MessageKey
    dedupe_id: str
    outcome: Outcome
    tag: str | None  # the tag of a `record: TAG` row other than `automated`: such a mail counts as done
    rule: str | None
    segment: str | None  # None: no decision was taken (duplicate, quarantined)
    intent: str | None
    hard: bool | None
    error: str | None
    content_hash: str | None
    received_at: datetime
    finished_at: datetime | None
    marked: bool

    @property
    def label(self) -> str:
        """The outcome as `show` and `stats` print it: the record tag where there is one."""
        return self.tag or self.outcome


@dataclass(frozen=True)
class Figures:
    """Mails received in [since, until), aggregated by the store: what `stats` and the daily report need."""

    messages: int
    hard_complaints: int
    replies_not_rendered: int
    per_account: Mapping[str, int]
    per_outcome: Mapping[str, int]  # a record tag counts under its own name
    per_segment: Mapping[str, int]  # mails with a decision only
    per_intent: Mapping[str, int]
    per_rule: Mapping[str, int]
    suppressed: Mapping[str, int]  # `suppression_key` -> how many
    actions: Mapping[tuple[str, str | None, SendStatus], int]  # (kind, unit, status) -> how many
    failures: Sequence[SendRecord]  # failed and uncertain sends, oldest first
    sent_delay_median: float | None  # seconds from a mail's arrival to a send of it: statistics.median
    sent_delay_p95: float | None  # the sorted delays' value at index min(n - 1, int(0.95 * n))


_ADDRESS = re.compile(r"\S+@\S+")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def suppression_key(item: Mapping[str, Any]) -> str:
    """`type: reason` of a suppressed action, addresses and dates generalised, so that like counts with like."""
    reason = _DATE.sub("<date>", _ADDRESS.sub("<address>", str(item.get("reason", ""))))
    return f"{item.get('type')}: {reason}"


@dataclass(frozen=True)
class DecisionColumns:
    """What stats reads of a decision trace, kept in columns of its own. Every backend stores these."""

    segment: str | None = None
    intent: str | None = None
    hard: bool | None = None
    suppressed: tuple[str, ...] = ()
    not_rendered: int = 0

    @classmethod
    def of(cls, decision: Mapping[str, Any] | None) -> DecisionColumns:
        if not decision:
            return cls()
        return cls(
            segment=str(decision.get("segment", "?")),
            intent=str(decision.get("intent", "?")),
            hard=bool(decision.get("hard_complaint")),
            suppressed=tuple(suppression_key(s) for s in decision.get("suppressed", [])),
            not_rendered=len(decision.get("failed", [])),
        )


# ---------------------------------------------------------------------- the contract


class StateStore(Protocol):
    """Everything the router keeps between mails and across restarts. Times are aware datetimes; a
    write that cannot be made raises `StateError` and changes nothing. Keys of mails travel as
    `str(MessageKey)`."""

    shared: bool
    """Several instances may use the store at once (PostgreSQL); False: one process holds it (SQLite)."""

    # checkpoints ----------------------------------------------------------------------------------

    def checkpoint(self, account: str, folder: str) -> Checkpoint | None:
        """The highest UID taken in this mailbox, with the UIDVALIDITY it belongs to."""
        ...

    def set_checkpoint(self, account: str, folder: str, uidvalidity: int, last_uid: int) -> None:
        """Set the checkpoint as given (the first start: mail already there stays alone)."""
        ...

    # intake ---------------------------------------------------------------------------------------

    def plan(self, plans: Sequence[Plan]) -> None:
        """Commit a batch durably, all or nothing: each mail's outcome (`planned` while it has sends), its
        outgoing messages (`pending`), contact, replies and bounces, and the checkpoint over its UID (which
        only moves forward within one UIDVALIDITY and starts over with a new one). A mail already recorded
        keeps its record."""
        ...

    def outcome(self, key: MessageKey) -> MessageRecord | None:
        """The record of one mail, None if it was never taken."""
        ...

    def seen(self, dedupe_id: str) -> list[tuple[str, str | None]]:
        """(key, content hash) of every mail recorded under this Message-ID (or hash), oldest first."""
        ...

    def history(self, sender: str, since: datetime) -> list[Contact]:
        """The sender's earlier contacts since `since` (address case-insensitive), oldest first."""
        ...

    def replies_to(self, addresses: Sequence[str], since: datetime) -> list[tuple[str, str, datetime]]:
        """(address lower-cased, template, when) of auto-replies planned to these addresses since `since`."""
        ...

    def bounces(self, addresses: Sequence[str]) -> dict[str, datetime]:
        """Address (lower-cased) -> when a delivery report last said our auto-reply did not reach it."""
        ...

    def replied_to(self, message_ids: Sequence[str], address: str) -> bool:
        """Whether one of these Message-IDs is an auto-reply we really sent (or tried to: sending,
        uncertain) to `address`; Message-IDs and address compare case-insensitively."""
        ...

    def count_sends(self, kind: str, since: datetime) -> int:
        """Outgoing messages of this kind planned since `since` (for rate limits on notices)."""
        ...

    def forget(self, key: MessageKey) -> None:
        """Drop what we know of a mail, its outbox and contact included (`quarantine retry`)."""
        ...

    # outbox ---------------------------------------------------------------------------------------

    def due_ids(self, now: datetime, limit: int = 500) -> list[int]:
        """Ids of the pending entries due by `now`, oldest first, at most `limit`."""
        ...

    def entry(self, entry_id: int) -> OutboxEntry | None:
        """One entry with its body (read one at a time: bodies are big)."""
        ...

    def interrupted(self) -> list[OutboxEntry]:
        """Entries left `sending` by a process that is gone. SQLite: one process at a time holds the state,
        so every `sending` entry when it starts; a shared backend: claims whose lease has expired."""
        ...

    def claim(self, entry_id: int, durable: bool) -> bool:
        """Take a pending entry for sending (`sending`, one attempt more); False if it is not pending (another
        task or process took it). `durable` (customer replies): the claim is on disk before the send, so after
        a crash the reply is known to be in doubt and is never sent again."""
        ...

    def release(self, entry_id: int, error: str | None = None) -> None:
        """Give back a claim whose send never started: pending again at once, the attempt does not count."""
        ...

    def mark_sent(self, entry_ids: Sequence[int], now: datetime, answer: str | None = None) -> None:
        """Sent: the body is dropped, its headers stay for the audit (up to and including the blank line);
        `answer`: what a webhook's endpoint answered that we keep (its ticket number)."""
        ...

    def mark_retry(self, entry_id: int, error: str, next_attempt: datetime) -> None:
        """Pending again, due at `next_attempt`."""
        ...

    def mark_failed(self, entry_id: int, error: str, status: Literal["failed", "uncertain"] = "failed") -> None:
        """Final: refused (`failed`) or maybe delivered (`uncertain`: never sent again)."""
        ...

    def add_send(self, msg_key: str, send: PlannedSend, now: datetime) -> None:
        """An extra outgoing message for a recorded mail (a failure notice): the mail is `planned` again."""
        ...

    def pending_count(self) -> int:
        """Entries not final yet (pending or sending)."""
        ...

    # finishing ------------------------------------------------------------------------------------

    def settle(self, now: datetime) -> None:
        """Planned mails whose every send is final get their final outcome (done, or the plan's)."""
        ...

    def unfinished(self, account: str, folder: str) -> list[MessageRecord]:
        """Mails of this mailbox not yet marked on the server, by UID."""
        ...

    def marked(self, keys: Sequence[str]) -> None:
        """These mails are marked (or flagged) on the server: finished."""
        ...

    # audit, reports, housekeeping -----------------------------------------------------------------

    def quarantined(self) -> list[MessageRecord]:
        """Every quarantined mail, oldest first."""
        ...

    def find(self, ident: str) -> list[MessageRecord]:
        """The mails recorded under this Message-ID (or hash), or the one with this key, oldest first."""
        ...

    def decision(self, key: MessageKey) -> dict[str, Any] | None:
        """The decision trace of a mail (None: no decision was taken, or the mail is unknown)."""
        ...

    def sends(self, msg_key: str) -> list[SendRecord]:
        """What became of each outgoing message of a mail, in planned order."""
        ...

    def figures(self, since: datetime, until: datetime) -> Figures:
        """Counts over the mails received in [since, until) and their sends."""
        ...

    def counts(self) -> dict[str, int]:
        """Mails per stored outcome (record tags under their own name), and `outbox_pending`."""
        ...

    def prune(self, now: datetime, keep_days: int) -> int:
        """Forget marked, finished mail received more than keep_days ago (with its outbox entries), and
        contacts, replies and bounces as old. Finished mail of an earlier UIDVALIDITY of its folder counts as
        marked: it is never marked (its UID names another mail now). Returns how many mails were forgotten."""
        ...

    # instances ------------------------------------------------------------------------------------

    def hold_mailbox(self, account: str, folder: str) -> bool:
        """Whether this instance holds the mailbox (and alone may poll, plan and mark for it), taking it when
        it is free, again after a lost connection. False: another instance holds it. SQLite: one instance
        holds the whole state (the lock file next to it), so always True. Sends need no mailbox: claims
        keep them apart."""
        ...

    def release_mailbox(self, account: str, folder: str) -> None:
        """Let another instance take the mailbox (a no-op when not held)."""
        ...

    def close(self) -> None: ...


# ---------------------------------------------------------------------- SQLite: schema versions

_V1_FIRST_RELEASE = (
    """CREATE TABLE IF NOT EXISTS messages (
    key          TEXT PRIMARY KEY,        -- account|folder|uidvalidity|uid
    account      TEXT NOT NULL,
    folder       TEXT NOT NULL,
    uidvalidity  INTEGER NOT NULL,
    uid          INTEGER NOT NULL,
    dedupe_id    TEXT NOT NULL,           -- Message-ID, or a hash of the bytes
    outcome      TEXT NOT NULL,           -- planned | done | duplicate | automated | quarantined | a record tag
    rule         TEXT,
    decision     TEXT,                    -- JSON trace
    error        TEXT,
    received_at  TEXT NOT NULL,
    finished_at  TEXT,
    marked       INTEGER NOT NULL DEFAULT 0
)""",
    "CREATE INDEX IF NOT EXISTS messages_dedupe ON messages (dedupe_id)",
    "CREATE INDEX IF NOT EXISTS messages_open ON messages (account, folder, outcome, marked)",
    """CREATE TABLE IF NOT EXISTS outbox (
    id           INTEGER PRIMARY KEY,
    msg_key      TEXT NOT NULL REFERENCES messages(key),
    idx          INTEGER NOT NULL,
    kind         TEXT NOT NULL,           -- forward | reply | escalate | ticket | failure | quarantine
    unit         TEXT,
    mail_from    TEXT NOT NULL,
    recipients   TEXT NOT NULL,           -- JSON list
    message_id   TEXT NOT NULL UNIQUE,
    raw          BLOB NOT NULL,
    status       TEXT NOT NULL,           -- pending | sending | sent | failed | uncertain
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_attempt TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    sent_at      TEXT,
    last_error   TEXT
)""",
    "CREATE INDEX IF NOT EXISTS outbox_due ON outbox (status, next_attempt)",
    "CREATE INDEX IF NOT EXISTS outbox_msg ON outbox (msg_key)",
    """CREATE TABLE IF NOT EXISTS checkpoints (
    account      TEXT NOT NULL,
    folder       TEXT NOT NULL,
    uidvalidity  INTEGER NOT NULL,
    last_uid     INTEGER NOT NULL,
    PRIMARY KEY (account, folder)
)""",
    "CREATE TABLE IF NOT EXISTS contacts (sender TEXT NOT NULL, at TEXT NOT NULL, intent TEXT NOT NULL,"
    " msg_key TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS contacts_sender ON contacts (sender, at)",
    "CREATE TABLE IF NOT EXISTS replies (address TEXT NOT NULL, template TEXT NOT NULL, at TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS replies_address ON replies (address, at)",
    "CREATE TABLE IF NOT EXISTS bounces (address TEXT PRIMARY KEY, at TEXT NOT NULL)",
)


def _add_columns(db: sqlite3.Connection, table: str, columns: Sequence[tuple[str, str]]) -> None:
    """Add the columns a table lacks (a file of the unversioned code may have some of them already)."""
    have = {r["name"] for r in db.execute(f"PRAGMA table_info({table})")}
    for name, kind in columns:
        if name not in have:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")


def _v1_first_release(db: sqlite3.Connection) -> None:
    for statement in _V1_FIRST_RELEASE:
        db.execute(statement)


def _v2_final_outcome_and_content_hash(db: sqlite3.Connection) -> None:
    # final_outcome: what `planned` becomes once every send is final; content_hash: see dedupe.content_hash
    _add_columns(db, "messages", (("final_outcome", "TEXT"), ("content_hash", "TEXT")))


def _v3_decision_columns(db: sqlite3.Connection) -> None:
    _add_columns(
        db,
        "messages",
        (
            ("segment", "TEXT"),
            ("intent", "TEXT"),
            ("hard", "INTEGER"),
            ("suppressed", "TEXT"),  # JSON list of suppression_key, NULL when none
            ("not_rendered", "INTEGER NOT NULL DEFAULT 0"),
        ),
    )
    # Covering indexes: stats read these instead of the rows, whose decision traces are most of the file.
    db.execute(
        "CREATE INDEX IF NOT EXISTS messages_stats ON messages"
        " (received_at, account, outcome, rule, segment, intent, hard, not_rendered, suppressed, key)"
    )
    db.execute("CREATE INDEX IF NOT EXISTS outbox_stats ON outbox (msg_key, kind, unit, status, sent_at)")
    last = 0
    while rows := db.execute(
        "SELECT rowid, decision FROM messages WHERE decision IS NOT NULL AND rowid>? ORDER BY rowid LIMIT 500",
        (last,),
    ).fetchall():
        updates = []
        for row in rows:
            try:
                trace = json.loads(row["decision"])
            except ValueError:
                continue  # an unreadable trace: its mail counts, its decision does not
            columns = DecisionColumns.of(trace if isinstance(trace, dict) else None)
            updates.append((*_decision_values(columns), row["rowid"]))
        db.executemany(
            "UPDATE messages SET segment=?, intent=?, hard=?, suppressed=?, not_rendered=? WHERE rowid=?", updates
        )
        last = rows[-1]["rowid"]


def _v4_outbox_bodies(db: sqlite3.Connection) -> None:
    # The whole message of an outbox entry, apart from its row: a status change never rewrites it, and it is
    # written in slices and read into one buffer (blob I/O), never copied whole by SQLite. outbox.raw keeps
    # the header block; a sent message has no body row (mark_sent deletes it); the trigger drops it with its entry.
    db.execute("CREATE TABLE IF NOT EXISTS outbox_bodies (id INTEGER PRIMARY KEY, raw BLOB NOT NULL)")
    db.execute(
        "CREATE TRIGGER IF NOT EXISTS outbox_bodies_go AFTER DELETE ON outbox"
        " BEGIN DELETE FROM outbox_bodies WHERE id = old.id; END"
    )
    # the entries of earlier versions that still hold a body (SQLite moves them one row at a time)
    db.execute("INSERT OR IGNORE INTO outbox_bodies (id, raw) SELECT id, raw FROM outbox WHERE status!='sent'")
    db.execute(f"UPDATE outbox SET raw={_HEADERS_ONLY} WHERE status!='sent'")


def _v5_webhook_answers(db: sqlite3.Connection) -> None:
    # What a webhook's endpoint answered that we keep: its own ticket number (quoted to the customer).
    _add_columns(db, "outbox", [("answer", "TEXT")])


MIGRATIONS: Final[tuple[Callable[[sqlite3.Connection], None], ...]] = (
    _v1_first_release,
    _v2_final_outcome_and_content_hash,
    _v3_decision_columns,
    _v4_outbox_bodies,
    _v5_webhook_answers,
)
SCHEMA_VERSION: Final = len(MIGRATIONS)


def _decision_values(c: DecisionColumns) -> tuple[str | None, str | None, int | None, str | None, int]:
    hard = None if c.hard is None else int(c.hard)
    return c.segment, c.intent, hard, json.dumps(list(c.suppressed)) if c.suppressed else None, c.not_rendered


# A sent message keeps its headers (Message-ID, recipients, subject for the audit), not its body.
_HEADERS_ONLY = "CASE WHEN instr(raw, X'0D0A0D0A') > 0 THEN substr(raw, 1, instr(raw, X'0D0A0D0A') + 3) ELSE raw END"
_MESSAGE = (
    "account, folder, uidvalidity, uid, dedupe_id, outcome, rule, segment, intent, hard, error, content_hash,"
    " received_at, finished_at, marked"
)
_SEND = "id, msg_key, kind, unit, recipients, message_id, status, attempts, created_at, sent_at, last_error, answer"
_WINDOW = "m.received_at>=? AND m.received_at<?"


def _when(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _message(r: sqlite3.Row) -> MessageRecord:
    stored = str(r["outcome"])
    known = stored in OUTCOMES
    return MessageRecord(
        key=MessageKey(r["account"], r["folder"], int(r["uidvalidity"]), int(r["uid"])),
        dedupe_id=r["dedupe_id"],
        outcome=cast(Outcome, stored) if known else "done",
        tag=None if known else stored,
        rule=r["rule"],
        segment=r["segment"],
        intent=r["intent"],
        hard=None if r["hard"] is None else bool(r["hard"]),
        error=r["error"],
        content_hash=r["content_hash"],
        received_at=datetime.fromisoformat(r["received_at"]),
        finished_at=_when(r["finished_at"]),
        marked=bool(r["marked"]),
    )


def _send_record(r: sqlite3.Row) -> SendRecord:
    return SendRecord(
        id=int(r["id"]),
        msg_key=r["msg_key"],
        kind=r["kind"],
        unit=r["unit"],
        recipients=tuple(json.loads(r["recipients"])),
        message_id=r["message_id"],
        status=r["status"],
        attempts=int(r["attempts"]),
        created_at=datetime.fromisoformat(r["created_at"]),
        sent_at=_when(r["sent_at"]),
        last_error=r["last_error"],
        answer=r["answer"],
    )


def _entry(r: sqlite3.Row, raw: bytes) -> OutboxEntry:
    return OutboxEntry(
        kind=r["kind"],
        unit=r["unit"],
        mail_from=r["mail_from"],
        recipients=tuple(json.loads(r["recipients"])),
        message_id=r["message_id"],
        raw=raw,
        id=int(r["id"]),
        msg_key=r["msg_key"],
        status=r["status"],
        attempts=int(r["attempts"]),
        created_at=datetime.fromisoformat(r["created_at"]),
    )


BLOB_SLICE: Final = 1 << 20  # bytes of an outgoing message written to the state store at a time


# a finished mail that housekeeping may forget once old: marked processed, or of an earlier UIDVALIDITY of its
# folder (never marked: the poller marks only mail of the folder's UIDVALIDITY now)
_PRUNABLE = (
    "(marked=1 OR uidvalidity != (SELECT c.uidvalidity FROM checkpoints c"
    " WHERE c.account = messages.account AND c.folder = messages.folder))"
)


class SqliteStore:
    """One SQLite database in WAL mode; plans and reply sends are committed with fsync (see `_tx`)."""

    shared = False  # one process at a time (the cli's lock file next to it)

    def __init__(self, path: Path | str) -> None:
        self.path = path
        self.notes: list[str] = []  # about the files' permissions (statefiles.prepare), for the log or stderr
        self._lock = threading.RLock()
        try:
            if str(path) != ":memory:":
                self.notes = statefiles.prepare(Path(path))
            self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30)
        except (OSError, sqlite3.Error) as exc:
            raise StateError(f"state store {path}: cannot open: {exc}") from None
        try:
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # FULL for the writes that must survive power loss
            self._db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.Error as exc:
            self._db.close()
            raise StateError(f"state store {path}: cannot write: {exc}") from None
        except StateError:
            self._db.close()
            raise

    def _version(self) -> int:
        version = int(self._db.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise StateError(
                f"state store {self.path}: schema version {version} was written by a newer emailrouter (this one"
                f" knows versions up to {SCHEMA_VERSION}): run that version, or restore a state file of this one"
            )
        return version

    def _migrate(self) -> None:
        """Bring the file to SCHEMA_VERSION, one transaction per migration (version 0: a new file, or one
        written before versions were kept: the first migrations are written to find their tables there)."""
        if self._version() == SCHEMA_VERSION:
            return  # nothing written: a file that is up to date opens read-only too
        for target, migration in enumerate(MIGRATIONS, start=1):
            with self._tx() as db:
                if self._version() >= target:  # another process migrated it meanwhile
                    continue
                try:
                    migration(db)
                except sqlite3.Error as exc:  # rolled back: the file stays at the version before
                    raise StateError(
                        f"state store {self.path}: cannot migrate to schema version {target}: {exc}"
                    ) from None
                db.execute(f"PRAGMA user_version={target}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def hold_mailbox(self, account: str, folder: str) -> bool:
        return True  # one process at a time holds a SQLite state (cli's lock file)

    def release_mailbox(self, account: str, folder: str) -> None:
        return None

    @contextmanager
    def _tx(self, durable: bool = False) -> Iterator[sqlite3.Connection]:
        """A write transaction. `durable`: fsync before returning (plans, and replies about to be sent);
        otherwise a commit survives a crash of the process but maybe not of the machine."""
        with self._lock:
            try:
                if durable:
                    self._db.execute("PRAGMA synchronous=FULL")
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                    self._db.execute("COMMIT")
                except BaseException:
                    if self._db.in_transaction:
                        with contextlib.suppress(sqlite3.Error):
                            self._db.execute("ROLLBACK")
                    raise
                finally:
                    if durable:
                        with contextlib.suppress(sqlite3.Error):
                            self._db.execute("PRAGMA synchronous=NORMAL")
            except sqlite3.OperationalError as exc:  # full, read-only, I/O error, locked for too long
                raise StateError(f"state store {self.path}: cannot write: {exc}") from None

    def _rows(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.OperationalError as exc:  # I/O error, locked for too long
                raise StateError(f"state store {self.path}: cannot read: {exc}") from None

    def _count(self, sql: str, args: Sequence[Any] = ()) -> int:
        return int(self._rows(sql, args)[0][0] or 0)

    # ------------------------------------------------------------------ checkpoints

    def checkpoint(self, account: str, folder: str) -> Checkpoint | None:
        rows = self._rows(
            "SELECT uidvalidity, last_uid FROM checkpoints WHERE account=? AND folder=?", (account, folder)
        )
        return Checkpoint(int(rows[0]["uidvalidity"]), int(rows[0]["last_uid"])) if rows else None

    def set_checkpoint(self, account: str, folder: str, uidvalidity: int, last_uid: int) -> None:
        with self._tx() as db:
            self._advance(db, account, folder, uidvalidity, last_uid, force=True)

    @staticmethod
    def _advance(
        db: sqlite3.Connection, account: str, folder: str, uidvalidity: int, uid: int, force: bool = False
    ) -> None:
        if force:
            db.execute("INSERT OR REPLACE INTO checkpoints VALUES (?,?,?,?)", (account, folder, uidvalidity, uid))
            return
        db.execute(
            """INSERT INTO checkpoints VALUES (?,?,?,?)
               ON CONFLICT(account, folder) DO UPDATE SET
                 last_uid = CASE WHEN uidvalidity = excluded.uidvalidity
                                 THEN max(last_uid, excluded.last_uid) ELSE excluded.last_uid END,
                 uidvalidity = excluded.uidvalidity""",
            (account, folder, uidvalidity, uid),
        )

    # ------------------------------------------------------------------ intake

    def plan(self, plans: Sequence[Plan]) -> None:
        with self._tx(durable=True) as db:
            for p in plans:
                at = _iso(p.now)
                db.execute(
                    "INSERT OR IGNORE INTO messages (key, account, folder, uidvalidity, uid, dedupe_id, outcome,"
                    " final_outcome, content_hash, rule, decision, error, received_at, finished_at,"
                    " segment, intent, hard, suppressed, not_rendered)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        str(p.key),
                        p.key.account,
                        p.key.folder,
                        p.key.uidvalidity,
                        p.key.uid,
                        p.dedupe_id,
                        "planned" if p.sends else p.outcome,
                        p.outcome,
                        p.content_hash,
                        p.rule,
                        json.dumps(p.decision, ensure_ascii=False) if p.decision else None,
                        p.error,
                        at,
                        None if p.sends else at,
                        *_decision_values(DecisionColumns.of(p.decision)),
                    ),
                )
                db.executemany("INSERT INTO replies VALUES (?,?,?)", [(a.lower(), t, at) for a, t in p.replies])
                db.executemany("INSERT OR REPLACE INTO bounces VALUES (?,?)", [(a.lower(), at) for a in p.bounced])
                for n, send in enumerate(p.sends):
                    self._insert_send(db, str(p.key), n, send, at)
                if p.contact is not None:
                    db.execute(
                        "INSERT INTO contacts VALUES (?,?,?,?)", (p.contact[0].lower(), at, p.contact[1], str(p.key))
                    )
                self._advance(db, p.key.account, p.key.folder, p.key.uidvalidity, p.key.uid)

    @staticmethod
    def _insert_send(db: sqlite3.Connection, key: str, idx: int, send: PlannedSend, at: str) -> None:
        end = send.raw.find(b"\r\n\r\n")
        head = send.raw[: end + 4] if end >= 0 else send.raw  # the header block (what a sent message keeps)
        cur = db.execute(
            "INSERT OR IGNORE INTO outbox (msg_key, idx, kind, unit, mail_from, recipients, message_id, raw, status,"
            " next_attempt, created_at) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (
                key,
                idx,
                send.kind,
                send.unit,
                send.mail_from,
                json.dumps(list(send.recipients)),
                send.message_id,
                head,
                "pending",
                at,
                at,
            ),
        )
        if cur.rowcount != 1 or cur.lastrowid is None:
            return  # planned before: its body is there
        db.execute("INSERT INTO outbox_bodies (id, raw) VALUES (?, zeroblob(?))", (cur.lastrowid, len(send.raw)))
        if send.raw:
            with db.blobopen("outbox_bodies", "raw", cur.lastrowid) as blob:
                view = memoryview(send.raw)
                for offset in range(0, len(view), BLOB_SLICE):
                    blob.write(view[offset : offset + BLOB_SLICE])

    def outcome(self, key: MessageKey) -> MessageRecord | None:
        rows = self._rows(f"SELECT {_MESSAGE} FROM messages WHERE key=?", (str(key),))
        return _message(rows[0]) if rows else None

    def seen(self, dedupe_id: str) -> list[tuple[str, str | None]]:
        rows = self._rows("SELECT key, content_hash FROM messages WHERE dedupe_id=? ORDER BY rowid", (dedupe_id,))
        return [(str(r["key"]), r["content_hash"]) for r in rows]

    def history(self, sender: str, since: datetime) -> list[Contact]:
        rows = self._rows(
            "SELECT at, intent FROM contacts WHERE sender=? AND at>=? ORDER BY at", (sender.lower(), _iso(since))
        )
        return [Contact(datetime.fromisoformat(r["at"]), r["intent"]) for r in rows]

    def replies_to(self, addresses: Sequence[str], since: datetime) -> list[tuple[str, str, datetime]]:
        if not addresses:
            return []
        marks = ",".join("?" * len(addresses))
        rows = self._rows(
            f"SELECT address, template, at FROM replies WHERE address IN ({marks}) AND at>=?",
            [a.lower() for a in addresses] + [_iso(since)],
        )
        return [(r["address"], r["template"], datetime.fromisoformat(r["at"])) for r in rows]

    def bounces(self, addresses: Sequence[str]) -> dict[str, datetime]:
        if not addresses:
            return {}
        marks = ",".join("?" * len(addresses))
        rows = self._rows(f"SELECT address, at FROM bounces WHERE address IN ({marks})", [a.lower() for a in addresses])
        return {r["address"]: datetime.fromisoformat(r["at"]) for r in rows}

    def replied_to(self, message_ids: Sequence[str], address: str) -> bool:
        if not message_ids:
            return False
        marks = ",".join("?" * len(message_ids))
        rows = self._rows(
            f"SELECT recipients FROM outbox WHERE kind='reply' AND status IN ('sent','uncertain','sending')"
            f" AND lower(message_id) IN ({marks})",
            [m.lower() for m in message_ids],
        )
        wanted = address.lower()
        return any(wanted in (r.lower() for r in json.loads(row["recipients"])) for row in rows)

    def count_sends(self, kind: str, since: datetime) -> int:
        return self._count("SELECT count(*) FROM outbox WHERE kind=? AND created_at>=?", (kind, _iso(since)))

    def forget(self, key: MessageKey) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM outbox WHERE msg_key=?", (str(key),))
            db.execute("DELETE FROM contacts WHERE msg_key=?", (str(key),))
            db.execute("DELETE FROM messages WHERE key=?", (str(key),))

    # ------------------------------------------------------------------ outbox

    def _entries(self, where: str, args: Sequence[Any]) -> list[OutboxEntry]:
        with self._lock:
            rows = self._rows(f"SELECT * FROM outbox WHERE {where} ORDER BY id", args)
            return [_entry(r, self._body(int(r["id"]), bytes(r["raw"]))) for r in rows]

    def _body(self, entry_id: int, head: bytes) -> bytes:
        """The whole message of an outbox entry, read in one piece (the header block alone once it is sent)."""
        try:
            if not self._db.execute("SELECT 1 FROM outbox_bodies WHERE id=?", (entry_id,)).fetchone():
                return head  # sent: its body is gone
            with self._db.blobopen("outbox_bodies", "raw", entry_id, readonly=True) as blob:
                return blob.read()
        except sqlite3.OperationalError as exc:  # I/O error, locked for too long
            raise StateError(f"state store {self.path}: cannot read: {exc}") from None

    def due_ids(self, now: datetime, limit: int = 500) -> list[int]:
        rows = self._rows(
            "SELECT id FROM outbox WHERE status='pending' AND next_attempt<=? ORDER BY id LIMIT ?", (_iso(now), limit)
        )
        return [int(r["id"]) for r in rows]

    def entry(self, entry_id: int) -> OutboxEntry | None:
        found = self._entries("id=?", (entry_id,))
        return found[0] if found else None

    def interrupted(self) -> list[OutboxEntry]:
        return self._entries("status='sending'", ())

    def claim(self, entry_id: int, durable: bool) -> bool:
        with self._tx(durable=durable) as db:
            cur = db.execute(
                "UPDATE outbox SET status='sending', attempts=attempts+1 WHERE id=? AND status='pending'", (entry_id,)
            )
            return cur.rowcount == 1

    def release(self, entry_id: int, error: str | None = None) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE outbox SET status='pending', attempts=max(attempts-1, 0), last_error=coalesce(?, last_error)"
                " WHERE id=? AND status='sending'",
                (error, entry_id),
            )

    def mark_sent(self, entry_ids: Sequence[int], now: datetime, answer: str | None = None) -> None:
        with self._tx() as db:
            db.executemany(
                "UPDATE outbox SET status='sent', sent_at=?, last_error=NULL, answer=coalesce(?, answer),"
                f" raw={_HEADERS_ONLY} WHERE id=?",
                [(_iso(now), answer, entry_id) for entry_id in entry_ids],
            )
            db.executemany("DELETE FROM outbox_bodies WHERE id=?", [(entry_id,) for entry_id in entry_ids])

    def mark_retry(self, entry_id: int, error: str, next_attempt: datetime) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE outbox SET status='pending', last_error=?, next_attempt=? WHERE id=?",
                (error, _iso(next_attempt), entry_id),
            )

    def mark_failed(self, entry_id: int, error: str, status: Literal["failed", "uncertain"] = "failed") -> None:
        with self._tx() as db:
            db.execute("UPDATE outbox SET status=?, last_error=? WHERE id=?", (status, error, entry_id))

    def add_send(self, msg_key: str, send: PlannedSend, now: datetime) -> None:
        with self._tx() as db:
            idx = db.execute("SELECT coalesce(max(idx), -1) + 1 FROM outbox WHERE msg_key=?", (msg_key,)).fetchone()[0]
            self._insert_send(db, msg_key, idx, send, _iso(now))
            db.execute("UPDATE messages SET outcome='planned' WHERE key=? AND outcome!='planned'", (msg_key,))

    def pending_count(self) -> int:
        return self._count("SELECT count(*) FROM outbox WHERE status IN ('pending','sending')")

    # ------------------------------------------------------------------ finishing

    def settle(self, now: datetime) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE messages SET outcome=coalesce(final_outcome, 'done'), finished_at=?"
                " WHERE outcome='planned' AND NOT EXISTS"
                " (SELECT 1 FROM outbox o WHERE o.msg_key=messages.key"
                " AND o.status NOT IN ('sent','failed','uncertain'))",
                (_iso(now),),
            )

    def unfinished(self, account: str, folder: str) -> list[MessageRecord]:
        rows = self._rows(
            f"SELECT {_MESSAGE} FROM messages WHERE account=? AND folder=? AND marked=0 ORDER BY uid", (account, folder)
        )
        return [_message(r) for r in rows]

    def marked(self, keys: Sequence[str]) -> None:
        with self._tx() as db:
            db.executemany("UPDATE messages SET marked=1 WHERE key=?", [(k,) for k in keys])

    # ------------------------------------------------------------------ audit, reports, housekeeping

    def quarantined(self) -> list[MessageRecord]:
        rows = self._rows(f"SELECT {_MESSAGE} FROM messages WHERE outcome='quarantined' ORDER BY received_at")
        return [_message(r) for r in rows]

    def find(self, ident: str) -> list[MessageRecord]:
        rows = self._rows(
            f"SELECT {_MESSAGE} FROM messages WHERE dedupe_id=? OR key=? ORDER BY received_at, rowid", (ident, ident)
        )
        return [_message(r) for r in rows]

    def decision(self, key: MessageKey) -> dict[str, Any] | None:
        rows = self._rows("SELECT decision FROM messages WHERE key=?", (str(key),))
        if not rows or rows[0]["decision"] is None:
            return None
        trace = json.loads(rows[0]["decision"])
        return trace if isinstance(trace, dict) else None

    def sends(self, msg_key: str) -> list[SendRecord]:
        rows = self._rows(f"SELECT {_SEND} FROM outbox WHERE msg_key=? ORDER BY idx", (msg_key,))
        return [_send_record(r) for r in rows]

    def figures(self, since: datetime, until: datetime) -> Figures:
        window = (_iso(since), _iso(until))
        total = self._rows(f"SELECT count(*), sum(hard), sum(not_rendered) FROM messages m WHERE {_WINDOW}", window)[0]

        def per(column: str) -> dict[str, int]:
            rows = self._rows(
                f"SELECT {column} AS name, count(*) AS n FROM messages m WHERE {_WINDOW} AND {column} IS NOT NULL"
                f" AND {column}!='' GROUP BY {column}",
                window,
            )
            return {r["name"]: int(r["n"]) for r in rows}

        suppressed = self._rows(
            f"SELECT j.value AS name, count(*) AS n FROM messages m, json_each(m.suppressed) j"
            f" WHERE {_WINDOW} AND m.suppressed IS NOT NULL GROUP BY j.value",
            window,
        )
        # every send of the window's mails: the mails first, then their sends, both from the covering indexes
        # (CROSS JOIN keeps that order); the few failures are found from the outbox's status index instead
        joined = f"FROM messages m CROSS JOIN outbox o ON o.msg_key=m.key WHERE {_WINDOW}"
        actions = self._rows(f"SELECT o.kind, o.unit, o.status, count(*) AS n {joined} GROUP BY 1, 2, 3", window)
        failures = self._rows(
            f"SELECT {', '.join('o.' + c for c in _SEND.split(', '))}"
            f" FROM outbox o JOIN messages m ON m.key=o.msg_key WHERE {_WINDOW}"
            " AND o.status IN ('failed','uncertain') ORDER BY o.id",
            window,
        )
        median, p95 = self._sent_delays(joined, window)
        return Figures(
            messages=int(total[0]),
            hard_complaints=int(total[1] or 0),
            replies_not_rendered=int(total[2] or 0),
            per_account=per("account"),
            per_outcome=per("outcome"),
            per_segment=per("segment"),
            per_intent=per("intent"),
            per_rule=per("rule"),
            suppressed={r["name"]: int(r["n"]) for r in suppressed},
            actions={(r["kind"], r["unit"], r["status"]): int(r["n"]) for r in actions},
            failures=[_send_record(r) for r in failures],
            sent_delay_median=median,
            sent_delay_p95=p95,
        )

    def _sent_delays(self, joined: str, window: tuple[str, str]) -> tuple[float | None, float | None]:
        """Median and p95 of arrival-to-sent, in one query: the sends at those ranks are found in SQL (ordered by
        julianday) and their delay is computed exactly from the stored times."""
        rows = self._rows(
            "SELECT rank, sent_at, received_at, n FROM (SELECT o.sent_at, m.received_at, count(*) OVER () AS n,"
            " row_number() OVER (ORDER BY julianday(o.sent_at) - julianday(m.received_at), o.id) - 1 AS rank"
            f" {joined} AND o.status='sent' AND o.sent_at IS NOT NULL)"
            " WHERE rank IN ((n - 1) / 2, n / 2, min(n - 1, CAST(0.95 * n AS INTEGER)))",
            window,
        )
        if not rows:
            return None, None
        delay = {
            int(r["rank"]): (datetime.fromisoformat(r["sent_at"]) - datetime.fromisoformat(r["received_at"]))
            for r in rows
        }
        n = int(rows[0]["n"])
        median = (delay[(n - 1) // 2] + delay[n // 2]).total_seconds() / 2
        return median, delay[min(n - 1, int(0.95 * n))].total_seconds()

    def counts(self) -> dict[str, int]:
        rows = self._rows("SELECT outcome, count(*) AS n FROM messages GROUP BY outcome")
        out = {r["outcome"]: int(r["n"]) for r in rows}
        out["outbox_pending"] = self.pending_count()
        return out

    def prune(self, now: datetime, keep_days: int) -> int:
        cutoff = _iso(now - timedelta(days=keep_days))
        with self._tx() as db:
            db.execute("DELETE FROM contacts WHERE at<?", (cutoff,))
            db.execute("DELETE FROM replies WHERE at<?", (cutoff,))
            db.execute("DELETE FROM bounces WHERE at<?", (cutoff,))
            old = f"SELECT key FROM messages WHERE {_PRUNABLE} AND outcome!='planned' AND received_at<?"
            db.execute(f"DELETE FROM outbox WHERE msg_key IN ({old})", (cutoff,))
            cur = db.execute(f"DELETE FROM messages WHERE key IN ({old})", (cutoff,))
            return int(cur.rowcount)


Store = SqliteStore  # the name the demo and the tests use; the daemon and the cli use open_store()


def open_store(settings: Settings) -> StateStore:
    """The store the settings name: the PostgreSQL database of `state.url` (service/pgstore.py), else the
    SQLite file (the default). `StateError` when it cannot be opened; it says whether retrying helps."""
    if settings.state_url is None:
        return SqliteStore(settings.state_path)
    where = settings.state_url.split("?", 1)[0]  # the config refuses a password in the URL
    try:
        from emailrouter.service.pgstore import PostgresStore
    except ImportError as exc:
        raise StateError(
            f"state store {where}: PostgreSQL needs psycopg ({exc.name} is missing): install emailrouter[postgres];"
            " retrying does not help"
        ) from None
    password = None
    if settings.state_password is not None:
        try:
            password = settings.state_password.read()
        except CredentialError as exc:
            raise StateError(f"state store {where}: password: {exc}") from None
    return PostgresStore(settings.state_url, password)


if TYPE_CHECKING:  # mypy proves that the SQLite store keeps the contract

    def _keeps_the_contract(store: SqliteStore) -> StateStore:
        return store
