"""A real Dovecot IMAP server on 127.0.0.1 with a throwaway configuration, for integration tests and benchmarks.

Usage::

    with Dovecot(make_base()) as server:  # remove the base directory afterwards
        server.append("router", "INBOX", b"Subject: hi\\r\\n\\r\\nbody\\r\\n")
        with server.client() as imap:  # a logged-in imapclient.IMAPClient
            ...

Everything the instance writes lives under `base`: the config (`dovecot.conf`), the password file (`users`),
the runtime sockets (`run/`), the state (`state/`), the logs (`dovecot.log`, `dovecot.stderr`) and the mail
(`mail/<user>/Maildir`, Maildir++ layout, hierarchy separator "/"). Nothing is written to /etc, /var or /run.

Dovecot refuses to access mail as root, so when started as root (as the tests and CI are) mail is owned by and
accessed as the unprivileged `mail` system user; that user must be able to traverse every parent directory of
`base`. pytest's `tmp_path` is not (it lives under a 0700 directory), so use `make_base()`, a directory under
/tmp. Started as any other user, every Dovecot process runs as that user (a "rootless" instance).

The whole instance (master and children) runs in its own process group, which stop() terminates and waits for.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self, cast

from imapclient import IMAPClient
from imapclient.imap_utf7 import encode as utf7_encode

HOST = "127.0.0.1"
DEFAULT_USERS = {"router": "secret", "other": "secret"}
MAIL_USER = "mail"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
MASTER_GRACE = 0.1  # seconds the master gets, once its children have exited, before SIGKILL
# Unix socket paths (sun_path) are limited to 107 bytes; the longest socket Dovecot makes under base_dir is
# about 30 characters long, so base_dir itself must stay shorter than this.
MAX_BASE_DIR = 70


class DovecotError(RuntimeError):
    """The Dovecot test server could not be configured, started or stopped."""


def dovecot_available() -> str | None:
    """None when the `dovecot` binary is installed, else why the integration tests cannot run."""
    if shutil.which("dovecot") is None and not Path("/usr/sbin/dovecot").exists():
        return "dovecot is not installed (run .ci/setup as root, or apt-get install dovecot-imapd)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(MAIL_USER)
        except KeyError:
            return f"there is no {MAIL_USER!r} system user for Dovecot to access mail as"
    return None


def make_base(prefix: str = "emailrouter-dovecot-") -> Path:
    """A fresh directory under the system temp dir that the `mail` user can traverse; the caller removes it."""
    base = Path(tempfile.mkdtemp(prefix=prefix))
    base.chmod(0o755)
    return base


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _check_traversable(path: Path, user: pwd.struct_passwd) -> None:
    """Raise if a process running as `user` cannot reach `path` (execute permission on every ancestor)."""
    uid, gid = user.pw_uid, user.pw_gid
    for directory in [path, *path.parents]:
        mode = directory.stat()
        if mode.st_uid == uid:
            ok = bool(mode.st_mode & stat.S_IXUSR)
        elif mode.st_gid == gid:
            ok = bool(mode.st_mode & stat.S_IXGRP)
        else:
            ok = bool(mode.st_mode & stat.S_IXOTH)
        if not ok:
            raise DovecotError(
                f"the {user.pw_name!r} user cannot traverse {directory} (mode {stat.filemode(mode.st_mode)}), "
                f"so Dovecot cannot reach its mail under {path}; use a base such as make_base() returns"
            )


class Dovecot:
    """One throwaway Dovecot instance serving IMAP (no TLS, plaintext LOGIN) on 127.0.0.1:`port`."""

    host = HOST

    def __init__(self, base: Path, users: dict[str, str] | None = None) -> None:
        self.base = Path(base).resolve()
        self.users = dict(DEFAULT_USERS if users is None else users)
        for name, password in self.users.items():
            if not name or any(c in name + password for c in ":\r\n\t ") or name != name.lower():
                raise DovecotError(f"unusable test user {name!r}: lowercase, no blanks or colons please")
        self.port = 0  # chosen when first started, then kept (restart() comes back on the same port)
        self.config_path = self.base / "dovecot.conf"
        self.log_path = self.base / "dovecot.log"
        self.stderr_path = self.base / "dovecot.stderr"
        self.mail_root = self.base / "mail"
        self.run_dir = self.base / "run"
        self.state_dir = self.base / "state"
        self._proc: subprocess.Popen[bytes] | None = None
        self._mail_user = self._mail_group = MAIL_USER
        self.last_start_seconds = 0.0

    # -- lifecycle -----------------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Write the config, start `dovecot -F` and wait until a LOGIN works (DovecotError after ~10 s)."""
        if self.running:
            raise DovecotError("Dovecot is already running")
        binary = shutil.which("dovecot") or "/usr/sbin/dovecot"
        if not Path(binary).exists():
            raise DovecotError(dovecot_available() or "dovecot is not installed")
        began = time.monotonic()
        pick_port = not self.port
        for attempt in range(3):
            if pick_port:
                self.port = _free_port()
            self._prepare()
            stderr_offset = self.stderr_path.stat().st_size if self.stderr_path.exists() else 0
            stderr = self.stderr_path.open("ab")
            try:
                self._proc = subprocess.Popen(
                    [*_die_with_parent(), binary, "-F", "-c", str(self.config_path)],
                    stdin=subprocess.DEVNULL,
                    stdout=stderr,
                    stderr=stderr,
                    start_new_session=True,  # its own process group, so stop() can reap every child it leaves
                )
            finally:
                stderr.close()
            try:
                self._wait_ready(began + START_TIMEOUT)
            except DovecotError:
                self.stop()
                with self.stderr_path.open("rb") as output:
                    output.seek(stderr_offset)
                    port_taken = b"Address already in use" in output.read()
                # the free port we picked was taken by someone else in the meantime: pick another one
                if pick_port and port_taken and attempt < 2:
                    continue
                raise
            except BaseException:
                self.stop()
                raise
            break
        self.last_start_seconds = time.monotonic() - began

    def stop(self) -> None:
        """Terminate the server and its children and wait for them; a no-op when it is not running."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        # SIGTERM to the whole process group: the master alone takes >1 s and leaves the imap processes of
        # connected clients running for ~10 s ("Server shutting down"). The children exit within milliseconds,
        # but the master may respawn a service (log, anvil) whose death it saw before its own SIGTERM, so
        # children are terminated again until none is left. The master usually exits at once too, but now and
        # then it sleeps a whole second waiting for children that are already dead, so once they are gone it
        # gets MASTER_GRACE before SIGKILL (its work is done by then).
        master = proc.pid
        _signal_group(master, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        last_term = time.monotonic()
        while children := [pid for pid in _group_members(master) if pid != master]:
            if time.monotonic() > deadline:
                break
            if time.monotonic() - last_term > 0.05:
                for pid in children:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGTERM)
                last_term = time.monotonic()
            time.sleep(0.005)
        try:
            proc.wait(MASTER_GRACE)
        except subprocess.TimeoutExpired:
            _signal_group(master, signal.SIGKILL)
            proc.wait(STOP_TIMEOUT)
        # Anything still alive in the group now is an orphan (reparented to PID 1): kill it. Zombies waiting
        # for PID 1 to reap them do not count, they are dead and hold nothing.
        if _group_members(master):
            _signal_group(master, signal.SIGKILL)
            while _group_members(master) and time.monotonic() < deadline:
                time.sleep(0.005)

    def restart(self) -> None:
        """Stop and start again on the same port, with the same users and mail."""
        self.stop()
        self.start()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- IMAP helpers (each opens its own connection and logs out) ------------------------------------------

    def client(self, user: str = "router", timeout: float = 10.0) -> IMAPClient:
        """A new IMAPClient logged in as `user`; the caller logs out (it is also a context manager)."""
        imap = IMAPClient(self.host, port=self.port, ssl=False, timeout=timeout)
        try:
            imap.login(user, self.users[user])
        except BaseException:
            _close(imap)
            raise
        return imap

    def append(self, user: str, folder: str, raw: bytes, flags: Sequence[bytes | str] = ()) -> None:
        """Append `raw` to `folder` (created if missing) with `flags`."""
        with self.client(user) as imap:
            if not imap.folder_exists(folder):
                imap.create_folder(folder)
            imap.append(folder, raw, flags=tuple(flags))

    def uids(self, user: str, folder: str, criteria: Iterable[Any] = ("ALL",)) -> list[int]:
        """The UIDs in `folder` matching the SEARCH `criteria`, ascending."""
        with self.client(user) as imap:
            imap.select_folder(folder, readonly=True)
            return sorted(int(uid) for uid in imap.search(list(criteria)))

    def flags(self, user: str, folder: str) -> dict[int, tuple[bytes, ...]]:
        """The flags (system flags and keywords) of every message in `folder`, by UID."""
        with self.client(user) as imap:
            imap.select_folder(folder, readonly=True)
            uids = imap.search(["ALL"])
            if not uids:
                return {}
            got = cast(dict[int, tuple[bytes, ...]], imap.get_flags(uids))
            return {int(uid): tuple(flags) for uid, flags in got.items()}

    def fetch_all(self, user: str, folder: str) -> dict[int, bytes]:
        """The raw bytes of every message in `folder`, by UID (BODY.PEEK: \\Seen is left alone)."""
        with self.client(user) as imap:
            imap.select_folder(folder, readonly=True)
            uids = imap.search(["ALL"])
            if not uids:
                return {}
            got = cast(dict[int, dict[bytes, Any]], imap.fetch(uids, ["BODY.PEEK[]"]))
            return {int(uid): bytes(data[b"BODY[]"]) for uid, data in got.items()}

    def uidvalidity(self, user: str, folder: str) -> int:
        """The folder's current UIDVALIDITY."""
        with self.client(user) as imap:
            status = cast(dict[bytes, int], imap.folder_status(folder, ["UIDVALIDITY"]))
            return int(status[b"UIDVALIDITY"])

    def reset_uidvalidity(self, user: str, folder: str) -> int:
        """Give `folder` a new UIDVALIDITY (its messages stay, with new UIDs) and return it; restarts the server.

        Dovecot keeps UIDs in the maildir's dovecot-uidlist and its indexes; with the server stopped, those are
        deleted, so the next access rebuilds them from the message files under a fresh UIDVALIDITY. Any open
        client connection is dropped by the restart.
        """
        before = self.uidvalidity(user, folder)
        self.stop()
        folder_dir = self._folder_dir(user, folder)
        if not folder_dir.is_dir():
            raise DovecotError(f"no maildir for {user}/{folder} at {folder_dir}")
        doomed = [folder_dir / "dovecot-uidlist", *folder_dir.glob("dovecot.index*")]
        doomed += self._maildir(user).glob("dovecot.list.index*")  # the mailbox list index caches UIDVALIDITY
        for path in doomed:
            path.unlink(missing_ok=True)
        self.start()
        after = self.uidvalidity(user, folder)
        if after == before:
            raise DovecotError(f"UIDVALIDITY of {user}/{folder} is still {before} after the reset")
        return after

    def delete_all(self, user: str, folder: str) -> None:
        """Delete (and expunge) every message in `folder`; the folder itself stays."""
        with self.client(user) as imap:
            imap.select_folder(folder)
            uids = imap.search(["ALL"])
            if uids:
                imap.delete_messages(uids)
                imap.expunge()

    # -- internals ------------------------------------------------------------------------------------------

    def _maildir(self, user: str) -> Path:
        return self.mail_root / user / "Maildir"

    def _folder_dir(self, user: str, folder: str) -> Path:
        if folder.upper() == "INBOX":
            return self._maildir(user)
        # Maildir++: ".<name>", the "/" hierarchy separator stored as ".", names in modified UTF-7
        encoded = bytes(utf7_encode(folder)).decode("ascii")
        return self._maildir(user) / ("." + encoded.replace("/", "."))

    def _prepare(self) -> None:
        if len(str(self.run_dir)) > MAX_BASE_DIR:
            raise DovecotError(f"base path too long for Dovecot's unix sockets ({self.run_dir}); use a shorter one")
        if os.geteuid() == 0:
            try:
                mail = pwd.getpwnam(MAIL_USER)
            except KeyError:
                raise DovecotError(f"there is no {MAIL_USER!r} system user for Dovecot to access mail as") from None
        else:  # rootless: everything, mail included, runs as the current user
            mail = pwd.getpwuid(os.geteuid())
        self._mail_user = mail.pw_name
        self._mail_group = grp.getgrgid(mail.pw_gid).gr_name
        self.base.mkdir(parents=True, exist_ok=True)
        for directory in (self.run_dir, self.state_dir):
            directory.mkdir(exist_ok=True)
        # a master that was SIGKILLed leaves its pid file; if that pid were reused, dovecot would refuse to start
        (self.run_dir / "master.pid").unlink(missing_ok=True)
        self.mail_root.mkdir(exist_ok=True)
        self.mail_root.chmod(0o755)
        if os.geteuid() == 0:
            os.chown(self.mail_root, mail.pw_uid, mail.pw_gid)
        _check_traversable(self.mail_root, mail)
        users_file = self.base / "users"
        users_file.write_text("".join(f"{name}:{{PLAIN}}{password}::::::\n" for name, password in self.users.items()))
        users_file.chmod(0o644)  # throwaway test passwords; readable by the unprivileged auth process
        self.config_path.write_text(self._config())

    def _config(self) -> str:
        base = self.base
        return f"""# Throwaway Dovecot config written by tests/support/dovecot.py; rewritten on every start.
base_dir = {self.run_dir}
state_dir = {self.state_dir}
instance_name = dovecot-emailrouter-test
log_path = {self.log_path}
protocols = imap
listen = {self.host}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = 1
first_valid_gid = 1
mail_uid = {self._mail_user}
mail_gid = {self._mail_group}
mail_location = maildir:{self.mail_root}/%u/Maildir
mail_plugins =
mail_fsync = never
# room for benchmarks with many concurrent connections (one imap process each)
default_process_limit = 500
default_client_limit = 2000
# IDLE: check the mailbox every second (inotify usually wakes it sooner) and say "still here" every 2 s
mailbox_idle_check_interval = 1 secs
imap_idle_notify_interval = 2 secs
login_greeting = emailrouter test Dovecot ready
namespace inbox {{
  inbox = yes
  separator = /
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {base}/users
}}
userdb {{
  driver = static
  args = uid={self._mail_user} gid={self._mail_group} home={self.mail_root}/%u
}}
service imap-login {{
  inet_listener imap {{
    address = {self.host}
    port = {self.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service stats {{
  # mail processes run as the mail user, which is not in the dovecot group
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
protocol imap {{
  mail_max_userip_connections = 200
}}
{self._rootless_config()}"""

    def _rootless_config(self) -> str:
        if os.geteuid() == 0:
            return ""
        # Not root: Dovecot cannot switch users or chroot, so every service runs as the current user.
        user, group = self._mail_user, self._mail_group
        return f"""# not started as root: every process runs as {user}
default_internal_user = {user}
default_internal_group = {group}
default_login_user = {user}
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
}}
"""

    def _wait_ready(self, deadline: float) -> None:
        last_error = "no attempt"
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                code = None if self._proc is None else self._proc.returncode
                raise DovecotError(f"dovecot exited with status {code} while starting\n{self._logs()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=1.0):
                    pass
                imap = self.client(next(iter(self.users)), timeout=2.0) if self.users else None
                if imap is not None:
                    imap.logout()
                return
            except (OSError, IMAPClient.Error) as exc:
                last_error = f"{type(exc).__name__}: {exc}"
                time.sleep(0.02)
        raise DovecotError(
            f"dovecot did not accept a LOGIN on {self.host}:{self.port} within {START_TIMEOUT:.0f} s "
            f"(last error: {last_error})\n{self._logs()}"
        )

    def _logs(self) -> str:
        parts = []
        for path in (self.stderr_path, self.log_path):
            tail = _tail(path)
            if tail:
                parts.append(f"--- {path} (tail) ---\n{tail}")
        return "\n".join(parts) or "(dovecot wrote no log)"


def _die_with_parent() -> list[str]:
    """A command prefix making Dovecot get SIGTERM should this process die without stop() (say, `timeout`).

    The parent-death signal fires when the *thread* that started the child ends, so it is only used from the
    main thread (which lives as long as the process). Needs util-linux's setpriv, which then execs dovecot.
    """
    setpriv = shutil.which("setpriv")
    if setpriv is None or threading.current_thread() is not threading.main_thread():
        return []
    return [setpriv, "--pdeathsig", "TERM", "--"]


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes in process group `pgid`."""
    proc = Path("/proc")
    if not proc.is_dir():  # not Linux: fall back to "is anything in the group", zombies included
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        except PermissionError:
            pass
        return [pgid]
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        # after "(comm)": state ppid pgrp ...
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            members.append(int(entry.name))
    return members


def _close(imap: IMAPClient) -> None:
    with contextlib.suppress(Exception):
        imap.shutdown()
