"""The state store on PostgreSQL (psycopg 3): the `StateStore` contract of store.py, shared by several instances.

Chosen with `state: {url: "postgresql://host/db"}`; the password comes from `state.password` (env, file,
systemd credential or command, as for IMAP and SMTP) or libpq's own sources (~/.pgpass, $PGPASSWORD), never
from the YAML. The SQLite store stays the default; both pass tests/test_store_contract.py.

What differs from SQLite, and why:
- Durability: the connection commits with `synchronous_commit=off` (a commit survives a crash of our
  process, maybe not of the database server: SQLite's `synchronous=NORMAL`); plans and claims of customer
  replies are committed with `synchronous_commit=on` (SQLite's `FULL`). A write of one statement runs on
  its own (autocommit: atomic by itself, one round trip, not three); plans and other writes of several
  statements run in a transaction, each table's rows of a batch in one `executemany` (pipelined).
- Claims are owned and leased. Every store holds a session advisory lock on its own instance id (from a
  sequence); a claim records that id and a lease (`LEASE`, on the database's clock). `interrupted()` takes
  over the claims of an instance whose session is gone (killed: at once) or whose lease has expired (a host
  that vanished, a hung instance), and returns them, now ours. Writes on a claimed entry (`release`,
  `mark_*`) are fenced: once another instance took the claim over, the first one's writes change nothing.
- Bodies live in the `body` column of the outbox row (TOAST keeps them apart: a status change does not
  copy them), uncompressed (`STORAGE EXTERNAL`: a body is written once and read once, and pglz cost more
  than all the mail's other statements), read back in binary form; `head` keeps the header block that a
  sent message keeps for the audit.
- Text cannot hold NUL in PostgreSQL: a NUL in any string written or looked up becomes U+FFFD (the same
  both ways, so a Message-ID with a NUL still finds its duplicates).

The schema is versioned in `schema_version` (one row) with ordered migrations, each in one transaction
under a transaction advisory lock, so that instances starting together migrate once; a database of a newer
version than this code knows is refused (`StateError`), never written.

Over 400 lines: the same contract as store.py's SQLite implementation, query for query; split it and the
two halves of one backend would change apart.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, Literal, cast

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row

from emailrouter.core.classify import Contact
from emailrouter.core.errors import StateError
from emailrouter.service.store import (
    OUTCOMES,
    Checkpoint,
    DecisionColumns,
    Figures,
    MessageKey,
    MessageRecord,
    OutboxEntry,
    Outcome,
    Plan,
    PlannedSend,
    SendRecord,
    StateStore,
)

Row = dict[str, Any]
Cursor = psycopg.Cursor[Row]

LEASE: Final = timedelta(minutes=15)  # how long a claim is held before another instance may take it over
INSTANCE_LOCKS: Final = 0x4552_0001  # advisory lock class: (class, instance id) held by each open store
MAILBOX_LOCKS: Final = 0x4552_0002  # (class, lock_keys.id): the instance polling that mailbox
MIGRATION_LOCK: Final = (0x4552_0003, 0)
CONNECT_TIMEOUT: Final = 10  # seconds
# Settings of every session: UTC times; async commit unless a write asks for durability; keepalives, so the
# server notices a vanished client (and frees its locks) within about half a minute.
SESSION: Final = (
    "SET TIME ZONE 'UTC'; SET synchronous_commit TO off; SET tcp_keepalives_idle TO 10;"
    " SET tcp_keepalives_interval TO 5; SET tcp_keepalives_count TO 3"
)

_V1_FIRST_RELEASE: Final = (
    """CREATE TABLE messages (
    seq           bigint GENERATED ALWAYS AS IDENTITY UNIQUE,  -- the order of intake
    key           text PRIMARY KEY,                            -- account|folder|uidvalidity|uid
    account       text NOT NULL,
    folder        text NOT NULL,
    uidvalidity   bigint NOT NULL,
    uid           bigint NOT NULL,
    dedupe_id     text NOT NULL,           -- Message-ID, or a hash of the bytes
    outcome       text NOT NULL,           -- planned | done | duplicate | automated | quarantined | a record tag
    final_outcome text,                    -- what `planned` becomes once every send is final
    content_hash  text,
    rule          text,
    decision      text,                    -- JSON trace, as written
    error         text,
    received_at   timestamptz NOT NULL,
    finished_at   timestamptz,
    marked        boolean NOT NULL DEFAULT false,
    segment       text,
    intent        text,
    hard          boolean,
    suppressed    text[],                  -- suppression_key of each suppressed action, NULL when none
    not_rendered  integer NOT NULL DEFAULT 0
)""",
    "CREATE INDEX messages_dedupe ON messages (dedupe_id)",
    "CREATE INDEX messages_open ON messages (account, folder, marked, uid)",
    "CREATE INDEX messages_received ON messages (received_at)",
    "CREATE INDEX messages_quarantined ON messages (received_at) WHERE outcome = 'quarantined'",
    """CREATE TABLE outbox (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    msg_key      text NOT NULL REFERENCES messages(key),
    idx          integer NOT NULL,
    kind         text NOT NULL,            -- forward | reply | escalate | ticket | failure | quarantine
    unit         text,
    mail_from    text NOT NULL,
    recipients   text[] NOT NULL,
    message_id   text NOT NULL UNIQUE,
    head         bytea NOT NULL,           -- the header block, up to and including the blank line
    body         bytea,                    -- the whole message until it is sent
    status       text NOT NULL,            -- pending | sending | sent | failed | uncertain
    attempts     integer NOT NULL DEFAULT 0,
    next_attempt timestamptz NOT NULL,
    created_at   timestamptz NOT NULL,
    sent_at      timestamptz,
    last_error   text,
    claimed_by   integer,                  -- the instance that holds (or last held) the claim
    lease_until  timestamptz               -- when another instance may take the claim over
)""",
    "CREATE INDEX outbox_due ON outbox (next_attempt, id) WHERE status = 'pending'",
    "CREATE INDEX outbox_sending ON outbox (id) WHERE status = 'sending'",
    "CREATE INDEX outbox_msg ON outbox (msg_key, idx)",
    "CREATE INDEX outbox_kind ON outbox (kind, created_at)",
    "CREATE INDEX outbox_reply_ids ON outbox (lower(message_id)) WHERE kind = 'reply'",
    """CREATE TABLE checkpoints (
    account      text NOT NULL,
    folder       text NOT NULL,
    uidvalidity  bigint NOT NULL,
    last_uid     bigint NOT NULL,
    PRIMARY KEY (account, folder)
)""",
    "CREATE TABLE contacts (sender text NOT NULL, at timestamptz NOT NULL, intent text NOT NULL,"
    " msg_key text NOT NULL)",
    "CREATE INDEX contacts_sender ON contacts (sender, at)",
    "CREATE INDEX contacts_msg ON contacts (msg_key)",
    "CREATE INDEX contacts_at ON contacts (at)",
    "CREATE TABLE replies (address text NOT NULL, template text NOT NULL, at timestamptz NOT NULL)",
    "CREATE INDEX replies_address ON replies (address, at)",
    "CREATE INDEX replies_at ON replies (at)",
    "CREATE TABLE bounces (address text PRIMARY KEY, at timestamptz NOT NULL)",
    "CREATE SEQUENCE instance_ids AS integer CYCLE",
    # the advisory lock of a mailbox is (MAILBOX_LOCKS, id): one id per name, never two names on one lock
    "CREATE TABLE lock_keys (name text PRIMARY KEY, id integer GENERATED ALWAYS AS IDENTITY UNIQUE)",
)


def _v1_first_release(cur: Cursor) -> None:
    for statement in _V1_FIRST_RELEASE:
        cur.execute(statement)


def _v2_webhook_answers(cur: Cursor) -> None:
    # What a webhook's endpoint answered that we keep: its own ticket number (quoted to the customer).
    cur.execute("ALTER TABLE outbox ADD COLUMN IF NOT EXISTS answer text")


def _v3_bodies_stored_as_they_are(cur: Cursor) -> None:
    # An outbox body lives from its plan to its send: compressing it (TOAST's default, pglz) cost the server more
    # than the rest of the mail's statements together, and reading it back uncompressing it again. Out of line as
    # it is (EXTERNAL); rows written before keep their form. A column's storage is its catalog entry: instant.
    cur.execute("ALTER TABLE outbox ALTER COLUMN body SET STORAGE EXTERNAL")


MIGRATIONS: Final[tuple[Callable[[Cursor], None], ...]] = (
    _v1_first_release,
    _v2_webhook_answers,
    _v3_bodies_stored_as_they_are,
)
SCHEMA_VERSION: Final = len(MIGRATIONS)

_MESSAGE: Final = (
    "account, folder, uidvalidity, uid, dedupe_id, outcome, rule, segment, intent, hard, error, content_hash,"
    " received_at, finished_at, marked"
)
_SEND: Final = (
    "id, msg_key, kind, unit, recipients, message_id, status, attempts, created_at, sent_at, last_error, answer"
)
_ENTRY: Final = f"{_SEND}, mail_from, coalesce(body, head) AS raw"
_WINDOW: Final = "m.received_at >= %s AND m.received_at < %s"
_HOLDS: Final = (  # whether this session holds the mailbox lock {key}
    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid = pg_backend_pid()"
    f" AND objsubid = 2 AND classid::text::bigint = {MAILBOX_LOCKS} AND objid::text::bigint = {{key}}) AS held"
)
_FENCE: Final = "(claimed_by IS NULL OR claimed_by = %s)"  # no other instance has taken the claim over
# the claimant of a `sending` entry o is gone: its session no longer holds its instance lock
_OWNER_GONE: Final = (
    "NOT EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2"
    f" AND l.classid::text::bigint = {INSTANCE_LOCKS} AND l.objid::text::bigint = o.claimed_by"
    " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()))"
)


def _clean(value: Any) -> Any:
    """A parameter as PostgreSQL can store it: text never holds NUL."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def describe(url: str) -> str:
    """The database a URL names, for messages: host, port and name, never a password."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "postgresql://(unreadable URL)"
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"postgresql://{parts.get('host', '')}{port}/{parts.get('dbname', '')}"


def _message(r: Row) -> MessageRecord:
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
        hard=r["hard"],
        error=r["error"],
        content_hash=r["content_hash"],
        received_at=r["received_at"],
        finished_at=r["finished_at"],
        marked=bool(r["marked"]),
    )


def _send_record(r: Row) -> SendRecord:
    return SendRecord(
        id=int(r["id"]),
        msg_key=r["msg_key"],
        kind=r["kind"],
        unit=r["unit"],
        recipients=tuple(r["recipients"]),
        message_id=r["message_id"],
        status=r["status"],
        attempts=int(r["attempts"]),
        created_at=r["created_at"],
        sent_at=r["sent_at"],
        last_error=r["last_error"],
        answer=r["answer"],
    )


def _entry(r: Row) -> OutboxEntry:
    return OutboxEntry(
        kind=r["kind"],
        unit=r["unit"],
        mail_from=r["mail_from"],
        recipients=tuple(r["recipients"]),
        message_id=r["message_id"],
        raw=bytes(r["raw"]),
        id=int(r["id"]),
        msg_key=r["msg_key"],
        status=r["status"],
        attempts=int(r["attempts"]),
        created_at=r["created_at"],
    )


def _head(raw: bytes) -> bytes:
    end = raw.find(b"\r\n\r\n")
    return raw[: end + 4] if end >= 0 else raw


class PostgresStore:
    """One PostgreSQL database, shared by any number of instances; one connection per store, reopened when
    it is lost (the next call after a loss raises `StateError`, the one after that reconnects)."""

    shared = True

    def __init__(self, url: str, password: str | None = None, lease: timedelta = LEASE) -> None:
        self.url = url
        self.path = describe(url)  # what messages name, like SqliteStore.path
        self.lease = lease
        self._password = password
        self._lock = threading.RLock()
        self._db: psycopg.Connection[Row] | None = None
        self.instance = 0
        self._mailboxes: dict[str, int] = {}  # mailbox -> its lock key, for the locks taken on this connection
        with self._lock:
            self._connect()

    # ------------------------------------------------------------------ connection, schema

    def _connect(self) -> psycopg.Connection[Row]:
        extra: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT}
        if self._password is not None:  # else libpq's own sources: ~/.pgpass, $PGPASSWORD
            extra["password"] = self._password
        try:
            db = psycopg.connect(self.url, autocommit=True, row_factory=dict_row, **extra)
        except psycopg.Error as exc:
            raise StateError(f"state store {self.path}: cannot connect: {_reason(exc)}") from None
        try:
            db.execute(SESSION)
            self._migrate(db)
            # the same identity after a reconnect when its lock is free (the old session is gone); else a new
            # one: the old session may still hold the lock, and its claims are then taken over in time
            while not (
                self.instance
                and _one(db, f"SELECT pg_try_advisory_lock({INSTANCE_LOCKS}, {self.instance}) AS got")["got"]
            ):
                self.instance = int(_one(db, "SELECT nextval('instance_ids') AS n")["n"])
        except psycopg.Error as exc:
            db.close()
            raise StateError(f"state store {self.path}: cannot open: {_reason(exc)}") from None
        except StateError:
            db.close()
            raise
        self._db = db
        self._mailboxes = {}
        return db

    def _version(self, db: psycopg.Connection[Row]) -> int:
        if _one(db, "SELECT to_regclass('schema_version') IS NOT NULL AS there")["there"] is not True:
            return 0
        row = db.execute("SELECT version FROM schema_version").fetchone()
        version = 0 if row is None else int(row["version"])
        if version > SCHEMA_VERSION:
            raise StateError(
                f"state store {self.path}: schema version {version} was written by a newer emailrouter (this one"
                f" knows versions up to {SCHEMA_VERSION}): run that version, or restore a database of this one"
            )
        return version

    def _migrate(self, db: psycopg.Connection[Row]) -> None:
        """Bring the database to SCHEMA_VERSION, one transaction per migration, one instance at a time."""
        if self._version(db) == SCHEMA_VERSION:
            return
        for target, migration in enumerate(MIGRATIONS, start=1):
            try:
                with db.transaction(), db.cursor() as cur:
                    cur.execute("SELECT pg_advisory_xact_lock(%s, %s)", MIGRATION_LOCK)
                    cur.execute("CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)")
                    if self._version(db) >= target:  # another instance migrated it meanwhile
                        continue
                    migration(cur)
                    cur.execute("DELETE FROM schema_version")
                    cur.execute("INSERT INTO schema_version VALUES (%s)", (target,))
            except psycopg.Error as exc:  # rolled back: the database stays at the version before
                raise StateError(
                    f"state store {self.path}: cannot migrate to schema version {target}: {_reason(exc)}"
                ) from None

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                # the locks go with the session, but only once its server process has ended, a moment after
                # close() returns: released here first, another instance can take them as soon as this returns
                with contextlib.suppress(psycopg.Error):
                    if not (self._db.closed or self._db.broken):
                        self._db.execute("SELECT pg_advisory_unlock_all()")
                self._db.close()
                self._db = None

    def _session(self) -> psycopg.Connection[Row]:
        if self._db is None or self._db.closed or self._db.broken:
            if self._db is not None:
                self._db.close()
            return self._connect()
        return self._db

    @contextmanager
    def _tx(self, durable: bool = False) -> Iterator[Cursor]:
        """A write transaction; `durable`: on the server's disk before the commit returns."""
        with self._lock:
            try:
                db = self._session()
                with db.transaction(), db.cursor() as cur:
                    if durable:
                        cur.execute("SET LOCAL synchronous_commit TO on")
                    yield cur
            except psycopg.Error as exc:  # connection lost, disk full, read-only, a constraint
                raise StateError(f"state store {self.path}: cannot write: {_reason(exc)}") from None

    def _rows(self, sql: str, args: Sequence[Any] = (), what: str = "read", binary: bool = False) -> list[Row]:
        """`binary`: the results in binary form (a message's bytes as they are, not as hex text twice as long)."""
        with self._lock:
            try:
                return self._session().execute(sql, _clean(list(args)), binary=binary).fetchall()
            except psycopg.Error as exc:
                raise StateError(f"state store {self.path}: cannot {what}: {_reason(exc)}") from None

    def _count(self, sql: str, args: Sequence[Any] = ()) -> int:
        return int(next(iter(self._rows(sql, args)[0].values())) or 0)

    def _write(self, sql: str, args: Sequence[Any] = ()) -> int:
        """One statement on its own (autocommit: atomic by itself, one round trip); the rows it changed."""
        with self._lock:
            try:
                return self._session().execute(sql, _clean(list(args))).rowcount
            except psycopg.Error as exc:
                raise StateError(f"state store {self.path}: cannot write: {_reason(exc)}") from None

    @staticmethod
    def _run(cur: Cursor, sql: str, args: Sequence[Any] = ()) -> int:
        cur.execute(sql, _clean(list(args)))
        return cur.rowcount

    @staticmethod
    def _many(cur: Cursor, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            cur.executemany(sql, [_clean(list(r)) for r in rows])

    # ------------------------------------------------------------------ instances

    def hold_mailbox(self, account: str, folder: str) -> bool:
        """Checked on the server every time (one round trip): a connection lost since the lock was taken took
        the lock with it, and another instance may hold it by now. A lost connection is opened again once and
        the lock taken again if it is free; `StateError` if the database cannot be reached."""
        name = f"{account}|{folder}"
        with self._lock:
            try:
                return self._take_mailbox(self._session(), name)
            except psycopg.OperationalError as exc:
                if self._db is None or not self._db.broken:
                    raise StateError(f"state store {self.path}: cannot lock mailbox: {_reason(exc)}") from None
            except psycopg.Error as exc:
                raise StateError(f"state store {self.path}: cannot lock mailbox: {_reason(exc)}") from None
            try:  # the connection was lost: once more on a new one (_session reconnects)
                return self._take_mailbox(self._session(), name)
            except psycopg.Error as exc:
                raise StateError(f"state store {self.path}: cannot lock mailbox: {_reason(exc)}") from None

    def _take_mailbox(self, db: psycopg.Connection[Row], name: str) -> bool:
        if name in self._mailboxes:
            if _one(db, _HOLDS.format(key=self._mailboxes[name]))["held"]:
                return True
            del self._mailboxes[name]
        key = self._lock_key(db, name)
        if not _one(db, f"SELECT pg_try_advisory_lock({MAILBOX_LOCKS}, {key}) AS got")["got"]:
            return False
        self._mailboxes[name] = key
        return True

    def release_mailbox(self, account: str, folder: str) -> None:
        with self._lock:
            key = self._mailboxes.pop(f"{account}|{folder}", None)
            if key is None or self._db is None or self._db.closed or self._db.broken:
                return
            try:
                self._db.execute(f"SELECT pg_advisory_unlock({MAILBOX_LOCKS}, {key})")
            except psycopg.Error as exc:  # the connection is gone: so is the lock
                raise StateError(f"state store {self.path}: cannot unlock mailbox: {_reason(exc)}") from None

    @staticmethod
    def _lock_key(db: psycopg.Connection[Row], name: str) -> int:
        """The mailbox's lock key: one per name, made on first use."""
        db.execute("INSERT INTO lock_keys (name) VALUES (%s) ON CONFLICT (name) DO NOTHING", (_clean(name),))
        row = db.execute("SELECT id FROM lock_keys WHERE name=%s", (_clean(name),)).fetchone()
        assert row is not None  # inserted just now, or before
        return int(row["id"])

    # ------------------------------------------------------------------ checkpoints

    def checkpoint(self, account: str, folder: str) -> Checkpoint | None:
        rows = self._rows(
            "SELECT uidvalidity, last_uid FROM checkpoints WHERE account=%s AND folder=%s", (account, folder)
        )
        return Checkpoint(int(rows[0]["uidvalidity"]), int(rows[0]["last_uid"])) if rows else None

    def set_checkpoint(self, account: str, folder: str, uidvalidity: int, last_uid: int) -> None:
        self._write(
            "INSERT INTO checkpoints VALUES (%s,%s,%s,%s) ON CONFLICT (account, folder) DO UPDATE SET"
            " uidvalidity = excluded.uidvalidity, last_uid = excluded.last_uid",
            (account, folder, uidvalidity, last_uid),
        )

    # ------------------------------------------------------------------ intake

    def plan(self, plans: Sequence[Plan]) -> None:
        messages, replies, bounces, sends, contacts, checkpoints = [], [], [], [], [], []
        for p in plans:  # every row first: a plan that cannot be written fails before anything is sent
            key = str(p.key)
            messages.append(
                (
                    key,
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
                    p.now,
                    None if p.sends else p.now,
                    *_decision_values(DecisionColumns.of(p.decision)),
                )
            )
            replies += [(a.lower(), t, p.now) for a, t in p.replies]
            bounces += [(a.lower(), p.now) for a in p.bounced]
            sends += [_send_row(key, n, s, p.now) for n, s in enumerate(p.sends)]
            if p.contact is not None:
                contacts.append((p.contact[0].lower(), p.now, p.contact[1], key))
            checkpoints.append((p.key.account, p.key.folder, p.key.uidvalidity, p.key.uid))
        with self._tx(durable=True) as cur:
            self._many(
                cur,
                "INSERT INTO messages (key, account, folder, uidvalidity, uid, dedupe_id, outcome, final_outcome,"
                " content_hash, rule, decision, error, received_at, finished_at, segment, intent, hard, suppressed,"
                " not_rendered) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"
                " ON CONFLICT (key) DO NOTHING",
                messages,
            )
            self._many(cur, "INSERT INTO replies VALUES (%s,%s,%s)", replies)
            self._many(
                cur, "INSERT INTO bounces VALUES (%s,%s) ON CONFLICT (address) DO UPDATE SET at = excluded.at", bounces
            )
            self._many(cur, _INSERT_SEND, sends)
            self._many(cur, "INSERT INTO contacts VALUES (%s,%s,%s,%s)", contacts)
            self._many(
                cur,
                "INSERT INTO checkpoints AS c VALUES (%s,%s,%s,%s) ON CONFLICT (account, folder) DO UPDATE SET"
                " last_uid = CASE WHEN c.uidvalidity = excluded.uidvalidity"
                " THEN greatest(c.last_uid, excluded.last_uid) ELSE excluded.last_uid END,"
                " uidvalidity = excluded.uidvalidity",
                checkpoints,
            )

    def outcome(self, key: MessageKey) -> MessageRecord | None:
        rows = self._rows(f"SELECT {_MESSAGE} FROM messages WHERE key=%s", (str(key),))
        return _message(rows[0]) if rows else None

    def seen(self, dedupe_id: str) -> list[tuple[str, str | None]]:
        rows = self._rows("SELECT key, content_hash FROM messages WHERE dedupe_id=%s ORDER BY seq", (dedupe_id,))
        return [(str(r["key"]), r["content_hash"]) for r in rows]

    def history(self, sender: str, since: datetime) -> list[Contact]:
        rows = self._rows(
            "SELECT at, intent FROM contacts WHERE sender=%s AND at>=%s ORDER BY at", (sender.lower(), since)
        )
        return [Contact(r["at"], r["intent"]) for r in rows]

    def replies_to(self, addresses: Sequence[str], since: datetime) -> list[tuple[str, str, datetime]]:
        if not addresses:
            return []
        rows = self._rows(
            "SELECT address, template, at FROM replies WHERE address = ANY(%s) AND at>=%s",
            ([a.lower() for a in addresses], since),
        )
        return [(r["address"], r["template"], r["at"]) for r in rows]

    def bounces(self, addresses: Sequence[str]) -> dict[str, datetime]:
        if not addresses:
            return {}
        rows = self._rows("SELECT address, at FROM bounces WHERE address = ANY(%s)", ([a.lower() for a in addresses],))
        return {r["address"]: r["at"] for r in rows}

    def replied_to(self, message_ids: Sequence[str], address: str) -> bool:
        if not message_ids:
            return False
        rows = self._rows(
            "SELECT recipients FROM outbox WHERE kind='reply' AND status IN ('sent','uncertain','sending')"
            " AND lower(message_id) = ANY(%s)",
            ([m.lower() for m in message_ids],),
        )
        wanted = address.lower()
        return any(wanted in (r.lower() for r in row["recipients"]) for row in rows)

    def count_sends(self, kind: str, since: datetime) -> int:
        return self._count("SELECT count(*) FROM outbox WHERE kind=%s AND created_at>=%s", (kind, since))

    def forget(self, key: MessageKey) -> None:
        with self._tx() as cur:
            self._run(cur, "DELETE FROM outbox WHERE msg_key=%s", (str(key),))
            self._run(cur, "DELETE FROM contacts WHERE msg_key=%s", (str(key),))
            self._run(cur, "DELETE FROM messages WHERE key=%s", (str(key),))

    # ------------------------------------------------------------------ outbox

    def due_ids(self, now: datetime, limit: int = 500) -> list[int]:
        rows = self._rows(
            "SELECT id FROM outbox WHERE status='pending' AND next_attempt<=%s ORDER BY id LIMIT %s", (now, limit)
        )
        return [int(r["id"]) for r in rows]

    def entry(self, entry_id: int) -> OutboxEntry | None:
        rows = self._rows(f"SELECT {_ENTRY} FROM outbox WHERE id=%s", (entry_id,), binary=True)
        return _entry(rows[0]) if rows else None

    def interrupted(self) -> list[OutboxEntry]:
        """Claims of instances whose session is gone or whose lease has expired, taken over (now ours)."""
        rows = self._rows(  # one statement: atomic by itself
            f"UPDATE outbox SET claimed_by=%s, lease_until=now() + %s WHERE id IN (SELECT o.id FROM outbox o"
            f" WHERE o.status='sending' AND (o.claimed_by IS NULL OR o.lease_until < now() OR {_OWNER_GONE})"
            f" FOR UPDATE SKIP LOCKED) RETURNING {_ENTRY}",
            (self.instance, self.lease),
            what="write",
            binary=True,
        )
        return sorted((_entry(r) for r in rows), key=lambda e: e.id)

    def claim(self, entry_id: int, durable: bool) -> bool:
        sql = (
            "UPDATE outbox SET status='sending', attempts=attempts+1, claimed_by=%s, lease_until=now() + %s"
            " WHERE id = (SELECT id FROM outbox WHERE id=%s AND status='pending' FOR UPDATE SKIP LOCKED)"
        )
        args = (self.instance, self.lease, entry_id)
        if not durable:
            return self._write(sql, args) == 1
        with self._tx(durable=True) as cur:
            return self._run(cur, sql, args) == 1

    def release(self, entry_id: int, error: str | None = None) -> None:
        self._write(
            "UPDATE outbox SET status='pending', attempts=greatest(attempts-1, 0),"
            " last_error=coalesce(%s, last_error), claimed_by=NULL, lease_until=NULL"
            f" WHERE id=%s AND status='sending' AND {_FENCE}",
            (error, entry_id, self.instance),
        )

    def mark_sent(self, entry_ids: Sequence[int], now: datetime, answer: str | None = None) -> None:
        self._write(
            "UPDATE outbox SET status='sent', sent_at=%s, last_error=NULL, body=NULL, lease_until=NULL,"
            f" answer=coalesce(%s, answer) WHERE id = ANY(%s) AND {_FENCE}",
            (now, answer, list(entry_ids), self.instance),
        )

    def mark_retry(self, entry_id: int, error: str, next_attempt: datetime) -> None:
        self._write(
            "UPDATE outbox SET status='pending', last_error=%s, next_attempt=%s, claimed_by=NULL,"
            f" lease_until=NULL WHERE id=%s AND {_FENCE}",
            (error, next_attempt, entry_id, self.instance),
        )

    def mark_failed(self, entry_id: int, error: str, status: Literal["failed", "uncertain"] = "failed") -> None:
        self._write(
            f"UPDATE outbox SET status=%s, last_error=%s, lease_until=NULL WHERE id=%s AND {_FENCE}",
            (status, error, entry_id, self.instance),
        )

    def add_send(self, msg_key: str, send: PlannedSend, now: datetime) -> None:
        with self._tx() as cur:
            cur.execute("SELECT coalesce(max(idx), -1) + 1 AS idx FROM outbox WHERE msg_key=%s", (msg_key,))
            row = cur.fetchone()
            self._run(cur, _INSERT_SEND, _send_row(msg_key, int(row["idx"]) if row else 0, send, now))
            self._run(cur, "UPDATE messages SET outcome='planned' WHERE key=%s AND outcome<>'planned'", (msg_key,))

    def pending_count(self) -> int:
        return self._count("SELECT count(*) FROM outbox WHERE status IN ('pending','sending')")

    # ------------------------------------------------------------------ finishing

    def settle(self, now: datetime) -> None:
        self._write(
            "UPDATE messages m SET outcome=coalesce(final_outcome, 'done'), finished_at=%s"
            " WHERE outcome='planned' AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.msg_key=m.key"
            " AND o.status NOT IN ('sent','failed','uncertain'))",
            (now,),
        )

    def unfinished(self, account: str, folder: str) -> list[MessageRecord]:
        rows = self._rows(
            f"SELECT {_MESSAGE} FROM messages WHERE account=%s AND folder=%s AND NOT marked ORDER BY uid",
            (account, folder),
        )
        return [_message(r) for r in rows]

    def marked(self, keys: Sequence[str]) -> None:
        self._write("UPDATE messages SET marked=true WHERE key = ANY(%s)", (list(keys),))

    # ------------------------------------------------------------------ audit, reports, housekeeping

    def quarantined(self) -> list[MessageRecord]:
        rows = self._rows(f"SELECT {_MESSAGE} FROM messages WHERE outcome='quarantined' ORDER BY received_at, seq")
        return [_message(r) for r in rows]

    def find(self, ident: str) -> list[MessageRecord]:
        rows = self._rows(
            f"SELECT {_MESSAGE} FROM messages WHERE dedupe_id=%s OR key=%s ORDER BY received_at, seq", (ident, ident)
        )
        return [_message(r) for r in rows]

    def decision(self, key: MessageKey) -> dict[str, Any] | None:
        rows = self._rows("SELECT decision FROM messages WHERE key=%s", (str(key),))
        if not rows or rows[0]["decision"] is None:
            return None
        trace = json.loads(rows[0]["decision"])
        return trace if isinstance(trace, dict) else None

    def sends(self, msg_key: str) -> list[SendRecord]:
        rows = self._rows(f"SELECT {_SEND} FROM outbox WHERE msg_key=%s ORDER BY idx", (msg_key,))
        return [_send_record(r) for r in rows]

    def figures(self, since: datetime, until: datetime) -> Figures:
        window = (since, until)
        total = self._rows(
            f"SELECT count(*) AS n, sum(hard::int) AS hard, sum(not_rendered) AS nr FROM messages m WHERE {_WINDOW}",
            window,
        )[0]

        def per(column: str) -> dict[str, int]:
            rows = self._rows(
                f"SELECT {column} AS name, count(*) AS n FROM messages m WHERE {_WINDOW} AND {column} IS NOT NULL"
                f" AND {column}<>'' GROUP BY {column}",
                window,
            )
            return {r["name"]: int(r["n"]) for r in rows}

        suppressed = self._rows(
            f"SELECT s AS name, count(*) AS n FROM messages m, unnest(m.suppressed) s WHERE {_WINDOW} GROUP BY s",
            window,
        )
        joined = f"FROM messages m JOIN outbox o ON o.msg_key=m.key WHERE {_WINDOW}"
        actions = self._rows(f"SELECT o.kind, o.unit, o.status, count(*) AS n {joined} GROUP BY 1, 2, 3", window)
        failures = self._rows(
            f"SELECT {', '.join('o.' + c for c in _SEND.split(', '))} {joined}"
            " AND o.status IN ('failed','uncertain') ORDER BY o.id",
            window,
        )
        median, p95 = self._sent_delays(joined, window)
        return Figures(
            messages=int(total["n"]),
            hard_complaints=int(total["hard"] or 0),
            replies_not_rendered=int(total["nr"] or 0),
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

    def _sent_delays(self, joined: str, window: tuple[datetime, datetime]) -> tuple[float | None, float | None]:
        """Median and p95 of arrival-to-sent, as SqliteStore computes them: the sends at those ranks in SQL."""
        rows = self._rows(
            "SELECT rank, sent_at, received_at, n FROM (SELECT o.sent_at, m.received_at, count(*) OVER () AS n,"
            " row_number() OVER (ORDER BY o.sent_at - m.received_at, o.id) - 1 AS rank"
            f" {joined} AND o.status='sent' AND o.sent_at IS NOT NULL) d"
            " WHERE rank IN ((n - 1) / 2, n / 2, least(n - 1, floor(0.95 * n)::bigint))",
            window,
        )
        if not rows:
            return None, None
        delay = {int(r["rank"]): r["sent_at"] - r["received_at"] for r in rows}
        n = int(rows[0]["n"])
        median = (delay[(n - 1) // 2] + delay[n // 2]).total_seconds() / 2
        return median, delay[min(n - 1, int(0.95 * n))].total_seconds()

    def counts(self) -> dict[str, int]:
        rows = self._rows("SELECT outcome, count(*) AS n FROM messages GROUP BY outcome")
        out = {r["outcome"]: int(r["n"]) for r in rows}
        out["outbox_pending"] = self.pending_count()
        return out

    def prune(self, now: datetime, keep_days: int) -> int:
        cutoff = now - timedelta(days=keep_days)
        old = (
            "SELECT key FROM messages m WHERE (m.marked OR m.uidvalidity <> (SELECT c.uidvalidity FROM checkpoints c"
            " WHERE c.account = m.account AND c.folder = m.folder)) AND m.outcome<>'planned' AND m.received_at<%s"
        )  # marked, or of an earlier UIDVALIDITY of its folder (never marked): store.py's _PRUNABLE
        with self._tx() as cur:
            self._run(cur, "DELETE FROM contacts WHERE at<%s", (cutoff,))
            self._run(cur, "DELETE FROM replies WHERE at<%s", (cutoff,))
            self._run(cur, "DELETE FROM bounces WHERE at<%s", (cutoff,))
            self._run(cur, f"DELETE FROM outbox WHERE msg_key IN ({old})", (cutoff,))
            return self._run(cur, f"DELETE FROM messages WHERE key IN ({old})", (cutoff,))


_INSERT_SEND: Final = (
    "INSERT INTO outbox (msg_key, idx, kind, unit, mail_from, recipients, message_id, head, body, status,"
    " next_attempt, created_at) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,'pending',%s,%s) ON CONFLICT (message_id) DO NOTHING"
)


def _send_row(key: str, idx: int, send: PlannedSend, now: datetime) -> tuple[Any, ...]:
    return (
        key,
        idx,
        send.kind,
        send.unit,
        send.mail_from,
        list(send.recipients),
        send.message_id,
        _head(send.raw),
        send.raw,
        now,
        now,
    )


def _decision_values(c: DecisionColumns) -> tuple[str | None, str | None, bool | None, list[str] | None, int]:
    return c.segment, c.intent, c.hard, list(c.suppressed) or None, c.not_rendered


def _one(db: psycopg.Connection[Row], sql: str) -> Row:
    row = db.execute(sql).fetchone()
    assert row is not None  # a SELECT of expressions always returns one row
    return row


def _reason(exc: psycopg.Error) -> str:
    """The first line of the server's or libpq's message (never the connection string)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


if TYPE_CHECKING:  # mypy proves that the PostgreSQL store keeps the contract

    def _keeps_the_contract(store: PostgresStore) -> StateStore:
        return store
