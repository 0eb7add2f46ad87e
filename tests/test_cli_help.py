"""`emailrouter --help` and each command's help: every command listed, every option explained."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from emailrouter.ops import cli


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:  # argparse keeps its subparsers only here
        if isinstance(action, argparse._SubParsersAction):
            found.update(action.choices)
    return found


def test_the_top_level_summary_names_every_command() -> None:
    """The description at the top of `--help` names each command there is, not a few of them."""
    parser = cli.build_parser()
    described = set(re.findall(r"[a-z]+", parser.description or ""))
    assert set(_subcommands(parser)) - described == set()


def test_every_option_and_argument_of_every_command_has_help() -> None:
    """No command shows a bare option or argument in its --help (quarantine's subcommands included)."""
    bare: list[str] = []
    pending = [("emailrouter", cli.build_parser())]
    while pending:
        name, parser = pending.pop()
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                pending.extend((f"{name} {sub}", p) for sub, p in action.choices.items())
            elif not action.help and not isinstance(action, argparse._HelpAction):
                bare.append(f"{name}: {'/'.join(action.option_strings) or action.dest}")
    assert bare == []


def test_the_readme_command_list_shows_every_option() -> None:
    """Each command's line in the README's command list names every option the command has."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    block = readme[readme.index("## Commands") :]
    block = block[block.index("```sh\n") : block.index("```\n", block.index("```sh\n") + 6)]
    missing: list[str] = []
    pending = [("emailrouter", cli.build_parser())]
    while pending:
        name, parser = pending.pop()
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        for action in subs:
            pending.extend((f"{name} {sub}", p) for sub, p in action.choices.items())
        if subs or name == "emailrouter":
            continue
        lines = [line for line in block.splitlines() if re.match(rf"{re.escape(name)}(\s|$)", line)]
        for action in parser._actions:
            shown = any(any(o in line for o in action.option_strings) for line in lines)
            if action.option_strings and not isinstance(action, argparse._HelpAction) and not shown:
                missing.append(f"{name} {action.option_strings[-1]}")
    assert missing == []
