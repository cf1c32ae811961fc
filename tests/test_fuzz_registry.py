"""Property-based storm against every ToolRegistry RPC, on one real registry.

Each RPC gets a few hundred random and adversarial requests (odd and huge
names, invalid and hostile JSON Schemas, NaN/inf timeouts, unknown modes,
bad roles and lease ids, unicode, NUL bytes). Every answer must be a proper
status from the RPC's allowed set, with a message and no traceback; what the
registry accepted is tracked in ``RegistryModel``, and List and Watch must
show exactly that. The last test checks the registry is still healthy and
serving normal calls. ``TOOLCALL_FUZZ_EXAMPLES`` raises the example count.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.message import DecodeError
from hypothesis import example, given, reject, settings
from hypothesis import strategies as st

from registry_service import RegistryHost, RegistrySettings, start_registry
from tests.support.fuzz import (
    ACCEPTED_ADDRESSES,
    EXAMPLES,
    FUZZ,
    INVALID,
    INVALID_SCHEMAS,
    LIMIT,
    NAME_RE,
    NOT_FOUND,
    NUMBER_SCHEMA,
    OK,
    REFUSED_ADDRESSES,
    TOO_BIG,
    VALID_SCHEMAS,
    Loop,
    Outcome,
    assert_no_traceback,
    background_loop,
    callback_addresses,
    check_raw,
    check_status,
    floats,
    health_status,
    is_valid,
    json_objects,
    names,
    raw_outcome,
    schemas,
    service_methods,
    texts,
    undecodable_payloads,
)
from tests.support.llm_env import tool_plugin
from tests.support.tls import fuzz_security
from toolcall.clients import channel
from toolcall.jsonvalue import from_struct, from_value, to_struct
from toolcall.v1 import registry_pb2, registry_pb2_grpc, tools_pb2

__all__ = ["tool_plugin"]

ROLES = ["default", "ops"]
SOURCES = ["src-a", "src-b", "plugin:fuzz"]
ROLE_VALUES = st.one_of(st.none(), st.sampled_from(["", *ROLES, "nope"]), texts())

Key = tuple[str, str]  # (role, name)


@dataclass(frozen=True)
class Tracked:
    source: str
    lease_id: str


@dataclass
class RegistryModel:
    """What the registry accepted, as the test saw it."""

    tools: dict[Key, Tracked] = field(default_factory=dict)

    def expected(self, role: str | None = None, source: str = "") -> set[tuple[str, ...]]:
        return {
            (r, n, t.source, t.lease_id)
            for (r, n), t in self.tools.items()
            if (role is None or r == role) and (not source or t.source == source)
        }

    def remove(self, keys: list[Key]) -> None:
        for key in keys:
            del self.tools[key]


class World:
    """The registry under test, its client and the model of what it accepted."""

    def __init__(
        self,
        loop: Loop,
        host: RegistryHost,
        ch: grpc.aio.Channel,
        plugin: str,
        lease_id: str,
    ) -> None:
        self.loop = loop
        self.host = host
        self.channel = ch
        self.stub: registry_pb2_grpc.ToolRegistryAsyncStub = registry_pb2_grpc.ToolRegistryStub(ch)
        self.plugin = plugin
        self.lease_id = lease_id  # long-lived; fuzz registrations may use it
        self.model = RegistryModel()
        self.fixed: list[str] = []

    def __repr__(self) -> str:
        return f"<registry {self.host.target}: {len(self.model.tools)} tools>"

    def rpc(self, method: str, request: Any, timeout: float = 10) -> Outcome:
        return self.loop.rpc(lambda: getattr(self.stub, method)(request, timeout=timeout))

    def listed(self, role: str | None = None, source: str = "") -> set[tuple[str, ...]]:
        request = registry_pb2.ListRequest(source=source)
        if role is not None:
            request.role = role
        out = self.rpc("List", request)
        assert out.code == OK, out
        return {(t.role, t.tool.name, t.tool.source, t.lease_id) for t in out.reply.tools}


async def _start(loop: Loop, tmp: Path, plugin: str) -> World:
    security = fuzz_security(tmp)  # TOOLCALL_TEST_SECURE=1: mTLS and principals
    host = await start_registry(
        RegistrySettings(
            address="127.0.0.1:0",
            roles=ROLES,
            data_path=tmp / "registry.sqlite3",
            grace_s=0.5,
            **security.server,
        )
    )
    ch = channel(host.target, tls=security.client)
    stub: registry_pb2_grpc.ToolRegistryAsyncStub = registry_pb2_grpc.ToolRegistryStub(ch)
    lease = await stub.CreateLease(registry_pb2.CreateLeaseRequest(ttl_seconds=300, holder="fuzz"))
    return World(loop, host, ch, plugin, lease.lease_id)


async def _stop(world: World) -> None:
    await world.channel.close()
    await world.host.stop()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, tool_plugin: str) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("fuzz-registry")
    with background_loop() as loop:
        w = loop.run(_start, loop, tmp, tool_plugin)
        try:
            # Tools on the real test plugin, for Invoke (behaviour by name prefix).
            fixed = {
                "echo_strict": NUMBER_SCHEMA,
                "echo_any": None,
                "echo_ref": VALID_SCHEMAS[5],
                "fail_tool": None,
                "crash_tool": None,
            }
            for name, schema in fixed.items():
                d = tools_pb2.ToolDefinition(
                    name=name, callback_address=tool_plugin, source="fixed"
                )
                if schema is not None:
                    d.parameters.CopyFrom(to_struct(schema))
                register(w, d)
            d = tools_pb2.ToolDefinition(
                name="echo_raw", callback_address=tool_plugin, source="fixed"
            )
            d.accepts_raw_arguments = True
            d.parameters.CopyFrom(to_struct(NUMBER_SCHEMA))
            register(w, d)
            w.fixed = [*fixed, "echo_raw"]
            yield w
        finally:
            loop.run(_stop, w)


def register(world: World, d: tools_pb2.ToolDefinition, lease_id: str = "") -> Outcome:
    out = world.rpc("Register", registry_pb2.RegisterRequest(tool=d, lease_id=lease_id))
    if out.code == OK and out.reply.ok:
        for role in out.reply.affected_roles:
            world.model.tools[(role, d.name)] = Tracked(d.source, lease_id)
    return out


# -- Register ---------------------------------------------------------------------


@st.composite
def definitions(draw: st.DrawFn) -> tools_pb2.ToolDefinition:
    d = tools_pb2.ToolDefinition(
        name=draw(st.one_of(names(), st.sampled_from(["t1", "t2", "t3"]))),
        description=draw(texts(200)),
        callback_address=draw(callback_addresses()),
        source=draw(st.one_of(st.sampled_from(SOURCES), texts(150))),
        timeout_seconds=draw(floats()),
        mode=tools_pb2.ToolMode.ValueType(draw(st.sampled_from([0, 1, 2, 3, -1, 2**31 - 1]))),
        ack_message=draw(texts(200)),
        accepts_raw_arguments=draw(st.booleans()),
    )
    schema = draw(st.one_of(st.none(), schemas()))
    if schema is not None:
        d.parameters.CopyFrom(to_struct(schema))
    try:
        registry_pb2.RegisterRequest(tool=d)
    except DecodeError:  # nests deeper than protobuf allows: see test_undecodable_requests
        reject()
    role = draw(ROLE_VALUES)
    if role is not None:
        d.role = role
    return d


def broken_rules(d: tools_pb2.ToolDefinition) -> set[str]:
    """Fields that break a rule stated in tools.proto (an oracle independent of the code)."""
    bad = set()
    if not is_valid(NAME_RE, d.name):
        bad.add("tool.name")
    if len(d.description) > 4096:
        bad.add("tool.description")
    if d.callback_address in REFUSED_ADDRESSES:
        bad.add("tool.callback_address")
    if d.HasField("role") and not (d.role and d.role.isprintable()):
        bad.add("tool.role")
    if len(d.source) > 128 or not d.source.isprintable():  # no control characters
        bad.add("tool.source")
    if not 0 <= d.timeout_seconds <= 300:  # NaN fails too
        bad.add("tool.timeout_seconds")
    if d.mode not in (0, 1, 2):
        bad.add("tool.mode")
    if len(d.ack_message) > 4096:
        bad.add("tool.ack_message")
    if d.HasField("parameters") and from_struct(d.parameters) in INVALID_SCHEMAS:
        bad.add("tool.parameters")
    return bad


@FUZZ
@given(d=definitions(), lease=st.sampled_from(["", "mine", "lease_unknown", "x" * 300]))
@example(d=tools_pb2.ToolDefinition(name="t1\n", callback_address="127.0.0.1:1"), lease="")
def test_register(world: World, d: tools_pb2.ToolDefinition, lease: str) -> None:
    lease_id = world.lease_id if lease == "mine" else lease
    request = registry_pb2.RegisterRequest(tool=d, lease_id=lease_id)
    out = register(world, d, lease_id)
    check_status(out, {OK, INVALID, NOT_FOUND}, request)
    if request.ByteSize() > LIMIT:
        return
    expected = broken_rules(d)
    if expected:
        assert out.code == INVALID, f"accepted a definition breaking {expected}: {out}"
        assert expected <= out.fields, (expected, out.violations)
    known_schema = not d.HasField("parameters") or from_struct(d.parameters) in VALID_SCHEMAS
    known_address = d.callback_address in ACCEPTED_ADDRESSES or d.callback_address in (
        REFUSED_ADDRESSES
    )
    if out.code == INVALID and known_schema and known_address:
        assert out.fields == expected, (expected, out.violations)
    if out.code == NOT_FOUND:
        assert lease_id not in ("", world.lease_id), out
        assert "lease" in out.details
    if out.code == OK:
        reply = out.reply
        assert reply.registered == d.name
        if d.HasField("role") and d.role not in ROLES:
            assert not reply.ok and [f.role for f in reply.failed_roles] == [d.role]
            assert all(f.error for f in reply.failed_roles)
        else:
            assert reply.ok and sorted(reply.affected_roles) == (
                [d.role] if d.HasField("role") else ROLES
            )
    elif not expected and known_schema and d.callback_address in ACCEPTED_ADDRESSES:
        assert out.code == NOT_FOUND, f"refused a valid definition: {out}"


def test_list_matches_what_was_accepted(world: World) -> None:
    assert world.listed() == world.model.expected()
    for role in ROLES:
        assert world.listed(role) == world.model.expected(role)
    for source in SOURCES:
        assert world.listed(source=source) == world.model.expected(source=source)


# -- Invoke -----------------------------------------------------------------------


@FUZZ
@given(data=st.data())
def test_invoke(world: World, data: st.DataObject) -> None:
    registered = sorted({n for _, n in world.model.tools})
    name = data.draw(st.one_of(st.sampled_from(world.fixed), st.sampled_from(registered), names()))
    request = registry_pb2.InvokeRequest(
        name=name,
        call_id=data.draw(texts(40)),
        session_id=data.draw(texts(40)),
    )
    how = data.draw(st.sampled_from(["struct", "raw_json", "raw_text", "number", "none"]))
    if how == "struct":
        request.arguments.CopyFrom(to_struct(data.draw(json_objects())))
    elif how == "raw_json":
        request.raw_arguments = json.dumps(data.draw(json_objects()))
    elif how == "raw_text":
        request.raw_arguments = data.draw(texts(60))
    elif how == "number":
        number = data.draw(st.sampled_from(["1", "2.5", "-0", "1e400"]))
        request.raw_arguments = f'{{"x": {number}}}'
    role = data.draw(ROLE_VALUES)
    if role is not None:
        request.role = role
    out = world.rpc("Invoke", request, timeout=15)
    check_status(out, {OK, INVALID, NOT_FOUND}, request)
    if out.code == INVALID:
        assert out.fields <= {"name", "role"}, out.violations
    if out.code != OK:
        return
    result = out.reply.result
    assert out.reply.call_id
    if result.is_error:
        assert result.error.strip()
        assert_no_traceback(result.error, f"Invoke {name!r}")
    elif name == "echo_strict":
        echoed = from_value(result.output)["arguments"]
        assert set(echoed) == {"x"} and isinstance(echoed["x"], int | float), echoed


# -- Unregister / Clear -----------------------------------------------------------


def bad_role(role: str | None) -> bool:
    """A set role must be non-empty and free of control characters."""
    return role is not None and not (role and role.isprintable())


@FUZZ
@given(name=st.one_of(st.sampled_from(["t1", "t2", "t3"]), names()), role=ROLE_VALUES)
def test_unregister(world: World, name: str, role: str | None) -> None:
    request = registry_pb2.UnregisterRequest(name=name)
    if role is not None:
        request.role = role
    out = world.rpc("Unregister", request)
    check_status(out, {OK, INVALID}, request)
    if out.code == INVALID:
        assert not name.isprintable() or not name or bad_role(role), out
        return
    gone = sorted(k for k in world.model.tools if k[1] == name and (role is None or k[0] == role))
    assert out.reply.removed == len(gone), (gone, out.reply)
    assert sorted(out.reply.affected_roles) == sorted(r for r, _ in gone)
    world.model.remove(gone)


@settings(FUZZ, max_examples=max(20, EXAMPLES // 4))
@given(source=st.one_of(st.sampled_from(SOURCES), texts()), role=ROLE_VALUES)
def test_clear(world: World, source: str, role: str | None) -> None:
    request = registry_pb2.ClearRequest(source=source)
    if role is not None:
        request.role = role
    out = world.rpc("Clear", request)
    check_status(out, {OK, INVALID}, request)
    if out.code == INVALID:
        assert not source.isprintable() or not source or bad_role(role), out
        return
    gone = [
        k
        for k, t in world.model.tools.items()
        if t.source == source and (role is None or k[0] == role)
    ]
    assert out.reply.removed == len(gone), (gone, out.reply)
    world.model.remove(gone)


# -- List / Watch -----------------------------------------------------------------


@FUZZ
@given(role=ROLE_VALUES, source=st.one_of(st.sampled_from(SOURCES), texts()))
def test_list(world: World, role: str | None, source: str) -> None:
    request = registry_pb2.ListRequest(source=source)
    if role is not None:
        request.role = role
    out = world.rpc("List", request)
    check_status(out, {OK, INVALID, NOT_FOUND}, request)
    if out.code == OK:
        got = {(t.role, t.tool.name, t.tool.source, t.lease_id) for t in out.reply.tools}
        assert got == world.model.expected(role, source)
        assert list(out.reply.roles) == ROLES
    elif out.code == NOT_FOUND:
        assert role not in (None, *ROLES)


def watch_snapshot(world: World, role: str | None) -> None:
    """A Watch's snapshot (the events before SYNCED) is exactly what the model holds."""
    request = registry_pb2.WatchRequest()
    if role is not None:
        request.role = role
    out = world.loop.stream(
        lambda: world.stub.Watch(request, timeout=10),
        until=lambda e: e.type == registry_pb2.EVENT_TYPE_SYNCED,
    )
    check_status(out, {OK, INVALID, NOT_FOUND}, request)
    if out.code != OK:
        assert not out.replies
        return
    *snapshot, synced = out.replies
    assert synced.type == registry_pb2.EVENT_TYPE_SYNCED
    got = {(e.tool.role, e.tool.tool.name, e.tool.tool.source, e.tool.lease_id) for e in snapshot}
    assert got == world.model.expected(role)
    assert {e.reason for e in snapshot} <= {"snapshot"}


@settings(FUZZ, max_examples=max(20, EXAMPLES // 2))
@given(role=ROLE_VALUES)
def test_watch(world: World, role: str | None) -> None:
    watch_snapshot(world, role)


# -- Leases -----------------------------------------------------------------------


@FUZZ
@given(ttl=floats(), holder=texts())
def test_create_lease(world: World, ttl: float, holder: str) -> None:
    request = registry_pb2.CreateLeaseRequest(ttl_seconds=ttl, holder=holder)
    out = world.rpc("CreateLease", request)
    check_status(out, {OK, INVALID}, request)
    documented_ok = ttl == 0 or 1 <= ttl <= 300
    assert (out.code == OK) == documented_ok, (ttl, out)
    if out.code == OK:
        assert out.reply.lease_id and out.reply.ttl_seconds == (ttl or 10.0)
    else:
        assert out.fields == {"ttl_seconds"}


LEASE_IDS = st.one_of(
    st.sampled_from(["", "mine", "lease_" + "0" * 24, "lease_"]), texts(), st.text(max_size=30)
)


@FUZZ
@given(lease=LEASE_IDS)
def test_keep_alive(world: World, lease: str) -> None:
    lease_id = world.lease_id if lease == "mine" else lease
    request = registry_pb2.KeepAliveRequest(lease_id=lease_id)
    out = world.rpc("KeepAlive", request)
    check_status(out, {OK, INVALID, NOT_FOUND}, request)
    assert (out.code == OK) == (lease_id == world.lease_id), out
    if out.code == OK:
        held = {n for (_, n), t in world.model.tools.items() if t.lease_id == world.lease_id}
        assert out.reply.tools == len(held)
    elif out.code == INVALID:
        assert not lease_id


@settings(FUZZ, max_examples=max(20, EXAMPLES // 2))
@given(lease=LEASE_IDS, tools=st.lists(st.sampled_from(["l1", "l2", "l3"]), max_size=3))
def test_revoke_lease(world: World, lease: str, tools: list[str]) -> None:
    lease_id = lease
    if lease == "mine":
        # A fresh lease with a few tools of its own (never the long-lived one).
        created = world.rpc("CreateLease", registry_pb2.CreateLeaseRequest(ttl_seconds=60))
        lease_id = created.reply.lease_id
        for name in tools:
            d = tools_pb2.ToolDefinition(name=name, callback_address="127.0.0.1:1", source="lease")
            assert register(world, d, lease_id).code == OK
    request = registry_pb2.RevokeLeaseRequest(lease_id=lease_id)
    out = world.rpc("RevokeLease", request)
    check_status(out, {OK, INVALID, NOT_FOUND}, request)
    assert (out.code == OK) == (lease == "mine"), out
    if out.code == OK:
        gone = [k for k, t in world.model.tools.items() if t.lease_id == lease_id]
        assert out.reply.removed == len(gone)
        world.model.remove(gone)
        again = world.rpc("RevokeLease", request)
        assert again.code == NOT_FOUND


# -- Undecodable requests --------------------------------------------------------

METHODS = service_methods(registry_pb2.DESCRIPTOR.services_by_name["ToolRegistry"])


@settings(FUZZ, max_examples=max(20, EXAMPLES // 2))
@given(
    method=st.sampled_from(METHODS),
    payload=undecodable_payloads(),
)
def test_undecodable_requests(world: World, method: tuple[str, bool], payload: bytes) -> None:
    """Bytes that are not the method's request message (or nest past protobuf's limit).

    grpcio answers a request it cannot parse itself (UNKNOWN, naming the
    DecodeError); whatever the status, the server must survive it.
    """
    path, streaming = method
    out = world.loop.run(raw_outcome, world.channel, path, payload, streaming, 0.3)
    check_raw(out, path)


# -- Limits and the end of the storm ----------------------------------------------


def test_a_request_over_the_message_limit_is_resource_exhausted(world: World) -> None:
    d = tools_pb2.ToolDefinition(name="big", callback_address="127.0.0.1:1", description="d")
    d.description = "d" * (LIMIT - d.ByteSize() + 100)
    request = registry_pb2.RegisterRequest(tool=d)
    assert request.ByteSize() > LIMIT
    out = world.rpc("Register", request)
    assert out.code == TOO_BIG, out
    assert out.details
    # Just under the limit: an ordinary validation error, not a transport one.
    d.description = "d" * (LIMIT - 4096)
    out = world.rpc("Register", registry_pb2.RegisterRequest(tool=d))
    assert out.code == INVALID and out.fields == {"tool.description"}, out
    assert world.loop.run(health_status, world.channel) == "SERVING"


def test_after_the_storm_the_registry_is_healthy_and_consistent(world: World) -> None:
    assert world.host.server is not None
    assert world.loop.run(health_status, world.channel) == "SERVING"
    service = "toolcall.v1.ToolRegistry"
    assert world.loop.run(health_status, world.channel, service) == "SERVING"
    # State: List and a fresh Watch show exactly what was accepted.
    assert world.listed() == world.model.expected()
    watch_snapshot(world, None)
    for role in ROLES:
        watch_snapshot(world, role)
    # A normal call still works end to end.
    out = world.rpc(
        "Invoke", registry_pb2.InvokeRequest(name="echo_strict", raw_arguments='{"x": 7}')
    )
    assert out.code == OK and not out.reply.result.is_error, out
    assert from_value(out.reply.result.output)["arguments"] == {"x": 7}
