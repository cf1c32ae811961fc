"""The event loop toolcall's processes run on: uvloop where it is installed.

Every gRPC completion in grpc.aio wakes the event loop and runs a few
callbacks on it, so the loop's own cost per wake-up is part of every call.
uvloop (libuv) does that work in C: on our 2-core VM it took a bare grpc.aio
echo server from ~390 to ~340 µs of CPU per call and raised its throughput
at 64 calls in flight by ~15 % (docs/performance.md, "The event loop").

uvloop is a dependency on Linux and macOS; where it is missing (Windows) or
``TOOLCALL_EVENT_LOOP=asyncio`` is set, the standard asyncio loop is used.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

CHOICES = ("uvloop", "asyncio")


def name() -> str:
    """The loop ``run`` uses: ``TOOLCALL_EVENT_LOOP`` if set, else uvloop when installed."""
    chosen = os.environ.get("TOOLCALL_EVENT_LOOP", "").strip().lower()
    if chosen and chosen not in CHOICES:
        raise SystemExit(f"TOOLCALL_EVENT_LOOP must be one of {', '.join(CHOICES)}, got {chosen!r}")
    if chosen == "asyncio":
        return "asyncio"
    if importlib.util.find_spec("uvloop") is not None:
        return "uvloop"
    if chosen == "uvloop":
        raise SystemExit("TOOLCALL_EVENT_LOOP=uvloop, but uvloop is not installed")
    return "asyncio"


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on the loop ``name()`` picks."""
    try:
        loop = name()
    except SystemExit:
        main.close()
        raise
    if loop == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)
