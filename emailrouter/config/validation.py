"""Pydantic models against YAML: strict sections, file:line: key problems, and the JSON Schema.

The models (models.py) say what a file may hold; this module runs them over what yamlfile read.
`validate()` maps each pydantic error's location to the line of that key (LineDict and LineList
remember lines) and reports every error at once, in file order, with today's wording: "missing",
"unknown key (expected one of: ...)", "expected a number, got str '5'", "must be 1 or more".

Rules across keys are model validators that run before the fields are checked (mode="before") and
call `cross()`: the loader collects those problems through the validation context, so a bad field
never hides them (pydantic skips a model's "after" validators once one of its fields failed).
`json_schema()` gives the draft 2020-12 schema `emailrouter schema` prints.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar, get_args, get_origin

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, ValidationInfo
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

from emailrouter.config.yamlfile import LineDict, LineList, Reader, describe

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)
CROSS_CHECKS = "cross_checks"  # the validation context's list for problems across keys
_PYDANTIC_ERRORS = frozenset(get_args(core_schema.ErrorType))  # any other type is one of our own messages


class Section(BaseModel):
    """Strict: a number is not a string, `1` is not `true`, and an unknown key is an error."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, regex_engine="python-re")


PATTERN_MESSAGES: dict[str, str] = {}  # pattern -> what is wrong when a value does not match it


def _editor_message(pattern: str) -> dict[str, str]:
    message = PATTERN_MESSAGES.get(pattern, "").rstrip(":")
    return {"patternErrorMessage": f"{message[0].upper()}{message[1:]}."} if message else {}


def says(pattern: str, message: str) -> dict[str, Any]:
    """Register what the loader says when `pattern` does not match; editors get the same sentence. The loader
    adds the value: "not an email address:" gives "not an email address: 'x'", else ", got 'x'" follows."""
    PATTERN_MESSAGES[pattern] = message
    return _editor_message(pattern)


NOT_BLANK = r"\S"
NotBlank = Annotated[str, Field(pattern=NOT_BLANK, json_schema_extra=says(NOT_BLANK, "must not be empty"))]


def _given(value: Any) -> Any:
    if value is None:
        raise PydanticCustomError("empty", "empty: give a value or leave the key out")
    return value


# An optional key: left out, it is None (or its default); written empty, it is an error.
Maybe = Annotated[T | None, BeforeValidator(_given)]


@dataclass(frozen=True)
class CrossProblem:
    node: Any
    key: str
    at: str | None
    reason: str


def cross(info: ValidationInfo, node: Any, key: str, reason: str, *, at: str | None = None) -> None:
    """A problem across keys of `node`, named `key` and shown at the line of `at` (else of the node).
    Validated outside the loader (no context), the problem is an ordinary validation error."""
    found = info.context.get(CROSS_CHECKS) if isinstance(info.context, dict) else None
    if found is None:
        raise PydanticCustomError("cross_check", reason)
    found.append(CrossProblem(node, key, at, reason))


# --------------------------------------------------------------------------- validation: errors -> file:line: key

_EXPECTED = {
    "string_type": "a string",
    "int_type": "a whole number",
    "float_type": "a number",
    "bool_type": "true or false",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "dict_type": "a mapping",
    "list_type": "a list",
}


def validate(model: type[M], node: LineDict, r: Reader, path: str = "") -> M | None:
    """`node` as a `model`, or None with every problem recorded in `r` (file:line: key: reason)."""
    crossed: list[CrossProblem] = []
    result: M | None = None
    found = Reader(r.file, [])
    try:
        result = model.model_validate(node, context={CROSS_CHECKS: crossed})
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            loc = tuple(error["loc"])
            if loc and loc[-1] == "[key]":  # the key of a mapping itself, such as a unit's key
                loc = loc[:-1]
            line_key = None if error["type"] == "missing" else loc[-1] if loc else None
            found.fail(_walk(node, loc[:-1]), line_key, _join(path, loc), _reason(model, error, loc))
    paths = dict(_paths(node, path)) if crossed else {}
    for problem in crossed:
        found.fail(problem.node, problem.at, f"{paths[id(problem.node)]}.{problem.key}".lstrip("."), problem.reason)
    r.problems.extend(sorted(found.problems, key=lambda p: p.line or 0))  # in the order of the file
    return result if not found.problems else None


def _reason(model: type[BaseModel], error: Any, loc: tuple[Any, ...]) -> str:
    kind, ctx, value = error["type"], error.get("ctx") or {}, error.get("input")
    if kind == "missing":
        return "missing"
    if kind == "extra_forbidden":
        owner = _model_at(model, loc[:-1])
        return f"unknown key (expected one of: {', '.join(sorted(_keys(owner)) if owner else ())})"
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {describe(value)}"
    if kind == "literal_error":
        return f"expected one of {', '.join(_QUOTED.findall(ctx['expected']))}, got {value!r}"
    if kind == "string_pattern_mismatch":
        message = PATTERN_MESSAGES.get(ctx["pattern"], "not allowed")
        return f"{message} {value!r}" if message.endswith(":") else f"{message}, got {value!r}"
    if kind == "too_short":
        return "must not be empty"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal"):
        return _bound(kind, ctx)
    message = str(error["msg"])
    return message if kind not in _PYDANTIC_ERRORS else message[:1].lower() + message[1:]


_QUOTED = re.compile(r"'([^']*)'")


def _bound(kind: str, ctx: dict[str, Any]) -> str:
    if kind == "greater_than_equal":
        return f"must be {ctx['ge']:g} or more"
    if kind == "greater_than":
        return f"must be more than {ctx['gt']:g}"
    return f"must be {ctx['le']:g} or less"


def _walk(node: Any, loc: tuple[Any, ...]) -> Any:
    for part in loc:
        inside = part in node if isinstance(node, dict) else isinstance(part, int) and part < len(node)
        if not isinstance(node, dict | list) or not inside:
            break
        node = node[part]
    return node


def _join(path: str, loc: tuple[Any, ...]) -> str:
    out = path
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _paths(node: Any, path: str) -> Iterator[tuple[int, str]]:
    """(id, key path) of every mapping and list under `node`."""
    yield id(node), path
    if isinstance(node, LineDict):
        for key, value in node.items():
            yield from _paths(value, f"{path}.{key}" if path else key)
    elif isinstance(node, LineList):
        for i, value in enumerate(node):
            yield from _paths(value, f"{path}[{i}]")


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class that describes the mapping at `loc`."""
    kind: Any = model
    for part in loc:
        kind = _bare(kind)
        if isinstance(part, int):
            kind = get_args(kind)[0] if get_origin(kind) is list else None
        elif get_origin(kind) is dict:
            kind = get_args(kind)[1]
        elif isinstance(kind, type) and issubclass(kind, BaseModel) and part in _keys(kind):
            kind = _keys(kind)[part].annotation
        else:
            return None
    kind = _bare(kind)
    return kind if isinstance(kind, type) and issubclass(kind, BaseModel) else None


def _keys(model: type[BaseModel]) -> dict[str, Any]:
    """The model's fields by the key written in the file (its alias, such as near's `with`)."""
    return {field.alias or name: field for name, field in model.model_fields.items()}


def _bare(kind: Any) -> Any:
    """Without Annotated[...] and `| None`."""
    while True:
        if get_origin(kind) is Annotated:
            kind = get_args(kind)[0]
        elif (args := get_args(kind)) and type(None) in args and get_origin(kind) is not list:
            kind = next(a for a in args if a is not type(None))
        else:
            return kind


# --------------------------------------------------------------------------- JSON Schema


class _Generator(GenerateJsonSchema):
    def nullable_schema(self, schema: core_schema.NullableSchema) -> JsonSchemaValue:
        """An optional key may be left out, never written as null."""
        return self.generate_inner(schema["schema"])


def json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON Schema (draft 2020-12), with definitions inlined and pydantic's titles left out."""
    raw = model.model_json_schema(schema_generator=_Generator)
    definitions = raw.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                node = {**definitions[node["$ref"].rsplit("/", 1)[1]], **{k: v for k, v in node.items() if k != "$ref"}}
            if len(keys := node.get("patternProperties", {})) == 1:  # constrained keys: no other key is allowed
                (pattern, value), rest = (
                    next(iter(keys.items())),
                    {k: v for k, v in node.items() if k != "patternProperties"},
                )
                names = {"pattern": pattern, **_editor_message(pattern)}
                node = {**rest, "propertyNames": names, "additionalProperties": value}
            return {
                k: inline(v)
                for k, v in node.items()
                if not (k == "title" and isinstance(v, str)) and not (k == "default" and v is None)
            }
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    out: dict[str, Any] = inline(raw)
    return out
