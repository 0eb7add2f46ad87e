"""`emailrouter train imap:FOLDER` against a real Dovecot: agents teach the router by filing mail into label folders."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from emailrouter.config.loader import load_config
from emailrouter.config.modelfile import load_model
from emailrouter.ops.cli import main
from emailrouter.ops.training import read_corpus
from tests.conftest import CONFIG_DIR, eml
from tests.support.dovecot import Dovecot

pytest.importorskip("sklearn")

FILED = {
    "Training/fault": ["internet mati dari pagi", "wifi lemot parah sejak kemarin", "lampu los merah, gk bisa konek"],
    "Training/information": ["berapa harga paket 50 mbps?", "bagaimana cara bayar tagihan?", "kapan jatuh tempo?"],
    "Training/request": ["mohon pasang baru di rumah", "tolong upgrade ke 100 mbps", "saya mau pindah alamat"],
    "Training/unknown": ["terima kasih min", "halo", "ok sudah normal"],
    "Training/hard/fault": ["SUDAH 3X LAPOR INTERNET MATI!!!"],
}


def _config(tmp: Path, dovecot: Dovecot) -> Path:
    target = tmp / "config"
    shutil.copytree(CONFIG_DIR, target, ignore=shutil.ignore_patterns("samples", "tests"))
    (tmp / "imap-password").write_text(dovecot.users["router"] + "\n")
    main_file = target / "emailrouter.yaml"
    main_file.write_text(
        main_file.read_text()
        + f"""
mailboxes:
  - name: jkt
    host: 127.0.0.1
    port: {dovecot.port}
    security: plain
    timeout: 10
    username: router
    password: {{file: {tmp / "imap-password"}}}
    idle: false
smtp:
  host: 127.0.0.1
  port: 1
  security: plain
state:
  path: {tmp / "state.sqlite3"}
"""
    )
    return main_file


def _mail(n: int, text: str) -> bytes:
    return eml(
        "From: Pelanggan <pelanggan@example.com>",
        "To: cs@cc.example.co.id",
        f"Subject: pesan {n}",
        f"Message-ID: <train-{n}@example.com>",
        body=text,
    )


def test_train_from_imap_label_folders_reads_only_and_writes_a_model(
    tmp_path: Path, dovecot: Dovecot, capsys: pytest.CaptureFixture[str]
) -> None:
    """Subfolders give the labels (hard/<intent> gives both; a mail only in hard/ teaches hard alone, a copy in an
    intent folder gives it its intent); nothing on the server changes; the model is written and loads."""
    dovecot.append("router", "Training/hard", _mail(1, "internet mati dari pagi"))  # a copy of a fault mail
    dovecot.append("router", "Training/hard", _mail(99, "dasar provider sampah, bodoh semua"))  # hard only
    n = 0
    for folder, texts in FILED.items():
        for text in texts:
            n += 1
            dovecot.append("router", folder, _mail(n, text))
    dovecot.append("router", "INBOX", _mail(100, "not a training mail"))
    folders = [*FILED, "Training/hard", "INBOX"]
    before = {f: dovecot.flags("router", f) for f in folders}
    path = _config(tmp_path, dovecot)

    examples = {e.id: e for e in read_corpus("imap:Training", load_config(path))}
    assert len(examples) == 14
    assert (examples["<train-1@example.com>"].intent, examples["<train-1@example.com>"].hard) == ("fault", True)
    assert (examples["<train-99@example.com>"].intent, examples["<train-99@example.com>"].hard) == (None, True)
    assert (examples["<train-13@example.com>"].intent, examples["<train-13@example.com>"].hard) == ("fault", True)
    assert (examples["<train-4@example.com>"].intent, examples["<train-4@example.com>"].hard) == ("information", False)
    assert examples["<train-4@example.com>"].text.strip() == "berapa harga paket 50 mbps?"

    out = tmp_path / "model.json"
    assert main(["train", "imap:Training", "-c", str(path), "-o", str(out), "--folds", "2"]) == 0
    printed = capsys.readouterr().out
    assert "14 examples (fault 4, information 3, request 3, unknown 3, hard-only 1; hard 3)" in printed
    model = load_model(out)
    assert model.training["examples"] == 14
    assert {f: dovecot.flags("router", f) for f in folders} == before  # EXAMINE and BODY.PEEK only

    assert main(["train", "imap:Nothing", "-c", str(path), "-o", str(tmp_path / "x.json")]) == 1
    assert "imap:Nothing: no such folder" in capsys.readouterr().err
