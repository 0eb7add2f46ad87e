"""`emailrouter explain --history FILE` and `--state`: the explanation shows a reply the limits suppress."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from emailrouter.ops.cli import main
from emailrouter.service.store import MessageKey, Plan, Store
from tests.conftest import CONFIG_DIR, DATA

MAIL = str(DATA / "dcs-fault-informal-lemot-gmail-id.eml")  # a DCS fault: reply education, forward dcs_unit
CONFIG = str(CONFIG_DIR / "emailrouter.yaml")
SENDER = "dimasaditya99@gmail.com"
THREE_IN_THE_HOUR = """\
# three auto-replies within the last hour, none of them `education`
replies:
  - {template: ticket_ack, ago: 50m}
  - {template: confirmation, ago: 30m}
  - {template: notice, ago: 10m}
"""


def test_history_file_suppresses_the_fourth_reply_within_the_hour(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Three earlier replies in the hour: the reply is suppressed with the core's reason, the forward still goes."""
    history = tmp_path / "history.yaml"
    history.write_text(THREE_IN_THE_HOUR)
    assert main(["explain", "-c", CONFIG, "--history", str(history), MAIL]) == 0
    out = capsys.readouterr().out
    assert f"  -x reply     suppressed: {SENDER} already got 3 auto-replies in the last hour" in out
    assert "  -> forward   to dcs-care@cc.example.co.id" in out and "  -> reply" not in out
    assert f"  remembered: reply 'notice' to {SENDER}, 10 min ago" in out


def test_history_in_json_names_the_same_template_within_the_window(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A JSON history file works too; the same template 5 h ago is suppressed, and --json shows the memory."""
    history = tmp_path / "history.json"
    history.write_text(json.dumps({"replies": [{"template": "education", "ago": "5h"}]}))
    assert main(["explain", "-c", CONFIG, "--json", "--history", str(history), MAIL]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["suppressed"] == [{"type": "reply", "reason": f"{SENDER} already got the 'education' reply within 24 h"}]
    assert [a["type"] for a in out["actions"]] == ["forward"]
    assert [(r["address"], r["template"]) for r in out["memory"]["replies"]] == [(SENDER, "education")]


def test_history_of_an_old_reply_and_no_history_suppress_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A reply two days ago is outside every limit: the reply goes out, as it does without --history."""
    history = tmp_path / "history.yaml"
    history.write_text("replies:\n  - {template: education, ago: 2d}\n")
    assert main(["explain", "-c", CONFIG, "--json", "--history", str(history), MAIL]) == 0
    assert json.loads(capsys.readouterr().out)["suppressed"] == []
    assert main(["explain", "-c", CONFIG, "--json", MAIL]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["suppressed"] == [] and "memory" not in out


def test_bounced_address_gets_no_reply(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An address that bounced an auto-reply three days ago gets none now."""
    history = tmp_path / "history.yaml"
    history.write_text("bounced:\n  - ago: 3d\n")
    assert main(["explain", "-c", CONFIG, "--history", str(history), MAIL]) == 0
    assert f"suppressed: {SENDER} bounced an auto-reply on" in capsys.readouterr().out


def test_repeated_contacts_from_history_fire_the_history_signal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two earlier fault mails this week fire `repeated_contact`, which the mail alone does not."""
    history = tmp_path / "history.yaml"
    history.write_text("contacts:\n  - {intent: fault, ago: 2d}\n  - {intent: fault, ago: 1d}\n")
    assert main(["explain", "-c", CONFIG, "--json", "--history", str(history), MAIL]) == 0
    with_history = {s["name"] for s in json.loads(capsys.readouterr().out)["signals"]}
    assert main(["explain", "-c", CONFIG, "--json", MAIL]) == 0
    without = {s["name"] for s in json.loads(capsys.readouterr().out)["signals"]}
    assert "repeated_contact" in with_history and "repeated_contact" not in without


def test_a_misspelt_history_file_names_file_line_and_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every mistake in a history file is an error with file, line and key; nothing is explained."""
    history = tmp_path / "history.yaml"
    history.write_text(
        "replies:\n  - {template: education, ago: 10m}\n  - {tempalte: education, ago: 10m}\n"
        "contacts:\n  - {intent: fault}\n  - {intent: fault, ago: 3 weeks}\nbounces: []\n"
        "bounced:\n  - ago: 10\n"
    )
    assert main(["explain", "-c", CONFIG, "--history", str(history), MAIL]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    errors = captured.err.splitlines()
    assert (
        f"error: {history}:3: replies[1].tempalte: unknown key (expected one of: address, ago, at, template)" in errors
    )
    assert f"error: {history}:3: replies[1].template: missing" in errors
    assert f"error: {history}:5: contacts[0].ago: missing: give ago (2h) or at (a time)" in errors
    assert f"error: {history}:6: contacts[1].ago: expected an age such as 90m, 2h or 3d, got: '3 weeks'" in errors
    assert f"error: {history}:7: bounces: unknown key (expected one of: bounced, contacts, replies)" in errors
    assert f"error: {history}:9: bounced[0].ago: give the unit too: 10m, 10h or 10d, not 10" in errors


def test_a_time_without_a_zone_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`at:` must say its time zone: 08:30 in Jakarta and in UTC are seven hours apart."""
    history = tmp_path / "history.yaml"
    history.write_text("replies:\n  - {template: education, at: 2026-01-01T08:30:00}\n")
    assert main(["explain", "-c", CONFIG, "--history", str(history), MAIL]) == 1
    assert f"error: {history}:2: replies[0].at: give the time zone too" in capsys.readouterr().err


def _with_state(config_copy: Path, state: Path) -> None:
    config_copy.write_text(config_copy.read_text() + f"\nstate:\n  path: {state}\n")


def test_state_reads_the_senders_replies_from_the_store_without_writing(
    config_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--state: three replies the daemon recorded in the last hour suppress the reply; the store is unchanged."""
    state = tmp_path / "state.sqlite3"
    _with_state(config_copy, state)
    now = datetime.now(UTC)
    store = Store(state)
    store.plan(
        [
            Plan(
                MessageKey("a", "INBOX", 1, uid),
                f"<m{uid}@x>",
                "r",
                {},
                (),
                now - timedelta(minutes=10 * uid),
                None,
                replies=[(SENDER, template)],
            )
            for uid, template in enumerate(["ticket_ack", "confirmation", "notice"], start=1)
        ]
    )
    store.close()
    before = state.read_bytes()
    assert main(["explain", "-c", str(config_copy), "--state", MAIL]) == 0
    out = capsys.readouterr().out
    assert f"  -x reply     suppressed: {SENDER} already got 3 auto-replies in the last hour" in out
    assert out.count("  remembered: reply") == 3
    assert state.read_bytes() == before


def test_state_without_a_store_says_so(config_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--state when the daemon never ran: an error naming the path, exit 1, and no store is created."""
    state = tmp_path / "none" / "state.sqlite3"
    _with_state(config_copy, state)
    assert main(["explain", "-c", str(config_copy), "--state", MAIL]) == 1
    assert f"error: no state store at {state}" in capsys.readouterr().err
    assert not state.exists()


def test_state_says_when_the_daemon_already_handled_the_mail(
    config_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A mail the store already holds (same Message-ID and content) is named a duplicate, with the earlier key;
    the same Message-ID on other content is not."""
    from emailrouter.core.dedupe import content_hash

    state = tmp_path / "state.sqlite3"
    _with_state(config_copy, state)
    raw = Path(MAIL).read_bytes()
    message_id = "<CAK1pR9sW3mZ7vQ0xL2bN8cT5hY4jF6dG1aE9uV3kM0oB7t@mail.gmail.com>"
    assert message_id.encode() in raw
    key = MessageKey("a", "INBOX", 1, 7)
    store = Store(state)
    store.plan([Plan(key, message_id, "r", {}, (), datetime.now(UTC), None, content_hash=content_hash(raw))])
    store.close()
    assert main(["explain", "-c", str(config_copy), "--state", MAIL]) == 0
    assert f"  duplicate:  already handled, as {key}: the daemon takes it for a duplicate" in capsys.readouterr().out
    other = tmp_path / "other.eml"
    other.write_bytes(raw.replace(b"inet lemot bgt", b"inet masih lemot"))
    assert main(["explain", "-c", str(config_copy), "--state", "--json", MAIL, str(other)]) == 0
    same, changed = json.loads(capsys.readouterr().out)
    assert same["duplicate_of"] == str(key) and "duplicate_of" not in changed
