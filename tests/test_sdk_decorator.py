"""@llm_tool: definition checks at decoration time and schema inference from signatures."""

from __future__ import annotations

import dataclasses
import enum
import logging
from typing import Annotated, Any, Literal, NotRequired, Optional, TypedDict

import pytest
from jsonschema import Draft202012Validator
from pydantic import BaseModel, Field

from plugin_stub import (
    CallContext,
    Plugin,
    SchemaInferenceError,
    infer_parameters,
    llm_tool,
    tool_meta,
)
from plugin_stub.callback_server import shape_result
from plugin_stub.decorator import OPTION_NAMES
from plugin_stub.local_tools import LocalTool
from plugin_stub.schema_inference import parse_docstring
from toolcall import tools
from toolcall.jsonvalue import from_value, to_struct
from toolcall.tools import ToolSpec
from toolcall.v1 import tools_pb2


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


def schema_of(func: Any) -> dict[str, Any]:
    meta = tool_meta(llm_tool(func))
    assert meta is not None
    Draft202012Validator.check_schema(meta.parameters)
    return meta.parameters


def test_bare_decorator_defaults_name_description_and_schema() -> None:
    def get_weather(city: str) -> dict[str, Any]:
        """Current weather of a city.

        Second paragraph is not part of the description.
        """
        return {}

    meta = tool_meta(llm_tool(get_weather))
    assert meta is not None
    assert meta.name == "get_weather"
    assert meta.description == "Current weather of a city."
    assert meta.parameters == {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    }
    assert (meta.timeout_s, meta.mode, meta.role, meta.ack_message) == (30.0, "sync", None, "")


def test_decorator_returns_the_function_unchanged() -> None:
    def f(x: int) -> int:
        return x * 2

    assert llm_tool(name="double")(f) is f
    assert f(4) == 8


def test_scalar_types_optional_and_defaults() -> None:
    def f(
        self: Any,
        s: str,
        i: int,
        n: float,
        b: bool,
        maybe: int | None,
        old_style: Optional[str] = None,  # noqa: UP045 - the typing spelling must work too
        anything: Any = 3,
        untyped="x",
    ) -> None: ...

    schema = schema_of(f)
    props = schema["properties"]
    assert "self" not in props
    assert props["s"] == {"type": "string"}
    assert props["i"] == {"type": "integer"}
    assert props["n"] == {"type": "number"}
    assert props["b"] == {"type": "boolean"}
    assert props["maybe"] == {"type": ["integer", "null"]}
    assert props["old_style"] == {"type": ["string", "null"], "default": None}
    assert props["anything"] == {"default": 3}
    assert props["untyped"] == {"default": "x"}
    assert schema["required"] == ["s", "i", "n", "b", "maybe"]


def test_literal_enum_and_int_enum() -> None:
    def f(
        mode: Literal["fast", "slow"],
        color: Color = Color.RED,
        level: Level | None = None,
        mixed: Literal[1, "a"] = 1,
    ) -> None: ...

    props = schema_of(f)["properties"]
    assert props["mode"] == {"enum": ["fast", "slow"], "type": "string"}
    assert props["color"] == {"enum": ["red", "green"], "type": "string", "default": "red"}
    assert props["level"] == {
        "anyOf": [{"enum": [1, 2], "type": "integer"}, {"type": "null"}],
        "default": None,
    }
    assert props["mixed"] == {"enum": [1, "a"], "default": 1}


def test_containers() -> None:
    def f(
        tags: list[str],
        pair: tuple[int, str],
        many: tuple[float, ...],
        unique: set[int],
        scores: dict[str, float],
        blob: dict,
        nested: list[dict[str, list[int]]],
    ) -> None: ...

    props = schema_of(f)["properties"]
    assert props["tags"] == {"type": "array", "items": {"type": "string"}}
    assert props["pair"] == {
        "type": "array",
        "prefixItems": [{"type": "integer"}, {"type": "string"}],
        "minItems": 2,
        "maxItems": 2,
    }
    assert props["many"] == {"type": "array", "items": {"type": "number"}}
    assert props["unique"] == {"type": "array", "uniqueItems": True, "items": {"type": "integer"}}
    assert props["scores"] == {"type": "object", "additionalProperties": {"type": "number"}}
    assert props["blob"] == {"type": "object"}
    assert props["nested"]["items"]["additionalProperties"] == {
        "type": "array",
        "items": {"type": "integer"},
    }


def test_inferred_schema_accepts_and_refuses_the_right_arguments() -> None:
    def f(city: str, days: int = 3, units: Literal["c", "f"] = "c") -> None: ...

    validator = Draft202012Validator(schema_of(f))
    assert validator.is_valid({"city": "Paris"})
    assert validator.is_valid({"city": "Paris", "days": 2, "units": "f"})
    assert not validator.is_valid({})
    assert not validator.is_valid({"city": 3})
    assert not validator.is_valid({"city": "Paris", "units": "k"})
    assert not validator.is_valid({"city": "Paris", "extra": 1})


def test_kwargs_leaves_schema_open_and_context_parameter_is_hidden() -> None:
    def f(query: str, ctx: CallContext, *args: Any, **kwargs: Any) -> None: ...

    schema = schema_of(f)
    assert list(schema["properties"]) == ["query"]
    assert "additionalProperties" not in schema


def test_google_style_docstring_descriptions() -> None:
    def f(city: str, days: int = 1) -> None:
        """Forecast for a city.

        Uses the offline table.

        Args:
            city (str): City name,
                for example "Paris".
            days: How many days.

        Returns:
            A list of days.
        """

    meta = tool_meta(llm_tool(f))
    assert meta is not None
    assert meta.description == "Forecast for a city."
    assert meta.parameters["properties"]["city"]["description"] == (
        'City name, for example "Paris".'
    )
    assert meta.parameters["properties"]["days"]["description"] == "How many days."


def test_sphinx_style_docstring_and_annotated_description() -> None:
    def f(host: str, count: Annotated[int, "Packets to send"] = 4) -> None:
        """Ping a host
        and report the loss.

        :param host: IP address or
            domain name.
        :param int count: ignored because Annotated wins.
        :returns: a report
        """

    meta = tool_meta(llm_tool(f))
    assert meta is not None
    assert meta.description == "Ping a host and report the loss."
    props = meta.parameters["properties"]
    assert props["host"]["description"] == "IP address or domain name."
    assert props["count"] == {"type": "integer", "description": "Packets to send", "default": 4}


def test_parse_docstring_without_sections() -> None:
    assert parse_docstring("") == ("", {})
    assert parse_docstring("One line.") == ("One line.", {})


def test_explicit_parameters_are_used_as_given_and_checked() -> None:
    given = {"type": "object", "properties": {"q": {"type": "string", "minLength": 2}}}

    @llm_tool(parameters=given, description="Search.")
    def search(**kwargs: Any) -> None: ...

    meta = tool_meta(search)
    assert meta is not None
    assert meta.parameters == given
    with pytest.raises(ValueError, match=r"parameters must be a JSON Schema with \"type\""):
        llm_tool(parameters={"type": "array"})(search)
    with pytest.raises(ValueError, match="not a valid JSON Schema"):
        llm_tool(parameters={"type": "object", "properties": {"q": {"type": 5}}})(search)


@pytest.mark.parametrize("bad", ["", "has space", "x" * 65, "semi;colon", "naïve", "a/b"])
def test_invalid_names_fail_at_decoration(bad: str) -> None:
    with pytest.raises(ValueError, match=r"name .* must match \[A-Za-z0-9_.-\]\{1,64\}"):

        @llm_tool(name=bad)
        def f() -> None: ...


def test_valid_name_forms() -> None:
    for name in ("a", "get.weather", "get-weather_2", "X" * 64):
        meta = tool_meta(llm_tool(name=name)(lambda: None))
        assert meta is not None and meta.name == name


@pytest.mark.parametrize("timeout", [0, -1, 300.5, float("nan"), True, "5"])
def test_invalid_timeouts(timeout: Any) -> None:
    with pytest.raises(ValueError, match="timeout"):
        llm_tool(name="t", timeout=timeout)(lambda: None)


def test_timeout_bounds_inclusive() -> None:
    meta = tool_meta(llm_tool(name="t", timeout=300)(lambda: None))
    assert meta is not None and meta.timeout_s == 300.0


def test_mode_role_and_ack_rules() -> None:
    def f() -> None: ...

    with pytest.raises(ValueError, match="mode must be 'sync' or 'async'"):
        llm_tool(mode="later")(f)  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="role must not be empty"):
        llm_tool(role="")(f)
    with pytest.raises(ValueError, match="ack_message is only used by mode='async'"):
        llm_tool(ack_message="started")(f)
    with pytest.raises(ValueError, match="description is longer than 4096"):
        llm_tool(description="x" * 4097)(f)
    meta = tool_meta(llm_tool(mode="async", ack_message="started", role="ops")(f))
    assert meta is not None
    assert (meta.mode, meta.ack_message, meta.role) == ("async", "started", "ops")


class Thing:
    pass


def test_uninferable_types_fail_clearly() -> None:
    def f(thing: Thing) -> None: ...

    with pytest.raises(SchemaInferenceError, match=r"parameter 'thing'.*pass parameters="):
        llm_tool(f)

    def g(m: dict[int, str]) -> None: ...

    with pytest.raises(SchemaInferenceError, match="dict keys must be str"):
        infer_parameters(g)


def test_definitions_are_checked_by_the_registrys_own_rules(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    checked: list[str] = []
    original = ToolSpec.from_definition

    def spy(definition: Any) -> ToolSpec:
        checked.append(definition.name)
        return original(definition)

    monkeypatch.setattr(ToolSpec, "from_definition", staticmethod(spy))
    llm_tool(name="ruled", description="Checked.")(lambda: None)
    assert checked == ["ruled"]
    # A rule changed in the core applies in the SDK at once.
    monkeypatch.setattr(tools, "MAX_DESCRIPTION_CHARS", 10)
    with pytest.raises(ValueError, match="description is longer than 10"):
        llm_tool(name="t", description="x" * 11)(lambda: None)
    # The registry's pattern limits too.
    big = {"type": "object", "properties": {"x": {"type": "string", "pattern": "(a{1000}){1000}"}}}
    with pytest.raises(ValueError, match="properties/x/pattern"):
        llm_tool(name="t", parameters=big)(lambda: None)


def test_a_tool_without_description_logs_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    def undocumented() -> None: ...

    with caplog.at_level(logging.WARNING, logger="plugin_stub.decorator"):
        llm_tool(undocumented)
    assert "'undocumented' has no description" in caplog.text
    caplog.clear()

    def documented() -> None:
        """Does a thing."""

    with caplog.at_level(logging.WARNING, logger="plugin_stub.decorator"):
        llm_tool(documented)
        llm_tool(description="Said here.")(undocumented)
    assert caplog.text == ""


def test_options_are_one_type_for_the_decorator_and_the_plugin() -> None:
    assert OPTION_NAMES == {
        "description",
        "parameters",
        "timeout",
        "role",
        "mode",
        "ack_message",
        "title",
        "read_only",
        "destructive",
        "idempotent",
        "open_world",
        "output_schema",
        "metadata",
        "max_job_seconds",
    }
    with pytest.raises(TypeError, match="unknown option"):
        llm_tool(timout=3)(lambda: None)  # type: ignore[call-overload]
    plugin = Plugin(registry_address="127.0.0.1:9")
    with pytest.raises(TypeError, match="unknown option"):
        plugin.register_llm_tool("t", lambda: None, timout=3)  # type: ignore[call-arg]
    info = plugin.register_llm_tool("t", lambda: None, description="T.", timeout=5, mode="async")
    assert (info["timeout"], info["mode"]) == (5.0, "async")


class Wind(BaseModel):
    kph: float


class Report(BaseModel):
    city: str
    wind: Wind


@dataclasses.dataclass
class Point:
    """A point on the map."""

    x: float
    label: str = "here"


class Row(TypedDict):
    name: str
    score: NotRequired[int]


@dataclasses.dataclass
class Node:
    value: int
    children: list[Node]


def output_schema_of(func: Any) -> dict[str, Any] | None:
    meta = tool_meta(llm_tool(func))
    assert meta is not None
    return meta.output_schema


def test_title_hints_and_metadata_reach_the_registered_definition() -> None:
    @llm_tool(
        title="Delete file", destructive=True, idempotent=False, metadata={"category": "files"}
    )
    def delete(path: str) -> None:
        """Delete a file."""

    meta = tool_meta(delete)
    assert meta is not None and meta.title == "Delete file"
    assert meta.annotations == {"destructive": True, "idempotent": False}
    definition = LocalTool.build(meta, delete).definition("127.0.0.1:9", "plugin:x")
    assert definition.title == "Delete file" and dict(definition.metadata) == {"category": "files"}
    assert definition.annotations.destructive and definition.annotations.HasField("idempotent")
    assert not definition.annotations.HasField("read_only")  # not given: MCP's default
    assert not definition.HasField("output_schema")  # None: not structured
    assert ToolSpec.from_definition(definition).title == "Delete file"


def test_output_schema_is_inferred_from_a_structured_return_type() -> None:
    def report() -> Report:
        """A report."""
        return Report(city="Oslo", wind=Wind(kph=3))

    def point() -> Point:
        """A point."""
        return Point(1.0)

    def row() -> Row:
        """A row."""
        return {"name": "a"}

    pydantic_schema = output_schema_of(report)
    assert pydantic_schema is not None
    assert pydantic_schema["properties"]["wind"] == {"$ref": "#/$defs/Wind"}
    assert pydantic_schema["$defs"]["Wind"]["properties"]["kph"]["type"] == "number"
    assert output_schema_of(point) == {
        "type": "object",
        "properties": {"x": {"type": "number"}, "label": {"type": "string", "default": "here"}},
        "required": ["x"],
        "description": "A point on the map.",
    }
    assert output_schema_of(row) == {
        "type": "object",
        "properties": {"name": {"type": "string"}, "score": {"type": "integer"}},
        "required": ["name"],
    }
    # What the handler returns, as the SDK sends it, passes its own schema.
    for func in (report, point, row):
        spec = ToolSpec.from_definition(
            LocalTool.build(tool_meta(llm_tool(func)), func).definition("127.0.0.1:9", "x")  # type: ignore[arg-type]
        )
        assert spec.validate_output is not None
        assert spec.validate_output(from_value(shape_result(func()).output)) is None

    # Other return types declare no output_schema; an explicit one wins.
    def plain() -> dict[str, int]:
        """Plain."""
        return {"a": 1}

    assert output_schema_of(plain) is None
    explicit = {"type": "object", "properties": {"n": {"type": "integer"}}}
    assert tool_meta(llm_tool(output_schema=explicit)(report)).output_schema == explicit  # type: ignore[union-attr]


def test_structured_parameters_and_field_descriptions_are_inferred_with_defs_at_the_root() -> None:
    def place(
        where: Point, report: Report, city: Annotated[str, Field(description="City name")]
    ) -> None:
        """Place."""

    schema = schema_of(place)
    assert schema["properties"]["where"]["properties"]["x"] == {"type": "number"}
    assert schema["properties"]["report"]["properties"]["wind"] == {"$ref": "#/$defs/Wind"}
    assert "Wind" in schema["$defs"]  # hoisted, so the $ref resolves from the root
    assert schema["properties"]["city"] == {"type": "string", "description": "City name"}
    spec = ToolSpec.from_definition(
        tools_pb2.ToolDefinition(
            name="p", callback_address="127.0.0.1:9", parameters=to_struct(schema)
        )
    )
    good = {"where": {"x": 1}, "report": {"city": "a", "wind": {"kph": 2}}, "city": "b"}
    assert spec.validate_arguments(good) is None
    bad = {**good, "report": {"city": "a", "wind": {"kph": "fast"}}}
    assert "arguments.report.wind.kph" in (spec.validate_arguments(bad) or "")


def test_bad_hints_metadata_and_self_containing_types_fail_at_decoration() -> None:
    def f() -> None:
        """F."""

    with pytest.raises(ValueError, match="read_only must be True, False or None"):
        llm_tool(read_only="yes")(f)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="metadata must be a dict of str to str"):
        llm_tool(metadata={"n": 1})(f)  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="read_only and destructive cannot both be true"):
        llm_tool(read_only=True, destructive=True)(f)
    with pytest.raises(ValueError, match="title is longer than 128"):
        llm_tool(title="t" * 129)(f)

    def tree() -> Node:
        """A tree."""
        return Node(1, [])

    with pytest.raises(SchemaInferenceError, match="Node contains itself; pass output_schema="):
        llm_tool(tree)
