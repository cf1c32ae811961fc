"""A second, independent MCP implementation: Node's ``@modelcontextprotocol/sdk``.

tests/node_mcp/server.mjs (a Node MCP server, stdio) is mounted and called
through ``ToolRegistry.Invoke`` and ``LLMService.Chat``; tests/node_mcp/client.mjs
(a Node MCP client, streamable HTTP) lists and calls the Python SDK's server,
so it is known to work, then ``toolcall gateway``'s /mcp. The
npm packages are pinned in tests/node_mcp/package-lock.json and installed
with ``npm ci`` when missing. Node is on every machine these tests run on: a
missing ``node`` fails the tests, saying so, instead of skipping them.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.mcp_mount import ServerSpec
from tests.support.llm_env import llm_env, user
from tests.support.mcp_mount import PY_TOOLS, SERVERS, invoke, mounted, wait_names
from tests.support.plugins import ChildProcess, child_env, free_port, wait_for
from tests.support.registry import running_registry
from toolcall.jsonvalue import from_value
from toolcall.v1 import llm_pb2

pytestmark = pytest.mark.anyio

NODE_DIR = Path(__file__).with_name("node_mcp")
NODE_TOOLS = {"node_reverse", "node_sum", "node_fail"}


def node() -> str:
    found = shutil.which("node")
    if found is None:
        pytest.fail("node is not on PATH: install Node.js 18+ (the Node MCP tests need it)")
    return found


@pytest.fixture(scope="module")
def node_sdk() -> Path:
    """Installs the pinned npm packages (package-lock.json) when they are missing."""
    node()
    modules = NODE_DIR / "node_modules"
    if not (modules / "@modelcontextprotocol" / "sdk" / "package.json").is_file():
        npm = shutil.which("npm")
        if npm is None:
            pytest.fail("npm is not on PATH: it installs tests/node_mcp's pinned packages")
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--prefer-offline"],
            cwd=NODE_DIR,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, f"npm ci failed:\n{done.stdout}\n{done.stderr}"
    return modules


def node_server() -> ServerSpec:
    return ServerSpec(name="node", command=node(), args=(str(NODE_DIR / "server.mjs"),))


async def test_a_node_mcp_server_is_mounted_and_called_through_invoke(
    tmp_path: Path, node_sdk: Path
) -> None:
    async with running_registry(tmp_path) as reg, mounted(reg.target, node_server()):
        await wait_names(reg, "mcp:node", NODE_TOOLS)
        reversed_ = await invoke(reg, "node_reverse", {"text": "abc"})
        assert not reversed_.is_error and from_value(reversed_.output) == "cba"
        summed = await invoke(reg, "node_sum", {"a": 2, "b": 40})
        assert not summed.is_error and from_value(summed.output) == {"sum": 42}
        failed = await invoke(reg, "node_fail", {"reason": "on purpose"})
        assert failed.is_error and failed.error == "on purpose"
        wrong = await invoke(reg, "node_sum", {"a": 1})
        assert wrong.is_error and wrong.error.startswith("INVALID_ARGUMENT")


async def test_a_chat_calls_a_tool_of_a_mounted_node_mcp_server(
    tmp_path: Path, node_sdk: Path
) -> None:
    async with llm_env(tmp_path, "127.0.0.1:1") as env, mounted(env.registry.target, node_server()):
        assert await env.llm.view.wait_for("default", "node_reverse", timeout_s=20)
        reply = await env.stub.Chat(
            llm_pb2.ChatRequest(
                session_id="node-chat",
                provider="offline",
                messages=[user("Please reverse 'stressed'")],
            ),
            timeout=30,
        )
        (record,) = reply.tool_calls
        assert record.call.name == "node_reverse" and not record.result.is_error, record
        assert from_value(record.result.output) == "desserts"
        assert "desserts" in reply.message.content


async def _port_open(port: int) -> bool:
    def probe() -> bool:
        with socket.socket() as s:
            s.settimeout(0.2)
            return s.connect_ex(("127.0.0.1", port)) == 0

    return await asyncio.to_thread(probe)


def http_server(port: int, tmp_path: Path, tag: str, *extra: str) -> ChildProcess:
    argv = [sys.executable, str(SERVERS / "py_server.py"), "--http", str(port), *extra]
    return ChildProcess(argv, tmp_path / f"http-{tag}.log", child_env())


async def test_the_node_mcp_client_lists_and_calls_a_streamable_http_server(
    tmp_path: Path, node_sdk: Path
) -> None:
    port = free_port()
    with http_server(port, tmp_path, "client"):
        await wait_for(lambda: _port_open(port), bool, 20)
        argv = [node(), str(NODE_DIR / "client.mjs"), f"http://127.0.0.1:{port}/mcp"]
        argv += ["py_echo", json.dumps({"text": "from node"})]
        done = await asyncio.to_thread(
            subprocess.run, argv, capture_output=True, text=True, timeout=60
        )
    assert done.returncode == 0, done.stdout + done.stderr
    printed = json.loads(done.stdout)
    assert {t["name"] for t in printed["tools"]} >= {"py_echo", "py_add"}
    assert printed["call"]["structuredContent"] == {"result": "from node"}
    assert printed["server"]["name"] == "py-test-server"


async def test_a_streamable_http_server_is_mounted_and_its_tools_follow_it_down_and_up(
    tmp_path: Path,
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/mcp"
    spec = ServerSpec(name="web", url=url)
    async with running_registry(tmp_path) as reg, mounted(reg.target, spec, init_timeout_s=2.0):
        with http_server(port, tmp_path, "first"):
            await wait_names(reg, "mcp:web", PY_TOOLS)
            echoed = await invoke(reg, "py_echo", {"text": "over http"})
            assert from_value(echoed.output) == {"result": "over http"}
        # The server is gone: a failed ping (every 5 s) withdraws its tools.
        await wait_names(reg, "mcp:web", set(), timeout_s=20)
        with http_server(port, tmp_path, "second"):
            await wait_names(reg, "mcp:web", PY_TOOLS, timeout_s=30)


@pytest.mark.parametrize("answers", ["json", "sse"])
async def test_a_huge_answer_over_http_is_an_error_result_and_the_server_stays_mounted(
    tmp_path: Path, answers: str
) -> None:
    port = free_port()
    spec = ServerSpec(name="web", url=f"http://127.0.0.1:{port}/mcp")
    extra = ("--json",) if answers == "json" else ()
    async with (
        running_registry(tmp_path) as reg,
        mounted(reg.target, spec, max_message_bytes=64 * 1024) as (m,),
    ):
        with http_server(port, tmp_path, answers, *extra):
            await wait_names(reg, "mcp:web", PY_TOOLS)
            starts = m.starts  # the first tries may have come before the server listened
            small = await invoke(reg, "py_big", {"size": 1000})
            assert from_value(small.output) == {"result": "x" * 1000}
            big = await invoke(reg, "py_big", {"size": 5_000_000})
            assert big.is_error and "RESOURCE_EXHAUSTED" in big.error, big.error
            echoed = await invoke(reg, "py_echo", {"text": "still here"})
            assert from_value(echoed.output) == {"result": "still here"}
            assert m.starts == starts


async def test_the_node_mcp_client_lists_and_calls_toolcall_mcp_serve(
    tmp_path: Path, node_sdk: Path
) -> None:
    """The other direction: Node's client against the gateway's /mcp, whose tools
    are a mounted Node server's: Node → toolcall → Node, both SDKs real."""
    from tests.support.gateway import GatewayProcess

    async with running_registry(tmp_path) as reg, mounted(reg.target, node_server()):
        await wait_names(reg, "mcp:node", NODE_TOOLS)
        with GatewayProcess(reg.target, tmp_path) as gateway:
            await gateway.healthy()
            argv = [node(), str(NODE_DIR / "client.mjs"), gateway.mcp_url]
            argv += ["node_sum", json.dumps({"a": 20, "b": 22})]
            done = await asyncio.to_thread(
                subprocess.run, argv, capture_output=True, text=True, timeout=60
            )
            assert done.returncode == 0, done.stdout + done.stderr + gateway.log()
            printed = json.loads(done.stdout)
            assert printed["server"]["name"] == "toolcall"
            assert {t["name"] for t in printed["tools"]} == NODE_TOOLS
            assert printed["call"]["structuredContent"] == {"sum": 42}
            assert printed["call"].get("isError") in (None, False)
            argv[-2:] = ["node_sum", json.dumps({"a": "x"})]
            bad = await asyncio.to_thread(
                subprocess.run, argv, capture_output=True, text=True, timeout=60
            )
            refused = json.loads(bad.stdout)["call"]
            assert refused["isError"] is True
            assert "INVALID_ARGUMENT" in refused["content"][0]["text"]
