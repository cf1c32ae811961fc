"""Our own services as the bench runs them: each through the ``toolcall`` CLI, own process.

The registry and the LLMService listen on a TCP loopback port picked here;
the bench SDK plugin registers with the registry under a lease, as any plugin
built with plugin_stub does.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from bench.payload import TOOL_NAME
from bench.processes import ServerProcess, free_port, running
from bench.scenarios.base import BenchEnv
from toolcall.clients import auth_metadata, channel, list_all_tools
from toolcall.v1 import registry_pb2_grpc

CLI = ["-m", "toolcall.cli"]


@contextlib.asynccontextmanager
async def registry(
    env: BenchEnv,
    name: str,
    *,
    roles: str = "default",
    extra: tuple[str, ...] = (),
    extra_env: dict[str, str] | None = None,
) -> AsyncIterator[ServerProcess]:
    address = f"127.0.0.1:{free_port()}"
    data = env.tmp_dir / f"{name}-data"
    args = [*CLI, "registry", "--address", address, "--roles", roles, "--data-dir", str(data)]
    args += extra
    async with running(name, args, log_dir=env.log_dir, healthy_at=address, env=extra_env) as proc:
        yield proc


@contextlib.asynccontextmanager
async def plugin(
    env: BenchEnv,
    name: str,
    registry_address: str,
    *,
    timeout_s: float = 15.0,
    token: str = "",
    extra_env: dict[str, str] | None = None,
) -> AsyncIterator[ServerProcess]:
    """The bench SDK plugin, once the registry lists its tool; ``token``: its bearer token."""
    plugin_env = {
        "TOOLCALL_REGISTRY_ADDRESS": registry_address,
        "TOOLCALL_TOKEN": token,
        **(extra_env or {}),
    }
    args = ["-m", "bench.servers.sdk_plugin"]
    async with running(name, args, log_dir=env.log_dir, env=plugin_env) as proc:
        await wait_listed(registry_address, TOOL_NAME, timeout_s=timeout_s, token=token)
        yield proc


async def wait_listed(
    registry_address: str, tool: str, *, timeout_s: float, token: str = ""
) -> None:
    deadline = time.monotonic() + timeout_s
    async with channel(registry_address) as ch:
        stub: registry_pb2_grpc.ToolRegistryAsyncStub = registry_pb2_grpc.ToolRegistryStub(ch)
        while time.monotonic() < deadline:
            listed, _ = await list_all_tools(stub, timeout_s=5, metadata=auth_metadata(token))
            if any(t.tool.name == tool for t in listed):
                return
            await asyncio.sleep(0.05)
    raise TimeoutError(f"tool {tool!r} not registered at {registry_address} in {timeout_s:g}s")


@contextlib.asynccontextmanager
async def llm(
    env: BenchEnv, name: str, registry_address: str, *, extra_env: dict[str, str] | None = None
) -> AsyncIterator[ServerProcess]:
    address = f"127.0.0.1:{free_port()}"
    data = env.tmp_dir / f"{name}-data"
    args = [
        *CLI,
        "llm",
        "--address",
        address,
        "--registry",
        registry_address,
        "--provider",
        "offline",
        "--data-dir",
        str(data),
    ]
    async with running(name, args, log_dir=env.log_dir, healthy_at=address, env=extra_env) as proc:
        yield proc
