"""Scenario E's server: the same tool through the MCP Python SDK, streamable HTTP.

``python -m bench.servers.mcp_weather``; the endpoint is ``<announced>/mcp``.
With ``--stdio`` it serves over stdio instead (scenario I mounts it); with
``--json`` it answers each request with JSON instead of an SSE stream (E-json:
the mode the toolcall gateway answers 2026-era requests in).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from mcp.server import MCPServer

from bench.payload import DESCRIPTION, OUTPUT
from bench.servers._uvicorn import serve

server: MCPServer[Any] = MCPServer("bench-weather", log_level="WARNING")


@server.tool(description=DESCRIPTION)
async def get_weather(city: str) -> dict[str, Any]:
    return OUTPUT


if __name__ == "__main__":
    if "--stdio" in sys.argv:
        server.run("stdio")
    else:
        asyncio.run(serve(server.streamable_http_app(json_response="--json" in sys.argv)))
