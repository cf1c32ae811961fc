"""``toolcall mcp serve`` / the gateway's /mcp, driven by the MCP SDK's own client.

Real parts only: a registry and a ToolCallback server on loopback (in this
process, so the test sees what reached the plugin), the gateway or the stdio
server as a child process, and ``mcp.Client`` speaking both protocol eras
(the 2026-07-28 envelope, and the initialize handshake hosts still use).
"""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx2 as httpx
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from tests.support.gateway import GatewayProcess
from tests.support.images import png
from tests.support.plugins import REPO_ROOT, child_env
from tests.support.registry import (
    NUMBER_SCHEMA,
    Plugin,
    Registry,
    running_plugin,
    running_registry,
    tool,
)
from toolcall.jsonvalue import to_struct
from toolcall.v1 import registry_pb2, tools_pb2

pytestmark = pytest.mark.anyio

MODES = ["auto", "legacy"]  # auto negotiates 2026-07-28; legacy forces the handshake


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[tuple[Registry, Plugin, str, GatewayProcess]]:
    async with running_plugin() as (plugin, address), running_registry(tmp_path) as reg:
        await reg.register(tool("echo", address, parameters=NUMBER_SCHEMA, description="Echo."))
        await reg.register(tool("report_error", address, description="Always fails."))
        await reg.register(tool("sleep", address, description="Sleeps."))
        with GatewayProcess(reg.target, tmp_path) as gateway:
            await gateway.healthy()
            yield reg, plugin, address, gateway


def text(result: Any) -> str:
    return "\n".join(block.text for block in result.content)


@pytest.mark.parametrize("mode", MODES)
async def test_an_mcp_host_lists_and_calls_the_registrys_tools_over_http(
    stack: tuple[Registry, Plugin, str, GatewayProcess], mode: str
) -> None:
    _, plugin, _, gateway = stack
    async with Client(gateway.mcp_url, mode=mode) as client:  # type: ignore[arg-type]
        assert client.server_info is None or client.server_info.name == "toolcall"
        listed = {t.name: t for t in (await client.list_tools()).tools}
        assert set(listed) == {"echo", "report_error", "sleep"}
        assert listed["echo"].description == "Echo."
        assert listed["echo"].input_schema == NUMBER_SCHEMA

        ok = await client.call_tool("echo", {"x": 3})
        assert not ok.is_error, text(ok)
        assert ok.structured_content == {"args": {"x": 3}, "raw": '{"x": 3}', "role": "default"}
        assert '"args": {"x": 3}' in text(ok)

        failed = await client.call_tool("report_error", {})
        assert failed.is_error and "no such city" in text(failed)

        calls_before = len(plugin.calls)
        refused = await client.call_tool("echo", {"x": "three"})
        assert refused.is_error
        assert "INVALID_ARGUMENT" in text(refused) and "arguments.x" in text(refused)
        assert len(plugin.calls) == calls_before, "a schema violation reached the plugin"

        unknown = await client.call_tool("no_such_tool", {})
        assert unknown.is_error and "unknown tool 'no_such_tool'" in text(unknown)


async def test_the_stdio_server_serves_the_same_tools(tmp_path: Path) -> None:
    async with running_plugin() as (_, address), running_registry(tmp_path) as reg:
        await reg.register(tool("echo", address, parameters=NUMBER_SCHEMA))
        params = StdioServerParameters(
            command=sys.executable,
            args=["-m", "toolcall.cli", "mcp", "serve", "--registry", reg.target],
            env=child_env(),
            cwd=str(REPO_ROOT),
        )
        for mode in MODES:
            async with Client(params, mode=mode) as client:  # type: ignore[arg-type]
                assert [t.name for t in (await client.list_tools()).tools] == ["echo"]
                ok = await client.call_tool("echo", {"x": 5})
                assert ok.structured_content is not None
                assert ok.structured_content["args"] == {"x": 5}
                refused = await client.call_tool("echo", {})
                assert refused.is_error and "'x' is a required property" in text(refused)


async def test_handshake_hosts_are_told_when_plugins_come_and_go(
    stack: tuple[Registry, Plugin, str, GatewayProcess],
) -> None:
    reg, _, address, gateway = stack
    changed = anyio.Event()

    async def on_message(message: Any) -> None:
        if getattr(message, "method", "") == "notifications/tools/list_changed":
            changed.set()

    async with Client(gateway.mcp_url, mode="legacy", message_handler=on_message) as client:
        assert client.server_capabilities.tools is not None
        assert client.server_capabilities.tools.list_changed
        await client.list_tools()
        await reg.register(tool("weather", address))
        with anyio.fail_after(10):
            await changed.wait()
        assert "weather" in {t.name for t in (await client.list_tools()).tools}

        changed = anyio.Event()
        lease = await reg.stub.CreateLease(_lease_request(1.0))
        await reg.register(tool("short_lived", address), lease_id=lease.lease_id)
        with anyio.fail_after(10):
            await changed.wait()
        assert "short_lived" in {t.name for t in (await client.list_tools()).tools}
        changed = anyio.Event()  # the plugin "dies": its lease is not kept alive
        with anyio.fail_after(10):
            await changed.wait()
        assert "short_lived" not in {t.name for t in (await client.list_tools()).tools}


async def test_2026_hosts_hear_of_changes_on_a_listen_stream(
    stack: tuple[Registry, Plugin, str, GatewayProcess],
) -> None:
    reg, _, address, gateway = stack
    async with Client(gateway.mcp_url) as client:
        assert client.protocol_version == "2026-07-28"
        async with client.listen(tools_list_changed=True) as sub:
            await reg.register(tool("late", address))
            with anyio.fail_after(10):
                async for _event in sub:
                    break
        assert "late" in {t.name for t in (await client.list_tools()).tools}


@pytest.mark.parametrize("mode", MODES)
async def test_a_host_cancelling_a_call_cancels_the_plugins_call(
    stack: tuple[Registry, Plugin, str, GatewayProcess], mode: str
) -> None:
    # Handshake-era hosts send notifications/cancelled; 2026-era ones close the
    # request's connection, which is their only way to cancel.
    _, plugin, _, gateway = stack
    async with Client(gateway.mcp_url, mode=mode) as client:
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.call_tool, "sleep", {"seconds": 30})
            with anyio.fail_after(10):
                await plugin.started.wait()
            tg.cancel_scope.cancel()
        with anyio.fail_after(10):
            await plugin.calls[-1].cancelled.wait()


async def test_async_tools_answer_at_once_and_their_result_is_fetched_with_get_task(
    tmp_path: Path,
) -> None:
    async with running_plugin() as (_, address), running_registry(tmp_path) as reg:
        await reg.register(
            tool("sleep", address, mode=tools_pb2.TOOL_MODE_ASYNC, ack_message="on it")
        )
        with GatewayProcess(reg.target, tmp_path) as gateway:
            await gateway.healthy()
            async with Client(gateway.mcp_url) as client:
                names = {t.name for t in (await client.list_tools()).tools}
                assert names == {"sleep", "toolcall_get_task"}
                with anyio.fail_after(5):  # answered long before the tool's 0.5 s
                    ack = await client.call_tool("sleep", {"seconds": 0.5})
                assert not ack.is_error
                assert ack.structured_content is not None
                assert ack.structured_content["status"] == "accepted"
                assert ack.structured_content["message"] == "on it"
                task_id = ack.structured_content["task_id"]
                done = await client.call_tool(
                    "toolcall_get_task", {"task_id": task_id, "wait_seconds": 10}
                )
                assert not done.is_error, text(done)
                assert done.structured_content == {
                    "task_id": task_id,
                    "tool": "sleep",
                    "output": "slept",
                }
                for wait in (10**400, -1, "soon", True):  # 10**400: no float holds it
                    bad = await client.call_tool(
                        "toolcall_get_task", {"task_id": task_id, "wait_seconds": wait}
                    )
                    assert bad.is_error and "wait_seconds must be" in text(bad), wait
                missing = await client.call_tool("toolcall_get_task", {"task_id": "task_nope"})
                assert missing.is_error and "NOT_FOUND" in text(missing)


async def test_the_role_comes_from_the_url_and_an_unknown_one_is_refused(tmp_path: Path) -> None:
    async with (
        running_plugin() as (_, address),
        running_registry(tmp_path, roles=["default", "support"]) as reg,
    ):
        await reg.register(tool("everyone", address))
        support_only = tool("support_only", address)
        support_only.role = "support"
        await reg.register(support_only)
        with GatewayProcess(reg.target, tmp_path) as gateway:
            await gateway.healthy()
            async with Client(gateway.mcp_url) as client:
                assert {t.name for t in (await client.list_tools()).tools} == {"everyone"}
            async with Client(f"{gateway.mcp_url}?role=support") as client:
                names = {t.name for t in (await client.list_tools()).tools}
                assert names == {"everyone", "support_only"}
            async with Client(f"{gateway.mcp_url}?role=intruder") as client:
                with pytest.raises(Exception, match="unknown role 'intruder'"):
                    await client.list_tools()


INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"},
    },
}
HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


async def test_dns_rebinding_and_foreign_origins_are_refused(
    stack: tuple[Registry, Plugin, str, GatewayProcess],
) -> None:
    _, _, _, gateway = stack
    async with httpx.AsyncClient() as http:
        ok = await http.post(gateway.mcp_url, json=INIT, headers=HEADERS)
        assert ok.status_code == 200, ok.text
        rebound = await http.post(
            gateway.mcp_url, json=INIT, headers={**HEADERS, "host": "evil.example:48913"}
        )
        assert rebound.status_code == 421
        foreign = await http.post(
            gateway.mcp_url, json=INIT, headers={**HEADERS, "origin": "https://evil.example"}
        )
        assert foreign.status_code == 403
        local_page = await http.post(
            gateway.mcp_url, json=INIT, headers={**HEADERS, "origin": "http://localhost:3000"}
        )
        assert local_page.status_code == 200


async def test_with_a_token_configured_mcp_requires_it(tmp_path: Path) -> None:
    async with running_registry(tmp_path) as reg:
        with GatewayProcess(reg.target, tmp_path, TOOLCALL_TOKEN="s3cret-token") as gateway:
            await gateway.healthy()  # health needs no token
            async with httpx.AsyncClient() as http:
                refused = await http.post(gateway.mcp_url, json=INIT, headers=HEADERS)
                assert refused.status_code == 401
                assert "Bearer" in refused.headers["www-authenticate"]
                wrong = {**HEADERS, "authorization": "Bearer nope"}
                assert (await http.post(gateway.mcp_url, json=INIT, headers=wrong)).status_code
                right = {**HEADERS, "authorization": "Bearer s3cret-token"}
                ok = await http.post(gateway.mcp_url, json=INIT, headers=right)
                assert ok.status_code == 200, ok.text


async def test_a_bridge_without_the_registrys_token_refuses_tool_calls(tmp_path: Path) -> None:
    # Calls go straight to the plugin, past the registry's token rule: a
    # gateway started without the token would run tools for any local caller.
    metadata = (("authorization", "Bearer reg-token"),)
    async with (
        running_plugin() as (plugin, address),
        running_registry(tmp_path, token="reg-token") as reg,
    ):
        definition = tool("echo", address, parameters=NUMBER_SCHEMA)
        await reg.stub.Register(
            registry_pb2.RegisterRequest(tool=definition), metadata=metadata, timeout=5
        )
        with GatewayProcess(reg.target, tmp_path) as gateway:
            await gateway.healthy()
            async with Client(gateway.mcp_url) as client:
                assert [t.name for t in (await client.list_tools()).tools] == ["echo"]
                refused = await client.call_tool("echo", {"x": 1})
                assert refused.is_error and "requires a token" in text(refused)
                assert "TOOLCALL_TOKEN_FILE" in text(refused)
        assert plugin.calls == []

        with GatewayProcess(reg.target, tmp_path, TOOLCALL_TOKEN="reg-token") as gateway:
            await gateway.healthy()
            headers = {"authorization": "Bearer reg-token"}
            async with (
                httpx.AsyncClient(headers=headers) as http,
                Client(streamable_http_client(gateway.mcp_url, http_client=http)) as client,
            ):
                ok = await client.call_tool("echo", {"x": 1})
                assert not ok.is_error, text(ok)
        assert len(plugin.calls) == 1

        # A bridge whose registry went away before it could ask: refused, not run.
        with GatewayProcess(reg.target, tmp_path) as gateway:
            await gateway.healthy()
            async with Client(gateway.mcp_url) as client:
                await client.list_tools()
                await reg.host.stop()
                down = await client.call_tool("echo", {"x": 1})
                assert down.is_error and "cannot be asked" in text(down), text(down)
        assert len(plugin.calls) == 1


def test_the_command_line_keeps_the_tls_and_token_settings_of_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import argparse

    from gateway import mcp_serve

    monkeypatch.setenv("TOOLCALL_TOKEN", "from-the-env")
    monkeypatch.setenv("TOOLCALL_TLS_CA", "/etc/toolcall/ca.pem")
    args = argparse.Namespace(registry="127.0.0.1:1", role="support")
    settings = mcp_serve.settings_from_args(args)
    assert (settings.registry_address, settings.role) == ("127.0.0.1:1", "support")
    assert settings.token == "from-the-env" and settings.tls.ca == "/etc/toolcall/ca.pem"


def test_the_gateway_refuses_to_listen_beyond_loopback(tmp_path: Path) -> None:
    import subprocess

    out = subprocess.run(
        [sys.executable, "-m", "toolcall.cli", "gateway", "--address", "0.0.0.0:48999"],
        env=child_env(),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "loopback only" in out.stderr
    assert "Traceback" not in out.stderr


def _lease_request(ttl: float) -> Any:
    from toolcall.v1 import registry_pb2

    return registry_pb2.CreateLeaseRequest(ttl_seconds=ttl)


async def test_hostile_requests_get_clear_refusals_and_the_gateway_keeps_serving(
    tmp_path: Path,
) -> None:
    async with running_plugin() as (plugin, address), running_registry(tmp_path) as reg:
        await reg.register(tool("echo", address))
        with GatewayProcess(reg.target, tmp_path, TOOLCALL_MCP_MAX_SESSIONS="3") as gateway:
            await gateway.healthy()
            async with httpx.AsyncClient(timeout=30) as http:
                first = await http.post(gateway.mcp_url, json=INIT, headers=HEADERS)
                session = {**HEADERS, "mcp-session-id": first.headers["mcp-session-id"]}
                nested = "[" * 5000 + "]" * 5000
                deep = await http.post(
                    gateway.mcp_url,
                    content='{"jsonrpc":"2.0","id":2,"method":"tools/call","params":'
                    f'{{"name":"echo","arguments":{{"a":{nested}}}}}}}',
                    headers=session,
                )
                assert deep.status_code == 400 and "recursion limit" in deep.text
                huge = await http.post(
                    gateway.mcp_url,
                    content='{"a": "' + "x" * (5 * 1024 * 1024) + '"}',
                    headers=session,
                )
                assert huge.status_code == 413
                for _ in range(2):
                    assert (await http.post(gateway.mcp_url, json=INIT, headers=HEADERS)).is_success
                full = await http.post(gateway.mcp_url, json=INIT, headers=HEADERS)
                assert full.status_code == 503 and "Too many open sessions" in full.text
            assert plugin.calls == []
            async with Client(gateway.mcp_url) as client:  # 2026-07-28 needs no session
                ok = await client.call_tool("echo", {"a": 1})
                assert not ok.is_error and len(plugin.calls) == 1


async def test_titles_hints_output_schemas_metadata_and_content_parts_reach_mcp_hosts(
    tmp_path: Path,
) -> None:
    output_schema = {"type": "object", "properties": {"width": {"type": "integer"}}}
    async with running_plugin() as (_, address), running_registry(tmp_path) as reg:
        d = tool("picture", address, title="Take a picture", output_schema=to_struct(output_schema))
        d.annotations.read_only = True
        d.annotations.open_world = False
        d.metadata["category"] = "camera"
        await reg.register(d)
        with GatewayProcess(reg.target, tmp_path) as gateway:
            await gateway.healthy()
            async with Client(gateway.mcp_url) as client:
                (listed,) = (await client.list_tools()).tools
                assert listed.title == "Take a picture"
                assert listed.annotations is not None
                assert listed.annotations.read_only_hint is True
                assert listed.annotations.open_world_hint is False
                assert listed.annotations.destructive_hint is None  # unset: MCP's default
                assert listed.output_schema == output_schema
                assert listed.meta == {"toolcall/metadata": {"category": "camera"}}
                result = await client.call_tool("picture", {})
                assert not result.is_error
                assert result.structured_content == {"width": 1}
                first, image, link = result.content
                assert first.type == "text" and json.loads(first.text) == {"width": 1}
                assert image.type == "image" and image.mime_type == "image/png"
                assert base64.b64decode(image.data) == png()
                assert link.type == "resource_link" and str(link.uri) == "file:///tmp/report.pdf"
                assert link.name == "report.pdf"
