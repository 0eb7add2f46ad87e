"""The wheel is a complete package: built with `python -m build`, installed into a fresh venv outside the
repository (dependencies from the package index pip is configured with), its `init`, `check` and `demo` work
from a folder that has nothing of the repository in it.

To stay fast, the dependencies (read from setup.cfg, the source of the wheel's metadata) are installed
while the wheel builds, from a wheelhouse in ~/.cache/emailrouter-tests that `pip download` fills from
the index the first time (or when a requirement changed); the wheel's own `pip install
'emailrouter[demo]'` then resolves its metadata and finds them installed (one missing would be fetched).
"""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import ROOT

PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
WHEELHOUSE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "emailrouter-tests" / "wheels"


def _source_copy(target: Path) -> Path:
    """What a wheel is built from, copied (links kept: emailrouter/data is one) so the build writes nothing
    into the repository."""
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, target / name)
    ignore = shutil.ignore_patterns("__pycache__", "state", "*.pyc")
    shutil.copytree(ROOT / "emailrouter", target / "emailrouter", symlinks=True, ignore=ignore)
    shutil.copytree(ROOT / "config", target / "config", ignore=ignore)
    return target


def _requirements() -> list[str]:
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    lines = setup["options"]["install_requires"].split("\n") + setup["options.extras_require"]["demo"].split("\n")
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def _clean_env() -> dict[str, str]:
    """The environment of a user's shell: nothing pointing at the repository or at a service."""
    drop = {"PYTHONPATH", "EMAILROUTER_CONFIG", "STATE_DIRECTORY", "INVOCATION_ID", "CREDENTIALS_DIRECTORY"}
    return {k: v for k, v in os.environ.items() if k not in drop}


def _run(cmd: list[str], cwd: Path, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
    t = time.monotonic()
    result = subprocess.run(cmd, cwd=cwd, env=_clean_env(), capture_output=True, text=True, timeout=timeout)
    print(f"{time.monotonic() - t:6.1f} s  {' '.join(cmd)[-90:]}")
    shown = f"{cmd}: exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert result.returncode == 0 or not check, shown
    return result


def test_the_wheel_installs_and_runs_init_check_and_demo_anywhere(tmp_path: Path) -> None:
    """A wheel installed in a fresh venv runs `init DIR`, `check` on it and `demo` (no -c) in a bare folder."""
    started = time.monotonic()
    src, dist, venv, work = (tmp_path / n for n in ("src", "dist", "venv", "work"))
    for folder in (src, dist, work):
        folder.mkdir()
    env = _clean_env()
    build = subprocess.Popen(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(_source_copy(src))],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path)
        python = venv / "bin" / "python"
        install = [*PIP, "--python", str(python), "install", "--quiet", "--no-compile"]
        offline = [*install, "--no-index", "--find-links", str(WHEELHOUSE), *_requirements()]
        if _run(offline, tmp_path, check=False).returncode != 0:  # first run, or a requirement changed
            _run([*PIP, "download", "--quiet", "--dest", str(WHEELHOUSE), *_requirements()], tmp_path)
            _run(offline, tmp_path)
        output, _ = build.communicate(timeout=300)
        print(f"{time.monotonic() - started:6.1f} s  since the start: the wheel is built")
    finally:
        if build.poll() is None:
            build.kill()
            build.wait()
    assert build.returncode == 0, output[-3000:]
    (wheel,) = dist.glob("emailrouter-*.whl")
    _run([*install, f"{wheel}[demo]"], tmp_path)
    installed = _run([str(python), "-c", "import emailrouter; print(emailrouter.__file__)"], work).stdout
    assert Path(installed.strip()).is_relative_to(venv)

    emailrouter = str(venv / "bin" / "emailrouter")
    init = _run([emailrouter, "init", "conf"], work)
    assert "wrote" in init.stdout and (work / "conf" / "templates").is_dir()
    check = _run([emailrouter, "check", "-c", "conf/emailrouter.yaml"], work).stdout
    assert check.startswith("OK conf/emailrouter.yaml: ")
    if not os.path.lexists("/var/lib/emailrouter"):  # else a shell's state is the service's (README)
        assert "\nstate: conf/state/emailrouter.sqlite3: not created yet; chosen by the default next to" in check
    demo = _run([emailrouter, "demo"], work, timeout=120).stdout
    samples = len(list((work / "conf" / "samples").glob("*.eml")))
    assert f"{samples} mails in, " in demo and "outbox_pending 0" in demo
    assert len(list((work / "demo-out" / "sent").glob("*.eml"))) > samples
    refused = subprocess.run([emailrouter, "init", "conf"], cwd=work, env=env, capture_output=True, text=True)
    assert refused.returncode == 1 and "nothing written" in refused.stderr
    print(f"wheel build + venv + install + init/check/demo: {time.monotonic() - started:.1f} s")
