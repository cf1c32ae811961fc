"""B-mtls and C-token: what security costs on the hot paths (docs/security.md).

B-mtls is B (``Dispatcher.invoke`` → SDK plugin over TCP) with the plugin on
the remote-plugin path: it listens on this machine's non-loopback address and
serves mTLS, the Dispatcher dials it through an allow-list with a client
certificate and verifies the plugin's certificate names that address. The
bytes still go through the kernel's loopback path, so the difference from B is
TLS alone. Certificates come from ``toolcall certs``' own functions.

C-token is C (client → ``toolcall registry`` → plugin) with a principals file:
every call is authenticated by its bearer token and authorised (Invoke is a
privilege). Token checks run at the services' RPC boundary, which B's
Dispatcher → plugin hop does not cross, so they are measured where they run,
beside plain C.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path

from bench.payload import CALL_ID, RAW_ARGUMENTS, TOOL_NAME
from bench.processes import running
from bench.scenarios import stack
from bench.scenarios.base import BenchEnv, Call, expect_output
from bench.scenarios.dispatch import plugin_env
from bench.servers.sdk_plugin import get_weather
from plugin_stub import tool_meta
from plugin_stub.local_tools import LocalTool
from toolcall.cli.certs import make_ca, make_cert, write_pair
from toolcall.clients import auth_metadata, channel
from toolcall.dispatch import DispatchLimits
from toolcall.jsonvalue import from_value
from toolcall.tls import ClientTLS, TLSSettings
from toolcall.tools import ToolSpec
from toolcall.v1 import registry_pb2, registry_pb2_grpc, tools_pb2

TOKEN = "bench-token-0123456789abcdef"


def own_address() -> str:
    """This machine's outgoing IPv4 address (no packet is sent); RuntimeError without one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 9))
            host = str(s.getsockname()[0])
        except OSError:
            host = ""
    if not host or host.startswith("127."):
        raise RuntimeError("B-mtls needs a non-loopback IPv4 address on this machine")
    return host


def certificates(directory: Path, host: str) -> tuple[TLSSettings, TLSSettings]:
    """(the plugin's serving settings, the Dispatcher's client settings)."""
    ca_key, ca_cert = make_ca()
    write_pair(directory, "ca", ca_key, ca_cert)
    key, cert = make_cert(ca_key, ca_cert, "plugin", hosts=[host], server=True)
    plugin_cert, plugin_key = write_pair(directory, "plugin", key, cert)
    key, cert = make_cert(ca_key, ca_cert, "llm", client=True)
    client_cert, client_key = write_pair(directory, "llm", key, cert)
    ca = str(directory / "ca.pem")
    return (
        TLSSettings(cert=str(plugin_cert), key=str(plugin_key), ca=ca),
        TLSSettings(ca=ca, client_cert=str(client_cert), client_key=str(client_key)),
    )


@contextlib.asynccontextmanager
async def open_mtls(env: BenchEnv) -> AsyncIterator[Call]:
    host = own_address()
    certs = env.tmp_dir / "b-mtls-certs"
    certs.mkdir()
    served, dialled = certificates(certs, host)
    penv = {
        **plugin_env(env),
        "TOOLCALL_TLS_CERT": served.cert,
        "TOOLCALL_TLS_KEY": served.key,
        "TOOLCALL_TLS_CA": served.ca,
    }
    args = ["-m", "bench.servers.sdk_plugin", "--address", f"{host}:0"]
    async with running("B-mtls", args, log_dir=env.log_dir, env=penv) as plugin:
        dispatcher = DispatchLimits(remote_plugins=f"{host}/32").dispatcher(ClientTLS.of(dialled))
        meta = tool_meta(get_weather)
        assert meta is not None
        definition = LocalTool.build(meta, get_weather).definition(plugin.target, "plugin:bench")
        spec = ToolSpec.from_definition(definition, remote=dispatcher.remote)
        try:

            async def call() -> tools_pb2.ToolResult:
                return await dispatcher.invoke(spec, raw_arguments=RAW_ARGUMENTS, call_id=CALL_ID)

            result = await call()
            if result.is_error:
                raise RuntimeError(f"B-mtls: dispatch failed: {result.error}")
            expect_output(from_value(result.output), "B-mtls")
            yield call
        finally:
            await dispatcher.close()


PRINCIPALS = f"""
[[principal]]
name = "bench"
token = "{TOKEN}"
privileges = ["read", "invoke", "register"]
"""


@contextlib.asynccontextmanager
async def open_token(env: BenchEnv) -> AsyncIterator[Call]:
    principals = env.tmp_dir / "principals.toml"
    principals.write_text(PRINCIPALS)
    principals.chmod(0o600)
    meta = auth_metadata(TOKEN)
    async with (
        stack.registry(env, "C-token-registry", extra=("--principals", str(principals))) as reg,
        stack.plugin(env, "C-token-plugin", reg.target, token=TOKEN),
        channel(reg.target) as ch,
    ):
        stub: registry_pb2_grpc.ToolRegistryAsyncStub = registry_pb2_grpc.ToolRegistryStub(ch)

        async def call() -> registry_pb2.InvokeResponse:
            request = registry_pb2.InvokeRequest(
                name=TOOL_NAME, raw_arguments=RAW_ARGUMENTS, call_id=CALL_ID
            )
            return await stub.Invoke(request, timeout=30, metadata=meta)

        reply = await call()
        if reply.result.is_error:
            raise RuntimeError(f"C-token: invoke failed: {reply.result.error}")
        expect_output(from_value(reply.result.output), "C-token")
        yield call
