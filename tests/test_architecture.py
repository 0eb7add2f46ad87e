"""The layering: the core imports nothing of the shell, and the README's layout is the tree's own."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from emailrouter.ops import layout

ROOT = Path(__file__).resolve().parent.parent


def test_the_package_keeps_its_layers() -> None:
    """No module imports a subpackage its layer may not use, and the core imports no I/O module."""
    assert [str(v) for v in layout.violations()] == []


def test_a_core_module_importing_the_service_is_caught() -> None:
    """The check fails on the very thing it guards against: a core stage importing the store or the clock."""
    source = "import time\nfrom emailrouter.service.store import Store\nfrom emailrouter import ops\n"
    found = layout.check_module("core", source, "emailrouter/core/bad.py")
    assert [(v.line, v.imported) for v in found] == [
        (1, "time"),
        (2, "emailrouter.service.store"),
        (3, "emailrouter.ops"),
    ]


def test_a_lazy_import_inside_a_function_counts_too() -> None:
    """An import hidden in a function body is still an import of that layer."""
    source = "def f():\n    from emailrouter.service import daemon\n    return daemon\n"
    assert [v.imported for v in layout.check_module("config", source, "x.py")] == ["emailrouter.service"]


def test_the_package_never_imports_the_tests() -> None:
    """tests/support is the tests' own: the runtime package does not depend on it."""
    found = layout.check_module("demo", "from tests.support.sink import SmtpSink\n", "x.py")
    assert [v.why for v in found] == ["the package never imports the tests"]


def test_importing_the_pipeline_loads_no_server_or_subprocess_module() -> None:
    """`import emailrouter.core.pipeline` pulls in no metrics server, HTTP server, subprocess, SQLite or logging."""
    probe = (
        "import sys, emailrouter.core.pipeline\n"
        "heavy = {'prometheus_client', 'http.server', 'subprocess', 'sqlite3', 'structlog', 'imapclient',"
        " 'aiosmtplib', 'apscheduler', 'yaml'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_the_readme_layout_is_the_trees_own() -> None:
    """The README's layout block is exactly what `emailrouter layout` prints: it cannot be drawn by hand and drift."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    marker = "<!-- layout: emailrouter layout -->\n```text\n"
    start = readme.index(marker) + len(marker)
    end = readme.index("```", start)
    assert readme[start:end] == layout.tree()
