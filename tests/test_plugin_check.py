"""``toolcall plugin check``: passes the SDK's example plugin, names each way a broken one fails.

The command runs as a user runs it (a child process); the plugins are real
gRPC servers on loopback: the weather example as its own process, the
broken plugin in this test's process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import threading
from collections.abc import AsyncIterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.support.gateway import GatewayProcess
from tests.support.plugins import (
    REPO_ROOT,
    ChildProcess,
    PluginProcess,
    child_env,
    free_port,
    list_tools,
    registry_in_process,
    wait_for,
)
from toolcall.cli.plugin_check import example_value, wrong_types
from toolcall.clients import channel
from toolcall.jsonvalue import from_struct, to_value
from toolcall.v1 import callback_pb2, callback_pb2_grpc, registry_pb2, registry_pb2_grpc, tools_pb2

pytestmark = pytest.mark.anyio

SUPPORT = REPO_ROOT / "tests" / "support"

ALL_CHECKS = {
    "well-formed",
    "bad-json",
    "wrong-types",
    "unknown-tool",
    "deadline",
    "cancelled",
    "still-serving",
}


async def plugin_check(*argv: str) -> tuple[int, str, str]:
    """``toolcall plugin check ...`` in a child process (this loop keeps serving meanwhile)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "toolcall.cli",
        "plugin",
        "check",
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=child_env(),
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def verdicts(out: str) -> dict[tuple[str, str], str]:
    return {(r["check"], r["tool"]): r["verdict"] for r in json.loads(out)}


async def test_plugin_check_passes_the_python_sdk_example_plugin(tmp_path: Path) -> None:
    async with registry_in_process(tmp_path) as registry, channel(registry) as ch:
        stub = registry_pb2_grpc.ToolRegistryStub(ch)
        with PluginProcess("toolcall_examples.weather_plugin", registry, tmp_path):
            tools = await wait_for(
                lambda: list_tools(stub, source="plugin:weather"), lambda t: len(t) == 2, 20
            )
            address = tools[0].tool.callback_address
            code, out, err = await plugin_check(address, "--registry", registry, "--json")
            assert code == 0, out + err
            found = verdicts(out)
            assert "FAIL" not in found.values(), out
            assert {check for check, _ in found} == ALL_CHECKS
            # Both tools, from the registry, with arguments made from their schemas.
            assert found[("well-formed", "get_weather")] == "PASS"
            assert found[("wrong-types", "get_forecast")] == "PASS"

            code, out, _ = await plugin_check(address, "--registry", registry)
            assert code == 0
            assert out.splitlines()[-1].endswith("meets the contract")


class BrokenPlugin(callback_pb2_grpc.ToolCallbackServicer):
    """``echo`` answers good calls, but trusts its arguments blindly (a KeyError or
    AttributeError escapes as UNKNOWN) and answers for any tool name."""

    async def Invoke(
        self, request: callback_pb2.ToolCallbackInvokeRequest, context: Any
    ) -> callback_pb2.ToolCallbackInvokeResponse:
        text = from_struct(request.arguments)["text"]
        return callback_pb2.ToolCallbackInvokeResponse(output=to_value(text.upper()))


@contextlib.asynccontextmanager
async def broken_plugin() -> AsyncIterator[str]:
    server = grpc.aio.server()
    callback_pb2_grpc.add_ToolCallbackServicer_to_server(BrokenPlugin(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        await server.stop(0)


async def test_plugin_check_reports_each_way_a_broken_plugin_breaks_the_contract() -> None:
    async with broken_plugin() as address:
        # No registry (nothing listens there): --tool and --args say what to call.
        nobody = f"127.0.0.1:{free_port()}"
        code, out, err = await plugin_check(
            address, "--registry", nobody, "--tool", "echo", "--args", '{"text": "hi"}', "--json"
        )
        assert code == 1, out + err
        results = {r["check"]: r for r in json.loads(out)}
        assert results["well-formed"]["verdict"] == "PASS"
        assert results["well-formed"]["got"] == 'result: "HI"'
        for check in ("bad-json", "unknown-tool"):
            assert results[check]["verdict"] == "FAIL", results[check]
        assert results["bad-json"]["got"].startswith("status UNKNOWN")
        assert "answered as if it ran" in results["unknown-tool"]["why"]
        # Without a schema the checker cannot know what a wrong type is.
        assert results["wrong-types"]["verdict"] == "SKIP"

        code, out, _ = await plugin_check(
            address, "--registry", nobody, "--tool", "echo", "--args", '{"text": "hi"}'
        )
        assert code == 1
        assert "FAIL  echo" in out and "does not meet the contract" in out


async def test_plugin_check_says_how_to_name_a_tool_and_when_no_plugin_answers(
    tmp_path: Path,
) -> None:
    async with registry_in_process(tmp_path) as registry, broken_plugin() as address:
        code, _, err = await plugin_check(address, "--registry", registry)
        assert code == 2
        assert f"no tools with callback address {address}" in err and "--tool NAME" in err
        code, _, err = await plugin_check("10.0.0.1:5000", "--registry", registry)
        assert code == 2 and "loopback" in err
        # One line, not a FAIL per check, when nothing listens there.
        gone = f"127.0.0.1:{free_port()}"
        code, out, err = await plugin_check(
            gone, "--tool", "echo", "--args", "{}", "--timeout", "2"
        )
        assert code == 1 and out == ""
        assert err == f"error: cannot reach a plugin at {gone} within 2s\n"


async def test_plugin_check_checks_an_http_plugin_written_from_the_seed_contract(
    tmp_path: Path,
) -> None:
    # The plugin registers itself through the gateway's /api, as it would with a seed's
    # registry; the checker finds its tool in the registry by the callback URL.
    async with registry_in_process(tmp_path) as registry:
        with GatewayProcess(registry, tmp_path) as gateway:
            await gateway.healthy()
            argv = [sys.executable, str(SUPPORT / "http_seed_plugin.py"), gateway.url]
            with ChildProcess(argv, tmp_path / "seed.log", child_env()) as plugin:
                port = await wait_for(lambda: asyncio.sleep(0, _ready_port(plugin)), bool, 20)
                url = f"http://127.0.0.1:{port}/tool_invoke"
                code, out, err = await plugin_check(url, "--registry", registry, "--json")
                assert code == 0, out + err
                found = verdicts(out)
                assert {check for check, _ in found} == ALL_CHECKS
                assert "FAIL" not in found.values(), out
                assert found[("well-formed", "get_weather")] == "PASS"
                # It trusts its caller's validation and answers any name at its URL:
                # allowed by the contract, said as warnings.
                assert found[("wrong-types", "get_weather")] == "WARN"
                assert found[("unknown-tool", "-")] == "WARN"
                assert found[("still-serving", "get_weather")] == "PASS"

                code, out, _ = await plugin_check(url, "--registry", registry)
                assert code == 0
                assert out.startswith(f"plugin {url}: get_weather\n")
                assert out.splitlines()[-1].endswith("; meets the contract")


def _ready_port(plugin: ChildProcess) -> int:
    assert plugin.alive(), plugin.log()
    for line in plugin.log().splitlines():
        if line.startswith("READY "):
            return int(line.split()[1])
    return 0


class BrokenHttpPlugin(BaseHTTPRequestHandler):
    """``echo`` over HTTP: answers good calls, but a missing argument escapes as an HTTP 500
    with a traceback, a wrong type is answered with NaN (not JSON), any name is served."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        try:
            data = json.dumps({"output": body["arguments"]["text"].upper()}).encode()
            status = 200
        except KeyError:
            data, status = b"Traceback (most recent call last): KeyError: 'text'", 500
        except AttributeError:
            data, status = json.dumps({"output": float("nan")}).encode(), 200
        self.send_response(status)
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


async def test_plugin_check_names_each_way_an_http_plugin_breaks_the_contract(
    tmp_path: Path,
) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BrokenHttpPlugin)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/echo"
    try:
        async with registry_in_process(tmp_path) as registry, channel(registry) as ch:
            tool = tools_pb2.ToolDefinition(name="echo", callback_address=url, source="t")
            tool.parameters.update(
                {"type": "object", "properties": {"text": {"type": "string"}},
                 "required": ["text"]}
            )  # fmt: skip
            stub = registry_pb2_grpc.ToolRegistryStub(ch)
            assert (await stub.Register(registry_pb2.RegisterRequest(tool=tool))).ok
            code, out, err = await plugin_check(url, "--registry", registry, "--json")
            assert code == 1, out + err
            results = {r["check"]: r for r in json.loads(out)}
            assert results["well-formed"]["verdict"] == "PASS"
            assert results["well-formed"]["got"] == 'result: "EXAMPLE"'
            assert results["bad-json"]["verdict"] == "FAIL"
            assert results["bad-json"]["got"].startswith("HTTP 500: Traceback")
            assert results["wrong-types"]["verdict"] == "FAIL"
            assert "not JSON" in results["wrong-types"]["got"]
            assert "contract's answer" in results["wrong-types"]["why"]
            assert results["unknown-tool"]["verdict"] == "WARN"
            assert results["still-serving"]["verdict"] == "PASS"
    finally:
        server.shutdown()
        server.server_close()


def test_arguments_made_from_a_schema_fit_it_and_hostile_sizes_are_refused() -> None:
    schema = {
        "type": "object",
        "properties": {
            "city": {"type": "string", "minLength": 10},
            "days": {"type": "integer", "minimum": 3, "maximum": 7},
            "units": {"enum": ["c", "f"]},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
            "optional": {"type": "boolean"},
        },
        "required": ["city", "days", "units", "tags"],
    }
    good = example_value(schema)
    assert good == {
        "city": "exampleexa",
        "days": 3,
        "units": "c",
        "tags": ["example", "example"],
    }
    what, bad = wrong_types(schema, good) or ("", {})
    assert what == "city=12345 (schema: string)" and bad["city"] == 12345
    # A schema asking for a billion characters gets a short string (then fails its
    # own check, and the user is asked for --args), not a billion-character one.
    huge = example_value({"type": "string", "minLength": 10**9})
    assert isinstance(huge, str) and len(huge) == 1000
