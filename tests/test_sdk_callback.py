"""The SDK's ToolCallback server, called over real gRPC on loopback (no registry needed).

The plugins here point at a registry address nobody listens on: registration
keeps retrying in the background, which must not disturb serving calls.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import logging
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from pydantic import BaseModel

from plugin_stub import CallContext, File, Image, Plugin, ToolConflictError, ToolError, llm_tool
from tests.support.images import png
from tests.support.lag import loop_lag
from toolcall.clients import channel
from toolcall.jsonvalue import from_value, to_struct
from toolcall.v1 import callback_pb2, callback_pb2_grpc, tools_pb2

NOWHERE = "127.0.0.1:9"  # discard port: nothing listens there


class Shape(enum.Enum):
    CIRCLE = "circle"
    SQUARE = "square"


class Temperature(BaseModel):
    city: str
    temp_c: float


@dataclasses.dataclass
class Spot:
    x: float
    label: str = "here"


class Probe(Plugin):
    """Tools that exercise every result and deadline rule."""

    def __init__(self, **kwargs: Any) -> None:
        self.cancelled = asyncio.Event()
        self.handler_ran = False
        self.threads: set[str] = set()
        super().__init__(registry_address=NOWHERE, **kwargs)

    @llm_tool
    def echo(self, text: str, times: int = 1) -> str:
        """Repeat a text."""
        self.handler_ran = True
        return text * times

    @llm_tool
    def plain_values(self, kind: str) -> Any:
        return {"none": None, "list": [1, "a", True], "number": 2.5, "tuple": (1, 2)}[kind]

    @llm_tool
    def error_dict(self) -> dict[str, Any]:
        return {"output": {"reason": "city not found"}, "is_error": True, "error": "CITY_NOT_FOUND"}

    @llm_tool
    def ok_envelope(self) -> dict[str, Any]:
        return {"output": [1, 2], "is_error": False}

    @llm_tool
    def error_without_message(self) -> dict[str, Any]:
        return {"output": None, "is_error": True}

    @llm_tool
    async def boom(self) -> None:
        raise KeyError("missing thing")

    @llm_tool
    async def refuse(self) -> None:
        """Refuses every call, as a tool does with an unknown city."""
        raise ToolError("no such city", output={"known": ["Paris"]})

    @llm_tool
    def not_json(self) -> Any:
        return {"when": object()}

    @llm_tool(timeout=0.3)
    async def slow_async(self) -> str:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return "finished"

    @llm_tool(timeout=0.3)
    def slow_sync(self) -> str:
        time.sleep(1.0)
        return "late"

    @llm_tool(timeout=30)
    async def waits_for_caller(self) -> str:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        return "finished"

    @llm_tool
    def half_second(self, label: str) -> str:
        self.threads.add(threading.current_thread().name)
        time.sleep(0.5)
        return label

    @llm_tool
    async def fast(self) -> str:
        return "fast"

    @llm_tool
    def who_calls(self, ctx: CallContext, x: int = 0) -> dict[str, Any]:
        return {"tool": ctx.tool, "call_id": ctx.call_id, "session": ctx.session_id, "x": x}

    @llm_tool
    def tagged(self, tags: set[str]) -> int:
        self.handler_ran = True
        return len(tags)

    @llm_tool
    def huge_output(self) -> Any:
        return {"n": 10**400}

    @llm_tool
    def parts(self, kind: str) -> Any:
        return {
            "image_and_json": [{"days": 7}, Image(png(2, 2)), "note"],
            "image_only": Image(png()),
            "file": File(uri="file:///tmp/report.pdf", mime_type="application/pdf", name="r.pdf"),
            "model": Temperature(city="Oslo", temp_c=3.5),
            "dataclass": Spot(1.5),
            "envelope": {
                "output": {"n": 1},
                "is_error": True,
                "error": "bad",
                "parts": [Image(png())],
            },
        }[kind]

    @llm_tool
    def describe(self, spot: Spot, reading: Temperature | None = None) -> str:
        assert isinstance(spot, Spot)
        assert reading is None or isinstance(reading, Temperature)
        return f"{spot.label} at {spot.x}" + (f", {reading.temp_c} °C" if reading else "")

    @llm_tool
    def refuse_spot(self) -> None:
        raise ToolError("off the map", output=Spot(-1.0))

    @llm_tool
    def area(self, shape: Shape, size: float) -> dict[str, Any]:
        assert isinstance(shape, Shape)
        return {"shape": shape.value, "area": size * size * (3.0 if shape is Shape.CIRCLE else 1)}


@pytest.fixture
async def probe() -> AsyncIterator[Probe]:
    plugin = Probe()
    async with plugin:
        yield plugin


@pytest.fixture
async def stub(probe: Probe) -> AsyncIterator[callback_pb2_grpc.ToolCallbackAsyncStub]:
    async with channel(probe.address) as ch:
        yield callback_pb2_grpc.ToolCallbackStub(ch)


async def call(
    stub: callback_pb2_grpc.ToolCallbackAsyncStub,
    name: str,
    arguments: dict[str, Any] | None = None,
    **kwargs: Any,
) -> callback_pb2.ToolCallbackInvokeResponse:
    request = callback_pb2.ToolCallbackInvokeRequest(name=name, arguments=to_struct(arguments))
    return await stub.Invoke(request, **kwargs)


@pytest.mark.anyio
async def test_plain_return_values_become_output(stub: Any) -> None:
    reply = await call(stub, "echo", {"text": "ab", "times": 2})
    assert (from_value(reply.output), reply.is_error, reply.error) == ("abab", False, "")
    expected = {"none": None, "list": [1, "a", True], "number": 2.5, "tuple": [1, 2]}
    for kind, value in expected.items():
        reply = await call(stub, "plain_values", {"kind": kind})
        assert not reply.is_error
        assert from_value(reply.output) == value


@pytest.mark.anyio
async def test_result_envelopes(stub: Any) -> None:
    reply = await call(stub, "error_dict")
    assert reply.is_error and reply.error == "CITY_NOT_FOUND"
    assert from_value(reply.output) == {"reason": "city not found"}
    reply = await call(stub, "ok_envelope")
    assert not reply.is_error and from_value(reply.output) == [1, 2]
    reply = await call(stub, "error_without_message")
    assert reply.is_error and reply.error == "tool reported an error without a message"


@pytest.mark.anyio
async def test_raised_exception_is_an_error_result_and_plugin_keeps_serving(stub: Any) -> None:
    reply = await call(stub, "boom")
    assert reply.is_error
    assert reply.error == "KeyError: 'missing thing'"
    assert "Traceback" not in reply.error
    reply = await call(stub, "echo", {"text": "still here"})
    assert from_value(reply.output) == "still here"


@pytest.mark.anyio
async def test_a_tool_error_is_its_message_and_output_and_logs_no_traceback(
    stub: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="plugin_stub"):
        reply = await call(stub, "refuse")
        await call(stub, "boom")
    assert (reply.is_error, reply.error) == (True, "no such city")
    assert from_value(reply.output) == {"known": ["Paris"]}
    expected, unexpected = (
        [
            r
            for r in caplog.records
            if r.name == "plugin_stub.callback_server" and name in r.getMessage()
        ]
        for name in ("refuse", "boom")
    )
    assert [(r.levelno, r.exc_info) for r in expected] == [(logging.INFO, None)]
    assert [r.levelno for r in unexpected] == [logging.WARNING] and unexpected[0].exc_info


@pytest.mark.anyio
async def test_non_json_result_is_an_error(stub: Any) -> None:
    reply = await call(stub, "not_json")
    assert reply.is_error
    assert reply.error == "TypeError: result is not JSON serializable (dict)"


@pytest.mark.anyio
async def test_arguments_failing_the_schema_never_reach_the_handler(
    probe: Probe, stub: Any
) -> None:
    for bad in ({}, {"text": 5}, {"text": "x", "times": "two"}, {"text": "x", "color": "red"}):
        reply = await call(stub, "echo", bad)
        assert reply.is_error, bad
        assert reply.error.startswith("INVALID_ARGUMENT: arguments"), reply.error
    assert not probe.handler_ran


@pytest.mark.anyio
async def test_hostile_arguments_are_refused_without_stalling_the_plugin(
    probe: Probe, stub: Any
) -> None:
    # ~50 KB of one-key objects for a set[str]: 17 s of pairwise comparisons before.
    unsortable = {"tags": [{"a": i} for i in range(4000)]}
    async with loop_lag() as lag:
        reply = await call(stub, "tagged", unsortable, timeout=30)
    assert reply.is_error and reply.error.startswith("INVALID_ARGUMENT: arguments")
    assert lag.worst_s < 1.0, lag.worst_s
    for odd in ({"tags": [float("nan")]}, {"tags": ["a"], "x": float("inf")}):
        reply = await call(stub, "tagged", odd)
        assert reply.is_error and reply.error.startswith("INVALID_ARGUMENT: "), reply.error
    assert not probe.handler_ran
    assert from_value((await call(stub, "tagged", {"tags": ["a", "b"]})).output) == 2


@pytest.mark.anyio
async def test_an_output_protobuf_cannot_carry_is_an_error_result(stub: Any) -> None:
    reply = await call(stub, "huge_output")
    assert reply.is_error and reply.error.startswith("ValueError: result cannot be sent")


@pytest.mark.anyio
async def test_unknown_tool_is_not_found(stub: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call(stub, "no_such_tool")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert "no_such_tool" in (info.value.details() or "")


@pytest.mark.anyio
async def test_async_handler_past_its_timeout_is_cancelled(probe: Probe, stub: Any) -> None:
    started = time.monotonic()
    reply = await call(stub, "slow_async")
    elapsed = time.monotonic() - started
    assert reply.is_error
    assert reply.error == "DEADLINE_EXCEEDED: tool 'slow_async' did not finish within 0.3s"
    assert elapsed < 2
    await asyncio.wait_for(probe.cancelled.wait(), 1)


@pytest.mark.anyio
async def test_caller_deadline_cancels_the_handler(probe: Probe, stub: Any) -> None:
    # The plugin stops the handler at the caller's deadline; whichever side
    # notices first answers, the handler is cancelled either way.
    try:
        reply = await call(stub, "waits_for_caller", timeout=0.3)
        assert reply.is_error and reply.error.startswith("DEADLINE_EXCEEDED"), reply
    except grpc.aio.AioRpcError as exc:
        assert exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await asyncio.wait_for(probe.cancelled.wait(), 2)


@pytest.mark.anyio
async def test_caller_cancellation_cancels_the_handler(probe: Probe, stub: Any) -> None:
    pending = stub.Invoke(callback_pb2.ToolCallbackInvokeRequest(name="waits_for_caller"))
    await asyncio.sleep(0.3)
    assert not probe.cancelled.is_set()
    pending.cancel()
    await asyncio.wait_for(probe.cancelled.wait(), 2)


@pytest.mark.anyio
async def test_sync_handler_overrun_answers_at_the_timeout(stub: Any) -> None:
    started = time.monotonic()
    reply = await call(stub, "slow_sync")
    assert reply.is_error
    assert reply.error.startswith("DEADLINE_EXCEEDED: tool 'slow_sync'")
    assert time.monotonic() - started < 0.8


@pytest.mark.anyio
async def test_sync_handlers_do_not_block_the_server(probe: Probe, stub: Any) -> None:
    async def timed(name: str, args: dict[str, Any] | None = None) -> float:
        await call(stub, name, args)
        return time.monotonic() - started

    started = time.monotonic()
    slow1 = asyncio.create_task(timed("half_second", {"label": "a"}))
    slow2 = asyncio.create_task(timed("half_second", {"label": "b"}))
    await asyncio.sleep(0.05)
    fast_elapsed = await timed("fast")
    slow_elapsed = await asyncio.gather(slow1, slow2)
    assert fast_elapsed < 0.3, fast_elapsed
    assert all(0.5 <= t < 0.95 for t in slow_elapsed), slow_elapsed  # ran in parallel
    assert len(probe.threads) == 2
    assert all(name.startswith("tool-probe") for name in probe.threads)


@pytest.mark.anyio
async def test_call_context_is_passed_and_hidden_from_the_schema(probe: Probe, stub: Any) -> None:
    tool = next(t for t in probe.list_llm_tools() if t["name"] == "who_calls")
    assert list(tool["parameters"]["properties"]) == ["x"]
    request = callback_pb2.ToolCallbackInvokeRequest(
        name="who_calls", arguments=to_struct({"x": 3}), call_id="c-1", session_id="s-1"
    )
    reply = await stub.Invoke(request)
    assert from_value(reply.output) == {
        "tool": "who_calls",
        "call_id": "c-1",
        "session": "s-1",
        "x": 3,
    }


@pytest.mark.anyio
async def test_enum_arguments_arrive_as_members(stub: Any) -> None:
    reply = await call(stub, "area", {"shape": "circle", "size": 2})
    assert from_value(reply.output) == {"shape": "circle", "area": 12}
    reply = await call(stub, "area", {"shape": "hexagon", "size": 2})
    assert reply.is_error and "INVALID_ARGUMENT" in reply.error


@pytest.mark.anyio
async def test_imperative_register_and_unregister_while_running(probe: Probe, stub: Any) -> None:
    async def shout(text: str) -> str:
        return text.upper()

    info = probe.register_llm_tool("shout", shout, description="Upper-case a text.")
    assert info["parameters"]["required"] == ["text"]
    assert "shout" in [t["name"] for t in probe.list_llm_tools()]
    reply = await call(stub, "shout", {"text": "hey"})
    assert from_value(reply.output) == "HEY"
    with pytest.raises(ToolConflictError, match="'shout' is already registered"):
        probe.register_llm_tool("shout", shout)
    with pytest.raises(ToolConflictError, match="'echo' is already registered"):
        probe.register_llm_tool("echo", shout)
    assert probe.unregister_llm_tool("shout") is True
    assert probe.unregister_llm_tool("shout") is False
    with pytest.raises(grpc.aio.AioRpcError) as exc:
        await call(stub, "shout", {"text": "hey"})
    assert exc.value.code() == grpc.StatusCode.NOT_FOUND


def test_imperative_api_validates_like_the_decorator() -> None:
    plugin = Probe()
    with pytest.raises(ValueError, match="must match"):
        plugin.register_llm_tool("bad name", lambda: None)
    with pytest.raises(ValueError, match="timeout"):
        plugin.register_llm_tool("ok", lambda: None, timeout=301)
    with pytest.raises(TypeError, match="not callable"):
        plugin.register_llm_tool("ok", "not a function", parameters={"type": "object"})  # type: ignore[arg-type]


def test_duplicate_tool_names_in_a_class_fail_at_construction() -> None:
    class Twice(Plugin):
        @llm_tool(name="same")
        def one(self) -> None: ...

        @llm_tool(name="same")
        def two(self) -> None: ...

    with pytest.raises(ToolConflictError, match="'same'"):
        Twice(registry_address=NOWHERE)


@llm_tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@pytest.mark.anyio
async def test_plain_functions_and_plugin_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    class MyFancyTools(Plugin):
        pass

    assert MyFancyTools(registry_address=NOWHERE).plugin_id == "my_fancy_tools"
    assert Probe().source == "plugin:probe"
    monkeypatch.setenv("TOOLCALL_PLUGIN_ID", "from-env")
    assert MyFancyTools(registry_address=NOWHERE).plugin_id == "from-env"
    assert MyFancyTools(registry_address=NOWHERE, plugin_id="explicit").plugin_id == "explicit"
    with pytest.raises(ValueError, match="plugin_id"):
        Plugin(plugin_id="has space")
    with pytest.raises(ValueError, match="not decorated"):
        Plugin(tools=[len])
    plugin = Plugin(plugin_id="math", registry_address=NOWHERE, tools=[add])
    async with plugin:
        async with channel(plugin.address) as ch:
            reply = await call(callback_pb2_grpc.ToolCallbackStub(ch), "add", {"a": 2, "b": 3})
    assert from_value(reply.output) == 5


@pytest.mark.anyio
async def test_unix_socket_listen_address(tmp_path: Any) -> None:
    sock = tmp_path / "plugin.sock"
    plugin = Plugin(
        plugin_id="unixy", registry_address=NOWHERE, address=f"unix:{sock}", tools=[add]
    )
    async with plugin:
        assert plugin.address == f"unix:{sock}"
        async with channel(plugin.address) as ch:
            reply = await call(callback_pb2_grpc.ToolCallbackStub(ch), "add", {"a": 1, "b": 1})
    assert from_value(reply.output) == 2
    assert not plugin.running


@pytest.mark.anyio
async def test_images_files_models_and_dataclasses_become_parts_and_json_output(stub: Any) -> None:
    mixed = await call(stub, "parts", {"kind": "image_and_json"})
    # The parts are the content parts; the other items the output (several: a list).
    assert from_value(mixed.output) == [{"days": 7}, "note"] and not mixed.is_error
    [image] = mixed.parts
    assert image.image.mime_type == "image/png" and image.image.data == png(2, 2)
    only = await call(stub, "parts", {"kind": "image_only"})
    assert from_value(only.output) is None and only.parts[0].image.data == png()
    file = await call(stub, "parts", {"kind": "file"})
    assert file.parts[0].resource == tools_pb2.ResourcePart(
        uri="file:///tmp/report.pdf", mime_type="application/pdf", name="r.pdf"
    )
    model = await call(stub, "parts", {"kind": "model"})
    assert from_value(model.output) == {"city": "Oslo", "temp_c": 3.5} and not model.parts
    dataclass = await call(stub, "parts", {"kind": "dataclass"})
    assert from_value(dataclass.output) == {"x": 1.5, "label": "here"}
    envelope = await call(stub, "parts", {"kind": "envelope"})
    assert envelope.is_error and envelope.error == "bad" and len(envelope.parts) == 1
    refused = await call(stub, "refuse_spot")
    assert refused.is_error and from_value(refused.output) == {"x": -1.0, "label": "here"}


def test_an_image_is_typed_from_its_bytes_or_refused() -> None:
    assert Image(png()).mime_type == "image/png"
    assert Image(b"GIF89a...").mime_type == "image/gif"
    with pytest.raises(ValueError, match="not PNG, JPEG, GIF or WebP"):
        Image(b"<svg/>")
    with pytest.raises(ValueError, match="File needs a uri or data"):
        File()


@pytest.mark.anyio
async def test_dataclass_and_pydantic_arguments_arrive_as_instances(stub: Any) -> None:
    plain = await call(stub, "describe", {"spot": {"x": 2}})
    assert from_value(plain.output) == "here at 2"  # JSON's 2 is an int
    both = await call(
        stub,
        "describe",
        {"spot": {"x": 1.5, "label": "pier"}, "reading": {"city": "O", "temp_c": 4}},
    )
    assert from_value(both.output) == "pier at 1.5, 4.0 °C"
    refused = await call(stub, "describe", {"spot": {"label": "no x"}})
    assert refused.is_error and refused.error.startswith("INVALID_ARGUMENT: arguments.spot")
