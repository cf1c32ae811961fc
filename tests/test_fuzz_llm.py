"""Property-based storm against every LLMService RPC, on one real stack.

A registry, the test plugin process and an LLMService (offline stand-in
provider) run once for the module; each RPC gets a few hundred random and
adversarial requests: bad and huge session ids, unknown roles and providers,
tool/unknown message roles, blank and huge contents, NaN/inf temperatures,
out-of-range round limits, random task ids. Every answer must be a proper
status from the RPC's allowed set, with a message and no traceback. Accepted
turns are tracked in ``ConversationModel``: each session's stored history
must be exactly the accepted turns (a refused turn stores nothing), and every
async result of an accepted turn must be delivered exactly once.
``TOOLCALL_FUZZ_EXAMPLES`` raises the example count.
"""

from __future__ import annotations

import functools
import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from llm_service import LLMServiceHost, start_llm
from registry_service import RegistryHost
from tests.support.fuzz import (
    EXAMPLES,
    FUZZ,
    INVALID,
    LIMIT,
    NOT_FOUND,
    OK,
    SESSION_RE,
    TOO_BIG,
    Loop,
    Outcome,
    assert_no_traceback,
    background_loop,
    check_raw,
    check_status,
    floats,
    health_status,
    is_valid,
    raw_outcome,
    service_methods,
    texts,
    undecodable_payloads,
)
from tests.support.llm_env import llm_settings, start_test_registry, tool_plugin
from tests.support.tls import fuzz_security
from toolcall.clients import channel
from toolcall.jsonvalue import to_struct
from toolcall.v1 import llm_pb2, llm_pb2_grpc, registry_pb2, registry_pb2_grpc, tools_pb2

__all__ = ["tool_plugin"]

ROLES = ("default", "ops")
SESSIONS = ["s1", "s2", "s.3:x-y_z"]
FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
DEADLINE = grpc.StatusCode.DEADLINE_EXCEEDED
USER, SYSTEM, ASSISTANT, TOOL = (
    llm_pb2.MESSAGE_ROLE_USER,
    llm_pb2.MESSAGE_ROLE_SYSTEM,
    llm_pb2.MESSAGE_ROLE_ASSISTANT,
    llm_pb2.MESSAGE_ROLE_TOOL,
)
# The service's notes about finished async tasks (see llm_service/tasks.py).
TASK_NOTE = re.compile(r"^(Result of async task|Async task) task_[0-9a-f]{20} ")
# Words the offline stand-in matches to the tools below.
PROMPTS = [
    "please echo 'hello'",
    'echo the text "Ünïcode 名前" back',
    "sleep later please",
    "fail now",
    "hello there",
    "echo",
]
TOOLS = [
    ("echo_text", "Echo the text back.", tools_pb2.TOOL_MODE_SYNC),
    ("sleep_later", "Sleep in the background, later.", tools_pb2.TOOL_MODE_ASYNC),
    ("fail_now", "Always fails, now.", tools_pb2.TOOL_MODE_SYNC),
]
TEXT_SCHEMA = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}

Turn = list[tuple[int, str]]


@dataclass
class ConversationModel:
    """What the service accepted: each session's messages, and async tasks."""

    sessions: dict[str, Turn] = field(default_factory=dict)
    tasks: dict[str, str] = field(default_factory=dict)  # task id -> session
    maybe_acked: set[str] = field(default_factory=set)

    def accepted(self, request: llm_pb2.ChatRequest, reply: llm_pb2.ChatResponse) -> None:
        turn = self.sessions.setdefault(request.session_id, [])
        turn.extend((m.role or USER, m.content) for m in request.messages)
        turn.append((ASSISTANT, reply.message.content))
        for record in reply.tool_calls:
            if record.task_id:
                self.tasks[record.task_id] = request.session_id


class World:
    """The stack under test, its clients and the model of what it accepted."""

    def __init__(
        self,
        loop: Loop,
        registry: RegistryHost,
        llm: LLMServiceHost,
        rch: grpc.aio.Channel,
        lch: grpc.aio.Channel,
    ) -> None:
        self.loop = loop
        self.registry = registry
        self.llm = llm
        self.channels = (rch, lch)
        self.stub: llm_pb2_grpc.LLMServiceAsyncStub = llm_pb2_grpc.LLMServiceStub(lch)
        self.registry_stub: registry_pb2_grpc.ToolRegistryAsyncStub = (
            registry_pb2_grpc.ToolRegistryStub(rch)
        )
        self.model = ConversationModel()

    def __repr__(self) -> str:
        return f"<LLMService {self.llm.target}: {len(self.model.sessions)} sessions>"

    def rpc(self, method: str, request: Any, timeout: float = 20) -> Outcome:
        return self.loop.rpc(lambda: getattr(self.stub, method)(request, timeout=timeout))

    def history(self, session: str) -> list[llm_pb2.ChatMessage]:
        out = self.rpc("GetHistory", llm_pb2.GetHistoryRequest(session_id=session))
        assert out.code == OK, out
        return list(out.reply.messages)


def conversation(history: list[llm_pb2.ChatMessage]) -> Turn:
    """A history without tool exchanges and task notes: what the model tracks."""
    return [
        (m.role, m.content)
        for m in history
        if m.role != TOOL
        and not m.tool_calls
        and not (m.role == SYSTEM and TASK_NOTE.match(m.content))
    ]


async def _start(loop: Loop, tmp: Path, plugin: str) -> World:
    security = fuzz_security(tmp)  # TOOLCALL_TEST_SECURE=1: mTLS and principals
    registry = await start_test_registry(tmp / "registry.sqlite3", roles=ROLES, **security.server)
    rch = channel(registry.target, tls=security.client)
    rstub: registry_pb2_grpc.ToolRegistryAsyncStub = registry_pb2_grpc.ToolRegistryStub(rch)
    for name, description, mode in TOOLS:
        d = tools_pb2.ToolDefinition(
            name=name, description=description, callback_address=plugin, mode=mode, source="fuzz"
        )
        if name == "echo_text":
            d.parameters.CopyFrom(to_struct(TEXT_SCHEMA))
        assert (await rstub.Register(registry_pb2.RegisterRequest(tool=d))).ok
    # No API keys: "openai" and "gemini" turns are FAILED_PRECONDITION.
    settings = llm_settings(tmp, registry.target, openai_api_key="", gemini_api_key="")
    if security.client is not None:
        settings.tls, settings.principals_file = (
            security.llm_client,
            security.server["principals_file"],
        )
    llm = await start_llm(settings)
    assert await llm.view.wait_synced(10)
    for name, _, _ in TOOLS:
        for role in ROLES:
            assert await llm.view.wait_for(role, name, timeout_s=5)
    return World(loop, registry, llm, rch, channel(llm.target, tls=security.client))


async def _stop(world: World) -> None:
    for ch in world.channels:
        await ch.close()
    await world.llm.stop()
    await world.registry.stop()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, tool_plugin: str) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("fuzz-llm")
    with background_loop() as loop:
        w = loop.run(_start, loop, tmp, tool_plugin)
        try:
            yield w
        finally:
            loop.run(_stop, w)


# -- strategies and the documented rules ----------------------------------------

session_ids = st.one_of(st.sampled_from(SESSIONS), st.from_regex(SESSION_RE), texts())


@st.composite
def chat_messages(draw: st.DrawFn) -> llm_pb2.ChatMessage:
    m = llm_pb2.ChatMessage(
        role=llm_pb2.MessageRole.ValueType(
            draw(st.sampled_from([0, 1, 2, 2, 2, 3, 4, 5, -1, 1000]))
        ),
        content=draw(st.one_of(st.sampled_from(PROMPTS), texts())),
    )
    if draw(st.integers(0, 9)) == 0:
        m.tool_calls.add(call_id="c1", name="echo_text", raw_arguments="{}")
    if draw(st.booleans()):
        m.tool_call_id, m.name = draw(texts(20)), draw(texts(20))
    return m


@st.composite
def chat_requests(draw: st.DrawFn) -> llm_pb2.ChatRequest:
    r = llm_pb2.ChatRequest(
        session_id=draw(session_ids),
        role=draw(st.one_of(st.just(""), st.sampled_from([*ROLES, "nope"]), texts())),
        messages=draw(st.lists(chat_messages(), max_size=3)),
        provider=draw(
            st.one_of(st.sampled_from(["", "", "offline", "openai", "gemini", "OFFLINE"]), texts())
        ),
        model=draw(st.one_of(st.just(""), texts())),
        max_tool_rounds=draw(st.one_of(st.integers(0, 40), st.integers(-(2**31), 2**31 - 1))),
    )
    if draw(st.booleans()):
        r.temperature = draw(floats())
    return r


def broken_rules(r: llm_pb2.ChatRequest, prefix: str = "") -> set[str]:
    """Fields breaking a rule stated in llm.proto (an oracle independent of the code)."""
    bad = set()
    if not is_valid(SESSION_RE, r.session_id):
        bad.add("session_id")
    if r.role and r.role not in ROLES:
        bad.add("role")
    if not r.messages:
        bad.add("messages")
    for i, m in enumerate(r.messages):
        if m.role not in (0, SYSTEM, USER, ASSISTANT):
            bad.add(f"messages[{i}].role")
        if m.tool_calls:
            bad.add(f"messages[{i}].tool_calls")
        if not m.content.strip():
            bad.add(f"messages[{i}].content")
    if r.provider not in ("", "offline", "openai", "gemini"):
        bad.add("provider")
    if r.HasField("temperature") and not (math.isfinite(r.temperature) and 0 <= r.temperature <= 2):
        bad.add("temperature")
    if not 0 <= r.max_tool_rounds <= 32:
        bad.add("max_tool_rounds")
    if len(r.model) > 128:
        bad.add("model")
    return {prefix + f for f in bad}


def check_turn(out: Outcome, r: llm_pb2.ChatRequest, request: Any, prefix: str = "") -> None:
    check_status(out, {OK, INVALID, FAILED_PRECONDITION}, request)
    if request.ByteSize() > LIMIT:
        return
    expected = broken_rules(r, prefix)
    if expected:
        assert out.code == INVALID, f"accepted a request breaking {expected}: {out}"
        assert out.fields == expected, (expected, out.violations)
    elif r.provider in ("openai", "gemini"):
        assert out.code == FAILED_PRECONDITION, out
        assert "key" in out.details.lower(), out.details
    else:
        assert out.code == OK, f"refused a valid request: {out}"


def check_records(reply: llm_pb2.ChatResponse) -> None:
    assert reply.provider == "offline" and reply.message.role == ASSISTANT
    for record in reply.tool_calls:
        assert record.call.call_id and record.call.name
        if record.result.is_error:
            assert record.result.error.strip()
            assert_no_traceback(record.result.error, record.call.name)
        if record.call.name == "sleep_later":
            assert record.task_id.startswith("task_") and not record.result.is_error


# -- Chat / ChatStream ----------------------------------------------------------


@FUZZ
@given(r=chat_requests())
@example(r=llm_pb2.ChatRequest(session_id="s1\n", messages=[llm_pb2.ChatMessage(content="hi")]))
@example(
    r=llm_pb2.ChatRequest(
        session_id="s1", role="default\n", messages=[llm_pb2.ChatMessage(content="hi")]
    )
)
def test_chat(world: World, r: llm_pb2.ChatRequest) -> None:
    out = world.rpc("Chat", r)
    check_turn(out, r, r)
    if out.code == OK:
        check_records(out.reply)
        assert out.reply.session_id == r.session_id
        world.model.accepted(r, out.reply)


@settings(FUZZ, max_examples=max(20, EXAMPLES // 2))
@given(r=chat_requests())
def test_chat_stream(world: World, r: llm_pb2.ChatRequest) -> None:
    request = llm_pb2.ChatStreamRequest(request=r)
    out = world.loop.stream(lambda: world.stub.ChatStream(request, timeout=20))
    check_turn(out, r, request, prefix="request.")
    if out.code != OK:
        assert not out.replies
        return
    kinds = [e.WhichOneof("event") for e in out.replies]
    assert kinds[-2:] == ["final", "usage"] and kinds.count("final") == 1, kinds
    final = out.replies[-2].final
    check_records(final)
    deltas = "".join(e.text_delta.text for e in out.replies if e.HasField("text_delta"))
    assert deltas == final.message.content
    started = [
        e.tool_call_started.call.call_id for e in out.replies if e.HasField("tool_call_started")
    ]
    finished = [
        e.tool_call_finished.record.call.call_id
        for e in out.replies
        if e.HasField("tool_call_finished")
    ]
    assert sorted(started) == sorted(finished) == sorted(t.call.call_id for t in final.tool_calls)
    world.model.accepted(r, final)


# -- Subscribe / AckTasks / GetTask / GetHistory ----------------------------------


def known_tasks(world: World) -> list[str]:
    return sorted(world.model.tasks) or ["task_" + "0" * 20]


@settings(FUZZ, max_examples=max(20, EXAMPLES // 2))
@given(session=session_ids, auto_ack=st.booleans())
def test_subscribe(world: World, session: str, auto_ack: bool) -> None:
    request = llm_pb2.SubscribeRequest(session_id=session, auto_ack=auto_ack)
    valid = is_valid(SESSION_RE, session)
    # A valid subscription stays open: read what is there for a moment, then hang up.
    out = world.loop.stream(lambda: world.stub.Subscribe(request, timeout=0.1 if valid else 5))
    check_status(out, {INVALID, DEADLINE}, request)
    assert (out.code == INVALID) == (not valid), out
    ids = [m.task.task_id for m in out.replies]
    assert len(ids) == len(set(ids)), f"a result was sent twice on one stream: {ids}"
    for m in out.replies:
        assert m.task.session_id == session
        assert world.model.tasks.get(m.task.task_id) == session
        assert m.task.status in (llm_pb2.TASK_STATUS_SUCCEEDED, llm_pb2.TASK_STATUS_FAILED)
    if auto_ack:
        world.model.maybe_acked.update(ids)


@FUZZ
@given(data=st.data())
def test_ack_tasks(world: World, data: st.DataObject) -> None:
    session = data.draw(session_ids)
    ids = data.draw(
        st.one_of(
            st.lists(st.one_of(st.sampled_from(known_tasks(world)), texts(30)), max_size=5),
            st.builds(lambda n: [f"task_{i:020d}" for i in range(n)], st.integers(0, 5000)),
        )
    )
    request = llm_pb2.AckTasksRequest(session_id=session, task_ids=ids)
    out = world.rpc("AckTasks", request)
    check_status(out, {OK, INVALID}, request)
    if not is_valid(SESSION_RE, session) or not ids:
        assert out.code == INVALID, out
        return
    assert out.code == OK, out
    mine = {t for t in ids if world.model.tasks.get(t) == session}
    assert 0 <= out.reply.acknowledged <= len(mine)
    world.model.maybe_acked.update(mine)


@FUZZ
@given(data=st.data())
def test_get_task(world: World, data: st.DataObject) -> None:
    task_id = data.draw(st.one_of(st.sampled_from(known_tasks(world)), texts()))
    request = llm_pb2.GetTaskRequest(task_id=task_id)
    out = world.rpc("GetTask", request)
    check_status(out, {OK, INVALID, NOT_FOUND}, request)
    assert (out.code == OK) == (task_id in world.model.tasks), out
    if out.code == OK:
        task = out.reply.task
        assert task.task_id == task_id and task.session_id == world.model.tasks[task_id]
        assert task.tool_name == "sleep_later"
    elif out.code == INVALID:
        assert not task_id


@FUZZ
@given(session=session_ids, limit=st.one_of(st.integers(-5, 10), st.integers(-(2**31), 2**31 - 1)))
@example(session="s1\n", limit=0)
def test_get_history(world: World, session: str, limit: int) -> None:
    request = llm_pb2.GetHistoryRequest(session_id=session, limit=limit)
    out = world.rpc("GetHistory", request)
    check_status(out, {OK, INVALID}, request)
    valid = is_valid(SESSION_RE, session) and limit >= 0
    assert (out.code == OK) == valid, out
    if out.code != OK:
        return
    messages = list(out.reply.messages)
    if limit > 0:
        assert len(messages) <= limit
    if limit == 0:
        assert conversation(messages) == world.model.sessions.get(session, [])


# -- Undecodable requests --------------------------------------------------------

METHODS = service_methods(llm_pb2.DESCRIPTOR.services_by_name["LLMService"])


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
    out = world.loop.run(raw_outcome, world.channels[1], path, payload, streaming, 0.3)
    check_raw(out, path)


# -- Limits and the end of the storm ----------------------------------------------


def test_a_request_over_the_message_limit_is_resource_exhausted(world: World) -> None:
    big = llm_pb2.ChatRequest(
        session_id="big", messages=[llm_pb2.ChatMessage(role=USER, content="x" * (LIMIT + 10))]
    )
    out = world.rpc("Chat", big)
    assert out.code == TOO_BIG and out.details, out
    # Just under the limit: accepted and stored whole.
    r = llm_pb2.ChatRequest(
        session_id="big", messages=[llm_pb2.ChatMessage(role=USER, content="y" * (3 << 20))]
    )
    out = world.rpc("Chat", r)
    assert out.code == OK, out
    world.model.accepted(r, out.reply)
    assert conversation(world.history("big")) == world.model.sessions["big"]
    assert world.loop.run(health_status, world.channels[1]) == "SERVING"


def test_after_the_storm_the_service_is_healthy_and_nothing_was_lost(world: World) -> None:
    for ch in world.channels:
        assert world.loop.run(health_status, ch) == "SERVING"
    # A normal turn still works, tool call included.
    out = world.rpc("Chat", chat("after", "please echo 'still alive'"))
    assert out.code == OK, out
    assert [t.call.name for t in out.reply.tool_calls] == ["echo_text"]
    assert "still alive" in out.reply.message.content
    # Every session holds exactly the accepted turns.
    for session, turns in world.model.sessions.items():
        assert conversation(world.history(session)) == turns, session
    # Every async task of an accepted turn finishes and is delivered once.
    deadline = time.monotonic() + 15
    for task_id in world.model.tasks:
        while True:
            got = world.rpc("GetTask", llm_pb2.GetTaskRequest(task_id=task_id))
            assert got.code == OK, got
            if got.reply.task.status != llm_pb2.TASK_STATUS_RUNNING:
                break
            assert time.monotonic() < deadline, f"task {task_id} never finished"
            time.sleep(0.05)
    by_session: dict[str, set[str]] = {}
    for task_id, session in world.model.tasks.items():
        by_session.setdefault(session, set()).add(task_id)
    for session, tasks in by_session.items():
        request = llm_pb2.SubscribeRequest(session_id=session)
        out = world.loop.stream(functools.partial(world.stub.Subscribe, request, timeout=1))
        assert out.code == DEADLINE, out
        delivered = [m.task.task_id for m in out.replies]
        assert len(delivered) == len(set(delivered)), delivered
        assert set(delivered) <= tasks
        assert tasks <= set(delivered) | world.model.maybe_acked, "a result was lost"
        if delivered:
            ack = world.rpc(
                "AckTasks", llm_pb2.AckTasksRequest(session_id=session, task_ids=delivered)
            )
            assert ack.code == OK and ack.reply.acknowledged == len(delivered), ack
        again = world.loop.stream(functools.partial(world.stub.Subscribe, request, timeout=0.3))
        assert again.code == DEADLINE and not again.replies, "acknowledged results sent again"


def chat(session: str, text: str) -> llm_pb2.ChatRequest:
    return llm_pb2.ChatRequest(session_id=session, messages=[llm_pb2.ChatMessage(content=text)])
