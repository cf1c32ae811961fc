"""``toolcall certs init DIR``: a development CA and the certificates a secure setup needs.

Writes into DIR (created mode 0700; keys mode 0600):

* ``ca.pem`` / ``ca.key``: a CA that signs the rest (TOOLCALL_TLS_CA = ca.pem);
* ``server.pem`` / ``server.key``: for the registry, the LLMService and plugin
  callback servers, naming localhost, 127.0.0.1, ::1 and each ``--host``;
* ``client-<name>.pem`` / ``.key`` per ``--client`` (default: admin, llm): mTLS
  identities whose common name is ``<name>`` (a principal's ``certificate``).

``toolcall certs issue DIR NAME [--host H]...`` issues one more from DIR's CA
(``NAME.pem`` / ``.key``): with ``--host``, for a server that is also a client
(a plugin on another host); without, a client certificate.

For production use certificates from your own CA: any PEM chain and key work
(docs/security.md). The functions are also what the tests build their
certificates with (wrong CA, expired, wrong name).
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import re
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_DAYS = 365
NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}\Z")
DEFAULT_CLIENTS = ("admin", "llm")
LOCAL_NAMES = ("localhost", "127.0.0.1", "::1")

Key = ec.EllipticCurvePrivateKey


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "toolcall development"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def make_ca(
    common_name: str = "toolcall development CA", days: int = DEFAULT_DAYS
) -> tuple[Key, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_cert(
    ca_key: Key,
    ca_cert: x509.Certificate,
    common_name: str,
    *,
    hosts: Iterable[str] = (),
    server: bool = False,
    client: bool = False,
    days: int = DEFAULT_DAYS,
    not_before: datetime.datetime | None = None,
    not_after: datetime.datetime | None = None,
) -> tuple[Key, x509.Certificate]:
    """A leaf certificate signed by ``ca_cert``; ``hosts`` become its SANs (IPs or names)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + (
        [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
    )
    sans: list[x509.GeneralName] = []
    for h in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    if client and not server:
        sans.append(x509.DNSName(common_name))
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - datetime.timedelta(minutes=5))
        .not_valid_after(not_after or now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def write_pair(directory: Path, stem: str, key: Key, cert: x509.Certificate) -> tuple[Path, Path]:
    """``<stem>.pem`` and ``<stem>.key`` (mode 0600) in ``directory``."""
    cert_path, key_path = directory / f"{stem}.pem", directory / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    return cert_path, key_path


def init(
    directory: Path,
    *,
    hosts: Iterable[str] = (),
    clients: Iterable[str] = DEFAULT_CLIENTS,
    days: int = DEFAULT_DAYS,
) -> list[Path]:
    """Writes the CA, the server certificate and the client certificates; their paths."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca_key, ca_cert = make_ca(days=days)
    written = list(write_pair(directory, "ca", ca_key, ca_cert))
    names = list(dict.fromkeys([*LOCAL_NAMES, *hosts]))
    key, cert = make_cert(
        ca_key, ca_cert, "toolcall-server", hosts=names, server=True, client=True, days=days
    )
    written += write_pair(directory, "server", key, cert)
    for name in clients:
        key, cert = make_cert(ca_key, ca_cert, name, client=True, days=days)
        written += write_pair(directory, f"client-{name}", key, cert)
    return written


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="certs_command", required=True)
    p = sub.add_parser("init", help="create a development CA and server/client certificates")
    p.add_argument("dir", metavar="DIR", help="directory to write (created mode 0700)")
    p.add_argument(
        "--host",
        action="append",
        default=[],
        metavar="HOST",
        help="a name or IP the server certificate names, besides localhost (repeatable)",
    )
    p.add_argument(
        "--client",
        action="append",
        default=None,
        metavar="NAME",
        help="a client certificate with common name NAME (repeatable; default: admin, llm)",
    )
    p.add_argument("--days", type=int, default=DEFAULT_DAYS, help="validity (default: %(default)s)")
    q = sub.add_parser("issue", help="issue one more certificate from DIR's CA (ca.pem, ca.key)")
    q.add_argument("dir", metavar="DIR", help="directory holding ca.pem and ca.key")
    q.add_argument("name", metavar="NAME", help="common name; writes NAME.pem and NAME.key")
    q.add_argument(
        "--host",
        action="append",
        default=[],
        metavar="HOST",
        help="a name or IP it serves (repeatable): a server and client certificate, as a "
        "plugin on another host needs; without --host a client certificate",
    )
    q.add_argument("--days", type=int, default=DEFAULT_DAYS, help="validity (default: %(default)s)")


async def main(args: argparse.Namespace) -> int:
    # A few ms of key generation: no loop to keep free.
    return issue_command(args) if args.certs_command == "issue" else init_command(args)


def issue_command(args: argparse.Namespace) -> int:
    if not 1 <= args.days <= 3650:
        raise SystemExit("--days must be between 1 and 3650")
    directory = Path(args.dir).expanduser()
    if not NAME.match(args.name):
        raise SystemExit("NAME must match [A-Za-z0-9_.-]{1,64}")
    if (directory / f"{args.name}.key").exists():
        raise SystemExit(f"{directory}/{args.name}.key exists; choose another NAME")
    try:
        ca_cert = x509.load_pem_x509_certificate((directory / "ca.pem").read_bytes())
        ca_key = serialization.load_pem_private_key(
            (directory / "ca.key").read_bytes(), password=None
        )
    except (OSError, ValueError) as exc:
        raise SystemExit(f"cannot read the CA in {directory}: {exc}") from None
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise SystemExit(f"{directory}/ca.key is not a key toolcall certs init wrote")
    key, cert = make_cert(
        ca_key, ca_cert, args.name, hosts=args.host, server=bool(args.host), client=True,
        days=args.days,
    )  # fmt: skip
    for path in write_pair(directory, args.name, key, cert):
        print(path)
    return 0


def init_command(args: argparse.Namespace) -> int:
    if not 1 <= args.days <= 3650:
        raise SystemExit("--days must be between 1 and 3650")
    directory = Path(args.dir).expanduser()
    if (directory / "ca.key").exists():
        raise SystemExit(f"{directory}/ca.key exists; choose another DIR or remove it first")
    clients = args.client if args.client is not None else list(DEFAULT_CLIENTS)
    for path in init(directory, hosts=args.host, clients=clients, days=args.days):
        print(path)
    d = directory.resolve()
    print(
        f"\nserve:  TOOLCALL_TLS_CERT={d}/server.pem TOOLCALL_TLS_KEY={d}/server.key "
        f"TOOLCALL_TLS_CA={d}/ca.pem\n"
        f"dial:   TOOLCALL_TLS_CA={d}/ca.pem TOOLCALL_TLS_CLIENT_CERT={d}/client-admin.pem "
        f"TOOLCALL_TLS_CLIENT_KEY={d}/client-admin.key"
    )
    return 0
