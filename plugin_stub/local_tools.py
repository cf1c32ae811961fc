"""The tools one plugin serves: a dict keyed by name, built once per tool.

Everything the callback hot path needs (bound handler, compiled validator,
whether to await or run in a thread, the context parameter) is worked out
when a tool is added, so a call is a dict lookup away from its handler.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from plugin_stub.context import CallContext
from plugin_stub.decorator import ToolMeta
from toolcall.jsonvalue import to_struct
from toolcall.schemas import ArgumentValidator, compile_validator
from toolcall.tools import ASYNC, SYNC
from toolcall.v1 import tools_pb2


class ToolConflictError(ValueError):
    """A tool with this name is already served by the plugin."""


@dataclass(frozen=True, slots=True)
class LocalTool:
    meta: ToolMeta
    handler: Callable[..., Any]
    is_coroutine: bool
    validate: ArgumentValidator = field(repr=False)
    # Name of the handler's CallContext parameter, if it declares one.
    context_param: str | None = None
    # Parameters annotated with an Enum: JSON values are turned into members.
    enum_params: tuple[tuple[str, type[enum.Enum]], ...] = ()
    # Parameters annotated with a pydantic model or a dataclass: their JSON
    # objects are built into instances (a TypedDict stays the dict it is).
    record_params: tuple[tuple[str, Callable[[Any], Any]], ...] = ()

    @classmethod
    def build(cls, meta: ToolMeta, handler: Callable[..., Any]) -> LocalTool:
        if not callable(handler):
            raise TypeError(f"handler of tool {meta.name!r} is not callable")
        hints = _type_hints(handler)
        return cls(
            meta=meta,
            handler=handler,
            is_coroutine=inspect.iscoroutinefunction(handler),
            validate=compile_validator(meta.parameters),
            context_param=next((n for n, h in hints.items() if h is CallContext), None),
            enum_params=tuple(
                (name, e) for name, h in hints.items() if (e := _enum_type(h)) is not None
            ),
            record_params=tuple(
                (name, b)
                for name, h in hints.items()
                if h is not CallContext and (b := _builder(h)) is not None
            ),
        )

    @property
    def name(self) -> str:
        return self.meta.name

    def definition(self, callback_address: str, source: str) -> tools_pb2.ToolDefinition:
        """The ToolDefinition to register for this tool."""
        m = self.meta
        definition = tools_pb2.ToolDefinition(
            name=m.name,
            description=m.description,
            parameters=to_struct(m.parameters),
            callback_address=callback_address,
            role=m.role,
            source=source,
            timeout_seconds=m.timeout_s,
            mode=ASYNC if m.mode == "async" else SYNC,
            ack_message=m.ack_message,
        )
        m.fill(definition)
        return definition


def _type_hints(handler: Callable[..., Any]) -> dict[str, Any]:
    try:
        hints = typing.get_type_hints(handler)
    except Exception:
        return {}
    hints.pop("return", None)
    return hints


def _builder(hint: Any) -> Callable[[Any], Any] | None:
    """What turns a JSON object into an instance of ``hint`` (or ``hint | None``):
    a pydantic model's ``model_validate``, or a dataclass built field by field
    (fields that are dataclasses or models themselves are built too)."""
    if typing.get_origin(hint) is typing.Annotated:
        return _builder(typing.get_args(hint)[0])
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(hint) if a is not type(None)]
        return _builder(members[0]) if len(members) == 1 else None
    if not isinstance(hint, type):
        return None
    validate = getattr(hint, "model_validate", None)
    if callable(validate) and callable(getattr(hint, "model_json_schema", None)):
        return validate
    if not dataclasses.is_dataclass(hint):
        return None
    cls = hint
    try:
        field_hints = typing.get_type_hints(cls)
    except Exception:
        field_hints = {}
    fields = {f.name: _builder(field_hints.get(f.name)) for f in dataclasses.fields(cls)}

    def build(value: Any) -> Any:
        if not isinstance(value, dict):
            raise TypeError(f"{cls.__name__} needs a JSON object")
        return cls(
            **{
                k: (b(v) if (b := fields.get(k)) is not None and v is not None else v)
                for k, v in value.items()
            }
        )

    return build


def _enum_type(hint: Any) -> type[enum.Enum] | None:
    """The Enum class of ``E`` or ``E | None`` hints."""
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return hint
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(members) == 1:
            return _enum_type(members[0])
    return None


class ToolTable:
    """Name -> LocalTool, with a version that changes on every add or remove."""

    def __init__(self) -> None:
        self._tools: dict[str, LocalTool] = {}
        self.version = 0

    def add(self, tool: LocalTool) -> None:
        if tool.name in self._tools:
            raise ToolConflictError(
                f"tool {tool.name!r} is already registered by this plugin; "
                "unregister it first or pick another name"
            )
        self._tools[tool.name] = tool
        self.version += 1

    def remove(self, name: str) -> LocalTool | None:
        tool = self._tools.pop(name, None)
        if tool is not None:
            self.version += 1
        return tool

    def get(self, name: str) -> LocalTool | None:
        return self._tools.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __iter__(self) -> Iterator[LocalTool]:
        return iter(list(self._tools.values()))

    def __len__(self) -> int:
        return len(self._tools)
