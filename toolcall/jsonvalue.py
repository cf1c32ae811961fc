"""Conversion between plain JSON-like Python values and protobuf Struct/Value.

``Struct.update`` runs in the protobuf C runtime, so building messages goes
through it; reading back is a small recursive walk. JSON has one number type;
protobuf stores doubles, so integral numbers come back as ``int``.

``shape_error`` says whether a value can make that trip at all: JSON has no
NaN or Infinity (Python's ``json`` writes them, other parsers refuse them),
a double carries integers exactly only up to 2**53, and protobuf refuses
messages nested over 100 levels.
"""

from __future__ import annotations

import json
import re
from typing import Any

from google.protobuf import struct_pb2

_MAX_SAFE_INT = 2**53
# JSON's "\ud800" escapes decode to lone surrogates; protobuf strings are UTF-8.
_SURROGATE = re.compile("[\ud800-\udfff]")


def shape_error(value: Any, max_depth: int, counts: list[int] | None = None) -> str | None:
    """Why ``value`` cannot travel as JSON and protobuf unchanged, or None.

    Linear and without recursion (level by level: ~0.1 µs per value). The
    reason starts with ": " so callers can prefix it with what the value is.
    ``counts``, when given, receives the number of values at each depth
    (``[1, ...]`` for a container: itself, its items, theirs...).
    """
    if type(value) is not dict and type(value) is not list:
        return shape_error([value], max_depth + 1)
    level: list[Any] = [value]
    depth = 0
    if counts is not None:
        counts.append(1)
    while level:
        if counts is not None:
            counts.append(sum(map(len, level)))
        depth += 1
        if depth > max_depth:
            return f": nest deeper than {max_depth} levels"
        deeper: list[Any] = []
        items: Any
        for container in level:
            kind = type(container)
            if kind is dict:
                for key in container:
                    if type(key) is str and not key.isascii() and _SURROGATE.search(key):
                        return _SURROGATE_REASON
                items = container.values()
            elif kind is list:
                items = container
            else:
                continue
            for v in items:
                t = type(v)
                if t is dict or t is list:
                    deeper.append(v)
                elif t is str:
                    if not v.isascii() and _SURROGATE.search(v):
                        return _SURROGATE_REASON
                elif t is float:
                    if v - v != 0.0:  # inf - inf and nan - nan are nan
                        return f": hold {v!r}, which JSON cannot carry (no NaN or Infinity)"
                elif t is int and not -_MAX_SAFE_INT <= v <= _MAX_SAFE_INT:
                    return (
                        ": hold an integer beyond ±2**53, which cannot be carried exactly "
                        "(send it as a string)"
                    )
        level = deeper
    return None


_SURROGATE_REASON = ": hold a lone UTF-16 surrogate, which UTF-8 cannot carry"


def to_struct(obj: dict[str, Any] | None) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    if obj:
        s.update(obj)
    return s


def to_value(obj: Any) -> struct_pb2.Value:
    """Any JSON-compatible Python value as a ``google.protobuf.Value``."""
    if type(obj) is dict:
        # The usual tool output: fill the Value directly, half the cost of the
        # holder below. Clear() first so {} still sets struct_value.
        value = struct_pb2.Value()
        value.struct_value.Clear()
        value.struct_value.update(obj)
        return value
    holder = struct_pb2.Struct()
    holder.update({"v": obj})
    return holder.fields["v"]


def _plain(v: Any) -> Any:
    if isinstance(v, float):
        return int(v) if v.is_integer() and abs(v) < _MAX_SAFE_INT else v
    if isinstance(v, struct_pb2.Struct):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, struct_pb2.ListValue):
        return [_plain(x) for x in v]
    return v


def from_struct(s: struct_pb2.Struct) -> dict[str, Any]:
    return {k: _plain(v) for k, v in s.items()}


def from_value(v: struct_pb2.Value) -> Any:
    """A ``google.protobuf.Value`` as a plain Python value (None when unset)."""
    kind = v.WhichOneof("kind")
    if kind is None or kind == "null_value":
        return None
    if kind == "struct_value":
        return from_struct(v.struct_value)
    if kind == "list_value":
        return [_plain(x) for x in v.list_value]
    return _plain(getattr(v, kind))


def value_to_json(v: struct_pb2.Value) -> str:
    """Compact JSON for display, keys sorted (see ``sorted_keys``)."""
    return json.dumps(from_value(v), ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def sorted_keys(obj: Any) -> Any:
    """``obj`` with every object's keys sorted, for display: a Struct is a protobuf
    map, which keeps no order, so the same value printed twice came out in two
    orders (grpcurl sorts them too)."""
    if isinstance(obj, dict):
        return {k: sorted_keys(obj[k]) for k in sorted(obj)}
    if isinstance(obj, list):
        return [sorted_keys(v) for v in obj]
    return obj


def is_json_compatible(obj: Any) -> bool:
    try:
        json.dumps(obj, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True
