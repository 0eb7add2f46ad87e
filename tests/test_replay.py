"""`emailrouter replay`: a config change shows exactly the mails it would handle differently."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from emailrouter.core.model import MessageView
from emailrouter.ops.cli import main
from tests.broken_template import CALM_MAIL, URGENT_MAIL, break_template
from tests.conftest import CONFIG_DIR, DATA

EXPECTED = yaml.safe_load((DATA / "expected.yaml").read_text())


def changed_config(tmp_path: Path) -> Path:
    """DBS requests now go to the account managers instead of the DBS unit."""
    new = tmp_path / "new"
    shutil.copytree(CONFIG_DIR, new, ignore=shutil.ignore_patterns("samples", "tests"))
    rules = new / "rules.yaml"
    text = rules.read_text()
    start = text.index("  - id: 1.2.7-dbs-request-educate-forward")
    end = text.index("  - id: 1.2.9-dcs-hard-complaint")
    rules.write_text(text[:start] + text[start:end].replace("dbs_unit", "account_managers") + text[end:])
    return new / "emailrouter.yaml"


def test_replay_lists_exactly_the_mails_the_change_affects(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Only the fixtures routed by the changed row differ, in their recipients; --json gives the counts."""
    new = changed_config(tmp_path)
    assert main(["replay", "--old", str(CONFIG_DIR / "emailrouter.yaml"), "--new", str(new), "--json", str(DATA)]) == 0
    result = json.loads(capsys.readouterr().out)
    expected = sorted(n for n, e in EXPECTED.items() if e["rule"] == "1.2.7-dbs-request-educate-forward")
    assert expected
    assert sorted(Path(m["source"]).name for m in result["messages"]) == expected
    assert result["total"] == len(EXPECTED) and result["changed"] == len(expected)
    assert result["counts"] == {"recipients": len(expected)}
    for m in result["messages"]:
        assert "forward:dbs-business@cc.example.co.id" in m["old"]["recipients"]
        assert "forward:account-managers@cc.example.co.id" in m["new"]["recipients"]


def test_replay_text_output_and_no_changes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The text report shows -/+ recipients and a summary; the same config twice changes nothing."""
    new = changed_config(tmp_path)
    assert (
        main(["replay", "--old", str(CONFIG_DIR / "emailrouter.yaml"), "--new", str(new), "--progress", str(DATA)]) == 0
    )
    captured = capsys.readouterr()
    assert "-forward:dbs-business@cc.example.co.id, +forward:account-managers@cc.example.co.id" in captured.out
    assert "replay [" in captured.err and "100%" in captured.err
    same = str(CONFIG_DIR / "emailrouter.yaml")
    assert main(["replay", "--old", same, "--new", same, str(DATA)]) == 0
    assert f"{len(EXPECTED)} mails replayed, 0 handled differently" in capsys.readouterr().out


def test_replay_reports_a_failed_reply_render_per_mail(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A template that fails on one mail under the new config is listed with the reason; the replay completes."""
    new = tmp_path / "new"
    shutil.copytree(CONFIG_DIR, new, ignore=shutil.ignore_patterns("samples", "tests"))
    tpl, line = break_template(new)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "urgent.eml").write_bytes(URGENT_MAIL)
    # a day later, so that the reply limits (one education reply a day) leave the calm mail's reply alone
    (corpus / "calm.eml").write_bytes(CALM_MAIL.replace(b"Mon, 23 Nov 2026 08:00", b"Tue, 24 Nov 2026 09:00"))
    old = str(CONFIG_DIR / "emailrouter.yaml")
    assert main(["replay", "--old", old, "--new", str(new / "emailrouter.yaml"), "--json", str(corpus)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["total"] == 2 and result["changed"] == 1 and result["failed"] == 1
    (change,) = result["messages"]
    assert Path(change["source"]).name == "urgent.eml"
    assert change["changed"] == ["recipients", "templates", "failed"]
    assert change["new"]["failed"] == ["reply:education.id"] and change["old"]["failed"] == []
    assert change["old"]["templates"] == ["education"] and change["new"]["templates"] == []
    assert change["new"]["recipients"] == ["forward:dcs-care@cc.example.co.id"]
    (failure,) = result["failures"]
    assert (Path(failure["source"]).name, failure["config"], failure["message_id"]) == (
        "urgent.eml",
        "new",
        "<urgent-1@mail.gmail.com>",
    )
    (reply,) = failure["failed"]
    assert (reply["template"], reply["language"]) == ("education", "id")
    assert reply["reason"] == f"{tpl}:{line}: 'urgent_note' is undefined"

    assert main(["replay", "--old", old, "--new", str(new / "emailrouter.yaml"), str(corpus)]) == 0
    out = capsys.readouterr().out
    assert "urgent.eml  (URGENT internet mati)  FAILED under the new config" in out
    assert f"    reply education (id) not rendered: {tpl}:{line}: 'urgent_note' is undefined" in out
    assert "2 mails replayed, 1 handled differently" in out and "1 failed under one config or both" in out


def test_replay_reports_a_mail_a_stage_cannot_handle_and_goes_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Should routing raise on one mail, replay lists it with the error under each config and replays the rest."""
    import emailrouter.ops.replay

    real = emailrouter.ops.replay.route

    def route(mail: MessageView, *args: object, **kwargs: object) -> object:
        if b"URGENT" in mail.raw:
            raise ValueError("a stage broke")
        return real(mail, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(emailrouter.ops.replay, "route", route)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "urgent.eml").write_bytes(URGENT_MAIL)
    (corpus / "calm.eml").write_bytes(CALM_MAIL)
    same = str(CONFIG_DIR / "emailrouter.yaml")
    assert main(["replay", "--old", same, "--new", same, "--json", str(corpus)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["total"] == 2 and result["changed"] == 0 and result["failed"] == 1
    assert [(Path(f["source"]).name, f["config"], f["error"]) for f in result["failures"]] == [
        ("urgent.eml", "old", "ValueError: a stage broke"),
        ("urgent.eml", "new", "ValueError: a stage broke"),
    ]


def _mail(minutes: int, message_id: str, subject: str = "Internet mati") -> bytes:
    """Budi's mail, `minutes` after 08:00 on 23 Nov 2026 (Jakarta time)."""
    hours, mins = divmod(minutes, 60)
    return (
        CALM_MAIL.replace(b"08:00:00 +0700", f"{8 + hours:02d}:{mins:02d}:00 +0700".encode())
        .replace(b"<calm-1@mail.gmail.com>", message_id.encode())
        .replace(b"Subject: Internet mati", f"Subject: {subject}".encode())
    )


def short_window(tmp_path: Path) -> Path:
    """The shipped config, but one reply of a template per address per hour instead of per day."""
    new = tmp_path / "new"
    shutil.copytree(CONFIG_DIR, new, ignore=shutil.ignore_patterns("samples", "tests"))
    main_file = new / "emailrouter.yaml"
    text = main_file.read_text()
    assert "reply_window_hours: 24" in text
    main_file.write_text(text.replace("reply_window_hours: 24", "reply_window_hours: 1"))
    return main_file


def test_replay_remembers_earlier_replies_in_date_order(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A reply planned for an earlier mail (by Date:, not by file name) suppresses the later one's reply as the
    daemon would: 3 h later under a 24 h window it is suppressed, under a 1 h window it goes out."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a-later.eml").write_bytes(_mail(180, "<later@mail.gmail.com>", "Internet masih mati"))
    (corpus / "b-first.eml").write_bytes(_mail(0, "<first@mail.gmail.com>"))
    old, new = str(CONFIG_DIR / "emailrouter.yaml"), str(short_window(tmp_path))
    assert main(["replay", "--old", old, "--new", new, "--json", str(corpus)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["total"] == 2 and result["changed"] == 1
    (change,) = result["messages"]
    assert Path(change["source"]).name == "a-later.eml"
    assert change["changed"] == ["recipients", "templates", "suppressed"]
    assert change["old"]["templates"] == [] and change["new"]["templates"] == ["education"]
    assert change["old"]["suppressed"] == ["reply"] and change["new"]["suppressed"] == []
    assert change["old"]["why"] == ["reply: budi.santoso@gmail.com already got the 'education' reply within 24 h"]
    assert main(["replay", "--old", old, "--new", new, str(corpus)]) == 0
    out = capsys.readouterr().out
    assert "    suppressed: -reply: budi.santoso@gmail.com already got the 'education' reply within 24 h" in out


def test_replay_suppresses_under_both_configs_alike(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Two mails 10 minutes apart: the second reply is suppressed under either config, so nothing differs; the
    text report still runs through both mails."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "1.eml").write_bytes(_mail(0, "<one@mail.gmail.com>"))
    (corpus / "2.eml").write_bytes(_mail(10, "<two@mail.gmail.com>", "Internet masih mati"))
    old = str(CONFIG_DIR / "emailrouter.yaml")
    assert main(["replay", "--old", old, "--new", str(short_window(tmp_path)), str(corpus)]) == 0
    assert "2 mails replayed, 0 handled differently (none)" in capsys.readouterr().out


def test_replay_skips_a_duplicate_as_the_daemon_does(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The same mail twice (same Message-ID and content) is a duplicate: listed, not compared, and its second copy
    plans no reply that could suppress a later mail's."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "1.eml").write_bytes(_mail(0, "<one@mail.gmail.com>"))
    (corpus / "1-copy.eml").write_bytes(_mail(0, "<one@mail.gmail.com>"))
    (corpus / "2.eml").write_bytes(_mail(120, "<two@mail.gmail.com>", "Internet masih mati"))
    old, new = str(CONFIG_DIR / "emailrouter.yaml"), str(short_window(tmp_path))
    assert main(["replay", "--old", old, "--new", new, "--json", str(corpus)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [Path(d).name for d in result["duplicates"]] == ["1.eml"]  # the later of the two in name order
    assert [Path(m["source"]).name for m in result["messages"]] == ["2.eml"]
    assert main(["replay", "--old", old, "--new", new, str(corpus)]) == 0
    assert "1 duplicates of an earlier mail, not compared" in capsys.readouterr().out
