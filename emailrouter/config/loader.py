"""Config files -> typed, frozen objects, validated once. Every problem names file, line and key.

`load_config(path)` reads the main file (`emailrouter.yaml`), then the files it names: the decision
table, the signals, the customer directory and the reply templates. It either returns a `Config`
or raises `ConfigError` listing every problem found.

Over 400 lines: every file's shape is a pydantic model (models.py, routing.py, rules.py, signals.py);
what stays here is what no one file's shape can say, each check on the nodes as read so that it names
file, line and key: the cross-checks between files (units, templates, segments, shadowed rows), those
across the signals of signals.yaml (names, requires/unless, regexes, the slang and model files), and the
turning of each valid shape into the core's objects, for three files.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from emailrouter.config import routing, rules, signals
from emailrouter.config.credentials import credential_problems
from emailrouter.config.modelfile import load_model
from emailrouter.config.settings import Settings, settings_of
from emailrouter.config.slang import make_normaliser, read_slang
from emailrouter.config.templates import load_templates
from emailrouter.config.validation import CROSS_CHECKS, validate
from emailrouter.config.webhooks import WebhookEndpoint, check_webhook, compile_webhook, endpoints_of
from emailrouter.config.yamlfile import LineDict, LineList, Reader, load_yaml
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
    # secrets that cannot be read here (credentials.unusable): `check` fails on them, and the daemon (`run`,
    # `quarantine retry`) does not start with them, nor takes them on a reload; other commands need no secret
    credential_problems: tuple[Problem, ...] = ()

    webhooks: Mapping[str, WebhookEndpoint] = dataclasses.field(default_factory=dict)  # unit key -> its endpoint


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


def _unit_models(main: routing.MainFile | None, doc: LineDict) -> dict[str, routing.Unit]:
    """The units as validated; with problems elsewhere in the file, the valid ones (so rules.yaml is still
    checked)."""
    if main is not None:
        return dict(main.units)
    node = doc.get("units")
    found = {}
    for key, value in node.items() if isinstance(node, LineDict) else ():
        if _KEY.match(key) and (unit := _valid(routing.Unit, value)) is not None:
            found[key] = unit
    return found


def _units(found: dict[str, routing.Unit], doc: LineDict, r: Reader) -> dict[str, Unit]:
    """The core's units, each webhook's body template compiled (a syntax error is a problem at its line)."""
    return {
        key: Unit(
            key,
            unit.address or "",
            unit.name.by_language(),
            unit.next_steps.by_language(),
            compile_webhook(key, unit.webhook, doc.get("units"), r) if unit.webhook is not None else None,
        )
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
# Its shape is signals.SignalsFile's (validated once in _signals); what one signal cannot say is checked
# here, on the nodes as read: names used twice, requires/unless naming a signal above or a group, regexes
# that compile, and the files it names (slang, model). Then the valid shape becomes the core's Signals.


def _signal_references(r: Reader, doc: LineDict) -> bool:
    """Whether every signal's name is its own, what requires/unless name exists above it, and its regexes compile;
    each signal is checked however the others are (a signal named but malformed still counts as named)."""
    names: set[str] = set()
    ok = True
    for section, groups in (
        ("intent", set(signals.SIGNAL_INTENTS)),
        ("hard_complaint", {*signals.SIGNAL_INTENTS, "hard"}),
    ):
        node = doc.get(section)
        items = node.get("signals") if isinstance(node, LineDict) else None
        for _, path, item in r.items(items if isinstance(items, LineList) else LineList(), f"{section}.signals"):
            if not isinstance(item, LineDict):
                continue
            name = item.get("name")
            for key in ("requires", "unless"):
                wanted = item.get(key)
                for j, want in enumerate(wanted if isinstance(wanted, LineList) else ()):
                    if isinstance(want, str) and want not in groups and (want not in names or want == name):
                        known = ", ".join(sorted(groups))
                        reason = f"unknown signal {want!r}: name a signal above this one, or one of {known}"
                        r.fail(wanted, j, f"{path}.{key}[{j}]", reason)
                        ok = False
            if isinstance(name, str) and name in names:
                r.fail(item, "name", f"{path}.name", f"signal name {name!r} is used twice")
                ok = False
            elif isinstance(name, str):
                names.add(name)
            ok = _regexes(r, item.get("regex"), f"{path}.regex") and ok
    return ok


def _regexes(r: Reader, values: Any, path: str) -> bool:
    ok = True
    for j, expr in enumerate(values if isinstance(values, LineList) else ()):
        if not isinstance(expr, str):
            continue
        try:
            re.compile(expr)
        except re.error as exc:
            r.fail(values, j, f"{path}[{j}]", f"bad regex {expr!r}: {exc}")
            ok = False
            continue
        if re.search(r"(?<!\\)[A-Z]", re.sub(r"\\.", "", expr)):
            r.fail(values, j, f"{path}[{j}]", "regexes run on lower-cased text: capitals never match", warning=True)
    return ok


def _forms(words: Iterable[str], normaliser: Normaliser) -> frozenset[str]:
    """The words case-folded, and each one's normal form where that is one word ("lemod" also matches "lemot")."""
    folded = {fold(w) for w in words}
    return frozenset(folded | {n for w in folded if len(normal := normaliser.normal(w)) == 1 for n in normal})


def _signal(shape: signals.IntentSignal | signals.HardSignal, normaliser: Normaliser) -> Signal:
    """One valid signal as the core's Signal."""
    roots = shape.roots
    near = shape.near
    history = shape.history if isinstance(shape, signals.HardSignal) else None
    return Signal(
        shape.name,
        shape.intent if isinstance(shape, signals.IntentSignal) else "hard",
        shape.weight,
        keywords=_forms(shape.keywords or (), normaliser),
        phrases=tuple(Phrase.of(v, normaliser, roots=roots) for v in shape.phrases or ()),
        regex=re.compile("|".join(f"(?:{v})" for v in shape.regex)) if shape.regex else None,
        caps_ratio=shape.caps_ratio,
        min_letters=shape.min_letters or 0,
        exclamation_run=shape.exclamation_run,
        history=HistoryRule(history.previous, history.within_days, history.same_intent) if history else None,
        near=Near(_forms(near.words, normaliser), _forms(near.with_, normaliser), near.within, near.ordered, roots)
        if near is not None
        else None,
        in_question=shape.in_question,
        requires=frozenset(shape.requires or ()),
        unless=frozenset(shape.unless or ()),
        roots=roots,
    )


def _model(
    r: Reader, doc: LineDict, shape: signals.SignalsFile | None, load: bool = True
) -> tuple[TextModel | None, CombineSettings]:
    """signals.yaml's `model:` (the learned model's file, relative to signals.yaml) and `combine:`.
    `load=False`: the model file is not read (`train` replaces it, so a stale one must not stop it)."""
    if "combine" in doc and "model" not in doc:
        r.fail(doc, "combine", "combine", "has no effect without a model: section", warning=True)
    combine = shape.combine.settings() if shape is not None and shape.combine is not None else CombineSettings()
    model_node = doc.get("model")
    model_file = _valid(signals.ModelFile, model_node) if isinstance(model_node, LineDict) and load else None
    if model_file is None:
        return None, combine
    path = Path(r.file).parent / model_file.file
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
    node = doc.get("normalise")
    if not isinstance(node, LineDict):
        return PLAIN
    shape = _valid(signals.Normalise, node) or signals.Normalise()  # its problems are the file's; defaults if invalid
    settings = NormaliseSettings(
        stem=shape.stem,
        min_stem_length=shape.min_stem_length,
        elongation=shape.elongation,
        reduplication=shape.reduplication,
    )
    if shape.slang is not None:
        path = Path(r.file).parent / shape.slang
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
        r.fail(node, "stem", "normalise.stem", f"stemmer {shape.stem!r} is not available: {exc}")
        return make_normaliser(dataclasses.replace(settings, stem="none"), _vocabulary(doc))


def _signals(r: Reader, doc: LineDict, model_file: bool = True) -> Signals | None:
    """The signals, or None with every problem of the file recorded in `r`, in the order of the file
    (those of the files it names, slang and model, after it)."""
    found = Reader(r.file, [])
    try:
        shape = validate(signals.SignalsFile, doc, found)  # the whole file's shape; every problem in it is reported
        normaliser = _normalise(found, doc)
        references = _signal_references(found, doc)
        model, combine = _model(found, doc, shape, model_file)
        if shape is None or not references:
            return None
        intent, hard, language, question = shape.intent, shape.hard_complaint, shape.language, shape.intent.question
        return Signals(
            intent_signals=tuple(_signal(s, normaliser) for s in intent.signals),
            intent_threshold=intent.threshold,
            intent_margin=intent.margin,
            hard_signals=tuple(_signal(s, normaliser) for s in hard.signals),
            hard_threshold=hard.threshold,
            default_language=language.default,
            english_words=frozenset(w.casefold() for w in language.english),
            indonesian_words=frozenset(w.casefold() for w in language.indonesian),
            english_min=language.english_min,
            model=model,
            combine=combine,
            normaliser=normaliser,
            question=Question(
                _forms(question.keywords or (), normaliser),
                tuple(Phrase.of(v, normaliser) for v in question.phrases or ()),
            )
            if question is not None
            else Question(),
        )
    finally:
        r.problems.extend(sorted(found.problems, key=lambda p: (p.file != r.file, p.line or 0)))


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
    unit_models = _unit_models(main, doc)
    units = _units(unit_models, doc, r)
    for unit in units.values():
        check_webhook(unit, f"{router.reference_prefix if router else 'ER'}-SAMPLE00", doc.get("units"), r)
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
    if isinstance(failures_to, str) and failures_to in units and not units[failures_to].address:
        r.fail(
            node,
            "failures_to" if isinstance(node, LineDict) and "failures_to" in node else None,
            "router.failures_to",
            f"unit {failures_to!r} has no address: failure notices are mail, the failure unit needs a mailbox",
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
        credential_problems=tuple(credential_problems(doc, display, base)),
        guard=guard,
        max_message_bytes=settings.max_message_bytes,
        webhooks=endpoints_of(unit_models, base),
    )
