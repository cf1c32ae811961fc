"""Helpers of the ``toolcall mcp mount`` tests: MCP test servers and an in-process mount.

The servers live in tests/mcp_servers/ and run as real subprocesses; the
mount runs in the test's loop (``gateway.mcp_mount.run_mounts``), against a
real registry, so tests can read its state and its log records.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from gateway.mcp_mount import MountSettings, ServerMount, ServerSpec, run_mounts
from tests.support.plugins import list_tools, wait_for
from tests.support.registry import Registry
from toolcall.jsonvalue import from_value, to_struct
from toolcall.v1 import registry_pb2

SERVERS = Path(__file__).resolve().parents[1] / "mcp_servers"
PY_SERVER = ServerSpec(name="py", command=sys.executable, args=(str(SERVERS / "py_server.py"),))


def raw(mode: str, name: str = "raw") -> ServerSpec:
    return ServerSpec(
        name=name, command=sys.executable, args=(str(SERVERS / "raw_server.py"), mode)
    )


def with_env(spec: ServerSpec, **env: str) -> ServerSpec:
    return ServerSpec(name=spec.name, command=spec.command, args=spec.args, env=env)


def settings(registry: str, **overrides: Any) -> MountSettings:
    base: dict[str, Any] = {
        "registry_address": registry,
        "timeout_s": 10.0,
        "init_timeout_s": 10.0,
        "restart_initial_s": 1.0,
        "restart_max_s": 2.0,
    }
    return MountSettings(**(base | overrides))


@contextlib.asynccontextmanager
async def mounted(
    registry: str,
    *specs: ServerSpec,
    only: dict[str, dict[str, Any]] | None = None,
    **overrides: Any,
) -> AsyncIterator[list[ServerMount]]:
    """Runs ``specs`` in one ``run_mounts``; ``only`` overrides settings per server name."""
    mounts = [
        ServerMount(s, settings(registry, **(overrides | (only or {}).get(s.name, {}))))
        for s in specs
    ]
    stop = asyncio.Event()
    task = asyncio.create_task(run_mounts(mounts, stop))
    try:
        yield mounts
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)


async def names_of(reg: Registry, source: str) -> set[str]:
    return {t.tool.name for t in await list_tools(reg.stub, source=source)}


async def wait_names(reg: Registry, source: str, expected: set[str], timeout_s: float = 20) -> None:
    await wait_for(lambda: names_of(reg, source), lambda names: names == expected, timeout_s)


async def invoke(
    reg: Registry, name: str, arguments: dict[str, Any] | None = None, deadline_s: float = 20
) -> Any:
    reply = await reg.stub.Invoke(
        registry_pb2.InvokeRequest(name=name, arguments=to_struct(arguments or {})),
        timeout=deadline_s,
    )
    return reply.result


def result_of(reply: Any) -> Any:
    """The value an MCPServer tool returned: it wraps non-object returns as {"result": v}."""
    assert not reply.is_error, reply.error
    return from_value(reply.output)["result"]


async def wait_marked(path: Path, text: str, timeout_s: float = 10) -> None:
    async def read() -> str:
        return await asyncio.to_thread(lambda: path.read_text() if path.exists() else "")

    await wait_for(read, lambda content: text in content, timeout_s)


PY_TOOLS = {
    "py_echo",
    "py_add",
    "py_fail",
    "py_pid",
    "py_sleep",
    "py_image",
    "py_grow",
    "py_shrink",
    "py_big",
}
