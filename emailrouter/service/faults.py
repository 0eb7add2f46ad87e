"""Crash points for the fault-injection tests: the process kills itself (SIGKILL) at a named step.

Set EMAILROUTER_CRASH_AT to one of CRASH_POINTS (optionally NAME:N to crash at the Nth time the step
is reached; each process counts its own: `worker-route` kills a worker process). Unset, a crash point
costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

CRASH_POINTS = (
    "after-duplicate",
    "after-plan",
    "after-smtp-accepted",
    "after-webhook-answered",
    "after-send-recorded",
    "worker-route",
)
_seen: dict[str, int] = {}


def crashpoint(name: str) -> None:
    wanted = os.environ.get("EMAILROUTER_CRASH_AT")
    if not wanted:
        return
    point, _, nth = wanted.partition(":")
    if point != name:
        return
    _seen[name] = _seen.get(name, 0) + 1
    if _seen[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
