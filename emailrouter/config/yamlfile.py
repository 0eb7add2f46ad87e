"""YAML loading that remembers line numbers, so every config error can name file, line and key."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, TypeVar

import yaml

from emailrouter.core.errors import Problem

T = TypeVar("T")


class LineDict(dict[str, Any]):
    """A mapping from YAML that knows the line of itself and of each key."""

    line: int = 0

    def __init__(self) -> None:
        super().__init__()
        self.lines: dict[str, int] = {}


class LineList(list[Any]):
    """A sequence from YAML that knows the line of itself and of each item."""

    line: int = 0

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[int] = []


class _Loader(yaml.SafeLoader):
    problems: list[Problem]
    filename: str


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> LineDict:
    loader.flatten_mapping(node)
    mapping = LineDict()
    mapping.line = node.start_mark.line + 1
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if not isinstance(key, str):
            key = str(key)
        if key in mapping:
            loader.problems.append(
                Problem(loader.filename, line, key, f"duplicate key (first at line {mapping.lines[key]})")
            )
        mapping[key] = loader.construct_object(value_node, deep=True)
        mapping.lines[key] = line
    return mapping


def _construct_sequence(loader: _Loader, node: yaml.SequenceNode) -> LineList:
    seq = LineList()
    seq.line = node.start_mark.line + 1
    for child in node.value:
        seq.append(loader.construct_object(child, deep=True))
        seq.lines.append(child.start_mark.line + 1)
    return seq


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


def load_yaml(text: str, filename: str, problems: list[Problem]) -> Any:
    """Parse YAML text; syntax errors and duplicate keys become problems (and None is returned)."""
    loader = _Loader(text)
    loader.problems = problems
    loader.filename = filename
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        reason = " ".join(str(x) for x in (exc.context, exc.problem) if x)
        start = exc.context_mark
        if (
            start is not None
            and exc.problem_mark is not None
            and start.line < exc.problem_mark.line
            and str(exc.context).startswith("while scanning a quoted scalar")
        ):  # an unclosed quote: name the line where it opened, which is where the mistake is
            reason = f"an unclosed quote: {reason} (line {exc.problem_mark.line + 1}); the quote opens here"
            line = start.line + 1
        problems.append(Problem(filename, line, "", f"bad YAML: {reason}"))
    except yaml.YAMLError as exc:
        problems.append(Problem(filename, None, "", f"bad YAML: {exc}"))
    finally:
        loader.dispose()
    return None


class Reader:
    """Typed access to one YAML file's data; each failure is recorded as a problem, never raised."""

    def __init__(self, file: str, problems: list[Problem]) -> None:
        self.file = file
        self.problems = problems

    def fail(self, node: Any, key: str | int | None, path: str, reason: str, *, warning: bool = False) -> None:
        line: int | None = None
        if isinstance(node, LineDict):
            line = node.lines.get(str(key), node.line) if key is not None else node.line
        elif isinstance(node, LineList):
            line = node.lines[key] if isinstance(key, int) and key < len(node.lines) else node.line
        self.problems.append(Problem(self.file, line, path, reason, warning))

    def get(self, node: LineDict, key: str, path: str, kind: type[T], *, required: bool = True) -> T | None:
        full = f"{path}.{key}" if path else key
        if key not in node:
            if required:
                self.fail(node, None, full, "missing")
            return None
        value = node[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            self.fail(node, key, full, f"expected {_kind_name(kind)}, got {describe(value)}")
            return None
        return value

    def known_keys(self, node: LineDict, path: str, allowed: set[str]) -> None:
        for key in node:
            if key not in allowed:
                full = f"{path}.{key}" if path else key
                self.fail(node, key, full, f"unknown key (expected one of: {', '.join(sorted(allowed))})")

    def items(self, node: LineList, path: str) -> Iterator[tuple[int, str, Any]]:
        for i, item in enumerate(node):
            yield i, f"{path}[{i}]", item


def _kind_name(kind: type) -> str:
    return {
        str: "a string",
        float: "a number",
        int: "a whole number",
        bool: "true or false",
        LineDict: "a mapping",
        LineList: "a list",
    }.get(kind, kind.__name__)


def describe(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, LineDict):
        return "a mapping"
    if isinstance(value, LineList):
        return "a list"
    return f"{type(value).__name__} {value!r}"
