"""Argument validation against tool schemas: patterns run under a time limit."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support.fuzz import FUZZ
from toolcall.jsonvalue import shape_error
from toolcall.schemas import (
    MAX_ARGUMENT_DEPTH,
    PATTERN_TIMEOUT_S,
    _compiled,
    _fast_check,
    compile_validator,
    parameters_schema_error,
)

# Backtracks exponentially in Python's re on "aaa...a!" (seconds at ~30 chars).
EVIL = "^(a|aa)+$"


def test_catastrophic_pattern_is_refused_within_the_time_limit() -> None:
    validate = compile_validator(
        {"type": "object", "properties": {"x": {"type": "string", "pattern": EVIL}}}
    )
    started = time.perf_counter()
    reason = validate({"x": "a" * 40 + "!"})
    elapsed = time.perf_counter() - started
    assert reason is not None and reason.startswith("arguments.x: matching pattern")
    assert "took longer than" in reason
    # Bounded: a few pattern timeouts (is_valid, then best_match), not seconds.
    assert elapsed < 20 * PATTERN_TIMEOUT_S


def test_catastrophic_pattern_property_is_answered_in_bounded_time() -> None:
    schema = {"type": "object", "patternProperties": {EVIL: {"type": "integer"}}}
    validate = compile_validator(schema)
    # jsonschema-rs matches the pattern in linear time: the key does not match,
    # so the object is valid, at once.
    started = time.perf_counter()
    assert validate({"a" * 40 + "!": 1}) is None
    assert time.perf_counter() - started < PATTERN_TIMEOUT_S
    # A key that matches still gets its value checked.
    assert validate({"aaaa": "x"}) == "arguments.aaaa: 'x' is not of type 'integer'"
    # Python's backtracking engine alone gives up at the time limit and refuses.
    python_validator, _ = _compiled(json.dumps(schema, sort_keys=True))
    errors = list(python_validator.iter_errors({"a" * 40 + "!": 1}))
    assert any("took longer than" in e.message for e in errors)


def test_patterns_still_match_and_fail_normally() -> None:
    validate = compile_validator(
        {
            "type": "object",
            "properties": {"code": {"type": "string", "pattern": "^[A-Z]{3}$"}},
            "patternProperties": {"^n_": {"type": "integer"}},
        }
    )
    assert validate({"code": "ABC", "n_count": 3}) is None
    assert validate({"code": "abcd"}) == "arguments.code: 'abcd' does not match '^[A-Z]{3}$'"
    assert validate({"n_count": "x"}) == "arguments.n_count: 'x' is not of type 'integer'"


# -- the jsonschema-rs fast path may only ever say yes where jsonschema says yes --

DIFFERENTIAL_SCHEMAS: list[dict[str, Any]] = [
    {
        "type": "object",
        "properties": {
            "city": {"type": "string", "minLength": 2, "maxLength": 8},
            "days": {"type": "integer", "minimum": 1, "maximum": 7},
            "unit": {"enum": ["c", "f"]},
        },
        "required": ["city"],
        "additionalProperties": False,
    },
    {
        "type": "object",
        "properties": {
            "code": {"type": "string", "pattern": "^[A-Z]{3}$"},
            "word": {"type": "string", "pattern": "^\\w+$"},
            "host": {"type": "string", "pattern": "^[a-z0-9.-]+$"},
        },
        "patternProperties": {"^n_": {"type": "number", "multipleOf": 5}},
    },
    {
        "type": "object",
        "properties": {
            "items": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
                    "required": ["x", "y"],
                },
                "minItems": 1,
                "uniqueItems": True,
            },
            "ratio": {"type": "number", "exclusiveMinimum": 0, "multipleOf": 2.0},
        },
    },
    {
        "type": "object",
        "properties": {
            "when": {"type": "string", "format": "date-time"},
            "choice": {"oneOf": [{"type": "string"}, {"type": "integer", "minimum": 0}]},
            "flag": {"const": True},
            "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
        },
        "additionalProperties": {"type": "boolean"},
    },
]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([0.3, 0.29, 0.1, 1.0, 2.0, 0.07, -0.0])
    | st.text(max_size=12)
    | st.sampled_from(["ABC", "abc", "ab\n", "ABC\n", "héllo", "a b", "2026-11-30T00:00:00Z"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=12,
)
argument_objects = st.dictionaries(
    st.sampled_from(["city", "days", "unit", "code", "word", "host", "n_a", "items", "ratio"])
    | st.sampled_from(["when", "choice", "flag", "tags", "x", "y"])
    | st.text(max_size=5),
    json_values | st.fixed_dictionaries({"x": st.integers(), "y": st.integers()}),
    max_size=5,
)
# Objects close to the schemas above, so that many are valid and the fast path says yes often.
near_values = (
    json_values
    | st.integers(min_value=-1, max_value=9)
    | st.sampled_from([1.0, 2.5, 4.0, 10, 15.0, True, False, "c", "f", "Beijing", "AB", "2026"])
    | st.lists(st.fixed_dictionaries({"x": st.integers(), "y": st.integers()}), max_size=3)
    | st.lists(st.text(max_size=3), max_size=4)
)
NEAR_KEYS = ["days", "unit", "code", "word", "n_a", "items", "ratio", "choice", "flag", "tags"]
near_objects = st.fixed_dictionaries(
    {}, optional={"city": st.text(max_size=9), **dict.fromkeys(NEAR_KEYS, near_values)}
)


@pytest.mark.parametrize("schema", DIFFERENTIAL_SCHEMAS, ids=range(len(DIFFERENTIAL_SCHEMAS)))
@FUZZ
@given(arguments=argument_objects | near_objects)
def test_fast_path_accepts_only_what_jsonschema_accepts(
    schema: dict[str, Any], arguments: dict[str, Any]
) -> None:
    python_validator, fast = _compiled(json.dumps(schema, sort_keys=True))
    assert fast is not None, "jsonschema-rs should take this schema"
    try:
        fast_says_valid = fast(arguments)
    except Exception:
        fast_says_valid = False  # compile_validator then asks jsonschema
    if fast_says_valid:
        assert python_validator.is_valid(arguments), arguments
    # And the verdict seen by callers is jsonschema's, whatever the fast path said,
    # for every value JSON and protobuf can carry (NaN, ±inf, integers past 2**53 never pass).
    carried = shape_error(arguments, MAX_ARGUMENT_DEPTH) is None
    expected = carried and python_validator.is_valid(arguments)
    assert (compile_validator(schema)(arguments) is None) == expected


def test_fractional_multiple_of_keeps_jsonschemas_float_verdict() -> None:
    # jsonschema-rs would accept 0.07 as a multiple of 0.01 (exact arithmetic);
    # jsonschema refuses it (floats), and jsonschema's verdict is the one kept.
    schema = {"type": "object", "properties": {"r": {"type": "number", "multipleOf": 0.01}}}
    assert _fast_check(schema) is None
    assert compile_validator(schema)({"r": 0.07}) == "arguments.r: 0.07 is not a multiple of 0.01"
    assert compile_validator(schema)({"r": 0.5}) is None


def test_schema_the_fast_path_cannot_take_still_validates() -> None:
    # A lookbehind of variable length: beyond jsonschema-rs's regex engines.
    schema = {"type": "object", "properties": {"x": {"type": "string", "pattern": "(?<=a+)b"}}}
    _, fast = _compiled(json.dumps(schema, sort_keys=True))
    validate = compile_validator(schema)
    assert validate({"x": "aab"}) is None
    assert validate({"x": "b"}) == "arguments.x: 'b' does not match '(?<=a+)b'"
    assert fast is None or not fast({"x": "b"})


def test_schemas_with_references_are_left_to_jsonschema() -> None:
    # jsonschema-rs accepts through a $ref loop that jsonschema cannot evaluate.
    looping = {
        "type": "object",
        "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}},
        "properties": {"x": {"$ref": "#/$defs/a"}},
    }
    assert _fast_check(looping) is None
    # Refused at Register by a walk, the same answer on a fast or slow machine.
    refused = parameters_schema_error(looping)
    assert refused is not None and "loop without end" in refused, refused
    # A validator built without that check still refuses (by recursion or budget).
    reason = compile_validator(looping)({"x": 2})
    assert reason is not None and ("cannot be evaluated" in reason or "longer than" in reason)
    remote = {"type": "object", "properties": {"x": {"$ref": "http://127.0.0.1:9/s"}}}
    assert _fast_check(remote) is None


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "$ref": "#"},
        {"type": "object",
         "properties": {"x": {"anyOf": [{"type": "string"}, {"$ref": "#/properties/x"}]}}},
        {"$defs": {"a": {"allOf": [{"$ref": "#/$defs/b"}]}, "b": {"not": {"$ref": "#/$defs/a"}}},
         "type": "object", "properties": {"y": {"$ref": "#/$defs/a"}}},
    ],
)  # fmt: skip
def test_reference_loops_in_place_are_refused_at_register(schema: dict[str, Any]) -> None:
    reason = parameters_schema_error(schema)
    assert reason is not None and ("loop without end" in reason), reason


@pytest.mark.parametrize(
    "schema",
    [
        # Recursion through properties/items ends with the value: a tree type.
        {"$defs": {"node": {"type": "object", "properties": {
            "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}}}},
         "type": "object", "properties": {"root": {"$ref": "#/$defs/node"}}},
        {"type": "object", "properties": {"next": {"$ref": "#"}}},
        # Two refs to one target are not a loop.
        {"$defs": {"s": {"type": "string"}}, "type": "object",
         "properties": {"a": {"$ref": "#/$defs/s"}, "b": {"allOf": [{"$ref": "#/$defs/s"}]}}},
    ],
)  # fmt: skip
def test_recursive_schemas_that_consume_the_value_are_accepted(schema: dict[str, Any]) -> None:
    assert parameters_schema_error(schema) is None
    validate = compile_validator(schema)
    assert validate({}) is None
