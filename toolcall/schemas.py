"""JSON Schema checks for tool parameters and outputs, and compiled validators.

A tool's schema is checked once, when it is registered; the compiled
validator is cached by the schema's canonical JSON, so a call only pays for
validating its arguments, never for compiling the schema.

Schemas must be self-contained: a ``$ref`` may only point inside the schema
("#..."). jsonschema would otherwise fetch remote references over HTTP while
validating arguments - a request to any URL a registrant chose, made by the
registry or LLMService (SSRF) - so validators are built with an empty
reference registry that never retrieves anything.

Patterns (``pattern``, ``patternProperties``) are bounded at Register and
matched under a time limit (``toolcall.patterns``).

Every argument check is bounded: the arguments' shape first (nesting depth,
values JSON and protobuf can carry: ``toolcall.jsonvalue.shape_error``), then
jsonschema-rs when its work, bounded from above before it runs, is under
``FAST_PATH_MAX_WORK`` (~0.1 s), then - only when it said no or did not run -
the Python validator under a CPU budget of ``VALIDATION_BUDGET_S`` (100 ms,
``toolcall.schema_keywords``). One check holds the event loop for at most
linear time in the arguments (~25 ms per MB) plus those two bounds; a check
that runs out of budget refuses the arguments with a reason that says so.

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
import itertools
import json
import urllib.parse
from collections.abc import Callable
from typing import Any

import jsonschema_rs
from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import best_match
from referencing import Registry
from referencing.exceptions import Unresolvable

from toolcall import patterns
from toolcall.boundedcache import BoundedCache
from toolcall.jsonvalue import shape_error
from toolcall.patterns import PATTERN_TIMEOUT_S
from toolcall.schema_keywords import BOUNDED, BudgetExceeded, budget, budgeted

EMPTY_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}

MAX_SCHEMA_BYTES = 64 * 1024
# The same bound on the encoded Struct, checked before it is decoded into a
# dict and JSON (which cost 2.7 s of event loop for a 3.6 MB schema). A Value
# encodes at most ~3.7 × its JSON (a one-digit number: 11 bytes for "1, "), so
# every schema within MAX_SCHEMA_BYTES of JSON passes this.
MAX_SCHEMA_WIRE_BYTES = 4 * MAX_SCHEMA_BYTES
MAX_SCHEMA_DEPTH = 32

# Arguments nest at most this deep (JSON levels): deeper ones could not reach
# a plugin anyway (protobuf refuses messages nested over 100 levels; a JSON
# level costs up to three), and recursion over them must stay far from
# Python's limit.
MAX_ARGUMENT_DEPTH = 32

# Python-validator CPU time one argument check may spend (see the docstring).
VALIDATION_BUDGET_S = 0.1

__all__ = ["PATTERN_TIMEOUT_S"]

# Returns None when the arguments are valid, else a readable reason.
ArgumentValidator = Callable[[dict[str, Any]], str | None]
# The same for any JSON value (a tool's output, checked against its output_schema).
ValueValidator = Callable[[Any], str | None]


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
    """Why ``schema`` is not acceptable as a tool's parameters (or output_schema), or None.

    A tool's output_schema follows the same rules: an object schema, as MCP's
    outputSchema must be, self-contained and bounded.
    """
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

# Verdicts kept: at most 1024, and at most 4 MiB of schema text (the key).
_VERDICTS: BoundedCache[str, str | None] = BoundedCache(
    max_entries=1024, max_bytes=4 * 1024 * 1024, size=lambda key, verdict: len(key) + 200
)


def _cached_meta_schema_error(key: str) -> str | None:
    return _VERDICTS.get_or_make(key, lambda: _meta_schema_error(json.loads(key)))


# The meta-schema check: jsonschema-rs first (0.6 ms for a 74 KB schema where
# jsonschema took 0.47 s), trusted only to say yes. It checks the schema
# against the 2020-12 meta-schema whatever its "$schema" says, as jsonschema
# does, but not the "regex" format: _patterns_error parses every regular
# expression with re's parser after it. Otherwise jsonschema decides and
# words the reason, with the bounded keywords and under the budget of a call:
# its uniqueItems over a "type" list of 2,000 objects took 5.7 s at Register.
@functools.cache
def _fast_meta_check() -> Callable[[Any], bool]:
    return jsonschema_rs.Draft202012Validator(
        Draft202012Validator.META_SCHEMA, offline=True
    ).is_valid


def _meta_schema_says_yes(schema: dict[str, Any]) -> bool:
    try:
        return bool(_fast_meta_check()(schema))
    except Exception:  # a value it cannot convert: jsonschema decides
        return False


def _meta_schema_error(schema: dict[str, Any]) -> str | None:
    if not _meta_schema_says_yes(schema):
        meta = ArgumentsValidator(
            Draft202012Validator.META_SCHEMA,
            format_checker=Draft202012Validator.FORMAT_CHECKER,
        )
        try:
            with budget(VALIDATION_BUDGET_S):
                error = next(meta.iter_errors(schema), None)
        except BudgetExceeded:
            return (
                "is not a valid JSON Schema (checking it against the meta-schema took longer "
                f"than {VALIDATION_BUDGET_S * 1000:g} ms)"
            )
        except RecursionError:
            return "is not a valid JSON Schema (it nests too deeply)"
        if error is not None:
            # Clipped: jsonschema quotes the offending value, and a status message
            # over gRPC's metadata limit would reach the caller as RESOURCE_EXHAUSTED.
            where = ("/".join(str(p) for p in error.path) or "(root)")[:200]
            return f"is not a valid JSON Schema at {where}: {error.message[:300]}"
    if err := _outside_reference_error(schema):
        return err
    if err := _reference_loop_error(schema):
        return err
    if err := _patterns_error(schema):
        return err
    # Catches references that loop or lead nowhere from the root (an empty
    # object walks every top-level "$ref"); deeper ones fail at call time.
    # Under the same budget as a call: a schema whose $refs branch
    # exponentially could otherwise take minutes and gigabytes on {} alone.
    if reason := _evaluation_error(ArgumentsValidator(schema, registry=_NO_RETRIEVAL), {}):
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


# Keywords that apply their subschemas to the same value as the schema they sit in.
_IN_PLACE = frozenset({"not", "if", "then", "else"})
_IN_PLACE_LISTS = frozenset({"allOf", "anyOf", "oneOf"})


def _pointer_target(root: Any, ref: str) -> Any:
    """The subschema a local JSON-pointer ``$ref`` ("#/$defs/a") names, or None."""
    if ref == "#":
        return root
    if not ref.startswith("#/"):
        return None  # an anchor ("#name"): left to the evaluation
    node = root
    for token in ref[2:].split("/"):
        token = urllib.parse.unquote(token).replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            return None  # unresolvable: the evaluation words it
    return node if isinstance(node, dict) else None


def _in_place_children(root: Any, schema: dict[str, Any]) -> list[dict[str, Any]]:
    children = []
    if isinstance(schema.get("$ref"), str):
        children.append(_pointer_target(root, schema["$ref"]))
    for keyword in _IN_PLACE:
        children.append(schema.get(keyword))
    for keyword in _IN_PLACE_LISTS:
        if isinstance(schema.get(keyword), list):
            children.extend(schema[keyword])
    if isinstance(schema.get("dependentSchemas"), dict):
        children.extend(schema["dependentSchemas"].values())
    return [c for c in children if isinstance(c, dict)]


def _has_embedded_id(schema: Any, top: bool = True) -> bool:
    if isinstance(schema, dict):
        if not top and "$id" in schema:
            return True
        return any(_has_embedded_id(v, False) for v in schema.values())
    if isinstance(schema, list):
        return any(_has_embedded_id(v, False) for v in schema)
    return False


def _reference_loop_error(schema: dict[str, Any]) -> str | None:
    """Refuses ``$ref``s that lead back to themselves without stepping into the value.

    Evaluating such a loop recurses until Python's recursion limit, which
    takes 20-250 ms depending on the machine: found by a walk here, the
    answer is the same everywhere and comes at Register, not at the first
    call that reaches the loop. Only in-place keywords (``$ref``, ``allOf``,
    ``not``...) are followed; ``properties`` and ``items`` consume part of
    the value, so a loop through them ends with the value.
    """
    if _has_embedded_id(schema):
        return None  # "#/..." would be relative to the embedded resource; evaluation decides
    # Every subschema, found by the same walk the pattern checks use plus $defs.
    nodes: list[dict[str, Any]] = []
    stack: list[Any] = [schema]
    seen: set[int] = set()
    while stack:
        node = stack.pop()
        if not isinstance(node, dict) or id(node) in seen:
            continue
        seen.add(id(node))
        nodes.append(node)
        for keyword, value in node.items():
            if keyword in _SUBSCHEMA and isinstance(value, dict):
                stack.append(value)
            elif keyword in _SUBSCHEMA_LISTS and isinstance(value, list):
                stack.extend(value)
            elif keyword in _SUBSCHEMA_MAPS and isinstance(value, dict):
                stack.extend(value.values())
    # Iterative depth-first search for a cycle (0 = unvisited, 1 = on path, 2 = done).
    state: dict[int, int] = {}
    for start in nodes:
        if state.get(id(start)):
            continue
        path: list[tuple[dict[str, Any], Any]] = [(start, iter(_in_place_children(schema, start)))]
        state[id(start)] = 1
        while path:
            node, children = path[-1]
            child = next(children, None)
            if child is None:
                state[id(node)] = 2
                path.pop()
            elif state.get(id(child)) == 1:
                ref = node.get("$ref", "a subschema")
                return (
                    f"cannot be evaluated: its $refs loop without end (through {str(ref)[:100]!r} "
                    "without stepping into the value)"
                )
            elif not state.get(id(child)):
                state[id(child)] = 1
                path.append((child, iter(_in_place_children(schema, child))))
    return None


# Keywords whose value is a schema, a list of schemas, or a map of names to schemas.
_SUBSCHEMA = frozenset(
    {
        "items", "additionalItems", "additionalProperties", "unevaluatedItems",
        "unevaluatedProperties", "contains", "propertyNames", "not", "if", "then", "else",
    }
)  # fmt: skip
_SUBSCHEMA_LISTS = frozenset({"allOf", "anyOf", "oneOf", "prefixItems", "items"})
_SUBSCHEMA_MAPS = frozenset(
    {"properties", "patternProperties", "$defs", "definitions", "dependentSchemas"}
)


def _schema_patterns(schema: Any, path: str) -> Any:
    """(where, pattern) for every regular expression of ``schema`` (not of its const/enum data)."""
    if not isinstance(schema, dict):
        return
    if isinstance(schema.get("pattern"), str):
        yield f"{path}/pattern", schema["pattern"]
    if isinstance(schema.get("patternProperties"), dict):
        for key in schema["patternProperties"]:
            yield f"{path}/patternProperties", key
    for keyword, value in schema.items():
        if keyword in _SUBSCHEMA and isinstance(value, dict):
            yield from _schema_patterns(value, f"{path}/{keyword}")
        elif keyword in _SUBSCHEMA_LISTS and isinstance(value, list):
            for i, item in enumerate(value):
                yield from _schema_patterns(item, f"{path}/{keyword}/{i}")
        elif keyword in _SUBSCHEMA_MAPS and isinstance(value, dict):
            for name, item in value.items():
                yield from _schema_patterns(item, f"{path}/{keyword}/{str(name)[:50]}")


def _patterns_error(schema: dict[str, Any]) -> str | None:
    """Refuses patterns that would compile too big (``toolcall.patterns``); compiles the rest."""
    total = 0
    for where, pattern in _schema_patterns(schema, ""):
        where = where.lstrip("/")[:200]
        try:
            total += patterns.pattern_units(pattern)
        except ValueError:
            pass  # reported by pattern_error below
        if err := patterns.pattern_error(pattern):
            return f"has a pattern at {where} that {err}"
        if total > patterns.MAX_SCHEMA_PATTERN_UNITS:
            return (
                f"has patterns too large together once their counted repetitions are expanded "
                f"(over {patterns.MAX_SCHEMA_PATTERN_UNITS} units, reached at {where})"
            )
    return None


# References are resolved within the schema only; nothing is ever fetched.
_NO_RETRIEVAL: Registry[Any] = Registry()


def _evaluation_error(validator: Any, arguments: Any) -> str | None:
    """Why ``validator`` cannot evaluate ``arguments`` at all (not: why they are invalid).

    ``validator`` is an ``ArgumentsValidator``: the evaluation is bounded by
    ``VALIDATION_BUDGET_S``.
    """
    try:
        with budget(VALIDATION_BUDGET_S):
            validator.is_valid(arguments)
    except Unresolvable as exc:
        return f"unresolvable $ref: {str(exc)[:200]}"
    except RecursionError:
        return "its $refs loop without end"
    except BudgetExceeded:
        return (
            f"evaluating it took longer than {VALIDATION_BUDGET_S * 1000:g} ms "
            "(its $refs or anyOf/oneOf branch too much)"
        )
    return None


# Draft 2020-12 where every keyword checks the argument check's deadline, and
# the super-linear ones are replaced by bounded versions (toolcall.schema_keywords).
ArgumentsValidator = validators.extend(
    Draft202012Validator,
    {
        keyword: budgeted(BOUNDED.get(keyword) or check)
        for keyword, check in Draft202012Validator.VALIDATORS.items()
        if check is not None
    },
)

# jsonschema's validator classes are attrs classes; evolve copies their init fields.
_EVOLVE_FIELDS = [(f.name, f.alias) for f in vars(ArgumentsValidator)["__attrs_attrs__"] if f.init]


def _evolve(self: Any, **changes: Any) -> Any:
    """jsonschema's ``evolve``, except that it always stays an ArgumentsValidator.

    jsonschema's picks the class by the subschema's ``$schema``: a
    subschema saying ``"$schema": ".../draft-07/schema#"`` (or a ``$ref`` to
    a root saying 2020-12) was evaluated by the stock, unbounded validator -
    12.6 s for a uniqueItems over 3,000 objects. A tool schema is Draft
    2020-12 throughout.
    """
    changes.setdefault("schema", self.schema)
    for attr_name, init_name in _EVOLVE_FIELDS:
        if init_name not in changes:
            changes[init_name] = getattr(self, attr_name)
    return ArgumentsValidator(**changes)


ArgumentsValidator.evolve = _evolve


# Backtracking steps jsonschema-rs may take for one pattern before it says no.
FAST_BACKTRACK_LIMIT = 100_000

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
    return FastCheck(fast.is_valid, _value_costs(schema, MAX_SCHEMA_DEPTH + 1))


# jsonschema-rs cannot be interrupted, and its work is the product of schema
# and arguments: an enum of 2,000 objects against 100,000 items took 10.7 s,
# an anyOf of 500 consts against 300,000 strings 2.6 s (7-40 ns per check,
# the most with unevaluatedProperties). So before it runs, its work is
# bounded from above: per depth, the most checks one value there can cost
# (``_value_costs``) times the number of values there. Past
# FAST_PATH_MAX_WORK (~0.1 s) it is skipped and the Python validator decides
# under its budget.
FAST_PATH_MAX_WORK = 3_000_000


class FastCheck:
    """jsonschema-rs's verdict, and the most work it costs per value at each depth."""

    __slots__ = ("costs", "is_valid")

    def __init__(self, is_valid: Callable[[Any], bool], costs: list[int]) -> None:
        self.is_valid = is_valid
        self.costs = costs

    def __call__(self, arguments: Any) -> bool:
        return self.is_valid(arguments)

    def work(self, counts: list[int]) -> int:
        """Upper bound of its checks for arguments with ``counts`` values per depth."""
        return sum(c * n for c, n in zip(self.costs, counts, strict=False))


def _size(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + sum(_size(v) for v in value.values())
    if isinstance(value, list):
        return 1 + sum(_size(v) for v in value)
    return 1


def _add(into: list[int], other: list[int], shift: int = 0) -> None:
    for i, cost in enumerate(other, shift):
        if i == len(into):
            into.append(0)
        into[i] += cost


def _most(a: list[int], b: list[int]) -> list[int]:
    longer, shorter = (a, b) if len(a) >= len(b) else (b, a)
    return [max(x, shorter[i]) if i < len(shorter) else x for i, x in enumerate(longer)]


def _value_costs(schema: Any, depth_left: int) -> list[int]:
    """The most checks a value at each relative depth can cost under ``schema`` (no $refs).

    [0] is the value itself: one per subschema applying to it, plus its enum or
    const data (an enum of scalars only is hashed by jsonschema-rs: 1).
    Children: one ``properties`` entry applies to a key, every matching
    ``patternProperties`` one may, ``additionalProperties`` only to the others;
    ``prefixItems`` or ``items`` to an item, ``contains`` to all.
    """
    if not isinstance(schema, dict) or depth_left <= 0:
        return [1]
    own = 1 + (_size(schema["const"]) if "const" in schema else 0)
    enum = schema.get("enum")
    if isinstance(enum, list) and any(isinstance(e, dict | list) for e in enum):
        own += sum(_size(e) for e in enum)
    costs = [own]
    nested = depth_left - 1
    same_level = [schema.get(k) for k in ("not", "if", "then", "else")]
    for keyword in ("allOf", "anyOf", "oneOf"):
        if isinstance(schema.get(keyword), list):
            same_level.extend(schema[keyword])
    if isinstance(schema.get("dependentSchemas"), dict):
        same_level.extend(schema["dependentSchemas"].values())
    for sub in same_level:
        if sub is not None:
            _add(costs, _value_costs(sub, nested))

    def each(keyword: str) -> list[Any]:
        value = schema.get(keyword)
        if isinstance(value, dict):
            return list(value.values())
        return value if isinstance(value, list) else []

    named: list[int] = [0]
    for sub in each("properties"):
        named = _most(named, _value_costs(sub, nested))
    for sub in each("patternProperties"):
        _add(named, _value_costs(sub, nested))
    keys = (
        _most(named, _value_costs(schema["additionalProperties"], nested))
        if ("additionalProperties" in schema)
        else named
    )
    items: list[int] = [0]
    for sub in each("prefixItems"):
        items = _most(items, _value_costs(sub, nested))
    if "items" in schema:
        items = _most(items, _value_costs(schema["items"], nested))
    for keyword in ("unevaluatedProperties", "propertyNames"):
        if keyword in schema:
            _add(keys, _value_costs(schema[keyword], nested))
    for keyword in ("contains", "unevaluatedItems"):
        if keyword in schema:
            _add(items, _value_costs(schema[keyword], nested))
    _add(costs, _most(keys, items), 1)
    return costs


# Compiled validators kept (for schemas of tools that come and go): at most
# 256, and at most 64 MiB by estimate. A compiled schema holds ~22x its JSON
# text (parsed dict, jsonschema and jsonschema-rs structures: 1.6 MB of RSS
# for a 73 KB schema), plus jsonschema-rs's compiled patterns (counted like
# ours, ``BYTES_PER_UNIT``). Tools that are still registered keep their own
# validator; the bound is on what removed ones leave.
MAX_CACHED_VALIDATORS = 256
MAX_CACHED_VALIDATOR_BYTES = 64 * 1024 * 1024
VALIDATOR_BYTES_PER_SCHEMA_BYTE = 24


def _validator_bytes(canonical: str, _: Any) -> int:
    units = 0
    for _where, pattern in _schema_patterns(json.loads(canonical), ""):
        try:
            units += patterns.pattern_units(pattern)
        except ValueError:
            units += len(pattern)
    return len(canonical) * VALIDATOR_BYTES_PER_SCHEMA_BYTE + units * patterns.BYTES_PER_UNIT


_VALIDATORS: BoundedCache[str, tuple[Any, FastCheck | None]] = BoundedCache(
    max_entries=MAX_CACHED_VALIDATORS,
    max_bytes=MAX_CACHED_VALIDATOR_BYTES,
    size=_validator_bytes,
)


def _compiled(canonical: str) -> tuple[Any, FastCheck | None]:
    def make() -> tuple[Any, FastCheck | None]:
        schema = json.loads(canonical)
        return ArgumentsValidator(schema, registry=_NO_RETRIEVAL), _fast_check(schema)

    return _VALIDATORS.get_or_make(canonical, make)


def _shape_error(arguments: Any) -> str | None:
    if reason := shape_error(arguments, MAX_ARGUMENT_DEPTH):
        return f"arguments{reason}"
    return None


def compile_validator(schema: dict[str, Any], subject: str = "arguments") -> ValueValidator:
    """A validator for values with this (already checked) schema.

    ``subject`` names the value in reasons: "arguments" (a call's arguments,
    against the tool's parameters) or "output" (a plugin's output, against the
    tool's output_schema); the bounds are the same for both.
    """
    if subject == "arguments" and (not schema or schema == EMPTY_PARAMETERS):
        return _shape_error  # arguments are always an object: only their shape to check
    schema_name = "parameter schema" if subject == "arguments" else f"{subject}_schema"
    validator: Draft202012Validator
    validator, fast = _compiled(json.dumps(schema, sort_keys=True))

    def validate(value: Any) -> str | None:
        counts: list[int] = []
        if reason := shape_error(value, MAX_ARGUMENT_DEPTH, counts):
            return f"{subject}{reason}"
        fast_said_no = False
        if fast is not None and fast.work(counts) <= FAST_PATH_MAX_WORK:
            try:
                if fast(value):
                    return None
                fast_said_no = True
            except Exception:  # a value it cannot convert: Python decides
                pass
        try:
            with budget(VALIDATION_BUDGET_S):
                # Without a fast verdict, valid is the usual case and is_valid
                # is cheaper than best_match; after a fast "no", invalid is.
                if not fast_said_no and validator.is_valid(value):
                    return None
                # The first errors are enough to word a reason; all of them can
                # be one per item of a big value.
                error = best_match(itertools.islice(validator.iter_errors(value), 32))
        except BudgetExceeded:
            took = f"took longer than {VALIDATION_BUDGET_S * 1000:g} ms"
            if subject == "arguments":
                return (
                    f"arguments: checking them against the tool's schema {took}; "
                    "they are refused (send smaller arguments)"
                )
            return f"{subject}: checking it against the tool's {schema_name} {took}; it is refused"
        except (Unresolvable, RecursionError):
            reason = _evaluation_error(validator, value)
            return f"the tool's {schema_name} cannot be evaluated: {reason}"
        if error is None:
            return None
        path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
        return f"{subject}{path[:200]}: {error.message[:500]}"

    return validate
