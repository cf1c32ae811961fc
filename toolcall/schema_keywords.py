"""JSON Schema keywords for untrusted arguments: linear, or under a time budget.

When jsonschema-rs says no, the Python jsonschema validator decides and
words the reason, on the event loop. Some of its keywords are super-linear
in the arguments: ``uniqueItems`` over items it cannot sort compares every
pair (a 25 KB list of 2,000 one-key objects took 3.6 s),
``additionalProperties`` beside ``patternProperties`` and
``unevaluatedProperties`` run plain ``re`` with no time limit, and
``unevaluated*`` look indexes up in lists. Those are replaced here by linear
versions that match patterns through ``toolcall.patterns``.

Everything else (nested ``anyOf``/``oneOf``, ``$ref`` chains, big ``enum``\\ s,
errors that quote big values) is bounded by a deadline: every keyword checks
it before it runs, so one argument check costs at most its budget plus one
keyword's work, and raises ``BudgetExceeded`` past it. The budget is the
thread's CPU time, set by ``budget``.
"""

from __future__ import annotations

import contextlib
import math
import reprlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from jsonschema._utils import find_evaluated_item_indexes_by_schema
from jsonschema.exceptions import ValidationError

from toolcall import patterns

_state = threading.local()
_monotonic = time.monotonic
_thread_time = time.thread_time

# Values quoted in error messages are clipped: a reason is for people, and
# the whole argument in it would double a big refused call's size.
_short = reprlib.Repr()
_short.maxstring = 100
_short.maxother = 100
_short.maxlist = _short.maxdict = _short.maxtuple = 10
_short.maxlevel = 3


class BudgetExceeded(Exception):
    """The argument check ran out of its time budget."""


@contextlib.contextmanager
def budget(seconds: float) -> Iterator[None]:
    """Keyword checks in this thread raise BudgetExceeded once they used ``seconds`` of CPU.

    CPU time of this thread, so that a busy machine does not refuse arguments
    a quiet one accepts. Reading it costs ~0.75 µs, the wall clock ~0.07 µs: a
    keyword reads the wall clock, and the CPU clock only once the wall
    deadline passed (which then moves on by the CPU time left).
    """
    previous = getattr(_state, "deadline", math.inf), getattr(_state, "cpu_deadline", math.inf)
    _state.deadline = _monotonic() + seconds
    _state.cpu_deadline = _thread_time() + seconds
    try:
        yield
    finally:
        _state.deadline, _state.cpu_deadline = previous


def remaining() -> float:
    """Seconds left of the current budget (inf when none is set)."""
    return getattr(_state, "deadline", math.inf) - _monotonic()


def _past_wall_deadline() -> None:
    left = getattr(_state, "cpu_deadline", math.inf) - _thread_time()
    if left <= 0:
        raise BudgetExceeded
    _state.deadline = _monotonic() + left


def check_deadline() -> None:
    if _monotonic() > getattr(_state, "deadline", math.inf):
        _past_wall_deadline()


Keyword = Callable[[Any, Any, Any, Any], Any]


def budgeted(keyword: Keyword) -> Keyword:
    def check(validator: Any, value: Any, instance: Any, schema: Any) -> Any:
        if _monotonic() > getattr(_state, "deadline", math.inf):
            _past_wall_deadline()
        return keyword(validator, value, instance, schema)

    return check


def _search(pattern: str, text: str) -> bool:
    check_deadline()
    return patterns.search(pattern, text, min(patterns.PATTERN_TIMEOUT_S, remaining()))


def pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Any:
    if validator.is_type(instance, "string"):
        try:
            if not _search(pattern, instance):
                yield ValidationError(f"{_short.repr(instance)} does not match {pattern[:100]!r}")
        except patterns.PatternTimeout as exc:
            yield ValidationError(str(exc))


def pattern_properties(validator: Any, pattern_map: dict[str, Any], instance: Any, _: Any) -> Any:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in pattern_map.items():
        for key, value in instance.items():
            try:
                matched = _search(pattern, key)
            except patterns.PatternTimeout as exc:
                yield ValidationError(str(exc))
                continue
            if matched:
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _matches_any(pattern_map: Any, key: str) -> bool:
    """Whether ``key`` matches a ``patternProperties`` key (a timeout counts as no)."""
    for pattern in pattern_map or ():
        try:
            if _search(pattern, key):
                return True
        except patterns.PatternTimeout:
            check_deadline()
    return False


def additional_properties(validator: Any, extra_schema: Any, instance: Any, schema: Any) -> Any:
    if not validator.is_type(instance, "object"):
        return
    properties = schema.get("properties", {})
    pattern_map = schema.get("patternProperties")
    extras = [
        key for key in instance if key not in properties and not _matches_any(pattern_map, key)
    ]
    if validator.is_type(extra_schema, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], extra_schema, path=extra)
    elif not extra_schema and extras:
        # jsonschema's wording, with at most ten names quoted.
        extras.sort()
        shown = ", ".join(_short.repr(e) for e in extras[:10])
        if len(extras) > 10:
            shown += f" and {len(extras) - 10} more"
        if pattern_map:
            verb = "does" if len(extras) == 1 else "do"
            regexes = ", ".join(_short.repr(p) for p in sorted(pattern_map)[:10])
            yield ValidationError(f"{shown} {verb} not match any of the regexes: {regexes}")
        else:
            verb = "was" if len(extras) == 1 else "were"
            yield ValidationError(
                f"Additional properties are not allowed ({shown} {verb} unexpected)"
            )


def _key(value: Any) -> Any:
    """A hashable stand-in, equal exactly when jsonschema's ``equal`` says equal."""
    if value is True or value is False:
        return (0, value)
    if isinstance(value, int | float):
        return (1, value)  # 1 == 1.0, as in JSON
    if isinstance(value, str):
        return (2, value)
    if value is None:
        return (3,)
    if isinstance(value, list | tuple):
        return (4, tuple(_key(v) for v in value))
    if isinstance(value, dict):
        return (5, frozenset((k, _key(v)) for k, v in value.items()))
    return (6, id(value))


def unique_items(validator: Any, unique: Any, instance: Any, schema: Any) -> Any:
    if not unique or not validator.is_type(instance, "array"):
        return
    seen: set[Any] = set()
    for i, item in enumerate(instance):
        if i % 1024 == 0:
            check_deadline()
        key = _key(item)
        if key in seen:
            yield ValidationError(f"{_short.repr(instance)} has non-unique elements")
            return
        seen.add(key)


def unevaluated_items(validator: Any, unevaluated: Any, instance: Any, schema: Any) -> Any:
    if not validator.is_type(instance, "array"):
        return
    evaluated = set(find_evaluated_item_indexes_by_schema(validator, instance, schema))
    extras = [item for index, item in enumerate(instance) if index not in evaluated]
    if extras:
        shown = ", ".join(_short.repr(e) for e in extras[:10])
        verb = "was" if len(extras) == 1 else "were"
        yield ValidationError(f"Unevaluated items are not allowed ({shown} {verb} unexpected)")


def _evaluated_keys(validator: Any, instance: Any, schema: Any) -> set[str]:
    """jsonschema's ``find_evaluated_property_keys_by_schema``, with bounded patterns and a set."""
    check_deadline()
    if validator.is_type(schema, "boolean"):
        return set()
    keys: set[str] = set()
    for ref_keyword in ("$ref", "$dynamicRef"):
        ref = schema.get(ref_keyword)
        if ref is not None:
            resolved = validator._resolver.lookup(ref)
            keys |= _evaluated_keys(
                validator.evolve(schema=resolved.contents, _resolver=resolved.resolver),
                instance,
                resolved.contents,
            )
    properties = schema.get("properties")
    if validator.is_type(properties, "object"):
        keys |= properties.keys() & instance.keys()
    for keyword in ("additionalProperties", "unevaluatedProperties"):
        if (subschema := schema.get(keyword)) is not None:
            keys |= {
                key
                for key, value in instance.items()
                if next(validator.descend(value, subschema), None) is None
            }
    if pattern_map := schema.get("patternProperties"):
        keys |= {key for key in instance if _matches_any(pattern_map, key)}
    for key, subschema in (schema.get("dependentSchemas") or {}).items():
        if key in instance:
            keys |= _evaluated_keys(validator, instance, subschema)
    for keyword in ("allOf", "oneOf", "anyOf"):
        for subschema in schema.get(keyword, []):
            if next(validator.descend(instance, subschema), None) is None:
                keys |= _evaluated_keys(validator, instance, subschema)
    if "if" in schema:
        if validator.evolve(schema=schema["if"]).is_valid(instance):
            keys |= _evaluated_keys(validator, instance, schema["if"])
            if "then" in schema:
                keys |= _evaluated_keys(validator, instance, schema["then"])
        elif "else" in schema:
            keys |= _evaluated_keys(validator, instance, schema["else"])
    return keys


def unevaluated_properties(validator: Any, unevaluated: Any, instance: Any, schema: Any) -> Any:
    if not validator.is_type(instance, "object"):
        return
    evaluated = _evaluated_keys(validator, instance, schema)
    bad = [
        key
        for key in instance
        if key not in evaluated
        and next(validator.descend(instance[key], unevaluated, path=key), None) is not None
    ]
    if bad:
        shown = ", ".join(_short.repr(k) for k in sorted(bad)[:10])
        verb = "was" if len(bad) == 1 else "were"
        if unevaluated is False:
            yield ValidationError(
                f"Unevaluated properties are not allowed ({shown} {verb} unexpected)"
            )
        else:
            yield ValidationError(
                "Unevaluated properties are not valid under the given schema "
                f"({shown} {verb} unevaluated and invalid)"
            )


BOUNDED: dict[str, Keyword] = {
    "pattern": pattern,
    "patternProperties": pattern_properties,
    "additionalProperties": additional_properties,
    "uniqueItems": unique_items,
    "unevaluatedItems": unevaluated_items,
    "unevaluatedProperties": unevaluated_properties,
}
