"""Items of issue 12's friction list that are about words and lines ops read: outcomes, log lines, messages."""

from __future__ import annotations

from pathlib import Path

from structlog.testing import capture_logs

from emailrouter.config.credentials import Secret
from emailrouter.config.loader import Config
from emailrouter.config.settings import Endpoint, MailboxConfig
from emailrouter.service.imap import Fetched
from emailrouter.service.memory import Batch
from emailrouter.service.metrics import Metrics
from emailrouter.service.processor import PollReport, Processor
from emailrouter.service.stats import stats
from emailrouter.service.store import Store
from tests.conftest import DATA, NOW


def mailbox_config() -> MailboxConfig:
    """A mailbox as the processor needs it (it is never connected to)."""
    endpoint = Endpoint("127.0.0.1", 1, "plain", 10.0, None)
    return MailboxConfig(
        "jkt", endpoint, "router", Secret("env", "UNUSED"), None, "INBOX", "keyword", "$Routed", None, 60.0, False, 200
    )


def test_one_word_for_an_outcome_in_the_decision_event_the_metric_and_stats(config: Config, tmp_path: Path) -> None:
    """An automated mail is `automated` and a routed one `done` alike in its `decision` event, its metric and stats."""
    store = Store(tmp_path / "s.sqlite3")
    metrics = Metrics()
    mailbox = mailbox_config()
    try:
        processor = Processor(config, metrics, lambda: NOW, dry_run=False)
        batch = Batch(store)
        report = PollReport(mailbox.name)
        with capture_logs() as events:
            for uid, name in ((1, "automated-out-of-office-en.eml"), (2, "dcs-fault-outlook-en.eml")):
                raw = (DATA / name).read_bytes()
                processor.process(mailbox, 7, Fetched(uid, raw, len(raw)), report, batch)
        batch.commit()
        store.mark_sent(store.due_ids(NOW), NOW)
        store.settle(NOW)
        logged = sorted(e["outcome"] for e in events if e["event"] == "decision")
        assert logged == ["automated", "done"]
        counted = stats(store, NOW.replace(year=2000), NOW.replace(year=2100), {})["per_outcome"]
        assert sorted(counted) == logged
        for outcome in logged:
            labels = {"mailbox": mailbox.name, "outcome": outcome}
            assert (
                sum(
                    s.value
                    for m in metrics.registry.collect()
                    if m.name == "emailrouter_messages"
                    for s in m.samples
                    if s.name.endswith("_total") and labels.items() <= s.labels.items()
                )
                == 1
            )
    finally:
        store.close()
