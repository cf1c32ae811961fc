"""TLS and mTLS for toolcall's servers and clients, and the rule for leaving loopback.

One settings object, ``TLSSettings``, read at program edges from
``TOOLCALL_TLS_*`` variables (or flags) and passed inward:

* ``TOOLCALL_TLS_CERT`` / ``TOOLCALL_TLS_KEY``: the certificate (PEM chain)
  and key a server presents. Set both to serve TLS.
* ``TOOLCALL_TLS_CA``: the CA bundle that verifies the other side: a server's
  certificate for a client, a client's certificate for a server. A server
  with a CA requires a client certificate from it (mTLS) unless
  ``TOOLCALL_TLS_CLIENT_AUTH=none``. A client with a CA dials TLS.
* ``TOOLCALL_TLS_CLIENT_CERT`` / ``TOOLCALL_TLS_CLIENT_KEY``: the certificate
  a client presents for mTLS (its identity: the subject's common name).
* ``TOOLCALL_TLS_SERVER_NAME``: the name a client expects in the server's
  certificate when it dials an address not named in it (an IP, a tunnel).

Unix sockets never carry TLS: the file's permissions are their gate.

``exposure_error`` is the start-up rule: a service bound to anything but
loopback or a unix socket must serve TLS and authenticate its callers, or be
started with an explicit ``--insecure``. Files are read once, when the
credentials are built; a missing or unreadable file is a ConfigError naming
the variable, not a TLS failure at the first call.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from toolcall import config

if TYPE_CHECKING:  # imported where credentials are built: plugin_stub must import
    import grpc  # without loading grpc, so Plugin.run() can still apply its settings

# PEM files of a CA bundle or a chain: anything larger is a wrong path.
MAX_PEM_BYTES = 1024 * 1024
CLIENT_AUTH_MODES = ("require", "none")


def read_pem(path: str | Path, what: str) -> bytes:
    """A PEM file's bytes, at most MAX_PEM_BYTES; ConfigError naming ``what`` otherwise."""
    data = config.read_limited(path, MAX_PEM_BYTES, what)
    if b"-----BEGIN " not in data:
        raise config.ConfigError(f"{what} {str(Path(path).expanduser())!r} is not a PEM file")
    return data


@dataclass(frozen=True)
class TLSSettings:
    """Paths of PEM files; empty strings mean unset."""

    cert: str = ""
    key: str = ""
    ca: str = ""
    client_cert: str = ""
    client_key: str = ""
    # "require": a server with a CA demands a client certificate (mTLS).
    client_auth: str = "require"
    server_name: str = ""

    @classmethod
    def from_env(cls) -> TLSSettings:
        return cls(
            cert=config.env("TLS_CERT"),
            key=config.env("TLS_KEY"),
            ca=config.env("TLS_CA"),
            client_cert=config.env("TLS_CLIENT_CERT"),
            client_key=config.env("TLS_CLIENT_KEY"),
            client_auth=config.env("TLS_CLIENT_AUTH", "require").strip().lower(),
            server_name=config.env("TLS_SERVER_NAME"),
        )

    def replace(self, **changes: str) -> TLSSettings:
        """A copy with the non-empty ``changes`` applied (flags over variables)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v})

    @property
    def serves_tls(self) -> bool:
        return bool(self.cert or self.key)

    @property
    def requires_client_cert(self) -> bool:
        return self.serves_tls and bool(self.ca) and self.client_auth == "require"

    @property
    def dials_tls(self) -> bool:
        return bool(self.ca)

    def problems(self) -> list[str]:
        bad: list[str] = []
        if bool(self.cert) != bool(self.key):
            bad.append("TLS needs both a certificate and its key (TOOLCALL_TLS_CERT/_KEY)")
        if bool(self.client_cert) != bool(self.client_key):
            bad.append(
                "an mTLS client needs both a certificate and its key "
                "(TOOLCALL_TLS_CLIENT_CERT/_KEY)"
            )
        if self.client_cert and not self.ca:
            bad.append("a client certificate needs TOOLCALL_TLS_CA to verify the server")
        if self.client_auth not in CLIENT_AUTH_MODES:
            bad.append(
                f"TOOLCALL_TLS_CLIENT_AUTH must be one of {', '.join(CLIENT_AUTH_MODES)}, "
                f"not {self.client_auth[:20]!r}"
            )
        return bad

    def server_credentials(self) -> grpc.ServerCredentials | None:
        """What a server listens with; None for plaintext. ConfigError for unusable files."""
        if not self.serves_tls:
            return None
        if bad := self.problems():
            raise config.ConfigError("; ".join(bad))
        key = read_pem(self.key, "TLS key (TOOLCALL_TLS_KEY)")
        cert = read_pem(self.cert, "TLS certificate (TOOLCALL_TLS_CERT)")
        ca = read_pem(self.ca, "CA bundle (TOOLCALL_TLS_CA)") if self.ca else None
        import grpc

        return grpc.ssl_server_credentials(
            [(key, cert)],
            root_certificates=ca if self.requires_client_cert else None,
            require_client_auth=self.requires_client_cert,
        )

    def channel_credentials(self) -> grpc.ChannelCredentials | None:
        """What a client dials with; None for plaintext. ConfigError for unusable files."""
        if not self.dials_tls:
            return None
        if bad := self.problems():
            raise config.ConfigError("; ".join(bad))
        ca = read_pem(self.ca, "CA bundle (TOOLCALL_TLS_CA)")
        key = cert = None
        if self.client_cert:
            key = read_pem(self.client_key, "client key (TOOLCALL_TLS_CLIENT_KEY)")
            cert = read_pem(self.client_cert, "client certificate (TOOLCALL_TLS_CLIENT_CERT)")
        import grpc

        return grpc.ssl_channel_credentials(
            root_certificates=ca, private_key=key, certificate_chain=cert
        )

    def channel_options(self) -> list[tuple[str, str]]:
        if self.dials_tls and self.server_name:
            return [("grpc.ssl_target_name_override", self.server_name)]
        return []


@dataclass(frozen=True)
class ClientTLS:
    """Built client credentials, kept so a pool of channels reads the files once."""

    credentials: grpc.ChannelCredentials
    options: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, settings: TLSSettings) -> ClientTLS | None:
        creds = settings.channel_credentials()
        return None if creds is None else cls(creds, tuple(settings.channel_options()))


def is_local_address(address: str) -> bool:
    """True for a unix socket or a loopback host:port (``localhost`` included)."""
    if address.startswith(("unix:", "unix-abstract:")):
        return True
    host = address.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False  # a name or a wildcard ("0.0.0.0", "[::]") reaches other hosts
    return ip.is_loopback


def exposure_gaps(address: str, tls: TLSSettings, *, authenticated: bool) -> list[str]:
    """What a service on ``address`` lacks to face other hosts; empty when nothing.

    Loopback and unix sockets keep today's gates. Anything else needs TLS and
    an authentication method (a principals file, or client certificates
    required by mTLS).
    """
    if is_local_address(address):
        return []
    missing = []
    if not tls.serves_tls:
        missing.append("TLS (--tls-cert/--tls-key or TOOLCALL_TLS_CERT/_KEY)")
    if not (authenticated or tls.requires_client_cert):
        missing.append(
            "an authentication method (--principals / TOOLCALL_PRINCIPALS_FILE, or mTLS "
            "with TOOLCALL_TLS_CA)"
        )
    return missing


def exposure_error(
    address: str, tls: TLSSettings, *, authenticated: bool, insecure: bool
) -> str | None:
    """Why a service may not listen on ``address`` as configured, or None."""
    missing = exposure_gaps(address, tls, authenticated=authenticated)
    if not missing or insecure:
        return None
    return (
        f"{address} is not a loopback address: serving it needs "
        + " and ".join(missing)
        + "; or pass --insecure to accept the risk"
    )


def insecure_warning(address: str, tls: TLSSettings, *, authenticated: bool) -> str | None:
    """The one loud line a service started with ``--insecure`` logs, or None."""
    missing = exposure_gaps(address, tls, authenticated=authenticated)
    if not missing:
        return None
    return (
        f"INSECURE: serving {address} without "
        + " and ".join(missing)
        + " (--insecure): any host that reaches it can use it"
    )


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags every toolcall server takes for TLS, principals and ``--insecure``."""
    parser.add_argument(
        "--tls-cert", default="", help="PEM certificate chain to serve TLS ($TOOLCALL_TLS_CERT)"
    )
    parser.add_argument("--tls-key", default="", help="its private key ($TOOLCALL_TLS_KEY)")
    parser.add_argument(
        "--tls-ca",
        default="",
        help="CA bundle: clients must present a certificate it signed (mTLS), and this "
        "service verifies the servers it dials with it ($TOOLCALL_TLS_CA)",
    )
    parser.add_argument(
        "--principals",
        default=None,
        help="TOML file of principals (tokens, certificate names, privileges, roles, "
        "limits): every RPC is then authenticated and authorised "
        "($TOOLCALL_PRINCIPALS_FILE; docs/security.md)",
    )
    parser.add_argument(
        "--remote-plugins",
        default=None,
        metavar="CIDRS_AND_NAMES",
        help="comma-separated CIDRs and host names where plugins on other hosts may be; "
        "reached over mTLS only, their certificate naming the host "
        "($TOOLCALL_REMOTE_PLUGINS; docs/security.md)",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="serve a non-loopback address without TLS or authentication (logged loudly)",
    )


def server_args(args: argparse.Namespace) -> tuple[TLSSettings, str, bool]:
    """``tls``, ``principals_file`` and ``insecure`` from the flags over the environment."""
    tls = TLSSettings.from_env().replace(cert=args.tls_cert, key=args.tls_key, ca=args.tls_ca)
    principals = args.principals if args.principals is not None else config.env("PRINCIPALS_FILE")
    return tls, principals, bool(args.insecure)
