"""Which callback addresses a tool may register: loopback only.

The registry dials ``callback_address`` on every call, so a permissive check
would turn it into an egress proxy (SSRF). Only these forms pass:

* ``127.x.y.z:PORT`` (strict dotted quad, 127.0.0.0/8)
* ``[::1]:PORT``
* ``localhost:PORT`` (the literal name, lower case)
* ``unix:/absolute/path`` (also ``unix:///absolute/path``), without ``..``
* ``http://HOST:PORT/path`` with one of the host forms above (an HTTP
  callback plugin, ``toolcall/http_callbacks.py``): no user info, no
  fragment, an explicit port; the path (and query) in URL characters only

Everything else is refused with a reason: wildcard, private, public, mapped
(``::ffff:...``) or numeric (``2130706433``, ``0x7f.1``, ``127.1``) hosts, DNS
names, other scheme or resolver prefixes (``dns:///``, ``ipv4:``, ``https://``),
missing or out-of-range ports. A unix path may not climb with ``..``: that
would make two spellings of one path reach different sockets through a
symlink, so ``canonical_address`` could not key channels by it.

An operator may allow plugins on other hosts (``RemoteAllowList``: CIDRs
and host names, ``callback_address_error``); they are dialled over mTLS only.
Without a list nothing above changes.

``canonical_address`` gives one spelling per socket (``unix:/a//./b`` and
``unix:///a/b`` are ``unix:/a/b``; ``[0::1]:050`` is ``[::1]:50``), so the
Dispatcher shares one channel between them instead of opening one per
spelling.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

_DOTTED_QUAD = re.compile(r"^(?:\d{1,3}\.){3}\d{1,3}$")
_PORT = re.compile(r"^[0-9]{1,5}$")
_MAX_ADDRESS_LEN = 512
_MAX_UNIX_PATH = 107  # sun_path holds 108 bytes including the terminating NUL

ALLOWED_FORMS = (
    "127.0.0.0/8:PORT, [::1]:PORT, localhost:PORT, unix:/absolute/path "
    "or http://127.0.0.1:PORT/path"
)
HTTP_PREFIX = "http://"
# RFC 3986 path and query characters (pchar, "/", "?"); "#" and "\\" are not.
_HTTP_PATH = re.compile(r"^[A-Za-z0-9\-._~!$&'()*+,;=:@%/?]*\Z")


def loopback_address_error(address: str) -> str | None:
    """Why ``address`` is not an acceptable loopback callback address, or None if it is."""
    if not address:
        return f"is required ({ALLOWED_FORMS})"
    if len(address) > _MAX_ADDRESS_LEN:
        return f"is longer than {_MAX_ADDRESS_LEN} characters"
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in address):
        return "must not contain whitespace or control characters"
    if address.startswith("unix:"):
        return _unix_error(address)
    if address.startswith(HTTP_PREFIX):
        return _http_error(address)
    if "://" in address or re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:(?![0-9]*$)", address):
        if not address.startswith("["):
            return f"must not carry a scheme or resolver prefix; use {ALLOWED_FORMS}"
    host, sep, port = address.rpartition(":")
    if not sep or not host:
        return f"must be host:port; use {ALLOWED_FORMS}"
    if not _PORT.match(port) or not 1 <= int(port) <= 65535:
        return f"port {port!r} is not a number from 1 to 65535"
    if host.startswith("["):
        if not host.endswith("]"):
            return "has an unterminated IPv6 bracket"
        try:
            ip6 = ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return f"host {host} is not a valid IPv6 address"
        if ip6 != ipaddress.IPv6Address("::1"):
            return f"host {host} is not loopback; only [::1] is accepted for IPv6"
        return None
    if host == "localhost":
        return None
    if _DOTTED_QUAD.match(host):
        try:
            ip4 = ipaddress.IPv4Address(host)
        except ValueError:
            return f"host {host!r} is not a valid IPv4 address"
        if not ip4.is_loopback:
            return f"host {host} is not loopback (127.0.0.0/8)"
        return None
    return f"host {host!r} is not a loopback address; use {ALLOWED_FORMS}"


def _unix_error(address: str) -> str | None:
    path = address[len("unix:") :]
    if path.startswith("//"):
        path = path[2:]
    if not path.startswith("/"):
        return "unix socket path must be absolute (unix:/absolute/path)"
    if len(path.encode()) > _MAX_UNIX_PATH:
        return f"unix socket path is longer than {_MAX_UNIX_PATH} bytes"
    if ".." in path.split("/"):
        return "unix socket path must not contain '..' segments"
    return None


def split_http(address: str) -> tuple[str, str]:
    """``http://host:port/path?q`` -> (``host:port``, ``/path?q``); the path is "/" when absent."""
    rest = address[len(HTTP_PREFIX) :]
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    path = rest[cut:] or "/"
    if not path.startswith("/"):
        path = "/" + path
    return rest[:cut], path


def _http_error(address: str) -> str | None:
    authority, path = split_http(address)
    if "@" in authority:
        return "http callback must not carry user info (user@host)"
    if not _HTTP_PATH.match(path):
        return "http callback path may hold URL path and query characters only (no '#' or '\\')"
    if authority.startswith("unix:") or "/" in authority:
        return f"http callback host must be one of {ALLOWED_FORMS}"
    if err := loopback_address_error(authority):
        return f"http callback {err}"
    return None


def is_http(address: str) -> bool:
    """An HTTP callback plugin (``http://...``) rather than a gRPC target."""
    return address.startswith(HTTP_PREFIX)


def canonical_address(address: str) -> str:
    """One spelling of an accepted address (other addresses are returned unchanged).

    Only lexically safe rewrites: repeated slashes and ``.`` segments go
    (``..`` is refused by the policy), IPs and ports lose leading zeros and
    take their shortest form. ``localhost`` stays a name: it may resolve to
    ``[::1]`` as well as to ``127.0.0.1``.
    """
    if loopback_address_error(address) is not None:
        return address
    if address.startswith("unix:"):
        path = address[len("unix:") :]
        parts = [p for p in path.split("/") if p not in ("", ".")]
        return "unix:/" + "/".join(parts)
    if address.startswith(HTTP_PREFIX):
        authority, path = split_http(address)
        return HTTP_PREFIX + canonical_address(authority) + path
    host, _, port = address.rpartition(":")
    if host.startswith("["):
        host = f"[{ipaddress.IPv6Address(host[1:-1]).compressed}]"
    elif host != "localhost":
        host = str(ipaddress.IPv4Address(host))
    return f"{host}:{int(port)}"


def is_loopback_ip(host: str) -> bool:
    """True for an IP address on the loopback interface: 127.0.0.0/8, ::1, or
    an IPv4-mapped loopback (``::ffff:127.0.0.1``, seen on dual-stack
    listeners, which the kernel only produces for a loopback connection)."""
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


# -- plugins on other hosts (docs/security.md) --------------------------------

_DNS_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DNS_NAME = re.compile(rf"^{_DNS_LABEL}(?:\.{_DNS_LABEL})*\Z")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class RemoteAllowList:
    """The operator's list of where plugins on other hosts may be: CIDRs and host names.

    Only ``host:port`` forms pass: a dotted-quad IPv4 or bracketed IPv6 address
    inside one of ``networks`` (never an unspecified or multicast one, never an
    IPv4-mapped IPv6 spelling), or a lower-case DNS name equal to one of
    ``names`` (no wildcards). The services dial these only over mTLS, and the
    plugin's certificate must name the host (toolcall/tls.py).
    """

    networks: tuple[Network, ...] = ()
    names: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, text: str) -> RemoteAllowList:
        """From ``10.0.0.0/24,plugins.internal,...``; ValueError naming a bad entry."""
        networks: list[Network] = []
        names: set[str] = set()
        for raw in text.split(","):
            item = raw.strip()
            if not item:
                continue
            if _DNS_NAME.match(item) and not item.replace(".", "").isdigit():
                names.add(item)
                continue
            try:
                networks.append(ipaddress.ip_network(item, strict=True))
            except ValueError as exc:
                raise ValueError(
                    f"remote plugin entry {item[:80]!r} is neither a CIDR nor a lower-case "
                    f"host name ({exc})"
                ) from None
        return cls(tuple(networks), frozenset(names))

    def __bool__(self) -> bool:
        return bool(self.networks or self.names)

    def allows(self, address: str) -> bool:
        if len(address) > _MAX_ADDRESS_LEN or "://" in address:
            return False
        if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in address):
            return False
        host, sep, port = address.rpartition(":")
        if not sep or not _PORT.match(port) or not 1 <= int(port) <= 65535:
            return False
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address
        if host.startswith("[") and host.endswith("]"):
            try:
                ip6 = ipaddress.IPv6Address(host[1:-1])
            except ValueError:
                return False
            if ip6.ipv4_mapped is not None:
                return False
            ip = ip6
        elif _DOTTED_QUAD.match(host):
            try:
                ip = ipaddress.IPv4Address(host)
            except ValueError:
                return False
        else:
            return host in self.names
        if ip.is_unspecified or ip.is_multicast:
            return False
        return any(ip in net for net in self.networks if net.version == ip.version)


def callback_address_error(address: str, remote: RemoteAllowList | None = None) -> str | None:
    """Why ``address`` may not be a callback address, or None: loopback, or allow-listed."""
    err = loopback_address_error(address)
    if err is None or not remote:
        return err
    if remote.allows(address):
        return None
    return f"{err}; nor is it on the remote plugin allow-list (TOOLCALL_REMOTE_PLUGINS)"
