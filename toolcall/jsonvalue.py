"""Conversion between plain JSON-like Python values and protobuf Struct/Value.

``Struct.update`` runs in the protobuf C runtime, so building messages goes
through it; reading back is a small recursive walk. JSON has one number type;
protobuf stores doubles, so integral numbers come back as ``int``.
"""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import struct_pb2

_MAX_SAFE_INT = 2**53


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
    return json.dumps(from_value(v), ensure_ascii=False, separators=(",", ":"))


def is_json_compatible(obj: Any) -> bool:
    try:
        json.dumps(obj, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True
