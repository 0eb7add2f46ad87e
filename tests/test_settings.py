"""Daemon settings in emailrouter.yaml: mailboxes, relay, secrets, TLS defaults."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from emailrouter.config.credentials import CredentialError, OAuth2Token, Secret
from emailrouter.config.loader import load_config
from emailrouter.config.settings import DeliveryConfig, HousekeepingConfig
from emailrouter.core.errors import ConfigError
from emailrouter.core.guard import LoopPolicy, limit_replies
from emailrouter.core.pipeline import route

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)

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


# --------------------------------------------------------------------------- one model: explicit zeros, every problem


def _with(path: Path, extra: str) -> Path:
    """The config with the top-level sections of `extra` replacing the shipped ones of the same name."""
    replaced = {line.split(":")[0] for line in extra.splitlines() if line and not line[0].isspace()}
    kept: list[str] = []
    skipping = False
    for line in path.read_text().splitlines():
        if line and not line[0].isspace() and not line.startswith("#"):
            skipping = line.split(":")[0] in replaced
        if not skipping:
            kept.append(line)
    path.write_text("\n".join(kept) + "\n" + extra)
    return path


def _problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return [f"{p.key}: {p.reason}" for p in info.value.problems]


ZERO_MEANS_ZERO = [
    ("loop_protection:\n  replies_per_hour: 0\n", lambda s: s.loop.replies_per_hour, 0),
    ("loop_protection:\n  reply_window_hours: 0\n", lambda s: s.loop.reply_window, timedelta(0)),
    ("loop_protection:\n  bounce_block_days: 0\n", lambda s: s.loop.bounce_block, timedelta(0)),
    ("delivery:\n  give_up_after_hours: 0\n", lambda s: s.delivery.give_up_after, 0.0),
    ("limits:\n  quarantine_notices_per_hour: 0\n", lambda s: s.quarantine_notices_per_hour, 0),
    (MAILBOX.replace("    password: {credential: imap-jkt}\n", "    oauth2: {token: {env: T}, lifetime: 0}\n"),
     lambda s: s.mailboxes[0].oauth2.lifetime, 0.0),
]  # fmt: skip


@pytest.mark.parametrize(
    ("extra", "read", "zero"), ZERO_MEANS_ZERO, ids=lambda v: v.split()[0] if isinstance(v, str) else ""
)
def test_an_explicit_zero_means_zero(config_copy: Path, extra: str, read: Any, zero: Any) -> None:
    """Where zero makes sense (no auto-replies, no window, no block, give up at once, no notices, a fresh token
    for every login), a written 0 is 0, never the default."""
    assert read(load_config(_with(config_copy, extra)).settings) == zero


def _mailbox_with(line: str) -> str:
    """MAILBOX with one more line in its mailbox (or, for a relay key, in smtp)."""
    if line.startswith("data_timeout"):
        return MAILBOX.replace("  username: router", f"  {line}\n  username: router")
    return MAILBOX.replace("    username: cs-jkt", f"    {line}\n    username: cs-jkt")


ZERO_REFUSED = [
    ("mailboxes[0].batch_size", "must be 1 or more", _mailbox_with("batch_size: 0")),
    ("mailboxes[0].port", "must be 1 or more", _mailbox_with("port: 0")),
    ("mailboxes[0].timeout", "must be more than 0", _mailbox_with("timeout: 0")),
    ("mailboxes[0].poll_interval", "must be more than 0", _mailbox_with("poll_interval: 0")),
    ("smtp.data_timeout", "must be more than 0", _mailbox_with("data_timeout: 0")),
    ("housekeeping.keep_days", "must be 1 or more", "housekeeping:\n  keep_days: 0\n"),
    ("delivery.retry_initial", "must be more than 0", "delivery:\n  retry_initial: 0\n"),
    ("delivery.retry_max", "must be more than 0", "delivery:\n  retry_max: 0\n"),
    ("delivery.outbox_interval", "must be more than 0", "delivery:\n  outbox_interval: 0\n"),
    ("limits.max_message_mb", "must be more than 0", "limits:\n  max_message_mb: 0\n"),
]  # fmt: skip


@pytest.mark.parametrize(("key", "reason", "extra"), ZERO_REFUSED, ids=[k for k, _, _ in ZERO_REFUSED])
def test_an_explicit_zero_that_makes_no_sense_is_refused(config_copy: Path, key: str, reason: str, extra: str) -> None:
    """A 0 that cannot work (a batch of no mails, a timer of no seconds, keeping no memory) is an error naming
    the key, never silently the default."""
    assert _problems(_with(config_copy, extra)) == [f"{key}: {reason}"]


def test_zero_replies_per_hour_means_no_automatic_replies(config_copy: Path) -> None:
    """replies_per_hour: 0 suppresses every automatic reply and keeps the forward (it used to mean 3)."""
    config = load_config(_with(config_copy, "loop_protection:\n  replies_per_hour: 0\n"))
    mail = (Path(__file__).parent / "data" / "dcs-fault-outlook-en.eml").read_bytes()
    outgoing = route(mail, config, NOW).outgoing
    assert "reply" in [o.action.type for o in outgoing]
    kept, suppressed = limit_replies(outgoing, [], {}, NOW, config.settings.loop)
    assert [o.action.type for o in kept] == ["forward"] and len(suppressed) == 1


def test_every_problem_of_the_daemon_part_is_listed_with_its_line(config_copy: Path) -> None:
    """One check lists every mistake (types, limits, unknown keys, rules across keys), each at its own line."""
    extra = (
        "mailboxes:\n"
        "  - name: jkt\n"
        "    host: imap.example.co.id\n"
        "    security: ssl\n"
        "    batch_size: 0\n"
        "    idle: 1\n"
        "    username: cs-jkt\n"
        "  - name: jkt\n"
        "    host: imap.example.co.id\n"
        "    username: cs-jkt\n"
        "    password: {env: PW, file: pw.txt}\n"
        "    fodler: Support\n"
        "smtp:\n"
        "  host: smtp.example.co.id\n"
        "  username: router\n"
        "housekeeping:\n"
        '  at: "25:00"\n'
        "reports:\n"
        "  daily_to: nobody\n"
    )
    path = _with(config_copy, extra)
    start = path.read_text().splitlines().index("mailboxes:") + 1
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert [(p.line - start if p.line else None, p.key, p.reason) for p in info.value.problems] == [
        (1, "mailboxes[0].password", "missing: give password ({env|file|credential|command: ...}) or oauth2"),
        (3, "mailboxes[0].security", "expected one of tls, starttls, plain, got 'ssl'"),
        (4, "mailboxes[0].batch_size", "must be 1 or more"),
        (5, "mailboxes[0].idle", "expected true or false, got int 1"),
        (7, "mailboxes[1].name", "mailbox name 'jkt' is used twice"),
        (10, "mailboxes[1].password", "give exactly one of {env: ...}, {file: ...}, {credential: ...}, {command: ...}"),
        (11, "mailboxes[1].fodler", "unknown key (expected one of: batch_size, ca_file, folder, host, idle, keyword,"
         " move_to, name, oauth2, password, poll_interval, port, processed, security, timeout, username)"),
        (14, "smtp.password", "username given without a password"),
        (16, "housekeeping.at", "expected HH:MM, got '25:00'"),
        (18, "reports.daily_to", "not an email address: 'nobody'"),
    ]  # fmt: skip


def test_an_optional_key_written_empty_is_an_error(config_copy: Path) -> None:
    """`port:` with nothing after it is a mistake to point at, not a way of asking for the default."""
    path = _with(config_copy, MAILBOX.replace("    username: cs-jkt", "    port:\n    username: cs-jkt"))
    assert _problems(path) == ["mailboxes[0].port: empty: give a value or leave the key out"]


def test_the_daemon_defaults_are_the_models(config_copy: Path) -> None:
    """Without daemon sections the settings are the models' defaults, and the objects' own defaults agree."""
    settings = load_config(_with(config_copy, "loop_protection: {}\nlimits: {}\n")).settings
    assert settings.delivery == DeliveryConfig() == DeliveryConfig(30.0, 3600.0, 120 * 3600.0, 30.0)
    assert settings.housekeeping == HousekeepingConfig() == HousekeepingConfig(90, 3, 30)
    assert settings.loop == LoopPolicy()
    assert (settings.max_message_bytes, settings.quarantine_notices_per_hour) == (25 * 1024 * 1024, 20)
    assert settings.report is None and settings.metrics_listen is None and settings.smtp is None


# --------------------------------------------------------------------------- the state store: SQLite or PostgreSQL


def test_a_state_url_chooses_postgresql_with_its_password_from_a_secret(config_copy: Path) -> None:
    """`state: {url, password}` names a PostgreSQL database; the password is a secret reference; the SQLite
    file stays the default."""
    assert load_config(config_copy).settings.state_url is None
    _with(config_copy, "state:\n  url: postgresql://router@db.cc.example.co.id/emailrouter\n  password: {env: PG}\n")
    settings = load_config(config_copy).settings
    assert settings.state_url == "postgresql://router@db.cc.example.co.id/emailrouter"
    assert settings.state_password is not None and settings.state_password.describe() == "env PG"


@pytest.mark.parametrize(
    ("state", "problem"),
    [
        ("  url: postgresql://router:hunter2@db/er\n", "state.url: never put a password in the URL"),
        ("  url: postgresql://db/er?sslmode=require&password=hunter2\n", "state.url: never put a password in the URL"),
        ("  url: mysql://db/er\n", "state.url: expected a postgresql://[user@]host[:port]/dbname URL"),
        ("  url: postgresql://db/er\n  path: state.sqlite3\n", "state.path: give path (SQLite) or url"),
        ("  password: {env: PG}\n", "state.password: password given without a url"),
        ("  url: postgresql://db/er\n  password: hunter2\n", "state.password: never put a secret in YAML"),
    ],
)
def test_a_state_url_with_a_password_or_beside_a_path_is_refused(config_copy: Path, state: str, problem: str) -> None:
    """A password never sits in the URL or in YAML; url and path exclude each other; each problem names its key."""
    (found,) = _problems(_with(config_copy, "state:\n" + state))
    assert found.startswith(problem) and "hunter2" not in found
