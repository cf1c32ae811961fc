"""ToolRegistry: validation, roles, replace, Unregister/Clear and List, over real gRPC."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from tests.support.registry import NUMBER_SCHEMA, running_registry, tool
from toolcall.errors import bad_request_violations
from toolcall.v1 import registry_pb2, tools_pb2

pytestmark = pytest.mark.anyio


async def _refused(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    return info.value


@pytest.mark.parametrize(
    ("definition", "fields"),
    [
        (tool("bad name!"), {"tool.name"}),
        (tool(""), {"tool.name"}),
        (tool("x" * 65), {"tool.name"}),
        (tool("t", "10.0.0.1:80"), {"tool.callback_address"}),
        (tool("t", ""), {"tool.callback_address"}),
        (tool("t", parameters={"type": "string"}), {"tool.parameters"}),
        (tool("t", parameters={"type": "object", "properties": 3}), {"tool.parameters"}),
        (tool("t", role=""), {"tool.role"}),
        (tool("t", timeout_seconds=301), {"tool.timeout_seconds"}),
        (tool("t", timeout_seconds=-1), {"tool.timeout_seconds"}),
        (tool("t", timeout_seconds=float("nan")), {"tool.timeout_seconds"}),
        (tool("t", mode=7), {"tool.mode"}),
        (tool("t", description="d" * 5000), {"tool.description"}),
        (tool("t", source="s" * 200), {"tool.source"}),
        (tool("t", title="t" * 129), {"tool.title"}),
        (tool("t", metadata={"bad key": "v"}), {"tool.metadata"}),
        (tool("t", output_schema={"type": "array"}), {"tool.output_schema"}),
        (
            tool("t", annotations=tools_pb2.ToolAnnotations(read_only=True, destructive=True)),
            {"tool.annotations"},
        ),
        (
            tool("no way", "http://example.com:1/x", role="", timeout_seconds=999),
            {"tool.name", "tool.callback_address", "tool.role", "tool.timeout_seconds"},
        ),
    ],
)
async def test_invalid_definitions_are_refused_with_bad_request_details(
    tmp_path: Path, definition: object, fields: set[str]
) -> None:
    async with running_registry(tmp_path) as reg:
        exc = await _refused(reg.register(definition))  # type: ignore[arg-type]
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
        violations = bad_request_violations(exc)
        assert {f for f, _ in violations} == fields
        assert all(reason for _, reason in violations)
        for f in fields:
            assert f in (exc.details() or "")
        assert await reg.names() == []


async def test_missing_tool_names_the_field(tmp_path: Path) -> None:
    async with running_registry(tmp_path) as reg:
        exc = await _refused(reg.stub.Register(registry_pb2.RegisterRequest()))
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert bad_request_violations(exc) == [("tool", "is required")]


async def test_role_unset_registers_into_every_role(tmp_path: Path) -> None:
    async with running_registry(tmp_path, roles=["support", "default", "admin"]) as reg:
        reply = await reg.register(tool("search"))
        assert reply.ok and reply.registered == "search"
        assert list(reply.affected_roles) == ["admin", "default", "support"]
        assert not reply.failed_roles
        assert await reg.names() == [
            ("admin", "search"),
            ("default", "search"),
            ("support", "search"),
        ]
        listed = await reg.stub.List(registry_pb2.ListRequest(role="support"))
        assert [t.tool.role for t in listed.tools] == ["support"]
        assert list(listed.roles) == ["admin", "default", "support"]


async def test_role_set_registers_only_there(tmp_path: Path) -> None:
    async with running_registry(tmp_path, roles=["admin", "default"]) as reg:
        reply = await reg.register(tool("reboot", role="admin"))
        assert reply.ok and list(reply.affected_roles) == ["admin"]
        assert await reg.names("admin") == [("admin", "reboot")]
        assert await reg.names("default") == []


async def test_unknown_role_registers_nothing_and_names_the_known_roles(tmp_path: Path) -> None:
    async with running_registry(tmp_path, roles=["admin", "default"]) as reg:
        reply = await reg.register(tool("reboot", role="root"))
        assert not reply.ok
        assert not reply.affected_roles
        [failure] = reply.failed_roles
        assert failure.role == "root"
        assert "root" in failure.error and "admin, default" in failure.error
        assert await reg.names() == []


async def test_registering_again_replaces_the_definition(tmp_path: Path) -> None:
    async with running_registry(tmp_path) as reg:
        await reg.register(tool("calc", description="v1", parameters=NUMBER_SCHEMA))
        await reg.register(tool("calc", description="v2", source="new"))
        listed = await reg.stub.List(registry_pb2.ListRequest())
        [entry] = listed.tools
        assert entry.tool.description == "v2"
        assert entry.tool.source == "new"
        assert not entry.tool.parameters.fields["properties"].struct_value.fields
        # The source index follows the replacement.
        assert await reg.names(source="") == [("default", "calc")]
        assert await reg.names(source="new") == [("default", "calc")]


async def test_replacing_in_one_role_keeps_the_other_roles(tmp_path: Path) -> None:
    async with running_registry(tmp_path, roles=["a", "b"]) as reg:
        await reg.register(tool("t", description="everyone"))
        await reg.register(tool("t", description="only a", role="a"))
        listed = await reg.stub.List(registry_pb2.ListRequest())
        assert [(t.role, t.tool.description) for t in listed.tools] == [
            ("a", "only a"),
            ("b", "everyone"),
        ]


async def test_unregister_counts_what_it_removed(tmp_path: Path) -> None:
    async with running_registry(tmp_path, roles=["a", "b", "c"]) as reg:
        await reg.register(tool("t"))
        await reg.register(tool("u"))
        one = await reg.stub.Unregister(registry_pb2.UnregisterRequest(name="t", role="b"))
        assert one.removed == 1 and list(one.affected_roles) == ["b"]
        rest = await reg.stub.Unregister(registry_pb2.UnregisterRequest(name="t"))
        assert rest.removed == 2 and list(rest.affected_roles) == ["a", "c"]
        none = await reg.stub.Unregister(registry_pb2.UnregisterRequest(name="t"))
        assert none.removed == 0
        unknown_role = await reg.stub.Unregister(registry_pb2.UnregisterRequest(name="u", role="z"))
        assert unknown_role.removed == 0
        assert await reg.names() == [("a", "u"), ("b", "u"), ("c", "u")]


async def test_clear_removes_by_source_and_role(tmp_path: Path) -> None:
    async with running_registry(tmp_path, roles=["a", "b"]) as reg:
        await reg.register(tool("t1", source="weather"))
        await reg.register(tool("t2", source="weather", role="a"))
        await reg.register(tool("t3", source="other"))
        in_a = await reg.stub.Clear(registry_pb2.ClearRequest(source="weather", role="a"))
        assert in_a.removed == 2
        everywhere = await reg.stub.Clear(registry_pb2.ClearRequest(source="weather"))
        assert everywhere.removed == 1
        again = await reg.stub.Clear(registry_pb2.ClearRequest(source="weather"))
        assert again.removed == 0
        assert await reg.names() == [("a", "t3"), ("b", "t3")]


@pytest.mark.parametrize(
    ("method", "message", "field"),
    [
        ("Unregister", registry_pb2.UnregisterRequest(), "name"),
        ("Unregister", registry_pb2.UnregisterRequest(name="t", role=""), "role"),
        ("Clear", registry_pb2.ClearRequest(), "source"),
        ("Clear", registry_pb2.ClearRequest(source="s", role=""), "role"),
        ("List", registry_pb2.ListRequest(role=""), "role"),
        ("Invoke", registry_pb2.InvokeRequest(), "name"),
        ("Invoke", registry_pb2.InvokeRequest(name="t", role=""), "role"),
        ("KeepAlive", registry_pb2.KeepAliveRequest(), "lease_id"),
        ("RevokeLease", registry_pb2.RevokeLeaseRequest(), "lease_id"),
    ],
)
async def test_missing_or_empty_fields_are_invalid_argument(
    tmp_path: Path, method: str, message: object, field: str
) -> None:
    async with running_registry(tmp_path) as reg:
        exc = await _refused(getattr(reg.stub, method)(message))
        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert [f for f, _ in bad_request_violations(exc)] == [field]


async def test_list_is_sorted_filtered_and_carries_metadata(tmp_path: Path) -> None:
    async with running_registry(tmp_path, roles=["b", "a"]) as reg:
        lease = await reg.stub.CreateLease(registry_pb2.CreateLeaseRequest(ttl_seconds=30))
        await reg.register(tool("zeta", source="s1"))
        await reg.register(tool("alpha", source="s2", role="b"), lease_id=lease.lease_id)
        await reg.register(tool("mid", source="s1", role="a"))
        assert await reg.names() == [("a", "mid"), ("a", "zeta"), ("b", "alpha"), ("b", "zeta")]
        assert await reg.names("b") == [("b", "alpha"), ("b", "zeta")]
        assert await reg.names(source="s1") == [("a", "mid"), ("a", "zeta"), ("b", "zeta")]
        assert await reg.names("a", source="s1") == [("a", "mid"), ("a", "zeta")]
        assert await reg.names(source="nobody") == []
        listed = await reg.stub.List(registry_pb2.ListRequest(role="b"))
        alpha = listed.tools[0]
        assert alpha.lease_id == lease.lease_id
        assert alpha.tool.role == "b"
        assert alpha.registered_at.seconds > 1_700_000_000
        assert listed.tools[1].lease_id == ""


async def test_list_of_an_unknown_role_is_not_found(tmp_path: Path) -> None:
    async with running_registry(tmp_path, roles=["a"]) as reg:
        exc = await _refused(reg.stub.List(registry_pb2.ListRequest(role="z")))
        assert exc.code() == grpc.StatusCode.NOT_FOUND
        assert "'z'" in (exc.details() or "") and "a" in (exc.details() or "")


async def test_register_with_an_unknown_lease_is_not_found(tmp_path: Path) -> None:
    async with running_registry(tmp_path) as reg:
        exc = await _refused(reg.register(tool("t"), lease_id="lease_nope"))
        assert exc.code() == grpc.StatusCode.NOT_FOUND
        assert "lease_nope" in (exc.details() or "")
        assert await reg.names() == []


async def test_title_annotations_output_schema_and_metadata_are_listed_and_survive_a_restart(
    tmp_path: Path,
) -> None:
    definition = tool(
        "weather",
        source="plugin:w",
        title="Current weather",
        annotations=tools_pb2.ToolAnnotations(read_only=True, idempotent=True, open_world=False),
        output_schema=NUMBER_SCHEMA,
        metadata={"category": "weather"},
    )
    for _ in range(2):  # the second time, from the registry's data directory
        async with running_registry(tmp_path) as reg:
            if not await reg.names():
                await reg.register(definition)
            reply = await reg.stub.List(registry_pb2.ListRequest(), timeout=5)
            listed = reply.tools[0].tool
            assert listed.title == "Current weather"
            assert listed.annotations == definition.annotations
            assert not listed.annotations.HasField("destructive")
            assert listed.output_schema == definition.output_schema
            assert dict(listed.metadata) == {"category": "weather"}
