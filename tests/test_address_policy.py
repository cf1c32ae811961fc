"""Which callback addresses a tool may register: the whole table, both ways."""

from __future__ import annotations

import pytest

from toolcall.address_policy import canonical_address, loopback_address_error

ACCEPTED = [
    "127.0.0.1:1",
    "127.0.0.1:65535",
    "127.255.255.254:65535",
    "127.0.0.2:8080",
    "[::1]:80",
    "localhost:80",
    "unix:/tmp/x.sock",
    "unix:///tmp/x.sock",
    "unix:/" + "a" * 106,  # 107 bytes: the longest path sun_path holds
    "http://127.0.0.1:8080/tool_invoke",
    "http://[::1]:80/a/b?c=d",
    "http://localhost:80",
]

REFUSED = {
    # wildcard, private, public, link-local / cloud metadata
    "wildcard v4": "0.0.0.0:80",
    "wildcard v6": "[::]:80",
    "private 10/8": "10.0.0.1:80",
    "private 192.168/16": "192.168.1.10:80",
    "private 172.16/12": "172.16.0.1:80",
    "public": "8.8.8.8:53",
    "metadata service": "169.254.169.254:80",
    "ipv6 link-local": "[fe80::1]:80",
    "ipv6 public": "[2001:4860:4860::8888]:53",
    # names other than the literal "localhost"
    "dns name ending like localhost": "localhost.example.com:80",
    "upper-case localhost": "LOCALHOST:80",
    "mixed-case localhost": "LocalHost:80",
    "localhost with trailing dot": "localhost.:80",
    "other name": "example.com:80",
    # mapped and numeric spellings of addresses
    "mapped private": "[::ffff:10.0.0.1]:80",
    "mapped loopback": "[::ffff:127.0.0.1]:80",
    "decimal integer": "2130706433:80",
    "hex integer": "0x7f000001:80",
    "octal integer": "017700000001:80",
    "short dotted": "127.1:80",
    "hex dotted": "0x7f.0.0.1:80",
    "octal dotted": "0177.0.0.1:80",
    "octet over 255": "127.0.0.256:80",
    "unbracketed v6": "::1:80",
    "unterminated bracket": "[::1:80",
    # scheme or resolver prefixes
    "dns resolver": "dns:///localhost:1",
    "dns resolver with authority": "dns://8.8.8.8/localhost:1",
    "ipv4 resolver": "ipv4:127.0.0.1:1",
    "ipv6 resolver": "ipv6:[::1]:1",
    "https url": "https://127.0.0.1:1/",
    "http url to a private host": "http://10.0.0.1:1/",
    "http url without a port": "http://127.0.0.1/x",
    "http url with user info": "http://a@127.0.0.1:1/",
    "http url with a fragment": "http://127.0.0.1:1/#f",
    "grpc url": "grpc://127.0.0.1:1",
    # ports
    "missing port": "127.0.0.1",
    "empty port": "127.0.0.1:",
    "missing host": ":80",
    "port 0": "127.0.0.1:0",
    "port 65536": "127.0.0.1:65536",
    "signed port": "127.0.0.1:+80",
    "negative port": "127.0.0.1:-1",
    "long port": "127.0.0.1:000080",
    "named port": "localhost:http",
    # unix sockets
    "relative unix path": "unix:relative.sock",
    "relative unix path with dot": "unix:./x.sock",
    "unix authority form": "unix://host/tmp/x.sock",
    "abstract unix socket": "unix-abstract:x",
    "empty unix path": "unix:",
    "unix path climbing with ..": "unix:/tmp/a/../x.sock",
    "unix path ending in ..": "unix:/tmp/..",
    "unix path too long": "unix:/" + "a" * 107,
    # malformed input
    "empty": "",
    "space": " ",
    "leading space": " 127.0.0.1:80",
    "trailing newline": "127.0.0.1:80\n",
    "inner tab": "127.0.0.1:\t80",
    "nul byte": "127.0.0.1:80\x00",
    "escape char": "unix:/tmp/\x1bx",
    "delete char": "127.0.0.1:80\x7f",
    "very long": "127.0.0.1:" + "1" * 1000,
    "very long unix": "unix:/" + "a" * 600,
    "user info": "user@127.0.0.1:80",
    "path after port": "127.0.0.1:80/x",
}


@pytest.mark.parametrize("address", ACCEPTED)
def test_loopback_addresses_are_accepted(address: str) -> None:
    assert loopback_address_error(address) is None


@pytest.mark.parametrize("address", list(REFUSED.values()), ids=list(REFUSED))
def test_other_addresses_are_refused_with_a_reason(address: str) -> None:
    reason = loopback_address_error(address)
    assert reason is not None
    assert len(reason) > 10
    # The reason is safe to show: no raw control characters echoed back.
    assert not any(ord(c) < 0x20 for c in reason)


def test_reasons_say_what_is_wrong() -> None:
    assert "required" in (loopback_address_error("") or "")
    assert "port" in (loopback_address_error("127.0.0.1:0") or "")
    assert "not loopback" in (loopback_address_error("10.0.0.1:80") or "")
    assert "absolute" in (loopback_address_error("unix:rel.sock") or "")
    assert "scheme" in (loopback_address_error("https://127.0.0.1:1") or "")
    assert "user info" in (loopback_address_error("http://a@127.0.0.1:1/") or "")
    assert "[::1]" in (loopback_address_error("[::ffff:127.0.0.1]:80") or "")


SPELLINGS = {
    "unix:/tmp/x.sock": [
        "unix:/tmp/x.sock",
        "unix:///tmp/x.sock",
        "unix:/./tmp/x.sock",
        "unix:/tmp//x.sock",
        "unix:/tmp/./x.sock",
        "unix:///./tmp/.//x.sock",
    ],
    "[::1]:80": ["[::1]:80", "[0::1]:80", "[0:0:0:0:0:0:0:1]:80", "[::0:1]:080", "[::1]:0080"],
    "127.0.0.1:5000": ["127.0.0.1:5000", "127.0.0.1:05000"],
    "localhost:80": ["localhost:80", "localhost:080"],
    "http://127.0.0.1:80/": ["http://127.0.0.1:80", "http://127.0.0.1:080/"],
    "http://[::1]:80/p?q": ["http://[0::1]:80/p?q", "http://[::1]:0080/p?q"],
}


@pytest.mark.parametrize("canonical", list(SPELLINGS))
def test_every_spelling_of_one_socket_has_one_canonical_form(canonical: str) -> None:
    for spelling in SPELLINGS[canonical]:
        assert loopback_address_error(spelling) is None, spelling
        assert canonical_address(spelling) == canonical, spelling


def test_distinct_sockets_keep_distinct_canonical_forms() -> None:
    distinct = ["127.0.0.1:80", "127.0.0.2:80", "[::1]:80", "localhost:80", "unix:/tmp/x.sock"]
    assert len({canonical_address(a) for a in distinct}) == len(distinct)


@pytest.mark.parametrize("address", list(REFUSED.values()), ids=list(REFUSED))
def test_refused_addresses_are_their_own_canonical_form(address: str) -> None:
    assert canonical_address(address) == address
