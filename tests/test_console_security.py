"""The web console's routes against the classic attacks on a local web server.

A page on another site (or another local port) in the user's browser may
send requests to 127.0.0.1: the console's WebSocket and mutations refuse
cross-origin requests, a rebinding Host is refused on every route including
the WebSocket, mutations take JSON only and bounded bodies, and the token
gates the API and the WebSocket when set. Real parts: the gateway process,
a registry and a plugin on loopback, raw HTTP and WebSocket clients.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from gateway.console import MAX_SOCKETS, Outbox
from tests.support.gateway import GatewayProcess
from tests.support.plugins import free_port
from tests.support.registry import NUMBER_SCHEMA, Registry, running_plugin, running_registry, tool
from toolcall.v1 import registry_pb2

pytestmark = pytest.mark.anyio

TOKEN = "s3cret-token"
JSON = {"content-type": "application/json"}


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[tuple[Registry, GatewayProcess]]:
    async with running_plugin() as (_, address), running_registry(tmp_path) as reg:
        await reg.register(tool("echo", address, parameters=NUMBER_SCHEMA))
        # No LLMService: the checks under test come before any call to it.
        llm = f"127.0.0.1:{free_port()}"
        with GatewayProcess(reg.target, tmp_path, TOOLCALL_LLM_ADDRESS=llm) as gw:
            await gw.healthy()
            yield reg, gw


def upgrade(host: str, **extra: str) -> dict[str, str]:
    """Headers of a WebSocket handshake, sent as a plain GET to see the HTTP answer."""
    return {
        "host": host,
        "connection": "Upgrade",
        "upgrade": "websocket",
        "sec-websocket-version": "13",
        "sec-websocket-key": base64.b64encode(os.urandom(16)).decode(),
        **extra,
    }


def ws_url(gw: GatewayProcess) -> str:
    return f"ws://127.0.0.1:{gw.port}/console/ws"


async def messages_until(ws: Any, kind: str) -> dict[str, Any]:
    while True:
        message = json.loads(await asyncio.wait_for(ws.recv(), 10))
        if message["type"] == kind:
            return message


async def test_only_the_consoles_own_page_may_open_its_websocket(
    gateway: tuple[Registry, GatewayProcess],
) -> None:
    _, gw = gateway
    own = f"http://127.0.0.1:{gw.port}"
    async with connect(ws_url(gw), origin=own) as ws:  # type: ignore[arg-type]
        await ws.send(json.dumps({"type": "hello", "session": "s1"}))
        assert (await messages_until(ws, "ready"))["providers"]
        tools = await messages_until(ws, "tools")
        assert [t["name"] for t in tools["tools"]] == ["echo"]
        assert "callback_address" not in tools["tools"][0]
        # No LLMService at its address: the page is told, and the socket stays.
        assert (await messages_until(ws, "status"))["llm"] == "UNAVAILABLE"

    # Another local port (a dev server, a hostile page) and a foreign site: no socket.
    for origin in (f"http://127.0.0.1:{free_port()}", "https://evil.example", "null"):
        with pytest.raises(InvalidStatus) as refused:
            async with connect(ws_url(gw), origin=origin):  # type: ignore[arg-type]
                pass
        assert refused.value.response.status_code == 403, origin


async def test_a_rebinding_host_is_refused_on_the_page_the_api_and_the_websocket(
    gateway: tuple[Registry, GatewayProcess],
) -> None:
    _, gw = gateway
    evil = f"evil.example:{gw.port}"
    async with httpx.AsyncClient(base_url=gw.url) as http:
        for path in ("/", "/console/api/info", "/console/static/console.js"):
            assert (await http.get(path)).status_code == 200, path
            assert (await http.get(path, headers={"host": evil})).status_code == 421, path
        socket = await http.get("/console/ws", headers=upgrade(evil))
        assert socket.status_code == 421, socket.text
        # The same handshake with the right Host is let through to the WebSocket.
        local = await http.get("/console/ws", headers=upgrade(f"127.0.0.1:{gw.port}"))
        assert local.status_code != 421


async def test_mutations_take_same_origin_json_within_the_size_limit(
    gateway: tuple[Registry, GatewayProcess],
) -> None:
    _, gw = gateway
    call = {"name": "echo", "arguments": {"x": 2}}
    async with httpx.AsyncClient(base_url=gw.url, timeout=20) as http:
        ok = await http.post("/console/api/invoke", json=call)
        assert ok.status_code == 200, ok.text
        assert ok.json()["result"]["output"]["args"] == {"x": 2}

        own = {"origin": gw.url, "sec-fetch-site": "same-origin"}
        assert (await http.post("/console/api/invoke", json=call, headers=own)).status_code == 200

        for headers in (
            {"origin": f"http://127.0.0.1:{free_port()}"},
            {"origin": "https://evil.example"},
            {"sec-fetch-site": "cross-site"},
            {"sec-fetch-site": "same-site"},
        ):
            refused = await http.post("/console/api/invoke", json=call, headers=headers)
            assert refused.status_code == 403, headers
            chat = await http.post("/console/api/chat", json={"text": "hi"}, headers=headers)
            assert chat.status_code == 403, headers

        # What a <form> can send without CORS: refused, never parsed.
        for media in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
            form = await http.post(
                "/console/api/invoke", content=json.dumps(call), headers={"content-type": media}
            )
            assert form.status_code == 415, media

        big = json.dumps({"name": "echo", "arguments": {"x": 1, "pad": "x" * (1024 * 1024)}})
        too_big = await http.post("/console/api/invoke", content=big, headers=JSON)
        assert too_big.status_code == 413

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it comes
            for _ in range(20):
                yield b" " * 65536

        streamed = await http.post("/console/api/invoke", content=chunks(), headers=JSON)
        assert streamed.status_code == 413

        bad = await http.post("/console/api/invoke", content="[" * 100_000, headers=JSON)
        assert bad.status_code == 400
        wrong = await http.post("/console/api/invoke", json={"name": 5}, headers=JSON)
        assert wrong.status_code == 422 and wrong.json()["field"] == "name"

        # The registry's own validation, word for word.
        invalid = await http.post("/console/api/invoke", json={**call, "arguments": {"x": "2"}})
        result = invalid.json()["result"]
        assert result["is_error"] and "arguments.x: '2' is not of type 'number'" in result["error"]


async def test_with_a_token_the_console_api_and_websocket_require_it(tmp_path: Path) -> None:
    async with (
        running_plugin() as (_, address),
        running_registry(tmp_path, token=TOKEN) as reg,
    ):
        request = registry_pb2.RegisterRequest(tool=tool("echo", address))
        await reg.stub.Register(request, metadata=(("authorization", f"Bearer {TOKEN}"),))
        with GatewayProcess(reg.target, tmp_path, TOOLCALL_TOKEN=TOKEN) as gw:
            await gw.healthy()
            async with httpx.AsyncClient(base_url=gw.url) as http:
                assert (await http.get("/")).status_code == 200  # the page asks for it
                assert (await http.get("/console/api/info")).json()["token_required"] is True
                call = {"name": "echo", "arguments": {}}
                refused = await http.post("/console/api/invoke", json=call)
                assert refused.status_code == 401 and refused.json()["token_required"]
                wrong = {"authorization": "Bearer nope"}
                history = await http.get("/console/api/history?session=s", headers=wrong)
                assert history.status_code == 401
                right = {"authorization": f"Bearer {TOKEN}"}
                # Past the gate; the gateway passes the token on to the registry's Invoke.
                passed = await http.post("/console/api/invoke", json=call, headers=right)
                assert passed.status_code == 200, passed.text
                assert passed.json()["result"]["output"]["args"] == {}

            for hello in ({"type": "hello"}, {"type": "hello", "token": "nope"}):
                async with connect(ws_url(gw)) as ws:
                    await ws.send(json.dumps(hello))
                    with pytest.raises(ConnectionClosed) as closed:
                        await asyncio.wait_for(ws.recv(), 10)
                    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
            async with connect(ws_url(gw)) as ws:
                await ws.send(json.dumps({"type": "hello", "token": TOKEN}))
                assert (await messages_until(ws, "ready"))["type"] == "ready"


async def test_the_websocket_sends_the_tools_of_the_role_the_page_picks(tmp_path: Path) -> None:
    async with (
        running_plugin() as (_, address),
        running_registry(tmp_path, roles=["default", "support"]) as reg,
    ):
        await reg.register(tool("everyone", address))
        support_only = tool("support_only", address)
        support_only.role = "support"
        await reg.register(support_only)
        llm = f"127.0.0.1:{free_port()}"
        with GatewayProcess(reg.target, tmp_path, TOOLCALL_LLM_ADDRESS=llm) as gw:
            await gw.healthy()
            async with connect(ws_url(gw)) as ws:
                await ws.send(json.dumps({"type": "hello", "session": "s", "role": "default"}))
                tools = await messages_until(ws, "tools")
                assert tools["roles"] == ["default", "support"]
                assert [t["name"] for t in tools["tools"]] == ["everyone"]
                await ws.send(json.dumps({"type": "select", "session": "s", "role": "support"}))
                tools = await messages_until(ws, "tools")
                assert tools["role"] == "support"
                assert [t["name"] for t in tools["tools"]] == ["everyone", "support_only"]
                # Live: a new tool of the role is pushed without asking (one refresh
                # per registry event: the role's own event may come second).
                await reg.register(tool("later", address))
                while "later" not in [t["name"] for t in tools["tools"]]:
                    tools = await messages_until(ws, "tools")
                # Garbage is answered, not fatal.
                await ws.send("not json")
                assert "JSON" in (await messages_until(ws, "error"))["message"]
                await ws.send(json.dumps({"type": "ack", "task_ids": "t1"}))
                assert "task_ids" in (await messages_until(ws, "error"))["message"]


async def test_websockets_are_capped_and_one_that_never_says_hello_is_closed(
    gateway: tuple[Registry, GatewayProcess],
) -> None:
    _, gw = gateway
    async with contextlib.AsyncExitStack() as opened:
        sockets = [
            await opened.enter_async_context(connect(ws_url(gw))) for _ in range(MAX_SOCKETS)
        ]
        extra = await opened.enter_async_context(connect(ws_url(gw)))
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(extra.recv(), 10)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
        # Sockets that owe their hello count too, and are closed after 5 s.
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(sockets[0].recv(), 15)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4408
    # Their places are free again.
    async with connect(ws_url(gw)) as ws:
        await ws.send(json.dumps({"type": "hello", "session": "s"}))
        assert (await messages_until(ws, "ready"))["type"] == "ready"


async def test_a_slow_page_holds_its_producers_instead_of_growing_the_outbox() -> None:
    box = Outbox(max_entries=3, max_bytes=100)
    for i in range(3):
        await box.put(f"m{i}")
    fourth = asyncio.create_task(box.put("m3"))
    await asyncio.sleep(0.05)
    assert not fourth.done() and len(box) == 3, "a fourth message went past the entry bound"
    assert await box.get() == "m0"
    await asyncio.wait_for(fourth, 1)

    # Bytes: 60 + 60 is over 100, so the second waits; alone, a large one passes.
    box = Outbox(max_entries=10, max_bytes=100)
    await box.put("x" * 60)
    second = asyncio.create_task(box.put("y" * 60))
    await asyncio.sleep(0.05)
    assert not second.done() and box.bytes == 60
    assert await box.get() == "x" * 60
    await asyncio.wait_for(second, 1)
    assert box.bytes == 60

    # The tool list is state: a thousand changes are one refresh.
    await box.get()
    for _ in range(1000):
        box.refresh_tools()
    assert await box.get() is None
    assert len(box) == 0
    pending = asyncio.create_task(box.get())
    await asyncio.sleep(0.05)
    assert not pending.done(), "a second refresh was queued"
    pending.cancel()
