"""Schema regular expressions: checked at Register, compiled once, matched under a time limit.

A schema's ``pattern`` and ``patternProperties`` keys come from whoever
registers the tool, and the strings they run on come from the model: both
are hostile.

Compiling: the ``regex`` module unrolls counted repetitions. ``(a{1000}){1000}``
(15 bytes) compiled to about 265 MB (250-400 bytes per unrolled unit), and its
module cache keeps 500 compiled patterns whatever their size. So every
pattern is parsed (``re``'s parser; ``check_schema`` has already made sure
``re`` accepts it) and its *units* - the pattern's size with every counted
repetition multiplied out, nesting included - are bounded before anything
compiles it: at most ``MAX_PATTERN_UNITS`` per pattern and
``MAX_SCHEMA_PATTERN_UNITS`` per schema (at most about 4 and 8 MB compiled). That
also bounds jsonschema-rs's compile of the same pattern.

Compiled patterns live in our own cache (``_PATTERNS``), bounded in entries
and estimated bytes; ``regex``'s unbounded-by-size cache is never used.

Matching runs with ``regex``'s ``timeout``: a backtracking pattern such as
``^(a|aa)+$`` would otherwise let a 30-character argument block the event
loop for seconds. The caller passes the time left of its budget.
"""

from __future__ import annotations

import re
import re._parser as sre_parse  # type: ignore[import-not-found]  # re's own parser, no stubs
from typing import Any

import regex

from toolcall.boundedcache import BoundedCache

PATTERN_TIMEOUT_S = 0.05

# Units: the size of a pattern with counted repetitions multiplied out
# ("x{3}" is 3, "((ab){2}){5}" is 20, "x*" is 1). Compiled by regex: 300 bytes
# each for "x{10000}", 400 for "(ab|cd){5000}"; estimated at 512.
MAX_PATTERN_UNITS = 10_000
MAX_SCHEMA_PATTERN_UNITS = 20_000
BYTES_PER_UNIT = 512

# Compiled patterns kept: at most this many, and at most this many estimated bytes.
MAX_CACHED_PATTERNS = 512
MAX_CACHED_PATTERN_BYTES = 32 * 1024 * 1024

_REPEATS = frozenset(
    {sre_parse.MAX_REPEAT, sre_parse.MIN_REPEAT, getattr(sre_parse, "POSSESSIVE_REPEAT", None)}
)


class PatternTimeout(ValueError):
    pass


def pattern_units(pattern: str) -> int:
    """The pattern's size with counted repetitions multiplied out (ValueError if unparsable)."""
    try:
        return _units(sre_parse.parse(pattern))
    except RecursionError:
        raise ValueError("nests too deeply") from None
    except re.error as exc:
        raise ValueError(str(exc)) from None


def _units(sub: Any) -> int:
    total = 0
    for op, av in sub:
        if op in _REPEATS:
            low, high, item = av
            count = low if high == sre_parse.MAXREPEAT else high
            total += max(1, count) * _units(item)
        else:
            total += max(1, _inner_units(av))
    return total


def _inner_units(av: Any) -> int:
    if isinstance(av, sre_parse.SubPattern):
        return _units(av)
    if isinstance(av, list | tuple):
        return sum(_inner_units(x) for x in av)
    return 0


def pattern_error(pattern: str) -> str | None:
    """Why ``pattern`` may not be compiled, or None (it is compiled and cached then)."""
    try:
        units = pattern_units(pattern)
    except ValueError as exc:
        return f"{pattern[:100]!r} cannot be parsed: {exc}"
    if units > MAX_PATTERN_UNITS:
        return (
            f"{pattern[:100]!r} is too large once its counted repetitions are expanded "
            f"({units} units; the limit is {MAX_PATTERN_UNITS}); use smaller counts, "
            "or maxLength/maxItems for lengths"
        )
    try:
        compiled(pattern)
    except regex.error as exc:
        return f"{pattern[:100]!r} is not a regular expression the validator accepts: {exc}"
    return None


def _estimated_bytes(pattern: str, _: Any) -> int:
    try:
        units = pattern_units(pattern)
    except ValueError:
        units = len(pattern)
    return len(pattern) + units * BYTES_PER_UNIT


_PATTERNS: BoundedCache[str, Any] = BoundedCache(
    max_entries=MAX_CACHED_PATTERNS, max_bytes=MAX_CACHED_PATTERN_BYTES, size=_estimated_bytes
)


def compiled(pattern: str) -> Any:
    """``pattern`` compiled by ``regex``, from our bounded cache (never ``regex``'s own)."""
    return _PATTERNS.get_or_make(pattern, lambda: regex.compile(pattern, cache_pattern=False))


def search(pattern: str, text: str, timeout_s: float = PATTERN_TIMEOUT_S) -> bool:
    """Whether ``pattern`` matches somewhere in ``text``; PatternTimeout past ``timeout_s``.

    ``timeout_s`` counts matching only; a pattern evicted from the cache is
    compiled again first (a few ms at most, by the unit bound).
    """
    try:
        return compiled(pattern).search(text, timeout=max(timeout_s, 0.001)) is not None
    except TimeoutError:
        raise PatternTimeout(
            f"matching pattern {pattern[:100]!r} took longer than "
            f"{timeout_s * 1000:.3g} ms; the argument is refused"
        ) from None
