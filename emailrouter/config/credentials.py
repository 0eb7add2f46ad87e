"""Passwords and OAuth2 tokens: read when needed, never stored in YAML, never logged.

A secret is referenced in YAML as one of:
    {env: NAME}           the environment variable NAME
    {file: PATH}          the first line of a file (relative paths: next to the config)
    {credential: NAME}    a systemd credential: $CREDENTIALS_DIRECTORY/NAME (LoadCredential=)
    {command: "argv ..."} the first line a command prints (like mbsync's PassCmd), no shell
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from emailrouter.config.yamlfile import LineDict, LineList
from emailrouter.core.errors import PermanentError, Problem

SecretKind = Literal["env", "file", "credential", "command"]
SECRET_KINDS: tuple[SecretKind, ...] = ("env", "file", "credential", "command")


class CredentialError(PermanentError):
    """A secret could not be read. The message names where we looked, never the value."""


@dataclass(frozen=True)
class Secret:
    kind: SecretKind
    ref: str  # variable name, path, credential name or command line: never the secret itself
    base: Path = Path(".")

    def __repr__(self) -> str:
        return f"Secret({self.kind}:{self.ref})"

    def describe(self) -> str:
        return f"{self.kind} {self.ref}"

    def read(self, timeout: float = 30.0) -> str:
        """The secret's value, stripped of the trailing newline."""
        if self.kind == "env":
            value = os.environ.get(self.ref)
            if value is None:
                raise CredentialError(f"environment variable {self.ref} is not set")
            return value
        if self.kind == "credential":
            directory = os.environ.get("CREDENTIALS_DIRECTORY")
            if not directory:
                raise CredentialError(f"credential {self.ref}: $CREDENTIALS_DIRECTORY is not set (LoadCredential=?)")
            return _first_line(Path(directory) / self.ref, f"credential {self.ref}")
        if self.kind == "file":
            path = Path(self.ref)
            return _first_line(path if path.is_absolute() else self.base / path, f"file {self.ref}")
        try:
            done = subprocess.run(
                shlex.split(self.ref), capture_output=True, text=True, timeout=timeout, check=False, cwd=self.base
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise CredentialError(f"command {self.ref!r} failed: {type(exc).__name__}") from None
        if done.returncode != 0:
            raise CredentialError(f"command {self.ref!r} exited with {done.returncode}")
        return done.stdout.splitlines()[0] if done.stdout else ""


def _first_line(path: Path, what: str) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CredentialError(f"{what}: cannot read {path} ({exc.strerror})") from None
    return text.splitlines()[0] if text else ""


@dataclass
class OAuth2Token:
    """An XOAUTH2 access token from a command or file, re-read before it expires."""

    source: Secret
    lifetime: float = 3000.0  # seconds a token is trusted before it is read again
    _value: str | None = field(default=None, repr=False)
    _read_at: float = 0.0

    def get(self, now: float | None = None) -> str:
        now = time.monotonic() if now is None else now
        if self._value is None or now - self._read_at >= self.lifetime:
            self._value = self.source.read()
            self._read_at = now
        return self._value

    def invalidate(self) -> None:
        """Force a fresh read next time (after the server rejected the token)."""
        self._value = None


def unusable(secret: Secret) -> str | None:
    """Why this secret cannot be read here and now, without reading it (no command is run): a file that is
    missing or unreadable, an environment variable that is not set, a command not found, a systemd
    credential missing from $CREDENTIALS_DIRECTORY. None if it looks readable (or, for a systemd credential
    outside the service, cannot be told)."""
    if secret.kind == "env":
        return None if secret.ref in os.environ else f"environment variable {secret.ref} is not set"
    if secret.kind == "file":
        path = Path(secret.ref) if Path(secret.ref).is_absolute() else secret.base / secret.ref
        return _unreadable(path, f"file {secret.ref}")
    if secret.kind == "credential":
        directory = os.environ.get("CREDENTIALS_DIRECTORY")
        return _unreadable(Path(directory) / secret.ref, f"credential {secret.ref}") if directory else None
    try:
        argv = shlex.split(secret.ref)
    except ValueError as exc:
        return f"command {secret.ref!r}: {exc}"
    if not argv:
        return "command: empty"
    program = argv[0]
    found = (secret.base / program).exists() if "/" in program else shutil.which(program) is not None
    return None if found else f"command {program!r} not found"


def _unreadable(path: Path, what: str) -> str | None:
    if not path.exists():
        return f"{what}: {path} does not exist"
    if not os.access(path, os.R_OK) or not path.is_file():
        return f"{what}: {path} cannot be read by this user"
    return None


def credential_problems(doc: Any, file: str, base: Path, where: str = "") -> list[Problem]:
    """Every secret reference in a validated YAML document that cannot work (see `unusable`), each named by
    file, line and key. A secret reference is a mapping of one key, env/file/credential/command, to text."""
    problems: list[Problem] = []
    items = doc.items() if isinstance(doc, LineDict) else enumerate(doc) if isinstance(doc, LineList) else ()
    for key, value in items:
        path = f"{where}.{key}" if where and isinstance(key, str) else f"{where}[{key}]" if where else str(key)
        if isinstance(value, LineDict) and len(value) == 1:
            kind, ref = next(iter(value.items()))
            if kind in SECRET_KINDS and isinstance(ref, str):
                reason = unusable(Secret(kind, ref, base))
                if reason is not None:
                    line = doc.lines.get(str(key)) if isinstance(doc, LineDict) else doc.lines[int(key)]
                    problems.append(Problem(file, line, path, f"{reason}: this secret cannot be read"))
                continue
        problems.extend(credential_problems(value, file, base, path))
    return problems
