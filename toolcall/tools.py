"""A tool as a small value object, built and checked once from its definition.

The registry, the LLMService's view of the registry and the plugin SDK all use
``ToolSpec``; ``ToolSpec.from_definition`` is the one place where a
``ToolDefinition`` is validated, and ``ToolSpec.check_arguments`` the one
place where a call's arguments are parsed and validated (the registry's
Invoke, the LLMService's sync and async calls).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from toolcall import config
from toolcall.address_policy import RemoteAllowList, callback_address_error
from toolcall.jsonvalue import from_struct
from toolcall.schemas import (
    EMPTY_PARAMETERS,
    MAX_SCHEMA_BYTES,
    MAX_SCHEMA_WIRE_BYTES,
    ArgumentValidator,
    ValueValidator,
    compile_validator,
    parameters_schema_error,
)
from toolcall.v1 import tools_pb2

# \Z, not $: "$" also matches before a final newline ("name\n" would pass).
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_.\-]{1,64}\Z")
MAX_DESCRIPTION_CHARS = 4096
MAX_SOURCE_CHARS = 128
MAX_ACK_CHARS = 4096
MAX_TITLE_CHARS = 128
# metadata: a few short strings for hosts and UIs, never a second payload.
MAX_METADATA_ENTRIES = 32
METADATA_KEY_PATTERN = re.compile(r"^[A-Za-z0-9_.:/\-]{1,64}\Z")
MAX_METADATA_VALUE_CHARS = 1024

SYNC = tools_pb2.TOOL_MODE_SYNC
ASYNC = tools_pb2.TOOL_MODE_ASYNC


class DefinitionError(ValueError):
    """A tool definition broke one or more rules; ``violations`` maps field -> reason."""

    def __init__(self, violations: list[tuple[str, str]]) -> None:
        self.violations = violations
        super().__init__("; ".join(f"{f} {r}" for f, r in violations))


class ArgumentsError(ValueError):
    """The model's argument string is not a JSON object."""


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_arguments(raw: str) -> dict[str, Any]:
    """Parses a model's argument string; empty means no arguments. ArgumentsError if not an object.

    Strict JSON: NaN and Infinity are refused, and so is anything Python's
    parser cannot take (integers over 4300 digits, nesting past its recursion
    limit) - with a reason, never an escaping ValueError or RecursionError.
    """
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise ArgumentsError(f"arguments are not valid JSON: {exc}") from None
    except ValueError as exc:
        raise ArgumentsError(f"arguments are not valid JSON: {str(exc)[:200]}") from None
    except RecursionError:
        raise ArgumentsError("arguments are not valid JSON: they nest too deeply") from None
    if not isinstance(value, dict):
        raise ArgumentsError(f"arguments must be a JSON object, got {type(value).__name__}")
    return value


def control_error(value: str) -> str | None:
    """Why ``value`` cannot be a name, role or source: it holds a character a
    terminal would act on (ESC, CR, bidi overrides...), or None."""
    for i, ch in enumerate(value):
        if not ch.isprintable():  # Cc, Cf, Zl, Zp, Cs, Co, Cn and spaces other than " "
            return f"must not contain control or non-printable characters (U+{ord(ch):04X} at {i})"
    return None


def name_error(name: str) -> str | None:
    if NAME_PATTERN.match(name):
        return None
    return f"{name[:80]!r} must match [A-Za-z0-9_.-]{{1,64}}"


@dataclass(frozen=True, slots=True)
class ToolSpec:
    name: str
    description: str
    parameters: dict[str, Any]
    callback_address: str
    role: str | None
    source: str
    timeout_s: float
    mode: int
    ack_message: str
    accepts_raw_arguments: bool
    definition: tools_pb2.ToolDefinition = field(repr=False, compare=False)
    validate_arguments: ArgumentValidator = field(repr=False, compare=False)
    title: str = ""
    # The output's JSON Schema and its validator; None when the tool declares none.
    output_schema: dict[str, Any] | None = None
    validate_output: ValueValidator | None = field(default=None, repr=False, compare=False)
    # How long a long job of this tool may run once accepted (max_job_seconds).
    max_job_s: float = config.DEFAULT_MAX_JOB_S

    @property
    def is_async(self) -> bool:
        return self.mode == ASYNC

    def check_arguments(
        self, raw_arguments: str = "", arguments: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any] | None, str | None]:
        """(arguments, None) when the call may go ahead, else (None, "INVALID_ARGUMENT: ...").

        ``arguments`` wins over ``raw_arguments`` when given. The arguments
        come back as None when the raw string is not a JSON object and the
        tool takes raw arguments: they travel as the string alone.
        """
        if arguments is None:
            try:
                arguments = parse_arguments(raw_arguments)
            except ArgumentsError as exc:
                if self.accepts_raw_arguments:
                    return None, None
                return None, f"INVALID_ARGUMENT: {exc}"
        if reason := self.validate_arguments(arguments):
            return None, f"INVALID_ARGUMENT: {reason}"
        return arguments, None

    @classmethod
    def from_definition(
        cls, d: tools_pb2.ToolDefinition, *, remote: RemoteAllowList | None = None
    ) -> ToolSpec:
        """Checks every rule and returns the spec, or raises DefinitionError.

        ``remote``: the operator's allow-list of plugins on other hosts; without
        it a callback address must be loopback."""
        bad: list[tuple[str, str]] = []
        if err := name_error(d.name):
            bad.append(("tool.name", err))
        if len(d.description) > MAX_DESCRIPTION_CHARS:
            bad.append(("tool.description", f"is longer than {MAX_DESCRIPTION_CHARS} characters"))
        parameters = _schema(d, "parameters", bad)
        output_schema = _schema(d, "output_schema", bad)
        if d.title:
            if len(d.title) > MAX_TITLE_CHARS:
                bad.append(("tool.title", f"is longer than {MAX_TITLE_CHARS} characters"))
            elif err := control_error(d.title):
                bad.append(("tool.title", err))
        if d.annotations.read_only and d.annotations.destructive:
            bad.append(("tool.annotations", "read_only and destructive cannot both be true"))
        if d.metadata and (err := metadata_error(d.metadata)):
            bad.append(("tool.metadata", err))
        if err := callback_address_error(d.callback_address, remote):
            bad.append(("tool.callback_address", err))
        if d.HasField("role") and not d.role:
            bad.append(("tool.role", "must not be empty when set; leave it unset for all roles"))
        elif err := control_error(d.role):
            bad.append(("tool.role", err))
        if len(d.source) > MAX_SOURCE_CHARS:
            bad.append(("tool.source", f"is longer than {MAX_SOURCE_CHARS} characters"))
        elif err := control_error(d.source):
            bad.append(("tool.source", err))
        timeout = d.timeout_seconds
        if timeout != timeout or timeout < 0 or timeout > config.MAX_TOOL_TIMEOUT_S:
            bad.append(
                (
                    "tool.timeout_seconds",
                    f"must be between 0 (default {config.DEFAULT_TOOL_TIMEOUT_S:g}) "
                    f"and {config.MAX_TOOL_TIMEOUT_S:g}",
                )
            )
        max_job = d.max_job_seconds
        if max_job != max_job or max_job < 0 or max_job > config.MAX_MAX_JOB_S:
            bad.append(
                (
                    "tool.max_job_seconds",
                    f"must be between 0 (default {config.DEFAULT_MAX_JOB_S:g}) "
                    f"and {config.MAX_MAX_JOB_S:g}",
                )
            )
        if d.mode not in tools_pb2.ToolMode.values():
            bad.append(("tool.mode", f"unknown mode {d.mode}"))
        if len(d.ack_message) > MAX_ACK_CHARS:
            bad.append(("tool.ack_message", f"is longer than {MAX_ACK_CHARS} characters"))
        if bad:
            raise DefinitionError(bad)
        params = parameters or dict(EMPTY_PARAMETERS)
        return cls(
            name=d.name,
            description=d.description,
            parameters=params,
            callback_address=d.callback_address,
            role=d.role if d.HasField("role") else None,
            source=d.source,
            timeout_s=timeout or config.DEFAULT_TOOL_TIMEOUT_S,
            mode=ASYNC if d.mode == ASYNC else SYNC,
            ack_message=d.ack_message,
            accepts_raw_arguments=d.accepts_raw_arguments,
            definition=d,
            validate_arguments=compile_validator(params),
            title=d.title,
            output_schema=output_schema or None,
            validate_output=compile_validator(output_schema, "output") if output_schema else None,
            max_job_s=max_job or config.DEFAULT_MAX_JOB_S,
        )


def _schema(d: tools_pb2.ToolDefinition, name: str, bad: list[tuple[str, str]]) -> dict[str, Any]:
    """``d``'s schema field ``name`` (parameters or output_schema) as a dict, checked by
    the same rules; {} when unset or refused (the reason is added to ``bad``)."""
    if not d.HasField(name):  # type: ignore[arg-type]
        return {}
    struct = getattr(d, name)
    if (size := struct.ByteSize()) > MAX_SCHEMA_WIRE_BYTES:
        bad.append(
            (
                f"tool.{name}",
                f"is {size} bytes encoded; the limit is {MAX_SCHEMA_BYTES} bytes of JSON",
            )
        )
        return {}
    schema = from_struct(struct)
    if err := parameters_schema_error(schema):
        bad.append((f"tool.{name}", err))
        return {}
    return schema


def metadata_error(metadata: Mapping[str, str]) -> str | None:
    """Why a tool's metadata map breaks its bounds, or None."""
    if len(metadata) > MAX_METADATA_ENTRIES:
        return f"has {len(metadata)} entries; the limit is {MAX_METADATA_ENTRIES}"
    for key in sorted(metadata):
        if not METADATA_KEY_PATTERN.match(key):
            return f"key {key[:80]!r} must match [A-Za-z0-9_.:/-]{{1,64}}"
        value = metadata[key]
        if len(value) > MAX_METADATA_VALUE_CHARS:
            return f"value of {key!r} is longer than {MAX_METADATA_VALUE_CHARS} characters"
        if err := control_error(value):
            return f"value of {key!r} {err}"
    return None
