"""Authentication and authorization on every RPC (toolcall/auth.py), on real servers.

A registry with a principals file answers nothing without an identity, reads
included; each RPC needs its privilege (``Invoke`` is one, not a read); bearer
tokens and mTLS client certificates both name principals; the registry's
single shared token keeps working beside the file; health stays open for
probes. The table covers every method of every guarded service (fail closed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.registry import running_registry, tool
from tests.support.tls import PRINCIPALS, Certs, make_certs, principals_file
from toolcall import auth, config
from toolcall.channels import open_channel
from toolcall.v1 import callback_pb2, llm_pb2, registry_pb2, registry_pb2_grpc

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


async def code_of(call: Any) -> grpc.StatusCode:
    try:
        await call
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def test_every_method_of_every_guarded_service_has_a_privilege() -> None:
    for descriptor, service in (
        (registry_pb2.DESCRIPTOR, "ToolRegistry"),
        (llm_pb2.DESCRIPTOR, "LLMService"),
        (callback_pb2.DESCRIPTOR, "ToolCallback"),
    ):
        for method in descriptor.services_by_name[service].methods:
            assert f"/toolcall.v1.{service}/{method.name}" in auth.METHOD_PRIVILEGES


async def test_without_an_identity_every_registry_rpc_is_refused_reads_included(
    tmp_path: Path,
) -> None:
    path = principals_file(tmp_path / "p.toml", PRINCIPALS)
    async with running_registry(tmp_path, principals_file=path) as reg:
        stub = reg.stub
        for call in (
            stub.List(registry_pb2.ListRequest(), timeout=5),
            stub.Invoke(registry_pb2.InvokeRequest(name="t"), timeout=5),
            stub.Register(registry_pb2.RegisterRequest(tool=tool("t")), timeout=5),
            stub.List(registry_pb2.ListRequest(), metadata=bearer("wrong"), timeout=5),
            stub.List(registry_pb2.ListRequest(), metadata=(("authorization", "x"),), timeout=5),
        ):
            assert await code_of(call) == grpc.StatusCode.UNAUTHENTICATED
        watch = stub.Watch(registry_pb2.WatchRequest(), timeout=5)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await watch.read()
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # Liveness probes need no identity.
        health: Any = health_pb2_grpc.HealthStub(reg.channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_each_registry_rpc_needs_its_privilege_and_invoke_is_one(tmp_path: Path) -> None:
    path = principals_file(tmp_path / "p.toml", PRINCIPALS)
    async with running_registry(tmp_path, principals_file=path) as reg:
        stub = reg.stub
        alice, bob, carol, admin = (
            bearer(f"{n}-token") for n in ("alice", "bob", "carol", "admin")
        )
        invoke = registry_pb2.InvokeRequest(name="missing")
        assert await code_of(stub.List(registry_pb2.ListRequest(), metadata=alice)) == (
            grpc.StatusCode.OK
        )
        # alice may read and chat: Invoke runs plugin code, so it is refused.
        assert await code_of(stub.Invoke(invoke, metadata=alice)) == (
            grpc.StatusCode.PERMISSION_DENIED
        )
        # bob may invoke: the call passes the gate and finds no such tool.
        assert await code_of(stub.Invoke(invoke, metadata=bob)) == grpc.StatusCode.NOT_FOUND
        register = registry_pb2.RegisterRequest(tool=tool("t"))
        assert await code_of(stub.Register(register, metadata=bob)) == (
            grpc.StatusCode.PERMISSION_DENIED
        )
        assert await code_of(stub.Register(register, metadata=carol)) == grpc.StatusCode.OK
        clear = registry_pb2.ClearRequest(source="test")
        assert await code_of(stub.Clear(clear, metadata=carol)) == (
            grpc.StatusCode.PERMISSION_DENIED
        )
        assert await code_of(stub.Clear(clear, metadata=admin)) == grpc.StatusCode.OK


async def test_the_single_shared_token_keeps_working_beside_a_principals_file(
    tmp_path: Path,
) -> None:
    path = principals_file(tmp_path / "p.toml", PRINCIPALS)
    async with running_registry(tmp_path, principals_file=path, token="shared-secret") as reg:
        register = registry_pb2.RegisterRequest(tool=tool("t"))
        assert await code_of(reg.stub.Register(register, metadata=bearer("shared-secret"))) == (
            grpc.StatusCode.OK
        )
        assert await code_of(reg.stub.Register(register, metadata=bearer("alice-token"))) == (
            grpc.StatusCode.PERMISSION_DENIED
        )


async def test_mtls_certificates_name_principals(tmp_path: Path, certs: Certs) -> None:
    path = principals_file(tmp_path / "p.toml", PRINCIPALS)
    async with running_registry(tmp_path, principals_file=path, tls=certs.server()) as reg:
        invoke = registry_pb2.InvokeRequest(name="missing")
        for who, expected in (
            ("bob", grpc.StatusCode.NOT_FOUND),
            ("alice", grpc.StatusCode.PERMISSION_DENIED),
            ("llm", grpc.StatusCode.PERMISSION_DENIED),
        ):
            async with open_channel(reg.target, tls=certs.dial(who)) as ch:
                stub = registry_pb2_grpc.ToolRegistryStub(ch)
                assert await code_of(stub.Invoke(invoke, timeout=5)) == expected, who
                assert await code_of(stub.List(registry_pb2.ListRequest(), timeout=5)) == (
                    grpc.StatusCode.OK
                )


async def test_mtls_without_a_principals_file_authenticates_every_certificate(
    tmp_path: Path, certs: Certs
) -> None:
    async with running_registry(tmp_path, tls=certs.server()) as reg:
        async with open_channel(reg.target, tls=certs.dial("alice")) as ch:
            stub = registry_pb2_grpc.ToolRegistryStub(ch)
            register = registry_pb2.RegisterRequest(tool=tool("t"))
            assert await code_of(stub.Register(register, timeout=5)) == grpc.StatusCode.OK


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ('[[principal]]\nname = "a"\nprivileges = ["read"]\n', "needs a token"),
        ('[[principal]]\nname = "a"\ntoken = "t"\nwho = 1\n', "unknown keys who"),
        (
            '[[principal]]\nname = "a"\ntoken = "t"\n[[principal]]\nname = "a"\ntoken = "u"\n',
            "appears twice",
        ),
        ('[[principal]]\nname = "a"\ntoken_sha256 = "zz"\n', "64 hex digits"),
        ('[[principal]]\nname = "a"\ntoken = "t"\nprivileges = ["root"]\n', "privileges must"),
        ('[[principal]]\nname = "a"\ntoken = "t"\nturns_per_minute = -1\n', "turns_per_minute"),
        (
            '[[principal]]\nname = "a"\ntoken = "t"\n[[principal]]\nname = "b"\ntoken = "t"\n',
            "another principal's",
        ),
        ("not toml [", "p.toml"),
    ],
)
def test_unusable_principals_files_are_config_errors(tmp_path: Path, body: str, error: str) -> None:
    with pytest.raises(config.ConfigError, match=error):
        auth.Principals.load(principals_file(tmp_path / "p.toml", body))


def test_a_token_may_be_given_as_its_sha256_digest(tmp_path: Path) -> None:
    digest = auth.token_digest("s3cret")
    body = f'[[principal]]\nname = "a"\ntoken_sha256 = "{digest}"\n'
    principals = auth.Principals.load(principals_file(tmp_path / "p.toml", body))
    who = principals.authenticate({}, bearer("s3cret"))
    assert isinstance(who, auth.Principal) and who.name == "a" and who.privileges == {"read"}
    assert isinstance(principals.authenticate({}, bearer("other")), str)


async def test_an_sdk_plugin_registers_with_its_principals_token(tmp_path: Path) -> None:
    from plugin_stub import Plugin, llm_tool

    @llm_tool
    def shout(text: str) -> str:
        """Upper-cases text."""
        return text.upper()

    path = principals_file(tmp_path / "p.toml", PRINCIPALS)
    async with running_registry(tmp_path, principals_file=path) as reg:
        refused = Plugin(
            plugin_id="p", registry_address=reg.target, token="alice-token", tools=[shout]
        )
        async with refused:
            with pytest.raises(TimeoutError):
                await refused.wait_registered(timeout_s=1)
        plugin = Plugin(
            plugin_id="p", registry_address=reg.target, token="carol-token", tools=[shout]
        )
        async with plugin:
            await plugin.wait_registered(timeout_s=10)
            names = [
                t.tool.name
                for t in (
                    await reg.stub.List(registry_pb2.ListRequest(), metadata=bearer("bob-token"))
                ).tools
            ]
            assert names == ["shout"]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("mtls", "client", "token", "synced"),
    [
        (True, "llm", "", True),  # its certificate names a reader
        (False, None, "alice-token", True),  # TLS, and a token naming a reader
        (False, None, "", False),  # TLS but no identity: never synced
    ],
)
async def test_the_mcp_gateway_watches_a_registry_with_tls_and_principals(
    tmp_path: Path, certs: Certs, mtls: bool, client: str | None, token: str, synced: bool
) -> None:
    from gateway.mcp_serve import McpBridge, McpSettings

    path = principals_file(tmp_path / "p.toml", PRINCIPALS)
    async with running_registry(tmp_path, principals_file=path, tls=certs.server(mtls=mtls)) as reg:
        bridge = McpBridge(
            McpSettings(registry_address=reg.target, tls=certs.client(client), token=token)
        )
        await bridge.start()
        try:
            assert await bridge.view.wait_synced(10 if synced else 2) is synced
        finally:
            await bridge.close()
