"""The chat loop with the real ``openai`` SDK against a local OpenAI-format server."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from tests.support.fake_providers import FakeOpenAI, Garbage, HTTPError, Reply, Stall
from tests.support.images import png
from tests.support.llm_env import LLMEnv, fake_openai, llm_env, tool_plugin
from toolcall.errors import bad_request_violations
from toolcall.jsonvalue import from_value
from toolcall.v1 import llm_pb2

__all__ = ["fake_openai", "tool_plugin"]

pytestmark = pytest.mark.anyio

ECHO_PARAMS = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}


@pytest.fixture
async def env(tmp_path: Path, tool_plugin: str, fake_openai: FakeOpenAI) -> AsyncIterator[LLMEnv]:
    async with llm_env(tmp_path, tool_plugin, openai=fake_openai, default_provider="openai") as e:
        yield e


PNG_B64 = base64.b64encode(png(2, 2)).decode()


def tool_messages(body: dict) -> list[dict]:
    return [m for m in body["messages"] if m["role"] == "tool"]


async def test_single_tool_call_round_trip(env: LLMEnv, fake_openai: FakeOpenAI) -> None:
    await env.register("echo_city", parameters=ECHO_PARAMS, description="Echo a city")
    fake_openai.add(
        Reply(tool_calls=[("call_1", "echo_city", '{"city": "Paris"}')]),
        Reply(text="It is sunny in Paris."),
    )
    reply = await env.chat("s1", "Weather in Paris?")

    assert reply.message.content == "It is sunny in Paris."
    assert reply.message.role == llm_pb2.MESSAGE_ROLE_ASSISTANT
    assert reply.provider == "openai"
    assert reply.usage.rounds == 2
    assert reply.usage.prompt_tokens == 22 and reply.usage.completion_tokens == 14
    assert not reply.round_limit_reached
    [record] = reply.tool_calls
    assert record.call.call_id == "call_1" and record.call.name == "echo_city"
    assert not record.result.is_error
    out = from_value(record.result.output)
    assert out["arguments"] == {"city": "Paris"}
    assert out["session_id"] == "s1" and out["role"] == "default"

    first, second = (r.body for r in fake_openai.requests)
    assert first["model"] == "gpt-4o-mini"
    assert [t["function"]["name"] for t in first["tools"]] == ["echo_city"]
    assert first["tools"][0]["function"]["parameters"] == ECHO_PARAMS
    assert first["messages"][0]["role"] == "system"
    assert first["messages"][-1] == {"role": "user", "content": "Weather in Paris?"}
    # The second request carries the assistant's call and the result with its id.
    assistant = second["messages"][-2]
    assert assistant["tool_calls"][0]["id"] == "call_1"
    [result] = tool_messages(second)
    assert result["tool_call_id"] == "call_1"
    assert json.loads(result["content"])["arguments"] == {"city": "Paris"}
    assert fake_openai.requests[0].headers["authorization"] == "Bearer test-openai-key"


async def test_parallel_tool_calls_run_concurrently(env: LLMEnv, fake_openai: FakeOpenAI) -> None:
    await env.register("sleep_a")
    await env.register("sleep_b")
    fake_openai.add(
        Reply(
            tool_calls=[
                ("c_a", "sleep_a", '{"seconds": 0.5}'),
                ("c_b", "sleep_b", '{"seconds": 0.5}'),
            ]
        ),
        Reply(text="both done"),
    )
    started = time.monotonic()
    reply = await env.chat("par", "sleep twice")
    elapsed = time.monotonic() - started

    assert reply.message.content == "both done"
    assert [r.call.call_id for r in reply.tool_calls] == ["c_a", "c_b"]
    # Sequential would take >= 1.0 s; concurrent ~0.5 s (generous bound for slow CI).
    assert elapsed < 0.95, elapsed
    starts = [from_value(r.result.output)["started"] for r in reply.tool_calls]
    assert abs(starts[0] - starts[1]) < 0.2
    results = tool_messages(fake_openai.requests[1].body)
    assert [m["tool_call_id"] for m in results] == ["c_a", "c_b"]


async def test_max_parallel_tools_bounds_concurrency(
    tmp_path: Path, tool_plugin: str, fake_openai: FakeOpenAI
) -> None:
    async with llm_env(
        tmp_path, tool_plugin, openai=fake_openai, default_provider="openai", max_parallel_tools=1
    ) as env:
        await env.register("sleep_a")
        fake_openai.add(
            Reply(
                tool_calls=[
                    ("c1", "sleep_a", '{"seconds": 0.3}'),
                    ("c2", "sleep_a", '{"seconds": 0.3}'),
                ]
            ),
            Reply(text="ok"),
        )
        started = time.monotonic()
        await env.chat("bounded", "sleep")
        assert time.monotonic() - started >= 0.6


async def test_tool_errors_are_fed_back_to_the_model(env: LLMEnv, fake_openai: FakeOpenAI) -> None:
    await env.register("fail_tool")
    await env.register("crash_tool")
    fake_openai.add(
        Reply(tool_calls=[("c1", "fail_tool", "{}"), ("c2", "crash_tool", "{}")]),
        Reply(text="Sorry, both tools failed."),
    )
    reply = await env.chat("errs", "try them")

    assert reply.message.content == "Sorry, both tools failed."
    fail, crash = reply.tool_calls
    assert fail.result.is_error and fail.result.error == "boom"
    assert crash.result.is_error and crash.result.error.startswith("INTERNAL:")
    assert "plugin crashed" in crash.result.error
    fed = {
        m["tool_call_id"]: json.loads(m["content"])
        for m in tool_messages(fake_openai.requests[1].body)
    }
    assert fed["c1"] == {"error": "boom"}
    assert "plugin crashed" in fed["c2"]["error"]


async def test_an_error_result_reaches_the_model_with_the_tools_output(
    env: LLMEnv, fake_openai: FakeOpenAI
) -> None:
    # Before: {"error": "CITY_NOT_FOUND"} only; the tool's detail was dropped.
    await env.register("refuse_city", parameters=ECHO_PARAMS)
    fake_openai.add(
        Reply(tool_calls=[("c1", "refuse_city", '{"city": "Pariss"}')]),
        Reply(text="Did you mean Paris?"),
    )
    reply = await env.chat("refused", "weather in Pariss")
    [record] = reply.tool_calls
    assert record.result.is_error and record.result.error == "CITY_NOT_FOUND"
    [fed] = tool_messages(fake_openai.requests[1].body)
    assert fed.keys() == {"role", "tool_call_id", "content"} and fed["tool_call_id"] == "c1"
    # JSON text (the output's keys in no fixed order: it crossed gRPC as a Struct).
    assert json.loads(fed["content"]) == {
        "error": "CITY_NOT_FOUND",
        "output": {"city": "Pariss", "did_you_mean": ["Paris"]},
    }
    assert fed["content"].startswith('{"error":"CITY_NOT_FOUND","output":{')


async def test_malformed_arguments_and_schema_violations(
    env: LLMEnv, fake_openai: FakeOpenAI
) -> None:
    await env.register("echo_city", parameters=ECHO_PARAMS)
    await env.register("echo_raw", accepts_raw_arguments=True)
    fake_openai.add(
        Reply(
            tool_calls=[
                ("bad_json", "echo_city", '{"city": "Par'),
                ("bad_schema", "echo_city", '{"city": 42}'),
                ("raw_ok", "echo_raw", "city=Paris"),
            ]
        ),
        Reply(text="recovered"),
    )
    reply = await env.chat("malformed", "go")

    assert reply.message.content == "recovered"
    bad_json, bad_schema, raw_ok = reply.tool_calls
    assert bad_json.result.is_error
    assert bad_json.result.error.startswith("INVALID_ARGUMENT: arguments are not valid JSON")
    assert bad_schema.result.is_error and "arguments.city" in bad_schema.result.error
    assert not raw_ok.result.is_error
    assert from_value(raw_ok.result.output)["raw_arguments"] == "city=Paris"
    # The model saw the raw (invalid) arguments it wrote, and the error.
    second = fake_openai.requests[1].body
    assert second["messages"][-4]["tool_calls"][0]["function"]["arguments"] == '{"city": "Par'
    assert "not valid JSON" in json.loads(tool_messages(second)[0]["content"])["error"]


async def test_unknown_tool_lists_available_ones(env: LLMEnv, fake_openai: FakeOpenAI) -> None:
    await env.register("echo_city", parameters=ECHO_PARAMS)
    fake_openai.add(Reply(tool_calls=[("c1", "nope", "{}")]), Reply(text="ok"))
    reply = await env.chat("unknown", "go")
    [record] = reply.tool_calls
    assert record.result.is_error
    assert record.result.error == "unknown tool 'nope'; available: echo_city"


async def test_round_limit_stops_the_loop(env: LLMEnv, fake_openai: FakeOpenAI) -> None:
    await env.register("echo_city", parameters=ECHO_PARAMS)
    for i in range(3):
        fake_openai.add(Reply(tool_calls=[(f"c{i}", "echo_city", '{"city": "Rome"}')]))
    reply = await env.chat("loop", "forever", max_tool_rounds=2)

    assert reply.round_limit_reached
    assert reply.message.content == "Stopped after 2 tool rounds without a final answer."
    assert len(reply.tool_calls) == 2 and reply.usage.rounds == 3
    assert len(fake_openai.requests) == 3
    # The unexecuted third call is not stored: the next turn's history stays valid.
    history = await env.history("loop")
    assert [m.role for m in history][-1] == llm_pb2.MESSAGE_ROLE_ASSISTANT
    calls = [c.call_id for m in history for c in m.tool_calls]
    results = [m.tool_call_id for m in history if m.role == llm_pb2.MESSAGE_ROLE_TOOL]
    assert calls == results == ["c0", "c1"]


async def test_stream_events_in_order(env: LLMEnv, fake_openai: FakeOpenAI) -> None:
    await env.register("echo_city", parameters=ECHO_PARAMS)
    await env.register("sleep_a")
    fake_openai.add(
        Reply(
            text="Checking.",
            tool_calls=[
                ("c_sleep", "sleep_a", '{"seconds": 0.3}'),
                ("c_echo", "echo_city", '{"city": "Oslo"}'),
            ],
        ),
        Reply(text="Oslo is cold."),
    )
    events = await env.stream("stream", "Oslo?")
    kinds = [e.WhichOneof("event") for e in events]

    assert kinds[-2:] == ["final", "usage"]
    started = [e.tool_call_started.call.call_id for e in events if e.HasField("tool_call_started")]
    finished = [
        e.tool_call_finished.record.call.call_id for e in events if e.HasField("tool_call_finished")
    ]
    assert started == ["c_sleep", "c_echo"]
    assert finished == ["c_echo", "c_sleep"]  # as they finish, the fast one first
    assert kinds.index("tool_call_started") < kinds.index("tool_call_finished")
    text = "".join(e.text_delta.text for e in events if e.HasField("text_delta"))
    assert text == "Checking.Oslo is cold."
    # Deltas arrive in pieces (the fake splits every text in two).
    assert sum(1 for k in kinds if k == "text_delta") >= 4
    final = events[-2].final
    assert final.message.content == "Oslo is cold."
    assert [r.call.call_id for r in final.tool_calls] == ["c_sleep", "c_echo"]
    assert events[-1].usage.rounds == 2 and events[-1].usage.prompt_tokens == 22
    # The SDK streamed the call with its arguments split across chunks.
    assert fake_openai.requests[0].body["stream"] is True
    assert fake_openai.requests[0].body["stream_options"] == {"include_usage": True}
    assert json.loads(tool_messages(fake_openai.requests[1].body)[1]["content"])["arguments"] == {
        "city": "Oslo"
    }


async def test_dotted_tool_names_are_aliased_for_openai(
    env: LLMEnv, fake_openai: FakeOpenAI
) -> None:
    await env.register("echo.city", parameters=ECHO_PARAMS)
    fake_openai.add(Reply(tool_calls=[("c1", "echo_city", '{"city": "Bern"}')]), Reply(text="ok"))
    reply = await env.chat("dots", "go")
    assert fake_openai.requests[0].body["tools"][0]["function"]["name"] == "echo_city"
    assert reply.tool_calls[0].call.name == "echo.city"
    assert not reply.tool_calls[0].result.is_error


async def test_history_is_sent_on_the_next_turn(env: LLMEnv, fake_openai: FakeOpenAI) -> None:
    await env.register("echo_city", parameters=ECHO_PARAMS)
    fake_openai.add(
        Reply(tool_calls=[("c1", "echo_city", '{"city": "Lima"}')]),
        Reply(text="first answer"),
        Reply(text="second answer"),
    )
    await env.chat("multi", "first")
    await env.chat("multi", "second")
    sent = fake_openai.requests[2].body["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "tool", "assistant", "user"]
    assert sent[3]["tool_call_id"] == "c1" and sent[4]["content"] == "first answer"
    history = await env.history("multi")
    assert len(history) == 6
    assert all(m.created_at.seconds > 0 for m in history)


@pytest.mark.parametrize(
    ("scripted", "code", "fragment"),
    [
        (HTTPError(500, {"error": {"message": "upstream exploded"}}), "UNAVAILABLE", "HTTP 500"),
        (HTTPError(401, {"error": {"message": "bad key"}}), "UNAUTHENTICATED", "bad key"),
        (HTTPError(429, {"error": {"message": "slow down"}}), "RESOURCE_EXHAUSTED", "slow down"),
        (HTTPError(404, {"error": {"message": "no such model"}}), "INVALID_ARGUMENT", "model"),
        (Garbage(), "UNAVAILABLE", "unreadable"),
    ],
)
async def test_provider_errors_map_to_status_and_keep_history(
    env: LLMEnv, fake_openai: FakeOpenAI, scripted, code: str, fragment: str
) -> None:
    fake_openai.add(Reply(text="hello"))
    await env.chat("err", "first")
    fake_openai.add(scripted)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await env.chat("err", "second")
    assert err.value.code().name == code
    assert fragment in err.value.details()
    assert "Traceback" not in err.value.details()
    # The failed turn left no trace; the next turn continues normally.
    assert [m.content for m in await env.history("err")] == ["first", "hello"]
    fake_openai.add(Reply(text="back"))
    assert (await env.chat("err", "third")).message.content == "back"
    assert [m.content for m in await env.history("err")] == ["first", "hello", "third", "back"]


async def test_provider_timeout_is_deadline_exceeded(
    tmp_path: Path, tool_plugin: str, fake_openai: FakeOpenAI
) -> None:
    async with llm_env(
        tmp_path, tool_plugin, openai=fake_openai, default_provider="openai", provider_timeout_s=0.5
    ) as env:
        fake_openai.add(Stall(1.5))
        started = time.monotonic()
        for stream in (False, True):
            if stream:
                fake_openai.add(Stall(1.5))
            with pytest.raises(grpc.aio.AioRpcError) as err:
                if stream:
                    await env.stream("slow", "hi")
                else:
                    await env.chat("slow", "hi")
            assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert "did not answer within 0.5s" in err.value.details()
        assert time.monotonic() - started < 3
        assert await env.history("slow") == []


async def test_missing_key_is_failed_precondition(
    tmp_path: Path, tool_plugin: str, fake_openai: FakeOpenAI
) -> None:
    async with llm_env(
        tmp_path, tool_plugin, openai=fake_openai, openai_api_key="", gemini_api_key=""
    ) as env:
        for provider, var in (
            ("openai", "TOOLCALL_OPENAI_API_KEY"),
            ("gemini", "TOOLCALL_GEMINI_API_KEY"),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await env.chat("nokey", "hi", provider=provider)
            assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert var in err.value.details()
        assert fake_openai.requests == []


async def test_model_and_temperature_are_passed(env: LLMEnv, fake_openai: FakeOpenAI) -> None:
    fake_openai.add(Reply(text="hi"))
    reply = await env.chat("opts", "hi", model="my-model", temperature=0.25)
    body = fake_openai.requests[0].body
    assert body["model"] == "my-model" and body["temperature"] == 0.25
    assert reply.model == "my-model"
    assert "tools" not in body  # no tools registered: none offered


async def test_concurrent_turns_of_one_session_do_not_interleave(
    env: LLMEnv, fake_openai: FakeOpenAI
) -> None:
    fake_openai.add(Reply(text="one", delay_s=0.2), Reply(text="two"))
    await asyncio.gather(env.chat("same", "a"), env.chat("same", "b"))
    roles = [m.role for m in await env.history("same")]
    assert roles == [llm_pb2.MESSAGE_ROLE_USER, llm_pb2.MESSAGE_ROLE_ASSISTANT] * 2


async def test_cancelled_turn_releases_the_session_and_stores_nothing(
    env: LLMEnv, fake_openai: FakeOpenAI
) -> None:
    await env.register("sleep_a")
    fake_openai.add(Reply(tool_calls=[("c1", "sleep_a", '{"seconds": 5}')]))
    call = env.stub.ChatStream(llm_pb2.ChatStreamRequest(request=env.request("cancel", "sleep")))
    first = await call.read()
    assert isinstance(first, llm_pb2.ChatStreamResponse) and first.HasField("tool_call_started")
    call.cancel()
    fake_openai.add(Reply(text="after"))
    started = time.monotonic()
    reply = await env.chat("cancel", "next")
    assert reply.message.content == "after"
    assert time.monotonic() - started < 2  # the cancelled turn let go of the session
    assert [m.content for m in await env.history("cancel")] == ["next", "after"]


async def test_only_the_newest_history_is_sent(
    tmp_path: Path, tool_plugin: str, fake_openai: FakeOpenAI
) -> None:
    async with llm_env(
        tmp_path, tool_plugin, openai=fake_openai, default_provider="openai", max_history_messages=3
    ) as env:
        await env.register("echo_x")
        fake_openai.add(
            Reply(text="a1"),
            Reply(tool_calls=[("c1", "echo_x", "{}")]),
            Reply(text="a2"),
            Reply(text="a3"),
        )
        await env.chat("trim", "u1")
        await env.chat("trim", "u2")  # u2, call, result, a2
        await env.chat("trim", "u3")
        sent = fake_openai.requests[-1].body["messages"]
        # The newest 3 stored would start with a tool result: it is dropped too.
        assert [(m["role"], m.get("content")) for m in sent] == [
            ("system", sent[0]["content"]),
            ("assistant", "a2"),
            ("user", "u3"),
        ]
        assert len(await env.history("trim")) == 8  # the store keeps everything


async def test_slow_tool_times_out_as_an_error_result(env: LLMEnv, fake_openai: FakeOpenAI) -> None:
    await env.register("sleep_slow", timeout_s=0.3)
    fake_openai.add(Reply(tool_calls=[("c1", "sleep_slow", '{"seconds": 2}')]), Reply(text="late"))
    started = time.monotonic()
    reply = await env.chat("slowtool", "go")
    assert time.monotonic() - started < 1.5
    [record] = reply.tool_calls
    assert record.result.is_error
    assert record.result.error.startswith("DEADLINE_EXCEEDED: plugin for tool 'sleep_slow'")
    assert reply.message.content == "late"


async def test_a_tool_chatting_in_its_own_session_is_refused_at_once(
    env: LLMEnv, fake_openai: FakeOpenAI
) -> None:
    await env.register("chat_back", timeout_s=20)
    own = json.dumps({"address": env.llm.target})
    other = json.dumps({"address": env.llm.target, "session": "elsewhere"})
    fake_openai.add(
        Reply(tool_calls=[("c1", "chat_back", own)]),
        Reply(text="done"),
        Reply(tool_calls=[("c2", "chat_back", other)]),
        Reply(text="nested answer"),  # the tool's own chat, in another session
        Reply(text="done again"),
    )
    started = time.monotonic()
    reply = await env.chat("me", "ask yourself")
    # Far below the tool's 20 s timeout, which it used to wait out.
    assert time.monotonic() - started < 10
    [record] = reply.tool_calls
    out = from_value(record.result.output)
    assert out["code"] == "FAILED_PRECONDITION", out
    assert "session 'me' is in a turn waiting on its tool calls (chat_back)" in out["details"]
    assert reply.message.content == "done"

    # Another session is fine, and so is this one once the turn has ended.
    reply = await env.chat("me", "ask another session")
    assert from_value(reply.tool_calls[0].result.output) == {
        "code": "OK",
        "answer": "nested answer",
    }
    assert [m.content for m in await env.history("elsewhere")] == ["from a tool", "nested answer"]


async def test_images_reach_openai_as_image_url_parts_in_a_user_message_naming_the_call(
    env: LLMEnv, fake_openai: FakeOpenAI
) -> None:
    # A tool message holds text only: the image follows the round's tool
    # messages in a user message, as a data URL, after a line naming the call.
    await env.register("image_chart")
    fake_openai.add(
        Reply(tool_calls=[("c1", "image_chart", "{}"), ("c2", "echo_x", "{}")]),
        Reply(text="A rising line."),
        Reply(text="Still rising."),
    )
    await env.register("echo_x")
    reply = await env.chat("img", "show the chart")
    chart = next(r for r in reply.tool_calls if r.call.name == "image_chart")
    assert [p.WhichOneof("kind") for p in chart.result.parts] == ["text", "image", "resource"]
    sent = fake_openai.requests[1].body["messages"]
    assert [m["role"] for m in sent[-4:]] == ["assistant", "tool", "tool", "user"]
    assert json.loads(sent[-3]["content"]) == {"chart": "weekly"}
    assert sent[-1] == {
        "role": "user",
        "content": [
            {"type": "text", "text": "Content returned by tool call c1 (image_chart):"},
            {"type": "text", "text": "a weekly chart"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64," + PNG_B64}},
            {"type": "text", "text": "[file: chart.csv, file:///tmp/chart.csv, text/csv]"},
        ],
    }
    # The history keeps the parts: GetHistory returns them, the next turn replays them.
    tool = next(m for m in await env.history("img") if m.tool_call_id == "c1")
    assert tool.parts[1].image.data == png(2, 2) and tool.parts[0].text == "a weekly chart"
    await env.chat("img", "and now?")
    replayed = fake_openai.requests[2].body["messages"]
    assert replayed[[m["role"] for m in replayed].index("tool") + 2] == sent[-1]


async def test_a_model_without_image_input_gets_a_placeholder_never_base64(
    tmp_path: Path, tool_plugin: str, fake_openai: FakeOpenAI
) -> None:
    async with llm_env(
        tmp_path,
        tool_plugin,
        openai=fake_openai,
        default_provider="openai",
        openai_image_input=False,
    ) as env:
        await env.register("image_chart")
        fake_openai.add(Reply(tool_calls=[("c1", "image_chart", "{}")]), Reply(text="ok"))
        await env.chat("noimg", "show the chart")
    body = fake_openai.requests[1].body
    assert body["messages"][-1] == {
        "role": "user",
        "content": "Content returned by tool call c1 (image_chart):\n"
        "a weekly chart\n"
        f"[image: image/png, {len(png(2, 2))} bytes, not shown]\n"
        "[file: chart.csv, file:///tmp/chart.csv, text/csv]",
    }
    assert PNG_B64 not in json.dumps(body)


async def test_the_history_keeps_parts_up_to_its_cap_and_says_what_it_left_out(
    tmp_path: Path, tool_plugin: str, fake_openai: FakeOpenAI
) -> None:
    async with llm_env(
        tmp_path,
        tool_plugin,
        openai=fake_openai,
        default_provider="openai",
        history_part_bytes=1000,
    ) as env:
        await env.register("image_big")
        fake_openai.add(Reply(tool_calls=[("c1", "image_big", '{"noise": 40}')]), Reply(text="ok"))
        await env.chat("cap", "show it")
        # The turn's own request had the image; the history keeps a note of it.
        first = fake_openai.requests[1].body["messages"][-1]["content"]
        assert first[2]["type"] == "image_url"
        [tool] = [m for m in await env.history("cap") if m.tool_call_id == "c1"]
        assert [p.WhichOneof("kind") for p in tool.parts] == ["text", "text", "resource"]
        assert tool.parts[1].text.startswith("[image: image/png, ")
        assert tool.parts[1].text.endswith(" bytes, not shown] (not kept in the history)")


async def test_tool_choice_parallel_calls_and_allowed_tools_map_to_openai(
    env: LLMEnv, fake_openai: FakeOpenAI
) -> None:
    await env.register("echo_city", parameters=ECHO_PARAMS)
    await env.register("echo_other")
    await env.register("fail_tool")
    fake_openai.add(
        Reply(
            tool_calls=[
                ("c1", "echo_city", '{"city": "Oslo"}'),
                ("c2", "echo_city", '{"city": "Rome"}'),
            ]
        ),
        Reply(text="Oslo it is."),
    )
    reply = await env.chat(
        "choice",
        "weather?",
        tool_choice=llm_pb2.ToolChoice(name="echo_city"),
        parallel_tool_calls=False,
        allowed_tools=["echo_city", "echo_other"],
    )
    first, second = (r.body for r in fake_openai.requests)
    assert first["tool_choice"] == {"type": "function", "function": {"name": "echo_city"}}
    assert first["parallel_tool_calls"] is False
    assert sorted(t["function"]["name"] for t in first["tools"]) == ["echo_city", "echo_other"]
    # The forced choice holds for the first round only: the model may answer now.
    assert "tool_choice" not in second and second["parallel_tool_calls"] is False
    # Parallel calls off: the answer's second call was not run.
    ran, skipped = reply.tool_calls
    assert not ran.result.is_error
    assert skipped.result.is_error
    assert skipped.result.error.startswith("FAILED_PRECONDITION: one tool call per answer")
    fed = {m["tool_call_id"]: json.loads(m["content"]) for m in tool_messages(second)}
    assert fed["c2"]["error"].startswith("FAILED_PRECONDITION")

    fake_openai.add(Reply(text="No tools."))
    mode = llm_pb2.ToolChoice(mode=llm_pb2.TOOL_CHOICE_MODE_NONE)
    await env.chat("choice2", "weather?", tool_choice=mode)
    none = fake_openai.requests[2].body
    assert none["tool_choice"] == "none" and "parallel_tool_calls" not in none


async def test_allowed_tools_and_a_named_tool_the_role_lacks_are_invalid_argument(
    env: LLMEnv,
) -> None:
    await env.register("echo_city", parameters=ECHO_PARAMS)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await env.chat(
            "bad",
            "hi",
            allowed_tools=["echo_city", "no_such"],
            tool_choice=llm_pb2.ToolChoice(name="ghost"),
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_request_violations(err.value) == [
        ("allowed_tools[1]", "role 'default' has no tool 'no_such'"),
        ("tool_choice.name", "role 'default' has no tool 'ghost'"),
    ]


async def test_images_past_the_request_bound_are_named_instead_of_failing_the_turn(
    tmp_path: Path, tool_plugin: str, fake_openai: FakeOpenAI
) -> None:
    # Three ~4.8 KB images in one answer against a 12 KB request bound.
    # Before: the turn failed with INVALID_ARGUMENT and stored nothing.
    async with llm_env(
        tmp_path,
        tool_plugin,
        openai=fake_openai,
        default_provider="openai",
        max_request_bytes=12_000,
    ) as env:
        await env.register("image_big")
        calls = [(f"c{i}", "image_big", '{"noise": 40}') for i in range(3)]
        fake_openai.add(Reply(tool_calls=calls), Reply(text="three charts"))
        reply = await env.chat("shed", "three charts please")
        assert reply.message.content == "three charts"
        content = fake_openai.requests[1].body["messages"][-1]["content"]
        kinds = [c["type"] for c in content]
        # c0's image (the oldest) is named; c1's and c2's are sent.
        assert kinds.count("image_url") == 2
        named = [c["text"] for c in content if "left out" in c.get("text", "")]
        assert len(named) == 1 and named[0].startswith("[image: image/png, ")
        assert content.index({"type": "text", "text": named[0]}) < kinds.index("image_url")
