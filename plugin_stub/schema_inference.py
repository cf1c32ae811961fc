"""JSON Schema for a tool's parameters, inferred from a Python signature.

Rules (also in docs/plugins.md):

* ``str``/``int``/``float``/``bool`` -> ``string``/``integer``/``number``/``boolean``;
  ``None`` -> ``null``; ``Any`` or no annotation -> any value (``{}``).
* ``X | None`` / ``Optional[X]`` -> ``X`` or ``null`` (still required unless it has a default).
* ``Literal["a", "b"]`` and ``Enum`` subclasses -> ``enum`` of their values.
* ``list[X]``, ``Sequence[X]``, ``tuple[X, ...]`` -> ``array`` of ``X``; ``tuple[X, Y]`` ->
  fixed-length ``array`` (``prefixItems``); ``set[X]`` -> ``array`` with ``uniqueItems``.
* ``dict[str, X]`` -> ``object`` whose values are ``X``.
* ``Annotated[X, "text"]`` or ``Annotated[X, Field(description="text")]`` -> ``X``
  with ``"text"`` as its description.
* A dataclass or a ``TypedDict`` -> ``object`` of its fields (inlined; a class
  that contains itself cannot be inferred); a pydantic model -> its own
  ``model_json_schema()``, its ``$defs`` moved to the schema's root so its
  ``$ref``s resolve.
* A parameter with a default is not required; a JSON-compatible default is
  recorded as ``default``. ``self``/``cls``, ``*args`` and a ``CallContext``
  parameter are skipped. Without ``**kwargs`` the schema sets
  ``additionalProperties: false`` so unknown arguments are refused before the call.
* Descriptions come from the docstring: its first paragraph describes the tool;
  parameters are described in a Google-style ``Args:`` section and/or with
  Sphinx ``:param name:`` fields.

A tool's ``output_schema`` is inferred from its return annotation when that
is a pydantic model, a dataclass or a ``TypedDict`` (structured output); any
other return type gives none.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import enum
import inspect
import re
import types
import typing
from collections.abc import Callable
from typing import Any

from plugin_stub.jobs import Accepted
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
    defs: dict[str, Any] = {}
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
            schema = _schema(hint, defs, ())
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
    if defs:
        result["$defs"] = defs
    return result


def infer_output_schema(func: Callable[..., Any]) -> dict[str, Any] | None:
    """The output_schema of ``func``'s return annotation, when it is structured
    (a pydantic model, a dataclass or a TypedDict, but not ``Accepted``); None
    for any other."""
    try:
        hint = typing.get_type_hints(func, include_extras=True).get("return")
    except Exception:
        return None  # unresolvable annotations: no schema, as for an unannotated return
    if typing.get_origin(hint) is typing.Annotated:
        hint = typing.get_args(hint)[0]
    # A long job's result comes later (Job.complete): ``Accepted`` is not its shape.
    if not is_structured(hint) or hint is Accepted:
        return None
    try:
        schema = type_schema(hint)
    except SchemaInferenceError as exc:
        raise SchemaInferenceError(
            f"{_qualname(func)}: return type: {exc}; pass output_schema="
        ) from None
    return schema if schema.get("type") == "object" else None


def is_structured(hint: Any) -> bool:
    """Whether ``hint`` is a class whose instances are records: a pydantic model,
    a dataclass or a TypedDict."""
    return isinstance(hint, type) and (
        _is_pydantic(hint) or dataclasses.is_dataclass(hint) or typing.is_typeddict(hint)
    )


def _is_pydantic(hint: type) -> bool:
    return callable(getattr(hint, "model_json_schema", None)) and callable(
        getattr(hint, "model_validate", None)
    )


def type_schema(hint: Any) -> dict[str, Any]:
    """The JSON Schema of one Python type hint (with ``$defs`` at its root if it needs any)."""
    defs: dict[str, Any] = {}
    schema = _schema(hint, defs, ())
    if defs:
        schema["$defs"] = defs
    return schema


def _description(meta: Any) -> str | None:
    """An ``Annotated`` extra's description: the string itself, or a ``Field``'s."""
    if isinstance(meta, str):
        return meta
    text = getattr(meta, "description", None)
    return text if isinstance(text, str) and text else None


def _record_schema(hint: type, defs: dict[str, Any], seen: tuple[type, ...]) -> dict[str, Any]:
    """A dataclass's or TypedDict's fields as an object schema (inlined)."""
    if hint in seen:
        raise SchemaInferenceError(f"{hint.__qualname__} contains itself")
    seen = (*seen, hint)
    try:
        hints = typing.get_type_hints(hint, include_extras=True)
    except Exception as exc:
        raise SchemaInferenceError(f"cannot resolve {hint.__qualname__}'s fields ({exc})") from None
    properties: dict[str, Any] = {}
    required: list[str] = []
    if dataclasses.is_dataclass(hint):
        for f in dataclasses.fields(hint):
            properties[f.name] = _schema(hints.get(f.name, Any), defs, seen)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                required.append(f.name)
            elif f.default is not dataclasses.MISSING and is_json_compatible(f.default):
                properties[f.name]["default"] = f.default
    else:  # a TypedDict
        for name, field_hint in hints.items():
            properties[name] = _schema(field_hint, defs, seen)
        # The markers themselves too: under "from __future__ import annotations"
        # Python 3.11 counts a NotRequired[...] key as required.
        keys = getattr(hint, "__required_keys__", ())
        required = [
            n
            for n, h in hints.items()
            if typing.get_origin(h) is typing.Required
            or (typing.get_origin(h) is not typing.NotRequired and n in keys)
        ]
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    # Its own docstring only (a TypedDict would inherit dict's).
    doc = parse_docstring(inspect.cleandoc(vars(hint).get("__doc__") or ""))[0]
    if doc and not doc.startswith(f"{hint.__name__}("):  # not a dataclass's generated one
        schema["description"] = doc
    return schema


def _pydantic_schema(hint: Any, defs: dict[str, Any]) -> dict[str, Any]:
    schema = dict(hint.model_json_schema(mode="serialization"))
    for name, sub in (schema.pop("$defs", None) or {}).items():
        if defs.setdefault(name, sub) != sub:
            raise SchemaInferenceError(f"two different types are both named {name!r}")
    return schema


def _schema(hint: Any, defs: dict[str, Any], seen: tuple[type, ...]) -> dict[str, Any]:
    """The JSON Schema of one Python type hint; ``$defs`` it needs go into ``defs``."""
    if hint is Any or hint is inspect.Parameter.empty or hint is object:
        return {}
    if hint is None or hint is type(None):
        return {"type": "null"}
    if hint in _SIMPLE:
        return {"type": _SIMPLE[hint]}
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return _enum_schema([m.value for m in hint])
    if isinstance(hint, type) and _is_pydantic(hint):
        return _pydantic_schema(hint, defs)
    if isinstance(hint, type) and (dataclasses.is_dataclass(hint) or typing.is_typeddict(hint)):
        return _record_schema(hint, defs, seen)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Required, typing.NotRequired):  # a TypedDict's field markers
        return _schema(args[0], defs, seen)
    if origin is typing.Annotated:
        schema = _schema(args[0], defs, seen)
        text = next((t for a in args[1:] if (t := _description(a))), None)
        if text:
            schema["description"] = text
        return schema
    if origin is typing.Literal:
        return _enum_schema(list(args))
    if origin is typing.Union or origin is types.UnionType:
        return _union_schema([_schema(a, defs, seen) for a in args])
    if origin in _ARRAY_ORIGINS or hint in (list, tuple):
        return (
            {"type": "array", "items": _schema(args[0], defs, seen)} if args else {"type": "array"}
        )
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return {"type": "array", "items": _schema(args[0], defs, seen)}
        if args == ((),):  # tuple[()]
            return {"type": "array", "maxItems": 0}
        return {
            "type": "array",
            "prefixItems": [_schema(a, defs, seen) for a in args],
            "minItems": len(args),
            "maxItems": len(args),
        }
    if origin in _SET_ORIGINS or hint in (set, frozenset):
        schema = {"type": "array", "uniqueItems": True}
        if args:
            schema["items"] = _schema(args[0], defs, seen)
        return schema
    if origin in _DICT_ORIGINS or hint is dict:
        if args and args[0] is not str:
            raise SchemaInferenceError(f"dict keys must be str in JSON, not {args[0]!r}")
        schema = {"type": "object"}
        if len(args) == 2 and args[1] is not Any:
            schema["additionalProperties"] = _schema(args[1], defs, seen)
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
