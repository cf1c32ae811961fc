"""Certificates for the security tests, made by ``toolcall certs``' own functions.

``Certs`` holds one CA with a server certificate for the loopback names and
client certificates (alice, bob, admin, llm), plus the bad ones a handshake
must refuse: a client from another CA, an expired client, a server
certificate naming another host. ``principals_file`` writes a principals TOML.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolcall.cli.certs import LOCAL_NAMES, make_ca, make_cert, write_pair
from toolcall.tls import ClientTLS, TLSSettings

CLIENTS = ("alice", "bob", "admin", "llm")


@dataclass
class Certs:
    dir: Path

    def path(self, stem: str, ext: str = "pem") -> str:
        return str(self.dir / f"{stem}.{ext}")

    def server(self, stem: str = "server", *, mtls: bool = True) -> TLSSettings:
        """What a server serves with (mTLS: client certificates from the CA required)."""
        return TLSSettings(
            cert=self.path(stem),
            key=self.path(stem, "key"),
            ca=self.path("ca") if mtls else "",
        )

    def client(self, name: str | None = "alice", *, ca: str = "ca") -> TLSSettings:
        """What a client dials with: the CA, and ``client-<name>`` unless ``name`` is None."""
        if name is None:
            return TLSSettings(ca=self.path(ca))
        return TLSSettings(
            ca=self.path(ca),
            client_cert=self.path(f"client-{name}"),
            client_key=self.path(f"client-{name}", "key"),
        )

    def dial(self, name: str | None = "alice", **kw: str) -> ClientTLS:
        tls = ClientTLS.of(self.client(name, **kw))
        assert tls is not None
        return tls


def make_certs(directory: Path) -> Certs:
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = make_ca()
    write_pair(directory, "ca", ca_key, ca_cert)
    key, cert = make_cert(ca_key, ca_cert, "toolcall-server", hosts=LOCAL_NAMES, server=True)
    write_pair(directory, "server", key, cert)
    key, cert = make_cert(ca_key, ca_cert, "elsewhere", hosts=["elsewhere.example"], server=True)
    write_pair(directory, "server-wrong-name", key, cert)
    for name in CLIENTS:
        key, cert = make_cert(ca_key, ca_cert, name, client=True)
        write_pair(directory, f"client-{name}", key, cert)
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=30)
    key, cert = make_cert(
        ca_key,
        ca_cert,
        "expired",
        client=True,
        not_before=past,
        not_after=past + datetime.timedelta(days=1),
    )
    write_pair(directory, "client-expired", key, cert)
    other_key, other_ca = make_ca("another CA")
    write_pair(directory, "other-ca", other_key, other_ca)
    key, cert = make_cert(other_key, other_ca, "alice", client=True)
    write_pair(directory, "client-foreign", key, cert)
    return Certs(directory)


def principals_file(path: Path, body: str) -> str:
    path.write_text(body)
    path.chmod(0o600)
    return str(path)


PRINCIPALS = """
[[principal]]
name = "alice"
token = "alice-token"
certificate = "alice"
privileges = ["read", "chat"]
roles = ["default"]

[[principal]]
name = "bob"
token = "bob-token"
certificate = "bob"
privileges = ["read", "invoke", "chat"]

[[principal]]
name = "carol"
token = "carol-token"
privileges = ["read", "register", "invoke", "chat"]
turns_per_minute = 2
tool_calls_per_minute = 2

[[principal]]
name = "dave"
token = "dave-token"
privileges = ["read", "chat"]
tool_calls_per_minute = 1

[[principal]]
name = "admin"
token = "admin-token"
certificate = "admin"
admin = true

[[principal]]
name = "llm"
certificate = "llm"
privileges = ["read"]
"""


# The fuzz suites with security on: TOOLCALL_TEST_SECURE=1 runs them against
# servers that serve mTLS and authorise every RPC from a principals file, as
# a principal with every privilege but admin (so session ownership is checked).
FUZZ_SECURE = os.environ.get("TOOLCALL_TEST_SECURE") == "1"
FUZZ_PRINCIPALS = """
[[principal]]
name = "fuzz"
certificate = "alice"
privileges = ["read", "invoke", "register", "clear", "chat"]

[[principal]]
name = "llm"
certificate = "llm"
privileges = ["read"]
"""


@dataclass
class FuzzSecurity:
    """What a fuzz suite's servers and clients use when FUZZ_SECURE is on."""

    server: dict[str, Any]  # settings overrides for a registry or LLMService
    llm_client: TLSSettings  # the LLMService's own TLS (serving and its registry watch)
    client: ClientTLS | None  # what the suite's channels dial with


def fuzz_security(directory: Path) -> FuzzSecurity:
    if not FUZZ_SECURE:
        return FuzzSecurity({}, TLSSettings(), None)
    certs = make_certs(directory / "certs")
    path = principals_file(directory / "principals.toml", FUZZ_PRINCIPALS)
    server = certs.server()
    llm = TLSSettings(
        cert=server.cert,
        key=server.key,
        ca=server.ca,
        client_cert=certs.path("client-llm"),
        client_key=certs.path("client-llm", "key"),
    )
    return FuzzSecurity({"tls": server, "principals_file": path}, llm, certs.dial("alice"))
