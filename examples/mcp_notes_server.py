"""Example MCP server: a notebook with two tools, built on the MCP Python SDK.

It is a plain MCP server (stdio), not a toolcall plugin: ``toolcall up`` and
``make run`` mount it with ``toolcall mcp mount --name notes -- python -m
toolcall_examples.mcp_notes_server``, so its tools ``add_note`` and
``find_notes`` are registered under the source ``mcp:notes``. Any MCP host
can run it too. The notes live in memory (at most ``MAX_NOTES``, each at
most ``MAX_NOTE_CHARS``): a restart forgets them.
"""

from __future__ import annotations

from typing import Any

from mcp.server import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

MAX_NOTES = 1000
MAX_NOTE_CHARS = 2000

server: MCPServer[Any] = MCPServer("toolcall-notes", log_level="WARNING")
notes: list[str] = []


@server.tool(description="Add a note to the notebook; returns its number and the count.")
def add_note(text: str) -> dict[str, Any]:
    if not text.strip():
        raise ToolError("a note needs some text")  # its message reaches the model
    if len(notes) >= MAX_NOTES:
        notes.pop(0)  # the oldest goes: the notebook stays bounded
    notes.append(text[:MAX_NOTE_CHARS])
    return {"number": len(notes), "text": notes[-1], "notes": len(notes)}


@server.tool(description="Find notes containing a word (case-insensitive); newest first.")
def find_notes(word: str) -> dict[str, Any]:
    needle = word.lower()
    found = [n for n in reversed(notes) if needle in n.lower()][:20]
    return {"word": word, "notes": found}


def main() -> None:
    server.run("stdio")


if __name__ == "__main__":
    main()
