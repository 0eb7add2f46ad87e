"""The command line: one `cmd_*` function per command, each a thin wiring of the other layers, and the
argument parser. Over 400 lines because it is every command's wiring in one place (the --help text
and the README's command list are checked against this parser).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emailrouter import __version__
from emailrouter.config.loader import Config, find_config, load_config
from emailrouter.config.modelfile import save_model
from emailrouter.core.errors import ConfigError, EmailRouterError, MailboxError, StateError
from emailrouter.core.explain import as_json, as_text
from emailrouter.core.model import MessageView
from emailrouter.core.pipeline import NO_MEMORY, Memory, read, route

if TYPE_CHECKING:
    from emailrouter.config.settings import MailboxConfig, Settings
    from emailrouter.service.router import PollReport, Router
    from emailrouter.service.store import MessageRecord


SUMMARY = """emailrouter: route a contact centre's customer mail by a decision table ops edit in YAML.

Set up and check:  init, check, schema, layout, demo
Try a change:      explain, test, replay, evaluate, train
Run:               run (the daemon; --once for one pass), quarantine
Look back:         stats, show, report

`emailrouter COMMAND --help` tells more.
"""


def _load(args: argparse.Namespace) -> Config | None:
    try:
        return load_config(find_config(args.config), directory=getattr(args, "directory", None))
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return None


def cmd_check(args: argparse.Namespace) -> int:
    config = _load(args)
    if config is None:
        return 1
    for warning in config.warnings:
        print(str(warning), file=sys.stderr)
    if _unusable_secrets(config, "check"):
        return 1
    seg = config.segmentation
    print(
        f"OK {config.path}: {len(config.table.rows)} rules ({config.table.hit_policy} hit), "
        f"{len(seg.directory)} directory entries, {len(seg.domain_rules)} domain rules, "
        f"{len(config.signals.intent_signals) + len(config.signals.hard_signals)} signals, "
        f"{len(config.units)} units, {len(config.templates.names)} templates; version {config.version}"
    )
    from emailrouter.service.statefiles import presence

    state = config.settings.state_path
    print(f"state: {state}: {presence(state)}; chosen by {config.settings.state_reason}")
    return 0


# what the router remembers about a mail (raw, parsed): its sender's memory, and the mail it duplicates, if any
Remember = Callable[[bytes, MessageView], tuple[Memory, str | None]]


def _memory_source(
    args: argparse.Namespace, config: Config, now: datetime, stack: contextlib.ExitStack
) -> tuple[bool, Remember | None]:
    """(ok, what the router remembers about a mail): from --history FILE, from the state store (--state, read
    the way the daemon's processor reads it; closed with `stack`), or nothing (None). Not ok: said why."""
    loop = config.settings.loop
    if args.history:
        from emailrouter.config.history import load_history

        history, problems = load_history(Path(args.history))
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        if history is None:
            return False, None
        return True, lambda raw, view: (history.memory(view.sender.address if view.sender else None, now, loop), None)
    if args.state:
        from emailrouter.core.dedupe import content_hash, dedupe_id, duplicate_of
        from emailrouter.service.memory import Batch

        store = _open_state(config)
        if store is None:
            return False, None
        stack.callback(store.close)
        batch = Batch(store)  # nothing is planned in it, so nothing is written

        def remember(raw: bytes, view: MessageView) -> tuple[Memory, str | None]:
            earlier = batch.seen(dedupe_id(view.message_id, raw))
            return batch.memory(view, now, config.signals.history_days, loop), duplicate_of(content_hash(raw), earlier)

        return True, remember
    return True, None


def _unusable_secrets(config: Config, command: str) -> bool:
    """Say which secrets cannot be read (file, line, key) and True if there are any: `check` fails on them and
    the daemon does not start (it would fail at its first login, and go on failing)."""
    for problem in config.credential_problems:
        print(f"error: {problem}", file=sys.stderr)
    if config.credential_problems:
        print(
            f"{command}: fix the secrets above, or run as the service's user with its environment "
            "(Environment=, EnvironmentFile=, LoadCredential=); retrying does not help until then",
            file=sys.stderr,
        )
    return bool(config.credential_problems)


def cmd_explain(args: argparse.Namespace) -> int:
    config = _load(args)
    if config is None:
        return 1
    now = datetime.now(UTC)
    with contextlib.ExitStack() as stack:
        ok, remember = _memory_source(args, config, now, stack)
        return _explain(args, config, now, remember) if ok else 1


def _explain(args: argparse.Namespace, config: Config, now: datetime, remember: Remember | None) -> int:
    results = []
    status = 0
    for name in args.files:
        try:
            raw = Path(name).read_bytes()
        except OSError as exc:
            print(f"error: {name}: {exc.strerror or exc}", file=sys.stderr)
            status = 2
            continue
        try:
            memory, first = remember(raw, read(raw, config)) if remember is not None else (None, None)
            routing = route(raw, config, now, memory or NO_MEMORY)
        except Exception as exc:  # a stage broke on this mail: say so, and explain the other files
            print(f"error: {name}: cannot be routed: {type(exc).__name__}: {exc}", file=sys.stderr)
            status = max(status, 1)
            continue
        handled = (
            f"already handled, as {first}: the daemon takes it for a duplicate and sends nothing (what it remembers"
            " includes what it did for this very mail)"
        )
        if args.json:
            results.append(
                {**as_json(routing, name, config.version, memory), **({"duplicate_of": first} if first else {})}
            )
        else:
            print(as_text(routing, name, memory, now) + (f"\n  duplicate:  {handled}" if first else ""))
            print()
    if args.json:
        out = results[0] if len(results) == 1 and len(args.files) == 1 else results
        print(json.dumps(out, ensure_ascii=False, indent=2))
    return status


def cmd_run(args: argparse.Namespace) -> int:
    import asyncio

    from emailrouter.service import logs
    from emailrouter.service.daemon import Service, make_router, run_once

    logs.configure(args.log_level)
    config = _load(args)
    if config is None:
        return 1
    if not config.settings.mailboxes:
        print(f"error: {config.path}: mailboxes: none configured, nothing to run", file=sys.stderr)
        return 1
    if _unusable_secrets(config, "run"):
        return 1
    try:
        lock = _single_instance(config.settings) if not args.dry_run else None
        if lock is False:
            return 1
        router = make_router(config, dry_run=args.dry_run)
    except StateError as exc:  # a read-only or full state directory: one line, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        if args.once:
            status, reports = asyncio.run(run_once(router))
            for report in reports:
                state = "ok" if report.ok else f"FAILED: {report.error}"
                print(
                    f"{report.mailbox}: {state}; fetched {report.fetched}, planned {report.planned}, "
                    f"duplicates {report.duplicates}, quarantined {report.quarantined}, marked {report.marked}",
                    file=sys.stderr,
                )
            for problem in router.problems():  # the relay, the state store, the failure unit
                print(f"still down: {problem} (what waits for it is kept and goes out later)", file=sys.stderr)
            return status
        return asyncio.run(Service(config.path, router).serve())
    finally:
        router.store.close()


def _quarantined_in(rows: Sequence[MessageRecord], mailbox: MailboxConfig, wanted: set[int]) -> list[int]:
    """The wanted UIDs that are quarantined in this mailbox's folder."""
    return sorted(r.key.uid for r in rows if r.key.in_folder(mailbox.account, mailbox.folder) and r.key.uid in wanted)


def cmd_quarantine(args: argparse.Namespace) -> int:
    import asyncio

    from emailrouter.service import logs
    from emailrouter.service.daemon import make_router

    logs.configure("warning", stream=sys.stderr, plain=True)
    config = _load(args)
    if config is None:
        return 1
    try:
        # retry sends and marks like the daemon does: under the daemon's lock, or through the daemon holding it
        # (which checks the secrets in its own environment when it reloads); None on PostgreSQL (no lock file)
        lock = _single_instance(config.settings, quiet=True) if args.action == "retry" else None
        if lock is False:
            return _retry_in_daemon(config, args)
        if lock is not None and _unusable_secrets(config, "quarantine retry"):
            lock.close()
            return 1
        if lock is not None:
            print(
                f"no daemon runs on {config.settings.state_path}: retrying here, "
                f"under the config on disk ({config.path}, version {config.version})"
            )
        router = make_router(config, dry_run=False)
    except StateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        by_account = {m.account: m for m in config.settings.mailboxes}
        rows = router.store.quarantined()
        if args.action == "list":
            if not rows:
                print("quarantine is empty")
            folders = {(r.key.account, r.key.folder) for r in rows}
            checkpoints = {folder: router.store.checkpoint(*folder) for folder in folders}  # one read a folder
            for row in rows:
                mailbox = by_account.get(row.key.account)
                name = mailbox.name if mailbox else row.key.account
                checkpoint = checkpoints[row.key.account, row.key.folder]
                stale = checkpoint is not None and checkpoint.uidvalidity != row.key.uidvalidity
                note = "\t(an earlier UIDVALIDITY: the UID names another mail now; retry skips it)" if stale else ""
                when = f"{row.received_at:%Y-%m-%dT%H:%M:%S}"
                print(f"{name}\t{row.key.folder}\tuid {row.key.uid}\t{when}\t{row.error}{note}")
            return 0
        wanted = {int(u) for u in args.uids}
        status = 0
        for mailbox in config.settings.mailboxes:
            if args.mailbox and mailbox.name != args.mailbox:
                continue
            uids = _quarantined_in(rows, mailbox, wanted)
            if not uids:
                continue
            try:
                report = asyncio.run(_retry(router, mailbox, uids))
            except (MailboxError, StateError) as exc:  # held by a running daemon (PostgreSQL), or unreachable
                print(f"error: {exc}", file=sys.stderr)
                status, wanted = 1, wanted - set(uids)
                continue
            print(
                f"{mailbox.name}: retried {report.fetched}: planned {report.planned}, duplicates {report.duplicates}, "
                f"quarantined again {report.quarantined}"
            )
            status |= 1 if report.quarantined else 0
            wanted -= set(uids)
        for uid in sorted(wanted):
            print(f"uid {uid}: not in the quarantine", file=sys.stderr)
            status = 1
        return status
    finally:
        router.store.close()
        if lock is not None:
            lock.close()


def _retry_in_daemon(config: Config, args: argparse.Namespace) -> int:
    """`quarantine retry` while `run` holds the state: the daemon reloads the config on disk, then retries
    (service/retries.py). What it answers is printed as a retry here would print it."""
    import os
    import signal

    from emailrouter.service import retries
    from emailrouter.service.store import Store

    state = config.settings.state_path
    pid = retries.daemon_pid(state)
    if pid is None:
        print(
            f"error: another `emailrouter run` is using {state} and left no pid in its lock file; stop it first",
            file=sys.stderr,
        )
        return 1
    store = Store(state)
    try:
        rows = store.quarantined()
    finally:
        store.close()
    wanted, asked, status = {int(u) for u in args.uids}, [], 0
    for mailbox in config.settings.mailboxes:
        uids = _quarantined_in(rows, mailbox, wanted)
        if uids and (not args.mailbox or mailbox.name == args.mailbox):
            try:
                asked.append((mailbox.name, retries.request(state, mailbox.name, uids)))
            except OSError as exc:
                print(f"error: cannot leave a request next to {state}: {exc.strerror or exc}", file=sys.stderr)
                return 1
            wanted -= set(uids)
    for uid in sorted(wanted):
        print(f"uid {uid}: not in the quarantine", file=sys.stderr)
        status = 1
    if not asked:
        return status
    print(
        f"the daemon (pid {pid}) runs on {state}: it reloads the config on disk ({config.path}, version "
        f"{config.version}) and retries there; the config it ran until now is not used"
    )
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as exc:
        for _, request_id in asked:
            retries.withdraw(state, request_id)
        print(f"error: cannot signal the daemon (pid {pid}): {exc.strerror or exc}; run as its user", file=sys.stderr)
        return 1
    for name, request_id in asked:
        result = retries.await_answer(state, request_id, args.wait)
        if result is None:
            taken = not retries.withdraw(state, request_id)
            print(
                f"error: {name}: no answer from the daemon in {args.wait:g} s; "
                + ("it took the request and goes on with it (its log: quarantine_retried)" if taken else
                   "it did not take the request (withdrawn): is the config on disk accepted? see its log"),
                file=sys.stderr,
            )  # fmt: skip
            status = 1
        elif "rejected" in result:
            print(
                "error: the daemon rejected the config on disk and keeps the one it runs; nothing retried:",
                file=sys.stderr,
            )
            for problem in result["rejected"]:
                print(f"  {problem}", file=sys.stderr)
            status = 1
        elif not result["ok"]:
            print(f"error: {name}: the daemon could not retry: {result['error']}", file=sys.stderr)
            status = 1
        else:
            again = result.get("quarantined", 0)
            print(
                f"{name}: retried {result.get('retried', 0)} in the daemon under version {result['version']}: "
                f"planned {result.get('planned', 0)}, duplicates {result.get('duplicates', 0)}, "
                f"quarantined again {again}"
            )
            status |= 1 if again else 0
    return status


async def _retry(router: Router, mailbox: MailboxConfig, uids: list[int]) -> PollReport:
    try:
        return await router.retry(mailbox, uids)
    finally:
        await router.close()


def cmd_test(args: argparse.Namespace) -> int:
    from emailrouter.core.errors import Problem
    from emailrouter.ops.ruletests import collect, run_file

    config = _load(args)
    if config is None:
        return 1
    files = collect([Path(p) for p in args.paths] or [config.path.parent / "tests"])
    if not files:
        print("error: no case files (*.yaml) found", file=sys.stderr)
        return 1
    problems: list[Problem] = []
    results = [result for f in files for result in run_file(f, config, problems)]
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    width = max((len(r.name) for r in results), default=10)
    for result in results:
        print(f"{'PASS' if result.passed else 'FAIL'}  {result.name:<{width}}  {result.file}:{result.line}")
        for difference in result.differences:
            print(f"        {difference}")
    failed = sum(1 for r in results if not r.passed)
    print(
        f"rule tests: {len(results) - failed} passed, {failed} failed"
        + (f", {len(problems)} errors" if problems else "")
    )
    return 1 if failed or problems else 0


def cmd_replay(args: argparse.Namespace) -> int:
    from emailrouter.ops import replay
    from emailrouter.service import logs

    logs.configure("warning", stream=sys.stderr, plain=True)  # stdout is the diff (maybe JSON) alone
    try:
        old, new = load_config(args.old), load_config(args.new)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return 1
    if args.source.startswith("imap:"):
        source = replay.imap_folder(new, args.source[5:])
        total = None
    else:
        folder = Path(args.source)
        if not folder.is_dir():
            print(f"error: {folder}: not a folder of .eml files (or imap:MAILBOX[/FOLDER])", file=sys.stderr)
            return 1
        total = sum(1 for _ in folder.rglob("*.eml"))
        source = replay.eml_folder(folder)
    try:
        result = replay.replay(source, old, new, replay.Progress(total, force=args.progress))
    except (EmailRouterError, OSError) as exc:  # an IMAP source that cannot be read
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result.as_json(), ensure_ascii=False, indent=2) if args.json else replay.as_text(result))
    return 0


def _store_of(args: argparse.Namespace) -> tuple[Config, Any] | None:
    config = _load(args)
    if config is None:
        return None
    store = _open_state(config)
    return None if store is None else (config, store)


def _open_state(config: Config) -> Any | None:
    """The config's state store (SQLite or PostgreSQL), opened to be read; None when it cannot be (said why)."""
    from emailrouter.service.statefiles import presence
    from emailrouter.service.store import open_store

    settings = config.settings
    if settings.state_url is None and (found := presence(settings.state_path)) != "exists":
        print(
            f"error: no state store at {settings.state_path}: {found}; chosen by {settings.state_reason}"
            " (has the daemon run with this config?)",
            file=sys.stderr,
        )
        return None
    try:
        store = open_store(settings)
    except StateError as exc:  # e.g. the service's file, readable by root only
        print(f"error: {exc}", file=sys.stderr)
        return None
    for note in getattr(store, "notes", ()):
        print(f"warning: {note}", file=sys.stderr)
    return store


def cmd_stats(args: argparse.Namespace) -> int:
    from emailrouter.service import stats

    try:
        since = stats.parse_since(args.since)
    except ValueError as exc:
        print(f"error: --since: {exc}", file=sys.stderr)
        return 2
    opened = _store_of(args)
    if opened is None:
        return 1
    config, store = opened
    now = datetime.now(UTC)
    names = {m.account: m.name for m in config.settings.mailboxes}
    figures = stats.stats(store, now - since, now, names)
    store.close()
    print(json.dumps(figures, ensure_ascii=False, indent=2) if args.json else stats.as_text(figures))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from emailrouter.service import stats

    opened = _store_of(args)
    if opened is None:
        return 1
    _, store = opened
    records = stats.show(store, args.message_id)
    store.close()
    if not records:
        print(f"error: no decision record for {args.message_id}", file=sys.stderr)
        return 1
    print(json.dumps(records if len(records) > 1 else records[0], ensure_ascii=False, indent=2))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from datetime import timedelta

    from emailrouter.service.report import daily_report, render_png

    try:
        day = datetime.strptime(args.day, "%Y-%m-%d").replace(tzinfo=UTC) if args.day else None
    except ValueError:
        print(f"error: --day: expected YYYY-MM-DD, got {args.day!r}", file=sys.stderr)
        return 2
    opened = _store_of(args)
    if opened is None:
        return 1
    config, store = opened
    now = day + timedelta(days=1) if day is not None else datetime.now(UTC)
    try:
        report = daily_report(store, now, {m.account: m.name for m in config.settings.mailboxes})
    finally:
        store.close()
    if args.html:
        Path(args.html).write_text(report.html, encoding="utf-8")
        print(f"wrote {args.html}: the HTML part of the {report.day} report", file=sys.stderr)
    if args.png:
        why_not = render_png(report.html, report.figures, Path(args.png))
        if why_not is not None:
            print(f"error: --png: {why_not}", file=sys.stderr)
            return 1
        print(f"wrote {args.png}: the {report.day} report as Chromium renders it", file=sys.stderr)
    if not args.html and not args.png:
        print(f"Subject: {report.subject}\n\n{report.text}", end="")
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from emailrouter.config.schema import SCHEMAS

    print(json.dumps(SCHEMAS[args.which](), ensure_ascii=False, indent=2))
    return 0


def _training_config(args: argparse.Namespace) -> tuple[bool, Config | None]:
    """(ok, config) for train: the config is optional unless asked for (-c) or needed (imap:)."""
    if args.config or args.corpus.startswith("imap:") or find_config(None).exists():
        try:  # without the configured model: train makes a new one, and a stale one must not stop it
            return True, load_config(find_config(args.config), model=False)
        except ConfigError as exc:
            for problem in exc.problems:
                print(f"error: {problem}", file=sys.stderr)
            return False, None
    return True, None


def cmd_train(args: argparse.Namespace) -> int:
    from emailrouter.ops import training
    from emailrouter.ops.evaluate import as_text as figures_text

    ok, config = _training_config(args)
    if not ok:
        return 1
    try:
        training._sklearn()
        examples = training.read_corpus(args.corpus, config, args.mailbox)
    except (training.TrainingUnavailable, training.CorpusError, EmailRouterError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if not examples:
        print(f"error: {args.corpus}: no examples", file=sys.stderr)
        return 1
    settings = training.TrainSettings(seed=args.seed)
    print(f"corpus: {args.corpus}: {training.describe_corpus(examples)}")
    note: dict[str, Any] = {"corpus_sha256": training.corpus_digest(examples)}
    if args.folds >= 2:
        signals = config.signals if config is not None else None

        def progress(done: int) -> None:
            print(f"  fold {done}/{args.folds} done", file=sys.stderr, flush=True)

        cv = training.cross_validate(examples, settings, args.folds, signals, progress)
        print(f"\n{args.folds}-fold cross-validation (stratified, seed {args.seed}), the model alone:")
        print(figures_text(cv.model))
        note["cv_folds"] = args.folds
        note["cv_model"] = cv.model.as_json()
        if cv.combined is not None and cv.combine is not None and config is not None:
            print(
                f"\ncombined with the signals of {config.path} under the combine settings that did best on the folds:"
            )
            print(figures_text(cv.combined))
            print("\nsuggested for signals.yaml (tuned on these folds only):")
            print(training.combine_yaml(cv.combine))
            note["cv_combined"] = cv.combined.as_json()
            note["cv_combine"] = dataclasses.asdict(cv.combine)
    model = training.fit(examples, settings, note)
    output = Path(args.output)
    save_model(model, output)
    print(f"\nwrote {output}: {len(model.weights):,} features, {output.stat().st_size:,} bytes, {model.checksum}")
    print(f"(signals.yaml uses it with  model: {{file: {output.name}}}  relative to itself; `check` verifies it)")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from emailrouter.ops import evaluate, training

    config = _load(args)
    if config is None:
        return 1
    try:
        examples = training.read_corpus(args.corpus, config, args.mailbox)
    except (training.CorpusError, EmailRouterError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    figures = evaluate.evaluate(examples, config.signals)
    model = config.signals.model
    if args.json:
        out = {
            "corpus": args.corpus,
            "config": str(config.path),
            "config_version": config.version,
            "model": model.short_id if model else None,
            "combine": dataclasses.asdict(config.signals.combine) if model else None,
            **figures.as_json(),
        }
        print(json.dumps(out, ensure_ascii=False, indent=2))
        return 0
    used = f"model {model.short_id} combined with the signals" if model else "the signals alone (no model: section)"
    print(f"corpus: {args.corpus}: {training.describe_corpus(examples)}")
    print(f"classifier: {config.path} (version {config.version}): {used}\n")
    print(evaluate.as_text(figures))
    return 0


def _single_instance(settings: Settings, what: str = "run", *, quiet: bool = False) -> Any:
    """Hold an exclusive lock next to the state store for the life of the process: two `run`s polling and
    sending from one state would step on each other. False (after saying why, unless `quiet`) if another run
    holds it. The lock file holds the holder's pid (`quarantine retry` signals it). None for a PostgreSQL
    store: it has no file here, and claims in the database keep instances apart."""
    import fcntl
    import os

    from emailrouter.service import statefiles

    if settings.state_url is not None:
        return None
    state_path = settings.state_path
    try:
        statefiles.make_folder(state_path.parent)
        lock = statefiles.open_private(state_path.with_name(state_path.name + ".lock"))
        handle = open(lock, "a")  # noqa: SIM115 - held until exit
    except OSError as exc:
        raise StateError(f"state store {state_path}: cannot write: {exc.strerror or exc}") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        if not quiet:
            print(f"error: another `emailrouter {what}` is using {state_path}; stop it first", file=sys.stderr)
        return False
    handle.truncate(0)
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def cmd_demo(args: argparse.Namespace) -> int:
    import importlib.util

    from emailrouter.config.shipped import shipped_config

    missing = [name for name in ("pymap", "aiosmtpd") if importlib.util.find_spec(name) is None]
    if missing:
        print(
            f"error: the demo's servers need {' and '.join(missing)} (the demo extra): pip install 'emailrouter[demo]'",
            file=sys.stderr,
        )
        return 1
    from emailrouter.demo.run import demo

    return demo(Path(args.out), Path(args.config) if args.config else shipped_config())


def cmd_init(args: argparse.Namespace) -> int:
    from emailrouter.ops.starter import init

    return init(Path(args.directory))


def cmd_layout(args: argparse.Namespace) -> int:
    from emailrouter.ops import layout

    print(layout.tree(), end="")
    broken = layout.violations()
    for violation in broken:
        print(f"error: {violation}", file=sys.stderr)
    return 1 if broken else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="emailrouter", description=SUMMARY, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"emailrouter {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "-c",
            "--config",
            help="main config file (default: $EMAILROUTER_CONFIG, "
            "./config/emailrouter.yaml, /etc/emailrouter/emailrouter.yaml)",
        )

    init = sub.add_parser("init", help="write a complete, commented starter config into a folder (never overwrites)")
    init.add_argument("directory", metavar="DIR", help="the folder to write it to, e.g. /etc/emailrouter (created)")
    init.set_defaults(func=cmd_init)

    check = sub.add_parser("check", help="validate config, rules, directory and templates; say where the state is")
    with_config(check)
    check.set_defaults(func=cmd_check)

    explain = sub.add_parser("explain", help="show what the router would do with .eml files; sends nothing")
    with_config(explain)
    explain.add_argument("--directory", help="use this customer directory CSV instead of the configured one")
    explain.add_argument("--json", action="store_true", help="one JSON object per file (an array for several)")
    remembered = explain.add_mutually_exclusive_group()
    remembered.add_argument(
        "--history",
        metavar="FILE",
        help="what the router remembers about the sender (earlier replies, mails, bounces): a YAML or JSON file",
    )
    remembered.add_argument(
        "--state",
        action="store_true",
        help="what the router remembers about the sender, read from the configured state store (read-only)",
    )
    explain.add_argument("files", nargs="+", metavar="FILE.eml", help="the mails to explain")
    explain.set_defaults(func=cmd_explain)

    run = sub.add_parser("run", help="the daemon: poll the mailboxes, do what the table says, once")
    with_config(run)
    run.add_argument("--once", action="store_true", help="one pass over every mailbox, then exit (1 if any failed)")
    run.add_argument("--dry-run", action="store_true", help="decide, log and report; send nothing, mark nothing")
    run.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="least severe log events shown (default info); JSON lines when not on a terminal",
    )
    run.set_defaults(func=cmd_run)

    test = sub.add_parser("test", help="run rule tests: case files of messages and the expected handling")
    with_config(test)
    test.add_argument(
        "paths", nargs="*", metavar="PATH", help="case files or folders (default: tests/ next to the config)"
    )
    test.set_defaults(func=cmd_test)

    rp = sub.add_parser("replay", help="which mails would a config change handle differently? sends nothing")
    rp.add_argument("--old", required=True, help="the config in force")
    rp.add_argument("--new", required=True, help="the changed config")
    rp.add_argument("--json", action="store_true", help="machine-readable output")
    rp.add_argument("--progress", action="store_true", help="show the progress bar even when not on a terminal")
    rp.add_argument("source", help="a folder of .eml files, or imap:MAILBOX[/FOLDER] (a mailbox of --new, read-only)")
    rp.set_defaults(func=cmd_replay)

    st = sub.add_parser("stats", help="counts per mailbox, segment, intent, rule and action; failures; delays")
    with_config(st)
    st.add_argument("--since", default="24h", help="how far back: 24h (default), 7d, 90m")
    st.add_argument("--json", action="store_true", help="the same figures as one JSON object")
    st.set_defaults(func=cmd_stats)

    sh = sub.add_parser("show", help="the decision record of a mail: inputs, segment, signals, rule, sends")
    with_config(sh)
    sh.add_argument("message_id", metavar="MESSAGE-ID", help="as in the mail's header, with the <>")
    sh.set_defaults(func=cmd_show)

    rep = sub.add_parser("report", help="the daily report the supervisor gets: as text, as its HTML page, or as PNG")
    with_config(rep)
    rep.add_argument("--day", metavar="YYYY-MM-DD", help="the UTC day (default: yesterday, as the daemon sends it)")
    rep.add_argument("--html", metavar="FILE", help="write the HTML part to FILE (open it in any browser)")
    rep.add_argument(
        "--png", metavar="FILE", help="render the HTML part to FILE with headless Chromium ($CHROMIUM or on $PATH)"
    )
    rep.set_defaults(func=cmd_report)

    sc = sub.add_parser("schema", help="print the JSON Schema of a config file, for validation as you type")
    sc.add_argument(
        "which",
        nargs="?",
        default="config",
        choices=["config", "rules", "signals"],
        help="which file: config (emailrouter.yaml, the default), rules (rules.yaml) or signals (signals.yaml)",
    )
    sc.set_defaults(func=cmd_schema)

    quarantine = sub.add_parser("quarantine", help="mail a stage could not handle: list it, or retry after a fix")
    qsub = quarantine.add_subparsers(dest="action", required=True)
    qlist = qsub.add_parser("list", help="what is in the quarantine, with the error")
    with_config(qlist)
    qretry = qsub.add_parser("retry", help="process these UIDs again (after fixing the config or the code)")
    with_config(qretry)
    qretry.add_argument("--mailbox", help="only this mailbox (when several have the same UIDs)")
    qretry.add_argument(
        "--wait", type=float, default=120.0, help="seconds to wait for a running daemon's answer (default 120)"
    )
    qretry.add_argument("uids", nargs="+", metavar="UID", help="the IMAP UIDs `quarantine list` shows")
    quarantine.set_defaults(func=cmd_quarantine)

    corpus_help = (
        "a .jsonl or .csv file of labelled texts, a folder of them, a folder of .eml files with labels.csv"
        " (file,intent,hard), or imap:FOLDER (its subfolders fault, information, request, unknown, hard)"
    )
    tr = sub.add_parser("train", help="train the text model on a labelled corpus: cross-validated figures, model file")
    with_config(tr)
    tr.add_argument("corpus", metavar="CORPUS", help=corpus_help)
    tr.add_argument("-o", "--output", default="model.json", help="the model file to write (default: model.json)")
    tr.add_argument("--seed", type=int, default=1, help="seed of the fold assignment (default 1)")
    tr.add_argument("--folds", type=int, default=5, help="cross-validation folds (default 5; 0: no cross-validation)")
    tr.add_argument("--mailbox", help="with imap:FOLDER, the configured mailbox to read (default: the first)")
    tr.set_defaults(func=cmd_train)

    ev = sub.add_parser("evaluate", help="figures of the configured classifier (signals + model) on a labelled corpus")
    with_config(ev)
    ev.add_argument("corpus", metavar="CORPUS", help=corpus_help)
    ev.add_argument("--json", action="store_true", help="machine-readable output")
    ev.add_argument("--mailbox", help="with imap:FOLDER, the configured mailbox to read (default: the first)")
    ev.set_defaults(func=cmd_evaluate)

    demo = sub.add_parser("demo", help="one full pass over real IMAP and SMTP servers on loopback, with sample mail")
    demo.add_argument(
        "-c", "--config", help="a config with a samples/ folder of mails (default: the one shipped in the package)"
    )
    demo.add_argument("--out", default="demo-out", help="folder for the state and the sent mail (default: demo-out)")
    demo.set_defaults(func=cmd_demo)

    lay = sub.add_parser("layout", help="the package's layers and modules; exit 1 on an import across the rules")
    lay.set_defaults(func=cmd_layout)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    status: int = args.func(args)
    return status
