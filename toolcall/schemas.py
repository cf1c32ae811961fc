"""JSON Schema checks for tool parameters, and compiled argument validators.

A tool's schema is checked once, when it is registered; the compiled
validator is cached by the schema's canonical JSON, so a call only pays for
validating its arguments, never for compiling the schema.

Schemas must be self-contained: a ``$ref`` may only point inside the schema
("#..."). jsonschema would otherwise fetch remote references over HTTP while
validating arguments - a request to any URL a registrant chose, made by the
registry or LLMService (SSRF) - so validators are built with an empty
reference registry that never retrieves anything.

Patterns (``pattern``, ``patternProperties``) are matched with the ``regex``
module under a time limit: the strings they run on come from the model, and
a backtracking pattern such as ``^(a|aa)+$`` would otherwise let a 30-character
argument block the service's event loop for seconds.

Arguments are validated on both sides of every call (by the caller, and by
an SDK plugin again), so validation is on the hot path. jsonschema-rs (Rust)
answers "are these arguments valid?" about 75 times faster than the Python
validator (0.1 vs 8.6 µs for a one-property schema). It is only ever trusted
to say yes: when it says no, or cannot take the schema or the value, the
Python validator above decides and words the reason. Schemas the two judge
differently (``_fast_path_may_disagree``) skip it. The one verdict it changes
is for the better: a pattern that backtracks catastrophically is matched in
linear time, where the Python path would refuse the argument at its time
limit. It runs offline (a ``$ref`` is never fetched) and gives up on a
pattern past a backtracking limit (a no, so the time-limited Python path
decides).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

import jsonschema_rs
import regex
from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import SchemaError, ValidationError, best_match
from referencing import Registry
from referencing.exceptions import Unresolvable

EMPTY_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}

MAX_SCHEMA_BYTES = 64 * 1024
MAX_SCHEMA_DEPTH = 32

PATTERN_TIMEOUT_S = 0.05

# Returns None when the arguments are valid, else a readable reason.
ArgumentValidator = Callable[[dict[str, Any]], str | None]


def _depth(obj: Any, limit: int) -> int:
    depth, frontier = 0, [obj]
    while frontier and depth <= limit:
        nxt: list[Any] = []
        for o in frontier:
            if isinstance(o, dict):
                nxt.extend(o.values())
            elif isinstance(o, list):
                nxt.extend(o)
        if nxt:
            depth += 1
        frontier = nxt
    return depth


def parameters_schema_error(schema: dict[str, Any]) -> str | None:
    """Why ``schema`` is not acceptable as a tool's parameters, or None."""
    if not schema:
        return None
    try:
        text = json.dumps(schema, sort_keys=True)
    except (TypeError, ValueError) as exc:
        return f"is not JSON: {exc}"
    if len(text) > MAX_SCHEMA_BYTES:
        return f"is {len(text)} bytes; the limit is {MAX_SCHEMA_BYTES}"
    if _depth(schema, MAX_SCHEMA_DEPTH) > MAX_SCHEMA_DEPTH:
        return f"nests deeper than {MAX_SCHEMA_DEPTH} levels"
    if schema.get("type") != "object":
        return 'must be a JSON Schema with "type": "object"'
    # Checking against the meta-schema costs ~0.4 ms for a one-property schema
    # and milliseconds for bigger ones, while the same schemas come back again
    # and again (re-registration, every LLMService's Watch view): remember the
    # verdicts. The key keeps key order (it decides which error is reported);
    # values that do not survive a JSON round trip unchanged (tuples, non-str
    # keys, NaN) are checked uncached.
    key = json.dumps(schema)
    if len(key) <= MAX_CACHED_SCHEMA_BYTES and json.loads(key) == schema:
        return _cached_meta_schema_error(key)
    return _meta_schema_error(schema)


MAX_CACHED_SCHEMA_BYTES = 16 * 1024


@functools.lru_cache(maxsize=1024)
def _cached_meta_schema_error(key: str) -> str | None:
    return _meta_schema_error(json.loads(key))


def _meta_schema_error(schema: dict[str, Any]) -> str | None:
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        # Clipped: jsonschema quotes the offending value, and a status message
        # over gRPC's metadata limit would reach the caller as RESOURCE_EXHAUSTED.
        where = ("/".join(str(p) for p in exc.path) or "(root)")[:200]
        return f"is not a valid JSON Schema at {where}: {exc.message[:300]}"
    if err := _outside_reference_error(schema):
        return err
    # Catches references that loop or lead nowhere from the root (an empty
    # object walks every top-level "$ref"); deeper ones fail at call time.
    if reason := _evaluation_error(Draft202012Validator(schema, registry=_NO_RETRIEVAL), {}):
        return f"cannot be evaluated: {reason}"
    return None


def _outside_reference_error(schema: Any, path: str = "") -> str | None:
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key in ("$ref", "$dynamicRef") and isinstance(value, str):
                if not value.startswith("#"):
                    return (
                        f"{key} {value[:100]!r} at {path or '(root)'} points outside the schema; "
                        'tool schemas must be self-contained ("#/$defs/...")'
                    )
            elif err := _outside_reference_error(value, f"{path}/{key}"):
                return err
    elif isinstance(schema, list):
        for i, item in enumerate(schema):
            if err := _outside_reference_error(item, f"{path}/{i}"):
                return err
    return None


# References are resolved within the schema only; nothing is ever fetched.
_NO_RETRIEVAL: Registry[Any] = Registry()


def _evaluation_error(validator: Draft202012Validator, arguments: Any) -> str | None:
    """Why ``validator`` cannot evaluate ``arguments`` at all (not: why they are invalid)."""
    try:
        validator.is_valid(arguments)
    except Unresolvable as exc:
        return f"unresolvable $ref: {str(exc)[:200]}"
    except RecursionError:
        return "its $refs loop without end"
    return None


class PatternTimeout(ValueError):
    pass


def _search(pattern: str, text: str) -> bool:
    try:
        return regex.search(pattern, text, timeout=PATTERN_TIMEOUT_S) is not None
    except TimeoutError:
        raise PatternTimeout(
            f"matching pattern {pattern[:100]!r} took longer than "
            f"{PATTERN_TIMEOUT_S * 1000:g} ms; the argument is refused"
        ) from None


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Any:
    if validator.is_type(instance, "string"):
        try:
            if not _search(pattern, instance):
                yield ValidationError(f"{instance[:100]!r} does not match {pattern[:100]!r}")
        except PatternTimeout as exc:
            yield ValidationError(str(exc))


def _pattern_properties(
    validator: Any, patterns: dict[str, Any], instance: Any, schema: Any
) -> Any:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for key, value in instance.items():
            try:
                matched = _search(pattern, key)
            except PatternTimeout as exc:
                yield ValidationError(str(exc))
                continue
            if matched:
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


# Draft 2020-12 with time-bounded pattern matching.
ArgumentsValidator = validators.extend(
    Draft202012Validator, {"pattern": _pattern, "patternProperties": _pattern_properties}
)


# Backtracking steps jsonschema-rs may take for one pattern before it says no.
FAST_BACKTRACK_LIMIT = 100_000

FastCheck = Callable[[Any], bool]


REFERENCE_KEYWORDS = frozenset({"$ref", "$dynamicRef", "$recursiveRef"})


def _fast_path_may_disagree(schema: Any) -> bool:
    """Whether ``schema`` uses something the two validators judge differently.

    A fractional ``multipleOf``: jsonschema-rs computes it exactly (0.07 is a
    multiple of 0.01), jsonschema in floats (it is not). References:
    jsonschema-rs accepts through ``$ref``s that loop, which jsonschema
    reports as a schema that cannot be evaluated.
    """
    if isinstance(schema, dict):
        divisor = schema.get("multipleOf")
        if isinstance(divisor, float) and not divisor.is_integer():
            return True
        if not REFERENCE_KEYWORDS.isdisjoint(schema):
            return True
        return any(_fast_path_may_disagree(v) for v in schema.values())
    if isinstance(schema, list):
        return any(_fast_path_may_disagree(v) for v in schema)
    return False


def _fast_check(schema: dict[str, Any]) -> FastCheck | None:
    """jsonschema-rs's ``is_valid`` for ``schema``, or None where it cannot be trusted.

    The fast path must never accept what jsonschema refuses: schemas where the
    two may disagree (``_fast_path_may_disagree``) are left to jsonschema.
    """
    if _fast_path_may_disagree(schema):
        return None
    try:
        fast = jsonschema_rs.Draft202012Validator(
            schema,
            offline=True,
            pattern_options=jsonschema_rs.FancyRegexOptions(backtrack_limit=FAST_BACKTRACK_LIMIT),
        )
    except Exception:  # e.g. a pattern its engine does not support: Python alone decides
        return None
    return fast.is_valid


@functools.lru_cache(maxsize=4096)
def _compiled(canonical: str) -> tuple[Any, FastCheck | None]:
    schema = json.loads(canonical)
    return ArgumentsValidator(schema, registry=_NO_RETRIEVAL), _fast_check(schema)


def compile_validator(schema: dict[str, Any]) -> ArgumentValidator:
    """A validator for arguments of a tool with this (already checked) schema."""
    if not schema or schema == EMPTY_PARAMETERS:
        return _accept_object
    validator: Draft202012Validator
    validator, fast = _compiled(json.dumps(schema, sort_keys=True))

    def validate(arguments: dict[str, Any]) -> str | None:
        if fast is not None:
            try:
                if fast(arguments):
                    return None
            except Exception:  # a value it cannot convert (a huge int, NaN): Python decides
                pass
        try:
            if validator.is_valid(arguments):  # the usual case, cheaper than best_match
                return None
            error = best_match(validator.iter_errors(arguments))
        except (Unresolvable, RecursionError):
            reason = _evaluation_error(validator, arguments)
            return f"the tool's parameter schema cannot be evaluated: {reason}"
        if error is None:
            return None
        path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
        return f"arguments{path}: {error.message}"

    return validate


def _accept_object(arguments: dict[str, Any]) -> str | None:
    return None
