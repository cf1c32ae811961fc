"""Gemini through the official ``google-genai`` SDK.

Tools are offered as function declarations whose parameters are the tools'
JSON Schemas (``parameters_json_schema``); automatic function calling is off,
so the SDK never runs anything: function_call parts become tool calls, and
tool results go back as function_response parts with the same id and name.
Gemini's thought signatures are kept with each call and sent back with it.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncGenerator
from typing import Any

import httpx2
from google import genai
from google.genai import errors, types

from llm_service.messages import Message, ToolCall, parse_tool_content
from llm_service.providers.base import (
    ModelTurn,
    ProviderError,
    ProviderRequest,
    TextChunk,
    http_error,
)
from toolcall.ids import new_call_id
from toolcall.parts import placeholder

SIGNATURE = "gemini_thought_signature"


def _function_call_part(call: ToolCall) -> types.Part:
    try:
        args = json.loads(call.raw_arguments) if call.raw_arguments.strip() else {}
    except json.JSONDecodeError:
        args = None
    if not isinstance(args, dict):
        # The model wrote something that is not a JSON object; replay it as text.
        args = {"_raw_arguments": call.raw_arguments}
    part = types.Part(function_call=types.FunctionCall(id=call.call_id, name=call.name, args=args))
    if sig := call.extra.get(SIGNATURE):
        part.thought_signature = base64.b64decode(sig)
    return part


def _function_response_part(m: Message) -> types.Part:
    value = parse_tool_content(m.content)
    response = value if isinstance(value, dict) else {"output": value}
    return types.Part(
        function_response=types.FunctionResponse(id=m.tool_call_id, name=m.name, response=response)
    )


def _content_parts(m: Message) -> list[types.Part]:
    """A tool message's content parts, to follow its function response in the same
    turn: images and audio as ``inline_data``, text as text, files as a short
    placeholder (never base64 text)."""
    out: list[types.Part] = []
    for p in m.parts:
        media = p.image if p.HasField("image") else p.audio if p.HasField("audio") else None
        if media is not None:
            blob = types.Blob(mime_type=media.mime_type, data=media.data)
            out.append(types.Part(inline_data=blob))
        else:
            out.append(types.Part(text=placeholder(p)))
    return out


def to_gemini_contents(messages: list[Message]) -> tuple[str, list[types.Content]]:
    """System instruction (the leading system messages) and the contents."""
    system: list[str] = []
    i = 0
    while i < len(messages) and messages[i].role == "system":
        system.append(messages[i].content)
        i += 1
    contents: list[types.Content] = []
    for m in messages[i:]:
        extra: list[types.Part] = []
        if m.role == "assistant":
            parts = [types.Part(text=m.content)] if m.content else []
            parts.extend(_function_call_part(c) for c in m.tool_calls)
            contents.append(types.Content(role="model", parts=parts))
            continue
        if m.role == "tool":
            part = _function_response_part(m)
            extra = _content_parts(m)
        elif m.role == "system":
            # Gemini has no mid-conversation system turns; notes (async task
            # results) go in as user text, marked as such.
            part = types.Part(text=f"[system note] {m.content}")
        else:
            part = types.Part(text=m.content)
        last = contents[-1] if contents else None
        # Tool results, notes and user text in a row form one user turn, so
        # user and model turns alternate.
        if last is not None and last.role == "user" and last.parts is not None:
            last.parts.append(part)
            last.parts.extend(extra)
        else:
            contents.append(types.Content(role="user", parts=[part, *extra]))
    return "\n\n".join(system), contents


class GeminiProvider:
    name = "gemini"

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str = "",
        default_model: str,
        timeout_s: float,
        max_retries: int,
    ) -> None:
        self.default_model = default_model
        self._timeout_s = timeout_s
        retry = (
            types.HttpRetryOptions(attempts=max_retries + 1, initial_delay=0.5, max_delay=4.0)
            if max_retries > 0
            else None
        )
        self._client = genai.Client(
            api_key=api_key,
            http_options=types.HttpOptions(
                base_url=base_url or None, timeout=int(timeout_s * 1000), retry_options=retry
            ),
        )

    async def close(self) -> None:
        await self._client.aio.aclose()

    def _config(self, request: ProviderRequest, system: str) -> types.GenerateContentConfig:
        config = types.GenerateContentConfig(
            automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
        )
        if system:
            config.system_instruction = system
        if request.temperature is not None:
            config.temperature = request.temperature
        if request.tools:
            config.tools = [
                types.Tool(
                    function_declarations=[
                        types.FunctionDeclaration(
                            name=t.name,
                            description=t.description,
                            parameters_json_schema=t.parameters,
                        )
                        for t in request.tools
                    ]
                )
            ]
            if request.forced_tool:
                config.tool_config = types.ToolConfig(
                    function_calling_config=types.FunctionCallingConfig(
                        mode=types.FunctionCallingConfigMode.ANY,
                        allowed_function_names=[request.forced_tool],
                    )
                )
            elif request.tool_choice != "auto":
                mode = (
                    types.FunctionCallingConfigMode.NONE
                    if request.tool_choice == "none"
                    else types.FunctionCallingConfigMode.ANY
                )
                config.tool_config = types.ToolConfig(
                    function_calling_config=types.FunctionCallingConfig(mode=mode)
                )
        return config

    async def generate(
        self, request: ProviderRequest
    ) -> AsyncGenerator[TextChunk | ModelTurn, None]:
        system, contents = to_gemini_contents(request.messages)
        config = self._config(request, system)
        models = self._client.aio.models
        try:
            turn = ModelTurn()
            if request.stream:
                stream = await models.generate_content_stream(
                    model=request.model, contents=contents, config=config
                )
                async for chunk in stream:
                    text = _absorb(chunk, turn)
                    if text:
                        yield TextChunk(text)
            else:
                response = await models.generate_content(
                    model=request.model, contents=contents, config=config
                )
                _absorb(response, turn)
            yield turn
        except ProviderError:
            raise
        except errors.APIError as exc:
            raise http_error("gemini", exc.code or 500, exc.message or str(exc)) from None
        except httpx2.TimeoutException:
            raise ProviderError(
                "timeout", f"provider 'gemini' did not answer within {self._timeout_s:g}s"
            ) from None
        except httpx2.TransportError as exc:
            raise ProviderError("unavailable", f"provider 'gemini' is unreachable: {exc}") from None
        except Exception as exc:  # pydantic/JSON errors from a garbled answer
            raise ProviderError(
                "unavailable",
                f"provider 'gemini' returned an unreadable response: {type(exc).__name__}: {exc}",
            ) from None


def _absorb(response: types.GenerateContentResponse, turn: ModelTurn) -> str:
    """Adds one (streamed or whole) response to ``turn``; returns its new text."""
    if response.usage_metadata:
        # Streamed chunks carry running totals, so the last one wins.
        turn.prompt_tokens = response.usage_metadata.prompt_token_count or 0
        turn.completion_tokens = response.usage_metadata.candidates_token_count or 0
    if not response.candidates:
        return ""
    content = response.candidates[0].content
    texts: list[str] = []
    for part in (content.parts if content else None) or []:
        if part.function_call is not None:
            fc = part.function_call
            if not fc.name:
                raise ProviderError(
                    "unavailable", "provider 'gemini' sent a nameless function call"
                )
            extra: dict[str, Any] = {}
            if part.thought_signature:
                extra[SIGNATURE] = base64.b64encode(part.thought_signature).decode()
            turn.tool_calls.append(
                ToolCall(
                    fc.id or new_call_id(),
                    fc.name,
                    json.dumps(fc.args or {}, ensure_ascii=False),
                    extra,
                )
            )
        elif part.text and not part.thought:
            texts.append(part.text)
    text = "".join(texts)
    turn.text += text
    return text
