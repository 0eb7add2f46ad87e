"""Sender trust: was the From: domain authenticated by OUR receiving server? Pure.

A privileged segment (DES/DGS/DBS) matched by the sender's address or domain is only believed when
an Authentication-Results header (RFC 8601) written by our own server (the configured authserv-id)
says `dmarc=pass` — or, with `require: aligned`, a `dkim=pass` or `spf=pass` aligned with the From:
domain. Headers from any other authserv-id are ignored, and only the topmost header of ours counts
(our server adds it on top; anything below came with the message).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from emailrouter.core.model import MessageView

_COMMENT = re.compile(r"\([^()]*\)")


@dataclass(frozen=True)
class TrustPolicy:
    enabled: bool = True
    authserv_id: str = ""
    require: Literal["dmarc", "aligned"] = "dmarc"
    privileged: frozenset[str] = frozenset({"DES", "DGS", "DBS"})


def _aligned(domain: str, sender_domain: str) -> bool:
    domain, sender_domain = domain.lower().strip("."), sender_domain.lower()
    return bool(domain) and (
        sender_domain == domain or sender_domain.endswith("." + domain) or domain.endswith("." + sender_domain)
    )


def authenticated(view: MessageView, policy: TrustPolicy) -> tuple[bool, str]:
    """(trusted, why) for the sender of this mail."""
    if not policy.enabled:
        return True, "sender authentication not required (trust.enabled: false)"
    if view.sender is None:
        return False, "no sender"
    ours = []
    for name, value in view.headers:
        if name != "authentication-results":
            continue
        text = _COMMENT.sub(" ", value)
        head, _, rest = text.partition(";")
        serv = head.split()[0].lower() if head.split() else ""
        if serv == policy.authserv_id.lower():
            ours.append(rest)
    if not ours:
        return False, f"no Authentication-Results from {policy.authserv_id}"
    domain = view.sender.domain
    results = [r.strip() for r in ours[0].split(";") if r.strip()]
    for result in results:
        m = re.match(r"(dmarc|dkim|spf)\s*=\s*(\w+)(.*)", result, re.I | re.S)
        if not m or m[2].lower() != "pass":
            continue
        method, props = m[1].lower(), m[3]
        if method == "dmarc":
            hf = re.search(r"header\.from\s*=\s*([^\s;]+)", props, re.I)
            if hf is None or _aligned(hf[1].rpartition("@")[2], domain):
                return True, f"dmarc=pass from {policy.authserv_id}"
        elif policy.require == "aligned":
            key = r"header\.d" if method == "dkim" else r"smtp\.mailfrom"
            found = re.search(key + r"\s*=\s*([^\s;]+)", props, re.I)
            if found and _aligned(found[1].rpartition("@")[2], domain):
                return True, f"{method}=pass aligned with {domain} from {policy.authserv_id}"
    wanted = "dmarc=pass" if policy.require == "dmarc" else "dmarc=pass or an aligned dkim/spf=pass"
    return False, f"{policy.authserv_id} reports no {wanted} for {domain}"
