"""Who may change the registry or run its tools: local peers only, with the token when one is set.

A registry listening on one of this machine's non-loopback addresses is
called from that address (the traffic never leaves the machine, but the peer
is not loopback): every mutating RPC and Invoke (it runs plugin code) is
PERMISSION_DENIED, even with the right token, while List and Watch work. Also through a dual-stack
listener, where peers look like ``[::ffff:a.b.c.d]``. With a token set, a
missing, wrong or malformed ``authorization`` header is UNAUTHENTICATED.
Without a non-loopback address the tests create one on a dummy interface
(root and ``ip`` needed) or skip.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from registry_service import RegistrySettings, start_registry
from toolcall.tools import ToolSpec
from toolcall.v1 import registry_pb2, registry_pb2_grpc, tools_pb2

pytestmark = pytest.mark.anyio

TOKEN = "s3cret-token"
DUMMY = ("tc0", "192.0.2.1")


def interface_addresses() -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Global (not loopback, not link-local) addresses of this machine's interfaces."""
    ip = shutil.which("ip")
    if ip is None:
        return []
    out = subprocess.run([ip, "-j", "addr", "show"], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        return []
    found = []
    for link in json.loads(out.stdout or "[]"):
        if "UP" not in link.get("flags", []):
            continue
        for info in link.get("addr_info", []):
            addr = ipaddress.ip_address(info["local"])
            if not (addr.is_loopback or addr.is_link_local or addr.is_multicast):
                found.append(addr)
    return found


@pytest.fixture(scope="module")
def outside_addresses() -> Iterator[list[str]]:
    """This machine's non-loopback addresses, as gRPC hosts; creates one if needed."""
    hosts = [f"[{a}]" if a.version == 6 else str(a) for a in interface_addresses()]
    created = False
    if not any(h[0] != "[" for h in hosts):
        ip = shutil.which("ip")
        if ip is None or os.geteuid() != 0:
            pytest.skip("no non-loopback IPv4 address, and cannot create one (needs root and ip)")
        name, addr = DUMMY
        steps = [
            [ip, "link", "add", name, "type", "dummy"],
            [ip, "addr", "add", f"{addr}/32", "dev", name],
            [ip, "link", "set", name, "up"],
        ]
        for step in steps:
            if subprocess.run(step, capture_output=True, check=False).returncode != 0:
                subprocess.run([ip, "link", "del", name], capture_output=True, check=False)
                pytest.skip(f"cannot create a dummy interface: {' '.join(step)}")
        created = True
        hosts.append(addr)
    try:
        yield hosts
    finally:
        if created:
            subprocess.run([shutil.which("ip") or "ip", "link", "del", DUMMY[0]], check=False)


def definition(name: str = "guarded") -> tools_pb2.ToolDefinition:
    return tools_pb2.ToolDefinition(name=name, callback_address="127.0.0.1:1", source="access")


# Each gated RPC with a request that would otherwise succeed or fail on its own terms.
MUTATING: list[tuple[str, Any]] = [
    ("Register", registry_pb2.RegisterRequest(tool=definition())),
    ("Unregister", registry_pb2.UnregisterRequest(name="guarded")),
    ("Clear", registry_pb2.ClearRequest(source="access")),
    ("CreateLease", registry_pb2.CreateLeaseRequest(ttl_seconds=5)),
    ("KeepAlive", registry_pb2.KeepAliveRequest(lease_id="lease_unknown")),
    ("RevokeLease", registry_pb2.RevokeLeaseRequest(lease_id="lease_unknown")),
    ("Invoke", registry_pb2.InvokeRequest(name="guarded")),
]


@contextlib.asynccontextmanager
async def registry(tmp_path: Path, listen: str, token: str = "") -> AsyncIterator[tuple[Any, int]]:
    # --insecure: off loopback a registry without TLS and principals refuses to
    # start (tests/test_security_tls.py); these tests check the gate it keeps.
    settings = RegistrySettings(
        address=listen,
        token=token,
        data_path=tmp_path / "registry.sqlite3",
        grace_s=0.2,
        insecure=True,
    )
    host = await start_registry(settings)
    try:
        yield host, host.port
    finally:
        await host.stop()


async def code_of(stub: Any, method: str, request: Any, **kw: Any) -> grpc.StatusCode:
    try:
        await getattr(stub, method)(request, timeout=5, **kw)
    except grpc.aio.AioRpcError as exc:
        assert exc.details(), f"{method}: {exc.code().name} without a message"
        return exc.code()
    return grpc.StatusCode.OK


async def reads_work(stub: registry_pb2_grpc.ToolRegistryAsyncStub) -> None:
    listed = await stub.List(registry_pb2.ListRequest(), timeout=5)
    assert [t.tool.name for t in listed.tools] == ["seeded"]
    watch = stub.Watch(registry_pb2.WatchRequest(), timeout=5)
    first = await watch.read()
    assert isinstance(first, registry_pb2.WatchResponse) and first.tool.tool.name == "seeded"
    watch.cancel()


async def test_non_local_peers_cannot_change_the_registry(
    tmp_path: Path, outside_addresses: list[str]
) -> None:
    for host in outside_addresses:
        listen = f"{host}:0"
        async with registry(tmp_path / host.strip("[]"), listen, TOKEN) as (reg, port):
            await seed(reg)
            async with grpc.aio.insecure_channel(f"{host}:{port}") as ch:
                stub: registry_pb2_grpc.ToolRegistryAsyncStub = registry_pb2_grpc.ToolRegistryStub(
                    ch
                )
                # Refused even with the right token: the peer check comes first.
                auth = (("authorization", f"Bearer {TOKEN}"),)
                for method, request in MUTATING:
                    code = await code_of(stub, method, request, metadata=auth)
                    assert code == grpc.StatusCode.PERMISSION_DENIED, (host, method, code)
                await reads_work(stub)


async def seed(host: Any) -> None:
    """Adds a tool in-process (no RPC: the peers under test may not register)."""
    await host.registry.register(ToolSpec.from_definition(definition("seeded")))


async def test_a_dual_stack_listener_tells_mapped_loopback_from_mapped_outside_peers(
    tmp_path: Path, outside_addresses: list[str]
) -> None:
    outside = next((h for h in outside_addresses if not h.startswith("[")), None)
    if outside is None:
        pytest.skip("no non-loopback IPv4 address")
    # A wildcard listener only for this test: the peers it sees are ::ffff:a.b.c.d.
    try:
        ctx = registry(tmp_path, "[::]:0")
        reg, port = await ctx.__aenter__()
    except (OSError, RuntimeError) as exc:
        pytest.skip(f"cannot listen on [::] (no IPv6?): {exc}")
    try:
        await seed(reg)
        async with grpc.aio.insecure_channel(f"{outside}:{port}") as ch:
            stub: registry_pb2_grpc.ToolRegistryAsyncStub = registry_pb2_grpc.ToolRegistryStub(ch)
            for method, request in MUTATING:
                code = await code_of(stub, method, request)
                assert code == grpc.StatusCode.PERMISSION_DENIED, (method, code)
            await reads_work(stub)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
            stub = registry_pb2_grpc.ToolRegistryStub(ch)
            code = await code_of(stub, "CreateLease", registry_pb2.CreateLeaseRequest())
            assert code == grpc.StatusCode.OK
    finally:
        await ctx.__aexit__(None, None, None)


BAD_AUTH: list[tuple[str, tuple[tuple[str, str], ...]]] = [
    ("missing", ()),
    ("wrong token", (("authorization", "Bearer nope"),)),
    ("no scheme", (("authorization", TOKEN),)),
    ("lower-case scheme", (("authorization", f"bearer {TOKEN}"),)),
    ("basic scheme", (("authorization", f"Basic {TOKEN}"),)),
    ("trailing space", (("authorization", f"Bearer {TOKEN} "),)),
    ("prefix of the token", (("authorization", f"Bearer {TOKEN[:-1]}"),)),
    ("token plus more", (("authorization", f"Bearer {TOKEN}x"),)),
    ("other header", (("x-token", f"Bearer {TOKEN}"),)),
    ("empty bearer", (("authorization", "Bearer "),)),
]


@pytest.mark.parametrize(("why", "metadata"), BAD_AUTH, ids=[b[0] for b in BAD_AUTH])
async def test_a_missing_or_wrong_token_is_unauthenticated(
    tmp_path: Path, why: str, metadata: tuple[tuple[str, str], ...]
) -> None:
    async with (
        registry(tmp_path, "127.0.0.1:0", TOKEN) as (reg, port),
        grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch,
    ):
        stub: registry_pb2_grpc.ToolRegistryAsyncStub = registry_pb2_grpc.ToolRegistryStub(ch)
        for method, request in MUTATING:
            code = await code_of(stub, method, request, metadata=metadata)
            assert code == grpc.StatusCode.UNAUTHENTICATED, (why, method, code)
        await seed(reg)
        await reads_work(stub)  # reading needs no token


async def test_the_right_token_is_accepted(tmp_path: Path) -> None:
    async with (
        registry(tmp_path, "127.0.0.1:0", TOKEN) as (_, port),
        grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch,
    ):
        stub: registry_pb2_grpc.ToolRegistryAsyncStub = registry_pb2_grpc.ToolRegistryStub(ch)
        auth = (("authorization", f"Bearer {TOKEN}"),)
        # Invoke of "guarded" runs after Register and Unregister removed it.
        expected = {
            "KeepAlive": grpc.StatusCode.NOT_FOUND,
            "RevokeLease": grpc.StatusCode.NOT_FOUND,
            "Invoke": grpc.StatusCode.NOT_FOUND,
        }
        for method, request in MUTATING:
            code = await code_of(stub, method, request, metadata=auth)
            assert code == expected.get(method, grpc.StatusCode.OK), (method, code)
