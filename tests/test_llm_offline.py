"""The offline stand-in provider: its documented rules, and the loop end to end with it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from llm_service.history import TaskRecord
from llm_service.messages import Message, tool_result_content
from llm_service.providers.base import ModelTurn, ProviderRequest, TextChunk
from llm_service.providers.offline import (
    MAX_READ_CHARS,
    TOOLS_OFF_TEXT,
    OfflineProvider,
    fill_arguments,
    pick_tool,
    respond,
    string_argument,
)
from llm_service.tasks import result_note
from tests.support.llm_env import LLMEnv, llm_env, tool_plugin
from toolcall.jsonvalue import from_value, to_struct
from toolcall.tools import ToolSpec
from toolcall.v1 import llm_pb2, tools_pb2

__all__ = ["tool_plugin"]

CITY = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def spec(name: str, description: str = "", parameters: dict[str, Any] | None = None) -> ToolSpec:
    d = tools_pb2.ToolDefinition(name=name, description=description, callback_address="127.0.0.1:9")
    if parameters:
        d.parameters.CopyFrom(to_struct(parameters))
    return ToolSpec.from_definition(d)


WEATHER = spec("get_weather", "Current weather in a city.", CITY)
FORECAST = spec("get_forecast", "Daily forecast for a city.", CITY)
PING = spec(
    "ping",
    "Ping a host (IP address or domain name).",
    {"type": "object", "properties": {"host": {"type": "string"}}, "required": ["host"]},
)
TOOLS = [WEATHER, FORECAST, PING]


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("What is the weather in Paris?", "get_weather"),
        ("What is the weather forecast for Atlantis?", "get_forecast"),  # tie: by name
        ("Please ping example.org", "ping"),
        ("Is the host at 10.0.0.1 reachable? Ping it", "ping"),
        ("Tell me a joke", None),
    ],
)
def test_pick_tool(message: str, expected: str | None) -> None:
    chosen = pick_tool(message, TOOLS)
    assert (chosen.name if chosen else None) == expected


def test_name_words_outweigh_description_words() -> None:
    a = spec("translate", "Say it in another language; also shows the weather.")
    b = spec("weather_now", "Conditions.")
    assert pick_tool("weather please", [a, b]) is b


@pytest.mark.parametrize(
    ("message", "value"),
    [
        ('Look up "San Francisco" now', "San Francisco"),
        ("What is the weather in New York today?", "New York"),
        ("Weather for Paris?", "Paris"),
        ("Is it raining, Tokyo?", "Tokyo"),
        ("Please ping example.org", "example.org"),
        ("ping 127.0.0.1!", "127.0.0.1"),
    ],
)
def test_string_argument_rules(message: str, value: str) -> None:
    assert string_argument(message) == value


def test_fill_arguments_by_type() -> None:
    s = spec(
        "book",
        "",
        {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "nights": {"type": "integer"},
                "price": {"type": "number"},
                "breakfast": {"type": "boolean"},
                "room": {"type": "string", "enum": ["single", "double"]},
                "note": {"type": "string"},
            },
            "required": ["city", "nights", "price", "breakfast", "room"],
        },
    )
    args = fill_arguments(s, "Book a double room in Rome for 3 nights")
    assert args == {"city": "Rome", "nights": 3, "price": 3.0, "breakfast": True, "room": "double"}


async def run(provider: OfflineProvider, request: ProviderRequest) -> tuple[list[str], ModelTurn]:
    chunks: list[str] = []
    turn: ModelTurn | None = None
    async for item in provider.generate(request):
        if isinstance(item, TextChunk):
            chunks.append(item.text)
        else:
            turn = item
    assert turn is not None
    return chunks, turn


@pytest.mark.anyio
async def test_answers_from_results_and_streams_text() -> None:
    provider = OfflineProvider()
    messages = [
        Message("user", "weather in Paris and ping example.org"),
        Message("assistant", "", tool_calls=[]),
        Message("tool", json.dumps({"temp_c": 17}), tool_call_id="a", name="get_weather"),
        Message("tool", json.dumps({"error": "no route"}), tool_call_id="b", name="trace"),
        Message(
            "tool",
            json.dumps({"status": "accepted", "task_id": "task_1", "message": "later"}),
            tool_call_id="c",
            name="ping",
        ),
    ]
    chunks, turn = await run(provider, ProviderRequest("m", messages, TOOLS, stream=True))
    assert turn.text == (
        'get_weather returned: {"temp_c": 17}\n'
        "The tool trace failed: no route\n"
        "Started ping (task task_1); I'll report the result when it arrives."
    )
    assert "".join(chunks) == turn.text and len(chunks) > 5
    assert not turn.tool_calls


@pytest.mark.anyio
async def test_a_result_is_described_with_its_keys_sorted_so_the_answer_is_reproducible() -> None:
    # The result reached the model as a protobuf Struct: its key order is arbitrary.
    result = {"temp_c": 17, "city": "Paris", "wind": {"kph": 9, "dir": "W"}}
    messages = [
        Message("user", "weather in Paris"),
        Message("tool", json.dumps(result), tool_call_id="a", name="get_weather"),
    ]
    _, turn = await run(OfflineProvider(), ProviderRequest("m", messages, TOOLS))
    assert turn.text == (
        'get_weather returned: {"city": "Paris", "temp_c": 17, "wind": {"dir": "W", "kph": 9}}'
    )


@pytest.mark.anyio
async def test_a_failed_result_is_described_with_the_tools_output() -> None:
    content = tool_result_content({"did_you_mean": ["Paris"]}, "CITY_NOT_FOUND")
    messages = [
        Message("user", "weather in Pariss"),
        Message("tool", content, tool_call_id="a", name="get_weather"),
    ]
    _, turn = await run(OfflineProvider(), ProviderRequest("m", messages, TOOLS))
    assert turn.text == (
        'The tool get_weather failed: CITY_NOT_FOUND (output: {"did_you_mean": ["Paris"]})'
    )


@pytest.mark.anyio
async def test_a_result_with_parts_names_them_and_never_shows_their_bytes() -> None:
    image = tools_pb2.ContentPart(
        image=tools_pb2.ImagePart(mime_type="image/png", data=b"\x89PNG..")
    )
    messages = [
        Message("user", "chart please"),
        Message("tool", '{"days":7}', tool_call_id="a", name="chart", parts=[image]),
    ]
    _, turn = await run(OfflineProvider(), ProviderRequest("m", messages, TOOLS))
    assert turn.text == 'chart returned: {"days": 7} with [image: image/png, 6 bytes, not shown]'


def test_a_failed_async_task_note_carries_the_tools_output() -> None:
    task = TaskRecord("t1", "s", "lookup", "c1", "default", {}, status="failed")
    task.error, task.output = "CITY_NOT_FOUND", {"did_you_mean": ["Paris"]}
    assert result_note(task) == (
        'Async task t1 (lookup) failed: CITY_NOT_FOUND; output: {"did_you_mean":["Paris"]}'
    )
    task.output = None
    assert result_note(task) == "Async task t1 (lookup) failed: CITY_NOT_FOUND"


@pytest.mark.anyio
async def test_no_match_lists_tools() -> None:
    _, turn = await run(OfflineProvider(), ProviderRequest("m", [Message("user", "hi")], TOOLS))
    assert "not a language model" in turn.text
    assert "get_forecast (Daily forecast for a city.); get_weather" in turn.text
    _, none = await run(OfflineProvider(), ProviderRequest("m", [Message("user", "hi")], []))
    assert "no tools are available" in none.text


@pytest.fixture
async def env(tmp_path: Path, tool_plugin: str) -> AsyncIterator[LLMEnv]:
    async with llm_env(tmp_path, tool_plugin) as e:
        yield e


@pytest.mark.anyio
async def test_offline_end_to_end_sync_and_async(env: LLMEnv) -> None:
    await env.register("echo_city", parameters=CITY, description="Tell the city back")
    await env.register(
        "sleep_background",
        mode=tools_pb2.TOOL_MODE_ASYNC,
        description="Sleep in the background",
        parameters={"type": "object", "properties": {"seconds": {"type": "number"}}},
        ack_message="Sleeping.",
    )
    sync = await env.chat("off", "Please echo the city for Lisbon")
    assert sync.provider == "offline" and sync.model == "rules-v1"
    [record] = sync.tool_calls
    assert record.call.name == "echo_city"
    assert from_value(record.result.output)["arguments"] == {"city": "Lisbon"}
    assert sync.message.content.startswith("echo_city returned: {")
    assert '"arguments": {"city": "Lisbon"}' in sync.message.content
    assert sync.usage.rounds == 2

    sub = env.stub.Subscribe(llm_pb2.SubscribeRequest(session_id="off", auto_ack=True))
    events = await env.stream("off", "sleep in the background please")
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[:2] == ["tool_call_started", "tool_call_finished"]
    assert kinds[-2:] == ["final", "usage"]
    final = events[-2].final
    task_id = final.tool_calls[0].task_id
    assert final.message.content == (
        f"Started sleep_background (task {task_id}); I'll report the result when it arrives."
    )
    text = "".join(e.text_delta.text for e in events if e.HasField("text_delta"))
    assert text == final.message.content
    pushed = await asyncio.wait_for(sub.read(), 5)
    sub.cancel()
    assert isinstance(pushed, llm_pb2.SubscribeResponse)
    assert pushed.task.task_id == task_id
    assert pushed.task.status == llm_pb2.TASK_STATUS_SUCCEEDED

    nothing = await env.chat("off", "Tell me a joke")
    assert not nothing.tool_calls
    assert "Available tools: echo_city" in nothing.message.content


def test_the_rules_read_a_bounded_prefix_of_a_huge_message() -> None:
    filler = "lorem ipsum " * (MAX_READ_CHARS // 12 + 1)
    tools = [WEATHER, FORECAST]

    def turn(text: str) -> ModelTurn:
        return respond(ProviderRequest("rules-v1", [Message("user", text)], tools))

    # Within the prefix a tool is found; past it (here: after 4 MiB) it is not read.
    assert turn("weather in Paris " + filler).tool_calls[0].name == "get_weather"
    late = filler * 256 + " weather in Paris"
    assert len(late) > 4_000_000 and not turn(late).tool_calls


def test_the_request_tool_choice_wins_over_the_word_rules() -> None:
    said = [Message("user", "What is the weather in Paris?")]
    off = respond(ProviderRequest("m", said, TOOLS, tool_choice="none"))
    assert off.text == TOOLS_OFF_TEXT and not off.tool_calls
    forced = respond(ProviderRequest("m", said, TOOLS, forced_tool="ping"))
    assert [c.name for c in forced.tool_calls] == ["ping"]
    joke = [Message("user", "Tell me a joke")]
    assert not respond(ProviderRequest("m", joke, TOOLS)).tool_calls
    required = respond(ProviderRequest("m", joke, TOOLS, tool_choice="required"))
    assert [c.name for c in required.tool_calls] == ["get_forecast"]  # alphabetically first
