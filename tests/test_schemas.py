"""Argument validation against tool schemas: patterns run under a time limit."""

from __future__ import annotations

import time

from toolcall.schemas import PATTERN_TIMEOUT_S, compile_validator

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


def test_catastrophic_pattern_property_is_refused() -> None:
    validate = compile_validator(
        {"type": "object", "patternProperties": {EVIL: {"type": "integer"}}}
    )
    reason = validate({"a" * 40 + "!": 1})
    assert reason is not None and "took longer than" in reason


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
