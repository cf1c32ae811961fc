"""Local HTTP servers speaking the OpenAI and Gemini wire formats, scripted per test.

The real SDKs (``openai``, ``google-genai``) are pointed at them with their
base URL settings. Each server answers requests from a queue of scripted
replies (rendered as plain JSON or as SSE, whichever the SDK asked for) and
records every request body so tests can assert what the SDK sent.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    """A model answer: text and/or tool calls ``(call_id, name, raw_arguments)``."""

    text: str = ""
    tool_calls: list[tuple[str, str, str]] = field(default_factory=list)
    prompt_tokens: int = 11
    completion_tokens: int = 7
    delay_s: float = 0.0


@dataclass
class HTTPError:
    status: int
    body: dict[str, Any] | str = field(default_factory=dict)


@dataclass
class Stall:
    """Answers nothing for ``seconds`` (to trigger the client's timeout)."""

    seconds: float


@dataclass
class Garbage:
    """A 200 answer that is not what the wire format promises."""

    body: str = "this is not json"


Scripted = Reply | HTTPError | Stall | Garbage


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


class FakeServer:
    """Base: a ThreadingHTTPServer on 127.0.0.1 in a daemon thread."""

    def __init__(self) -> None:
        self.script: queue.Queue[Scripted] = queue.Queue()
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        handler = self._handler_class()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def add(self, *items: Scripted) -> None:
        for item in items:
            self.script.put(item)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- to implement ------------------------------------------------------

    def render_json(self, reply: Reply, path: str) -> dict[str, Any]:
        raise NotImplementedError

    def render_sse(self, reply: Reply, path: str) -> list[str]:
        raise NotImplementedError

    def wants_stream(self, path: str, body: dict[str, Any]) -> bool:
        raise NotImplementedError

    # -- plumbing ----------------------------------------------------------

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    # Strict, as the real APIs are: NaN/Infinity are not JSON.
                    body = json.loads(raw, parse_constant=_refuse_constant) if raw else {}
                except ValueError as exc:
                    bad = {"error": {"code": 400, "message": f"Invalid JSON payload: {exc}"}}
                    server._answer(self, HTTPError(400, bad), {})
                    return
                with server._lock:
                    server.requests.append(
                        Recorded(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                    )
                try:
                    item = server.script.get(timeout=5)
                except queue.Empty:
                    item = HTTPError(500, {"error": {"message": "fake server: script is empty"}})
                server._answer(self, item, body)

        return Handler

    def _answer(self, h: BaseHTTPRequestHandler, item: Scripted, body: dict[str, Any]) -> None:
        if isinstance(item, Stall):
            time.sleep(item.seconds)
            item = HTTPError(503, {"error": {"message": "stalled"}})
        if isinstance(item, HTTPError):
            payload = item.body if isinstance(item.body, str) else json.dumps(item.body)
            self._send(h, item.status, "application/json", payload.encode())
            return
        if isinstance(item, Garbage):
            self._send(h, 200, "application/json", item.body.encode())
            return
        if item.delay_s:
            time.sleep(item.delay_s)
        if self.wants_stream(h.path, body):
            events = self.render_sse(item, h.path)
            data = "".join(f"data: {e}\n\n" for e in events).encode()
            self._send(h, 200, "text/event-stream", data)
        else:
            self._send(
                h, 200, "application/json", json.dumps(self.render_json(item, h.path)).encode()
            )

    @staticmethod
    def _send(h: BaseHTTPRequestHandler, status: int, ctype: str, data: bytes) -> None:
        try:
            h.send_response(status)
            h.send_header("content-type", ctype)
            h.send_header("content-length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)
            h.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout test)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _halves(text: str) -> list[str]:
    """Splits text in two pieces (so streamed deltas really arrive in parts)."""
    if len(text) < 2:
        return [text] if text else []
    mid = len(text) // 2
    return [text[:mid], text[mid:]]


class FakeOpenAI(FakeServer):
    """``POST /v1/chat/completions``; point the SDK at ``base_url``."""

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def wants_stream(self, path: str, body: dict[str, Any]) -> bool:
        return bool(body.get("stream"))

    def render_json(self, reply: Reply, path: str) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": reply.text or None}
        if reply.tool_calls:
            message["tool_calls"] = [
                {"id": cid, "type": "function", "function": {"name": name, "arguments": args}}
                for cid, name, args in reply.tool_calls
            ]
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": "fake-model",
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": "tool_calls" if reply.tool_calls else "stop",
                }
            ],
            "usage": {
                "prompt_tokens": reply.prompt_tokens,
                "completion_tokens": reply.completion_tokens,
                "total_tokens": reply.prompt_tokens + reply.completion_tokens,
            },
        }

    def render_sse(self, reply: Reply, path: str) -> list[str]:
        def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
            return json.dumps(
                {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion.chunk",
                    "created": int(time.time()),
                    "model": "fake-model",
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                }
            )

        events = [chunk({"role": "assistant", "content": ""})]
        events += [chunk({"content": piece}) for piece in _halves(reply.text)]
        for index, (cid, name, args) in enumerate(reply.tool_calls):
            pieces = _halves(args) or [""]
            first = {
                "index": index,
                "id": cid,
                "type": "function",
                "function": {"name": name, "arguments": pieces[0]},
            }
            events.append(chunk({"tool_calls": [first]}))
            for piece in pieces[1:]:
                events.append(
                    chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
                )
        events.append(chunk({}, "tool_calls" if reply.tool_calls else "stop"))
        events.append(
            json.dumps(
                {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion.chunk",
                    "created": int(time.time()),
                    "model": "fake-model",
                    "choices": [],
                    "usage": {
                        "prompt_tokens": reply.prompt_tokens,
                        "completion_tokens": reply.completion_tokens,
                        "total_tokens": reply.prompt_tokens + reply.completion_tokens,
                    },
                }
            )
        )
        events.append("[DONE]")
        return events


class FakeGemini(FakeServer):
    """``POST /v1beta/models/<model>:generateContent`` and ``:streamGenerateContent?alt=sse``."""

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def wants_stream(self, path: str, body: dict[str, Any]) -> bool:
        return ":streamGenerateContent" in path

    @staticmethod
    def _response(parts: list[dict[str, Any]], usage: tuple[int, int] | None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "candidates": [
                {"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}
            ],
            "modelVersion": "fake-gemini",
        }
        if usage:
            out["usageMetadata"] = {
                "promptTokenCount": usage[0],
                "candidatesTokenCount": usage[1],
                "totalTokenCount": sum(usage),
            }
        return out

    @staticmethod
    def _call_part(cid: str, name: str, args: str) -> dict[str, Any]:
        call: dict[str, Any] = {"name": name, "args": json.loads(args) if args else {}}
        if cid:
            call["id"] = cid
        return {"functionCall": call, "thoughtSignature": "c2lnbmF0dXJl"}  # b"signature"

    def render_json(self, reply: Reply, path: str) -> dict[str, Any]:
        parts: list[dict[str, Any]] = [{"text": reply.text}] if reply.text else []
        parts += [self._call_part(*c) for c in reply.tool_calls]
        return self._response(parts, (reply.prompt_tokens, reply.completion_tokens))

    def render_sse(self, reply: Reply, path: str) -> list[str]:
        events = [json.dumps(self._response([{"text": p}], None)) for p in _halves(reply.text)]
        calls = [self._call_part(*c) for c in reply.tool_calls]
        events.append(
            json.dumps(self._response(calls, (reply.prompt_tokens, reply.completion_tokens)))
        )
        return events
