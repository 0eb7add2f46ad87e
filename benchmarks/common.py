"""What the Dovecot benchmarks share: an SMTP sink in another process, the router's config for a real Dovecot,
and running a process while reading its peak RSS.

Used by benchmarks/drain.py and benchmarks/memory.py (imported as `common`, next to them).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support.dovecot import Dovecot  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def default_sink() -> str:
    """Postfix's smtp-sink (C, never the bottleneck) when installed, else emailrouter's own."""
    return "postfix" if shutil.which("smtp-sink") else "python"


class ExternalSink:
    """A sink in another process: Postfix's smtp-sink, or `python -m tests.support.sink --count-only`."""

    def __init__(self, kind: str, workdir: Path) -> None:
        self.port = free_port()
        self.kind = kind
        self.stats = workdir / "sink-count"
        if kind == "postfix":
            cmd = [shutil.which("smtp-sink") or "smtp-sink", "-c", "-u", "mail", f"127.0.0.1:{self.port}", "256"]
        else:
            cmd = [
                sys.executable,
                "-m",
                "tests.support.sink",
                "--port",
                str(self.port),
                "--count-only",
                "--stats-file",
                str(self.stats),
            ]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"{kind} sink did not start")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def write_config(
    workdir: Path,
    dovecot: Dovecot,
    sink_port: int,
    idle: bool,
    state: str | None = None,
    workers: int | None = None,
    postgres: str | None = None,
) -> Path:
    """The shipped config with one mailbox on `dovecot` (user router, INBOX) and the sink as relay.

    `state`: the state file's name in `workdir` (default: idle.sqlite3 or drain.sqlite3); `workers`: the
    setting (default: none written, so the router's default); `postgres`: a database URL instead of the file
    (its password in workdir/pg-password)."""
    target = workdir / "config"
    if not target.exists():
        shutil.copytree(ROOT / "config", target, ignore=shutil.ignore_patterns("samples", "tests", "state"))
    (workdir / "imap-password").write_text(dovecot.users["router"] + "\n")
    main = target / "emailrouter.yaml"
    state_file = workdir / (state or ("idle.sqlite3" if idle else "drain.sqlite3"))
    main.write_text(
        (ROOT / "config" / "emailrouter.yaml").read_text()
        + f"""
mailboxes:
  - name: bench
    host: 127.0.0.1
    port: {dovecot.port}
    security: plain
    username: router
    password: {{file: {workdir / "imap-password"}}}
    idle: {"true" if idle else "false"}
    poll_interval: 600
smtp:
  host: 127.0.0.1
  port: {sink_port}
  security: plain
state:
"""
        + (
            f"  url: {postgres}\n  password: {{file: {workdir / 'pg-password'}}}\n"
            if postgres
            else f"  path: {state_file}\n"
        )
        + (f"workers: {workers}\n" if workers is not None else "")
    )
    return main


@dataclass(frozen=True)
class Run:
    """How a process went: wall seconds, exit status, peak RSS (KiB, VmHWM), CPU seconds (its own and its
    reaped descendants'), and the peak of the RSS and of the PSS of it and all its descendants together (KiB,
    sampled)."""

    seconds: float
    status: int
    peak_kib: int
    cpu: float
    stderr: bytes = b""
    tree_peak_kib: int = 0
    descendants_cpu: float = 0.0  # CPU seconds of its descendants (worker processes), sampled from /proc
    tree_pss_kib: int = 0  # the peak of the PSS of it and its descendants: a page they share counted once


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        parent = todo.pop()
        try:
            for task in Path(f"/proc/{parent}/task").iterdir():
                children = (task / "children").read_text().split()
                out += [int(c) for c in children]
                todo += [int(c) for c in children]
        except OSError:
            continue
    return out


def _cpu_seconds(pid: int) -> float:
    """utime + stime of one process so far (/proc/PID/stat), 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _status_kib(pid: int, field: str, name: str = "status") -> int:
    """A figure in KiB from /proc/PID/status (or another such file, `name`): the line that starts with `field`."""
    try:
        for line in Path(f"/proc/{pid}/{name}").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _pss_kib(pid: int) -> int:
    """The process's proportional set size: each page it shares with N processes counted as 1/N."""
    return _status_kib(pid, "Pss:", "smaps_rollup")


def run_measured(cmd: Sequence[str], timeout: float | None = None) -> Run:
    """Run `cmd` (stdout discarded) and read its VmHWM from /proc while it runs, and the RSS of its whole
    process tree (worker processes included).

    VmHWM of the process itself: ru_maxrss of the children would also count the benchmark's own memory,
    inherited by fork. Killed after `timeout` seconds (status -9)."""
    started = time.perf_counter()
    proc = subprocess.Popen(list(cmd), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
    assert proc.stderr is not None
    os.set_blocking(proc.stderr.fileno(), False)
    err = bytearray()
    peak_kib = tree_kib = pss_kib = 0
    next_pss = 0.0  # smaps_rollup walks the page tables: read 4 times a second, not 50
    descendant_cpu: dict[int, float] = {}  # the last CPU figure seen of each descendant (a worker ends unseen)
    while True:
        peak_kib = max(peak_kib, _status_kib(proc.pid, "VmHWM:"))
        descendants = _descendants(proc.pid)
        tree_kib = max(tree_kib, sum(_status_kib(p, "VmRSS:") for p in [proc.pid, *descendants]))
        if time.perf_counter() >= next_pss:
            pss_kib = max(pss_kib, sum(_pss_kib(p) for p in [proc.pid, *descendants]))
            next_pss = time.perf_counter() + 0.25
        for pid in descendants:
            descendant_cpu[pid] = max(descendant_cpu.get(pid, 0.0), _cpu_seconds(pid))
        with contextlib.suppress(BlockingIOError):
            err += proc.stderr.read() or b""  # keep the pipe drained, so a chatty process never blocks on it
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if timeout is not None and time.perf_counter() - started > timeout:
            proc.kill()
        time.sleep(0.02)
    err += proc.stderr.read() or b""
    proc.stderr.close()
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4: tell Popen, so it does not wait again
    cpu = usage.ru_utime + usage.ru_stime
    return Run(
        time.perf_counter() - started,
        proc.returncode,
        peak_kib,
        cpu,
        bytes(err),
        max(tree_kib, peak_kib),
        sum(descendant_cpu.values()),
        pss_kib,
    )


def run_router_once(config: Path, timeout: float | None = None) -> Run:
    """`emailrouter run --once` with warnings only, measured."""
    cmd = [sys.executable, "-m", "emailrouter", "run", "--once", "--log-level", "warning", "-c", str(config)]
    return run_measured(cmd, timeout)
