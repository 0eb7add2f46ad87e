"""A real PostgreSQL server on 127.0.0.1 with a throwaway data directory, for the store tests and benchmarks.

Usage::

    with Postgres(make_base()) as server:      # remove the base directory afterwards
        url = server.create_database("t1")      # postgresql://emailrouter@127.0.0.1:PORT/t1
        store = PostgresStore(url, password=server.password)

Everything the instance writes lives under `base`: the cluster (`data/`, made by initdb), the Unix socket
(`run/`) and the server's log (`postgres.log`). Nothing is written to /etc, /var or /run, and the packaged
service is never used. TCP connections need the password (scram-sha-256), as a production server would.

PostgreSQL refuses to run as root, so when started as root (as the tests and CI are) initdb and the server
run as the unprivileged `postgres` user (else `nobody`), which owns `base`. The binaries are taken from PATH,
else from Debian's /usr/lib/postgresql/<version>/bin. The server runs in its own process group with
settings for tests (no fsync); stop() asks for a fast shutdown and waits for it.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

HOST = "127.0.0.1"
USER = "emailrouter"  # the cluster's superuser
PASSWORD = "pg-secret"
RUN_AS = ("postgres", "nobody")  # the unprivileged users the server may run as when we are root
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
SETTINGS = {  # a server for tests: fast and small, not durable across a power cut
    "fsync": "off",
    "full_page_writes": "off",
    "shared_buffers": "32MB",
    "max_connections": "50",
    "listen_addresses": HOST,
}


class PostgresError(RuntimeError):
    """The PostgreSQL test server could not be set up, started or stopped."""


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), key=lambda p: int(p.parts[-3]), reverse=True)
    return str(versions[0]) if versions else None


def _run_as() -> pwd.struct_passwd | None:
    """The unprivileged user the server runs as when we are root; None when we are not root."""
    if os.geteuid() != 0:
        return None
    for name in RUN_AS:
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise PostgresError(f"running as root and none of the users {', '.join(RUN_AS)} exists to run PostgreSQL as")


def postgres_available() -> str | None:
    """None when a PostgreSQL server can be started here, else why the PostgreSQL tests cannot run."""
    missing = [name for name in ("initdb", "postgres") if _binary(name) is None]
    if missing:
        return (
            f"PostgreSQL is not installed ({', '.join(missing)} not found on PATH or in /usr/lib/postgresql/*/bin;"
            " run .ci/setup as root, or apt-get install postgresql)"
        )
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install -e '.[postgres]')"
    try:
        _run_as()
    except PostgresError as exc:
        return str(exc)
    return None


def make_base(prefix: str = "emailrouter-pg-") -> Path:
    """A fresh directory under the system temp dir for one server; the caller removes it."""
    base = Path(tempfile.mkdtemp(prefix=prefix))
    base.chmod(0o755)
    return base


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class Postgres:
    """One throwaway PostgreSQL cluster serving 127.0.0.1:`port`, superuser `emailrouter` with a password."""

    host = HOST
    user = USER
    password = PASSWORD

    def __init__(self, base: Path) -> None:
        self.base = Path(base).resolve()
        self.data = self.base / "data"
        self.run_dir = self.base / "run"
        self.log_path = self.base / "postgres.log"
        self.port = 0  # chosen when first started, then kept
        self._proc: subprocess.Popen[bytes] | None = None
        self._owner = _run_as()
        self.last_start_seconds = 0.0

    # -- lifecycle -----------------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _as_owner(self) -> dict[str, Any]:
        if self._owner is None:
            return {}
        return {"user": self._owner.pw_uid, "group": self._owner.pw_gid, "extra_groups": []}

    def _chown(self, path: Path) -> None:
        if self._owner is not None:
            os.chown(path, self._owner.pw_uid, self._owner.pw_gid)

    def _initdb(self) -> None:
        initdb = _binary("initdb")
        if initdb is None:
            raise PostgresError(postgres_available() or "initdb not found")
        self._chown(self.base)
        for directory in (self.data, self.run_dir):
            directory.mkdir(mode=0o700, exist_ok=True)
            self._chown(directory)
        pwfile = self.base / "pwfile"
        pwfile.write_text(self.password + "\n")
        self._chown(pwfile)
        done = subprocess.run(
            [initdb, "-D", str(self.data), "-U", self.user, f"--pwfile={pwfile}", "--auth-local=trust",
             "--auth-host=scram-sha-256", "--no-sync", "--encoding=UTF8", "--locale=C"],
            capture_output=True, cwd=self.base, check=False, **self._as_owner(),
        )  # fmt: skip
        pwfile.unlink()
        if done.returncode != 0:
            raise PostgresError(f"initdb failed ({done.returncode}): {done.stderr.decode(errors='replace')[-2000:]}")

    def start(self) -> None:
        """initdb on the first start, then start the server and wait until it takes connections."""
        if self.running:
            raise PostgresError("PostgreSQL is already running")
        began = time.monotonic()
        if not (self.data / "PG_VERSION").exists():
            self._initdb()
        binary = _binary("postgres")
        assert binary is not None  # _initdb checked the installation
        if not self.port:
            self.port = _free_port()
        settings = [arg for key, value in SETTINGS.items() for arg in ("-c", f"{key}={value}")]
        log = self.log_path.open("ab")
        try:
            self._proc = subprocess.Popen(
                [binary, "-D", str(self.data), "-p", str(self.port), "-k", str(self.run_dir), *settings],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=self.base,
                start_new_session=True, **self._as_owner(),
            )  # fmt: skip
        finally:
            log.close()
        try:
            self._wait_ready(began + START_TIMEOUT)
        except BaseException:
            self.stop()
            raise
        self.last_start_seconds = time.monotonic() - began

    def _wait_ready(self, deadline: float) -> None:
        import psycopg

        while True:
            if self._proc is not None and self._proc.poll() is not None:
                raise PostgresError(f"postgres exited with {self._proc.returncode}:\n{self._log_tail()}")
            try:
                psycopg.connect(self.url("postgres"), password=self.password, connect_timeout=2).close()
                return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise PostgresError(f"postgres did not take connections: {exc}\n{self._log_tail()}") from None
            time.sleep(0.05)

    def _log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """Fast shutdown (SIGINT: sessions are ended) and wait; SIGKILL the group if it takes too long."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGINT)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(STOP_TIMEOUT)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- databases -----------------------------------------------------------------------------------------

    def url(self, dbname: str) -> str:
        """The URL of a database on this server, without the password (as the config names it)."""
        return f"postgresql://{self.user}@{self.host}:{self.port}/{dbname}"

    def execute(self, sql: str, dbname: str = "postgres") -> list[tuple[Any, ...]]:
        """Run one statement as the superuser (autocommit) and return its rows."""
        import psycopg

        with psycopg.connect(self.url(dbname), password=self.password, autocommit=True) as db:
            cur = db.execute(sql.encode())
            return cur.fetchall() if cur.description else []

    def create_database(self, name: str) -> str:
        """A new, empty database; its URL."""
        self.execute(f'CREATE DATABASE "{name}" TEMPLATE template0 STRATEGY file_copy')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop a database, ending the sessions still connected to it."""
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def terminate_sessions(self, dbname: str) -> int:
        """End every other session on a database (a lost connection, as the clients see it) and wait until
        their server processes are gone (and their locks with them); how many."""
        rows = self.execute(
            f"SELECT pg_terminate_backend(pid, {int(STOP_TIMEOUT * 1000)}) FROM pg_stat_activity"
            f" WHERE datname = '{dbname}' AND pid <> pg_backend_pid()"
        )
        return len(rows)
