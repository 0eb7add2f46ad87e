"""Reply templates: Jinja2 in a sandbox, one file per template and language (`<name>.<id|en>.txt`).

A template starts with a `Subject:` line, then a blank line, then the body. Customer text is only
ever passed in as data: it is never itself rendered as a template.

`check` renders every template with `StrictUndefined` against sample contexts that include the
awkward cases real mail brings (no display name, a bare address as the name, emoji and non-Latin
names, an empty or very long subject, every unit, every segment): a template that fails on one of
them is a config error, not a quarantined mail at 3 a.m. When a rule's reply names no unit, `unit`
is undefined: a template that uses it must guard it with `{% if unit is defined %}`.
"""

from __future__ import annotations

import traceback
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import product
from typing import Any

import jinja2

from emailrouter.core.errors import ComposeError, Problem
from emailrouter.core.model import LANGUAGES, UNKNOWN_SEGMENT, RouterIdentity, Unit

NO_UNIT = (
    "this reply names no unit: give the rule's `reply:` a `unit:`, or use the unit only inside {% if unit is defined %}"
)


@dataclass(frozen=True)
class Rendered:
    subject: str
    body: str


class TemplateRenderError(ComposeError):
    """A template failed on this context. `line` is the template's line, when Jinja knows it."""

    def __init__(self, file: str, line: int | None, reason: str) -> None:
        self.file = file
        self.line = line
        self.reason = reason
        where = f"{file}:{line}" if line is not None else file
        super().__init__(f"{where}: {reason}")


def reply_context(
    *,
    router: RouterIdentity,
    language: str,
    customer_name: str | None,
    customer_address: str | None,
    original_subject: str,
    unit: Unit | None,
    reference: str,
    segment: str,
) -> dict[str, Any]:
    """Everything a reply template may use: plain strings, except that `unit` is undefined (any use of it
    fails, `unit is defined` is false) when the rule names no unit."""
    return {
        "router": {"name": router.name, "address": router.address},
        "language": language,
        "customer": {"name": greeting_name(customer_name), "address": customer_address or ""},
        "original_subject": original_subject,
        "unit": (
            {
                "key": unit.key,
                "name": unit.name[language],
                "address": unit.address,
                "next_steps": unit.next_steps[language],
            }
            if unit
            else jinja2.StrictUndefined(hint=NO_UNIT)
        ),
        "reference": reference,
        "segment": segment,
    }


def greeting_name(name: str | None) -> str:
    """A display name as a greeting can use it: emoji, pictographs and other symbols left out, spaces
    collapsed ("🌸 Sari ✨" -> "Sari"); empty when nothing of a name is left."""
    if not name:
        return ""
    kept = "".join(
        c for c in name if c == " " or not (unicodedata.category(c).startswith(("S", "C")) or c in "\ufe0e\ufe0f")
    )
    return " ".join(kept.split())


def _reason(exc: Exception) -> str:
    if isinstance(exc, jinja2.UndefinedError):
        return exc.message or str(exc)
    return f"{type(exc).__name__}: {exc}"


def _line(exc: BaseException, filename: str | None) -> int | None:
    """The template line the error happened on: Jinja rewrites tracebacks to point into the template."""
    if isinstance(exc, jinja2.TemplateSyntaxError):
        return exc.lineno
    lines = [f.lineno for f in traceback.extract_tb(exc.__traceback__) if filename and f.filename == filename]
    return lines[-1] if lines else None


class TemplateSet:
    """Compiled templates, keyed by (name, language)."""

    def __init__(
        self,
        folder: str,
        templates: dict[tuple[str, str], jinja2.Template],
        broken: frozenset[tuple[str, str]] = frozenset(),
    ) -> None:
        self.folder = folder  # where they were read from, as shown in errors
        self._templates = templates
        self.broken = broken  # (name, language) of files that exist but did not compile (already reported)

    @property
    def names(self) -> set[str]:
        return {name for name, _ in self._templates}

    def has(self, name: str, language: str) -> bool:
        return (name, language) in self._templates

    def file_of(self, name: str, language: str) -> str:
        return f"{self.folder}/{name}.{language}.txt"

    def render(self, name: str, language: str, context: dict[str, Any]) -> Rendered:
        """Render one template; whatever goes wrong in it raises `TemplateRenderError` with file and line."""
        template = self._templates[(name, language)]
        try:
            text = template.render(context)
        except Exception as exc:  # ops' template code can fail in any way: say where, never crash the caller
            raise TemplateRenderError(
                self.file_of(name, language), _line(exc, template.filename), _reason(exc)
            ) from exc
        first, _, body = text.partition("\n")
        if not first.lower().startswith("subject:"):
            raise TemplateRenderError(self.file_of(name, language), 1, "the first line must be 'Subject: ...'")
        return Rendered(first[len("subject:") :].strip(), body.lstrip("\n"))


# --------------------------------------------------------------------------- sample contexts for `check`

# (what the sample is, in words for the error message; the value). The first of each is the ordinary case.
SAMPLE_NAMES: tuple[tuple[str, str], ...] = (
    ("a sender named 'Budi Santoso'", "Budi Santoso"),
    ("a sender with no display name", ""),
    ("a sender whose display name is their bare address", "budi.santoso@gmail.com"),
    ("a one-word name", "Budi"),
    ("an emoji name", "🌸 Sari ✨"),
    ("a Chinese name", "王小明"),
    ("an Arabic name", "محمد عبد الله"),
    ("a name with a comma and quotes", 'Santoso, Budi "Bud"'),
)
SAMPLE_SUBJECTS: tuple[tuple[str, str], ...] = (
    ("subject 'Internet mati'", "Internet mati"),
    ("an empty subject", ""),
    ("a 201-character subject", ("Internet mati sejak pagi, mohon segera dibantu " * 5)[:200] + "…"),
    ("a non-Latin subject", "网络中断 — انقطاع الإنترنت"),
)
SAMPLE_ADDRESSES: tuple[tuple[str, str | None], ...] = (
    ("address budi.santoso@gmail.com", "budi.santoso@gmail.com"),
    ("no customer address", None),
)


@dataclass(frozen=True, eq=False)
class Sample:
    """One context `check` renders a template with, and how to say which one it was."""

    description: str
    context: dict[str, Any]


def _unit_words(unit: Unit | None) -> str:
    return f"unit {unit.key!r}" if unit else "a reply that names no unit"


def sample_contexts(
    router: RouterIdentity, units: Sequence[Unit | None], segments: Sequence[str], language: str
) -> list[Sample]:
    """The ordinary case, then each awkward value alone, then combinations (names x subjects x addresses,
    cycling through units and segments; every unit with every segment). `check` reports the first that fails,
    so the simplest sample that shows a problem is the one named."""
    units = list(units) or [None]
    segments = list(segments) or [UNKNOWN_SEGMENT]
    reference = f"{router.reference_prefix}-SAMPLE00"
    base = (SAMPLE_NAMES[0], SAMPLE_SUBJECTS[0], SAMPLE_ADDRESSES[0], units[0], segments[0])

    def sample(
        name: tuple[str, str],
        subject: tuple[str, str],
        address: tuple[str, str | None],
        unit: Unit | None,
        segment: str,
    ) -> Sample:
        words = [
            w
            for w, changed in (
                (name[0], name != base[0]),
                (subject[0], subject != base[1]),
                (address[0], address != base[2]),
                (_unit_words(unit), unit is not base[3]),
                (f"segment {segment}", segment != base[4]),
            )
            if changed
        ]
        if not words:
            words = [f"the ordinary sample ({name[0]}, {subject[0]}, {_unit_words(unit)}, segment {segment})"]
        context = reply_context(
            router=router,
            language=language,
            customer_name=name[1],
            customer_address=address[1],
            original_subject=subject[1],
            unit=unit,
            reference=reference,
            segment=segment,
        )
        return Sample(", ".join(words), context)

    name0, subject0, address0, unit0, segment0 = base
    samples = [sample(*base)]
    samples += [sample(n, subject0, address0, unit0, segment0) for n in SAMPLE_NAMES[1:]]
    samples += [sample(name0, s, address0, unit0, segment0) for s in SAMPLE_SUBJECTS[1:]]
    samples += [sample(name0, subject0, a, unit0, segment0) for a in SAMPLE_ADDRESSES[1:]]
    samples += [sample(name0, subject0, address0, u, segment0) for u in units[1:]]
    samples += [sample(name0, subject0, address0, unit0, s) for s in segments[1:]]
    combos = product(SAMPLE_NAMES, SAMPLE_SUBJECTS, SAMPLE_ADDRESSES)
    samples += [
        sample(n, s, a, units[i % len(units)], segments[i % len(segments)]) for i, (n, s, a) in enumerate(combos)
    ]
    samples += [sample(name0, subject0, address0, u, s) for u, s in product(units, segments)]
    return samples


def first_failure(
    templates: TemplateSet, name: str, language: str, samples: Sequence[Sample]
) -> tuple[Sample, TemplateRenderError] | None:
    """The first sample the template fails on, with the error; None if it renders for every one."""
    for s in samples:
        try:
            templates.render(name, language, s.context)
        except TemplateRenderError as exc:
            return s, exc
    return None


def check_templates(
    templates: TemplateSet,
    router: RouterIdentity,
    units: Sequence[Unit],
    segments: Sequence[str],
    display: str,
    problems: list[Problem],
) -> None:
    """Render every template in every language against every sample context; each template that fails on
    one becomes a problem naming the file, the template line and the sample that broke it."""
    for lang in LANGUAGES:
        samples: list[Sample] | None = None
        for name in sorted(templates.names):
            shown = f"{display}/{name}.{lang}.txt"
            if not templates.has(name, lang):
                problems.append(Problem(shown, None, name, f"template {name!r} has no {lang} version", warning=True))
                continue
            samples = samples or sample_contexts(router, units, segments, lang)
            failed = first_failure(templates, name, lang, samples)
            if failed is not None:
                s, exc = failed
                problems.append(Problem(shown, exc.line, name, f"does not render for {s.description}: {exc.reason}"))


def unitless_failure(
    templates: TemplateSet, name: str, router: RouterIdentity, segments: Sequence[str]
) -> TemplateRenderError | None:
    """Why template `name` cannot serve a reply that names no unit (in some language), or None if it can."""
    for lang in LANGUAGES:
        if templates.has(name, lang):
            failed = first_failure(templates, name, lang, sample_contexts(router, [None], segments, lang))
            if failed is not None:
                return failed[1]
    return None
