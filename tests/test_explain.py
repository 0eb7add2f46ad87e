"""`emailrouter explain` reports a reply that cannot be rendered, per mail, instead of crashing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from emailrouter.ops.cli import main
from tests.broken_template import CALM_MAIL, URGENT_MAIL, break_template


def _mails(folder: Path) -> tuple[str, str]:
    urgent, calm = folder / "urgent.eml", folder / "calm.eml"
    urgent.write_bytes(URGENT_MAIL)
    calm.write_bytes(CALM_MAIL)
    return str(urgent), str(calm)


def test_explain_text_names_the_failed_render_and_explains_the_other_mail(
    config_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The failing mail shows its forward and a NOT-rendered reply line with the reason; the next file follows."""
    tpl, line = break_template(config_copy.parent)
    urgent, calm = _mails(tmp_path)
    assert main(["explain", "-c", str(config_copy), urgent, calm]) == 0
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    first, second = captured.out.split(f"== {calm}")
    assert "  -> forward   to dcs-care@cc.example.co.id" in first
    assert "  -> reply" not in first
    assert f"  !! reply education (id) not rendered: {tpl}:{line}: 'urgent_note' is undefined" in first
    assert "  -> reply     to budi.santoso@gmail.com" in second and "!!" not in second


def test_explain_json_lists_the_failed_render(
    config_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--json has a `failed` list per mail: template, language, reason and the reply's Message-ID."""
    tpl, line = break_template(config_copy.parent)
    urgent, calm = _mails(tmp_path)
    assert main(["explain", "-c", str(config_copy), "--json", urgent, calm]) == 0
    first, second = json.loads(capsys.readouterr().out)
    assert [a["type"] for a in first["actions"]] == ["forward"]
    (failed,) = first["failed"]
    assert failed["type"] == "reply" and failed["template"] == "education" and failed["language"] == "id"
    assert failed["reason"] == f"{tpl}:{line}: 'urgent_note' is undefined"
    assert failed["message_id"].endswith(".reply@cc.example.co.id>")
    assert second["failed"] == [] and [a["type"] for a in second["actions"]] == ["reply", "forward"]


def test_explain_reports_a_mail_a_stage_cannot_handle_and_goes_on(
    config_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Should a stage raise on one file, explain names the file and the error, explains the rest, and exits 1."""
    import emailrouter.ops.cli

    real = emailrouter.ops.cli.route

    def route(raw: bytes, *args: object, **kwargs: object) -> object:
        if b"URGENT" in raw:
            raise ValueError("a stage broke")
        return real(raw, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(emailrouter.ops.cli, "route", route)
    urgent, calm = _mails(tmp_path)
    assert main(["explain", "-c", str(config_copy), urgent, calm]) == 1
    captured = capsys.readouterr()
    assert f"error: {urgent}: cannot be routed: ValueError: a stage broke" in captured.err
    assert f"== {calm}" in captured.out and f"== {urgent}" not in captured.out
