"""An MCP server built with the Python SDK (``MCPServer``, stdio) for the mount tests.

Tools: ``py_echo`` (text back), ``py_add`` (structured output), ``py_fail``
(a tool error), ``py_pid`` (its process id: the tests kill it), ``py_sleep``
(sleeps; writes ``cancelled`` to $MCP_TEST_MARKS when cancelled),
``py_image`` (an image and a text), ``py_big`` (a text of ``size`` bytes),
``py_grow`` / ``py_shrink`` (add / remove ``py_extra`` and send
``tools/list_changed``). Stdio, or streamable HTTP with ``--http PORT
[--json]``.
"""

from __future__ import annotations

import asyncio
import base64
import os
import sys
from pathlib import Path
from typing import Any

from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ImageContent, TextContent, ToolAnnotations

# Run as a script: the repository root on the path, for tests.support.images.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.support import images

server: MCPServer[Any] = MCPServer("py-test-server", log_level="WARNING")


def _mark(text: str) -> None:
    if path := os.environ.get("MCP_TEST_MARKS"):
        with open(path, "a") as f:
            f.write(text + "\n")


@server.tool(description="Echo a text back")
def py_echo(text: str) -> str:
    return text


@server.tool(
    description="Add two integers",
    title="Add",
    annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False),
)
def py_add(a: int, b: int) -> dict[str, int]:
    return {"sum": a + b}


@server.tool(description="Fail with a reason")
def py_fail(reason: str) -> str:
    raise ToolError(reason)


@server.tool(description="The server's process id")
def py_pid() -> str:
    return str(os.getpid())


@server.tool(description="Sleep for some seconds")
async def py_sleep(seconds: float) -> str:
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        _mark("cancelled")
        raise
    return "slept"


@server.tool(description="A text of some size")
def py_big(size: int) -> str:
    return "x" * size


@server.tool(description="An image and a caption", structured_output=False)
def py_image() -> list[Any]:
    png = base64.b64encode(images.png(2, 2)).decode()
    return [
        ImageContent(type="image", data=png, mime_type="image/png"),
        TextContent(type="text", text="a caption"),
    ]


def py_extra(x: int) -> int:
    """An extra tool, added at run time."""
    return x * 2


@server.tool(description="Add the tool py_extra and tell the client")
async def py_grow(ctx: Context) -> str:
    server.add_tool(py_extra, description="Double a number")
    # The handshake-era notification (ctx.notify_tools_changed() only reaches
    # subscriptions/listen subscribers of the 2026 protocol).
    await ctx.request_context.session.send_tool_list_changed()
    return "grown"


@server.tool(description="Remove the tool py_extra and tell the client")
async def py_shrink(ctx: Context) -> str:
    server.remove_tool("py_extra")
    await ctx.request_context.session.send_tool_list_changed()
    return "shrunk"


if __name__ == "__main__":
    # ``--http PORT``: streamable HTTP at http://127.0.0.1:PORT/mcp instead of stdio.
    # ``--json``: answers as JSON bodies, not event streams.
    if len(sys.argv) >= 3 and sys.argv[1] == "--http":
        json_response = "--json" in sys.argv
        server.run(
            "streamable-http", host="127.0.0.1", port=int(sys.argv[2]), json_response=json_response
        )
    else:
        server.run("stdio")
