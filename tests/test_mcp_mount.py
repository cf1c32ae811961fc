"""``toolcall mcp mount`` with real parts: MCP servers as subprocesses, a real registry.

The MCP servers are tests/mcp_servers/py_server.py (the Python SDK's
``MCPServer``), tests/mcp_servers/raw_server.py (hand-written, misbehaving
on purpose) and, in tests/test_mcp_mount_node.py, a Node server built with
npm ``@modelcontextprotocol/sdk``. The mount runs in this process
(``gateway.mcp_mount.run_mounts``) so the tests can read its logs; one test
runs the ``toolcall mcp mount`` command itself.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import os
import signal
import sys
from pathlib import Path

import grpc
import pytest
from mcp import types

from gateway.mcp_mount import (
    MountError,
    ServerSpec,
    add_arguments,
    check_url,
    load_config,
    servers_from_args,
    tool_result,
)
from gateway.mcp_stdio import _LineReader, oversized_reply
from plugin_stub import Audio, File, Image
from tests.support.images import png
from tests.support.llm_env import llm_env, user
from tests.support.mcp_mount import (
    PY_SERVER,
    PY_TOOLS,
    SERVERS,
    invoke,
    mounted,
    names_of,
    raw,
    result_of,
    wait_marked,
    wait_names,
    with_env,
)
from tests.support.plugins import ChildProcess, child_env, list_tools, wait_for
from tests.support.registry import running_registry, tool
from toolcall.jsonvalue import from_struct, from_value
from toolcall.v1 import llm_pb2

pytestmark = pytest.mark.anyio

# -- a Python SDK server -----------------------------------------------------------


async def test_a_python_sdk_server_is_mounted_and_its_tools_answer_through_invoke(
    tmp_path: Path,
) -> None:
    async with running_registry(tmp_path) as reg, mounted(reg.target, PY_SERVER):
        await wait_names(reg, "mcp:py", PY_TOOLS)
        echoed = await invoke(reg, "py_echo", {"text": "hello"})
        assert result_of(echoed) == "hello"
        added = await invoke(reg, "py_add", {"a": 2, "b": 3})
        assert not added.is_error and from_value(added.output) == {"sum": 5}
        failed = await invoke(reg, "py_fail", {"reason": "no such city"})
        assert failed.is_error and "no such city" in failed.error
        wrong = await invoke(reg, "py_add", {"a": "two"})
        assert wrong.is_error and wrong.error.startswith("INVALID_ARGUMENT")
        image = await invoke(reg, "py_image")
        assert not image.is_error
        assert from_value(image.output) == "a caption"
        (part,) = image.parts
        assert part.image.mime_type == "image/png" and part.image.data == png(2, 2)
        (listed,) = [t.tool for t in await list_tools(reg.stub) if t.tool.name == "py_add"]
        assert listed.title == "Add"
        assert listed.annotations.read_only and not listed.annotations.open_world
        assert not listed.annotations.HasField("destructive")
        assert from_struct(listed.output_schema)["type"] == "object"


async def test_tools_follow_the_server_on_tools_list_changed(tmp_path: Path) -> None:
    async with running_registry(tmp_path) as reg, mounted(reg.target, PY_SERVER):
        await wait_names(reg, "mcp:py", PY_TOOLS)
        assert result_of(await invoke(reg, "py_grow")) == "grown"
        await wait_names(reg, "mcp:py", PY_TOOLS | {"py_extra"})
        assert result_of(await invoke(reg, "py_extra", {"x": 21})) == 42
        assert result_of(await invoke(reg, "py_shrink")) == "shrunk"
        await wait_names(reg, "mcp:py", PY_TOOLS)


async def test_a_server_killed_with_sigkill_is_restarted_and_its_tools_leave_and_return(
    tmp_path: Path,
) -> None:
    async with running_registry(tmp_path) as reg, mounted(reg.target, PY_SERVER) as (m,):
        await wait_names(reg, "mcp:py", PY_TOOLS)
        pid = int(result_of(await invoke(reg, "py_pid")))
        slow = asyncio.create_task(invoke(reg, "py_sleep", {"seconds": 30}))
        await asyncio.sleep(0.3)  # the call is in flight when the server dies
        os.kill(pid, signal.SIGKILL)
        cut = await asyncio.wait_for(slow, 10)
        assert cut.is_error and cut.error.startswith("UNAVAILABLE: MCP server py went away"), cut
        # Down: withdrawn (the restart waits restart_initial_s = 1 s first).
        await wait_names(reg, "mcp:py", set(), timeout_s=5)
        await wait_names(reg, "mcp:py", PY_TOOLS, timeout_s=30)
        new_pid = int(result_of(await invoke(reg, "py_pid")))
        assert new_pid != pid and m.starts == 2
        assert result_of(await invoke(reg, "py_echo", {"text": "back"})) == "back"


async def test_a_caller_giving_up_cancels_the_mcp_call(tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    spec = with_env(PY_SERVER, MCP_TEST_MARKS=str(marks))
    async with running_registry(tmp_path) as reg, mounted(reg.target, spec):
        await wait_names(reg, "mcp:py", PY_TOOLS)
        # The caller's deadline (1.5 s) comes long before the tool's timeout (10 s):
        # gRPC cancels the call at the registry, the registry's call to the mount,
        # and the mount's MCP request, which the server hears as notifications/cancelled.
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await invoke(reg, "py_sleep", {"seconds": 60}, deadline_s=1.5)
        assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        await wait_marked(marks, "cancelled")
        assert result_of(await invoke(reg, "py_echo", {"text": "next"})) == "next"


async def test_a_chat_calls_a_mounted_mcp_tool(tmp_path: Path) -> None:
    async with (
        llm_env(tmp_path, "127.0.0.1:1") as env,
        mounted(env.registry.target, PY_SERVER),
    ):
        assert await env.llm.view.wait_for("default", "py_echo", timeout_s=20)
        reply = await env.stub.Chat(
            llm_pb2.ChatRequest(
                session_id="mcp-chat",
                provider="offline",
                messages=[user("Please echo 'hello from MCP'")],
            ),
            timeout=30,
        )
        (call,) = reply.tool_calls
        assert call.call.name == "py_echo" and not call.result.is_error, call
        assert from_value(call.result.output) == {"result": "hello from MCP"}
        assert "hello from MCP" in reply.message.content


# -- bad servers -------------------------------------------------------------------


async def test_tools_with_bad_schemas_names_or_duplicates_are_refused_one_by_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway")
    async with running_registry(tmp_path) as reg, mounted(reg.target, raw("normal")):
        await wait_names(reg, "mcp:raw", {"ok", "huge", "hang"})
        assert from_value((await invoke(reg, "ok")).output) == "ok"
    logged = caplog.text
    assert "tool 'ok' more than once; the first is mounted" in logged
    assert "tool 'bad_schema' is not mounted" in logged
    assert "tool 'bad/name' is not mounted" in logged


async def test_a_huge_output_is_an_error_result_and_the_server_stays_usable(
    tmp_path: Path,
) -> None:
    async with (
        running_registry(tmp_path) as reg,
        mounted(reg.target, raw("normal"), max_message_bytes=64 * 1024) as (m,),
    ):
        await wait_names(reg, "mcp:raw", {"ok", "huge", "hang"})
        small = await invoke(reg, "huge", {"size": 1000})
        assert not small.is_error and from_value(small.output) == "x" * 1000
        big = await invoke(reg, "huge", {"size": 20_000_000})
        assert big.is_error and big.error.startswith("RESOURCE_EXHAUSTED"), big.error
        assert "65536" in big.error
        assert from_value((await invoke(reg, "ok")).output) == "ok"
        assert m.starts == 1


async def test_a_server_that_never_answers_initialize_is_retried_and_others_keep_working(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway")
    async with (
        running_registry(tmp_path) as reg,
        mounted(
            reg.target,
            raw("silent", "mute"),
            PY_SERVER,
            only={"mute": {"init_timeout_s": 1.0, "restart_max_s": 1.0}},
        ) as (mute, _),
    ):
        await wait_names(reg, "mcp:py", PY_TOOLS)
        await wait_for(lambda: asyncio.sleep(0), lambda _: mute.starts >= 3, 30)
        assert await names_of(reg, "mcp:mute") == set()
        assert result_of(await invoke(reg, "py_echo", {"text": "fine"})) == "fine"
    assert "MCP server mute did not answer initialize within 1s" in caplog.text


async def test_a_server_that_cannot_be_started_is_retried_with_a_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway")
    missing = ServerSpec(name="gone", command=str(tmp_path / "no-such-server"))
    async with running_registry(tmp_path) as reg, mounted(reg.target, missing) as (m,):
        await wait_for(lambda: asyncio.sleep(0), lambda _: m.starts >= 2, 10)
        assert await names_of(reg, "mcp:gone") == set()
    assert "MCP server gone could not be started (No such file or directory)" in caplog.text
    assert "Traceback" not in caplog.text


async def test_garbage_on_stdout_is_skipped_with_a_log_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway")
    async with running_registry(tmp_path) as reg, mounted(reg.target, raw("garbage")) as (m,):
        await wait_names(reg, "mcp:raw", {"ok", "huge", "hang"})
        assert from_value((await invoke(reg, "ok")).output) == "ok"
        assert m.starts == 1
    assert "wrote a line that is not JSON-RPC on stdout" in caplog.text
    assert "Traceback" not in caplog.text


async def test_a_call_that_hangs_ends_at_its_timeout_and_the_server_is_told(
    tmp_path: Path,
) -> None:
    marks = tmp_path / "marks"
    spec = with_env(raw("normal"), MCP_TEST_MARKS=str(marks))
    async with running_registry(tmp_path) as reg, mounted(reg.target, spec, timeout_s=1.0):
        await wait_names(reg, "mcp:raw", {"ok", "huge", "hang"})
        hung = await invoke(reg, "hang")
        assert hung.is_error and "DEADLINE_EXCEEDED" in hung.error, hung
        await wait_marked(marks, "cancelled")
        assert from_value((await invoke(reg, "ok")).output) == "ok"


async def test_a_name_another_source_holds_is_not_replaced_and_a_prefix_mounts_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway")
    async with running_registry(tmp_path) as reg:
        assert (await reg.register(tool("py_echo", source="plugin:other"))).ok
        async with mounted(reg.target, PY_SERVER):
            await wait_names(reg, "mcp:py", PY_TOOLS - {"py_echo"})
            assert await names_of(reg, "plugin:other") == {"py_echo"}
        assert "plugin:other already registers a tool of that name" in caplog.text
        async with mounted(reg.target, PY_SERVER, prefix="notes."):
            await wait_names(reg, "mcp:py", {f"notes.{n}" for n in PY_TOOLS})
            echoed = await invoke(reg, "notes.py_echo", {"text": "prefixed"})
            assert result_of(echoed) == "prefixed"


# -- the command -------------------------------------------------------------------


async def test_the_command_mounts_an_mcpservers_file_and_sigterm_clears_the_tools(
    tmp_path: Path,
) -> None:
    config = tmp_path / "mcp.json"
    config.write_text(
        json.dumps(
            {
                "mcpServers": {
                    "py": {"command": sys.executable, "args": [str(SERVERS / "py_server.py")]},
                    "raw": {
                        "command": sys.executable,
                        "args": [str(SERVERS / "raw_server.py"), "normal"],
                    },
                    "off": {"command": "does-not-exist", "disabled": True},
                }
            }
        )
    )
    async with running_registry(tmp_path) as reg:
        argv = [sys.executable, "-m", "toolcall.cli", "mcp", "mount", "--config", str(config)]
        env = child_env(TOOLCALL_REGISTRY_ADDRESS=reg.target)
        with ChildProcess(argv, tmp_path / "mount.log", env) as proc:
            await wait_names(reg, "mcp:py", PY_TOOLS)
            await wait_names(reg, "mcp:raw", {"ok", "huge", "hang"})
            leases = {t.lease_id for t in await list_tools(reg.stub) if t.tool.source}
            assert len(leases) == 2  # one lease per server
            pid = int(result_of(await invoke(reg, "py_pid")))
            proc.proc.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(proc.proc.wait, 15) == 0, proc.log()
        assert await list_tools(reg.stub) == []
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


# -- pieces ------------------------------------------------------------------------


def test_an_mcpservers_file_is_read_as_mcp_hosts_write_it(tmp_path: Path) -> None:
    path = tmp_path / "mcp.json"
    path.write_text(
        json.dumps(
            {
                "mcpServers": {
                    "notes": {"command": "python", "args": ["s.py"], "env": {"K": "v"}},
                    "docs": {"type": "http", "url": "http://127.0.0.1:8000/mcp"},
                }
            }
        )
    )
    notes, docs = load_config(path)
    assert (notes.name, notes.command, notes.args, notes.env) == (
        "notes",
        "python",
        ("s.py",),
        {"K": "v"},
    )
    assert docs.url == "http://127.0.0.1:8000/mcp" and docs.source == "mcp:docs"


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("{", "is not JSON"),
        ('{"servers": {}}', '"mcpServers"'),
        ('{"mcpServers": {"a b": {"command": "x"}}}', "must match"),
        ('{"mcpServers": {"a": {"args": ["x"]}}}', 'needs a "command"'),
        ('{"mcpServers": {"a": {"command": "x", "args": "y"}}}', "args must be a list"),
        ('{"mcpServers": {"a": {"url": "http://10.0.0.1/mcp"}}}', "not on loopback"),
        ('{"mcpServers": {"a": {"type": "sse", "url": "http://127.0.0.1/sse"}}}', "SSE"),
    ],
)
def test_a_bad_mcpservers_file_is_refused_with_the_reason(
    tmp_path: Path, content: str, says: str
) -> None:
    path = tmp_path / "mcp.json"
    path.write_text(content)
    with pytest.raises(MountError, match=says):
        load_config(path)


def test_only_loopback_urls_are_mounted() -> None:
    assert check_url("http://[::1]:9/mcp") and check_url("http://localhost:9/mcp")
    with pytest.raises(MountError, match="not on loopback"):
        check_url("http://example.org/mcp")


def test_mcp_results_map_to_tool_results() -> None:
    def text(t: str) -> types.TextContent:
        return types.TextContent(type="text", text=t)

    assert tool_result(types.CallToolResult(content=[text('{"a": 1}')])) == {
        "output": {"a": 1},
        "is_error": False,
        "parts": [],
    }
    assert tool_result(types.CallToolResult(content=[text("plain")]))["output"] == "plain"
    assert tool_result(types.CallToolResult(content=[text("1"), text("x")]))["output"] == [1, "x"]
    structured = types.CallToolResult(content=[text("ignored")], structured_content={"b": 2})
    assert tool_result(structured)["output"] == {"b": 2}
    failed = tool_result(types.CallToolResult(content=[text("bad city")], is_error=True))
    assert failed == {"output": None, "is_error": True, "error": "bad city", "parts": []}
    assert tool_result(types.CallToolResult(content=[]))["output"] is None
    picture = base64.b64encode(png()).decode()
    mixed = tool_result(
        types.CallToolResult(
            content=[
                types.ImageContent(type="image", data=picture, mime_type="image/png"),
                types.ImageContent(type="image", data=picture, mime_type="image/svg+xml"),
                types.AudioContent(type="audio", data="AAEC", mime_type="audio/wav"),
                types.ImageContent(type="image", data="not base64!", mime_type="image/png"),
                text("caption"),
            ]
        )
    )
    image, svg, audio = mixed["parts"]
    assert isinstance(image, Image) and image.data == png()
    assert isinstance(svg, File) and svg.mime_type == "image/svg+xml"  # not an image type we take
    assert isinstance(audio, Audio) and audio.data == b"\x00\x01\x02"
    assert mixed["output"] == ["[image content (its data is not base64) dropped]", "caption"]


def test_an_oversized_reply_is_matched_to_its_request_at_either_end() -> None:
    python_style = b'{"jsonrpc":"2.0","id":7,"result":{"content":[{"type":"text","text":"xxx'
    node_style = b'xxxxx"}]},"jsonrpc":"2.0","id":"a-9"}'
    head = oversized_reply(python_style, b"xxx", 10**9, 1024)
    tail = oversized_reply(b'{"result":{"content":[{"text":"xx', node_style, 10**9, 1024)
    assert head is not None and tail is not None
    assert isinstance(head.message, types.JSONRPCError) and head.message.id == 7
    assert isinstance(tail.message, types.JSONRPCError) and tail.message.id == "a-9"
    assert "RESOURCE_EXHAUSTED" in head.message.error.message
    assert oversized_reply(b"garbage", b"garbage", 10**9, 1024) is None


def test_the_line_reader_never_holds_more_than_its_limit() -> None:
    reader = _LineReader(limit=100)
    out = reader.feed(b'{"a":1}\n' + b"y" * 1000)
    assert out == [b'{"a":1}']
    assert reader._held == 0  # the long line is being discarded, not kept
    for _ in range(100):
        assert reader.feed(b"z" * 10_000) == []
    (over,) = reader.feed(b"end\n")
    assert isinstance(over, tuple) and over[2] == 1000 + 1_000_000 + 3
    assert reader.feed(b"next\n") == [b"next"]


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        ([], "exactly one of"),
        (["--name", "a", "--url", "http://127.0.0.1:1/mcp", "--", "x"], "exactly one of"),
        (["--", "python", "s.py"], "--name is required"),
        (["--name", "a b", "--", "x"], "must match"),
        (["--config", "f.json", "--name", "a"], "--name comes from the file"),
    ],
)
def test_the_command_line_names_exactly_one_source(argv: list[str], says: str) -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    with pytest.raises(MountError, match=says):
        servers_from_args(parser.parse_args(argv))


def test_everything_after_the_double_dash_is_the_servers_command() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    (spec,) = servers_from_args(parser.parse_args(["--name", "n", "--", "node", "s.mjs", "--x"]))
    assert (spec.name, spec.command, spec.args, spec.source) == (
        "n",
        "node",
        ("s.mjs", "--x"),
        "mcp:n",
    )
