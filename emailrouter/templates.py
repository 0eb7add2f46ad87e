"""Reply templates: Jinja2 in a sandbox, one file per template and language (`<name>.<id|en>.txt`).

A template starts with a `Subject:` line, then a blank line, then the body. Customer text is only
ever passed in as data: it is never itself rendered as a template.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from emailrouter.errors import Problem
from emailrouter.model import LANGUAGES, RouterIdentity, Unit

_NAME = re.compile(r"^(?P<name>[A-Za-z0-9_-]+)\.(?P<lang>[a-z]{2})\.txt$")


@dataclass(frozen=True)
class Rendered:
    subject: str
    body: str


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
    """Everything a reply template may use. Plain strings only."""
    return {
        "router": {"name": router.name, "address": router.address},
        "language": language,
        "customer": {"name": customer_name or "", "address": customer_address or ""},
        "original_subject": original_subject,
        "unit": {
            "key": unit.key if unit else "",
            "name": unit.name[language] if unit else "",
            "address": unit.address if unit else "",
            "next_steps": unit.next_steps[language] if unit else "",
        },
        "reference": reference,
        "segment": segment,
    }


class TemplateSet:
    """Compiled templates, keyed by (name, language)."""

    def __init__(self, folder: Path, templates: dict[tuple[str, str], jinja2.Template]) -> None:
        self.folder = folder
        self._templates = templates

    @property
    def names(self) -> set[str]:
        return {name for name, _ in self._templates}

    def has(self, name: str, language: str) -> bool:
        return (name, language) in self._templates

    def file_of(self, name: str, language: str) -> str:
        return str(self.folder / f"{name}.{language}.txt")

    def render(self, name: str, language: str, context: dict[str, Any]) -> Rendered:
        text = self._templates[(name, language)].render(context)
        first, _, body = text.partition("\n")
        if not first.lower().startswith("subject:"):
            raise ValueError("the first line must be 'Subject: ...'")
        return Rendered(first[len("subject:") :].strip(), body.lstrip("\n"))


def load_templates(folder: Path, display: str, problems: list[Problem]) -> TemplateSet:
    """Compile every `<name>.<lang>.txt` in `folder`; syntax errors become problems with their line."""
    env = SandboxedEnvironment(
        loader=jinja2.FileSystemLoader(str(folder)),
        autoescape=jinja2.select_autoescape(["html", "htm"]),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    templates: dict[tuple[str, str], jinja2.Template] = {}
    if not folder.is_dir():
        problems.append(Problem(display, None, "files.templates", f"template folder {folder} does not exist"))
        return TemplateSet(folder, templates)
    for path in sorted(folder.iterdir()):
        m = _NAME.match(path.name)
        if not m:
            continue
        shown = f"{display}/{path.name}"
        if m["lang"] not in LANGUAGES:
            problems.append(Problem(shown, None, "", f"unknown language {m['lang']!r} (known: {', '.join(LANGUAGES)})"))
            continue
        try:
            templates[(m["name"], m["lang"])] = env.get_template(path.name)
        except jinja2.TemplateSyntaxError as exc:
            problems.append(Problem(shown, exc.lineno, m["name"], f"template syntax: {exc.message}"))
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(Problem(shown, None, m["name"], f"cannot read: {exc}"))
    return TemplateSet(folder, templates)
