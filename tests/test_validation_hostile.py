"""Hostile arguments and schemas against the argument check: bounded time and memory, clear errors.

Every figure asserted here has a wide margin over what the fix gives (a
bounded check takes ~0.1 s) and far below what the unbounded code took
(seconds to minutes, hundreds of MB); docs/reliability.md has the numbers.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from plugin_stub.schema_inference import infer_parameters
from tests.support.fake_providers import FakeOpenAI, Reply
from tests.support.fuzz import FUZZ, schemas
from tests.support.lag import loop_lag
from tests.support.llm_env import fake_openai, llm_env, tool_plugin
from tests.support.registry import running_plugin, running_registry, tool
from toolcall import patterns, tools
from toolcall import schemas as schema_module
from toolcall.errors import bad_request_violations
from toolcall.jsonvalue import to_struct
from toolcall.schemas import (
    MAX_CACHED_VALIDATORS,
    compile_validator,
    parameters_schema_error,
)
from toolcall.tools import DefinitionError, ToolSpec, parse_arguments
from toolcall.v1 import llm_pb2, registry_pb2, tools_pb2

__all__ = ["fake_openai", "tool_plugin"]


# What the SDK infers for a ``set[str]`` parameter: an array with uniqueItems.
def _tagged(tags: set[str]) -> None: ...


SET_SCHEMA = infer_parameters(_tagged)

# Checks that took seconds before are answered well within this.
BOUNDED_S = 1.0


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def timed(validate: Any, arguments: Any) -> tuple[str | None, float]:
    started = time.perf_counter()
    reason = validate(arguments)
    return reason, time.perf_counter() - started


# -- 1. super-linear validation ------------------------------------------------


@pytest.mark.anyio
async def test_an_invoke_with_unsortable_set_items_does_not_stall_the_registry(
    tmp_path: Path,
) -> None:
    # ~50 KB of one-key objects where strings are expected: jsonschema compared
    # every pair for uniqueItems (17 s before; every plugin's lease expired).
    raw = json.dumps({"tags": [{"a": i} for i in range(4000)]})
    async with running_plugin() as (plugin, address), running_registry(tmp_path) as reg:
        await reg.register(tool("tagged", address, parameters=SET_SCHEMA))
        async with loop_lag() as lag:
            reply = await reg.stub.Invoke(
                registry_pb2.InvokeRequest(name="tagged", raw_arguments=raw), timeout=30
            )
        assert reply.result.is_error
        assert reply.result.error.startswith("INVALID_ARGUMENT: arguments")
        assert len(reply.result.error) < 1000
        assert not plugin.calls
        assert lag.worst_s < BOUNDED_S, lag.worst_s


BRANCHES = 100
SUPER_LINEAR: dict[str, tuple[dict[str, Any], Any]] = {
    # anyOf over $refs (no fast path): 10.9 s before (items matching no branch).
    "anyOf over $refs": (
        {
            "type": "object",
            "properties": {
                "a": {
                    "type": "array",
                    "items": {"anyOf": [{"$ref": f"#/$defs/b{i}"} for i in range(BRANCHES)]},
                }
            },
            "$defs": {f"b{i}": {"type": "object", "required": [f"k{i}"]} for i in range(BRANCHES)},
        },
        # Each item matches only the last branch: 300,000 subschema checks.
        {"a": [{f"k{BRANCHES - 1}": 1} for _ in range(3000)]},
    ),
    # plain re, no time limit, once per key: 1.2 s before for 10 keys.
    "additionalProperties beside patternProperties": (
        {"type": "object", "patternProperties": {"^(a|aa)+$": {}}, "additionalProperties": False},
        {"a" * 26 + "!" + str(i): 1 for i in range(10)},
    ),
    # list lookups per index: 5.1 s before.
    "unevaluatedItems": (
        {
            "type": "object",
            "properties": {
                "a": {
                    "type": "array",
                    "prefixItems": [{"type": "integer"}],
                    "contains": {"type": "integer"},
                    "unevaluatedItems": False,
                }
            },
        },
        {"a": [1] * 20000 + ["x"]},
    ),
    "uniqueItems over objects": (SET_SCHEMA, {"tags": [{"a": i} for i in range(4000)]}),
    # jsonschema-rs compares every item with every enum entry once one is an
    # object: 10.7 s before (valid, so nothing else ran).
    "an enum of objects (jsonschema-rs)": (
        {
            "type": "object",
            "properties": {
                "t": {"type": "array", "items": {"enum": [{"k": i} for i in range(2000)]}}
            },
        },
        {"t": [{"k": 1999}] * 100_000},
    ),
    # 2.6 s in jsonschema-rs before.
    "anyOf of consts (jsonschema-rs)": (
        {
            "type": "object",
            "properties": {
                "t": {"type": "array", "items": {"anyOf": [{"const": i} for i in range(500)]}}
            },
        },
        {"t": [499] * 300_000},
    ),
    "uniqueItems over lists with a $ref": (
        {
            "type": "object",
            "properties": {"tags": {"$ref": "#/$defs/t"}},
            "$defs": {"t": {"type": "array", "uniqueItems": True}},
        },
        {"tags": [[i, {"b": [i]}] for i in range(5000)] + [[0, {"b": [0]}]]},
    ),
}


@pytest.mark.parametrize("case", SUPER_LINEAR)
def test_super_linear_keywords_are_answered_within_the_budget(case: str) -> None:
    schema, arguments = SUPER_LINEAR[case]
    assert parameters_schema_error(schema) is None
    reason, elapsed = timed(compile_validator(schema), arguments)
    assert reason is not None and reason.startswith("arguments"), case
    assert len(reason) < 1000
    assert elapsed < BOUNDED_S, (case, elapsed)


def exponential_refs(levels: int) -> dict[str, Any]:
    """Each level an anyOf of two $refs to the next: 2**levels paths, none valid for {}."""
    defs: dict[str, Any] = {
        f"d{i}": {"anyOf": [{"$ref": f"#/$defs/d{i + 1}"}, {"$ref": f"#/$defs/d{i + 1}"}]}
        for i in range(levels)
    }
    defs[f"d{levels}"] = {"type": "string"}
    return {"type": "object", "$defs": defs, "allOf": [{"$ref": "#/$defs/d0"}]}


def test_a_schema_whose_refs_branch_exponentially_is_refused_at_register() -> None:
    # 16 levels: 8.4 s to register before (and 28 s per call); 22 levels ran
    # out of memory. Register evaluates {} under the call's budget now.
    started = time.perf_counter()
    with pytest.raises(DefinitionError, match="took longer than 100 ms"):
        ToolSpec.from_definition(tool("t", parameters=exponential_refs(16)))
    assert time.perf_counter() - started < BOUNDED_S
    started = time.perf_counter()
    assert "took longer" in (parameters_schema_error(exponential_refs(40)) or "")
    assert time.perf_counter() - started < BOUNDED_S


def test_a_schema_with_an_unsortable_type_list_is_checked_within_the_budget() -> None:
    # The meta-schema's uniqueItems on "type": 5.7 s for 25 KB before, 33 s for 64 KB.
    for n in (2000, 5000):
        schema = {"type": "object", "properties": {"a": {"type": [{"a": i} for i in range(n)]}}}
        started = time.perf_counter()
        assert "is not a valid JSON Schema" in (parameters_schema_error(schema) or "")
        assert time.perf_counter() - started < BOUNDED_S


def test_a_subschemas_dollar_schema_does_not_switch_to_an_unbounded_validator() -> None:
    # jsonschema picks a validator class by a subschema's "$schema": the stock
    # Draft 7 one compared 3,000 objects pairwise for 12.6 s. The $ref turns
    # the fast path off, so the Python validator has to say yes.
    schema = {
        "type": "object",
        "properties": {
            "tags": {
                "$schema": "http://json-schema.org/draft-07/schema#",
                "type": "array",
                "uniqueItems": True,
            },
            "other": {"$ref": "#/$defs/s"},
        },
        "$defs": {"s": {"type": "string"}},
    }
    assert parameters_schema_error(schema) is None
    arguments = {"tags": [{"a": i} for i in range(3000)]}
    reason, elapsed = timed(compile_validator(schema), arguments)
    assert reason is None or "took longer than 100 ms" in reason
    assert elapsed < BOUNDED_S


def test_big_valid_schemas_of_any_declared_draft_are_still_accepted() -> None:
    for declared in ({}, {"$schema": "http://json-schema.org/draft-07/schema#"}):
        schema = {
            **declared,
            "type": "object",
            "properties": {f"p_{k}": {"type": "string"} for k in range(2000)},
        }
        started = time.perf_counter()
        assert parameters_schema_error(schema) is None
        assert time.perf_counter() - started < BOUNDED_S


def test_big_valid_arguments_still_pass_through_the_fast_path() -> None:
    rows = {
        "type": "object",
        "properties": {
            "rows": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {f"c{j}": {"type": "integer"} for j in range(20)},
                },
            }
        },
    }
    for schema, arguments in (
        (SET_SCHEMA, {"tags": [f"t{i}" for i in range(300_000)]}),
        (rows, {"rows": [{f"c{j}": j for j in range(20)} for _ in range(20_000)]}),
    ):
        reason, elapsed = timed(compile_validator(schema), arguments)
        assert reason is None
        assert elapsed < BOUNDED_S


def test_linear_unique_items_keep_jsonschemas_equality() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"$ref": "#/$defs/u"}},
        "$defs": {"u": {"type": "array", "uniqueItems": True}},
    }
    validate = compile_validator(schema)
    assert validate({"a": [1, True, "1", None, [1], {"x": 1}, {"x": True}, 0, False]}) is None
    assert validate({"a": [1, 1.0]}) is not None
    assert validate({"a": [{"x": [1, {"y": 2}]}, {"x": [1, {"y": 2}]}]}) is not None
    assert validate({"a": [{"x": 1, "y": 2}, {"y": 2, "x": 1}]}) is not None


def test_a_budget_error_names_the_budget() -> None:
    schema, arguments = SUPER_LINEAR["anyOf over $refs"]
    reason = compile_validator(schema)(arguments)
    assert reason is not None and "took longer than 100 ms" in reason


# -- 2. pattern compilation ----------------------------------------------------


@pytest.mark.parametrize(
    "pattern",
    ["(a{1000}){1000}", "((a{100}){100}){100}", "(?:x{60000})", "(ab|c{200}){100}", "x{10001}"],
)
def test_patterns_that_unroll_too_big_are_refused_with_their_path(pattern: str) -> None:
    schema = {"type": "object", "properties": {"x": {"type": "string", "pattern": pattern}}}
    definition = tool("t", parameters=schema)
    with pytest.raises(DefinitionError) as info:
        ToolSpec.from_definition(definition)
    assert info.value.violations[0][0] == "tool.parameters"
    assert "properties/x/pattern" in str(info.value)
    assert "units" in str(info.value)
    keys = {"type": "object", "patternProperties": {pattern: {}}}
    assert "patternProperties" in (parameters_schema_error(keys) or "")


def test_the_largest_accepted_patterns_compile_quickly_and_small() -> None:
    units = patterns.MAX_PATTERN_UNITS
    schema = {
        "type": "object",
        "properties": {
            "a": {"type": "string", "pattern": f"^(?:x{{{units // 10 - 1}}}){{10}}$"},
            "b": {"type": "string", "pattern": f"^(ab|cd){{{units // 4 - 1}}}$"},
        },
    }
    before, started = rss_bytes(), time.perf_counter()
    spec = ToolSpec.from_definition(tool("t", parameters=schema))  # jsonschema-rs compiles too
    a, b = "x" * (units - 10), "ab" * (units // 4 - 1)
    assert spec.validate_arguments({"a": a, "b": b}) is None
    assert spec.validate_arguments({"a": "x"}) is not None
    assert time.perf_counter() - started < BOUNDED_S
    assert rss_bytes() - before < 64 * 1024 * 1024


def test_patterns_together_over_the_schema_limit_are_refused() -> None:
    half = f"x{{{patterns.MAX_PATTERN_UNITS}}}"
    schema = {
        "type": "object",
        "properties": {f"p{i}": {"type": "string", "pattern": half} for i in range(3)},
    }
    assert "too large together" in (parameters_schema_error(schema) or "")


def test_ordinary_patterns_are_still_accepted() -> None:
    for pattern in (r"^\d{4}-\d{2}-\d{2}$", r"^.{0,4096}$", r"^[A-Z]{2}\d{2}[A-Z0-9]{1,30}$", "a*"):
        schema = {"type": "object", "properties": {"x": {"type": "string", "pattern": pattern}}}
        assert parameters_schema_error(schema) is None, pattern
    # A "pattern" that is data (a const) or a property name is not a regular expression.
    data = {"type": "object", "properties": {"pattern": {"const": {"pattern": "(a{1000}){1000}"}}}}
    assert parameters_schema_error(data) is None


@pytest.mark.anyio
async def test_a_dangerous_pattern_is_refused_at_register_and_costs_no_memory(
    tmp_path: Path,
) -> None:
    # Before: accepted, and its first use took the service up by ~250 MB (regex
    # unrolls the repetition), kept in regex's cache after the tool was removed.
    schema = {
        "type": "object",
        "properties": {"x": {"type": "string", "pattern": "(a{1000}){1000}"}},
    }
    before = rss_bytes()
    refused: grpc.aio.AioRpcError | None = None
    async with running_plugin() as (_, address), running_registry(tmp_path) as reg:
        try:
            await reg.register(tool("t", address, parameters=schema))
        except grpc.aio.AioRpcError as exc:
            refused = exc
        else:  # the pattern's first use compiles it
            await reg.stub.Invoke(
                registry_pb2.InvokeRequest(name="t", raw_arguments='{"x": "aaa"}'), timeout=30
            )
    assert rss_bytes() - before < 100 * 1024 * 1024
    assert refused is not None and refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    [(field, reason)] = bad_request_violations(refused)
    assert field == "tool.parameters" and "properties/x/pattern" in reason


def test_compiled_patterns_are_cached_within_their_bounds() -> None:
    cache = patterns._PATTERNS
    for i in range(cache.max_entries + 50):
        patterns.search(f"^p{i}x{{500}}$", "p1")
    assert len(cache) <= cache.max_entries
    assert cache.bytes <= cache.max_bytes


# -- 3. caches bounded in entries and bytes -----------------------------------


def test_compiled_validators_of_removed_tools_stay_within_the_bound() -> None:
    # 300 distinct ~70 KB schemas: functools.lru_cache(4096) kept all of them
    # (~1.6 MB of RSS each, ~480 MB); the bounded cache keeps 64 MiB by estimate.
    cache = schema_module._VALIDATORS
    before = rss_bytes()
    for i in range(300):
        schema = {
            "type": "object",
            "properties": {
                f"p{i}_{k}": {"type": "string", "description": "d" * 40, "minLength": 1}
                for k in range(700)
            },
        }
        compile_validator(schema)({})
    assert len(cache) <= MAX_CACHED_VALIDATORS
    assert cache.bytes <= cache.max_bytes
    assert rss_bytes() - before < 250 * 1024 * 1024


def test_schema_verdicts_are_cached_within_their_bounds() -> None:
    cache = schema_module._VERDICTS
    for i in range(cache.max_entries + 10):
        parameters_schema_error({"type": "object", "properties": {f"q{i}": {"type": "string"}}})
    assert len(cache) <= cache.max_entries
    assert cache.bytes <= cache.max_bytes


# -- 4. odd inputs are error results, never UNKNOWN ---------------------------

ODD_RAW_ARGUMENTS = {
    "an integer of 5000 digits": '{"x": ' + "9" * 5000 + "}",
    "an integer past 2**53": '{"x": 9007199254740993}',
    "nesting 5000 deep": '{"x": ' + "[" * 5000 + "]" * 5000 + "}",
    "nesting 900 deep": '{"x": ' + "[" * 900 + "]" * 900 + "}",
    "nesting 40 deep": '{"x": ' + "[" * 40 + "]" * 40 + "}",
    "NaN": '{"x": NaN}',
    "Infinity": '{"x": -Infinity}',
    "a float that overflows": '{"x": 1e400}',
    "a lone surrogate": '{"x": "\\ud800"}',
    "a lone surrogate in a key": '{"\\udfff": 1}',
    "a list": "[1, 2]",
    "a string": '"x"',
}
OPEN_SCHEMA: dict[str, Any] = {"type": "object"}


@pytest.mark.anyio
async def test_odd_raw_arguments_are_error_results_through_invoke(tmp_path: Path) -> None:
    async with running_plugin() as (plugin, address), running_registry(tmp_path) as reg:
        await reg.register(tool("open", address, parameters=OPEN_SCHEMA))
        await reg.register(tool("none", address))
        for label, raw in ODD_RAW_ARGUMENTS.items():
            for name in ("open", "none"):
                reply = await reg.stub.Invoke(
                    registry_pb2.InvokeRequest(name=name, raw_arguments=raw), timeout=5
                )
                assert reply.result.is_error, (label, name)
                assert reply.result.error.startswith("INVALID_ARGUMENT: "), (label, name)
        # Struct arguments carry NaN and infinities too.
        for value in (float("nan"), float("inf")):
            reply = await reg.stub.Invoke(
                registry_pb2.InvokeRequest(name="open", arguments=to_struct({"x": value})),
                timeout=5,
            )
            assert reply.result.error.startswith("INVALID_ARGUMENT: arguments: hold"), value
        assert not plugin.calls


@pytest.mark.anyio
async def test_odd_model_arguments_are_error_results_in_a_chat(
    tmp_path: Path, tool_plugin: str, fake_openai: FakeOpenAI
) -> None:
    async with llm_env(tmp_path, tool_plugin, openai=fake_openai, default_provider="openai") as env:
        await env.register("echo_open", parameters=OPEN_SCHEMA)
        await env.register("sleep_bg", mode=tools_pb2.TOOL_MODE_ASYNC)
        await env.register("echo_set", parameters=SET_SCHEMA)
        calls = [
            (f"c{i}_{name}", name, raw)
            for i, raw in enumerate(ODD_RAW_ARGUMENTS.values())
            for name in ("echo_open", "sleep_bg")
        ]
        unsortable = json.dumps({"tags": [{"a": i} for i in range(4000)]})
        calls.append(("c_set", "echo_set", unsortable))
        fake_openai.add(Reply(tool_calls=calls), Reply(text="done"))
        async with loop_lag() as lag:
            reply = await env.chat("odd", "call them")
        assert reply.message.content == "done"
        assert len(reply.tool_calls) == len(calls)
        for record in reply.tool_calls:
            assert record.result.is_error, record.call_id
            assert record.result.error.startswith("INVALID_ARGUMENT: "), record.result.error
            assert not record.task_id  # no async task was started
        assert lag.worst_s < BOUNDED_S, lag.worst_s


@pytest.mark.anyio
async def test_an_async_call_is_checked_once_in_the_llm_service(
    tmp_path: Path, tool_plugin: str, fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Before: parsed and validated when the call came in, and again when the
    # task ran (then a third time in the plugin, another process).
    checks: list[Any] = []
    real = tools.compile_validator

    def counting(schema: dict[str, Any]) -> Any:
        validate = real(schema)

        def count(arguments: Any) -> str | None:
            checks.append(arguments)
            return validate(arguments)

        return count

    monkeypatch.setattr(tools, "compile_validator", counting)
    async with llm_env(tmp_path, tool_plugin, openai=fake_openai, default_provider="openai") as env:
        seconds = {"type": "object", "properties": {"seconds": {"type": "number"}}}
        await env.register("sleep_bg", mode=tools_pb2.TOOL_MODE_ASYNC, parameters=seconds)
        fake_openai.add(
            Reply(tool_calls=[("c1", "sleep_bg", '{"seconds": 0.05}')]), Reply(text="ok")
        )
        subscription = env.stub.Subscribe(llm_pb2.SubscribeRequest(session_id="once"))
        reply = await env.chat("once", "go")
        [record] = reply.tool_calls
        assert record.task_id and not record.result.is_error
        done = await asyncio.wait_for(subscription.read(), 10)
        assert done.task.status == llm_pb2.TASK_STATUS_SUCCEEDED, done
        subscription.cancel()
    assert checks == [{"seconds": 0.05}]


def test_parse_arguments_refuses_non_json_with_a_reason() -> None:
    for label in ("an integer of 5000 digits", "nesting 5000 deep", "NaN", "Infinity"):
        with pytest.raises(ValueError, match="not valid JSON"):
            parse_arguments(ODD_RAW_ARGUMENTS[label])


def test_arguments_at_the_depth_limit_still_pass() -> None:
    validate = compile_validator(OPEN_SCHEMA)
    assert validate(parse_arguments('{"x": ' + "[" * 30 + "]" * 30 + "}")) is None
    assert validate({"x": 2**53, "y": -(2**53), "z": 1.5e300, "w": "é\U0001f600"}) is None


hostile_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(alphabet=st.characters(codec=None), max_size=30),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=40,
)


EVIL = ["^(a|aa)+$", "^(a+)+$", "(x+x+)+y", "^(\\w+\\s?)*$"]
STRING = "a" * 28 + "!"
leaf_schemas = st.sampled_from(
    [
        {"type": "string"},
        {"type": "integer", "multipleOf": 3},
        {"uniqueItems": True},
        {"enum": [{"k": i} for i in range(500)] + [STRING]},
        {"const": {"a": [1] * 50}},
        {"unevaluatedProperties": False},
        {"unevaluatedItems": False},
        {"$ref": "#/$defs/d"},
        {"contains": {"type": "string"}, "minContains": 2},
        {"propertyNames": {"pattern": "^a+$"}},
    ]
    + [{"pattern": p} for p in EVIL]
    + [{"patternProperties": {p: {"type": "integer"}}, "additionalProperties": False} for p in EVIL]
)
nested_schemas = st.recursive(
    leaf_schemas,
    lambda inner: st.one_of(
        st.lists(inner, min_size=1, max_size=6).map(lambda s: {"anyOf": s}),
        st.lists(inner, min_size=1, max_size=6).map(lambda s: {"oneOf": s}),
        st.lists(inner, min_size=1, max_size=6).map(lambda s: {"allOf": s}),
        inner.map(lambda s: {"items": s}),
        inner.map(lambda s: {"additionalProperties": s}),
        inner.map(lambda s: {"not": s}),
        st.tuples(inner, inner, inner).map(lambda t: {"if": t[0], "then": t[1], "else": t[2]}),
        st.tuples(inner, inner).map(lambda t: {"properties": {"a": t[0], STRING: t[1]}}),
    ),
    max_leaves=16,
)
adversarial_schemas = st.tuples(nested_schemas, nested_schemas).map(
    lambda t: {"type": "object", "additionalProperties": t[0], "$defs": {"d": t[1]}}
)
adversarial_values = st.one_of(
    hostile_values,
    st.just(STRING),
    st.integers(0, 3000).map(lambda n: [{"k": i} for i in range(n)]),
    st.integers(0, 3000).map(lambda n: [[i, STRING] for i in range(n)]),
    st.integers(0, 300).map(lambda n: {STRING + str(i): [STRING] for i in range(n)}),
    st.integers(1, 30).map(lambda n: json.loads("[" * n + "]" * n)),
)


@FUZZ
@given(
    schema=schemas() | adversarial_schemas,
    arguments=st.dictionaries(
        st.sampled_from(["a", STRING]) | st.text(max_size=8), adversarial_values
    ),
)
def test_any_schema_and_arguments_get_a_verdict_in_bounded_time(
    schema: dict[str, Any], arguments: dict[str, Any]
) -> None:
    if not isinstance(schema, dict) or parameters_schema_error(schema) is not None:
        return
    reason, elapsed = timed(compile_validator(schema), arguments)
    assert reason is None or (isinstance(reason, str) and len(reason) < 1000)
    assert elapsed < BOUNDED_S


@FUZZ
@given(schema=schemas() | adversarial_schemas)
def test_the_fast_meta_schema_check_only_says_yes_where_jsonschema_does(schema: Any) -> None:
    if not isinstance(schema, dict) or not schema_module._meta_schema_says_yes(schema):
        return
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError:
        # Only the "regex" format, which the pattern check refuses in its turn.
        assert schema_module._patterns_error(schema) is not None, schema


@FUZZ
@given(raw=st.text(max_size=200) | st.builds(json.dumps, hostile_values))
def test_any_raw_string_is_parsed_or_refused_with_a_reason(raw: str) -> None:
    spec = ToolSpec.from_definition(tool("t", parameters=OPEN_SCHEMA))
    arguments, refused = spec.check_arguments(raw)
    assert (arguments is None) == (refused is not None)
    if refused is not None:
        assert refused.startswith("INVALID_ARGUMENT: ")
    else:
        to_struct(arguments)  # what the plugin gets can be built


@pytest.mark.anyio
async def test_a_schema_near_the_message_limit_is_refused_by_its_encoded_size_without_stalling(
    tmp_path: Path,
) -> None:
    # 3.7 MB of property keys, under the 4 MiB message limit: the registry
    # turned it into a dict and JSON (1.25 s of event loop, RSS +95 MB kept)
    # before finding it was over the 64 KiB schema limit.
    params = {"type": "object", "properties": {f"p{i}": {} for i in range(250_000)}}
    definition = tool("wide_schema", parameters=params)
    async with running_registry(tmp_path) as reg:
        async with loop_lag() as lag:
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await reg.register(definition)
        assert lag.worst_s < BOUNDED_S / 2, lag.worst_s
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "bytes encoded" in (err.value.details() or "")
