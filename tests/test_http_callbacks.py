"""The Dispatcher's HTTP transport against a real HTTP server with hostile behaviours.

Every way an HTTP plugin can misbehave ends as an ``is_error`` result with a
reason, under the same bounds as a gRPC plugin: the tool's deadline, the
message limit on what is read (a huge or endless body is cut off, never
buffered whole), the output cap, the output schema, strict JSON.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.support.images import png
from tests.support.plugins import free_port
from toolcall.dispatch import Dispatcher
from toolcall.jsonvalue import from_value, to_struct
from toolcall.tools import ToolSpec
from toolcall.v1 import tools_pb2

PNG = png(2, 2)
PNG_B64 = base64.b64encode(PNG).decode()


class Behaviours(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list[dict[str, Any]] = []  # noqa: RUF012 - reset by the fixture

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        type(self).seen.append({"path": self.path, "body": body, "headers": dict(self.headers)})
        kind = self.path.strip("/").split("?")[0]
        if kind == "slow":
            time.sleep(3)
        if kind == "endless":  # no content-length: a stream the reader must cut off
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("connection", "close")
            self.end_headers()
            try:
                self.wfile.write(b'"')
                for _ in range(10_000):
                    self.wfile.write(b"x" * 65536)
            except (BrokenPipeError, ConnectionResetError):
                pass
            return
        status, data = self._answer(kind, body)
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _answer(self, kind: str, body: dict[str, Any]) -> tuple[int, bytes]:
        answers: dict[str, tuple[int, bytes]] = {
            "echo": (200, json.dumps({"output": body, "is_error": False}).encode()),
            "slow": (200, b"{}"),  # answered after the caller gave up
            "bare": (200, b"[1, 2, 3]"),
            "failed": (200, b'{"output": {"reason": "x"}, "is_error": true, "error": "CITY"}'),
            "silent_error": (200, b'{"is_error": true}'),
            "not_json": (200, b"<html>oops</html>"),
            "nan": (200, b'{"output": NaN}'),
            "bad_flag": (200, b'{"output": 1, "is_error": "yes"}'),
            "server_error": (500, b'{"detail": "boom"}'),
            "not_found": (404, b"{}"),
            "big_output": (200, json.dumps({"output": "y" * 300_000}).encode()),
            "declared_huge": (200, b"{}"),
            "deep": (200, b"[" * 50_000 + b"]" * 50_000),
            "wrong_shape": (200, b'{"output": {"temp": "warm"}}'),
            "image": (
                200,
                json.dumps(
                    {
                        "output": "a chart",
                        "parts": [
                            {"image": {"mime_type": "image/png", "data": PNG_B64}},
                            {"text": "caption"},
                        ],
                    }
                ).encode(),
            ),
            "bad_parts": (200, b'{"output": 1, "parts": [{"video": {}}]}'),
            "not_png": (
                200,
                json.dumps(
                    {
                        "output": 1,
                        "parts": [
                            {"image": {"mime_type": "image/png", "data": "aGVsbG8="}},
                        ],
                    }
                ).encode(),
            ),
        }
        return answers[kind]

    def send_header(self, keyword: str, value: str) -> None:
        if self.path.strip("/") == "declared_huge" and keyword == "content-length":
            value = str(10 * 1024 * 1024)  # a lie the reader must not trust
        super().send_header(keyword, value)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def plugin_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Behaviours)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def spec(url: str, path: str, **fields: Any) -> ToolSpec:
    d = tools_pb2.ToolDefinition(name="t", callback_address=f"{url}/{path}", **fields)
    return ToolSpec.from_definition(d)


@pytest.fixture
async def dispatcher() -> Any:
    d = Dispatcher(max_message_bytes=1024 * 1024, max_output_bytes=200_000)
    yield d
    await d.close()


@pytest.mark.anyio
async def test_the_plugin_gets_the_documented_body_and_its_answer_is_the_result(
    dispatcher: Dispatcher, plugin_url: str
) -> None:
    Behaviours.seen = []
    result = await dispatcher.invoke(
        spec(plugin_url, "echo"),
        raw_arguments='{"city": "Paris"}',
        call_id="call_abc123",
        session_id="s1",
        role="default",
    )
    assert not result.is_error, result.error
    assert from_value(result.output) == {
        "name": "t",
        "arguments": {"city": "Paris"},
        "call_id": "call_abc123",
        "raw_arguments": '{"city": "Paris"}',
        "session_id": "s1",
        "role": "default",
    }
    headers = {k.lower(): v for k, v in Behaviours.seen[-1]["headers"].items()}
    assert headers["content-type"] == "application/json"
    # Arguments given as an object (Invoke's Struct) reach the plugin as raw text too.
    result = await dispatcher.invoke(spec(plugin_url, "echo"), arguments={"n": 1})
    assert from_value(result.output)["raw_arguments"] == '{"n": 1}'
    bare = await dispatcher.invoke(spec(plugin_url, "bare"))
    assert not bare.is_error and from_value(bare.output) == [1, 2, 3]
    failed = await dispatcher.invoke(spec(plugin_url, "failed"))
    assert failed.is_error and failed.error == "CITY"
    assert from_value(failed.output) == {"reason": "x"}
    silent = await dispatcher.invoke(spec(plugin_url, "silent_error"))
    assert silent.is_error and silent.error == "tool reported an error without a message"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("path", "code", "words"),
    [
        ("not_json", "INVALID_ARGUMENT", "not JSON"),
        ("nan", "INVALID_ARGUMENT", "not JSON"),
        ("bad_flag", "INVALID_ARGUMENT", "is_error that is not a boolean"),
        ("server_error", "UNAVAILABLE", "answered HTTP 500"),
        ("not_found", "FAILED_PRECONDITION", "answered HTTP 404"),
        ("big_output", "RESOURCE_EXHAUSTED", "the limit is 200000 bytes"),
        ("declared_huge", "RESOURCE_EXHAUSTED", "byte message limit"),
        ("endless", "RESOURCE_EXHAUSTED", "byte message limit"),
        ("deep", "INVALID_ARGUMENT", "nested too deeply"),
        ("bad_parts", "INVALID_ARGUMENT", "not content parts"),
        ("not_png", "INVALID_ARGUMENT", "image"),
    ],
)
async def test_a_misbehaving_http_plugin_is_an_error_result_with_a_reason(
    dispatcher: Dispatcher, plugin_url: str, path: str, code: str, words: str
) -> None:
    result = await dispatcher.invoke(spec(plugin_url, path))
    assert result.is_error
    assert result.error.startswith(f"{code}: plugin for tool 't' at {plugin_url}/{path}"), result
    assert words in result.error
    assert "Traceback" not in result.error


@pytest.mark.anyio
async def test_the_tools_deadline_and_output_schema_apply_as_for_grpc_plugins(
    dispatcher: Dispatcher, plugin_url: str
) -> None:
    started = time.monotonic()
    slow = await dispatcher.invoke(spec(plugin_url, "slow", timeout_seconds=0.3))
    assert slow.is_error and slow.error.startswith("DEADLINE_EXCEEDED")
    assert "did not answer within 0.3s" in slow.error
    assert time.monotonic() - started < 2.5  # the 3 s answer was not awaited
    schema = {"type": "object", "properties": {"temp": {"type": "number"}}}
    shaped = spec(plugin_url, "wrong_shape")
    d = tools_pb2.ToolDefinition()
    d.CopyFrom(shaped.definition)
    d.output_schema.CopyFrom(to_struct(schema))
    result = await dispatcher.invoke(ToolSpec.from_definition(d))
    assert result.is_error and "output_schema" in result.error


@pytest.mark.anyio
async def test_an_unreachable_http_plugin_says_so_and_nothing_more(dispatcher: Dispatcher) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = await dispatcher.invoke(spec(url, "x"))
    assert result.error == f"UNAVAILABLE: plugin for tool 't' at {url}/x is unreachable"


@pytest.mark.anyio
async def test_an_http_plugin_can_answer_content_parts_like_a_grpc_plugin(
    dispatcher: Dispatcher, plugin_url: str
) -> None:
    result = await dispatcher.invoke(spec(plugin_url, "image"))
    assert not result.is_error, result.error
    assert from_value(result.output) == "a chart"
    image, caption = result.parts
    assert image.image.mime_type == "image/png" and image.image.data == PNG
    assert caption.text == "caption"
