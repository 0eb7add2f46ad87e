"""Rule tests ops can write: YAML case files of messages and what the router must do with them.

A case file holds a list of cases:

    - name: DES fault opens a ticket
      message:                        # or  eml: some-mail.eml  (relative to the case file)
        from: NOC <noc@it.pertamina.co.id>
        subject: Link down
        body: Our MPLS link is down since 07:00.
        headers: {X-Priority: "1"}     # optional extra headers
        authenticated: true           # default: our MX's Authentication-Results (dmarc=pass) is added
      history:                        # optional: what the router remembers about the sender, as in
        replies:                      # `explain --history FILE` (config/history.py); ages count back
          - {template: education, ago: 10m}   # from 2026-01-01 09:00 UTC, when the cases are decided
      expect:                         # any field may be left out
        segment: DES
        segment_source: directory-domain
        intent: fault
        hard: false
        language: en
        rule: 1.2.5-fault-opens-ticket
        actions: [ticket:ticketing, reply:ticket_ack]    # type:unit, or reply:template
        suppressed: []                # "reply: <the reason explain gives>", one per action not carried out

`emailrouter test [PATH...]` runs them (default: the `tests/` folder next to the main config). A case whose
reply template fails on its mail fails, with the template, line and reason, whatever it expects.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from emailrouter.config.history import HistoryFile, read_history
from emailrouter.config.loader import Config
from emailrouter.config.yamlfile import LineDict, LineList, Reader, load_yaml
from emailrouter.core.errors import Problem
from emailrouter.core.explain import EVALUATION_TIME, failure_lines, outcome
from emailrouter.core.pipeline import NO_MEMORY, Memory, read, route

FIELDS = ("segment", "segment_source", "intent", "hard", "language", "rule", "actions", "suppressed")


@dataclass
class CaseResult:
    file: str
    line: int
    name: str
    differences: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.differences


def build_message(spec: LineDict, authserv_id: str) -> bytes:
    """An RFC 5322 message from an inline case."""
    headers: list[tuple[str, str]] = []
    sender = str(spec.get("from", ""))
    if spec.get("authenticated", True) and "@" in sender and authserv_id:
        domain = sender.rsplit("@", 1)[1].strip().rstrip(">").strip().lower()
        headers.append(("Authentication-Results", f"{authserv_id}; dmarc=pass header.from={domain}"))
    if sender:
        headers.append(("From", sender))
    headers.append(("To", str(spec.get("to", "cs@cc.example.co.id"))))
    headers.append(("Subject", str(spec.get("subject", ""))))
    digest = hashlib.sha256(repr(sorted(spec.items())).encode()).hexdigest()[:16]
    headers.append(("Message-ID", str(spec.get("message_id", f"<case-{digest}@rule-tests>"))))
    headers.append(("Date", "Thu, 01 Jan 2026 09:00:00 +0700"))
    for name, value in (spec.get("headers") or {}).items():
        headers.append((str(name), str(value)))
    headers += [
        ("MIME-Version", "1.0"),
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Transfer-Encoding", "8bit"),
    ]
    head = "".join(f"{n}: {v}\r\n" for n, v in headers)
    return (head + "\r\n" + str(spec.get("body", "")).replace("\n", "\r\n")).encode("utf-8")


def run_file(path: Path, config: Config, problems: list[Problem]) -> list[CaseResult]:
    shown = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        problems.append(Problem(shown, None, "", f"cannot read: {exc.strerror}"))
        return []
    doc = load_yaml(text, shown, problems)
    if isinstance(doc, LineDict) and isinstance(doc.get("cases"), LineList):
        doc = doc["cases"]
    if not isinstance(doc, LineList):
        if doc is not None:
            problems.append(Problem(shown, 1, "", "expected a list of cases (or cases: [...])"))
        return []
    r = Reader(shown, problems)
    results = []
    for i, path_key, case in r.items(doc, "cases"):
        if not isinstance(case, LineDict):
            r.fail(doc, i, path_key, "expected a mapping with name, message or eml, expect")
            continue
        r.known_keys(case, path_key, {"name", "message", "eml", "history", "expect"})
        name = r.get(case, "name", path_key, str, required=False) or f"case {i + 1}"
        expect = r.get(case, "expect", path_key, LineDict)
        if expect is None:
            continue
        r.known_keys(expect, f"{path_key}.expect", set(FIELDS))
        raw: bytes | None = None
        if "eml" in case:
            eml = r.get(case, "eml", path_key, str)
            if eml is not None:
                try:
                    raw = (path.parent / eml).read_bytes()
                except OSError as exc:
                    r.fail(case, "eml", f"{path_key}.eml", f"cannot read {eml}: {exc.strerror}")
        elif (spec := r.get(case, "message", path_key, LineDict)) is not None:
            r.known_keys(
                spec, f"{path_key}.message", {"from", "to", "subject", "body", "headers", "authenticated", "message_id"}
            )
            raw = build_message(spec, config.segmentation.trust.authserv_id)
        if raw is None:
            continue
        result = CaseResult(shown, case.line, name)
        results.append(result)
        misspelt = [str(k) for k in expect if k not in FIELDS]
        if misspelt or not expect:  # a case that checks nothing it was meant to check never passes
            result.differences.append(
                f"expect: unknown key(s) {', '.join(misspelt)} (expected one of: {', '.join(FIELDS)})"
                if misspelt
                else f"expect: nothing to check (give one of: {', '.join(FIELDS)})"
            )
        history: HistoryFile | None = None
        if "history" in case and (history := read_history(case["history"], r, f"{path_key}.history", case)) is None:
            result.differences.append("history: not valid (see the errors above): the case cannot be decided")
            continue
        try:
            routing = route(raw, config, EVALUATION_TIME, _memory(raw, config, history))
        except Exception as exc:  # a stage broke on this mail: the case fails, the other cases still run
            result.differences.append(f"error: the mail could not be routed: {type(exc).__name__}: {exc}")
            continue
        result.differences.extend(failure_lines(routing))  # a reply that cannot be rendered always fails a case
        got = outcome(routing)
        for key in FIELDS:
            if key in expect:
                want = list(expect[key]) if isinstance(expect[key], LineList) else expect[key]
                if want != got[key]:
                    result.differences.append(f"{key}: expected {want!r}, got {got[key]!r}")
    return results


def _memory(raw: bytes, config: Config, history: HistoryFile | None) -> Memory:
    """The sender's memory a case describes, under the configured reply limits (none without `history:`)."""
    if history is None:
        return NO_MEMORY
    view = read(raw, config)
    return history.memory(view.sender.address if view.sender else None, EVALUATION_TIME, config.settings.loop)


def collect(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        files.extend(sorted(p.glob("*.yaml")) + sorted(p.glob("*.yml")) if p.is_dir() else [p])
    return files
