"""The gateway's ``/api/tools`` (the HTTP registry API), with plugins written from its contract.

A Python plugin (standard library) and a Node plugin (plain ``http``), neither
importing anything of toolcall, register through ``POST /api/tools/register``
on a real gateway process and are called unchanged by a chat (LLMService,
offline provider) and by ``ToolRegistry.Invoke``. Then every status code
of the API, and the hostile requests a local web server gets.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import json
import shutil
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx2 as httpx
import pytest

from gateway.main import GatewaySettings, build_app
from gateway.mcp_serve import McpBridge, McpSettings
from tests.support.gateway import GatewayProcess
from tests.support.llm_env import LLMEnv, llm_env, tool_plugin
from tests.support.plugins import (
    REPO_ROOT,
    ChildProcess,
    child_env,
    free_port,
    registry_in_process,
)
from toolcall.jsonvalue import from_value
from toolcall.v1 import registry_pb2, registry_pb2_grpc, tools_pb2

SUPPORT = REPO_ROOT / "tests" / "support"
NODE = shutil.which("node")
WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}


@dataclass
class Stack:
    env: LLMEnv
    gateway: GatewayProcess
    http: httpx.AsyncClient
    tmp: Path

    def plugin(self, argv: list[str], name: str) -> SeedPlugin:
        return SeedPlugin([*argv, self.gateway.url], self.tmp / f"{name}.log", name)


class SeedPlugin(ChildProcess):
    def __init__(self, argv: list[str], log: Path, name: str) -> None:
        self.name = name
        super().__init__(argv, log, child_env())

    async def ready(self, env: LLMEnv, *names: str) -> None:
        """Waits for READY (registered through /api) and for the chat's view to have the tools."""
        for _ in range(400):
            if "READY" in self.log():
                break
            assert self.alive(), self.log()
            await asyncio.sleep(0.05)
        else:
            raise AssertionError(f"{self.name} never registered:\n{self.log()}")
        for name in names:
            assert await env.llm.view.wait_for("default", name, timeout_s=10), name


__all__ = ["tool_plugin"]  # the fixture, imported for pytest


@pytest.fixture
async def stack(tmp_path: Path, tool_plugin: str) -> AsyncIterator[Stack]:
    async with llm_env(tmp_path, tool_plugin) as env:
        with GatewayProcess(
            env.registry.target, tmp_path, TOOLCALL_LLM_ADDRESS=env.llm.target
        ) as gateway:
            await gateway.healthy()
            async with httpx.AsyncClient(base_url=gateway.url, timeout=20) as http:
                yield Stack(env, gateway, http, tmp_path)


async def invoke(env: LLMEnv, name: str, arguments: str) -> Any:
    reply = await env.registry_stub.Invoke(
        registry_pb2.InvokeRequest(name=name, raw_arguments=arguments), timeout=20
    )
    return reply.result


@pytest.mark.anyio
async def test_a_python_plugin_written_from_the_contract_alone_is_called_by_a_chat_and_invoke(
    stack: Stack,
) -> None:
    argv = [sys.executable, str(SUPPORT / "http_seed_plugin.py")]
    with stack.plugin(argv, "py-seed-plugin") as plugin:
        await plugin.ready(stack.env, "get_weather", "tell_time")
        listed = (await stack.http.get("/api/tools")).json()
        mine = {t["name"]: t for t in listed["tools"] if t["source"] == "my_plugin"}
        assert set(mine) == {"get_weather", "tell_time"}
        assert mine["get_weather"]["callback_url"].endswith("/tool_invoke")
        assert mine["get_weather"]["timeout_seconds"] == 30
        assert listed["roles"] == ["default"]

        chat = await stack.env.chat("seed", "What is the weather in Paris?")
        [record] = chat.tool_calls
        assert record.call.name == "get_weather"
        output = from_value(record.result.output)
        assert output["city"] == "Paris" and output["temp_c"] == 22
        assert output["call_id"] == record.call.call_id  # the plugin saw the chat's call id
        assert chat.message.content.startswith("get_weather returned: {")

        failed = await invoke(stack.env, "get_weather", '{"city": "Atlantis"}')
        assert failed.is_error and failed.error == "city not found"
        bare = await invoke(stack.env, "tell_time", '{"zone": "UTC"}')
        assert not bare.is_error
        assert from_value(bare.output) == '12:00 in UTC ({"zone": "UTC"})'
        bad = await invoke(stack.env, "get_weather", '{"town": "Paris"}')
        assert bad.is_error and bad.error.startswith("INVALID_ARGUMENT")  # never sent

        # SIGTERM: it unregisters through /api/tools/unregister (the registry
        # runs on this loop: wait in a thread).
        await asyncio.to_thread(plugin.stop)
    after = (await stack.http.get("/api/tools")).json()["tools"]
    assert not [t for t in after if t["source"] == "my_plugin"]


@pytest.mark.anyio
@pytest.mark.skipif(NODE is None, reason="node is needed for the Node HTTP plugin test")
async def test_a_node_plugin_written_from_the_contract_alone_is_called_by_a_chat_and_invoke(
    stack: Stack,
) -> None:
    assert NODE is not None
    with stack.plugin([NODE, str(SUPPORT / "http_seed_plugin.js")], "node-seed-plugin") as plugin:
        await plugin.ready(stack.env, "node_weather")
        chat = await stack.env.chat("node", "node weather in Lisbon please")
        [record] = chat.tool_calls
        assert record.call.name == "node_weather"
        assert from_value(record.result.output)["from"] == "node"
        assert from_value(record.result.output)["city"] == "Lisbon"
        failed = await invoke(stack.env, "node_weather", '{"city": "Atlantis"}')
        assert failed.is_error and failed.error == "city not found"
        await asyncio.to_thread(plugin.stop)
    after = (await stack.http.get("/api/tools")).json()["tools"]
    assert "node_weather" not in {t["name"] for t in after}


def registration(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "get_weather",
        "description": "Look up the weather in a given city",
        "parameters": WEATHER,
        "callback_url": "http://127.0.0.1:9876/tool_invoke",
        "role": None,
        "source": "my_plugin",
        "timeout_seconds": 30,
    }
    body.update(fields)
    return body


def fields_of(reply: httpx.Response) -> set[str]:
    assert reply.status_code == 422, reply.text
    return {"/".join(str(p) for p in d["loc"][1:]) or "body" for d in reply.json()["detail"]}


@pytest.mark.anyio
async def test_every_status_code_of_the_api(stack: Stack) -> None:
    http = stack.http
    ok = await http.post("/api/tools/register", json=registration())
    assert ok.status_code == 200
    assert ok.json() == {
        "ok": True,
        "registered": "get_weather",
        "affected_roles": ["default"],
        "failed_roles": [],
    }
    unknown_role = await http.post("/api/tools/register", json=registration(role="nobody"))
    assert unknown_role.status_code == 200 and unknown_role.json()["ok"] is False
    assert unknown_role.json()["failed_roles"][0]["role"] == "nobody"

    # 422 naming the field: types checked by the gateway, rules by the registry.
    assert fields_of(await http.post("/api/tools/register", json={"source": "x"})) == {"name"}
    for bad_url in ["http://10.0.0.1:80/x", "https://127.0.0.1:1/", "127.0.0.1", ""]:
        reply = await http.post("/api/tools/register", json=registration(callback_url=bad_url))
        assert fields_of(reply) == {"callback_url"}, bad_url
    assert fields_of(
        await http.post("/api/tools/register", json=registration(timeout_seconds=301))
    ) == {"timeout_seconds"}
    assert fields_of(
        await http.post("/api/tools/register", json=registration(timeout_seconds="30"))
    ) == {"timeout_seconds"}
    assert fields_of(
        await http.post("/api/tools/register", json=registration(name="bad name!"))
    ) == {"name"}
    assert fields_of(
        await http.post("/api/tools/register", json=registration(parameters={"type": "array"}))
    ) == {"parameters"}
    assert fields_of(await http.post("/api/tools/register", json=registration(role=""))) == {"role"}
    assert fields_of(await http.post("/api/tools/clear", json={"role": None, "source": ""})) == {
        "source"
    }
    assert fields_of(await http.post("/api/tools/register", json=[1, 2])) == {"body"}
    malformed = await http.post(
        "/api/tools/register", content=b"{", headers={"content-type": "application/json"}
    )
    assert fields_of(malformed) == {"body"}

    # unregister, clear and list: shapes.
    listed = await http.get("/api/tools", params={"role": "default"})
    assert listed.status_code == 200
    [entry] = listed.json()["tools"]
    assert entry["name"] == "get_weather" and entry["role"] == "default"
    assert entry["parameters"] == WEATHER and entry["mode"] == "sync"
    assert (await http.get("/api/tools", params={"role": "nobody"})).status_code == 404
    gone = await http.post("/api/tools/unregister", json={"name": "get_weather", "role": None})
    assert gone.json() == {"ok": True, "removed": 1, "affected_roles": ["default"]}
    await http.post("/api/tools/register", json=registration())
    cleared = await http.post("/api/tools/clear", json={"role": None, "source": "my_plugin"})
    assert cleared.json() == {"ok": True, "removed": 1}

    # Methods, media types, sizes.
    assert (await http.get("/api/tools/register")).status_code == 405
    form = await http.post("/api/tools/register", data={"name": "x", "callback_url": "y"})
    assert form.status_code == 415
    plain = await http.post(
        "/api/tools/register", content=b"{}", headers={"content-type": "text/plain"}
    )
    assert plain.status_code == 415
    huge = registration(description="x" * (2 * 1024 * 1024))
    assert (await http.post("/api/tools/register", json=huge)).status_code == 413


async def _chunks(total: int) -> AsyncIterator[bytes]:
    yield b'{"name": "x", "description": "'
    for _ in range(total // 65536):
        yield b"x" * 65536
    yield b'"}'


@pytest.mark.anyio
async def test_hostile_requests_are_refused_and_the_gateway_keeps_serving(stack: Stack) -> None:
    http = stack.http
    # A body with no declared length, streamed past the limit: 413, not buffered whole.
    streamed = await http.post(
        "/api/tools/register",
        content=_chunks(8 * 1024 * 1024),
        headers={"content-type": "application/json"},
    )
    assert streamed.status_code == 413
    # A web page in the user's browser posting to the gateway (cross-origin).
    origin = {"origin": "https://evil.example"}
    cross = await http.post("/api/tools/register", json=registration(), headers=origin)
    assert cross.status_code == 403
    # DNS rebinding: a name that resolves to 127.0.0.1, sent as Host.
    rebound = await http.get("/api/tools", headers={"host": "evil.example:48913"})
    assert rebound.status_code == 421
    rebound_post = await http.post(
        "/api/tools/clear", json={"source": "x"}, headers={"host": "evil.example"}
    )
    assert rebound_post.status_code == 421
    # Nesting past every parser's depth, NaN, a non-object body.
    deep = '{"name": "n", "callback_url": "http://127.0.0.1:1/", "parameters": ' + "[" * 100_000
    reply = await http.post(
        "/api/tools/register", content=deep, headers={"content-type": "application/json"}
    )
    assert reply.status_code == 422
    nan = await http.post(
        "/api/tools/register",
        content=b'{"name": "n", "callback_url": "http://127.0.0.1:1/", "timeout_seconds": NaN}',
        headers={"content-type": "application/json"},
    )
    assert nan.status_code == 422
    # The same origin (the console) and loopback hosts are fine.
    same = await http.post(
        "/api/tools/register",
        json=registration(),
        headers={"origin": stack.gateway.url, "host": f"localhost:{stack.gateway.port}"},
    )
    assert same.status_code == 200
    assert (await http.get("/healthz")).status_code == 200


@pytest.mark.anyio
async def test_the_registry_token_is_required_when_configured(tmp_path: Path) -> None:
    async with registry_in_process(tmp_path, token="s3cret-token") as target:
        with GatewayProcess(target, tmp_path, TOOLCALL_TOKEN="s3cret-token") as gateway:
            await gateway.healthy()
            async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
                missing = await http.post("/api/tools/register", json=registration())
                assert missing.status_code == 401
                assert missing.headers["www-authenticate"] == "Bearer"
                wrong = await http.post(
                    "/api/tools/register",
                    json=registration(),
                    headers={"authorization": "Bearer nope"},
                )
                assert wrong.status_code == 401
                good = await http.post(
                    "/api/tools/register",
                    json=registration(),
                    headers={"authorization": "Bearer s3cret-token"},
                )
                assert good.status_code == 200 and good.json()["ok"]
                # Listing needs no token, as the registry's List.
                assert (await http.get("/api/tools")).status_code == 200
                # /v1 Invoke is the registry's: gated by the same token.
                invoke = {"name": "get_weather", "arguments": {"city": "Paris"}}
                unauth = await v1(http, "ToolRegistry/Invoke", invoke)
                assert unauth.status_code == 401 and unauth.json()["code"] == 16
                authed = await v1(
                    http,
                    "ToolRegistry/Invoke",
                    invoke,
                    headers={"authorization": "Bearer s3cret-token"},
                )
                assert authed.status_code == 200  # the plugin is unreachable: an is_error result
                assert "UNAVAILABLE" in authed.json()["result"]["error"]


@pytest.mark.anyio
async def test_v1_invoke_keeps_the_registry_s_token_rule_and_call_statistics(
    tmp_path: Path,
) -> None:
    # The tool is registered before the gateway starts, so its Watch-fed view
    # holds it once healthy: a gateway that answered Invoke from its view let
    # a caller without the registry's token through and left the calls uncounted.
    auth = (("authorization", "Bearer s3cret-token"),)
    async with registry_in_process(tmp_path, token="s3cret-token") as target:
        async with grpc.aio.insecure_channel(target) as ch:
            registry = registry_pb2_grpc.ToolRegistryStub(ch)
            tool = tools_pb2.ToolDefinition(
                name="get_weather", callback_address="http://127.0.0.1:9/x", source="t"
            )
            await registry.Register(registry_pb2.RegisterRequest(tool=tool), metadata=auth)
            with GatewayProcess(target, tmp_path) as gateway:  # no token of its own
                await gateway.healthy()
                async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
                    invoke = {"name": "get_weather", "arguments": {"city": "Paris"}}
                    unauth = await v1(http, "ToolRegistry/Invoke", invoke)
                    assert unauth.status_code == 401 and unauth.json()["code"] == 16
                    for _ in range(2):
                        authed = await v1(http, "ToolRegistry/Invoke", invoke, headers=dict(auth))
                        assert "UNAVAILABLE" in authed.json()["result"]["error"]
            [entry] = (await registry.List(registry_pb2.ListRequest())).tools
            assert (entry.stats.calls, entry.stats.errors) == (2, 2)


@pytest.mark.anyio
async def test_a_caller_that_is_not_local_gets_403_on_every_route() -> None:
    settings = GatewaySettings(address="127.0.0.1:1", mcp=McpSettings(registry_address="x:1"))
    app = build_app(settings, McpBridge(settings.mcp))
    transport = httpx.ASGITransport(app=app, client=("192.0.2.7", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:48913") as http:
        for route in ["/api/tools", "/v1/toolcall.v1.ToolRegistry/List"]:
            assert (await http.get(route)).status_code == 403
        assert (await http.post("/api/tools/register", json=registration())).status_code == 403


def test_the_python_seed_plugin_imports_the_standard_library_only() -> None:
    tree = ast.parse((SUPPORT / "http_seed_plugin.py").read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        (node.module or "").split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
    }
    assert imported - {"__future__"} <= sys.stdlib_module_names, imported


async def v1(http: httpx.AsyncClient, rpc: str, body: Any, **kw: Any) -> httpx.Response:
    return await http.post(f"/v1/toolcall.v1.{rpc}", json=body, **kw)


async def first_events(http: httpx.AsyncClient, rpc: str, body: Any, n: int) -> list[Any]:
    """The first ``n`` data events of a server-sent event stream."""
    events: list[Any] = []
    async with http.stream("POST", f"/v1/toolcall.v1.{rpc}", json=body) as reply:
        assert reply.status_code == 200, await reply.aread()
        assert reply.headers["content-type"].startswith("text/event-stream")
        async for line in reply.aiter_lines():
            if line.startswith("data:"):
                events.append(json.loads(line[5:]))
                if len(events) == n:
                    break
    return events


@pytest.mark.anyio
async def test_every_rpc_of_both_services_is_reachable_as_json_under_v1(stack: Stack) -> None:
    http, env = stack.http, stack.env
    tool = {"name": "echo_city", "callback_address": env.plugin_address, "source": "v1",
            "parameters": WEATHER}  # fmt: skip
    assert (await v1(http, "ToolRegistry/Register", {"tool": tool})).json()["ok"] is True
    assert await env.llm.view.wait_for("default", "echo_city", timeout_s=5)
    listed = (await v1(http, "ToolRegistry/List", {"role": "default", "page_size": 10})).json()
    assert [t["tool"]["name"] for t in listed["tools"]] == ["echo_city"]
    invoked = (await v1(http, "ToolRegistry/Invoke", {"name": "echo_city",
               "arguments": {"city": "Oslo"}})).json()  # fmt: skip
    assert invoked["result"]["output"]["arguments"] == {"city": "Oslo"}
    lease = (await v1(http, "ToolRegistry/CreateLease", {"ttl_seconds": 30})).json()
    kept = (await v1(http, "ToolRegistry/KeepAlive", {"lease_id": lease["lease_id"]})).json()
    assert kept["ttl_seconds"] == 30
    revoked = await v1(http, "ToolRegistry/RevokeLease", {"lease_id": lease["lease_id"]})
    assert revoked.status_code == 200
    [snapshot, synced] = await first_events(http, "ToolRegistry/Watch", {"role": "default"}, 2)
    assert snapshot["type"] == "EVENT_TYPE_UPSERTED" and snapshot["tool"]["tool"]["name"]
    assert synced["type"] == "EVENT_TYPE_SYNCED" and synced["registry"]["roles"] == ["default"]

    chat = {"session_id": "v1", "messages": [{"content": "echo the city for Lisbon"}]}
    answer = (await v1(http, "LLMService/Chat", chat)).json()
    assert answer["tool_calls"][0]["result"]["output"]["arguments"] == {"city": "Lisbon"}
    events = await first_events(http, "LLMService/ChatStream", {"request": chat}, 99)
    assert [k for e in events for k in e][:2] == ["tool_call_started", "tool_call_finished"]
    assert "final" in events[-2] and "usage" in events[-1]
    history = (await v1(http, "LLMService/GetHistory", {"session_id": "v1"})).json()
    assert len(history["messages"]) >= 4
    task = await v1(http, "LLMService/GetTask", {"task_id": "nope"})
    assert task.status_code == 404 and task.json()["code"] == 5
    acked = await v1(http, "LLMService/AckTasks", {"session_id": "v1", "task_ids": ["nope"]})
    assert acked.status_code == 200
    async with http.stream(
        "POST", "/v1/toolcall.v1.LLMService/Subscribe", json={"session_id": "v1"}
    ) as sub:  # no task is pending: the stream stays open, quiet
        assert sub.status_code == 200
        assert sub.headers["content-type"].startswith("text/event-stream")
    # A client that leaves ends its Subscribe: more streams than a session's
    # places (16), one after another, all open.
    for _ in range(24):
        for _attempt in range(100):
            async with http.stream(
                "POST", "/v1/toolcall.v1.LLMService/Subscribe", json={"session_id": "v1"}
            ) as sub:
                if sub.status_code == 200:
                    break
                assert sub.status_code == 429, await sub.aread()
            await asyncio.sleep(0.05)  # the place is freed once the cancel lands
        else:
            raise AssertionError("Subscribe places were not freed when clients left")
    assert (await v1(http, "ToolRegistry/Unregister", {"name": "echo_city"})).json() == {
        "removed": 1,
        "affected_roles": ["default"],
    }
    assert (await v1(http, "ToolRegistry/Clear", {"source": "v1"})).json() == {}


@pytest.mark.anyio
async def test_v1_maps_grpc_statuses_and_refuses_bad_requests(stack: Stack) -> None:
    http = stack.http
    unknown = await v1(http, "ToolRegistry/List", {"role": "nobody"})
    assert unknown.status_code == 404 and unknown.json()["code"] == 5
    invalid = await v1(http, "ToolRegistry/Register", {"tool": {"name": "bad name"}})
    assert invalid.status_code == 400 and invalid.json()["code"] == 3
    [detail] = invalid.json()["details"]
    assert detail["@type"].endswith("google.rpc.BadRequest")
    assert {v["field"] for v in detail["field_violations"]} >= {"tool.name"}
    watch_unknown = await v1(http, "ToolRegistry/Watch", {"role": "nobody"})
    assert watch_unknown.status_code == 404  # failed at once: a plain HTTP error
    assert (await v1(http, "ToolRegistry/Nope", {})).status_code == 404
    assert (await v1(http, "ToolRegistry/List", {"no_such_field": 1})).status_code == 400
    assert (await v1(http, "ToolRegistry/List", {"page_size": "many"})).status_code == 400
    raw = {"content-type": "application/json"}
    assert (
        await http.post("/v1/toolcall.v1.ToolRegistry/List", content=b"[" * 200_000, headers=raw)
    ).status_code == 400
    assert (await http.post("/v1/toolcall.v1.ToolRegistry/List", content=b"", headers=raw)).json()
    form = await http.post("/v1/toolcall.v1.ToolRegistry/Clear", data={"source": "x"})
    assert form.status_code == 415
    assert (await http.get("/v1/toolcall.v1.ToolRegistry/List")).status_code == 405
    huge = {"name": "x", "raw_arguments": "x" * (5 * 1024 * 1024)}
    assert (await v1(http, "ToolRegistry/Invoke", huge)).status_code == 413
    for rpc in ["ToolRegistry/Invoke", "ToolRegistry/List"]:  # streamed, no length
        streamed = await http.post(
            f"/v1/toolcall.v1.{rpc}", content=_chunks(8 * 1024 * 1024), headers=raw
        )
        assert streamed.status_code == 413, rpc
    cross = await v1(http, "ToolRegistry/Clear", {"source": "x"}, headers={"origin": "http://a.b"})
    assert cross.status_code == 403


@pytest.mark.anyio
async def test_an_unreachable_registry_is_503_not_a_hang(tmp_path: Path) -> None:
    dead = f"127.0.0.1:{free_port()}"
    with GatewayProcess(dead, tmp_path) as gateway:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
            for _ in range(400):  # up, but never synced with a registry
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get("/healthz")).status_code == 503:
                        break
                await asyncio.sleep(0.05)
            registered = await http.post("/api/tools/register", json=registration())
            assert registered.status_code == 503, registered.text
            assert (await http.get("/api/tools")).status_code == 503
            listed = await v1(http, "ToolRegistry/List", {})
            assert listed.status_code == 503 and listed.json()["code"] == 14
            invoked = await v1(http, "ToolRegistry/Invoke", {"name": "get_weather"})
            assert invoked.status_code == 503  # not in a view: forwarded, and refused


@pytest.mark.anyio
async def test_a_listing_past_its_bound_says_truncated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from starlette.applications import Starlette

    from gateway import http_api
    from gateway.http_v1 import Backends

    monkeypatch.setattr(http_api, "MAX_LIST_ENTRIES", 3)
    async with registry_in_process(tmp_path) as target:
        backends = Backends(target, "127.0.0.1:1")
        app = Starlette(routes=http_api.HttpApi(backends).routes())
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 1))
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://x") as http:
                for i in range(5):
                    reply = await http.post(
                        "/api/tools/register", json=registration(name=f"tool_{i}")
                    )
                    assert reply.json()["ok"], reply.text
                listed = (await http.get("/api/tools")).json()
                assert [t["name"] for t in listed["tools"]] == ["tool_0", "tool_1", "tool_2"]
                assert listed["truncated"] is True
                monkeypatch.setattr(http_api, "MAX_LIST_ENTRIES", 5)
                assert "truncated" not in (await http.get("/api/tools")).json()
        finally:
            await backends.close()
