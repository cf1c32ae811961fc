"""What every scenario gets and gives: a run environment in, a timed call out."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.payload import OUTPUT

Call = Callable[[], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class BenchEnv:
    """Where servers under test write logs and put unix sockets and data."""

    log_dir: Path
    tmp_dir: Path


class WrongReply(AssertionError):
    """A scenario answered something other than the fixed output: its timings would lie."""


def expect_output(output: Any, scenario: str) -> None:
    if output != OUTPUT:
        raise WrongReply(f"{scenario}: expected {json.dumps(OUTPUT)}, got {output!r}")
