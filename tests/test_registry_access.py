"""Who may change the registry: the local-peer predicate, the token, and the gate itself."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from registry_service.access import (
    GATED_METHODS,
    MutationGate,
    access_error,
    bearer_token_ok,
    is_local_peer,
)
from tests.support.registry import running_registry, tool
from toolcall.v1 import registry_pb2

SERVICE = "toolcall.v1.ToolRegistry"

LOCAL_PEERS = [
    "ipv4:127.0.0.1:5000",
    "ipv4:127.0.0.2:1",
    "ipv4:127.255.255.254:65535",
    "ipv6:[::1]:5000",
    "ipv6:[::ffff:127.0.0.1]:5",  # dual-stack listener, IPv4 loopback client
    "unix:/tmp/registry.sock",
    "unix:",  # grpc's peer for the accepting end of a unix socket
    "unix-abstract:registry",
]

REMOTE_PEERS = [
    "ipv4:10.0.0.5:1234",
    "ipv4:192.168.1.2:80",
    "ipv4:0.0.0.0:1",
    "ipv4:8.8.8.8:53",
    "ipv4:169.254.169.254:80",
    "ipv6:[fe80::1]:3",
    "ipv6:[::ffff:10.0.0.1]:5",
    "ipv6:[::]:1",
    "ipv6:[2001:db8::1]:443",
    "ipv4:128.0.0.1:1",
    "ipv4:localhost:1",
    "ipv4:127.1:1",
    "ipv4:2130706433:1",
    "ipv6:::1:5000",  # unbracketed: not what grpc produces
    "ipv6:[::1",
    "127.0.0.1:5000",
    "dns:///localhost:1",
    "",
    "unknown",
]


@pytest.mark.parametrize("peer", LOCAL_PEERS)
def test_local_peers(peer: str) -> None:
    assert is_local_peer(peer)


@pytest.mark.parametrize("peer", REMOTE_PEERS)
def test_remote_or_malformed_peers(peer: str) -> None:
    assert not is_local_peer(peer)


@pytest.mark.parametrize(
    ("metadata", "ok"),
    [
        ((("authorization", "Bearer s3cret"),), True),
        ((("Authorization", "Bearer s3cret"),), True),
        ((("x-other", "1"), ("authorization", "Bearer s3cret")), True),
        ((("authorization", b"Bearer s3cret"),), True),
        ((("authorization", "Bearer wrong"),), False),
        ((("authorization", "bearer s3cret"),), False),
        ((("authorization", "s3cret"),), False),
        ((("authorization", "Bearer s3cret "),), False),
        ((("authorization", "Bearer s3cretX"),), False),
        ((("x-token", "Bearer s3cret"),), False),
        ((), False),
        (None, False),
    ],
)
def test_bearer_token(metadata: Any, ok: bool) -> None:
    assert bearer_token_ok(metadata, "s3cret") is ok


def test_peer_is_checked_before_the_token() -> None:
    remote = access_error("ipv4:10.0.0.5:1", (("authorization", "Bearer t"),), "t")
    assert remote is not None and remote[0] == grpc.StatusCode.PERMISSION_DENIED
    assert "10.0.0.5" in remote[1]
    no_token = access_error("ipv4:127.0.0.1:1", (), "t")
    assert no_token is not None and no_token[0] == grpc.StatusCode.UNAUTHENTICATED
    assert access_error("ipv4:127.0.0.1:1", (), "") is None
    assert access_error("unix:", (("authorization", "Bearer t"),), "t") is None


# -- the interceptor, with a stand-in for grpc's call details and context ------


class Aborted(Exception):
    pass


@dataclass
class Details:
    method: str
    invocation_metadata: tuple[tuple[str, str | bytes], ...] = ()


@dataclass
class Context:
    peer_address: str
    metadata: tuple[tuple[str, str], ...] = ()
    aborted: list[tuple[grpc.StatusCode, str]] = field(default_factory=list)

    def peer(self) -> str:
        return self.peer_address

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self.metadata

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.aborted.append((code, details))
        raise Aborted(details)


async def _behavior(request: Any, context: Any) -> str:
    return f"handled {request}"


async def _continuation(details: Any) -> grpc.RpcMethodHandler[Any, Any]:
    return grpc.unary_unary_rpc_method_handler(_behavior)


@pytest.mark.anyio
@pytest.mark.parametrize("method", sorted(GATED_METHODS))
async def test_gate_refuses_remote_peers_on_every_mutating_method_and_invoke(method: str) -> None:
    gate = MutationGate(SERVICE, token="")
    handler = await gate.intercept_service(_continuation, Details(f"/{SERVICE}/{method}"))
    assert handler is not None and handler.unary_unary is not None
    remote = Context("ipv4:10.0.0.5:1234")
    with pytest.raises(Aborted):
        await handler.unary_unary("req", remote)  # type: ignore[arg-type]
    assert remote.aborted[0][0] == grpc.StatusCode.PERMISSION_DENIED
    local = Context("ipv4:127.0.0.1:40000")
    assert await handler.unary_unary("req", local) == "handled req"  # type: ignore[arg-type]


@pytest.mark.anyio
@pytest.mark.parametrize("method", ["List", "Watch"])
async def test_gate_leaves_reads_alone(method: str) -> None:
    gate = MutationGate(SERVICE, token="t")
    original = await _continuation(None)

    async def same(details: Any) -> grpc.RpcMethodHandler[Any, Any]:
        return original

    assert await gate.intercept_service(same, Details(f"/{SERVICE}/{method}")) is original
    health = await gate.intercept_service(same, Details("/grpc.health.v1.Health/Check"))
    assert health is original


# -- real calls ----------------------------------------------------------------


@pytest.mark.anyio
async def test_token_gate_on_a_real_server(tmp_path: Path) -> None:
    async with running_registry(tmp_path, token="s3cret") as reg:
        register = registry_pb2.RegisterRequest(tool=tool("t"))
        for metadata in [(), (("authorization", "Bearer nope"),), (("authorization", "s3cret"),)]:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await reg.stub.Register(register, metadata=metadata)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "Bearer" in (info.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await reg.stub.CreateLease(registry_pb2.CreateLeaseRequest())
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert await reg.names() == []

        good = (("authorization", "Bearer s3cret"),)
        assert (await reg.stub.Register(register, metadata=good)).ok
        assert (
            await reg.stub.CreateLease(registry_pb2.CreateLeaseRequest(), metadata=good)
        ).lease_id
        # Reads need no token.
        assert await reg.names() == [("default", "t")]
        # Invoke runs plugin code with caller-chosen session_id and role: it needs the token.
        invoke = registry_pb2.InvokeRequest(name="t", session_id="someone-else", role="default")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await reg.stub.Invoke(invoke)
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        reply = await reg.stub.Invoke(invoke, metadata=good)
        assert reply.result.is_error  # reached the (absent) plugin: not refused
        removed = await reg.stub.Unregister(registry_pb2.UnregisterRequest(name="t"), metadata=good)
        assert removed.removed == 1


@pytest.mark.anyio
async def test_unix_socket_peers_may_change_the_registry(tmp_path: Path) -> None:
    address = f"unix:{tmp_path / 'registry.sock'}"
    async with running_registry(tmp_path, address=address) as reg:
        assert reg.target == address
        assert (await reg.register(tool("t"))).ok
        assert await reg.names() == [("default", "t")]


@contextlib.contextmanager
def _non_loopback_ipv4() -> Iterator[str]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 9))  # no packet is sent; picks the outgoing address
            host = s.getsockname()[0]
        except OSError:
            host = ""
    if not host or host.startswith("127."):
        pytest.skip("this machine has no non-loopback IPv4 address")
    yield host


@pytest.mark.anyio
async def test_non_local_peers_are_refused_even_on_a_non_loopback_listener(
    tmp_path: Path,
) -> None:
    with _non_loopback_ipv4() as host:
        # --insecure: without TLS and principals a non-loopback address is refused
        # at start (tests/test_security_tls.py); the loopback gate still holds.
        async with running_registry(tmp_path, address=f"{host}:0", insecure=True) as reg:
            # Dialling the machine's own external address: the peer is not loopback.
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await reg.register(tool("t"))
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert host in (info.value.details() or "")
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await reg.stub.CreateLease(registry_pb2.CreateLeaseRequest())
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
            # Reading is still allowed from there.
            assert await reg.names() == []
