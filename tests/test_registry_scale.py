"""A large registry: limits at Register, List in pages, roles on the Watch snapshot.

Before: nothing limited the registry's size, and List answered with every
tool in one message; past 4 MiB (20,000 small tools are ~4.7 MB) List failed
for everyone with RESOURCE_EXHAUSTED, and the LLMService, which read the
served roles from List, stopped checking chat roles. Now Register refuses
what would pass ``max_tools`` or ``max_definition_bytes``, List pages
(AIP-158) with a size and byte bound per page, and a Watch's SYNCED event
carries the roles, so the LLMService never calls List.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import grpc
import pytest

from registry_service import RegistrySettings
from registry_service.main import add_arguments, settings_from_args
from registry_service.paging import DEFAULT_PAGE_SIZE, MAX_PAGE_BYTES, MAX_PAGE_SIZE
from registry_service.servicer import RegistryServicer
from tests.support.llm_env import llm_settings, running_llm
from tests.support.registry import Registry, running_registry, tool
from toolcall import config
from toolcall.cli import tools as tools_cli
from toolcall.clients import channel
from toolcall.errors import bad_request_violations
from toolcall.registry_view import RegistryView
from toolcall.tools import ToolSpec
from toolcall.v1 import llm_pb2, llm_pb2_grpc, registry_pb2

pytestmark = pytest.mark.anyio


async def fill(reg: Registry, count: int, prefix: str = "t", **fields: object) -> None:
    """Registers ``count`` tools in-process under one lease (no SQLite writes): fast."""
    registry = reg.host.registry
    lease = await registry.create_lease(300, "fill")
    for i in range(count):
        spec = ToolSpec.from_definition(tool(f"{prefix}{i:05d}", **fields))  # type: ignore[arg-type]
        await registry.register(spec, lease.lease_id)


async def pages(
    reg: Registry, request: registry_pb2.ListRequest
) -> list[registry_pb2.ListResponse]:
    out = []
    while True:
        reply = await reg.stub.List(request, timeout=10)
        out.append(reply)
        if not reply.next_page_token:
            return out
        request.page_token = reply.next_page_token


async def test_twenty_thousand_tools_are_listed_in_pages_that_stay_far_below_the_limit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with running_registry(tmp_path) as reg:
        await fill(reg, 20_000, description="d" * 200)
        assert reg.host.registry.store.definition_bytes > config.MAX_MESSAGE_BYTES
        replies = await pages(reg, registry_pb2.ListRequest())
        names = [t.tool.name for r in replies for t in r.tools]
        assert names == [f"t{i:05d}" for i in range(20_000)]  # each once, in order
        assert {len(r.tools) for r in replies} == {DEFAULT_PAGE_SIZE}
        assert max(r.ByteSize() for r in replies) < MAX_PAGE_BYTES < config.MAX_MESSAGE_BYTES
        assert all(list(r.roles) == ["default"] for r in replies)

        big = await reg.stub.List(registry_pb2.ListRequest(page_size=10**6), timeout=10)
        assert len(big.tools) == MAX_PAGE_SIZE and big.next_page_token

        # The CLI follows the pages.
        args = argparse.Namespace(target=reg.target, action="list", role=None, source="", json=True)
        assert await tools_cli.main(args) == 0
        assert len(json.loads(capsys.readouterr().out)["tools"]) == 20_000


async def test_a_page_of_large_definitions_stops_at_its_byte_budget(tmp_path: Path) -> None:
    async with running_registry(tmp_path) as reg:
        # ~24 KiB each: 4,096 three-byte characters in the description and the ack.
        await fill(reg, 120, description="€" * 4096, ack_message="€" * 4096)
        replies = await pages(reg, registry_pb2.ListRequest())
        assert sum(len(r.tools) for r in replies) == 120
        assert len(replies) >= 3
        assert all(r.ByteSize() <= MAX_PAGE_BYTES for r in replies)


async def test_paging_while_the_registry_changes_sees_unchanged_tools_exactly_once(
    tmp_path: Path,
) -> None:
    async with running_registry(tmp_path) as reg:
        await fill(reg, 100)
        request = registry_pb2.ListRequest(page_size=10)
        seen: list[str] = []
        registry = reg.host.registry
        while True:
            reply = await reg.stub.List(request, timeout=5)
            seen += [t.tool.name for t in reply.tools]
            if not reply.next_page_token:
                break
            request.page_token = reply.next_page_token
            page = len(seen) // 10
            # Remove one tool already seen and one not yet seen; add one behind and one ahead.
            await registry.unregister(f"t{(page - 1) * 10:05d}", None)
            await registry.unregister(f"t{min(page * 10 + 5, 99):05d}", None)
            await registry.register(ToolSpec.from_definition(tool(f"a{page:05d}")))
            await registry.register(ToolSpec.from_definition(tool(f"z{page:05d}")))
        assert len(seen) == len(set(seen))
        untouched = {f"t{i:05d}" for i in range(100) if i % 10 != 5 or i == 99}
        assert untouched <= set(seen)
        assert not any(n.startswith("a") for n in seen)  # added behind the cursor


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (registry_pb2.ListRequest(page_size=-1), "page_size"),
        (registry_pb2.ListRequest(page_token="garbage"), "page_token"),
        (registry_pb2.ListRequest(page_token="x" * 5000), "page_token"),
        (registry_pb2.ListRequest(page_token="W10"), "page_token"),  # base64 of "[]"
    ],
)
async def test_a_bad_page_size_or_token_is_invalid_argument(
    tmp_path: Path, request_: registry_pb2.ListRequest, field: str
) -> None:
    async with running_registry(tmp_path) as reg:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await reg.stub.List(request_, timeout=5)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert [f for f, _ in bad_request_violations(info.value)] == [field]


async def test_a_page_token_only_continues_the_same_filters(tmp_path: Path) -> None:
    async with running_registry(tmp_path, roles=["a", "b"]) as reg:
        await fill(reg, 5, source="s")
        first = await reg.stub.List(registry_pb2.ListRequest(page_size=2, source="s"))
        token = first.next_page_token
        for other in [
            registry_pb2.ListRequest(page_token=token),
            registry_pb2.ListRequest(page_token=token, source="s", role="a"),
        ]:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await reg.stub.List(other, timeout=5)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "same" in (info.value.details() or "")
        rest = await pages(reg, registry_pb2.ListRequest(page_size=2, source="s", page_token=token))
        listed = [(t.role, t.tool.name) for r in [first, *rest] for t in r.tools]
        assert listed == [(r, f"t{i:05d}") for r in ["a", "b"] for i in range(5)]


async def test_register_past_the_tool_limit_is_resource_exhausted_and_changes_nothing(
    tmp_path: Path,
) -> None:
    async with running_registry(tmp_path, roles=["a", "b"], max_tools=3) as reg:
        assert (await reg.register(tool("both"))).ok  # one entry per role: 2
        assert (await reg.register(tool("only_a", role="a"))).ok  # 3
        for refused in [tool("more", role="b"), tool("more")]:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await reg.register(refused)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "TOOLCALL_MAX_TOOLS" in (info.value.details() or "")
        assert (await reg.register(tool("both", description="new"))).ok  # replacing is fine
        assert await reg.names() == [("a", "both"), ("a", "only_a"), ("b", "both")]


async def test_register_past_the_byte_limit_is_resource_exhausted(tmp_path: Path) -> None:
    async with running_registry(tmp_path, max_definition_bytes=10_000) as reg:
        assert (await reg.register(tool("small", description="x" * 3000))).ok
        assert (await reg.register(tool("medium", description="x" * 3000))).ok
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await reg.register(tool("big", description="x" * 4000))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "TOOLCALL_MAX_DEFINITION_BYTES" in (info.value.details() or "")
        # Growing a tool counts the difference only.
        with pytest.raises(grpc.aio.AioRpcError):
            await reg.register(tool("medium", description="x" * 4096, ack_message="a" * 4000))
        assert (await reg.register(tool("medium", description="x" * 3500))).ok
        assert await reg.names() == [("default", "medium"), ("default", "small")]


async def test_stored_tools_past_lowered_limits_are_all_kept(tmp_path: Path) -> None:
    async with running_registry(tmp_path) as reg:
        for name in ["s1", "s2", "s3"]:
            await reg.register(tool(name))
    async with running_registry(tmp_path, max_tools=2) as reg:
        assert [n for _, n in await reg.names()] == ["s1", "s2", "s3"]
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await reg.register(tool("s4"))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_the_limits_come_from_the_environment_and_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOOLCALL_MAX_TOOLS", "123")
    monkeypatch.setenv("TOOLCALL_MAX_DEFINITION_BYTES", "4567")
    env = RegistrySettings.from_env()
    assert (env.max_tools, env.max_definition_bytes) == (123, 4567)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    flags = settings_from_args(
        parser.parse_args(["--max-tools", "9", "--max-definition-bytes", "99"])
    )
    assert (flags.max_tools, flags.max_definition_bytes) == (9, 99)
    with pytest.raises(SystemExit, match="max_tools"):
        settings_from_args(parser.parse_args(["--max-tools", "0"]))


async def test_the_watch_snapshot_carries_roles_and_limits(tmp_path: Path) -> None:
    async with running_registry(tmp_path, roles=["b", "a"], max_tools=77) as reg:
        call = reg.stub.Watch(registry_pb2.WatchRequest(), timeout=5)
        synced = await call.read()
        call.cancel()
        assert synced.type == registry_pb2.EVENT_TYPE_SYNCED
        assert list(synced.registry.roles) == ["a", "b"]
        assert synced.registry.max_tools == 77
        assert synced.registry.max_definition_bytes > 0


async def test_the_llm_service_checks_roles_against_a_registry_too_big_for_one_list(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lists = 0
    original = RegistryServicer.List

    async def counting(self: RegistryServicer, request: object, context: object) -> object:
        nonlocal lists
        lists += 1
        return await original(self, request, context)  # type: ignore[arg-type]

    monkeypatch.setattr(RegistryServicer, "List", counting)
    async with running_registry(tmp_path, roles=["default", "ops"]) as reg:
        # 1,200 × ~4 KiB: a single List would be over 4 MiB.
        await fill(reg, 1200, description="d" * 4000)
        assert reg.host.registry.store.definition_bytes > config.MAX_MESSAGE_BYTES
        view = RegistryView(reg.target)
        view.start()
        try:
            assert await view.wait_synced(20)
            assert view.roles == {"default", "ops"}
        finally:
            await view.close()
        async with (
            running_llm(llm_settings(tmp_path, reg.target)) as llm,
            channel(llm.target) as ch,
        ):
            stub = llm_pb2_grpc.LLMServiceStub(ch)
            message = llm_pb2.ChatMessage(role=llm_pb2.MESSAGE_ROLE_USER, content="hi")
            request = llm_pb2.ChatRequest(session_id="s", role="pirate", messages=[message])
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.Chat(request, timeout=10)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "unknown role 'pirate'" in (info.value.details() or "")
        assert lists == 0
