"""Serving an ASGI app with uvicorn on an ephemeral loopback port, then announcing it."""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn

from bench.processes import announce_ready


async def serve(app: Any, host: str = "127.0.0.1") -> None:
    """Runs ``app`` until SIGTERM on an ephemeral port, announced once bound.

    uvicorn binds the port itself (host/port path): a socket bound here with
    proto 0 would make asyncio skip TCP_NODELAY on accepted connections and
    add Nagle/delayed-ACK stalls of ~40 ms to every call.
    """
    # Access logging off: the baseline gets every advantage we can give it.
    # It runs on asyncio's loop, which served D and E faster than uvloop here.
    config = uvicorn.Config(app, host=host, port=0, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            await task  # raises what stopped it
            return
        await asyncio.sleep(0.02)
    sockets = server.servers[0].sockets
    port = sockets[0].getsockname()[1]
    announce_ready(f"http://{host}:{port}")
    await task
