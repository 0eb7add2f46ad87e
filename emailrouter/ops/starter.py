"""`emailrouter init DIR`: a complete, commented starter config, copied from the shipped one.

It never overwrites: when any of its files already exists in DIR, it names them and writes nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path

from emailrouter.config.shipped import MAIN_FILE, SHIPPED_DIR, starter_files

_SHIPPED_PATH = "config/emailrouter.yaml"  # how the shipped main file's comments name itself


def init(target: Path) -> int:
    """Write the starter config into `target` (created if missing); 1 (nothing written) if a file exists."""
    if target.exists() and not target.is_dir():
        print(f"error: {target}: exists and is not a folder (nothing written)", file=sys.stderr)
        return 1
    files = starter_files()
    existing = sorted({str(clash) for name in files if (clash := _clash(target, name)) is not None})
    if existing:
        shown = ", ".join(existing[:8]) + (f" and {len(existing) - 8} more" if len(existing) > 8 else "")
        print(
            f"error: {target}: would overwrite {len(existing)} existing file(s): {shown}; nothing written"
            " (move them away, or choose an empty folder)",
            file=sys.stderr,
        )
        return 1
    main = (target / MAIN_FILE).absolute()
    for name in files:
        data = (SHIPPED_DIR / name).read_bytes()
        if str(name) == MAIN_FILE:  # its "check any change with" lines name the file where it now is
            data = data.replace(_SHIPPED_PATH.encode(), str(main).encode())
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        (target / name).write_bytes(data)
    print(f"wrote {len(files)} files to {target}/: {MAIN_FILE} (start here; every key is commented),")
    print("rules.yaml, signals.yaml, slang.yaml, model.json, customers.csv, templates/,")
    print("tests/ (rule tests for `emailrouter test`), samples/ (mails to try `explain` on)")
    print("\nnext:")
    print(f"  emailrouter check -c {main}          # valid as written: routing only, no mailboxes yet")
    print(f"  emailrouter explain -c {main} {main.parent}/samples/*.eml")
    print(f"  then fill in mailboxes:, smtp: and units: in {main} (see README, Running the daemon)")
    return 0


def _clash(target: Path, name: Path) -> Path | None:
    """What in `target` is in the way of writing `name`: the file itself, or a parent that is not a folder."""
    for part in [*reversed(name.parents[:-1]), name]:
        path = target / part
        if path.is_symlink() or (path.exists() and (part == name or not path.is_dir())):
            return part
    return None
