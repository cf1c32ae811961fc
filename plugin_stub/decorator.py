"""``@llm_tool``: marks a function or method as a tool and checks its definition at once.

The definition is checked by the registry's own rules
(``ToolSpec.from_definition``), at decoration time, so a bad name or schema
fails when the module is imported rather than when the registry refuses it -
and the SDK can never drift from the registry. Only what the SDK adds is
checked here: Python types of the options, a timeout that must be set (the
registry reads 0 as "default"), ``mode`` as a word, ``ack_message`` only
for async tools, hints that are booleans.

The options are one type, ``ToolOptions``: ``@llm_tool(...)`` and
``Plugin.register_llm_tool(name, handler, ...)`` take the same keywords.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict, TypeVar, Unpack, overload

from plugin_stub.context import CallContext
from plugin_stub.schema_inference import infer_output_schema, infer_parameters, parse_docstring
from toolcall import config
from toolcall.jsonvalue import to_struct
from toolcall.tools import ASYNC, SYNC, DefinitionError, ToolSpec
from toolcall.v1 import tools_pb2

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])
Mode = Literal["sync", "async"]
MODES = ("sync", "async")
META_ATTRIBUTE = "__llm_tool__"

# Stands in for the plugin's address while the definition is checked (the
# real one is only known once the plugin listens).
_CHECK_ADDRESS = "127.0.0.1:1"


class ToolOptions(TypedDict, total=False):
    """A tool's options besides its name (see ``llm_tool`` for what each means)."""

    description: str
    parameters: dict[str, Any] | None
    timeout: float
    role: str | None
    mode: Mode
    ack_message: str
    title: str
    read_only: bool | None
    destructive: bool | None
    idempotent: bool | None
    open_world: bool | None
    output_schema: dict[str, Any] | None
    metadata: dict[str, str] | None
    max_job_seconds: float


OPTION_NAMES = frozenset(ToolOptions.__annotations__)
# MCP's tool annotations, as options of the same names (None: not given).
HINTS = ("read_only", "destructive", "idempotent", "open_world")


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
    title: str = ""
    # The hints given (read_only, destructive, idempotent, open_world); absent: not given.
    annotations: dict[str, bool] = field(default_factory=dict)
    output_schema: dict[str, Any] | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    # Async tools: how long an accepted long job may run (0: the service's 24 h).
    max_job_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "parameters": self.parameters,
            "timeout": self.timeout_s,
            "role": self.role,
            "mode": self.mode,
            "ack_message": self.ack_message,
            "title": self.title,
            "annotations": dict(self.annotations),
            "output_schema": self.output_schema,
            "metadata": dict(self.metadata),
            "max_job_seconds": self.max_job_s,
        }

    def fill(self, definition: tools_pb2.ToolDefinition) -> None:
        """Sets the title, hints, output_schema, metadata and max_job_seconds on ``definition``."""
        definition.title = self.title
        definition.max_job_seconds = self.max_job_s
        if self.annotations:
            definition.annotations.CopyFrom(tools_pb2.ToolAnnotations(**self.annotations))
        if self.output_schema is not None:
            definition.output_schema.CopyFrom(to_struct(self.output_schema))
        definition.metadata.update(self.metadata)


def make_meta(func: Callable[..., Any], name: str | None, options: ToolOptions) -> ToolMeta:
    """Checks a tool's options (ValueError naming the rule) and fills in inferred ones."""
    tool_name = name if name is not None else getattr(func, "__name__", "")
    where = f"llm_tool {tool_name!r}"
    if unknown := set(options) - OPTION_NAMES:
        raise TypeError(f"{where}: unknown option(s) {', '.join(sorted(unknown))}")
    timeout = options.get("timeout", config.DEFAULT_TOOL_TIMEOUT_S)
    mode = options.get("mode", "sync")
    role = options.get("role")
    ack_message = options.get("ack_message", "")
    description = options.get("description", "")
    parameters = options.get("parameters")
    title = options.get("title", "")
    annotations = {h: options[h] for h in HINTS if options.get(h) is not None}  # type: ignore[literal-required]
    output_schema = options.get("output_schema")
    metadata = options.get("metadata") or {}
    max_job = options.get("max_job_seconds", 0.0)
    # SDK-only rules; everything else is the registry's (below).
    if not isinstance(tool_name, str):
        raise ValueError(f"{where}: name must be a str")
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise ValueError(f"{where}: timeout must be a number of seconds, got {timeout!r}")
    if math.isnan(timeout) or timeout <= 0:
        raise ValueError(
            f"{where}: timeout must be > 0 and <= {config.MAX_TOOL_TIMEOUT_S:g} seconds, "
            f"got {timeout!r}"
        )
    if mode not in MODES:
        raise ValueError(f"{where}: mode must be 'sync' or 'async', got {mode!r}")
    if role is not None and not isinstance(role, str):
        raise ValueError(f"{where}: role must be a str or None")
    if not isinstance(ack_message, str) or not isinstance(description, str):
        raise ValueError(f"{where}: description and ack_message must be str")
    if ack_message and mode != "async":
        raise ValueError(f"{where}: ack_message is only used by mode='async' tools")
    if not isinstance(title, str):
        raise ValueError(f"{where}: title must be a str")
    if isinstance(max_job, bool) or not isinstance(max_job, int | float):
        raise ValueError(f"{where}: max_job_seconds must be a number of seconds")
    if max_job and mode != "async":
        raise ValueError(f"{where}: max_job_seconds is only used by mode='async' tools")
    if bad := [h for h, v in annotations.items() if not isinstance(v, bool)]:
        raise ValueError(f"{where}: {', '.join(bad)} must be True, False or None")
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise ValueError(f"{where}: metadata must be a dict of str to str")
    if output_schema is None:
        output_schema = infer_output_schema(func)
    elif not isinstance(output_schema, dict):
        raise ValueError(f"{where}: output_schema must be a dict (a JSON Schema)")
    if not description:
        description = parse_docstring(getattr(func, "__doc__", None) or "")[0]
    if not description:
        log.warning(
            "%s has no description and no docstring: the model gets no hint what it does", where
        )
    if parameters is None:
        parameters = infer_parameters(func, skip_types=(CallContext,))
    elif not isinstance(parameters, dict):
        raise ValueError(f"{where}: parameters must be a dict (a JSON Schema)")
    definition = tools_pb2.ToolDefinition(
        name=tool_name,
        description=description,
        callback_address=_CHECK_ADDRESS,
        timeout_seconds=float(timeout),
        mode=ASYNC if mode == "async" else SYNC,
        ack_message=ack_message,
    )
    if role is not None:
        definition.role = role
    if parameters:
        try:
            definition.parameters.CopyFrom(to_struct(parameters))
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:
            raise ValueError(f"{where}: parameters is not JSON: {exc}") from None
    extras = ToolMeta(
        tool_name,
        "",
        {},
        0.0,
        None,
        "sync",
        "",
        title,
        annotations,
        output_schema,
        metadata,
        float(max_job),
    )
    try:
        extras.fill(definition)
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:
        raise ValueError(f"{where}: output_schema is not JSON: {exc}") from None
    try:
        spec = ToolSpec.from_definition(definition)
    except DefinitionError as exc:
        reasons = "; ".join(f"{f.removeprefix('tool.')} {r}" for f, r in exc.violations)
        raise ValueError(f"{where}: {reasons}") from None
    return ToolMeta(
        name=tool_name,
        description=description,
        parameters=parameters or spec.parameters,
        timeout_s=float(timeout),
        role=role,
        mode="async" if mode == "async" else "sync",
        ack_message=ack_message,
        title=title,
        annotations=annotations,
        output_schema=output_schema,
        metadata=dict(metadata),
        max_job_s=float(max_job),
    )


@overload
def llm_tool(func: F, /) -> F: ...


@overload
def llm_tool(*, name: str | None = None, **options: Unpack[ToolOptions]) -> Callable[[F], F]: ...


def llm_tool(
    func: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    **options: Unpack[ToolOptions],
) -> Any:
    """Marks ``func`` as a tool the model may call; use bare or with options.

    ``name`` defaults to the function's name, ``description`` to the first
    paragraph of its docstring (a tool with neither logs a warning: the model
    would get no hint what it does) and ``parameters`` to a schema inferred
    from its signature (see ``plugin_stub.schema_inference``). ``timeout`` is
    the per-call deadline in seconds (0 < timeout <= 300, default 30).
    ``role`` limits the tool to one role (None: every role).
    ``mode="async"`` tools answer the model with ``ack_message`` at once and
    deliver their result later; one may return ``Accepted`` to run on as a
    long job (plugin_stub/jobs.py) for up to ``max_job_seconds`` (default
    24 h). ``title`` is a display name for hosts and
    UIs; ``read_only``, ``destructive``, ``idempotent`` and ``open_world`` are
    MCP's hints (None: not given); ``metadata`` a few strings for hosts.
    ``output_schema`` defaults to the schema of the return annotation when it
    is a pydantic model, dataclass or TypedDict (structured output); the
    caller then checks every output against it. The function is returned
    unchanged; it is called with the arguments as keyword arguments.
    """

    def mark(f: F) -> F:
        setattr(f, META_ATTRIBUTE, make_meta(f, name, options))
        return f

    return mark(func) if func is not None else mark


def tool_meta(obj: Any) -> ToolMeta | None:
    """The ``@llm_tool`` metadata of a function or (bound) method, if it has any."""
    meta = getattr(obj, META_ATTRIBUTE, None)
    return meta if isinstance(meta, ToolMeta) else None
