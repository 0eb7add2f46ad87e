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
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from emailrouter.core.errors import PermanentError

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
