"""The package's layers, checked: which subpackage may import which, and what the pure core may not import.

    core     pure stages; imports nothing else of ours, and no I/O, clock or logging module
    config   files -> core objects;       imports core
    service  the daemon and its stores;   imports core, config
    ops      what ops run by hand;        imports core, config, service, demo (the `demo` command)
    demo     `emailrouter demo`;          imports core, config, service

`emailrouter layout` prints the tree (the README's "Layout" section is this output, and a test keeps
them equal) and exits 1 listing every import that breaks the rules (tests/test_architecture.py runs it
in CI).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent
LAYERS: dict[str, frozenset[str]] = {
    "core": frozenset({"core"}),
    "config": frozenset({"core", "config"}),
    "service": frozenset({"core", "config", "service"}),
    "ops": frozenset({"core", "config", "service", "ops", "demo"}),  # the command line wires up `demo` too
    "demo": frozenset({"core", "config", "service", "demo"}),
}
# Modules that do I/O, read the clock, log or run things: never imported by the core.
CORE_FORBIDDEN = frozenset(
    {
        "aiosmtpd", "aiosmtplib", "apscheduler", "asyncio", "ctypes", "http", "imapclient", "logging", "os",
        "pathlib", "prometheus_client", "pymap", "select", "shutil", "signal", "socket", "socketserver",
        "sqlite3", "ssl", "structlog", "subprocess", "sys", "tempfile", "threading", "time", "urllib", "yaml",
    }
)  # fmt: skip


@dataclass(frozen=True)
class Violation:
    file: str
    line: int
    imported: str
    why: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: imports {self.imported}: {self.why}"


def imports_of(source: str) -> list[tuple[int, str]]:
    """(line, module) for every import statement in `source`, at any depth (a lazy import counts too)."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            if node.module == "emailrouter":  # from emailrouter import x: the module is emailrouter.x
                found.extend((node.lineno, f"emailrouter.{alias.name}") for alias in node.names)
            else:
                found.append((node.lineno, node.module))
    return found


def check_module(layer: str, source: str, shown: str) -> list[Violation]:
    """What in one module of `layer` breaks the layering."""
    out: list[Violation] = []
    allowed = LAYERS[layer]
    for line, module in imports_of(source):
        top, _, rest = module.partition(".")
        if top == "tests":
            out.append(Violation(shown, line, module, "the package never imports the tests"))
        elif top == "emailrouter" and rest:
            target = rest.partition(".")[0]
            if target in LAYERS and target not in allowed:
                out.append(Violation(shown, line, module, f"{layer} may import only {', '.join(sorted(allowed))}"))
        elif layer == "core" and top in CORE_FORBIDDEN:
            out.append(Violation(shown, line, module, "the core does no I/O, reads no clock and does not log"))
    return out


def violations(package: Path = PACKAGE) -> list[Violation]:
    """Every import in the package that breaks the layering, in file order."""
    out: list[Violation] = []
    for layer in LAYERS:
        for path in sorted((package / layer).glob("*.py")):
            out.extend(check_module(layer, path.read_text(encoding="utf-8"), f"{package.name}/{layer}/{path.name}"))
    return out


def _summary(path: Path) -> str:
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
    first = doc.split("\n\n")[0].replace("\n", " ").strip()
    return first.split(". ")[0].rstrip(".")


def tree(package: Path = PACKAGE) -> str:
    """The package tree, one line per module with the first sentence of its docstring."""
    lines = [f"{package.name}/"]
    for layer in LAYERS:
        folder = package / layer
        allowed = ", ".join(sorted(LAYERS[layer] - {layer})) or "nothing else"
        lines.append(f"  {layer}/  {_summary(folder / '__init__.py')}  [imports: {allowed}]")
        for path in sorted(folder.glob("*.py")):
            if path.name != "__init__.py":
                lines.append(f"    {path.stem:<12} {_summary(path)}")
    return "\n".join(lines) + "\n"
