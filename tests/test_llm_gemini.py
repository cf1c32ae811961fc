"""The chat loop with the real ``google-genai`` SDK against a local Gemini-format server."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from llm_service.messages import Message
from llm_service.providers.gemini import SIGNATURE
from tests.support.fake_providers import FakeGemini, Garbage, HTTPError, Reply, Stall
from tests.support.images import png
from tests.support.llm_env import LLMEnv, fake_gemini, llm_env, tool_plugin
from toolcall.jsonvalue import from_value
from toolcall.v1 import llm_pb2

__all__ = ["fake_gemini", "tool_plugin"]

pytestmark = pytest.mark.anyio

PARAMS = {
    "type": "object",
    "properties": {"city": {"type": "string", "description": "City name"}},
    "required": ["city"],
}


@pytest.fixture
async def env(tmp_path: Path, tool_plugin: str, fake_gemini: FakeGemini) -> AsyncIterator[LLMEnv]:
    async with llm_env(tmp_path, tool_plugin, gemini=fake_gemini, default_provider="gemini") as e:
        yield e


def function_responses(body: dict) -> list[dict]:
    return [
        p["functionResponse"]
        for c in body["contents"]
        for p in c["parts"]
        if "functionResponse" in p
    ]


async def test_function_call_round_trip(env: LLMEnv, fake_gemini: FakeGemini) -> None:
    await env.register("echo_city", parameters=PARAMS, description="Echo a city")
    fake_gemini.add(
        Reply(tool_calls=[("", "echo_city", '{"city": "Kyoto"}')]),
        Reply(text="Kyoto is lovely."),
    )
    reply = await env.chat("g1", "Kyoto?")

    assert reply.message.content == "Kyoto is lovely."
    assert reply.provider == "gemini" and reply.model == "gemini-2.5-flash"
    assert reply.usage.rounds == 2 and reply.usage.completion_tokens == 14
    [record] = reply.tool_calls
    assert record.call.call_id  # Gemini sent none: the service made one
    assert from_value(record.result.output)["arguments"] == {"city": "Kyoto"}

    first, second = fake_gemini.requests
    assert first.path.endswith("/models/gemini-2.5-flash:generateContent")
    assert first.headers["x-goog-api-key"] == "test-gemini-key"
    [decl] = first.body["tools"][0]["functionDeclarations"]
    assert decl["name"] == "echo_city" and decl["description"] == "Echo a city"
    # The SDK writes the proto field name; the API accepts it like the camelCase one.
    assert decl.get("parametersJsonSchema", decl.get("parameters_json_schema")) == PARAMS
    assert first.body["systemInstruction"]["parts"][0]["text"]
    assert first.body["contents"] == [{"role": "user", "parts": [{"text": "Kyoto?"}]}]
    # The result goes back as a functionResponse with the call's id and name,
    # after the model's functionCall (with its thought signature) is replayed.
    model_turn = second.body["contents"][1]
    assert model_turn["role"] == "model"
    assert model_turn["parts"][0]["functionCall"]["name"] == "echo_city"
    assert model_turn["parts"][0]["thoughtSignature"] == "c2lnbmF0dXJl"
    [resp] = function_responses(second.body)
    assert resp["id"] == record.call.call_id and resp["name"] == "echo_city"
    assert resp["response"]["arguments"] == {"city": "Kyoto"}

    # The signature is kept in the history for later turns, not shown to clients.
    stored = await env.llm.store.messages("g1")
    assert stored[1].tool_calls[0].extra == {SIGNATURE: base64.b64encode(b"signature").decode()}


async def test_streaming_and_tool_errors(env: LLMEnv, fake_gemini: FakeGemini) -> None:
    await env.register("fail_tool")
    fake_gemini.add(
        Reply(text="Let me try.", tool_calls=[("g_call", "fail_tool", "{}")]),
        Reply(text="The tool failed, sorry."),
    )
    events = await env.stream("g2", "try")
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[-2:] == ["final", "usage"]
    text = "".join(e.text_delta.text for e in events if e.HasField("text_delta"))
    assert text == "Let me try.The tool failed, sorry."
    final = events[-2].final
    assert final.tool_calls[0].call.call_id == "g_call"
    assert final.tool_calls[0].result.error == "boom"
    assert fake_gemini.requests[0].path.endswith(":streamGenerateContent?alt=sse")
    [resp] = function_responses(fake_gemini.requests[1].body)
    assert resp == {"id": "g_call", "name": "fail_tool", "response": {"error": "boom"}}


async def test_an_error_result_reaches_gemini_with_the_tools_output(
    env: LLMEnv, fake_gemini: FakeGemini
) -> None:
    # Gemini's own convention for a function response: "error" and "output" keys.
    await env.register("refuse_city", parameters=PARAMS)
    fake_gemini.add(
        Reply(tool_calls=[("g_call", "refuse_city", '{"city": "Pariss"}')]),
        Reply(text="Did you mean Paris?"),
    )
    await env.chat("g_refused", "weather in Pariss")
    [resp] = function_responses(fake_gemini.requests[1].body)
    assert resp == {
        "id": "g_call",
        "name": "refuse_city",
        "response": {
            "error": "CITY_NOT_FOUND",
            "output": {"city": "Pariss", "did_you_mean": ["Paris"]},
        },
    }


async def test_system_notes_reach_gemini_as_user_text(env: LLMEnv, fake_gemini: FakeGemini) -> None:
    fake_gemini.add(Reply(text="one"), Reply(text="two"))
    await env.chat("g3", "first")
    # What an async task's result looks like in the history.
    await env.llm.store.append("g3", [Message("system", "Result of async task t1 (ping): 1")])
    await env.chat("g3", "second")
    contents = fake_gemini.requests[1].body["contents"]
    assert [c["role"] for c in contents] == ["user", "model", "user"]
    assert contents[-1]["parts"] == [
        {"text": "[system note] Result of async task t1 (ping): 1"},
        {"text": "second"},
    ]


async def test_http_errors(env: LLMEnv, fake_gemini: FakeGemini) -> None:
    fake_gemini.add(
        HTTPError(503, {"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}})
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await env.chat("g4", "hi")
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "overloaded" in err.value.details()
    fake_gemini.add(
        HTTPError(
            403, {"error": {"code": 403, "message": "key invalid", "status": "PERMISSION_DENIED"}}
        )
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await env.stream("g4", "hi")
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert await env.history("g4") == []


async def test_timeout_and_garbage(
    tmp_path: Path, tool_plugin: str, fake_gemini: FakeGemini
) -> None:
    async with llm_env(
        tmp_path, tool_plugin, gemini=fake_gemini, default_provider="gemini", provider_timeout_s=0.5
    ) as env:
        fake_gemini.add(Stall(1.5))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await env.chat("g5", "hi")
        assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "did not answer within 0.5s" in err.value.details()
        fake_gemini.add(Garbage())
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await env.chat("g5", "hi")
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "unreadable" in err.value.details()
        assert await env.history("g5") == []


async def test_images_reach_gemini_as_inline_data_in_the_function_response_turn(
    env: LLMEnv, fake_gemini: FakeGemini
) -> None:
    await env.register("image_chart")
    fake_gemini.add(Reply(tool_calls=[("g1", "image_chart", "{}")]), Reply(text="A line."))
    await env.chat("g_img", "show the chart")
    turn = fake_gemini.requests[1].body["contents"][-1]
    assert turn["role"] == "user"
    assert turn["parts"] == [
        {"functionResponse": {"id": "g1", "name": "image_chart", "response": {"chart": "weekly"}}},
        {"text": "a weekly chart"},
        # As the SDK writes it (the API takes mime_type like mimeType).
        {"inlineData": {"mime_type": "image/png", "data": base64.b64encode(png(2, 2)).decode()}},
        {"text": "[file: chart.csv, file:///tmp/chart.csv, text/csv]"},
    ]


async def test_tool_choice_maps_to_gemini_function_calling_config(
    env: LLMEnv, fake_gemini: FakeGemini
) -> None:
    await env.register("echo_city", parameters=PARAMS)
    await env.register("echo_other")
    fake_gemini.add(
        Reply(tool_calls=[("g1", "echo_city", '{"city": "Oslo"}')]),
        Reply(text="Oslo."),
        Reply(text="None."),
    )
    await env.chat(
        "g_choice",
        "weather?",
        tool_choice=llm_pb2.ToolChoice(name="echo_city"),
        allowed_tools=["echo_city"],
    )
    first, second = (r.body for r in fake_gemini.requests)
    [declared] = first["tools"][0]["functionDeclarations"]
    assert declared["name"] == "echo_city"  # narrowed to allowed_tools
    assert first["toolConfig"] == {
        "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["echo_city"]}
    }
    assert "toolConfig" not in second  # the first round only
    none = llm_pb2.ToolChoice(mode=llm_pb2.TOOL_CHOICE_MODE_NONE)
    await env.chat("g_choice2", "weather?", tool_choice=none)
    assert fake_gemini.requests[2].body["toolConfig"] == {"functionCallingConfig": {"mode": "NONE"}}
