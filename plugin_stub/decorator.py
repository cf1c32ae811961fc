"""``@llm_tool``: marks a function or method as a tool and checks its definition at once.

Every rule the registry would apply to the definition is checked here, at
decoration time, so a bad name or schema fails when the module is imported
rather than when the registry refuses it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, overload

from plugin_stub.context import CallContext
from plugin_stub.schema_inference import infer_parameters, parse_docstring
from toolcall import config
from toolcall.schemas import parameters_schema_error
from toolcall.tools import MAX_ACK_CHARS, MAX_DESCRIPTION_CHARS, name_error

F = TypeVar("F", bound=Callable[..., Any])
Mode = Literal["sync", "async"]
MODES = ("sync", "async")
META_ATTRIBUTE = "__llm_tool__"


@dataclass(frozen=True, slots=True)
class ToolMeta:
    """A tool's definition as the plugin author wrote it (no address, no source yet)."""

    name: str
    description: str
    parameters: dict[str, Any]
    timeout_s: float
    role: str | None
    mode: Mode
    ack_message: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "parameters": self.parameters,
            "timeout": self.timeout_s,
            "role": self.role,
            "mode": self.mode,
            "ack_message": self.ack_message,
        }


def make_meta(
    func: Callable[..., Any],
    *,
    name: str | None = None,
    description: str = "",
    parameters: dict[str, Any] | None = None,
    timeout: float = config.DEFAULT_TOOL_TIMEOUT_S,
    role: str | None = None,
    mode: str = "sync",
    ack_message: str = "",
) -> ToolMeta:
    """Checks a tool's settings (ValueError naming the rule) and fills in inferred ones."""
    tool_name = name if name is not None else getattr(func, "__name__", "")
    where = f"llm_tool {tool_name!r}"
    if err := name_error(tool_name):
        raise ValueError(f"{where}: name {err}")
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise ValueError(f"{where}: timeout must be a number of seconds, got {timeout!r}")
    if math.isnan(timeout) or not 0 < timeout <= config.MAX_TOOL_TIMEOUT_S:
        raise ValueError(
            f"{where}: timeout must be > 0 and <= {config.MAX_TOOL_TIMEOUT_S:g} seconds, "
            f"got {timeout!r}"
        )
    if mode not in MODES:
        raise ValueError(f"{where}: mode must be 'sync' or 'async', got {mode!r}")
    if role is not None and not role:
        raise ValueError(f"{where}: role must not be empty; use None for every role")
    if ack_message and mode != "async":
        raise ValueError(f"{where}: ack_message is only used by mode='async' tools")
    if len(ack_message) > MAX_ACK_CHARS:
        raise ValueError(f"{where}: ack_message is longer than {MAX_ACK_CHARS} characters")
    if not description:
        description = parse_docstring(getattr(func, "__doc__", None) or "")[0]
    if len(description) > MAX_DESCRIPTION_CHARS:
        raise ValueError(f"{where}: description is longer than {MAX_DESCRIPTION_CHARS} characters")
    if parameters is None:
        parameters = infer_parameters(func, skip_types=(CallContext,))
    elif not isinstance(parameters, dict):
        raise ValueError(f"{where}: parameters must be a dict (a JSON Schema)")
    if err := parameters_schema_error(parameters):
        raise ValueError(f"{where}: parameters {err}")
    return ToolMeta(
        name=tool_name,
        description=description,
        parameters=parameters or {"type": "object", "properties": {}},
        timeout_s=float(timeout),
        role=role,
        mode="async" if mode == "async" else "sync",
        ack_message=ack_message,
    )


@overload
def llm_tool(func: F, /) -> F: ...


@overload
def llm_tool(
    *,
    name: str | None = None,
    description: str = "",
    parameters: dict[str, Any] | None = None,
    timeout: float = config.DEFAULT_TOOL_TIMEOUT_S,
    role: str | None = None,
    mode: Mode = "sync",
    ack_message: str = "",
) -> Callable[[F], F]: ...


def llm_tool(
    func: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str = "",
    parameters: dict[str, Any] | None = None,
    timeout: float = config.DEFAULT_TOOL_TIMEOUT_S,
    role: str | None = None,
    mode: Mode = "sync",
    ack_message: str = "",
) -> Any:
    """Marks ``func`` as a tool the model may call; use bare or with options.

    ``name`` defaults to the function's name, ``description`` to the first
    paragraph of its docstring and ``parameters`` to a schema inferred from
    its signature (see ``plugin_stub.schema_inference``). ``timeout`` is the
    per-call deadline in seconds (0 < timeout <= 300). ``role`` limits the tool
    to one role (None: every role). ``mode="async"`` tools answer the model with
    ``ack_message`` at once and deliver their result later. The function is
    returned unchanged; it is called with the arguments as keyword arguments.
    """

    def mark(f: F) -> F:
        meta = make_meta(
            f,
            name=name,
            description=description,
            parameters=parameters,
            timeout=timeout,
            role=role,
            mode=mode,
            ack_message=ack_message,
        )
        setattr(f, META_ATTRIBUTE, meta)
        return f

    return mark(func) if func is not None else mark


def tool_meta(obj: Any) -> ToolMeta | None:
    """The ``@llm_tool`` metadata of a function or (bound) method, if it has any."""
    meta = getattr(obj, META_ATTRIBUTE, None)
    return meta if isinstance(meta, ToolMeta) else None
