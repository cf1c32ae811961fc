"""Helpers of the fuzz and security tests: outcomes, checks, adversarial strategies.

Hypothesis drives plain (sync) test functions - its stateful machines are sync
too - so the servers under test run on an event loop in a background thread
(an anyio blocking portal). ``Loop.rpc`` sends one request into that loop and
returns an ``Outcome``: the status code, its message and the reply.
"""

from __future__ import annotations

import contextlib
import operator
import os
import re
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc
from anyio.from_thread import BlockingPortal, start_blocking_portal
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from toolcall import config
from toolcall.errors import bad_request_violations

T = TypeVar("T")

# Examples per storm; TOOLCALL_FUZZ_EXAMPLES=2000 for a long run.
EXAMPLES = int(os.environ.get("TOOLCALL_FUZZ_EXAMPLES", "200"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)

OK = grpc.StatusCode.OK
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
TOO_BIG = grpc.StatusCode.RESOURCE_EXHAUSTED
LIMIT = config.MAX_MESSAGE_BYTES

# A Python traceback, or grpcio's wrapping of an exception a servicer did not handle.
TRACEBACK = re.compile(
    r"Traceback \(most recent call last\)|File \"[^\"]*\", line \d+|Unexpected <class"
)


@dataclass
class Outcome:
    """What one RPC came back with."""

    code: grpc.StatusCode
    details: str = ""
    reply: Any = None
    violations: list[tuple[str, str]] = field(default_factory=list)
    replies: list[Any] = field(default_factory=list)  # stream messages

    @property
    def fields(self) -> set[str]:
        return {f for f, _ in self.violations}


async def outcome_of(call: Callable[[], Awaitable[Any]]) -> Outcome:
    try:
        reply = await call()
    except grpc.aio.AioRpcError as exc:
        return Outcome(exc.code(), exc.details() or "", violations=bad_request_violations(exc))
    return Outcome(OK, reply=reply)


async def stream_outcome(
    call: Any, *, until: Callable[[Any], bool] = lambda _: False, limit: int = 10_000
) -> Outcome:
    """Reads a server stream until it ends, ``until(message)`` holds, or ``limit`` messages."""
    replies: list[Any] = []
    try:
        async for message in call:
            replies.append(message)
            if until(message) or len(replies) >= limit:
                call.cancel()
                break
    except grpc.aio.AioRpcError as exc:
        return Outcome(
            exc.code(), exc.details() or "", violations=bad_request_violations(exc), replies=replies
        )
    return Outcome(OK, replies=replies)


def check_status(
    out: Outcome, allowed: Iterable[grpc.StatusCode], request: Message | None = None, what: str = ""
) -> None:
    """A proper status: allowed for this RPC, with a readable message and no traceback.

    A request over the message limit must be RESOURCE_EXHAUSTED; one under it
    must never be (so an error message that echoes a huge input and breaks
    the trailers is caught).
    """
    allowed = set(allowed)
    size = request.ByteSize() if request is not None else 0
    label = f"{what or type(request).__name__} ({size} bytes)"
    if size > LIMIT:
        assert out.code == TOO_BIG, f"{label}: over the limit but {out.code.name}: {out.details}"
        return
    assert out.code in allowed, (
        f"{label}: {out.code.name} not in {sorted(c.name for c in allowed)}: {out.details[:500]}"
    )
    if out.code != OK:
        assert out.details.strip(), f"{label}: {out.code.name} without a message"
        assert_no_traceback(out.details, label)
    if out.code == INVALID:
        assert out.violations, f"{label}: INVALID_ARGUMENT without BadRequest details"
        assert all(f and d for f, d in out.violations), out.violations


def assert_no_traceback(text: str, label: str = "") -> None:
    assert not TRACEBACK.search(text), f"{label}: internal details leaked: {text[:500]}"


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field_bytes(number: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def deep_struct(depth: int) -> bytes:
    """A google.protobuf.Struct nesting ``depth`` levels: {"a": {"a": ...}}."""
    struct = b""
    for _ in range(depth):
        value = field_bytes(5, struct)  # Value.struct_value
        struct = field_bytes(1, field_bytes(1, b"a") + field_bytes(2, value))  # Struct.fields
    return struct


def service_methods(service: Any) -> list[tuple[str, bool]]:
    """(path, server_streaming) of every method of a service descriptor."""
    return [
        (f"/{m.containing_service.full_name}/{m.name}", m.server_streaming) for m in service.methods
    ]


def undecodable_payloads() -> st.SearchStrategy[bytes]:
    """Bytes that are no request message: random, nested past protobuf's limit, or 0xff."""
    return st.one_of(
        st.binary(max_size=300),
        st.integers(1, 400).map(lambda d: field_bytes(1, field_bytes(3, deep_struct(d)))),
        st.just(b"\xff" * 64),
    )


PYTHON_TRACEBACK = re.compile(r"Traceback \(most recent call last\)|File \"[^\"]*\", line \d+")


async def raw_outcome(
    ch: grpc.aio.Channel, path: str, payload: bytes, streaming: bool, deadline_s: float
) -> Outcome:
    """Sends ``payload`` as the request bytes of method ``path`` (no serializer at all)."""
    try:
        if streaming:
            stream: Any = ch.unary_stream(path)
            replies = [m async for m in stream(payload, timeout=deadline_s)]
            return Outcome(OK, replies=replies)
        unary: Any = ch.unary_unary(path)
        return Outcome(OK, reply=await unary(payload, timeout=deadline_s))
    except grpc.aio.AioRpcError as exc:
        return Outcome(exc.code(), exc.details() or "")


def check_raw(out: Outcome, label: str) -> None:
    """Any status will do for raw bytes, but with a message and no Python traceback."""
    if out.code != OK:
        assert out.details.strip(), f"{label}: {out.code.name} without a message"
        assert not PYTHON_TRACEBACK.search(out.details), f"{label}: {out.details[:500]}"


class Loop:
    """An event loop in a background thread; tests hand coroutines to it."""

    def __init__(self, portal: BlockingPortal) -> None:
        self.portal = portal

    def run(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        return self.portal.call(fn, *args)

    def rpc(self, call: Callable[[], Awaitable[Any]]) -> Outcome:
        return self.portal.call(outcome_of, call)

    def stream(self, make_call: Callable[[], Any], **kw: Any) -> Outcome:
        async def read() -> Outcome:
            return await stream_outcome(make_call(), **kw)

        return self.portal.call(read)


@contextlib.contextmanager
def background_loop() -> Iterator[Loop]:
    with start_blocking_portal("asyncio") as portal:
        yield Loop(portal)


async def health_status(channel: grpc.aio.Channel, service: str = "") -> str:
    stub: Any = health_pb2_grpc.HealthStub(channel)
    reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))


# -- strategies -----------------------------------------------------------------

SPECIAL_TEXT = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\t\r\n",
    "..",
    "../../etc/passwd",
    "%s%s%n%x",
    "{}",
    "null",
    "'; DROP TABLE tools; --",
    "\u202eevil\u202c",
    "\ufeffbom",
    "🙂" * 8,
    "名前",
    "Ａｂｃ",  # fullwidth
    "default",
    "ops",
    "default\n",  # "$" in a Python regex matches before a final newline
    "s1\n",
    "t1\n",
    "Traceback",
    'File "x.py"',
    "<script>alert(1)</script>",
    "a" * 64,
    "a" * 65,
    "\U0010ffff",
    "e\u0301",  # combining accent
]

NAME_RE = r"\A[A-Za-z0-9_.\-]{1,64}\Z"
SESSION_RE = r"\A[A-Za-z0-9_.:\-]{1,128}\Z"


def huge_text(min_size: int = 4097, max_size: int = 120_000) -> st.SearchStrategy[str]:
    """Long strings, cheap to generate (one character repeated)."""
    return st.builds(
        operator.mul,
        st.sampled_from(["a", "é", "😀", "\x00", " ", "名"]),
        st.integers(min_size, max_size),
    )


def texts(max_size: int = 80, *, huge: bool = True) -> st.SearchStrategy[str]:
    parts = [st.text(max_size=max_size), st.sampled_from(SPECIAL_TEXT)]
    if huge:
        parts.append(huge_text())
    return st.one_of(parts)


def valid_names() -> st.SearchStrategy[str]:
    return st.from_regex(NAME_RE)


def names() -> st.SearchStrategy[str]:
    return st.one_of(valid_names(), texts())


def floats() -> st.SearchStrategy[float]:
    """Every kind of double: NaN, infinities, negatives, huge, tiny, and plain ones."""
    return st.one_of(
        st.floats(allow_nan=True, allow_infinity=True),
        st.sampled_from([0.0, -0.0, 1e-300, 0.001, 1.0, 300.0, 300.0001, 1e308, -1.0]),
        st.floats(0, 400),
    )


def json_scalars() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(),
        st.booleans(),
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(-(2**63), 2**63),
        texts(30, huge=False),
    )


def json_values(max_leaves: int = 12) -> st.SearchStrategy[Any]:
    return st.recursive(
        json_scalars(),
        lambda kids: (
            st.lists(kids, max_size=5) | st.dictionaries(st.text(max_size=10), kids, max_size=5)
        ),
        max_leaves=max_leaves,
    )


def json_objects(max_leaves: int = 12) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(st.text(max_size=10), json_values(max_leaves), max_size=6)


def nested(depth: int) -> dict[str, Any]:
    """A schema nesting ``depth`` object levels."""
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


def wide(properties: int) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            f"p{i}": {"type": "string", "description": "d" * 40} for i in range(properties)
        },
    }


NUMBER_SCHEMA = {
    "type": "object",
    "properties": {"x": {"type": "number"}},
    "required": ["x"],
    "additionalProperties": False,
}

VALID_SCHEMAS: list[dict[str, Any]] = [
    {},
    {"type": "object"},
    {"type": "object", "properties": {}},
    NUMBER_SCHEMA,
    {
        "type": "object",
        "properties": {"s": {"type": "string", "maxLength": 5, "pattern": "^[a-z]*$"}},
        "required": ["s"],
    },
    {
        "type": "object",
        "$defs": {"pos": {"type": "integer", "minimum": 0}},
        "properties": {"n": {"$ref": "#/$defs/pos"}},
    },
    {"type": "object", "properties": {"e": {"enum": ["a", "b", None, 1]}}},
    {"type": "object", "additionalProperties": {"type": "array", "items": {"type": "boolean"}}},
    nested(10),
]

# Refused at registration (not valid Draft 2020-12, not an object, or too big).
INVALID_SCHEMAS: list[dict[str, Any]] = [
    {"type": "string"},
    {"type": "array"},
    {"properties": {}},
    {"type": "object", "properties": 3},
    {"type": "object", "required": "x"},
    {"type": "object", "properties": {"a": {"type": "strnig"}}},
    {"type": "object", "properties": {"a": {"type": "string", "pattern": "("}}},
    {"type": "object", "patternProperties": {"(": {}}},
    {"type": "object", "minProperties": -1},
    {"type": ["object", 5]},
    {"type": "object", "properties": {"a": {"type": "x" * 30_000}}},  # quoted in the error
    {"type": "object", "properties": {"k" * 30_000: {"type": 5}}},
    nested(16),  # 32 levels: over the registry's depth limit
    wide(2000),
]

# Schemas that reference other documents: a registry must never fetch them
# (that would be SSRF through the schema) and never crash on them.
REFERENCING_SCHEMAS: list[dict[str, Any]] = [
    {"type": "object", "properties": {"a": {"$ref": "http://127.0.0.1:9/schema.json"}}},
    {"type": "object", "properties": {"a": {"$ref": "https://169.254.169.254/latest/meta-data"}}},
    {"type": "object", "properties": {"a": {"$ref": "file:///etc/passwd"}}},
    {"type": "object", "properties": {"a": {"$ref": "other.json#/x"}}},
    {"type": "object", "properties": {"a": {"$ref": "#/nope"}}},
    {"type": "object", "$ref": "#"},
    {
        "type": "object",
        "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"$ref": "#/$defs/a"}},
        "properties": {"x": {"$ref": "#/$defs/a"}},
    },
    {"type": "object", "properties": {"a": {"$dynamicRef": "http://127.0.0.1:9/d"}}},
]


def schemas() -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(
        st.sampled_from(VALID_SCHEMAS + INVALID_SCHEMAS + REFERENCING_SCHEMAS),
        json_objects(),
        json_objects().map(lambda d: {**d, "type": "object"}),
        st.integers(8, 16).map(nested),  # deeper is not even a valid protobuf message
    )


# -- callback addresses (shared with the SSRF table) ------------------------------

ACCEPTED_ADDRESSES = [
    "127.0.0.1:1",
    "127.0.0.1:65535",
    "127.255.255.254:80",
    "127.1.2.3:8080",
    "[::1]:1",
    "[::1]:50051",
    "localhost:1",
    "localhost:65535",
    "unix:/tmp/toolcall-fuzz.sock",
    "unix:///tmp/toolcall-fuzz.sock",
    "http://127.0.0.1:8080/tool_invoke",
    "http://[::1]:1/",
    "http://localhost:9876",
    "http://127.0.0.1:80/api/llm-tools/callback/p1/get_weather?x=1&y=%20",
]

REFUSED_ADDRESSES: dict[str, str] = {
    # wildcard
    "0.0.0.0:80": "wildcard",
    "[::]:80": "wildcard",
    "0:80": "wildcard",
    # private, link-local, metadata, public
    "10.0.0.1:80": "private",
    "192.168.1.1:80": "private",
    "172.16.0.1:80": "private",
    "169.254.169.254:80": "link-local metadata",
    "8.8.8.8:53": "public",
    "192.0.2.1:80": "documentation range",
    "[fe80::1]:80": "IPv6 link-local",
    "[fd00::1]:80": "IPv6 unique local",
    "[2001:db8::1]:80": "IPv6 public",
    # IPv4-mapped / compatible IPv6 forms of loopback and others
    "[::ffff:127.0.0.1]:80": "IPv4-mapped loopback",
    "[::ffff:7f00:1]:80": "IPv4-mapped loopback (hex)",
    "[::ffff:10.0.0.1]:80": "IPv4-mapped private",
    "[::127.0.0.1]:80": "IPv4-compatible",
    "[0:0:0:0:0:0:0:1%lo]:80": "scoped IPv6",
    # numeric host forms that resolvers turn into 127.0.0.1
    "2130706433:80": "decimal",
    "0x7f000001:80": "hex",
    "0x7f.0.0.1:80": "hex octet",
    "0177.0.0.1:80": "octal octet",
    "017700000001:80": "octal",
    "127.1:80": "short form",
    "127.0.1:80": "short form",
    "127.000.000.001:80": "zero-padded",
    "127.0.0.1.:80": "trailing dot",
    "127.0.0.256:80": "out-of-range octet",
    # DNS names (could resolve anywhere, or be re-bound)
    "example.com:80": "DNS name",
    "localhost.:80": "DNS name with trailing dot",
    "LOCALHOST:80": "upper-case localhost",
    "localhost.localdomain:80": "DNS alias of localhost",
    "127.0.0.1.nip.io:80": "DNS name that resolves to loopback",
    "metadata.google.internal:80": "metadata DNS name",
    # scheme or resolver prefixes
    "dns:///127.0.0.1:80": "dns resolver",
    "dns://8.8.8.8/localhost:80": "dns resolver with authority",
    "ipv4:127.0.0.1:80": "ipv4 resolver",
    "ipv6:[::1]:80": "ipv6 resolver",
    "https://localhost:443": "https scheme",
    "http://10.0.0.1:80/x": "http to a private host",
    "http://169.254.169.254:80/latest/meta-data": "http to the metadata service",
    "http://example.com:80/": "http to a DNS name",
    "http://127.0.0.1/x": "http without a port",
    "http://user@127.0.0.1:80/": "http with user info",
    "http://127.0.0.1:80@evil.com:80/": "http with a host after user info",
    "http://127.0.0.1:80/x#frag": "http with a fragment",
    "http://127.0.0.1:80\\@evil.com/": "http with a backslash",
    "http://unix:/tmp/x.sock": "http over a unix path",
    "http://2130706433:80/": "http to a numeric host",
    "http:///127.0.0.1:80/": "http with an empty authority",
    "xds:///svc": "xds resolver",
    "unix-abstract:toolcall": "abstract unix socket",
    "vsock:2:80": "vsock",
    # malformed
    "": "empty",
    "127.0.0.1": "no port",
    "127.0.0.1:": "empty port",
    "127.0.0.1:0": "port 0",
    "127.0.0.1:65536": "port too big",
    "127.0.0.1:-1": "negative port",
    "127.0.0.1:80a": "port not a number",
    "127.0.0.1:+80": "signed port",
    "127.0.0.1:٨٠": "non-ASCII digits",
    "[::1:80": "unterminated bracket",
    "::1:80": "unbracketed IPv6",
    "127.0.0.1:80,10.0.0.1:80": "address list",
    "127.0.0.1:80/path": "path",
    "user@127.0.0.1:80": "userinfo",
    " 127.0.0.1:80": "leading space",
    "127.0.0.1:80\n": "trailing newline",
    "127.0.0.1\x00.evil.com:80": "NUL byte",
    "unix:relative.sock": "relative unix path",
    "unix:" + "/x" * 60: "unix path too long",
    "a" * 600: "too long",
}


def callback_addresses() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(ACCEPTED_ADDRESSES), st.sampled_from(sorted(REFUSED_ADDRESSES)), texts()
    )


def is_valid(pattern: str, value: str) -> bool:
    return re.match(pattern, value) is not None
