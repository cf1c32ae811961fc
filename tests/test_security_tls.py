"""TLS and mTLS on the wire: which handshakes a registry and an LLMService accept.

Real servers on loopback with certificates from ``toolcall certs``' functions.
A client certificate from the CA passes; one from another CA, an expired one,
none at all, a plaintext client and a server certificate naming another host
all end in UNAVAILABLE before any RPC runs. A service bound to a non-loopback
address refuses to start without TLS and authentication unless ``--insecure``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import grpc
import pytest

from llm_service import main as llm_main
from registry_service import main as registry_main
from tests.support.llm_env import llm_settings, running_llm
from tests.support.registry import running_registry, settings
from tests.support.tls import Certs, make_certs
from toolcall import tls
from toolcall.channels import open_channel
from toolcall.cli import certs as certs_cli
from toolcall.cli.commands import build_parser
from toolcall.clients import list_all_tools
from toolcall.v1 import llm_pb2, llm_pb2_grpc, registry_pb2_grpc

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


async def _list(target: str, client: tls.ClientTLS | None) -> None:
    async with open_channel(target, tls=client) as ch:
        await list_all_tools(registry_pb2_grpc.ToolRegistryStub(ch), timeout_s=5)


async def test_a_client_certificate_from_the_ca_completes_the_mtls_handshake(
    tmp_path: Path, certs: Certs
) -> None:
    async with running_registry(tmp_path, tls=certs.server()) as reg:
        await _list(reg.target, certs.dial("alice"))


@pytest.mark.parametrize(
    ("client", "why"),
    [
        ("foreign", "a client certificate signed by another CA"),
        ("expired", "an expired client certificate"),
        (None, "no client certificate"),
    ],
)
async def test_the_mtls_handshake_refuses_bad_client_certificates(
    tmp_path: Path, certs: Certs, client: str | None, why: str
) -> None:
    async with running_registry(tmp_path, tls=certs.server()) as reg:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await _list(reg.target, certs.dial(client))
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE, why


async def test_a_plaintext_client_cannot_talk_to_a_tls_server(tmp_path: Path, certs: Certs) -> None:
    async with running_registry(tmp_path, tls=certs.server(mtls=False)) as reg:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await _list(reg.target, None)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        await _list(reg.target, certs.dial(None))  # TLS without a client certificate


async def test_a_client_refuses_a_server_certificate_that_names_another_host(
    tmp_path: Path, certs: Certs
) -> None:
    async with running_registry(tmp_path, tls=certs.server("server-wrong-name")) as reg:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await _list(reg.target, certs.dial("alice"))
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        # ... and a server certificate from another CA just as well.
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await _list(reg.target, certs.dial("alice", ca="other-ca"))
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_the_llm_service_watches_an_mtls_registry_and_serves_mtls(
    tmp_path: Path, certs: Certs
) -> None:
    async with running_registry(tmp_path, tls=certs.server()) as reg:
        llm_tls = dataclasses.replace(certs.server(), **_client_fields(certs.client("llm")))
        async with running_llm(llm_settings(tmp_path, reg.target, tls=llm_tls)) as llm:
            async with open_channel(llm.target, tls=certs.dial("alice")) as ch:
                reply = await llm_pb2_grpc.LLMServiceStub(ch).GetHistory(
                    llm_pb2.GetHistoryRequest(session_id="s1"), timeout=5
                )
                assert list(reply.messages) == []


def _client_fields(client: tls.TLSSettings) -> dict[str, str]:
    return {"client_cert": client.client_cert, "client_key": client.client_key}


@pytest.mark.parametrize("address", ["0.0.0.0:0", "10.1.2.3:48911", "[::]:0", "example.com:1"])
def test_a_non_loopback_address_needs_tls_and_authentication(address: str, certs: Certs) -> None:
    bare = settings(Path("/nonexistent"), address=address)
    assert any("not a loopback address" in p for p in bare.problems())
    tls_only = dataclasses.replace(bare, tls=certs.server(mtls=False))
    problem = " ".join(tls_only.problems())
    assert "authentication method" in problem and "TLS (" not in problem
    assert dataclasses.replace(bare, tls=certs.server()).problems() == []  # mTLS authenticates
    with_principals = dataclasses.replace(tls_only, principals_file="/p.toml")
    assert with_principals.problems() == []
    assert dataclasses.replace(bare, insecure=True).problems() == []
    warning = tls.insecure_warning(address, bare.tls, authenticated=False)
    assert warning is not None and warning.startswith("INSECURE")


@pytest.mark.parametrize("address", ["127.0.0.1:0", "[::1]:0", "localhost:0", "unix:/tmp/x.sock"])
def test_loopback_and_unix_addresses_keep_todays_gates(address: str) -> None:
    plain = tls.TLSSettings()
    assert tls.exposure_error(address, plain, authenticated=False, insecure=False) is None


@pytest.mark.parametrize("command", ["registry", "llm"])
def test_the_services_refuse_to_start_insecure_on_a_non_loopback_address(command: str) -> None:
    module = registry_main if command == "registry" else llm_main
    args = build_parser([command]).parse_args([command, "--address", "0.0.0.0:0"])
    with pytest.raises(SystemExit) as info:
        module.settings_from_args(args)
    assert "--insecure" in str(info.value) and "TLS" in str(info.value)
    args = build_parser([command]).parse_args([command, "--address", "0.0.0.0:0", "--insecure"])
    assert module.settings_from_args(args).insecure


def test_unreadable_or_half_configured_tls_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(tls.config.ConfigError, match="TOOLCALL_TLS_KEY"):
        tls.TLSSettings(cert=str(tmp_path / "c.pem"), key=str(tmp_path / "k")).server_credentials()
    assert tls.TLSSettings(cert="c.pem").problems()
    assert tls.TLSSettings(client_cert="c", client_key="k").problems()  # no CA to check with
    assert tls.TLSSettings(client_auth="maybe").problems()


def test_certs_init_writes_a_ca_server_and_client_certificates(tmp_path: Path) -> None:
    args = build_parser(["certs"]).parse_args(
        ["certs", "init", str(tmp_path / "c"), "--host", "10.0.0.7", "--client", "ops"]
    )
    assert certs_cli.init_command(args) == 0
    names = sorted(p.name for p in (tmp_path / "c").iterdir())
    assert names == sorted(
        ["ca.pem", "ca.key", "server.pem", "server.key", "client-ops.pem", "client-ops.key"]
    )
    assert (tmp_path / "c" / "server.key").stat().st_mode & 0o777 == 0o600
    assert b"BEGIN CERTIFICATE" in (tmp_path / "c" / "server.pem").read_bytes()
    with pytest.raises(SystemExit, match="exists"):
        certs_cli.init_command(args)  # never overwrites a CA key


async def test_certs_issue_adds_a_certificate_from_the_same_ca_that_a_server_accepts(
    tmp_path: Path,
) -> None:
    d = tmp_path / "pki"
    certs_cli.init_command(build_parser(["certs"]).parse_args(["certs", "init", str(d)]))
    args = build_parser(["certs"]).parse_args(["certs", "issue", str(d), "plugin-b"])
    assert certs_cli.issue_command(args) == 0
    with pytest.raises(SystemExit, match="exists"):
        certs_cli.issue_command(args)
    server = tls.TLSSettings(
        cert=str(d / "server.pem"), key=str(d / "server.key"), ca=str(d / "ca.pem")
    )
    client = tls.TLSSettings(
        ca=str(d / "ca.pem"),
        client_cert=str(d / "plugin-b.pem"),
        client_key=str(d / "plugin-b.key"),
    )
    async with running_registry(tmp_path, tls=server) as reg:
        await _list(reg.target, tls.ClientTLS.of(client))
