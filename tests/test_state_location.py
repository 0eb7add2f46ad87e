"""One rule for where the state store is (state.path, $STATE_DIRECTORY, the service's folder, next to the
config), the same for the daemon and every command that reads the state; its files are private."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from emailrouter.config import settings
from emailrouter.config.loader import load_config
from emailrouter.config.settings import state_location
from emailrouter.ops.cli import main
from emailrouter.service.store import Store


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_state_path_in_the_config_wins_over_everything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A configured state.path is used as written (relative to the config), whatever the environment says."""
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "systemd"))
    monkeypatch.setenv("INVOCATION_ID", "0123abcd")
    monkeypatch.setenv("WHERE", str(tmp_path / "var"))
    assert state_location("db/s.sqlite3", tmp_path / "etc").path == tmp_path / "etc" / "db" / "s.sqlite3"
    assert state_location("$WHERE/s.sqlite3", tmp_path).path == tmp_path / "var" / "s.sqlite3"


def test_state_directory_comes_next(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without state.path, $STATE_DIRECTORY (the first of systemd's colon-separated list) holds the file."""
    monkeypatch.setenv("STATE_DIRECTORY", f"{tmp_path / 'one'}:{tmp_path / 'two'}")
    monkeypatch.setenv("INVOCATION_ID", "0123abcd")
    where = state_location(None, tmp_path / "etc")
    assert where.path == tmp_path / "one" / "emailrouter.sqlite3"
    assert "$STATE_DIRECTORY" in where.reason


def test_a_service_without_a_state_directory_uses_var_lib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run by systemd ($INVOCATION_ID) without StateDirectory=, the state is in the service's folder."""
    monkeypatch.setattr(settings, "SERVICE_STATE_DIRECTORY", tmp_path / "var-lib-emailrouter")
    monkeypatch.setenv("INVOCATION_ID", "0123abcd")
    where = state_location(None, tmp_path / "etc")
    assert where.path == tmp_path / "var-lib-emailrouter" / "emailrouter.sqlite3"
    assert "$INVOCATION_ID" in where.reason


def test_a_shell_reads_the_services_state_where_the_service_has_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From a shell, the service's folder is used once it exists (a link, as DynamicUser= makes, counts)."""
    service = tmp_path / "var-lib-emailrouter"
    monkeypatch.setattr(settings, "SERVICE_STATE_DIRECTORY", service)
    assert state_location(None, tmp_path / "etc").path == tmp_path / "etc" / "state" / "emailrouter.sqlite3"
    (tmp_path / "private").mkdir()
    service.symlink_to(tmp_path / "private")
    where = state_location(None, tmp_path / "etc")
    assert where.path == service / "emailrouter.sqlite3"
    assert "exists" in where.reason


def test_the_daemon_and_the_commands_that_read_state_agree(
    config_copy: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """What the service wrote under StateDirectory= is what `stats` from a shell (no systemd variables) reads."""
    service = config_copy.parent.parent / "var-lib-emailrouter"
    monkeypatch.setattr(settings, "SERVICE_STATE_DIRECTORY", service)
    service.mkdir(mode=0o700)
    monkeypatch.setenv("STATE_DIRECTORY", str(service))
    monkeypatch.setenv("INVOCATION_ID", "0123abcd")
    written = load_config(config_copy).settings.state_path  # as the daemon under systemd sees it
    Store(written).close()
    monkeypatch.delenv("STATE_DIRECTORY")
    monkeypatch.delenv("INVOCATION_ID")
    assert load_config(config_copy).settings.state_path == written
    assert main(["stats", "-c", str(config_copy)]) == 0
    assert main(["check", "-c", str(config_copy)]) == 0
    assert f"state: {written}: exists; chosen by {service} exists" in capsys.readouterr().out


def test_check_says_where_the_state_is_and_why(config_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`check` prints the state's file, whether it exists yet and which step of the rule chose it."""
    assert main(["check", "-c", str(config_copy)]) == 0
    expected = config_copy.parent / "state" / "emailrouter.sqlite3"
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("state: "))
    assert line.startswith(f"state: {expected}: not created yet; chosen by the default next to the config")


def test_a_missing_state_store_is_named_with_the_rule_that_chose_it(
    config_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`stats` without a state store says where it looked and why there, not only "no state store"."""
    assert main(["stats", "-c", str(config_copy)]) == 1
    err = capsys.readouterr().err
    assert f"no state store at {config_copy.parent / 'state' / 'emailrouter.sqlite3'}: not created yet" in err
    assert "chosen by the default next to the config" in err


def test_a_new_state_store_is_0600_in_a_0700_folder(tmp_path: Path) -> None:
    """The folder the store creates is 0700 and the database, its WAL and shared-memory files 0600."""
    old = os.umask(0o022)
    try:
        store = Store(tmp_path / "var" / "state" / "emailrouter.sqlite3")
        store.close()
    finally:
        os.umask(old)
    folder = tmp_path / "var" / "state"
    assert _mode(folder) == 0o700
    files = sorted(folder.iterdir())
    assert files and {p.name for p in files} >= {"emailrouter.sqlite3"}
    assert {p.name: _mode(p) for p in files} == {p.name: 0o600 for p in files}
    assert store.notes == []


def test_a_state_file_others_can_read_is_tightened_and_said(tmp_path: Path) -> None:
    """An existing state file that is group/world readable becomes 0600, with a note naming it and its mode."""
    path = tmp_path / "emailrouter.sqlite3"
    Store(path).close()
    path.chmod(0o644)
    store = Store(path)
    store.close()
    assert _mode(path) == 0o600
    assert store.notes == [f"state file {path} was readable by others (mode 644): now 600"]


def test_a_state_folder_others_can_read_is_reported_not_changed(tmp_path: Path) -> None:
    """A shared folder named by state.path keeps its mode (it may hold other things) and gets a warning."""
    folder = tmp_path / "shared"
    folder.mkdir()
    folder.chmod(0o755)
    store = Store(folder / "emailrouter.sqlite3")
    store.close()
    assert _mode(folder) == 0o755
    assert _mode(folder / "emailrouter.sqlite3") == 0o600
    assert len(store.notes) == 1 and f"state folder {folder} is open to others (mode 755)" in store.notes[0]


def test_the_run_lock_is_private_too(config_copy: Path) -> None:
    """The lock `run` holds next to the state is created 0600, in the 0700 folder."""
    from emailrouter.ops.cli import _single_instance

    settings = load_config(config_copy).settings
    state = settings.state_path
    handle = _single_instance(settings)
    try:
        assert _mode(state.parent) == 0o700
        assert _mode(state.with_name(state.name + ".lock")) == 0o600
    finally:
        handle.close()
