"""Registry replicas on one real etcd cluster: the same tools everywhere, leases in etcd.

A plugin may create its lease, register and keep alive through any replica;
a watcher on any replica sees every change with etcd's revision and the
change's reason; a replica killed with SIGKILL loses nothing; killing an
etcd member and then the leader leaves registrations working (at most a
retryable UNAVAILABLE while etcd elects). The rest of the registry suite
runs on etcd with ``pytest --registry-store=etcd`` (``make test`` does).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from registry_service import start_registry
from registry_service.store import StorageError
from tests.support.etcd import EtcdCluster, free_ports, start_cluster, stop_cluster
from tests.support.registry import Registry, etcd_options, read, running_registry, settings, tool
from toolcall.clients import wait_healthy
from toolcall.v1 import registry_pb2, registry_pb2_grpc

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parents[1]
UPSERTED, REMOVED = registry_pb2.EVENT_TYPE_UPSERTED, registry_pb2.EVENT_TYPE_REMOVED


@contextlib.asynccontextmanager
async def replicas(
    tmp_path: Path, cluster: EtcdCluster, n: int = 2
) -> AsyncIterator[list[Registry]]:
    """``n`` in-process registries sharing one etcd key prefix."""
    async with contextlib.AsyncExitStack() as stack:
        regs = [
            await stack.enter_async_context(
                running_registry(
                    tmp_path, store="etcd", etcd=etcd_options(tmp_path, cluster.endpoints)
                )
            )
            for _ in range(n)
        ]
        yield regs


async def synced(reg: Registry) -> grpc.aio.StreamStreamCall:  # type: ignore[type-arg]
    """A Watch call on ``reg`` that has read its (empty) snapshot."""
    watch = reg.stub.Watch(registry_pb2.WatchRequest())
    [event] = await read(watch, 1)
    assert event.type == registry_pb2.EVENT_TYPE_SYNCED
    return watch


async def test_replicas_serve_the_same_tools_and_a_watcher_on_either_sees_every_change(
    tmp_path: Path, etcd_cluster: EtcdCluster
) -> None:
    async with replicas(tmp_path, etcd_cluster) as (a, b):
        watch_a, watch_b = await synced(a), await synced(b)
        await a.register(tool("weather"))
        [on_b] = await read(watch_b, 1)
        assert (on_b.type, on_b.tool.tool.name, on_b.reason) == (UPSERTED, "weather", "registered")
        assert await b.names() == [("default", "weather")]

        await b.stub.Unregister(registry_pb2.UnregisterRequest(name="weather"), timeout=5)
        [upserted, removed] = await read(watch_a, 2)
        assert (removed.type, removed.reason) == (REMOVED, "unregistered")
        # etcd's revisions, the same on every replica, and one registry to watchers.
        assert upserted.revision == on_b.revision < removed.revision
        assert upserted.instance_id == on_b.instance_id == removed.instance_id
        assert await a.names() == []
        watch_a.cancel()
        watch_b.cancel()


async def test_a_lease_made_on_one_replica_is_kept_alive_and_revoked_through_the_other(
    tmp_path: Path, etcd_cluster: EtcdCluster
) -> None:
    async with replicas(tmp_path, etcd_cluster) as (a, b):
        watch_a = await synced(a)
        lease = await a.stub.CreateLease(registry_pb2.CreateLeaseRequest(ttl_seconds=30))
        await a.register(tool("clock"), lease.lease_id)
        alive = await b.stub.KeepAlive(registry_pb2.KeepAliveRequest(lease_id=lease.lease_id))
        assert alive.tools == 1 and alive.ttl_seconds >= 1
        revoked = await b.stub.RevokeLease(registry_pb2.RevokeLeaseRequest(lease_id=lease.lease_id))
        assert revoked.removed == 1
        [_, removed] = await read(watch_a, 2)
        assert (removed.type, removed.reason) == (REMOVED, "lease revoked")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await a.stub.KeepAlive(registry_pb2.KeepAliveRequest(lease_id=lease.lease_id))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND
        watch_a.cancel()


async def test_an_expired_lease_removes_its_tools_from_every_replica_as_lease_expired(
    tmp_path: Path, etcd_cluster: EtcdCluster
) -> None:
    async with replicas(tmp_path, etcd_cluster) as (a, b):
        watch_b = await synced(b)
        lease = await a.stub.CreateLease(registry_pb2.CreateLeaseRequest(ttl_seconds=1))
        await a.register(tool("brief"), lease.lease_id)
        # etcd expires it (its minimum TTL may round 1 s up a little), not a sweeper here.
        [_, removed] = await read(watch_b, 2, timeout_s=15)
        assert (removed.type, removed.tool.tool.name) == (REMOVED, "brief")
        assert removed.reason == "lease expired"
        assert await a.names() == await b.names() == []
        watch_b.cancel()


async def test_a_replica_killed_with_sigkill_loses_no_tool_and_no_lease(
    tmp_path: Path, etcd_cluster: EtcdCluster
) -> None:
    options = etcd_options(tmp_path, etcd_cluster.endpoints)
    [port] = free_ports(1)
    env = dict(
        os.environ,
        PYTHONPATH=str(REPO),
        TOOLCALL_ETCD_ENDPOINTS=",".join(options.endpoints),
        TOOLCALL_ETCD_PREFIX=options.prefix,
    )
    proc = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "toolcall.cli", "registry", "--store", "etcd"],
        *["--address", f"127.0.0.1:{port}", "--data-dir", str(tmp_path / "doomed")],
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        doomed = f"127.0.0.1:{port}"
        await wait_healthy(doomed, timeout_s=20)
        async with (
            grpc.aio.insecure_channel(doomed) as channel,
            running_registry(tmp_path, store="etcd", etcd=options) as survivor,
        ):
            stub = registry_pb2_grpc.ToolRegistryStub(channel)
            lease = await stub.CreateLease(registry_pb2.CreateLeaseRequest(ttl_seconds=2))
            await stub.Register(registry_pb2.RegisterRequest(tool=tool("kept")), timeout=5)
            await stub.Register(
                registry_pb2.RegisterRequest(tool=tool("leased"), lease_id=lease.lease_id),
                timeout=5,
            )
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
            # The plugin moves to the survivor: its lease is there, so are its tools,
            # through more than one TTL.
            for _ in range(6):
                alive = await survivor.stub.KeepAlive(
                    registry_pb2.KeepAliveRequest(lease_id=lease.lease_id)
                )
                assert alive.tools == 1
                await asyncio.sleep(0.5)
            assert await survivor.names() == [("default", "kept"), ("default", "leased")]
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_registrations_survive_killing_an_etcd_member_and_then_the_leader(
    tmp_path: Path,
) -> None:
    cluster = start_cluster(3)  # its own: members die here
    try:
        async with replicas(tmp_path, cluster, n=2) as (a, b):
            done: list[str] = []
            retryable: list[str] = []

            async def register(i: int) -> None:
                reg = (a, b)[i % 2]
                try:
                    await reg.register(tool(f"t{i:03d}"))
                    done.append(f"t{i:03d}")
                except grpc.aio.AioRpcError as exc:
                    # The only error a client may see: retryable, never UNKNOWN.
                    assert exc.code() == grpc.StatusCode.UNAVAILABLE, exc
                    retryable.append(f"t{i:03d}")

            follower = next(m for m in cluster.members if m is not cluster.leader())
            for i in range(20):
                await register(i)
            cluster.kill(follower)
            for i in range(20, 40):
                await register(i)
            cluster.kill(cluster.leader())  # two of three gone: no quorum...
            cluster.restart(follower)  # ...until this one is back
            for i in range(40, 60):
                await register(i)
            assert len(done) >= 40, retryable
            for reg in (a, b):
                names = {name for _, name in await reg.names()}
                assert set(done) <= names  # nothing acknowledged was lost, on either replica
    finally:
        stop_cluster(cluster)


async def test_a_registry_that_cannot_reach_etcd_does_not_start_and_says_why(
    tmp_path: Path,
) -> None:
    [port] = free_ports(1)
    options = etcd_options(tmp_path, [f"127.0.0.1:{port}"])
    options.timeout_s = 1.0
    with pytest.raises(StorageError, match=r"cannot load the registry from etcd 127\.0\.0\.1"):
        await start_registry(settings(tmp_path, store="etcd", etcd=options))


def test_the_etcd_store_without_endpoints_is_refused_at_the_command_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import argparse

    from registry_service.main import add_arguments, settings_from_args

    monkeypatch.delenv("TOOLCALL_ETCD_ENDPOINTS", raising=False)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    with pytest.raises(SystemExit, match="needs endpoints"):
        settings_from_args(parser.parse_args(["--store", "etcd"]))
    settings = settings_from_args(
        parser.parse_args(["--store", "etcd", "--etcd-endpoints", "10.0.0.1:2379, 10.0.0.2:2379"])
    )
    assert settings.etcd.endpoints == ["10.0.0.1:2379", "10.0.0.2:2379"]


async def test_a_registry_on_an_etcd_with_authentication_needs_the_right_password(
    tmp_path: Path,
) -> None:
    from aetcd import rpc

    cluster = start_cluster(1)  # its own: authentication changes the whole cluster
    try:
        async with grpc.aio.insecure_channel(cluster.endpoints[0]) as ch:
            auth = rpc.AuthStub(ch)
            await auth.RoleAdd(rpc.AuthRoleAddRequest(name="root"), timeout=5)
            await auth.UserAdd(rpc.AuthUserAddRequest(name="root", password="s3cret"), timeout=5)
            await auth.UserGrantRole(rpc.AuthUserGrantRoleRequest(user="root", role="root"))
            await auth.AuthEnable(rpc.AuthEnableRequest(), timeout=5)
        options = etcd_options(tmp_path, cluster.endpoints)
        options.user, options.password, options.timeout_s = "root", "wrong", 2.0
        with pytest.raises(StorageError, match="cannot load the registry"):
            await start_registry(settings(tmp_path, store="etcd", etcd=options))
        options.password = "s3cret"
        async with running_registry(tmp_path, store="etcd", etcd=options) as reg:
            await reg.register(tool("guarded"))
            assert await reg.names() == [("default", "guarded")]
    finally:
        stop_cluster(cluster)
