"""Which segment a customer belongs to, and which source decided it. Pure.

Precedence: directory address > account number in the mail > directory domain
> YAML domain rule > configured default.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from emailrouter.core.directory import Directory, DomainTable, normalise_address
from emailrouter.core.model import UNKNOWN_SEGMENT, MessageView, Segmentation
from emailrouter.core.trust import TrustPolicy, authenticated

_TOKEN = re.compile(r"[A-Za-z0-9]+")
FEW_ACCOUNTS = 64  # up to this many account numbers, each is looked for as a substring before tokenising


@dataclass(frozen=True)
class DomainRule:
    match: str
    segment: str
    line: int


@dataclass(frozen=True)
class SegmentRules:
    """The segmentation part of the config."""

    segments: dict[str, str]  # code -> description
    default: str
    domain_rules: DomainTable[DomainRule]
    config_file: str
    directory: Directory
    trust: TrustPolicy = field(default_factory=lambda: TrustPolicy(enabled=False))


def find_accounts(view: MessageView, directory: Directory) -> list[str]:
    """Directory account numbers that appear as whole tokens in the subject or the customer's text."""
    if not directory.accounts:
        return []
    if len(directory.accounts) <= FEW_ACCOUNTS and not any(
        number in view.subject or number in view.text for number in directory.accounts
    ):
        return []  # the usual mail: no account number anywhere in it (a substring search each, at C speed)
    found: list[str] = []
    for source in (view.subject, view.text):
        for token in _TOKEN.findall(source):
            if token in directory.accounts and token not in found:
                found.append(token)
    return found


def segment(view: MessageView, rules: SegmentRules) -> Segmentation:
    """Decide the segment of the mail's sender. A privileged segment claimed by address or domain only
    holds when our own server authenticated the sender (see trust.py); otherwise the default applies."""
    claimed = _claimed(view, rules)
    trust = rules.trust
    if claimed.segment in trust.privileged and claimed.source in ("address", "directory-domain", "domain-rule"):
        ok, why = authenticated(view, trust)
        if not ok:
            detail = f"not trusted ({why}): would be {claimed.segment} by {claimed.detail}"
            return Segmentation(rules.default, "default", detail, None, claimed.accounts)
    return claimed


def _claimed(view: MessageView, rules: SegmentRules) -> Segmentation:
    if view.sender is None:
        return Segmentation(UNKNOWN_SEGMENT, "none", f"no usable sender: {view.sender_problem}")
    directory = rules.directory
    accounts = tuple(find_accounts(view, directory))
    entry = directory.addresses.get(normalise_address(view.sender.address))
    if entry is not None:
        return Segmentation(
            entry.segment, "address", f"address {entry.match} in {entry.where} ({entry.name})", entry.name, accounts
        )
    if accounts:
        entry = directory.accounts[accounts[0]]
        also = f"; also mentioned: {', '.join(accounts[1:])}" if len(accounts) > 1 else ""
        return Segmentation(
            entry.segment,
            "account",
            f"account number {accounts[0]} in {entry.where} ({entry.name}){also}",
            entry.name,
            accounts,
        )
    found = directory.domains.lookup(view.sender.domain)
    if found is not None:
        pattern, entry = found
        return Segmentation(
            entry.segment, "directory-domain", f"domain {pattern} in {entry.where} ({entry.name})", entry.name, accounts
        )
    rule = rules.domain_rules.lookup(view.sender.domain)
    if rule is not None:
        pattern, domain_rule = rule
        where = f"{rules.config_file}:{domain_rule.line}"
        return Segmentation(domain_rule.segment, "domain-rule", f"domain rule {pattern} in {where}", None, accounts)
    return Segmentation(
        rules.default, "default", f"no directory entry or domain rule for {view.sender.domain}: default", None, accounts
    )
