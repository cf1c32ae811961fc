"""An HTTP tool plugin written from the HTTP registry contract alone (no toolcall code).

Python's standard library only: it POSTs ``/api/tools/register`` to the main
server given on the command line (retrying until it answers ``ok``), serves
the ``callback_url`` it registered, and answers each call with
``{"output": ..., "is_error": ...}``; ``tell_time`` answers a bare value.
Prints ``READY <port>`` once registered; unregisters on SIGTERM.

    python http_seed_plugin.py http://127.0.0.1:48913 [source [port]]
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MAIN_SERVER = sys.argv[1]
SOURCE = sys.argv[2] if len(sys.argv) > 2 else "my_plugin"
PORT = int(sys.argv[3]) if len(sys.argv) > 3 else 0

TOOLS = [
    {
        "name": "get_weather",
        "description": "Look up the weather in a given city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "City name"}},
            "required": ["city"],
        },
        "path": "/tool_invoke",
    },
    {
        "name": "tell_time",
        "description": "Tell the time in a time zone",
        "parameters": {
            "type": "object",
            "properties": {"zone": {"type": "string"}},
            "required": ["zone"],
        },
        "path": "/bare/tell_time",
    },
]


def get_weather(arguments: dict[str, Any]) -> dict[str, Any]:
    city = arguments.get("city", "")
    if city == "Atlantis":
        return {"output": None, "is_error": True, "error": "city not found"}
    return {"output": {"city": city, "temp_c": 22, "weather": "sunny"}, "is_error": False}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length", "0"))
        body = json.loads(self.rfile.read(length))
        if self.path == "/tool_invoke":
            reply: Any = get_weather(body["arguments"])
            reply["output"] = reply["output"] and {**reply["output"], "call_id": body["call_id"]}
        else:  # a bare value: the whole body is the output
            reply = f"12:00 in {body['arguments'].get('zone')} ({body['raw_arguments']})"
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


def post(path: str, payload: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        MAIN_SERVER + path,
        data=json.dumps(payload).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as reply:
        result: dict[str, Any] = json.loads(reply.read())
        return result


def register_with_retry(port: int) -> None:
    for tool in TOOLS:
        payload = {
            "name": tool["name"],
            "description": tool["description"],
            "parameters": tool["parameters"],
            "callback_url": f"http://127.0.0.1:{port}{tool['path']}",
            "role": None,
            "source": SOURCE,
            "timeout_seconds": 30,
        }
        while True:
            try:
                if post("/api/tools/register", payload).get("ok"):
                    break
            except (urllib.error.URLError, ConnectionError):
                pass  # main_server isn't up yet, try again later
            time.sleep(0.2)


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def stop(*_: Any) -> None:
        for tool in TOOLS:
            try:
                post("/api/tools/unregister", {"name": tool["name"], "role": None})
            except Exception as exc:  # main_server is down too: nothing we can do
                print(f"unregister {tool['name']}: {exc!r}", file=sys.stderr, flush=True)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    register_with_retry(port)
    print(f"READY {port}", flush=True)
    signal.pause()


if __name__ == "__main__":
    main()
