"""Daemon settings in emailrouter.yaml: mailboxes, relay, secrets, TLS defaults."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from emailrouter.config.credentials import CredentialError, OAuth2Token, Secret
from emailrouter.config.loader import load_config
from emailrouter.core.errors import ConfigError

MAILBOX = """
mailboxes:
  - name: jkt
    host: imap.example.co.id
    username: cs-jkt
    password: {credential: imap-jkt}
smtp:
  host: smtp.example.co.id
  username: router
  password: {env: SMTP_PASSWORD}
"""


def test_tls_with_verification_is_the_default(config_copy: Path) -> None:
    """Without a security setting, IMAP uses implicit TLS on 993 and SMTP implicit TLS on 465; no warnings."""
    config_copy.write_text(config_copy.read_text() + MAILBOX)
    settings = load_config(config_copy).settings
    (mailbox,) = settings.mailboxes
    assert (mailbox.endpoint.security, mailbox.endpoint.port) == ("tls", 993)
    assert settings.smtp is not None and (settings.smtp.endpoint.security, settings.smtp.endpoint.port) == ("tls", 465)
    assert settings.plaintext_warnings() == []
    assert mailbox.processed == "keyword" and mailbox.keyword == "$Routed" and mailbox.idle


def test_plaintext_needs_saying_and_is_warned_about(config_copy: Path) -> None:
    """security: plain is accepted only when written, and produces a start-up warning."""
    config_copy.write_text(
        config_copy.read_text() + MAILBOX.replace("    username: cs-jkt", "    security: plain\n    username: cs-jkt")
    )
    settings = load_config(config_copy).settings
    assert settings.mailboxes[0].endpoint.port == 143
    assert settings.plaintext_warnings() == ["mailbox jkt: IMAP without TLS to imap.example.co.id"]


def test_a_password_written_in_yaml_is_refused(config_copy: Path) -> None:
    """Secrets never sit in YAML: a literal password is an error naming the key."""
    config_copy.write_text(config_copy.read_text() + MAILBOX.replace("{env: SMTP_PASSWORD}", "hunter2"))
    with pytest.raises(ConfigError) as info:
        load_config(config_copy)
    (problem,) = info.value.problems
    assert problem.key == "smtp.password" and "never put a secret in YAML" in problem.reason
    assert "hunter2" not in str(problem)


def test_secrets_come_from_env_file_credential_and_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each secret source is read when needed; a missing one names where it looked, not a value."""
    monkeypatch.setenv("ER_TEST_SECRET", "from-env")
    (tmp_path / "pw").write_text("from-file\nignored\n")
    (tmp_path / "creds").mkdir()
    (tmp_path / "creds" / "imap").write_text("from-credential")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path / "creds"))
    assert Secret("env", "ER_TEST_SECRET").read() == "from-env"
    assert Secret("file", "pw", tmp_path).read() == "from-file"
    assert Secret("credential", "imap").read() == "from-credential"
    assert Secret("command", "echo from-command").read() == "from-command"
    with pytest.raises(CredentialError, match="ER_MISSING is not set"):
        Secret("env", "ER_MISSING").read()
    assert "from-env" not in repr(Secret("env", "ER_TEST_SECRET"))


def test_oauth2_token_is_reread_before_it_expires(tmp_path: Path) -> None:
    """An XOAUTH2 token from a command is cached for its lifetime, then read again (like mbsync's PassCmd)."""
    counter = tmp_path / "n"
    counter.write_text("0")
    script = tmp_path / "token.sh"
    script.write_text(f"n=$(cat {counter}); n=$((n+1)); echo $n > {counter}; echo token-$n\n")
    token = OAuth2Token(Secret("command", f"sh {script}"), lifetime=100)
    assert token.get(now=0) == "token-1"
    assert token.get(now=50) == "token-1"
    assert token.get(now=101) == "token-2"
    token.invalidate()
    assert token.get(now=102) == "token-3"
    assert os.path.exists(counter)


def test_an_empty_password_is_an_error_not_a_crash_at_login(config_copy: Path) -> None:
    """`password:` with no value is reported by check, naming the key."""
    config_copy.write_text(config_copy.read_text() + MAILBOX.replace("{credential: imap-jkt}", ""))
    with pytest.raises(ConfigError) as info:
        load_config(config_copy)
    assert [p.key for p in info.value.problems] == ["mailboxes[0].password"]
