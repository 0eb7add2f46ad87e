"""A bigger crash storm than the test's: kill -9 at random instants over a backlog in a real Dovecot, then a clean
pass, and the counts (lost, doubled replies, resent forwards, uncertain replies).

The same code as tests/integration/test_crash_storm.py (which runs 300 mails and 15 kills in CI): mail arrives in
waves; every `emailrouter run --once` (and once the `emailrouter run` service) is killed with SIGKILL at a random
instant (a time after its start, right after its nth decision, or right after the relay took its nth message);
then one clean `run --once`. The router runs in its own processes; the SMTP sink (emailrouter's own, it records
every message so that doubles can be counted) runs in this one, on its own thread.

Needs Dovecot (`.ci/setup` installs it as root).

    .venv/bin/python benchmarks/crash_storm.py [--mails 1000] [--kills 50] [--seed N] [--runs 1]

Exit status 1 if any storm broke a promise (each broken one is printed), 2 if it cannot run here.
"""

from __future__ import annotations

import argparse
import importlib
import random
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from tests.support.dovecot import Dovecot, dovecot_available, make_base  # noqa: E402
from tests.support.sink import SmtpSink  # noqa: E402

# Imported by name so that mypy (which checks benchmarks/) does not follow it into the test modules it uses.
storm = importlib.import_module("tests.integration.test_crash_storm")


def one(mails: int, kills: int, seed: int, service_kill: bool) -> bool:
    """One storm on a fresh Dovecot, state and sink; prints its figures (and what broke). True if all held."""
    base = make_base("emailrouter-storm-")
    workdir = Path(tempfile.mkdtemp(prefix="emailrouter-storm-work-"))
    try:
        with Dovecot(base) as dovecot, SmtpSink() as sink:
            result, figures, problems = storm.run_storm(
                workdir, dovecot, sink, seed, mails=mails, kills=kills, service_kill=service_kill
            )
    finally:
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)
    print(figures.line(result), flush=True)
    for problem in problems:
        print(f"  BROKEN: {problem}", flush=True)
    return not problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mails", type=int, default=1000)
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--seed", type=int, help="of the first storm (default: random); the next ones count up")
    parser.add_argument("--runs", type=int, default=1, help="storms one after the other")
    parser.add_argument("--no-service", action="store_true", help="kill only `run --once`, never the service")
    args = parser.parse_args()
    if (reason := dovecot_available()) is not None:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    held = [one(args.mails, args.kills, seed + n, not args.no_service) for n in range(args.runs)]
    return 0 if all(held) else 1


if __name__ == "__main__":
    sys.exit(main())
