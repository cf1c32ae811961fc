"""Plugins on other hosts: an operator's allow-list plus mTLS, nothing else.

The tests marked ``inside`` need an address that is not loopback: the outer
test runs them in a network namespace it creates (``unshare -rn``, the
namespace's lo carrying 10.77.0.1 too), so the registry sees a real
non-loopback callback address and peer. There an allow-listed plugin is
called (by the registry's Invoke and by the LLMService in a chat) over mTLS
only: a plaintext server at an allow-listed address, or one whose
certificate names another host, is never called; addresses off the
list are refused at Register exactly as before (tests/test_security_callbacks.py
keeps every SSRF refusal without a list).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from plugin_stub import Plugin, llm_tool
from registry_service import RegistryHost, start_registry
from tests.support.llm_env import llm_settings, running_llm
from tests.support.registry import Plugin as RecordingPlugin
from tests.support.registry import settings as registry_settings
from tests.support.registry import tool
from toolcall.address_policy import RemoteAllowList, callback_address_error
from toolcall.channels import open_channel
from toolcall.cli.certs import LOCAL_NAMES, make_ca, make_cert, write_pair
from toolcall.dispatch import DispatchLimits
from toolcall.tls import ClientTLS, TLSSettings
from toolcall.v1 import callback_pb2_grpc, llm_pb2, llm_pb2_grpc, registry_pb2, registry_pb2_grpc

HOST = "10.77.0.1"
INSIDE = os.environ.get("TOOLCALL_TEST_NETNS") == "1"
inside = pytest.mark.skipif(not INSIDE, reason="runs in the namespace the outer test creates")


def test_remote_plugins_in_a_network_namespace() -> None:
    if INSIDE:
        pytest.skip("already inside")
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs unshare and ip")
    probe = subprocess.run(["unshare", "-rn", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("user and network namespaces are not available here")
    script = (
        f"ip link set lo up && ip addr add {HOST}/32 dev lo && exec {sys.executable} -m pytest "
        f"-q -p no:cacheprovider {__file__} -k inside_"
    )
    env = {**os.environ, "TOOLCALL_TEST_NETNS": "1"}
    done = subprocess.run(
        ["unshare", "-rn", "sh", "-c", script], capture_output=True, text=True, env=env, timeout=90
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "6 passed" in done.stdout, done.stdout[-2000:]


@dataclasses.dataclass
class Certs:
    registry: TLSSettings  # serves TLS on loopback and dials plugins with its certificate
    plugin: TLSSettings  # serves at HOST, dials the registry
    wrong_name: TLSSettings  # a plugin certificate for another host
    admin: ClientTLS


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    d = tmp_path_factory.mktemp("remote-certs")
    ca_key, ca_cert = make_ca()
    write_pair(d, "ca", ca_key, ca_cert)

    def pair(stem: str, hosts: tuple[str, ...]) -> TLSSettings:
        key, cert = make_cert(ca_key, ca_cert, stem, hosts=hosts, server=True, client=True)
        c, k = write_pair(d, stem, key, cert)
        return TLSSettings(
            cert=str(c), key=str(k), ca=str(d / "ca.pem"), client_cert=str(c), client_key=str(k)
        )

    admin = pair("admin", ())
    admin_tls = ClientTLS.of(dataclasses.replace(admin, cert="", key=""))
    assert admin_tls is not None
    return Certs(
        pair("registry", LOCAL_NAMES), pair("plugin", (HOST,)), pair("other", ("10.77.0.99",)),
        admin_tls,
    )  # fmt: skip


@contextlib.asynccontextmanager
async def registry(
    tmp_path: Path, certs: Certs, remote: str = "10.77.0.0/24"
) -> AsyncIterator[tuple[RegistryHost, registry_pb2_grpc.ToolRegistryAsyncStub]]:
    host = await start_registry(
        registry_settings(
            tmp_path,
            tls=certs.registry,
            dispatch=DispatchLimits(remote_plugins=remote),
        )
    )
    try:
        async with open_channel(host.target, tls=certs.admin) as ch:
            yield host, registry_pb2_grpc.ToolRegistryStub(ch)
    finally:
        await host.stop()


@llm_tool
def shout(text: str) -> str:
    """Upper-cases text."""
    return text.upper()


def remote_plugin(registry_target: str, tls: TLSSettings) -> Plugin:
    plugin = Plugin(
        plugin_id="remote", registry_address=registry_target, address=f"{HOST}:0", tools=[shout]
    )
    plugin.tls = tls
    return plugin


async def invoke(stub: registry_pb2_grpc.ToolRegistryAsyncStub) -> registry_pb2.InvokeResponse:
    request = registry_pb2.InvokeRequest(name="shout", raw_arguments='{"text": "hi"}')
    return await stub.Invoke(request, timeout=10)


@inside
@pytest.mark.anyio
async def test_inside_an_allow_listed_plugin_is_reached_over_mtls(
    tmp_path: Path, certs: Certs
) -> None:
    async with registry(tmp_path, certs) as (host, stub):
        async with remote_plugin(host.target, certs.plugin) as plugin:
            assert plugin.address.startswith(f"{HOST}:")
            await plugin.wait_registered(timeout_s=10)
            reply = await invoke(stub)
            assert not reply.result.is_error, reply.result.error
            assert reply.result.output.string_value == "HI"


@inside
@pytest.mark.anyio
async def test_inside_the_llm_service_calls_an_allow_listed_plugin_over_mtls(
    tmp_path: Path, certs: Certs
) -> None:
    async with registry(tmp_path, certs) as (host, _):
        async with remote_plugin(host.target, certs.plugin) as plugin:
            await plugin.wait_registered(timeout_s=10)
            settings = llm_settings(
                tmp_path,
                host.target,
                tls=certs.registry,
                dispatch=DispatchLimits(remote_plugins="10.77.0.0/24"),
            )
            async with (
                running_llm(settings) as llm,
                open_channel(llm.target, tls=certs.admin) as ch,
            ):
                assert await llm.view.wait_for("default", "shout", timeout_s=10)
                request = llm_pb2.ChatRequest(
                    session_id="s1",
                    messages=[
                        llm_pb2.ChatMessage(role=llm_pb2.MESSAGE_ROLE_USER, content="shout 'hi'")
                    ],
                )
                reply = await llm_pb2_grpc.LLMServiceStub(ch).Chat(request, timeout=20)
                result = reply.tool_calls[0].result
                assert not result.is_error, result.error
                assert result.output.string_value == "HI"


@inside
@pytest.mark.anyio
async def test_inside_a_plaintext_server_at_an_allow_listed_address_is_never_called(
    tmp_path: Path, certs: Certs
) -> None:
    recorder = RecordingPlugin()
    server = grpc.aio.server()
    callback_pb2_grpc.add_ToolCallbackServicer_to_server(recorder, server)
    port = server.add_insecure_port(f"{HOST}:0")
    await server.start()
    try:
        async with registry(tmp_path, certs) as (_, stub):
            reply = await stub.Register(
                registry_pb2.RegisterRequest(tool=tool("shout", f"{HOST}:{port}")), timeout=5
            )
            assert reply.ok
            result = (await invoke(stub)).result
            assert result.is_error and "UNAVAILABLE" in result.error
            assert recorder.calls == []
    finally:
        await server.stop(0)


@inside
@pytest.mark.anyio
async def test_inside_a_plugin_whose_certificate_names_another_host_is_never_called(
    tmp_path: Path, certs: Certs
) -> None:
    async with registry(tmp_path, certs) as (host, stub):
        async with remote_plugin(host.target, certs.wrong_name) as plugin:
            await plugin.wait_registered(timeout_s=10)
            result = (await invoke(stub)).result
            assert result.is_error and "UNAVAILABLE" in result.error


@inside
@pytest.mark.anyio
async def test_inside_addresses_off_the_allow_list_are_refused_as_before(
    tmp_path: Path, certs: Certs
) -> None:
    for remote, address in (("10.77.0.0/24", "10.78.0.1:5"), ("", f"{HOST}:5")):
        async with registry(tmp_path, certs, remote=remote) as (_, stub):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.Register(
                    registry_pb2.RegisterRequest(tool=tool("t", address)), timeout=5
                )
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "callback_address" in (info.value.details() or "")


@inside
@pytest.mark.anyio
async def test_inside_a_plugin_off_loopback_refuses_to_serve_without_mtls(tmp_path: Path) -> None:
    plugin = Plugin(plugin_id="bare", registry_address="127.0.0.1:1", address=f"{HOST}:0")
    plugin.tls = TLSSettings()
    with pytest.raises(ValueError, match="mTLS only"):
        await plugin.start()


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("10.77.0.5:80", True),
        ("[fd00::5]:80", True),
        ("plugins.internal:443", True),
        ("10.78.0.5:80", False),
        ("PLUGINS.internal:443", False),
        ("sub.plugins.internal:443", False),
        ("[::ffff:10.77.0.5]:80", False),
        ("10.77.0.5:0", False),
        ("dns:///plugins.internal:443", False),
        ("http://10.77.0.5:80", False),
        ("10.77.0.5", False),
        ("0.0.0.0:80", False),
    ],
)
def test_the_allow_list_takes_cidrs_and_exact_host_names(address: str, allowed: bool) -> None:
    allow = RemoteAllowList.parse("10.77.0.0/24, fd00::/64, plugins.internal")
    assert allow.allows(address) is allowed
    assert (callback_address_error(address, allow) is None) is allowed
    # Even an operator's 0.0.0.0/0 never lets in the unspecified address.
    assert not RemoteAllowList.parse("0.0.0.0/0").allows("0.0.0.0:80")


def test_an_allow_list_needs_mtls_and_valid_entries() -> None:
    with pytest.raises(ValueError, match="mTLS only"):
        DispatchLimits(remote_plugins="10.0.0.0/8").dispatcher()
    assert DispatchLimits(remote_plugins="10.0.0.1/8").problems()  # host bits set
    assert DispatchLimits(remote_plugins="Not A Name").problems()
    bare = registry_settings(Path("/x"), dispatch=DispatchLimits(remote_plugins="10.0.0.0/8"))
    assert any("mTLS only" in p for p in bare.problems())
