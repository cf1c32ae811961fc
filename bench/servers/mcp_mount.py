"""Scenario I's plugin: the E tool's MCP server (stdio) mounted by ``gateway.mcp_mount``.

``python -m bench.servers.mcp_mount``: the same code as ``toolcall mcp mount
--name bench -- python -m bench.servers.mcp_weather --stdio``, run without
the CLI so it can announce its callback address once the MCP server is up.
It registers with ``TOOLCALL_REGISTRY_ADDRESS``.
"""

from __future__ import annotations

import asyncio
import signal
import sys

from toolcall import config, eventloop, grpc_env


async def serve() -> None:
    from bench.processes import announce_ready
    from gateway.mcp_mount import MountSettings, ServerMount, ServerSpec, run_mounts

    spec = ServerSpec(
        name="bench", command=sys.executable, args=("-m", "bench.servers.mcp_weather", "--stdio")
    )
    mount = ServerMount(spec, MountSettings(registry_address=config.registry_address()))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    running = asyncio.create_task(run_mounts([mount], stop))
    await mount.up.wait()
    announce_ready(mount.plugin.address)
    await running


if __name__ == "__main__":
    grpc_env.apply()  # before grpc loads, as the CLI and Plugin.run() do
    from toolcall.serving import setup_logging

    setup_logging("WARNING")
    eventloop.run(serve())
