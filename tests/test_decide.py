"""decide: the decision table, evaluated purely over the facts of one mail."""

from __future__ import annotations

import itertools

import pytest

from emailrouter.config.loader import Config
from emailrouter.core.decide import Row, Table, decide, reference_for
from emailrouter.core.facts import Facts
from emailrouter.core.model import Escalate, Forward, Intent, OpenTicket, Reply
from emailrouter.core.parse import parse
from tests.conftest import eml

SEGMENTS = ["DES", "DGS", "DBS", "DCS", "unknown"]
INTENTS: list[Intent] = ["fault", "information", "request", "unknown"]


def _facts(segment: str, intent: Intent, hard: bool) -> Facts:
    return Facts(
        {
            "segment": segment,
            "segment_source": "default",
            "intent": intent,
            "hard": hard,
            "language": "id",
            "has_attachments": False,
            "automated": False,
        }
    )


def instruction(segment: str, intent: str, hard: bool) -> str:
    """What work instruction IN.OCC.TDSCC.W-89 (plus the documented open points) says, step by step."""
    corporate = segment in ("DES", "DGS", "DBS")
    if corporate and intent == "fault":
        return "1.2.5-fault-opens-ticket"
    if corporate and intent == "information":
        return "1.2.6-information-to-agent-desk"
    if segment == "DBS" and intent == "request":
        return "1.2.7-dbs-request-educate-forward"
    if segment == "DCS":
        return "1.2.9-dcs-hard-complaint-educate-forward-escalate" if hard else "1.2.8-dcs-educate-forward"
    if corporate and intent == "request":
        return "open-des-dgs-request-to-account-managers"
    if corporate:
        return "1.2.3-corporate-unclear-intent-to-human-queue"
    return "open-no-usable-sender-to-human-queue"


@pytest.mark.parametrize(("segment", "intent", "hard"), list(itertools.product(SEGMENTS, INTENTS, [False, True])))
def test_shipped_table_follows_the_instruction(config: Config, segment: str, intent: Intent, hard: bool) -> None:
    """Every combination of segment x intent x hard complaint gets the row the instruction names."""
    decision = decide(_facts(segment, intent, hard), config.table, "ER-X")
    assert decision.rule == instruction(segment, intent, hard)
    assert decision.actions, "every row does something"


def test_dcs_hard_complaint_is_educated_forwarded_and_escalated(config: Config) -> None:
    """Step 1.2.9: reply (education), forward to the DCS unit, and in parallel escalate to coordination."""
    decision = decide(_facts("DCS", "fault", True), config.table, "ER-X")
    assert decision.actions == (Reply("education", "dcs_unit"), Forward("dcs_unit"), Escalate("coordination"))


def test_corporate_fault_opens_a_ticket_and_acknowledges(config: Config) -> None:
    """Step 1.2.5: a ticket request and a reply quoting its reference."""
    decision = decide(_facts("DGS", "fault", False), config.table, "ER-X")
    assert decision.actions == (OpenTicket("ticketing"), Reply("ticket_ack", "ticketing"))


def test_unknown_segment_goes_to_the_human_queue_only(config: Config) -> None:
    """Mail with no usable sender is never answered automatically, only forwarded to a person."""
    decision = decide(_facts("unknown", "fault", True), config.table, "ER-X")
    assert decision.actions == (Forward("human_queue"),)


def _table(policy: str) -> Table:
    rows = (
        Row("hard", "", {"hard": frozenset({True})}, (Escalate("coord"),), 1),
        Row("dcs", "", {"segment": frozenset({"DCS"})}, (Forward("dcs"), Escalate("coord")), 2),
        Row("catch-all", "", {}, (Forward("queue"),), 3),
    )
    return Table(policy, rows, "t.yaml")  # type: ignore[arg-type]


def test_first_hit_policy_takes_only_the_first_matching_row() -> None:
    """With hit policy first, the first row whose conditions hold decides alone."""
    decision = decide(_facts("DCS", "fault", True), _table("first"), "R")
    assert (decision.rule, decision.rules, decision.actions) == ("hard", ("hard",), (Escalate("coord"),))


def test_collect_hit_policy_merges_actions_without_duplicates() -> None:
    """With hit policy collect, every matching row adds its actions once; the catch-all only when alone."""
    decision = decide(_facts("DCS", "fault", True), _table("collect"), "R")
    assert decision.rules == ("hard", "dcs")
    assert decision.actions == (Escalate("coord"), Forward("dcs"))
    alone = decide(_facts("DES", "fault", False), _table("collect"), "R")
    assert (alone.rule, alone.actions) == ("catch-all", (Forward("queue"),))


def test_reference_is_stable_per_message() -> None:
    """The same mail always gets the same reference; a different Message-ID another one."""
    a = parse(eml("From: a@example.com", "Message-ID: <1@example.com>", body="x"))
    b = parse(eml("From: a@example.com", "Message-ID: <2@example.com>", body="x"))
    assert reference_for(a, "ER") == reference_for(parse(a.raw), "ER")
    assert reference_for(a, "ER") != reference_for(b, "ER")
    assert reference_for(a, "ER").startswith("ER-") and len(reference_for(a, "ER")) == 11
