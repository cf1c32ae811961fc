"""A hand-written stdio MCP server that misbehaves on purpose (mount tests only).

``python raw_server.py MODE``; MODE is one of:

* ``silent``: reads everything, answers nothing (not even ``initialize``);
* ``garbage``: prints non-JSON-RPC lines on stdout before and between answers;
* ``normal``: answers correctly.

Its tools (all modes that answer): ``ok``; ``ok`` again (a duplicate name);
``bad_schema`` (an input schema toolcall refuses); ``bad/name`` (a name
toolcall refuses); ``huge`` (a result of ``size`` bytes of text, written as
one line); ``hang`` (never answers; a ``notifications/cancelled`` for it is
written to $MCP_TEST_MARKS). Written by hand, without an SDK, so the
misbehaviour is exact.
"""

from __future__ import annotations

import json
import os
import sys

OBJECT = {"type": "object", "properties": {}}
TOOLS = [
    {"name": "ok", "description": "answers ok", "inputSchema": OBJECT},
    {"name": "ok", "description": "a second tool named ok", "inputSchema": OBJECT},
    {
        "name": "bad_schema",
        "description": "schema toolcall refuses",
        "inputSchema": {"type": "object", "properties": {"x": {"type": 12}}},
    },
    {"name": "bad/name", "description": "name toolcall refuses", "inputSchema": OBJECT},
    {
        "name": "huge",
        "description": "a big result",
        "inputSchema": {"type": "object", "properties": {"size": {"type": "integer"}}},
    },
    {"name": "hang", "description": "never answers", "inputSchema": OBJECT},
]


def send(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def mark(text: str) -> None:
    if path := os.environ.get("MCP_TEST_MARKS"):
        with open(path, "a") as f:
            f.write(text + "\n")


def main(mode: str) -> None:
    hanging: set[object] = set()
    if mode == "garbage":
        print("Starting server... (this line is not JSON-RPC)", flush=True)
    for line in sys.stdin:
        if mode == "silent":
            continue
        msg = json.loads(line)
        method, mid = msg.get("method"), msg.get("id")
        if mode == "garbage":
            print("{not json", flush=True)
        if method == "initialize":
            result: dict = {
                "protocolVersion": msg["params"]["protocolVersion"],
                "capabilities": {"tools": {"listChanged": True}},
                "serverInfo": {"name": "raw", "version": "1"},
            }
        elif method == "tools/list":
            result = {"tools": TOOLS}
        elif method == "ping":
            result = {}
        elif method == "notifications/cancelled":
            if msg["params"].get("requestId") in hanging:
                mark("cancelled")
            continue
        elif method == "tools/call":
            name = msg["params"]["name"]
            if name == "hang":
                hanging.add(mid)
                continue
            if name == "huge":
                size = int(msg["params"].get("arguments", {}).get("size", 0))
                result = {"content": [{"type": "text", "text": "x" * size}]}
            else:
                result = {"content": [{"type": "text", "text": "ok"}]}
        elif mid is None:
            continue  # other notifications
        else:
            send({"jsonrpc": "2.0", "id": mid, "error": {"code": -32601, "message": method}})
            continue
        send({"jsonrpc": "2.0", "id": mid, "result": result})


if __name__ == "__main__":
    main(sys.argv[1])
