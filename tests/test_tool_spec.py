"""``ToolSpec.from_definition``: the one place a ToolDefinition is checked.

Every rule is exercised on its own (the violation names the field) and
together (all violations are reported at once, not the first one only).
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from tests.support.registry import NUMBER_SCHEMA, tool
from toolcall import config
from toolcall.schemas import MAX_SCHEMA_BYTES
from toolcall.tools import (
    ASYNC,
    MAX_ACK_CHARS,
    MAX_DESCRIPTION_CHARS,
    MAX_METADATA_ENTRIES,
    MAX_METADATA_VALUE_CHARS,
    MAX_SOURCE_CHARS,
    MAX_TITLE_CHARS,
    SYNC,
    DefinitionError,
    ToolSpec,
)
from toolcall.v1 import tools_pb2


def violations(**fields: Any) -> dict[str, str]:
    name = fields.pop("name", "t")
    address = fields.pop("address", "127.0.0.1:9")
    with pytest.raises(DefinitionError) as info:
        ToolSpec.from_definition(tool(name, address, **fields))
    return dict(info.value.violations)


def test_a_minimal_definition_gets_the_documented_defaults() -> None:
    spec = ToolSpec.from_definition(tool("lookup", "127.0.0.1:9"))
    assert spec.name == "lookup" and spec.callback_address == "127.0.0.1:9"
    assert spec.timeout_s == config.DEFAULT_TOOL_TIMEOUT_S
    assert spec.mode == SYNC and not spec.is_async
    assert spec.role is None and spec.source == "" and spec.ack_message == ""
    assert spec.parameters["type"] == "object"
    assert spec.validate_arguments({}) is None  # no parameters: an empty object is fine


def test_every_field_is_carried_over() -> None:
    definition = tool(
        "ping",
        "unix:/tmp/plugin.sock",
        description="Ping a host.",
        parameters=NUMBER_SCHEMA,
        role="support",
        source="plugin:net",
        timeout_seconds=2.5,
        mode=tools_pb2.TOOL_MODE_ASYNC,
        ack_message="started",
        accepts_raw_arguments=True,
    )
    spec = ToolSpec.from_definition(definition)
    assert spec.parameters == NUMBER_SCHEMA and spec.description == "Ping a host."
    assert (spec.role, spec.source, spec.timeout_s) == ("support", "plugin:net", 2.5)
    assert spec.is_async and spec.mode == ASYNC and spec.ack_message == "started"
    assert spec.accepts_raw_arguments and spec.definition == definition


def test_arguments_are_checked_with_the_compiled_schema() -> None:
    spec = ToolSpec.from_definition(tool("n", "127.0.0.1:9", parameters=NUMBER_SCHEMA))
    assert spec.validate_arguments({"x": 1}) is None
    assert spec.validate_arguments({"x": "one"})
    assert spec.validate_arguments({})  # x is required
    assert spec.validate_arguments({"x": 1, "y": 2})  # additionalProperties: false


@pytest.mark.parametrize(
    "name", ["", "has space", "new\nline", "trailing\n", "a" * 65, "ümlaut", "semi;colon"]
)
def test_bad_names_are_refused(name: str) -> None:
    assert "tool.name" in violations(name=name)


@pytest.mark.parametrize("name", ["a", "get_weather", "ns.tool-2", "A" * 64])
def test_good_names_are_accepted(name: str) -> None:
    assert ToolSpec.from_definition(tool(name, "127.0.0.1:9")).name == name


@pytest.mark.parametrize(
    "address", ["", "10.0.0.1:80", "example.com:80", "0.0.0.0:80", "unix:relative.sock"]
)
def test_non_loopback_callback_addresses_are_refused(address: str) -> None:
    assert "tool.callback_address" in violations(address=address)


@pytest.mark.parametrize("timeout", [-1.0, math.nan, config.MAX_TOOL_TIMEOUT_S + 1, math.inf])
def test_timeouts_outside_the_allowed_range_are_refused(timeout: float) -> None:
    assert "tool.timeout_seconds" in violations(timeout_seconds=timeout)


def test_the_largest_timeout_is_accepted() -> None:
    spec = ToolSpec.from_definition(
        tool("t", "127.0.0.1:9", timeout_seconds=config.MAX_TOOL_TIMEOUT_S)
    )
    assert spec.timeout_s == config.MAX_TOOL_TIMEOUT_S


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"description": "d" * (MAX_DESCRIPTION_CHARS + 1)}, "tool.description"),
        ({"source": "s" * (MAX_SOURCE_CHARS + 1)}, "tool.source"),
        ({"ack_message": "a" * (MAX_ACK_CHARS + 1)}, "tool.ack_message"),
        ({"role": ""}, "tool.role"),  # set but empty: unset means every role
        ({"mode": 7}, "tool.mode"),
        ({"parameters": {"type": "string"}}, "tool.parameters"),
        ({"parameters": {"type": "object", "properties": {"x": {"type": 5}}}}, "tool.parameters"),
    ],
)
def test_each_rule_names_its_field(fields: dict[str, Any], field: str) -> None:
    assert field in violations(**fields)


def test_all_violations_are_reported_at_once() -> None:
    found = violations(
        name="bad name",
        address="10.0.0.1:1",
        timeout_seconds=-1,
        role="",
        parameters={"type": "array"},
    )
    assert set(found) == {
        "tool.name",
        "tool.callback_address",
        "tool.timeout_seconds",
        "tool.role",
        "tool.parameters",
    }
    with pytest.raises(DefinitionError, match=r"tool\.name"):
        ToolSpec.from_definition(tool("bad name", "10.0.0.1:1"))


def test_title_annotations_output_schema_and_metadata_are_carried_over() -> None:
    definition = tool(
        "weather",
        "127.0.0.1:9",
        title="Current weather",
        annotations=tools_pb2.ToolAnnotations(read_only=True, open_world=True),
        output_schema=NUMBER_SCHEMA,
        metadata={"category": "weather", "ui/icon": "sun"},
    )
    spec = ToolSpec.from_definition(definition)
    assert spec.title == "Current weather" and spec.output_schema == NUMBER_SCHEMA
    assert spec.validate_output is not None
    assert spec.validate_output({"x": 1}) is None
    assert spec.validate_output({"x": "one"}) == "output.x: 'one' is not of type 'number'"
    assert spec.definition.annotations.read_only
    assert not spec.definition.annotations.HasField("destructive")  # unset: MCP's default
    # No output_schema: nothing to check an output against.
    assert ToolSpec.from_definition(tool("t", "127.0.0.1:9")).validate_output is None


def test_an_empty_object_output_schema_still_requires_an_object() -> None:
    # The arguments' shortcut for {"type": "object", "properties": {}} must not
    # apply to an output, which may be any JSON value.
    empty = {"type": "object", "properties": {}}
    spec = ToolSpec.from_definition(tool("t", "127.0.0.1:9", output_schema=empty))
    assert spec.validate_output is not None
    assert spec.validate_output({}) is None
    assert spec.validate_output([1]) == "output: [1] is not of type 'object'"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"title": "t" * (MAX_TITLE_CHARS + 1)}, "tool.title"),
        ({"title": "bell\x07"}, "tool.title"),
        ({"output_schema": {"type": "string"}}, "tool.output_schema"),
        ({"output_schema": {"$ref": "https://example.com/s.json"}}, "tool.output_schema"),
        (
            {"output_schema": {"type": "object", "properties": {"x": {"type": 5}}}},
            "tool.output_schema",
        ),
        (
            {"output_schema": {"type": "object", "description": "d" * MAX_SCHEMA_BYTES}},
            "tool.output_schema",
        ),
        ({"metadata": {f"k{i}": "v" for i in range(MAX_METADATA_ENTRIES + 1)}}, "tool.metadata"),
        ({"metadata": {"has space": "v"}}, "tool.metadata"),
        ({"metadata": {"k": "v" * (MAX_METADATA_VALUE_CHARS + 1)}}, "tool.metadata"),
        ({"metadata": {"k": "\x1b[31mred"}}, "tool.metadata"),
        (
            {"annotations": tools_pb2.ToolAnnotations(read_only=True, destructive=True)},
            "tool.annotations",
        ),
    ],
)
def test_title_metadata_annotations_and_output_schema_bounds_name_their_field(
    fields: dict[str, Any], field: str
) -> None:
    assert field in violations(**fields)


def test_the_largest_title_and_metadata_are_accepted() -> None:
    metadata = {f"k{i}": "v" * MAX_METADATA_VALUE_CHARS for i in range(MAX_METADATA_ENTRIES)}
    spec = ToolSpec.from_definition(
        tool("t", "127.0.0.1:9", title="t" * MAX_TITLE_CHARS, metadata=metadata)
    )
    assert len(spec.definition.metadata) == MAX_METADATA_ENTRIES
