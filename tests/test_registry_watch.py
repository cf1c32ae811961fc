"""ToolRegistry.Watch: snapshot, SYNCED, live changes, role filter, slow and many watchers."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import grpc
import pytest

import registry_service.watch as watch_module
from registry_service.store import Entry
from tests.support.registry import on_etcd, read, running_registry, tool
from toolcall.tools import ToolSpec
from toolcall.v1 import registry_pb2

pytestmark = pytest.mark.anyio

UPSERTED = registry_pb2.EVENT_TYPE_UPSERTED
REMOVED = registry_pb2.EVENT_TYPE_REMOVED
SYNCED = registry_pb2.EVENT_TYPE_SYNCED


def summary(events: list[registry_pb2.WatchResponse]) -> list[tuple[int, str, str, str]]:
    return [(e.type, e.tool.role, e.tool.tool.name, e.reason) for e in events]


async def test_snapshot_then_synced_then_live_changes(tmp_path: Path) -> None:
    async with running_registry(tmp_path, roles=["a", "b"]) as reg:
        await reg.register(tool("t2", role="b"))
        await reg.register(tool("t1", role="a"))
        watch = reg.stub.Watch(registry_pb2.WatchRequest())
        snapshot = await read(watch, 3)
        assert summary(snapshot) == [
            (UPSERTED, "a", "t1", "snapshot"),
            (UPSERTED, "b", "t2", "snapshot"),
            (SYNCED, "", "", ""),
        ]
        if on_etcd():  # etcd's revisions: increasing, with gaps
            assert len({e.revision for e in snapshot}) == 1
        else:
            assert {e.revision for e in snapshot} == {2}
        instance = snapshot[0].instance_id
        assert len(instance) >= 8

        await reg.register(tool("t3"))  # both roles
        await reg.register(tool("t3", description="v2", role="b"))
        await reg.stub.Unregister(registry_pb2.UnregisterRequest(name="t1"))
        live = await read(watch, 4)
        assert summary(live) == [
            (UPSERTED, "a", "t3", "registered"),
            (UPSERTED, "b", "t3", "registered"),
            (UPSERTED, "b", "t3", "registered"),
            (REMOVED, "a", "t1", "unregistered"),
        ]
        assert live[2].tool.tool.description == "v2"
        revisions = [e.revision for e in live]
        if on_etcd():  # one etcd transaction per Register: its roles share a revision
            assert snapshot[0].revision < revisions[0] == revisions[1] < revisions[2] < revisions[3]
        else:
            assert revisions == [3, 4, 5, 6]
        assert {e.instance_id for e in live} == {instance}
        lease = await reg.stub.CreateLease(registry_pb2.CreateLeaseRequest())
        assert lease.instance_id == instance
        watch.cancel()


async def test_clear_and_role_filter(tmp_path: Path) -> None:
    async with running_registry(tmp_path, roles=["a", "b"]) as reg:
        await reg.register(tool("x", source="s"))
        only_b = reg.stub.Watch(registry_pb2.WatchRequest(role="b"))
        assert summary(await read(only_b, 2)) == [
            (UPSERTED, "b", "x", "snapshot"),
            (SYNCED, "", "", ""),
        ]
        await reg.register(tool("y", role="a"))
        await reg.register(tool("z", role="b"))
        await reg.stub.Clear(registry_pb2.ClearRequest(source="s"))
        events = await read(only_b, 2)
        assert summary(events) == [
            (UPSERTED, "b", "z", "registered"),
            (REMOVED, "b", "x", "cleared"),
        ]
        # Revisions count every change, so one role's watcher sees gaps.
        assert events[0].revision < events[1].revision
        only_b.cancel()


async def test_watch_of_an_unknown_role_is_not_found(tmp_path: Path) -> None:
    async with running_registry(tmp_path, roles=["a"]) as reg:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await read(reg.stub.Watch(registry_pb2.WatchRequest(role="nope")), 1)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_watcher_that_falls_behind_is_ended_with_resource_exhausted(
    tmp_path: Path,
) -> None:
    async with running_registry(tmp_path, watch_queue_size=5) as reg:
        watch = reg.stub.Watch(registry_pb2.WatchRequest())
        await read(watch, 1)  # SYNCED: the watcher is subscribed
        # Six changes in one go, before the stream can drain any of them.
        store = reg.host.registry.store
        for i in range(6):
            store.put(Entry.create(ToolSpec.from_definition(tool(f"t{i}")), "default"))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await read(watch, 7)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "resync" in (info.value.details() or "")
        assert len(reg.host.registry.hub) == 0
        # Watching again gives a full, fresh snapshot.
        again = reg.stub.Watch(registry_pb2.WatchRequest())
        assert len(await read(again, 7)) == 7
        again.cancel()


async def test_cancelled_watchers_are_unsubscribed(tmp_path: Path) -> None:
    async with running_registry(tmp_path) as reg:
        calls = [reg.stub.Watch(registry_pb2.WatchRequest()) for _ in range(3)]
        for call in calls:
            await read(call, 1)
        assert len(reg.host.registry.hub) == 3
        for call in calls:
            call.cancel()
        for _ in range(100):  # up to 2 s
            if not len(reg.host.registry.hub):
                break
            await asyncio.sleep(0.02)
        assert len(reg.host.registry.hub) == 0


async def test_watch_streams_past_the_bound_are_resource_exhausted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(watch_module, "MAX_WATCHERS", 2)
    async with running_registry(tmp_path) as reg:
        calls = [reg.stub.Watch(registry_pb2.WatchRequest()) for _ in range(2)]
        for call in calls:
            await read(call, 1)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await read(reg.stub.Watch(registry_pb2.WatchRequest()), 1)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "2 Watch streams" in (info.value.details() or "")
        calls.pop().cancel()
        for _ in range(100):  # up to 2 s for the registry to see the cancel
            if len(reg.host.registry.hub) < 2:
                break
            await asyncio.sleep(0.02)
        again = reg.stub.Watch(registry_pb2.WatchRequest())
        assert len(await read(again, 1)) == 1
        for call in (*calls, again):
            call.cancel()


async def test_one_hundred_watchers_all_see_each_change(tmp_path: Path) -> None:
    async with running_registry(tmp_path) as reg:
        await reg.register(tool("seed"))
        calls = [reg.stub.Watch(registry_pb2.WatchRequest()) for _ in range(100)]
        await asyncio.gather(*(read(c, 2) for c in calls))
        started = time.perf_counter()
        for i in range(10):
            await reg.register(tool(f"t{i}"))
        results = await asyncio.gather(*(read(c, 10) for c in calls))
        elapsed = time.perf_counter() - started
        for events in results:
            assert [e.tool.tool.name for e in events] == [f"t{i}" for i in range(10)]
        assert elapsed < 5, f"10 changes to 100 watchers took {elapsed:.2f}s"
        for call in calls:
            call.cancel()


async def test_shutdown_ends_watch_streams_promptly(tmp_path: Path) -> None:
    async with running_registry(tmp_path, grace_s=5.0) as reg:
        watch = reg.stub.Watch(registry_pb2.WatchRequest())
        await read(watch, 1)
        started = time.monotonic()
        await reg.host.stop()
        assert time.monotonic() - started < 2
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await read(watch, 1)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
