"""The template folder -> compiled templates (core/templates.py renders them).

Each `<name>.<lang>.txt` is compiled once, in Jinja2's sandbox with undefined names an error; a syntax
error or an unreadable file is a problem naming the file and line.
"""

from __future__ import annotations

import re
from pathlib import Path

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from emailrouter.core.errors import Problem
from emailrouter.core.model import LANGUAGES
from emailrouter.core.templates import TemplateSet

_NAME = re.compile(r"^(?P<name>[A-Za-z0-9_-]+)\.(?P<lang>[a-z]{2})\.txt$")


def sandbox(loader: jinja2.BaseLoader | None = None, *, html: bool = True) -> SandboxedEnvironment:
    """The one kind of Jinja2 environment every template of ours is compiled in: sandboxed, undefined names an
    error; `.html` reply templates autoescaped (`html=False` for webhook bodies: JSON, values written with
    `tojson`)."""
    return SandboxedEnvironment(
        loader=loader,
        autoescape=jinja2.select_autoescape(["html", "htm"]) if html else False,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


def load_templates(folder: Path, display: str, problems: list[Problem]) -> TemplateSet:
    """Compile every `<name>.<lang>.txt` in `folder`; syntax errors become problems with their line."""
    env = sandbox(jinja2.FileSystemLoader(str(folder)))
    templates: dict[tuple[str, str], jinja2.Template] = {}
    broken: set[tuple[str, str]] = set()
    if not folder.is_dir():
        problems.append(Problem(display, None, "files.templates", f"template folder {folder} does not exist"))
        return TemplateSet(str(folder), templates)
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
            broken.add((m["name"], m["lang"]))
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(Problem(shown, None, m["name"], f"cannot read: {exc}"))
            broken.add((m["name"], m["lang"]))
    return TemplateSet(str(folder), templates, frozenset(broken))
