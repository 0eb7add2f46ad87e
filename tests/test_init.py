"""`emailrouter init DIR` writes the shipped, commented config (the package data) and never overwrites."""

from __future__ import annotations

from pathlib import Path

import pytest

from emailrouter.config.shipped import SHIPPED_DIR, shipped_config, starter_files
from emailrouter.ops.cli import main
from tests.conftest import CONFIG_DIR


def test_the_package_data_is_the_repositorys_config() -> None:
    """The shipped folder is config/ itself (one copy), with the main file, the demo's samples and rule tests."""
    assert SHIPPED_DIR.resolve() == CONFIG_DIR.resolve()
    names = {str(p) for p in starter_files()}
    assert {"emailrouter.yaml", "rules.yaml", "signals.yaml", "customers.csv", "tests/rows.yaml"} <= names
    assert any(n.startswith("samples/") and n.endswith(".eml") for n in names)
    assert any(n.startswith("templates/") for n in names)
    assert not any(n.startswith("state/") for n in names)


def test_init_writes_a_config_that_checks_and_names_itself(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every shipped file lands in DIR (made if missing); `check` and the rule tests pass on it as written."""
    target = tmp_path / "etc" / "emailrouter"
    assert main(["init", str(target)]) == 0
    assert sorted(p.relative_to(target) for p in target.rglob("*") if p.is_file()) == starter_files()
    main_file = (target / "emailrouter.yaml").read_text(encoding="utf-8")
    assert f"emailrouter check -c {target / 'emailrouter.yaml'}" in main_file
    assert "config/emailrouter.yaml" not in main_file
    assert (target / "rules.yaml").read_bytes() == (SHIPPED_DIR / "rules.yaml").read_bytes()
    assert f"emailrouter check -c {target / 'emailrouter.yaml'}" in capsys.readouterr().out
    assert main(["check", "-c", str(target / "emailrouter.yaml")]) == 0
    assert main(["test", "-c", str(target / "emailrouter.yaml")]) == 0


def test_init_refuses_to_overwrite_and_names_what_exists(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """With rules.yaml and a templates file in the way, init writes nothing and names both."""
    (tmp_path / "rules.yaml").write_text("mine\n")
    (tmp_path / "templates").write_text("a file where the folder goes\n")
    assert main(["init", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "would overwrite 2 existing file(s): rules.yaml, templates; nothing written" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rules.yaml", "templates"]
    assert (tmp_path / "rules.yaml").read_text() == "mine\n"


def test_init_into_an_existing_empty_folder_is_fine(tmp_path: Path) -> None:
    """An empty folder (made by `install -d`, say) is not "existing files"."""
    assert main(["init", str(tmp_path)]) == 0
    assert (tmp_path / "emailrouter.yaml").is_file()


def test_demo_uses_the_shipped_config_without_c(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`demo` run away from any config folder takes the package's config, and never deletes a folder it did
    not make (it starts by emptying --out)."""
    monkeypatch.chdir(tmp_path)
    mine = tmp_path / "notes"
    mine.mkdir()
    (mine / "keep.txt").write_text("precious\n")
    assert main(["demo", "--out", str(mine)]) == 1
    assert "exists and is not an earlier demo's output" in capsys.readouterr().err
    assert (mine / "keep.txt").read_text() == "precious\n"
    from emailrouter.ops import cli

    seen: list[Path] = []

    def fake_demo(out: Path, config: Path) -> int:
        seen.append(config)
        return 0

    monkeypatch.setattr("emailrouter.demo.run.demo", fake_demo)
    assert cli.main(["demo"]) == 0
    assert seen == [shipped_config()]


def test_demo_without_the_demo_extra_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without pymap (the [demo] extra not installed), demo names the extra instead of a traceback."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pymap" else real(name, *a))
    assert main(["demo"]) == 1
    assert "need pymap (the demo extra): pip install 'emailrouter[demo]'" in capsys.readouterr().err
