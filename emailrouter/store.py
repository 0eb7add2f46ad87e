"""SQLite state: processed mail, the outbox, checkpoints and contact history.

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
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from emailrouter.classify import Contact
from emailrouter.errors import StateError

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    key          TEXT PRIMARY KEY,        -- account|folder|uidvalidity|uid
    account      TEXT NOT NULL,
    folder       TEXT NOT NULL,
    uidvalidity  INTEGER NOT NULL,
    uid          INTEGER NOT NULL,
    dedupe_id    TEXT NOT NULL,           -- Message-ID, or a hash of the bytes
    outcome      TEXT NOT NULL,           -- planned | done | duplicate | automated | quarantined
    final_outcome TEXT,                   -- what `planned` becomes once every send is final
    content_hash TEXT,                    -- sha256 of what the mail says (see dedupe.content_hash)
    rule         TEXT,
    decision     TEXT,                    -- JSON trace
    error        TEXT,
    received_at  TEXT NOT NULL,
    finished_at  TEXT,
    marked       INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS messages_dedupe ON messages (dedupe_id);
CREATE INDEX IF NOT EXISTS messages_open ON messages (account, folder, outcome, marked);
CREATE TABLE IF NOT EXISTS outbox (
    id           INTEGER PRIMARY KEY,
    msg_key      TEXT NOT NULL REFERENCES messages(key),
    idx          INTEGER NOT NULL,
    kind         TEXT NOT NULL,           -- forward | reply | escalate | ticket | failure
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
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (status, next_attempt);
CREATE INDEX IF NOT EXISTS outbox_msg ON outbox (msg_key);
CREATE TABLE IF NOT EXISTS checkpoints (
    account      TEXT NOT NULL,
    folder       TEXT NOT NULL,
    uidvalidity  INTEGER NOT NULL,
    last_uid     INTEGER NOT NULL,
    PRIMARY KEY (account, folder)
);
CREATE TABLE IF NOT EXISTS contacts (
    sender       TEXT NOT NULL,
    at           TEXT NOT NULL,
    intent       TEXT NOT NULL,
    msg_key      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS contacts_sender ON contacts (sender, at);
CREATE TABLE IF NOT EXISTS replies (
    address      TEXT NOT NULL,
    template     TEXT NOT NULL,
    at           TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS replies_address ON replies (address, at);
CREATE TABLE IF NOT EXISTS bounces (
    address      TEXT PRIMARY KEY,
    at           TEXT NOT NULL
);
"""

FINAL = ("sent", "failed", "uncertain")
# Columns added after the first release: a state file from then gets them when it is opened.
_ADDED_COLUMNS = {"messages": (("final_outcome", "TEXT"), ("content_hash", "TEXT"))}
# A sent message keeps its headers (Message-ID, recipients, subject for the audit), not its body.
_HEADERS_ONLY = "CASE WHEN instr(raw, X'0D0A0D0A') > 0 THEN substr(raw, 1, instr(raw, X'0D0A0D0A') + 3) ELSE raw END"


def _iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="microseconds")


@dataclass(frozen=True)
class MessageKey:
    account: str
    folder: str
    uidvalidity: int
    uid: int

    def __str__(self) -> str:
        return f"{self.account}|{self.folder}|{self.uidvalidity}|{self.uid}"


@dataclass(frozen=True)
class PlannedSend:
    """One outgoing message as committed to the outbox."""

    kind: str
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
    decision: dict[str, Any]
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
    status: str
    attempts: int
    created_at: datetime


@dataclass(frozen=True)
class Checkpoint:
    uidvalidity: int
    last_uid: int


class Store:
    """One SQLite database in WAL mode; plans and reply sends are committed with fsync (see `_tx`)."""

    def __init__(self, path: Path | str) -> None:
        self.path = path
        self._lock = threading.RLock()
        try:
            if str(path) != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False, timeout=30)
        except (OSError, sqlite3.Error) as exc:
            raise StateError(f"state store {path}: cannot open: {exc}") from None
        try:
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # FULL for the writes that must survive power loss
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(SCHEMA)
            self._migrate()
        except sqlite3.Error as exc:
            self._db.close()
            raise StateError(f"state store {path}: cannot write: {exc}") from None

    def _migrate(self) -> None:
        for table, columns in _ADDED_COLUMNS.items():
            have = {r["name"] for r in self._db.execute(f"PRAGMA table_info({table})")}
            for name, kind in columns:
                if name not in have:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

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

    def query(self, sql: str, args: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # ------------------------------------------------------------------ checkpoints

    def checkpoint(self, account: str, folder: str) -> Checkpoint | None:
        rows = self.query(
            "SELECT uidvalidity, last_uid FROM checkpoints WHERE account=? AND folder=?", (account, folder)
        )
        return Checkpoint(rows[0]["uidvalidity"], rows[0]["last_uid"]) if rows else None

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

    # ------------------------------------------------------------------ messages

    def outcome(self, key: MessageKey) -> sqlite3.Row | None:
        rows = self.query("SELECT * FROM messages WHERE key=?", (str(key),))
        return rows[0] if rows else None

    def first_with_dedupe_id(self, dedupe_id: str) -> str | None:
        rows = self.query("SELECT key FROM messages WHERE dedupe_id=? ORDER BY rowid LIMIT 1", (dedupe_id,))
        return str(rows[0]["key"]) if rows else None

    def seen(self, dedupe_id: str) -> list[tuple[str, str | None]]:
        """(key, content hash) of every mail recorded under this Message-ID (or hash), oldest first."""
        rows = self.query("SELECT key, content_hash FROM messages WHERE dedupe_id=? ORDER BY rowid", (dedupe_id,))
        return [(str(r["key"]), r["content_hash"]) for r in rows]

    def replied_to(self, message_ids: Sequence[str], address: str) -> bool:
        """Whether one of these Message-IDs is an auto-reply we really sent (or tried to send) to `address`."""
        if not message_ids:
            return False
        marks = ",".join("?" * len(message_ids))
        rows = self.query(
            f"SELECT recipients FROM outbox WHERE kind='reply' AND status IN ('sent','uncertain','sending')"
            f" AND lower(message_id) IN ({marks})",
            [m.lower() for m in message_ids],
        )
        wanted = address.lower()
        return any(wanted in (r.lower() for r in json.loads(row["recipients"])) for row in rows)

    def replies_to(self, addresses: Sequence[str], since: datetime) -> list[tuple[str, str, datetime]]:
        """(address, template, when) of auto-replies planned to these addresses since `since`."""
        if not addresses:
            return []
        marks = ",".join("?" * len(addresses))
        rows = self.query(
            f"SELECT address, template, at FROM replies WHERE address IN ({marks}) AND at>=?",
            [a.lower() for a in addresses] + [_iso(since)],
        )
        return [(r["address"], r["template"], datetime.fromisoformat(r["at"])) for r in rows]

    def bounces(self, addresses: Sequence[str]) -> dict[str, datetime]:
        if not addresses:
            return {}
        marks = ",".join("?" * len(addresses))
        rows = self.query(f"SELECT address, at FROM bounces WHERE address IN ({marks})", [a.lower() for a in addresses])
        return {r["address"]: datetime.fromisoformat(r["at"]) for r in rows}

    def quarantined(self) -> list[sqlite3.Row]:
        return self.query("SELECT * FROM messages WHERE outcome='quarantined' ORDER BY received_at")

    def forget(self, key: MessageKey) -> None:
        """Drop what we know of a mail (to process it again: `quarantine retry`)."""
        with self._tx() as db:
            db.execute("DELETE FROM outbox WHERE msg_key=?", (str(key),))
            db.execute("DELETE FROM contacts WHERE msg_key=?", (str(key),))
            db.execute("DELETE FROM messages WHERE key=?", (str(key),))

    def history(self, sender: str, since: datetime) -> list[Contact]:
        rows = self.query(
            "SELECT at, intent FROM contacts WHERE sender=? AND at>=? ORDER BY at", (sender.lower(), _iso(since))
        )
        return [Contact(datetime.fromisoformat(r["at"]), r["intent"]) for r in rows]

    def plan(self, plans: Sequence[Plan]) -> None:
        """Commit decisions and every outgoing message, durably (fsync), before anything is sent."""
        with self._tx(durable=True) as db:
            for p in plans:
                at = _iso(p.now)
                db.execute(
                    "INSERT OR IGNORE INTO messages (key, account, folder, uidvalidity, uid, dedupe_id, outcome,"
                    " final_outcome, content_hash, rule, decision, error, received_at, finished_at)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
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
        db.execute(
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
                send.raw,
                "pending",
                at,
                at,
            ),
        )

    def record_outcome(
        self,
        key: MessageKey,
        dedupe_id: str,
        outcome: str,
        now: datetime,
        *,
        error: str | None = None,
        rule: str | None = None,
    ) -> None:
        """A mail that needs no sending, committed on its own (the daemon commits these with its batch)."""
        self.plan([Plan(key, dedupe_id, rule or "", {}, (), now, None, outcome, error=error)])

    def add_send(self, msg_key: str, send: PlannedSend, now: datetime) -> None:
        """An extra outgoing message for a planned mail (a failure notice to the human queue)."""
        with self._tx() as db:
            idx = db.execute("SELECT coalesce(max(idx), -1) + 1 FROM outbox WHERE msg_key=?", (msg_key,)).fetchone()[0]
            self._insert_send(db, msg_key, idx, send, _iso(now))
            db.execute("UPDATE messages SET outcome='planned' WHERE key=? AND outcome!='planned'", (msg_key,))

    # ------------------------------------------------------------------ outbox

    def _entries(self, where: str, args: Sequence[Any]) -> list[OutboxEntry]:
        rows = self.query(f"SELECT * FROM outbox WHERE {where} ORDER BY id", args)
        return [
            OutboxEntry(
                kind=r["kind"],
                unit=r["unit"],
                mail_from=r["mail_from"],
                recipients=tuple(json.loads(r["recipients"])),
                message_id=r["message_id"],
                raw=bytes(r["raw"]),
                id=r["id"],
                msg_key=r["msg_key"],
                status=r["status"],
                attempts=r["attempts"],
                created_at=datetime.fromisoformat(r["created_at"]),
            )
            for r in rows
        ]

    def due(self, now: datetime, msg_key: str | None = None) -> list[OutboxEntry]:
        """Entries to send now: pending and due (or all pending of one mail)."""
        if msg_key is not None:
            return self._entries("msg_key=? AND status='pending'", (msg_key,))
        return self._entries("status='pending' AND next_attempt<=?", (_iso(now),))

    def interrupted(self) -> list[OutboxEntry]:
        """Entries caught in the middle of a send by a crash."""
        return self._entries("status='sending'", ())

    def claim(self, entry_id: int, durable: bool) -> bool:
        """Take a pending entry for sending; False if another task or process already took it.

        `durable` (customer replies): the claim is on disk before the send, so after a crash the reply
        is known to be in doubt and is never sent again."""
        with self._tx(durable=durable) as db:
            cur = db.execute(
                "UPDATE outbox SET status='sending', attempts=attempts+1 WHERE id=? AND status='pending'", (entry_id,)
            )
            return cur.rowcount == 1

    def mark_sent(self, entry_ids: Sequence[int], now: datetime) -> None:
        """Sent: the body is dropped (the headers and the decision stay for the audit)."""
        with self._tx() as db:
            db.executemany(
                f"UPDATE outbox SET status='sent', sent_at=?, last_error=NULL, raw={_HEADERS_ONLY} WHERE id=?",
                [(_iso(now), entry_id) for entry_id in entry_ids],
            )

    def release(self, entry_id: int, error: str | None = None) -> None:
        """Give back a claim whose send never started (the relay was unusable, or something broke first):
        pending again at once, and the attempt does not count."""
        with self._tx() as db:
            db.execute(
                "UPDATE outbox SET status='pending', attempts=max(attempts-1, 0), last_error=coalesce(?, last_error)"
                " WHERE id=? AND status='sending'",
                (error, entry_id),
            )

    def mark_retry(self, entry_id: int, error: str, next_attempt: datetime) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE outbox SET status='pending', last_error=?, next_attempt=? WHERE id=?",
                (error, _iso(next_attempt), entry_id),
            )

    def mark_failed(self, entry_id: int, error: str, status: str = "failed") -> None:
        with self._tx() as db:
            db.execute("UPDATE outbox SET status=?, last_error=? WHERE id=?", (status, error, entry_id))

    def count_sends(self, kind: str, since: datetime) -> int:
        """Outgoing messages of this kind planned since `since` (for rate limits on notices)."""
        rows = self.query("SELECT count(*) FROM outbox WHERE kind=? AND created_at>=?", (kind, _iso(since)))
        return int(rows[0][0])

    def due_ids(self, now: datetime, limit: int = 500) -> list[int]:
        """Ids of the entries to send now, oldest first; the entries (with their bodies) are read one at a time."""
        rows = self.query(
            "SELECT id FROM outbox WHERE status='pending' AND next_attempt<=? ORDER BY id LIMIT ?", (_iso(now), limit)
        )
        return [int(r["id"]) for r in rows]

    def entry(self, entry_id: int) -> OutboxEntry | None:
        found = self._entries("id=?", (entry_id,))
        return found[0] if found else None

    def pending_count(self) -> int:
        return int(self.query("SELECT count(*) FROM outbox WHERE status IN ('pending','sending')")[0][0])

    # ------------------------------------------------------------------ finishing

    def unfinished(self, account: str, folder: str) -> list[sqlite3.Row]:
        """Mails of this mailbox whose processing is not yet marked on the server."""
        return self.query(
            "SELECT key, uidvalidity, uid, outcome FROM messages"
            " WHERE account=? AND folder=? AND marked=0 ORDER BY uid",
            (account, folder),
        )

    def settle(self, now: datetime) -> None:
        """Planned mails whose every send is final become done."""
        with self._tx() as db:
            db.execute(
                "UPDATE messages SET outcome=coalesce(final_outcome, 'done'), finished_at=?"
                " WHERE outcome='planned' AND NOT EXISTS"
                " (SELECT 1 FROM outbox o WHERE o.msg_key=messages.key"
                " AND o.status NOT IN ('sent','failed','uncertain'))",
                (_iso(now),),
            )

    def marked(self, keys: Sequence[str]) -> None:
        with self._tx() as db:
            db.executemany("UPDATE messages SET marked=1 WHERE key=?", [(k,) for k in keys])

    # ------------------------------------------------------------------ reports and housekeeping

    def counts(self) -> dict[str, int]:
        rows = self.query("SELECT outcome, count(*) AS n FROM messages GROUP BY outcome")
        out = {r["outcome"]: int(r["n"]) for r in rows}
        out["outbox_pending"] = self.pending_count()
        return out

    def prune(self, now: datetime, keep_days: int) -> int:
        """Forget finished mail (and its sent outbox entries) older than keep_days."""
        cutoff = _iso(now - timedelta(days=keep_days))
        with self._tx() as db:
            db.execute("DELETE FROM contacts WHERE at<?", (cutoff,))
            db.execute("DELETE FROM replies WHERE at<?", (cutoff,))
            db.execute("DELETE FROM bounces WHERE at<?", (cutoff,))
            old = "SELECT key FROM messages WHERE marked=1 AND outcome!='planned' AND received_at<?"
            db.execute(f"DELETE FROM outbox WHERE msg_key IN ({old})", (cutoff,))
            cur = db.execute("DELETE FROM messages WHERE marked=1 AND outcome!='planned' AND received_at<?", (cutoff,))
            return int(cur.rowcount)
