"""``Dispatcher.invoke`` against a real ToolCallback server on loopback.

The plugin is ``tests.support.registry.Plugin`` (echo, sleep, fail,
report_error) in this process, so each test sees what reached it: the
arguments, the deadline, the cancellation. Only the public behaviour is
tested: results, error shapes, deadlines and the output cap.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.support.images import png
from tests.support.plugins import free_port
from tests.support.registry import NUMBER_SCHEMA, Plugin, running_plugin, tool
from toolcall.dispatch import Dispatcher, DispatchLimits
from toolcall.jsonvalue import from_value, to_value
from toolcall.parts import PartLimits
from toolcall.tools import ToolSpec
from toolcall.v1 import callback_pb2, tools_pb2

pytestmark = pytest.mark.anyio


@pytest.fixture
async def plugin() -> AsyncIterator[tuple[Plugin, str]]:
    async with running_plugin() as running:
        yield running


@pytest.fixture
async def dispatcher() -> AsyncIterator[Dispatcher]:
    d = Dispatcher(max_output_bytes=10_000)
    try:
        yield d
    finally:
        await d.close()


def spec(name: str, address: str, **fields: Any) -> ToolSpec:
    return ToolSpec.from_definition(tool(name, address, **fields))


async def test_a_call_reaches_the_plugin_with_its_arguments_and_context(
    plugin: tuple[Plugin, str], dispatcher: Dispatcher
) -> None:
    server, address = plugin
    result = await dispatcher.invoke(
        spec("echo", address, parameters=NUMBER_SCHEMA),
        raw_arguments='{"x": 2}',
        call_id="c1",
        session_id="s1",
        role="support",
    )
    assert not result.is_error, result.error
    assert from_value(result.output) == {"args": {"x": 2}, "raw": '{"x": 2}', "role": "support"}
    seen = server.calls[0].request
    assert (seen.name, seen.call_id, seen.session_id) == ("echo", "c1", "s1")


async def test_parsed_arguments_win_over_the_raw_string(
    plugin: tuple[Plugin, str], dispatcher: Dispatcher
) -> None:
    _, address = plugin
    result = await dispatcher.invoke(
        spec("echo", address), raw_arguments='{"x": 1}', arguments={"x": 3}
    )
    assert from_value(result.output)["args"] == {"x": 3}


async def test_a_call_without_a_call_id_gets_one(
    plugin: tuple[Plugin, str], dispatcher: Dispatcher
) -> None:
    server, address = plugin
    await dispatcher.invoke(spec("echo", address))
    assert server.calls[0].request.call_id


@pytest.mark.parametrize("raw", ["{nope", "[1, 2]", '"text"', "3"])
async def test_arguments_that_are_not_a_json_object_never_reach_the_plugin(
    plugin: tuple[Plugin, str], dispatcher: Dispatcher, raw: str
) -> None:
    server, address = plugin
    result = await dispatcher.invoke(spec("echo", address), raw_arguments=raw)
    assert result.is_error and result.error.startswith("INVALID_ARGUMENT: "), result.error
    assert not server.calls


async def test_a_tool_that_accepts_raw_arguments_gets_the_string_as_is(
    plugin: tuple[Plugin, str], dispatcher: Dispatcher
) -> None:
    server, address = plugin
    result = await dispatcher.invoke(
        spec("echo", address, accepts_raw_arguments=True), raw_arguments="not json"
    )
    assert not result.is_error, result.error
    assert from_value(result.output)["raw"] == "not json"
    assert server.calls[0].request.raw_arguments == "not json"


async def test_arguments_failing_the_schema_never_reach_the_plugin(
    plugin: tuple[Plugin, str], dispatcher: Dispatcher
) -> None:
    server, address = plugin
    echo = spec("echo", address, parameters=NUMBER_SCHEMA)
    for bad in ('{"x": "two"}', "{}", '{"x": 1, "y": 2}'):
        result = await dispatcher.invoke(echo, raw_arguments=bad)
        assert result.is_error and result.error.startswith("INVALID_ARGUMENT: "), result.error
    assert not server.calls


async def test_a_plugin_failure_is_an_error_result_naming_the_tool_and_plugin(
    plugin: tuple[Plugin, str], dispatcher: Dispatcher
) -> None:
    _, address = plugin
    failed = await dispatcher.invoke(spec("fail", address))
    assert failed.is_error and failed.error.startswith("INTERNAL: ")
    assert "'fail'" in failed.error and address in failed.error and "plugin blew up" in failed.error

    reported = await dispatcher.invoke(spec("report_error", address))
    assert reported.is_error and reported.error == "no such city"


async def test_an_unreachable_plugin_is_unavailable_not_a_stall(dispatcher: Dispatcher) -> None:
    address = f"127.0.0.1:{free_port()}"
    result = await dispatcher.invoke(spec("echo", address, timeout_seconds=20))
    assert result.is_error and result.error.startswith("UNAVAILABLE: "), result.error
    assert address in result.error


async def test_the_tools_timeout_is_the_deadline_and_the_plugin_call_is_cancelled(
    plugin: tuple[Plugin, str], dispatcher: Dispatcher
) -> None:
    server, address = plugin
    started = time.monotonic()
    result = await dispatcher.invoke(
        spec("sleep", address, timeout_seconds=0.3), arguments={"seconds": 30}
    )
    elapsed = time.monotonic() - started
    assert result.is_error and result.error.startswith("DEADLINE_EXCEEDED: ")
    assert "0.3s" in result.error and "'sleep'" in result.error
    # The plugin saw the deadline and was cancelled at it; the sleep would take 30 s.
    remaining = server.calls[0].time_remaining
    assert remaining is not None and 0 < remaining <= 0.3 + 0.1  # header rounding
    await asyncio.wait_for(server.calls[0].cancelled.wait(), 10)
    assert elapsed < 15


async def test_the_callers_deadline_shortens_the_tools_timeout_but_never_lengthens_it(
    plugin: tuple[Plugin, str], dispatcher: Dispatcher
) -> None:
    server, address = plugin
    await dispatcher.invoke(spec("echo", address, timeout_seconds=30), timeout_s=0.5)
    await dispatcher.invoke(spec("echo", address, timeout_seconds=1), timeout_s=100)
    shorter, longer = (c.time_remaining for c in server.calls)
    # The grpc-timeout header rounds up a little; 0.1 s of slack, far from 30 s / 100 s.
    assert shorter is not None and shorter <= 0.5 + 0.1
    assert longer is not None and longer <= 1 + 0.1

    result = await dispatcher.invoke(
        spec("sleep", address, timeout_seconds=30), arguments={"seconds": 30}, timeout_s=0.2
    )
    assert result.is_error and result.error.startswith("DEADLINE_EXCEEDED: ")
    assert "0.2s" in result.error


async def test_an_output_above_the_cap_is_a_clear_error(
    plugin: tuple[Plugin, str], dispatcher: Dispatcher
) -> None:
    _, address = plugin
    echo = spec("echo", address)
    small = await dispatcher.invoke(echo, arguments={"text": "x" * 1_000})
    assert not small.is_error, small.error
    big = await dispatcher.invoke(echo, arguments={"text": "x" * 20_000})
    assert big.is_error and big.error.startswith("RESOURCE_EXHAUSTED: ")
    assert "10000 bytes" in big.error and "'echo'" in big.error
    assert from_value(big.output) is None  # nothing of the oversized output is passed on


async def test_cancelling_the_caller_cancels_the_plugin_call(
    plugin: tuple[Plugin, str], dispatcher: Dispatcher
) -> None:
    server, address = plugin
    call = asyncio.create_task(
        dispatcher.invoke(spec("sleep", address, timeout_seconds=30), arguments={"seconds": 30})
    )
    await asyncio.wait_for(server.started.wait(), 10)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await asyncio.wait_for(server.calls[0].cancelled.wait(), 10)


def image(data: bytes, mime_type: str = "image/png") -> tools_pb2.ContentPart:
    return tools_pb2.ContentPart(image=tools_pb2.ImagePart(mime_type=mime_type, data=data))


async def test_an_output_that_breaks_the_output_schema_is_an_error_result_naming_the_path(
    plugin: tuple[Plugin, str], dispatcher: Dispatcher
) -> None:
    server, address = plugin
    schema = {"type": "object", "properties": {"temp": {"type": "number"}}, "required": ["temp"]}
    server.replies["weather"] = callback_pb2.ToolCallbackInvokeResponse(
        output=to_value({"temp": "warm"})
    )
    result = await dispatcher.invoke(spec("weather", address, output_schema=schema))
    assert result.is_error
    assert result.error.startswith("INVALID_ARGUMENT: plugin for tool 'weather'"), result.error
    assert "output_schema: output.temp: 'warm' is not of type 'number'" in result.error
    # The model still sees what the tool said, beside the error.
    assert from_value(result.output) == {"temp": "warm"}


async def test_an_output_matching_the_output_schema_and_an_error_result_pass_unchanged(
    plugin: tuple[Plugin, str], dispatcher: Dispatcher
) -> None:
    server, address = plugin
    schema = {"type": "object", "properties": {"temp": {"type": "number"}}, "required": ["temp"]}
    server.replies["weather"] = callback_pb2.ToolCallbackInvokeResponse(
        output=to_value({"temp": 21.5})
    )
    ok = await dispatcher.invoke(spec("weather", address, output_schema=schema))
    assert not ok.is_error and from_value(ok.output) == {"temp": 21.5}
    # A tool's own error is not held to the schema: its output explains the failure.
    server.replies["weather"] = callback_pb2.ToolCallbackInvokeResponse(
        output=to_value({"city": "Atlantis"}), is_error=True, error="no such city"
    )
    failed = await dispatcher.invoke(spec("weather", address, output_schema=schema))
    assert failed.is_error and failed.error == "no such city"
    assert from_value(failed.output) == {"city": "Atlantis"}


async def test_content_parts_reach_the_caller_beside_the_output(
    plugin: tuple[Plugin, str], dispatcher: Dispatcher
) -> None:
    server, address = plugin
    parts = [
        tools_pb2.ContentPart(text="a chart of the week"),
        image(png(4, 4)),
        tools_pb2.ContentPart(
            audio=tools_pb2.AudioPart(mime_type="audio/wav", data=b"RIFF....WAVE")
        ),
        tools_pb2.ContentPart(
            resource=tools_pb2.ResourcePart(
                uri="file:///tmp/report.pdf", mime_type="application/pdf", name="report.pdf"
            )
        ),
    ]
    server.replies["chart"] = callback_pb2.ToolCallbackInvokeResponse(
        output=to_value({"days": 7}), parts=parts
    )
    result = await dispatcher.invoke(spec("chart", address))
    assert not result.is_error, result.error
    assert from_value(result.output) == {"days": 7}
    assert list(result.parts) == parts


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        ([image(png(40, 40, noise=True))], "RESOURCE_EXHAUSTED: plugin for tool 't' at"),
        ([image(png())] * 3, "returned more than 2 images; the limit is 2 per result"),
        ([tools_pb2.ContentPart(text="x")] * 6, "returned 6 content parts; the limit is 5"),
        ([image(b"GIF89a....")], "content part 0, which is not a PNG image"),
        ([image(png(), "image/svg+xml")], "content part 0, which has mime_type 'image/svg+xml'"),
        ([tools_pb2.ContentPart()], "content part 0, which is empty"),
        (
            [tools_pb2.ContentPart(resource=tools_pb2.ResourcePart(name="x.pdf"))],
            "which is a resource with neither uri nor data",
        ),
        (
            [tools_pb2.ContentPart(audio=tools_pb2.AudioPart(mime_type="video/mp4", data=b"1"))],
            "audio needs audio/<type>",
        ),
    ],
)
async def test_parts_past_a_bound_or_not_what_they_claim_are_a_clear_error_result(
    plugin: tuple[Plugin, str], parts: list[tools_pb2.ContentPart], expected: str
) -> None:
    server, address = plugin
    server.replies["t"] = callback_pb2.ToolCallbackInvokeResponse(
        output=to_value("done"), parts=parts
    )
    limits = PartLimits(max_parts=5, max_images=2, max_part_bytes=1000)
    d = Dispatcher(part_limits=limits)
    try:
        result = await d.invoke(spec("t", address))
    finally:
        await d.close()
    assert result.is_error and expected in result.error, result.error
    assert not result.parts and from_value(result.output) == "done"


async def test_the_part_limits_are_settings_with_the_documented_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    defaults = DispatchLimits.from_env().parts
    assert (defaults.max_parts, defaults.max_images, defaults.max_part_bytes) == (
        16,
        4,
        4 * 1024 * 1024,
    )
    monkeypatch.setenv("TOOLCALL_MAX_RESULT_IMAGES", "1")
    monkeypatch.setenv("TOOLCALL_MAX_PART_BYTES", "0")
    limits = DispatchLimits.from_env()
    assert limits.parts.max_images == 1
    assert "max_part_bytes must be at least 1" in limits.problems()


def test_a_plugin_reply_is_a_tool_result_field_for_field() -> None:
    # The dispatcher decodes the plugin's reply as a ToolResult (no copy of a
    # 1 MiB image): the two messages must stay the same on the wire.
    def fields(message: Any) -> list[tuple[str, int, int, str]]:
        return [
            (f.name, f.number, f.type, f.message_type.full_name if f.message_type else "")
            for f in message.DESCRIPTOR.fields
        ]

    assert fields(callback_pb2.ToolCallbackInvokeResponse) == fields(tools_pb2.ToolResult)


async def test_fields_a_plugin_sends_that_this_version_does_not_know_are_not_passed_on(
    plugin: tuple[Plugin, str], dispatcher: Dispatcher
) -> None:
    server, address = plugin
    reply = callback_pb2.ToolCallbackInvokeResponse(output=to_value({"ok": True}))
    # Field 99, varint 1: what a newer plugin might send.
    server.replies["newer"] = callback_pb2.ToolCallbackInvokeResponse.FromString(
        reply.SerializeToString() + b"\x98\x06\x01"
    )
    result = await dispatcher.invoke(spec("newer", address))
    assert from_value(result.output) == {"ok": True}
    assert result.SerializeToString() == reply.SerializeToString()
