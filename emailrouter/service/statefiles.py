"""The state store's folder and files are private: senders, subjects and outgoing mail are in them.

A folder the router creates is 0700 and a new state file 0600 (SQLite gives its -wal and -shm files the
mode of the database). An existing file that others can read is tightened to 0600, because it is ours and
nobody else needs it; an existing folder that others can read is only reported, because it may be shared
(a folder named in state.path): what is in it stays private anyway.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

FOLDER_MODE = 0o700
FILE_MODE = 0o600
SIBLINGS = ("", "-wal", "-shm", ".lock")  # the database, SQLite's WAL and shared memory, `run`'s lock


def prepare(path: Path) -> list[str]:
    """Create the state's folder (0700) and file (0600) if missing; tighten state files others can read.
    Returns what the operator should know (a folder open to others, a file that could not be tightened).
    Raises OSError when the folder cannot be created."""
    notes: list[str] = []
    folder = path.parent
    if not make_folder(folder):
        mode = stat.S_IMODE(folder.stat().st_mode)
        if mode & 0o077:
            notes.append(
                f"state folder {folder} is open to others (mode {mode:o}); the state files in it are kept"
                f" {FILE_MODE:o}, but `chmod 700 {folder}` is safer"
            )
    for suffix in SIBLINGS:
        notes.extend(_tighten(path.with_name(path.name + suffix)))
    with contextlib.suppress(FileExistsError):  # created by another process meanwhile: tightened above or by it
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
    return notes


def make_folder(folder: Path) -> bool:
    """Create `folder` 0700 (its parents with the usual mode) if it is missing; whether it was created."""
    if folder.is_dir():
        return False
    folder.mkdir(parents=True, mode=FOLDER_MODE, exist_ok=True)
    os.chmod(folder, FOLDER_MODE)  # mkdir's mode is reduced by the umask
    return True


def presence(path: Path) -> str:
    """ "exists", "not created yet" or why it cannot be looked at (the service's file seen by another user)."""
    try:
        path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return "not created yet"
    except OSError as exc:
        return f"cannot be looked at: {exc.strerror or exc}"
    return "exists"


def open_private(path: Path) -> int:
    """A file descriptor of `path` opened for appending, created 0600 (the lock next to the state)."""
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, FILE_MODE)


def _tighten(path: Path) -> list[str]:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return []
    if not mode & 0o077:
        return []
    try:
        os.chmod(path, mode & 0o700)
    except PermissionError:
        return [f"state file {path} is readable by others (mode {mode:o}) and not ours to change: chmod 600 it"]
    return [f"state file {path} was readable by others (mode {mode:o}): now {mode & 0o700:o}"]
