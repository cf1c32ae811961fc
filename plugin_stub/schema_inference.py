"""JSON Schema for a tool's parameters, inferred from a Python signature.

Rules (also in docs/plugins.md):

* ``str``/``int``/``float``/``bool`` -> ``string``/``integer``/``number``/``boolean``;
  ``None`` -> ``null``; ``Any`` or no annotation -> any value (``{}``).
* ``X | None`` / ``Optional[X]`` -> ``X`` or ``null`` (still required unless it has a default).
* ``Literal["a", "b"]`` and ``Enum`` subclasses -> ``enum`` of their values.
* ``list[X]``, ``Sequence[X]``, ``tuple[X, ...]`` -> ``array`` of ``X``; ``tuple[X, Y]`` ->
  fixed-length ``array`` (``prefixItems``); ``set[X]`` -> ``array`` with ``uniqueItems``.
* ``dict[str, X]`` -> ``object`` whose values are ``X``.
* ``Annotated[X, "text"]`` -> ``X`` with ``"text"`` as its description.
* A parameter with a default is not required; a JSON-compatible default is
  recorded as ``default``. ``self``/``cls``, ``*args`` and a ``CallContext``
  parameter are skipped. Without ``**kwargs`` the schema sets
  ``additionalProperties: false`` so unknown arguments are refused before the call.
* Descriptions come from the docstring: its first paragraph describes the tool;
  parameters are described in a Google-style ``Args:`` section and/or with
  Sphinx ``:param name:`` fields.
"""

from __future__ import annotations

import collections.abc
import enum
import inspect
import re
import types
import typing
from collections.abc import Callable
from typing import Any

from toolcall.jsonvalue import is_json_compatible

_SIMPLE: dict[Any, str] = {str: "string", int: "integer", float: "number", bool: "boolean"}
_ARRAY_ORIGINS = (
    list,
    collections.abc.Sequence,
    collections.abc.MutableSequence,
    collections.abc.Iterable,
    collections.abc.Collection,
)
_SET_ORIGINS = (set, frozenset, collections.abc.Set, collections.abc.MutableSet)
_DICT_ORIGINS = (dict, collections.abc.Mapping, collections.abc.MutableMapping)

_SECTION_HEADER = re.compile(r"^(Args|Arguments|Parameters|Params|Keyword Args|Kwargs):\s*$")
_OTHER_SECTION = re.compile(
    r"^(Returns?|Yields?|Raises|Examples?|Notes?|Attributes|See Also|Warnings?|Todo):\s*$"
)
_GOOGLE_ITEM = re.compile(r"^(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")
_SPHINX_PARAM = re.compile(r"^:param\s+(?:[^:]*\s)?(\w+)\s*:\s*(.*)$")


class SchemaInferenceError(ValueError):
    """The signature has a type the inference does not map; pass ``parameters=``."""


def infer_parameters(
    func: Callable[..., Any], *, skip_types: tuple[type, ...] = ()
) -> dict[str, Any]:
    """The JSON Schema (``type: object``) of ``func``'s keyword arguments."""
    signature = inspect.signature(func)
    try:
        hints = typing.get_type_hints(func, include_extras=True)
    except Exception as exc:  # unresolved forward references and the like
        raise SchemaInferenceError(
            f"{_qualname(func)}: cannot resolve type hints ({exc}); pass parameters="
        ) from None
    docs = parse_docstring(inspect.getdoc(func) or "")[1]
    properties: dict[str, Any] = {}
    required: list[str] = []
    open_ended = False
    for index, (name, param) in enumerate(signature.parameters.items()):
        if index == 0 and name in ("self", "cls"):
            continue
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            open_ended = True
            continue
        if param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.POSITIONAL_ONLY):
            continue
        hint = hints.get(name, Any)
        if skip_types and isinstance(hint, type) and issubclass(hint, skip_types):
            continue
        try:
            schema = type_schema(hint)
        except SchemaInferenceError as exc:
            raise SchemaInferenceError(
                f"{_qualname(func)}: parameter {name!r}: {exc}; pass parameters="
            ) from None
        if name in docs and "description" not in schema:
            schema["description"] = docs[name]
        if param.default is inspect.Parameter.empty:
            required.append(name)
        else:
            default = param.default.value if isinstance(param.default, enum.Enum) else param.default
            if is_json_compatible(default):
                schema["default"] = default
        properties[name] = schema
    result: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        result["required"] = required
    if not open_ended:
        result["additionalProperties"] = False
    return result


def type_schema(hint: Any) -> dict[str, Any]:
    """The JSON Schema of one Python type hint."""
    if hint is Any or hint is inspect.Parameter.empty or hint is object:
        return {}
    if hint is None or hint is type(None):
        return {"type": "null"}
    if hint in _SIMPLE:
        return {"type": _SIMPLE[hint]}
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return _enum_schema([m.value for m in hint])
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Annotated:
        schema = type_schema(args[0])
        text = next((a for a in args[1:] if isinstance(a, str)), None)
        if text:
            schema["description"] = text
        return schema
    if origin is typing.Literal:
        return _enum_schema(list(args))
    if origin is typing.Union or origin is types.UnionType:
        return _union_schema([type_schema(a) for a in args])
    if origin in _ARRAY_ORIGINS or hint in (list, tuple):
        return {"type": "array", "items": type_schema(args[0])} if args else {"type": "array"}
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return {"type": "array", "items": type_schema(args[0])}
        if args == ((),):  # tuple[()]
            return {"type": "array", "maxItems": 0}
        return {
            "type": "array",
            "prefixItems": [type_schema(a) for a in args],
            "minItems": len(args),
            "maxItems": len(args),
        }
    if origin in _SET_ORIGINS or hint in (set, frozenset):
        schema = {"type": "array", "uniqueItems": True}
        if args:
            schema["items"] = type_schema(args[0])
        return schema
    if origin in _DICT_ORIGINS or hint is dict:
        if args and args[0] is not str:
            raise SchemaInferenceError(f"dict keys must be str in JSON, not {args[0]!r}")
        schema = {"type": "object"}
        if len(args) == 2 and args[1] is not Any:
            schema["additionalProperties"] = type_schema(args[1])
        return schema
    raise SchemaInferenceError(f"cannot infer a JSON Schema for type {hint!r}")


def _enum_schema(values: list[Any]) -> dict[str, Any]:
    schema: dict[str, Any] = {"enum": values}
    kinds = {_json_type(v) for v in values}
    if len(kinds) == 1 and None not in kinds:
        schema["type"] = kinds.pop()
    return schema


def _json_type(value: Any) -> str | None:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return None


def _union_schema(options: list[dict[str, Any]]) -> dict[str, Any]:
    if any(o == {} for o in options):
        return {}
    # Unions of bare types collapse into one "type" list: {"type": ["string", "null"]}.
    if all(set(o) == {"type"} and isinstance(o["type"], str) for o in options):
        return {"type": [o["type"] for o in options]}
    return {"anyOf": options}


def parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """(first paragraph, {parameter: description}) of a cleaned docstring."""
    lines = doc.strip().splitlines()
    summary_lines: list[str] = []
    for line in lines:
        stripped = line.strip()
        if not stripped or _SECTION_HEADER.match(stripped) or stripped.startswith(":"):
            break
        summary_lines.append(stripped)
    params: dict[str, str] = {}
    section_indent: int | None = None
    item_indent = 0
    current: str | None = None
    for line in lines:
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if m := _SPHINX_PARAM.match(stripped):
            section_indent, current = None, m.group(1)
            params[current] = m.group(2).strip()
            continue
        if _SECTION_HEADER.match(stripped):
            section_indent, current = indent, None
            continue
        if section_indent is None:
            # Continuation lines of a Sphinx field are indented.
            if current and stripped and indent > 0 and not stripped.startswith(":"):
                params[current] = f"{params[current]} {stripped}".strip()
            elif not stripped or stripped.startswith(":"):
                current = None
            continue
        if not stripped:
            continue
        if indent <= section_indent or _OTHER_SECTION.match(stripped):
            section_indent, current = None, None
            continue
        m = _GOOGLE_ITEM.match(stripped)
        if m and (current is None or indent <= item_indent):
            current, item_indent = m.group(1).lstrip("*"), indent
            params[current] = m.group(2).strip()
        elif current:
            params[current] = f"{params[current]} {stripped}".strip()
    return " ".join(summary_lines), params


def _qualname(func: Callable[..., Any]) -> str:
    return getattr(func, "__qualname__", repr(func))
