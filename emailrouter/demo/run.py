"""`emailrouter demo`: the real daemon code, one full pass, over real IMAP and SMTP on loopback.

An IMAP server (pymap, maildir) runs in-process, seeded with the shipped sample mails; an SMTP sink
(aiosmtpd) stores what it receives as .eml files. No system packages, no root, no network.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import sys
from pathlib import Path

from emailrouter.config.credentials import Secret
from emailrouter.config.loader import Config, load_config
from emailrouter.config.settings import (
    DeliveryConfig,
    Endpoint,
    HousekeepingConfig,
    MailboxConfig,
    Settings,
    SmtpConfig,
)
from emailrouter.core.errors import ConfigError
from emailrouter.service import logs
from emailrouter.service.daemon import run_once
from emailrouter.service.router import PollReport, Router
from emailrouter.service.smtp import SmtpTransport
from emailrouter.service.store import Store


def demo(out: Path, config_path: Path) -> int:
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return 1
    samples = sorted((config_path.parent / "samples").glob("*.eml"))
    if not samples:
        print(f"error: no sample mails in {config_path.parent / 'samples'}", file=sys.stderr)
        return 1
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "sent").is_dir())):
        print(f"error: {out}: exists and is not an earlier demo's output; choose another --out", file=sys.stderr)
        return 1  # a demo run starts by deleting its folder: never one it did not make
    print(f"config: {config_path} (sample mails from {config_path.parent / 'samples'})")
    logs.configure("warning", stream=sys.stderr, plain=True)
    return asyncio.run(_demo(out, config, samples))


async def _demo(out: Path, base: Config, samples: list[Path]) -> int:
    from emailrouter.demo.imap import demo_imap
    from emailrouter.demo.sink import DemoSink

    if out.exists():
        shutil.rmtree(out)
    sent = out / "sent"
    sent.mkdir(parents=True)
    async with DemoSink(sent) as sink, demo_imap(out / "imap", [p.read_bytes() for p in samples]) as imap:
        secret = out / "imap-password"
        secret.write_text(imap.password + "\n")
        secret.chmod(0o600)
        settings = Settings(
            mailboxes=(
                MailboxConfig(
                    name="demo",
                    endpoint=Endpoint(imap.host, imap.port, "plain", 10.0, None),
                    username=imap.username,
                    password=Secret("file", str(secret.resolve())),
                    oauth2=None,
                    folder="INBOX",
                    processed="keyword",
                    keyword="$Routed",
                    move_to="Routed",
                    poll_interval=60.0,
                    idle=False,
                    batch_size=200,
                ),
            ),
            smtp=SmtpConfig(Endpoint(sink.host, sink.port, "plain", 10.0, None), None, None),
            state_path=out / "state.sqlite3",
            delivery=DeliveryConfig(),
            housekeeping=HousekeepingConfig(),
        )
        config = dataclasses.replace(base, settings=settings)
        store = Store(settings.state_path)
        assert settings.smtp is not None
        router = Router(config, store, SmtpTransport(settings.smtp))
        print(f"IMAP server (pymap, in-process): {imap.host}:{imap.port}, INBOX seeded with {len(samples)} mails")
        print(f"SMTP sink (aiosmtpd):            {sink.host}:{sink.port}, saving to {sent}")
        print("(both on loopback without TLS: a demo setting; a real config defaults to verified TLS)\n")
        status, reports = await run_once(router)
        counts = store.counts()
        try:
            _print_table(samples, reports[0], store)
        finally:
            store.close()
    received = len(list(sent.glob("*.eml")))
    print(
        f"\n{len(samples)} mails in, {received} mails sent, outcomes: "
        + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    )
    print(f"The sent mail is in {sent}/ (open the .eml files with any mail program).")
    print(
        f"What was decided and sent is recorded in {out / 'state.sqlite3'}; each demo run starts afresh "
        "(the daemon, `emailrouter run`, keeps its state and never sends twice)."
    )
    return status


def _print_table(samples: list[Path], report: PollReport, store: Store) -> None:
    """One line per sample mail, then each message planned for it with what became of it (the store's word:
    sent, pending, failed, uncertain) and each one the guards or the reply limits held back, with why."""
    header = f"{'mail':<48} {'segment':<8} {'intent':<12} {'hard':<5} rule"
    print(header)
    print("-" * len(header) + "-" * 30)
    by_uid = {r["uid"]: r for r in report.rows}
    for uid, sample in enumerate(samples, start=1):  # the demo server gives UID 1 to the first sample
        row = by_uid.get(uid)
        if row is None:
            print(f"{sample.name[:48]:<48} quarantined: a stage broke on it (see the failure unit's notice)")
            continue
        print(
            f"{sample.name[:48]:<48} {row['segment']:<8} {row['intent']:<12} "
            f"{'YES' if row['hard'] else 'no':<5} {row['rule']}"
        )
        for send in store.sends(row["key"]):
            print(f"{'':<10}-> {send.kind:<9} {', '.join(send.recipients)}  [{send.status}]")
        for kind, reason in row["suppressed"]:
            print(f"{'':<10}-x {kind:<9} not sent: {reason}")
