"""`quarantine retry` through a running daemon: a request file next to the state store, then SIGHUP.

The daemon holds the state's lock, so a second process cannot retry beside it; and a retry in a second
process would use the config on disk while the daemon runs another. So the command writes
`<state>.retry-<id>.json` (a mailbox and its UIDs) and sends SIGHUP: the daemon reloads the config on
disk, and only if the reload is accepted takes the request, retries the UIDs in that mailbox's task
(between two polls, never beside one) and answers in `<state>.retry-<id>.done.json`, which the
command prints and removes. A rejected reload answers every request with the problems: nothing is
retried under a config that is not the one on disk.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REQUEST_GLOB = ".retry-*.json"


@dataclass(frozen=True)
class RetryRequest:
    id: str
    mailbox: str
    uids: tuple[int, ...]


def _request_path(state: Path, request_id: str) -> Path:
    return state.with_name(f"{state.name}.retry-{request_id}.json")


def _answer_path(state: Path, request_id: str) -> Path:
    return state.with_name(f"{state.name}.retry-{request_id}.done")


def _write(path: Path, data: dict[str, Any], mode: int) -> None:
    """Atomically: a reader sees the whole file or none. Readable by the daemon's user (mode 0644 for a
    request: it holds a mailbox name and UIDs only)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data) + "\n", encoding="utf-8")
    tmp.chmod(mode)
    tmp.replace(path)


def request(state: Path, mailbox: str, uids: list[int]) -> str:
    """Leave a retry request for the daemon; its id. OSError if the state's folder cannot be written."""
    request_id = uuid.uuid4().hex[:12]
    _write(_request_path(state, request_id), {"mailbox": mailbox, "uids": uids}, 0o644)
    return request_id


def withdraw(state: Path, request_id: str) -> bool:
    """Take back a request the daemon has not taken yet; True if it was still there."""
    try:
        _request_path(state, request_id).unlink()
    except FileNotFoundError:
        return False
    return True


def take(state: Path) -> list[RetryRequest]:
    """The daemon, after an accepted reload: every request waiting (each file removed as it is read)."""
    out = []
    for path in sorted(state.parent.glob(state.name + REQUEST_GLOB)):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            path.unlink()
        except (OSError, ValueError):
            continue  # half-written (not ours: ours are renamed into place) or taken by another reader
        request_id = path.name[len(state.name) + len(".retry-") : -len(".json")]
        uids = tuple(int(u) for u in data.get("uids", []) if isinstance(u, int))
        out.append(RetryRequest(request_id, str(data.get("mailbox", "")), uids))
    return out


def answer(state: Path, request_id: str, result: dict[str, Any]) -> None:
    """The daemon's answer to one request (what `quarantine retry` prints)."""
    _write(_answer_path(state, request_id), result, 0o644)


def await_answer(state: Path, request_id: str, timeout: float, poll: float = 0.1) -> dict[str, Any] | None:
    """The daemon's answer (the file is removed), or None after `timeout` seconds."""
    path = _answer_path(state, request_id)
    deadline = time.monotonic() + timeout
    while True:
        try:
            data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            if time.monotonic() >= deadline:
                return None
            time.sleep(poll)
            continue
        path.unlink(missing_ok=True)
        return data


def daemon_pid(state: Path) -> int | None:
    """The pid `emailrouter run` wrote into the state's lock file when it took the lock."""
    try:
        text = state.with_name(state.name + ".lock").read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and int(text) != os.getpid() else None
