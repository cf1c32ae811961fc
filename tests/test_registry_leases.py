"""Leases (expiry, KeepAlive, revoke, restart) and SQLite persistence of leaseless tools."""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path

import grpc
import pytest

from tests.support.registry import read, running_registry, tool
from toolcall.errors import bad_request_violations
from toolcall.v1 import registry_pb2, registry_pb2_grpc

pytestmark = pytest.mark.anyio


async def _lease(
    stub: registry_pb2_grpc.ToolRegistryAsyncStub, ttl: float = 0, holder: str = "test"
) -> registry_pb2.CreateLeaseResponse:
    return await stub.CreateLease(registry_pb2.CreateLeaseRequest(ttl_seconds=ttl, holder=holder))


async def test_expired_lease_removes_its_tools_and_watch_reports_it(tmp_path: Path) -> None:
    async with running_registry(tmp_path, roles=["a", "b"]) as reg:
        lease = await _lease(reg.stub, ttl=1)
        assert lease.ttl_seconds == 1
        await reg.register(tool("plugin_tool"), lease_id=lease.lease_id)
        await reg.register(tool("static_tool"))
        watch = reg.stub.Watch(registry_pb2.WatchRequest())
        await read(watch, 5)  # 4 snapshot events + SYNCED
        started = time.monotonic()
        removed = await read(watch, 2)
        elapsed = time.monotonic() - started
        assert [(e.type, e.tool.role, e.tool.tool.name, e.reason) for e in removed] == [
            (registry_pb2.EVENT_TYPE_REMOVED, "a", "plugin_tool", "lease expired"),
            (registry_pb2.EVENT_TYPE_REMOVED, "b", "plugin_tool", "lease expired"),
        ]
        assert elapsed < 2.5
        assert await reg.names() == [("a", "static_tool"), ("b", "static_tool")]
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await reg.stub.KeepAlive(registry_pb2.KeepAliveRequest(lease_id=lease.lease_id))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        watch.cancel()


async def test_keep_alive_keeps_tools_and_counts_them(tmp_path: Path) -> None:
    async with running_registry(tmp_path, roles=["a", "b"]) as reg:
        lease = await _lease(reg.stub, ttl=1)
        await reg.register(tool("t1"), lease_id=lease.lease_id)  # two roles, one tool
        await reg.register(tool("t2", role="a"), lease_id=lease.lease_id)
        for _ in range(5):  # 1.5 s, well past the 1 s TTL
            await asyncio.sleep(0.3)
            reply = await reg.stub.KeepAlive(registry_pb2.KeepAliveRequest(lease_id=lease.lease_id))
            assert reply.ttl_seconds == 1
            assert reply.tools == 2
        assert len(await reg.names()) == 3
        # Replaced by a leaseless registration: no longer the lease's.
        await reg.register(tool("t2", role="a"))
        reply = await reg.stub.KeepAlive(registry_pb2.KeepAliveRequest(lease_id=lease.lease_id))
        assert reply.tools == 1


async def test_revoke_removes_the_tools_now(tmp_path: Path) -> None:
    async with running_registry(tmp_path, roles=["a", "b"]) as reg:
        lease = await _lease(reg.stub)
        other = await _lease(reg.stub)
        await reg.register(tool("mine"), lease_id=lease.lease_id)
        await reg.register(tool("theirs"), lease_id=other.lease_id)
        watch = reg.stub.Watch(registry_pb2.WatchRequest(role="a"))
        await read(watch, 3)
        reply = await reg.stub.RevokeLease(registry_pb2.RevokeLeaseRequest(lease_id=lease.lease_id))
        assert reply.removed == 2
        [event] = await read(watch, 1)
        assert (event.tool.tool.name, event.reason) == ("mine", "lease revoked")
        assert await reg.names() == [("a", "theirs"), ("b", "theirs")]
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await reg.stub.RevokeLease(registry_pb2.RevokeLeaseRequest(lease_id=lease.lease_id))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        watch.cancel()


@pytest.mark.parametrize("ttl", [0.5, 300.5, -1, math.nan, math.inf])
async def test_ttl_out_of_range_is_invalid_argument(tmp_path: Path, ttl: float) -> None:
    async with running_registry(tmp_path) as reg:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await _lease(reg.stub, ttl=ttl)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        [(field, reason)] = bad_request_violations(info.value)
        assert field == "ttl_seconds" and "300" in reason


async def test_ttl_zero_means_the_default(tmp_path: Path) -> None:
    async with running_registry(tmp_path) as reg:
        assert (await _lease(reg.stub)).ttl_seconds == 10
        assert (await _lease(reg.stub, ttl=300)).ttl_seconds == 300


@pytest.mark.sqlite_store
async def test_a_restarted_registry_does_not_know_old_leases(tmp_path: Path) -> None:
    async with running_registry(tmp_path) as reg:
        lease = await _lease(reg.stub)
        await reg.register(tool("leased"), lease_id=lease.lease_id)
        first_instance = lease.instance_id
    async with running_registry(tmp_path) as reg:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await reg.stub.KeepAlive(registry_pb2.KeepAliveRequest(lease_id=lease.lease_id))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        assert "create a new lease" in (info.value.details() or "")
        assert (await _lease(reg.stub)).instance_id != first_instance
        assert await reg.names() == []  # leased tools are not persisted


@pytest.mark.sqlite_store
async def test_leaseless_tools_survive_a_restart(tmp_path: Path) -> None:
    async with running_registry(tmp_path, roles=["a", "b"]) as reg:
        await reg.register(tool("kept", description="d", timeout_seconds=7, source="s"))
        await reg.register(tool("gone"))
        await reg.register(tool("to_lease", role="a"))
        lease = await _lease(reg.stub)
        await reg.register(tool("to_lease", role="a"), lease_id=lease.lease_id)
        await reg.stub.Unregister(registry_pb2.UnregisterRequest(name="gone"))
        before = await reg.stub.List(registry_pb2.ListRequest())
    async with running_registry(tmp_path, roles=["a", "b"]) as reg:
        after = await reg.stub.List(registry_pb2.ListRequest())
        assert [(t.role, t.tool.name) for t in after.tools] == [("a", "kept"), ("b", "kept")]
        kept_before = [t for t in before.tools if t.tool.name == "kept"]
        assert [t.tool for t in after.tools] == [t.tool for t in kept_before]
        assert [t.registered_at for t in after.tools] == [t.registered_at for t in kept_before]
        # Restored tools can be changed like any other, and that is stored too.
        await reg.stub.Unregister(registry_pb2.UnregisterRequest(name="kept", role="b"))
    async with running_registry(tmp_path, roles=["a", "b"]) as reg:
        assert await reg.names() == [("a", "kept")]


async def test_tools_of_roles_no_longer_served_stay_stored(tmp_path: Path) -> None:
    async with running_registry(tmp_path, roles=["a", "b"]) as reg:
        await reg.register(tool("t"))
    async with running_registry(tmp_path, roles=["a"]) as reg:
        assert await reg.names() == [("a", "t")]
    async with running_registry(tmp_path, roles=["a", "b"]) as reg:
        assert await reg.names() == [("a", "t"), ("b", "t")]


@pytest.mark.sqlite_store
async def test_data_path_defaults_to_the_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOOLCALL_DATA_DIR", str(tmp_path / "dd"))
    async with running_registry(tmp_path, data_path=None) as reg:
        await reg.register(tool("t"))
    assert (tmp_path / "dd" / "registry.sqlite3").exists()
