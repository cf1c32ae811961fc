"""SSRF: what a registered tool can make the registry (or LLMService) dial or fetch.

Through the real Register RPC: every loopback callback form is accepted; every
wildcard, private, public, mapped, numeric, DNS-name, scheme-prefixed and
malformed form is refused with INVALID_ARGUMENT naming
``tool.callback_address``. A ``unix:`` callback that cannot be reached
fails with one message whatever is at the path, so Invoke cannot probe the
registry's filesystem. Parameter schemas must not be a second way out:
a ``$ref`` to another document is refused, and nothing is ever fetched, not
even while arguments are validated.
"""

from __future__ import annotations

import socket
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from registry_service import RegistryHost, RegistrySettings, start_registry
from tests.support.fuzz import (
    ACCEPTED_ADDRESSES,
    INVALID,
    OK,
    REFERENCING_SCHEMAS,
    REFUSED_ADDRESSES,
    Loop,
    Outcome,
    assert_no_traceback,
    background_loop,
)
from toolcall.clients import channel
from toolcall.jsonvalue import to_struct
from toolcall.schemas import compile_validator
from toolcall.v1 import registry_pb2, registry_pb2_grpc, tools_pb2


class Registry:
    def __init__(self, loop: Loop, host: RegistryHost) -> None:
        self.loop = loop
        self.host = host
        self.channel = channel(host.target)
        self.stub: registry_pb2_grpc.ToolRegistryAsyncStub = registry_pb2_grpc.ToolRegistryStub(
            self.channel
        )

    def register(self, d: tools_pb2.ToolDefinition) -> Outcome:
        return self.loop.rpc(
            lambda: self.stub.Register(registry_pb2.RegisterRequest(tool=d), timeout=10)
        )

    def invoke(self, name: str, raw_arguments: str) -> Outcome:
        request = registry_pb2.InvokeRequest(name=name, raw_arguments=raw_arguments)
        return self.loop.rpc(lambda: self.stub.Invoke(request, timeout=10))


async def _start(loop: Loop, tmp: Path) -> Registry:
    settings = RegistrySettings(address="127.0.0.1:0", data_path=tmp / "registry.sqlite3")
    return Registry(loop, await start_registry(settings))


async def _stop(registry: Registry) -> None:
    await registry.channel.close()
    await registry.host.stop()


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with background_loop() as loop:
        reg = loop.run(_start, loop, tmp_path_factory.mktemp("ssrf"))
        try:
            yield reg
        finally:
            loop.run(_stop, reg)


def tool(name: str, address: str, parameters: dict[str, Any] | None = None) -> Any:
    d = tools_pb2.ToolDefinition(name=name, callback_address=address, source="ssrf")
    if parameters is not None:
        d.parameters.CopyFrom(to_struct(parameters))
    return d


@pytest.mark.parametrize("address", ACCEPTED_ADDRESSES)
def test_loopback_callback_addresses_are_accepted(registry: Registry, address: str) -> None:
    out = registry.register(tool("loopback_ok", address))
    assert out.code == OK and out.reply.ok, out


@pytest.mark.parametrize(
    "address", sorted(REFUSED_ADDRESSES), ids=lambda a: f"{REFUSED_ADDRESSES[a]}:{a[:40]!r}"
)
def test_other_callback_addresses_are_refused(registry: Registry, address: str) -> None:
    out = registry.register(tool("ssrf_probe", address))
    assert out.code == INVALID, f"{address!r} ({REFUSED_ADDRESSES[address]}) was accepted"
    assert out.fields == {"tool.callback_address"}, out.violations
    assert "tool.callback_address" in out.details
    assert_no_traceback(out.details)


def test_refused_forms_never_reach_the_registry(registry: Registry) -> None:
    names = {
        t.tool.name
        for t in registry.loop.rpc(
            lambda: registry.stub.List(registry_pb2.ListRequest(), timeout=5)
        ).reply.tools
    }
    assert "ssrf_probe" not in names


class Recorder(BaseHTTPRequestHandler):
    """Answers every GET with a schema, and records that it was asked."""

    hits: list[str] = []  # noqa: RUF012 - one recorder per test, reset by the fixture

    def do_GET(self) -> None:
        type(self).hits.append(self.path)
        body = b'{"type": "string"}'
        self.send_response(200)
        self.send_header("content-type", "application/schema+json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[tuple[str, list[str]]]:
    Recorder.hits = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", Recorder.hits
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("keyword", ["$ref", "$dynamicRef"])
def test_a_schema_reference_to_another_document_is_refused_and_never_fetched(
    registry: Registry, http_server: tuple[str, list[str]], keyword: str
) -> None:
    url, hits = http_server
    schema = {"type": "object", "properties": {"a": {keyword: f"{url}/schema.json"}}}
    out = registry.register(tool("ref_tool", "127.0.0.1:1", schema))
    assert out.code == INVALID and out.fields == {"tool.parameters"}, out
    assert "self-contained" in out.details
    # Even a validator built directly (as the LLMService's view does) fetches nothing.
    reason = compile_validator(schema)({"a": 1})
    assert reason is not None and "cannot be evaluated" in reason
    assert hits == [], f"the schema's $ref was fetched: {hits}"


@pytest.mark.parametrize("schema", REFERENCING_SCHEMAS, ids=lambda s: str(s)[:60])
def test_hostile_references_are_refused_or_fail_as_a_result(
    registry: Registry, schema: dict[str, Any]
) -> None:
    """Refused at Register, or (for a dangling ref deep inside) an is_error result at Invoke."""
    name = "hostile_ref"
    out = registry.register(tool(name, "127.0.0.1:1", schema))
    assert out.code in (OK, INVALID), out
    if out.code == INVALID:
        assert out.fields == {"tool.parameters"}, out.violations
        return
    result = registry.invoke(name, '{"a": 1, "x": 2}')
    assert result.code == OK, result
    assert result.reply.result.is_error
    assert "schema cannot be evaluated" in result.reply.result.error
    assert_no_traceback(result.reply.result.error)


def test_unreachable_unix_callbacks_do_not_tell_what_is_at_the_path(registry: Registry) -> None:
    """Missing, a file, a directory or a socket nobody listens on: the same answer."""
    base = Path(tempfile.mkdtemp(prefix="tc-probe-", dir="/tmp"))
    (base / "file").write_text("not a socket")
    (base / "dir").mkdir()
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(base / "stale.sock"))
    stale.close()  # the socket file stays; connecting to it is refused
    targets = ["missing", "file", "dir", "stale.sock"]
    errors = {}
    for target in targets:
        address = f"unix:{base}/{target}"
        assert registry.register(tool("probe", address)).code == OK
        out = registry.invoke("probe", "{}")
        assert out.code == OK and out.reply.result.is_error, out
        errors[target] = out.reply.result.error.replace(address, "<address>")
    assert len(set(errors.values())) == 1, errors
    assert errors["missing"] == "UNAVAILABLE: plugin for tool 'probe' at <address> is unreachable"
