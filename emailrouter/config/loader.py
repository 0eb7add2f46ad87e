"""Config files -> typed, frozen objects, validated once. Every problem names file, line and key.

`load_config(path)` reads the main file (`emailrouter.yaml`), then the files it names: the decision
table, the signals, the customer directory and the reply templates. It either returns a `Config`
or raises `ConfigError` listing every problem found.

Over 400 lines: the shapes are pydantic models (models.py, routing.py, rules.py, signals.py); what stays
here are the cross-checks between files (units, templates, segments, shadowed rows) and the signal lists
of signals.yaml, whose matchers (words, phrases, near, regexes, history, requires/unless) are not modelled
yet: each reads the nodes with their lines, so its errors keep naming file, line and key.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from emailrouter.config import routing, rules, signals
from emailrouter.config.modelfile import load_model
from emailrouter.config.settings import Settings, settings_of
from emailrouter.config.slang import make_normaliser, read_slang
from emailrouter.config.templates import load_templates
from emailrouter.config.validation import CROSS_CHECKS, validate
from emailrouter.config.yamlfile import LineDict, LineList, Reader, describe, load_yaml
from emailrouter.core.classify import PLAIN, HistoryRule, Near, Phrase, Question, Signal, Signals, fold
from emailrouter.core.combine import CombineSettings
from emailrouter.core.decide import Row, Table
from emailrouter.core.directory import Directory, DomainTable, load_directory
from emailrouter.core.errors import ConfigError, Problem
from emailrouter.core.facts import BY_NAME as FACTS
from emailrouter.core.facts import allowed_values
from emailrouter.core.guard import DEFAULT_GUARD, GuardPolicy
from emailrouter.core.model import (
    ACTION_KINDS,
    INTENTS,
    LANGUAGES,
    Action,
    Escalate,
    Forward,
    OpenTicket,
    Record,
    Reply,
    RouterIdentity,
    Unit,
)
from emailrouter.core.normalise import WORD, Normaliser
from emailrouter.core.normalise import Settings as NormaliseSettings
from emailrouter.core.pipeline import RoutingConfig
from emailrouter.core.segment import DomainRule, SegmentRules
from emailrouter.core.templates import (
    NO_UNIT,
    TemplateRenderError,
    TemplateSet,
    check_templates,
    unitless_failure,
)
from emailrouter.core.textmodel import ModelError, TextModel
from emailrouter.core.trust import TrustPolicy
from emailrouter.core.verify import verify

_KEY = re.compile(routing.UNIT_KEY)
DEFAULT_CONFIG_PATHS = (Path("config/emailrouter.yaml"), Path("/etc/emailrouter/emailrouter.yaml"))


@dataclass(frozen=True, kw_only=True)
class Config(RoutingConfig):
    """The routing part the core takes (RoutingConfig), plus where it came from and the service's settings."""

    path: Path
    version: str  # hash of every file read: changes whenever any of them does
    settings: Settings
    warnings: tuple[Problem, ...] = ()


def _read(path: Path, display: str, problems: list[Problem]) -> str | None:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        problems.append(Problem(display, None, "", "file not found"))
        return None
    except OSError as exc:
        problems.append(Problem(display, None, "", f"cannot read: {exc.strerror or exc}"))
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:  # the line, not the byte offset, and what to do about it
        line = raw.count(b"\n", 0, exc.start) + 1
        bad = raw[exc.start : exc.end].hex(" ")
        problems.append(Problem(display, line, "", f"not UTF-8 (bytes {bad}): save the file as UTF-8"))
        return None


def find_config(explicit: str | None) -> Path:
    """The config to use: -c, then $EMAILROUTER_CONFIG, then ./config/, then /etc/emailrouter/."""
    if explicit:
        return Path(explicit)
    if env := os.environ.get("EMAILROUTER_CONFIG"):
        return Path(env)
    for candidate in DEFAULT_CONFIG_PATHS:
        if candidate.exists():
            return candidate
    return DEFAULT_CONFIG_PATHS[0]


# --------------------------------------------------------------------------- main file
# Its shape is routing.MainFile's (validated once in load_config); what one file's shape cannot say
# is checked here, on the nodes as read, so every line is known: unknown segments, a domain listed
# twice, trust missing or switched off.

M = TypeVar("M", bound=BaseModel)
_SEGMENT_CODE = re.compile(routing.SEGMENT_CODE)
_FAILURES_TO = routing.Router.model_fields["failures_to"].default


def _valid(model: type[M], value: Any) -> M | None:
    """`value` as `model` if it is valid; its problems were reported by the whole file's validation."""
    try:
        return model.model_validate(value, context={CROSS_CHECKS: []})
    except ValidationError:
        return None


def _router(main: routing.MainFile | None, doc: LineDict) -> RouterIdentity | None:
    router = main.router if main is not None else _valid(routing.Router, doc.get("router"))
    if router is None:
        return None
    return RouterIdentity(router.address, router.name, router.reference_prefix, router.failures_to)


def _guard(main: routing.MainFile | None, doc: LineDict) -> GuardPolicy:
    """guard: robot_senders, glob patterns on the sender's address; the list replaces the default one."""
    guard = main.guard if main is not None else _valid(routing.Guard, doc.get("guard", {}))
    if guard is None:
        return DEFAULT_GUARD
    return GuardPolicy(tuple(dict.fromkeys(pattern.lower() for pattern in guard.robot_senders)))


def _units(main: routing.MainFile | None, doc: LineDict) -> dict[str, Unit]:
    """The units; with problems elsewhere in the file, the valid ones (so rules.yaml is still checked)."""
    if main is not None:
        found = main.units
    else:
        node = doc.get("units")
        found = {}
        for key, value in node.items() if isinstance(node, LineDict) else ():
            if _KEY.match(key) and (unit := _valid(routing.Unit, value)) is not None:
                found[key] = unit
    return {
        key: Unit(key, unit.address, unit.name.by_language(), unit.next_steps.by_language())
        for key, unit in found.items()
    }


def _known_segment(r: Reader, node: Any, key: str | int, path: str, value: Any, segments: dict[str, str]) -> bool:
    """Whether `value`, where a segment code goes, is one of `segments`; a well-formed unknown code is a problem
    (a malformed one already is)."""
    if not isinstance(value, str) or value in segments:
        return isinstance(value, str)
    if _SEGMENT_CODE.match(value):
        r.fail(node, key, path, f"unknown segment {value!r} (known: {', '.join(segments)})")
    return False


def _segmentation(r: Reader, main: routing.MainFile | None, doc: LineDict, directory: Directory) -> SegmentRules | None:
    node = doc.get("segmentation")
    node = node if isinstance(node, LineDict) else LineDict()
    codes = node.get("segments")
    segments = {str(code): str(text) for code, text in codes.items()} if isinstance(codes, LineDict) else {}
    if segments and "default" in node:
        _known_segment(r, node, "default", "segmentation.default", node["default"], segments)
    table: DomainTable[DomainRule] = DomainTable()
    rules = node.get("domain_rules")
    for i, item in enumerate(rules if isinstance(rules, LineList) else ()):
        if not isinstance(item, LineDict):
            continue
        path, match, seg = f"segmentation.domain_rules[{i}]", item.get("match"), item.get("segment")
        known = _known_segment(r, item, "segment", f"{path}.segment", seg, segments)
        parsed = DomainTable.parse_pattern(match) if isinstance(match, str) else None
        if parsed and known and not table.add(parsed[0], parsed[1], DomainRule(str(match), str(seg), item.line)):
            r.fail(item, "match", f"{path}.match", f"{match!r} is listed twice")
    trust = _trust(r, main, doc, segments)
    shape = main.segmentation if main is not None else _valid(routing.Segmentation, doc.get("segmentation"))
    if shape is None or shape.default not in segments:
        return None
    return SegmentRules(segments, shape.default, table, r.file, directory, trust)


def _trust(r: Reader, main: routing.MainFile | None, doc: LineDict, segments: dict[str, str]) -> TrustPolicy:
    if "trust" not in doc:
        r.fail(
            doc,
            None,
            "trust",
            "missing: say which server's Authentication-Results to trust (trust.authserv_id),"
            " or switch the check off with trust.enabled: false",
        )
        return TrustPolicy(enabled=False)
    node = doc["trust"]
    if isinstance(node, LineDict) and node.get("enabled") is False:
        r.fail(
            node,
            "enabled",
            "trust.enabled",
            "sender authentication is off: anyone can claim a privileged segment by forging a From: address",
            warning=True,
        )
        return TrustPolicy(enabled=False)
    privileged = node.get("privileged") if isinstance(node, LineDict) else None
    for value in sorted({v for v in privileged if isinstance(v, str)}) if isinstance(privileged, LineList) else ():
        _known_segment(r, node, "privileged", "trust.privileged", value, segments)
    trust = main.trust if main is not None else _valid(routing.Trust, node)
    if trust is None:
        return TrustPolicy(enabled=False)
    chosen = frozenset(trust.privileged) if trust.privileged is not None else TrustPolicy().privileged & set(segments)
    return TrustPolicy(True, trust.authserv_id or "", trust.require, chosen)


# --------------------------------------------------------------------------- signals file


_MATCHERS = ("keywords", "phrases", "near", "regex", "caps_ratio", "exclamation_run", "history")
_COMBINABLE = {"keywords", "phrases", "near"}  # these may be given together in one signal
_PLACED = _COMBINABLE  # matchers whose matches stand at a place in the text (so `in_question` can apply)


def _signal(
    r: Reader, item: Any, path: str, group: str | None, names: set[str], normaliser: Normaliser = PLAIN
) -> Signal | None:
    if not isinstance(item, LineDict):
        r.fail(item, None, path, f"expected a mapping, got {describe(item)}")
        return None
    allowed = {
        "name",
        "weight",
        "keywords",
        "phrases",
        "regex",
        "caps_ratio",
        "min_letters",
        "exclamation_run",
        "history",
        "near",
        "in_question",
        "requires",
        "unless",
        "roots",
    }
    if group is None:
        allowed.add("intent")
    r.known_keys(item, path, allowed)
    name = r.get(item, "name", path, str)
    weight = r.get(item, "weight", path, float)
    if name is not None:
        if name in names:
            r.fail(item, "name", f"{path}.name", f"signal name {name!r} is used twice")
        names.add(name)
    if group is None:
        intent = r.get(item, "intent", path, str)
        if intent is not None and intent not in INTENTS[:3]:
            r.fail(item, "intent", f"{path}.intent", f"unknown intent {intent!r} (known: {', '.join(INTENTS[:3])})")
            intent = None
        group = intent
    by_roots = r.get(item, "roots", path, bool, required=False)
    by_roots = True if by_roots is None else by_roots
    kinds = [k for k in _MATCHERS if k in item]
    if not kinds:
        r.fail(item, None, path, f"no way to match: give one of {', '.join(_MATCHERS)}")
        return None
    if len(kinds) > 1 and not set(kinds) <= _COMBINABLE:
        r.fail(item, kinds[1], path, f"give only one of {', '.join(kinds)} per signal")
        return None
    keywords: frozenset[str] = frozenset()
    phrases: tuple[Phrase, ...] = ()
    regex = None
    caps_ratio = None
    exclamation_run = None
    history = None
    near = None
    min_letters = 0
    for kind in kinds:
        full = f"{path}.{kind}"
        if kind in ("keywords", "phrases", "regex"):
            values = item[kind]
            if (
                not isinstance(values, LineList)
                or not values
                or not all(isinstance(v, str) and v.strip() for v in values)
            ):
                r.fail(item, kind, full, "expected a non-empty list of strings")
                return None
            if kind == "keywords":
                bad = [v for v in values if len(v.split()) != 1]
                if bad:
                    r.fail(item, kind, full, f"keywords are single words; use phrases for {bad[0]!r}")
                folded = {fold(v) for v in values}
                normal = {n for v in folded for n in normaliser.normal(v) if len(normaliser.normal(v)) == 1}
                keywords = frozenset(folded | normal)  # "lemod" also matches what reads as "lemot"
            elif kind == "phrases":
                phrases = tuple(Phrase.of(v, normaliser, roots=by_roots) for v in values)
            else:
                for j, expr in enumerate(values):
                    try:
                        re.compile(expr)
                    except re.error as exc:
                        r.fail(values, j, f"{full}[{j}]", f"bad regex {expr!r}: {exc}")
                        return None
                    if re.search(r"(?<!\\)[A-Z]", re.sub(r"\\.", "", expr)):
                        r.fail(
                            values,
                            j,
                            f"{full}[{j}]",
                            "regexes run on lower-cased text: capitals never match",
                            warning=True,
                        )
                regex = re.compile("|".join(f"(?:{v})" for v in values))
        elif kind == "near":
            near = _near(r, item, full, normaliser, by_roots)
            if near is None:
                return None
        elif kind == "history":
            node = r.get(item, "history", path, LineDict)
            if node is None:
                return None
            if group != "hard":
                r.fail(item, "history", full, "history signals count toward hard complaints only")
                return None
            r.known_keys(node, full, {"previous", "within_days", "same_intent"})
            previous = r.get(node, "previous", full, int)
            days = r.get(node, "within_days", full, float)
            same = r.get(node, "same_intent", full, bool, required=False)
            if previous is None or days is None:
                return None
            if previous < 1 or days <= 0:
                r.fail(node, None, full, "previous must be 1 or more and within_days more than 0")
                return None
            history = HistoryRule(previous, days, True if same is None else same)
        elif kind == "caps_ratio":
            caps_ratio = r.get(item, "caps_ratio", path, float)
            if caps_ratio is not None and not 0 < caps_ratio <= 1:
                r.fail(item, "caps_ratio", full, "must be between 0 and 1")
            min_letters = r.get(item, "min_letters", path, int, required=False) or 0
        else:
            exclamation_run = r.get(item, "exclamation_run", path, int)
            if exclamation_run is not None and exclamation_run < 1:
                r.fail(item, "exclamation_run", full, "must be 1 or more")
    in_question = r.get(item, "in_question", path, float, required=False)
    if in_question is not None and not set(kinds) <= _PLACED:
        r.fail(item, "in_question", f"{path}.in_question", f"only for {', '.join(sorted(_PLACED))} signals")
    conditions: dict[str, set[str]] = {"requires": set(), "unless": set()}
    for key, wanted in conditions.items():
        if key not in item:
            continue
        node = item[key]
        groups = {*INTENTS[:3], "hard"} if group == "hard" else set(INTENTS[:3])
        if not isinstance(node, LineList) or not node or not all(isinstance(v, str) for v in node):
            r.fail(item, key, f"{path}.{key}", "expected a non-empty list of signal names or intents")
            continue
        for j, want in enumerate(node):
            if want not in groups and (want not in names or want == name):
                r.fail(
                    node,
                    j,
                    f"{path}.{key}[{j}]",
                    f"unknown signal {want!r}: name a signal above this one, or one of {', '.join(sorted(groups))}",
                )
            wanted.add(want)
    if name is None or weight is None or group is None:
        return None
    return Signal(
        name,
        group,
        weight,
        keywords,
        phrases,
        regex,
        caps_ratio,
        min_letters,
        exclamation_run,
        history,
        near,
        in_question,
        frozenset(conditions["requires"]),
        frozenset(conditions["unless"]),
        by_roots,
    )


def _words(r: Reader, node: LineDict, key: str, path: str) -> frozenset[str] | None:
    """A non-empty list of single words, case-folded."""
    values = node.get(key)
    full = f"{path}.{key}"
    if not isinstance(values, LineList) or not values or not all(isinstance(v, str) and v.strip() for v in values):
        r.fail(node, key if key in node else None, full, "expected a non-empty list of words")
        return None
    for j, v in enumerate(values):
        if len(v.split()) != 1:
            r.fail(values, j, f"{full}[{j}]", f"single words only: {v!r}")
            return None
    return frozenset(fold(v) for v in values)


def _near(r: Reader, item: LineDict, path: str, normaliser: Normaliser, roots: bool = True) -> Near | None:
    """near: {words: [...], with: [...], within: N, ordered: bool}: a word of each list, at most N words apart."""
    node = r.get(item, "near", path.rpartition(".")[0], LineDict)
    if node is None:
        return None
    r.known_keys(node, path, {"words", "with", "within", "ordered"})
    first = _words(r, node, "words", path)
    second = _words(r, node, "with", path)
    within = r.get(node, "within", path, int, required=False) or 3
    ordered = r.get(node, "ordered", path, bool, required=False) or False
    if within < 1:
        r.fail(node, "within", f"{path}.within", "must be 1 or more")
    if first is None or second is None:
        return None

    def forms(words: frozenset[str]) -> frozenset[str]:
        return words | {n for w in words for n in normaliser.normal(w) if len(normaliser.normal(w)) == 1}

    return Near(forms(first), forms(second), within, ordered, roots)


def _model(r: Reader, doc: LineDict, load: bool = True) -> tuple[TextModel | None, CombineSettings]:
    """signals.yaml's `model:` (the learned model's file, relative to signals.yaml) and `combine:`.
    `load=False`: the model file is not read (`train` replaces it, so a stale one must not stop it)."""
    combine = CombineSettings()
    node = r.get(doc, "combine", "", LineDict, required=False)
    if node is not None:
        if (shape := validate(signals.Combine, node, r, "combine")) is not None:
            combine = shape.settings()
        if "model" not in doc:
            r.fail(doc, "combine", "combine", "has no effect without a model: section", warning=True)
    model_node = r.get(doc, "model", "", LineDict, required=False)
    if model_node is None or not load:
        return None, combine
    model_file = validate(signals.ModelFile, model_node, r, "model")
    if model_file is None:
        return None, combine
    name = model_file.file
    path = Path(r.file).parent / name
    try:
        return load_model(path), combine
    except ModelError as exc:
        r.problems.append(Problem(str(path), None, exc.key, exc.reason))
    except OSError as exc:
        r.fail(model_node, "file", "model.file", f"cannot read {path}: {exc.strerror or exc}")
    return None, combine


def _vocabulary(doc: LineDict) -> set[str]:
    """Every word the signals are written with: known words, so "lemottt" reads as the listed "lemot"."""
    out: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, str):
            out.update(WORD.findall(fold(node)))
        elif isinstance(node, LineList):
            for item in node:
                walk(item)
        elif isinstance(node, LineDict):
            for key in ("keywords", "phrases", "words", "with", "signals", "question"):
                if key in node:
                    walk(node[key])

    for section in ("intent", "hard_complaint"):
        walk(doc.get(section))
    return out


def _normalise(r: Reader, doc: LineDict) -> Normaliser:
    """signals.yaml's `normalise:` and the slang file it names (relative to signals.yaml)."""
    node = r.get(doc, "normalise", "", LineDict, required=False)
    if node is None:
        return PLAIN
    shape = validate(signals.Normalise, node, r, "normalise") or signals.Normalise()  # defaults if invalid
    stem = shape.stem
    settings = NormaliseSettings(
        stem=stem,
        min_stem_length=shape.min_stem_length,
        elongation=shape.elongation,
        reduplication=shape.reduplication,
    )
    name = shape.slang
    if name is not None:
        path = Path(r.file).parent / name
        text = _read(path, str(path), r.problems)
        if text is not None:
            slang_doc = load_yaml(text, str(path), r.problems)
            slang = read_slang(Reader(str(path), r.problems), slang_doc) if slang_doc is not None else None
            if slang is not None:
                checksum = hashlib.sha256(text.encode()).hexdigest()
                settings = dataclasses.replace(settings, slang=slang, checksum=checksum)
    try:
        return make_normaliser(settings, _vocabulary(doc))
    except (ImportError, OSError) as exc:
        r.fail(node, "stem", "normalise.stem", f"stemmer {stem!r} is not available: {exc}")
        return make_normaliser(dataclasses.replace(settings, stem="none"), _vocabulary(doc))


def _question(r: Reader, intent: LineDict, normaliser: Normaliser) -> Question:
    """intent.question: the words and phrases that make a sentence a question (besides a "?")."""
    node = r.get(intent, "question", "intent", LineDict, required=False)
    if node is None:
        return Question()
    r.known_keys(node, "intent.question", {"keywords", "phrases"})
    keywords = _words(r, node, "keywords", "intent.question") if "keywords" in node else frozenset()
    phrases: tuple[Phrase, ...] = ()
    values = node.get("phrases")
    if values is not None:
        if not isinstance(values, LineList) or not all(isinstance(v, str) and v.strip() for v in values):
            r.fail(node, "phrases", "intent.question.phrases", "expected a non-empty list of strings")
        else:
            phrases = tuple(Phrase.of(v, normaliser) for v in values)
    normal = {n for w in keywords or () for n in normaliser.normal(w) if len(normaliser.normal(w)) == 1}
    return Question(frozenset(keywords or ()) | normal, phrases)


def _signals(r: Reader, doc: LineDict, model_file: bool = True) -> Signals | None:
    names: set[str] = set()
    r.known_keys(doc, "", {"normalise", "intent", "hard_complaint", "language", "model", "combine"})
    intent = r.get(doc, "intent", "", LineDict)
    hard = r.get(doc, "hard_complaint", "", LineDict)
    language = r.get(doc, "language", "", LineDict)
    if intent is None or hard is None or language is None:
        return None
    r.known_keys(intent, "intent", {"threshold", "margin", "question", "signals"})
    r.known_keys(hard, "hard_complaint", {"threshold", "signals"})
    normaliser = _normalise(r, doc)
    question = _question(r, intent, normaliser)
    intent_signals = [
        _signal(r, item, path, None, names, normaliser)
        for _, path, item in r.items(r.get(intent, "signals", "intent", LineList) or LineList(), "intent.signals")
    ]
    hard_signals = [
        _signal(r, item, path, "hard", names, normaliser)
        for _, path, item in r.items(
            r.get(hard, "signals", "hard_complaint", LineList) or LineList(), "hard_complaint.signals"
        )
    ]
    threshold = r.get(intent, "threshold", "intent", float)
    margin = r.get(intent, "margin", "intent", float, required=False) or 0.0
    hard_threshold = r.get(hard, "threshold", "hard_complaint", float)
    lang = validate(signals.LanguageSection, language, r, "language")
    if threshold is None or hard_threshold is None or None in intent_signals or None in hard_signals or lang is None:
        return None
    model, combine = _model(r, doc, model_file)
    return Signals(
        intent_signals=tuple(s for s in intent_signals if s is not None),
        intent_threshold=threshold,
        intent_margin=margin,
        hard_signals=tuple(s for s in hard_signals if s is not None),
        hard_threshold=hard_threshold,
        default_language=lang.default,
        english_words=frozenset(w.casefold() for w in lang.english),
        indonesian_words=frozenset(w.casefold() for w in lang.indonesian),
        english_min=lang.english_min,
        model=model,
        combine=combine,
        normaliser=normaliser,
        question=question,
    )


# --------------------------------------------------------------------------- rules file
# Its shape is rules.RulesFile's (validated once in _table); what the file alone cannot say is checked
# here, on the rows whose shape is valid: values of facts, units and templates that exist, row ids
# used twice, the catch-all last row (and, in load_config, shadowed rows).


def _action(
    r: Reader,
    item: LineDict,
    path: str,
    shape: Any,
    units: dict[str, Unit],
    templates: TemplateSet,
    unitless: Callable[[str], TemplateRenderError | None] = lambda _: None,
    broken_units: frozenset[str] = frozenset(),
) -> Action | None:
    kind = next(k for k in ACTION_KINDS if getattr(shape, k) is not None)
    target: str = getattr(shape, kind)
    if kind == "record":
        return Record(target)

    def unit_ok(key: str, field: str) -> bool:
        if key in broken_units:  # declared but invalid: its own error is reported once, at its definition
            return False
        if key not in units:
            r.fail(
                item, field, f"{path}.{field}", f"unknown unit {key!r} (known: {', '.join(sorted(units)) or 'none'})"
            )
            return False
        return True

    if kind == "reply":
        missing = [lang for lang in LANGUAGES if not templates.has(target, lang)]
        if missing and all((target, lang) in templates.broken for lang in missing):
            return None  # the template's own error is reported once, at its file and line
        if missing:
            files = ", ".join(templates.file_of(target, lang) for lang in missing)
            r.fail(item, "reply", f"{path}.reply", f"unknown template {target!r}: missing {files}")
            return None
        unit: str | None = shape.unit
        if unit is not None and not unit_ok(unit, "unit"):
            return None
        if unit is None and (failure := unitless(target)) is not None:
            if failure.reason == NO_UNIT:
                where = f"{failure.file}:{failure.line}" if failure.line is not None else failure.file
                reason = (
                    f"template {target!r} tells the customer about a unit ({where}) but this reply names none:"
                    " add 'unit: UNIT' under it, or use the unit only inside {% if unit is defined %}"
                )
            else:
                reason = f"template {target!r} does not render for a reply that names no unit: {failure}"
            r.fail(item, "reply", f"{path}.reply", reason)
            return None
        return Reply(target, unit)
    if not unit_ok(target, kind):
        return None
    if kind == "forward":
        return Forward(target)
    if kind == "escalate":
        return Escalate(target)
    return OpenTicket(target)


def _when(r: Reader, node: Any, path: str, allowed: dict[str, set[Any]]) -> dict[str, frozenset[Any]] | None:
    """The row's conditions, each value one the fact can take; a fact or value of the wrong type was reported
    with the file's shape."""
    if node is None:
        return {}
    if not isinstance(node, LineDict):
        return None
    when: dict[str, frozenset[Any]] = {}
    ok = True
    for fact, value in node.items():
        values = list(value) if isinstance(value, LineList) else [value]
        if fact not in allowed or not values or any(type(v) is not FACTS[fact].kind for v in values):
            ok = False
            continue
        bad = [v for v in values if v not in allowed[fact]]
        if bad:
            known = ", ".join(str(v).lower() if isinstance(v, bool) else str(v) for v in sorted(allowed[fact], key=str))
            wrong = bad[0]
            hint = (
                f"; segment codes are upper-case: {wrong.upper()}"
                if fact == "segment" and isinstance(wrong, str) and wrong.upper() in allowed[fact]
                else ""
            )
            r.fail(node, fact, f"{path}.when.{fact}", f"unknown value {wrong!r} (known: {known}){hint}")
            ok = False
            continue
        when[fact] = frozenset(values)
    return when if ok else None


def _table(
    r: Reader,
    doc: LineDict,
    segments: set[str],
    units: dict[str, Unit],
    templates: TemplateSet,
    unitless: Callable[[str], TemplateRenderError | None] = lambda _: None,
    broken_units: frozenset[str] = frozenset(),
) -> Table | None:
    """The decision table, or None with every problem of the file recorded in `r`, in the order of the file."""
    found = Reader(r.file, [])
    try:
        return _rows(found, doc, segments, units, templates, unitless, broken_units)
    finally:
        r.problems.extend(sorted(found.problems, key=lambda p: p.line or 0))


def _rows(
    r: Reader,
    doc: LineDict,
    segments: set[str],
    units: dict[str, Unit],
    templates: TemplateSet,
    unitless: Callable[[str], TemplateRenderError | None],
    broken_units: frozenset[str],
) -> Table | None:
    shape = validate(rules.RulesFile, doc, r)  # the whole file's shape; every problem in it is reported here
    rows_node = doc.get("rows")
    if not isinstance(rows_node, LineList):
        return None
    allowed = {name: set(values) for name, values in allowed_values(sorted(segments)).items()}
    built: list[Row] = []
    ids: dict[str, int] = {}
    for _, path, item in r.items(rows_node, "rows"):
        if not isinstance(item, LineDict):
            continue
        # each part is checked on its own, so one bad part of a row does not hide the problems of another
        row_id = item.get("id")
        if isinstance(row_id, str) and row_id in ids:
            r.fail(item, "id", f"{path}.id", f"row id {row_id!r} is used twice (first at line {ids[row_id]})")
        elif isinstance(row_id, str):
            ids[row_id] = item.lines["id"]
        when = _when(r, item.get("when"), path, allowed)
        actions_node = item.get("actions")
        actions = [
            _action(r, aitem, apath, action, units, templates, unitless, broken_units)
            if isinstance(aitem, LineDict) and (action := _valid(rules.Action, aitem)) is not None
            else None
            for _, apath, aitem in r.items(
                actions_node if isinstance(actions_node, LineList) else LineList(), f"{path}.actions"
            )
        ]
        row = _valid(rules.Row, item)
        if row is not None and when is not None and all(a is not None for a in actions):
            built.append(Row(row.id, row.description or "", when, tuple(a for a in actions if a), item.line))
    last = rows_node[-1] if rows_node else None
    if isinstance(last, LineDict) and isinstance(last.get("when"), LineDict) and last["when"]:
        r.fail(
            last,
            "when",
            f"rows[{len(rows_node) - 1}].when",
            "the last row must have no conditions, so that it catches every mail (no mail is ever dropped)",
        )
        return None
    if shape is None or len(built) != len(rows_node) or len({row.id for row in built}) != len(built):
        return None
    return Table(shape.hit_policy, tuple(built), r.file)


# --------------------------------------------------------------------------- everything


def load_config(path: str | Path, *, directory: str | Path | None = None, model: bool = True) -> Config:
    """Load and validate the whole configuration. Raises ConfigError naming every problem.
    `model=False`: without the learned model of signals.yaml (for `train`, which makes a new one)."""
    path = Path(path)
    problems: list[Problem] = []
    digest = hashlib.sha256()
    display = str(path)
    text = _read(path, display, problems)
    if text is None:
        raise ConfigError(problems)
    digest.update(text.encode())
    doc = load_yaml(text, display, problems)
    if not isinstance(doc, LineDict):
        if doc is not None or not problems:
            problems.append(Problem(display, 1, "", "expected a mapping at the top level"))
        raise ConfigError(problems)
    r = Reader(display, problems)
    main = validate(routing.MainFile, doc, r)  # the whole file's shape; every problem in it is reported here
    base = path.parent
    files = doc.get("files")
    files = files if isinstance(files, LineDict) else LineDict()

    def file_path(key: str) -> tuple[Path, str] | None:
        name = files.get(key)
        if not isinstance(name, str) or not name.strip():
            return None
        p = base / name
        if not p.exists():  # named where it is configured, not only as a path
            r.fail(files, key, f"files.{key}", f"{name}: not found (looked for {p})")
            return None
        return p, str(p)

    router = _router(main, doc)
    guard = _guard(main, doc)
    units = _units(main, doc)
    settings = settings_of(main, base)
    node = doc.get("router")
    failures_to = node.get("failures_to", _FAILURES_TO) if isinstance(node, LineDict) else None
    declared_units = doc.get("units")  # a declared but invalid unit is reported once, at its definition
    broken = isinstance(declared_units, LineDict) and failures_to in declared_units
    if isinstance(failures_to, str) and failures_to.strip() and units and failures_to not in units and not broken:
        r.fail(
            node,
            "failures_to" if isinstance(node, LineDict) and "failures_to" in node else None,
            "router.failures_to",
            f"unknown unit {failures_to!r} (known: {', '.join(sorted(units))})",
        )

    # the directory first: segmentation needs it
    seg_codes = doc.get("segmentation", {}).get("segments", {}) if isinstance(doc.get("segmentation"), LineDict) else {}
    segments = set(seg_codes) if isinstance(seg_codes, LineDict) else set()
    dir_file = (Path(directory), str(directory)) if directory is not None else file_path("directory")
    customer_directory = Directory()
    if dir_file is not None:
        dir_text = _read(dir_file[0], dir_file[1], problems)
        if dir_text is not None:
            digest.update(dir_text.encode())
            customer_directory = load_directory(dir_text, dir_file[1], segments, problems)
    segmentation = _segmentation(r, main, doc, customer_directory)

    templates = TemplateSet(str(base), {})
    if (tpl := file_path("templates")) is not None:
        templates = load_templates(tpl[0], tpl[1], problems)
        for p in sorted(tpl[0].glob("*.txt")) if tpl[0].is_dir() else []:
            digest.update(p.name.encode() + b"\0" + p.read_bytes())
        if router is not None:
            check_templates(templates, router, list(units.values()), sorted(segments), tpl[1], problems)

    signals = None
    if (sig := file_path("signals")) is not None and (sig_text := _read(sig[0], sig[1], problems)) is not None:
        digest.update(sig_text.encode())
        sig_doc = load_yaml(sig_text, sig[1], problems)
        if isinstance(sig_doc, LineDict):
            signals = _signals(Reader(sig[1], problems), sig_doc, model)
            if signals is not None and signals.model is not None:
                digest.update(signals.model.checksum.encode())  # a retrained model is a new config version
            if signals is not None:
                digest.update(signals.normaliser.settings.checksum.encode())  # so is a changed slang file
        elif sig_doc is not None:
            problems.append(Problem(sig[1], 1, "", "expected a mapping at the top level"))
        elif not any(p.file == sig[1] for p in problems):
            problems.append(
                Problem(
                    sig[1],
                    1,
                    "",
                    "empty (or only comments): expected intent: and hard_complaint: (see the shipped signals.yaml)",
                )
            )

    table = None
    if (rules := file_path("rules")) is not None and (rules_text := _read(rules[0], rules[1], problems)) is not None:
        digest.update(rules_text.encode())
        rules_doc = load_yaml(rules_text, rules[1], problems)
        if isinstance(rules_doc, LineDict):

            @functools.cache
            def unitless(name: str) -> TemplateRenderError | None:
                return unitless_failure(templates, name, router, sorted(segments)) if router is not None else None

            declared = doc.get("units")
            broken_units = frozenset(declared or ()) - set(units) if isinstance(declared, LineDict) else frozenset()
            table = _table(Reader(rules[1], problems), rules_doc, segments, units, templates, unitless, broken_units)
        elif rules_doc is not None:
            problems.append(Problem(rules[1], 1, "", "expected a mapping at the top level"))
        elif not any(p.file == rules[1] for p in problems):
            problems.append(Problem(rules[1], 1, "", "empty (or only comments): expected hit_policy: and rows:"))

    if table is not None and segmentation is not None:
        problems.extend(verify(table, list(segmentation.segments), {row.id: row.line for row in table.rows}))
    errors = [p for p in problems if not p.warning]
    if errors or router is None or segmentation is None or signals is None or table is None:
        if not errors:
            problems.append(Problem(display, None, "", "configuration incomplete"))
        raise ConfigError(problems)
    return Config(
        path=path,
        router=router,
        units=units,
        segmentation=segmentation,
        signals=signals,
        table=table,
        templates=templates,
        version=digest.hexdigest()[:12],
        settings=settings,
        warnings=tuple(p for p in problems if p.warning),
        guard=guard,
        max_message_bytes=settings.max_message_bytes,
    )
