"""OpenAI-compatible chat completions through the official ``openai`` SDK.

Covers OpenAI itself and every server speaking its wire format: GLM, Qwen,
DeepSeek, vLLM, Ollama (``TOOLCALL_OPENAI_BASE_URL``). Streaming assembles
``tool_calls`` deltas by their index and reads usage from the final chunk.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import openai

from llm_service.messages import Message, ToolCall
from llm_service.providers.base import (
    ModelTurn,
    ProviderError,
    ProviderRequest,
    TextChunk,
    http_error,
)
from toolcall.ids import new_call_id
from toolcall.parts import placeholder

# OpenAI function names allow [a-zA-Z0-9_-]; toolcall names may also hold dots.
_NOT_ALLOWED = re.compile(r"[^A-Za-z0-9_-]")


class NameMap:
    """Tool name <-> the name the model sees, unique within one request."""

    def __init__(self, names: list[str]) -> None:
        self.to_model: dict[str, str] = {}
        self.from_model: dict[str, str] = {}
        for name in sorted(names):
            alias = base = _NOT_ALLOWED.sub("_", name)
            n = 2
            while alias in self.from_model:
                suffix = f"_{n}"
                alias, n = base[: 64 - len(suffix)] + suffix, n + 1
            self.to_model[name], self.from_model[alias] = alias, name

    def model_name(self, name: str) -> str:
        return self.to_model.get(name) or _NOT_ALLOWED.sub("_", name)

    def tool_name(self, alias: str) -> str:
        return self.from_model.get(alias, alias)


def parts_message(tool_messages: list[Message], images: bool) -> dict[str, Any]:
    """The user message that follows a round's tool messages with their content
    parts: a tool message holds text only, so images come here, as data-URL
    ``image_url`` parts, each group after a line naming its call. Without
    ``images`` (a model that takes none), and for audio and files, a short
    text placeholder: never base64 in the prompt."""
    content: list[dict[str, Any]] = []
    for m in tool_messages:
        content.append(
            {"type": "text", "text": f"Content returned by tool call {m.tool_call_id} ({m.name}):"}
        )
        for p in m.parts:
            if images and p.HasField("image"):
                data = base64.b64encode(p.image.data).decode()
                url = f"data:{p.image.mime_type};base64,{data}"
                content.append({"type": "image_url", "image_url": {"url": url}})
            else:
                content.append({"type": "text", "text": placeholder(p)})
    if all(c["type"] == "text" for c in content):  # plain text: any server takes it
        return {"role": "user", "content": "\n".join(c["text"] for c in content)}
    return {"role": "user", "content": content}


def to_openai_messages(
    messages: list[Message], names: NameMap, *, images: bool = True
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    # Tool messages of the current run that have content parts.
    with_parts: list[Message] = []
    for m in messages:
        if m.role != "tool" and with_parts:
            out.append(parts_message(with_parts, images))
            with_parts = []
        if m.role == "assistant":
            item: dict[str, Any] = {"role": "assistant", "content": m.content or None}
            if m.tool_calls:
                item["tool_calls"] = [
                    {
                        "id": c.call_id,
                        "type": "function",
                        "function": {
                            "name": names.model_name(c.name),
                            "arguments": c.raw_arguments,
                        },
                    }
                    for c in m.tool_calls
                ]
            out.append(item)
        elif m.role == "tool":
            out.append({"role": "tool", "tool_call_id": m.tool_call_id, "content": m.content})
            if m.parts:
                with_parts.append(m)
        else:
            out.append({"role": m.role, "content": m.content})
    if with_parts:
        out.append(parts_message(with_parts, images))
    return out


class OpenAICompatProvider:
    name = "openai"

    def __init__(
        self,
        *,
        api_key: str,
        base_url: str = "",
        default_model: str,
        timeout_s: float,
        max_retries: int,
        image_input: bool = True,
    ) -> None:
        self.default_model = default_model
        self._image_input = image_input
        self._client = openai.AsyncOpenAI(
            api_key=api_key,
            base_url=base_url or None,
            timeout=timeout_s,
            max_retries=max_retries,
        )
        self._timeout_s = timeout_s

    async def close(self) -> None:
        await self._client.close()

    async def generate(
        self, request: ProviderRequest
    ) -> AsyncGenerator[TextChunk | ModelTurn, None]:
        names = NameMap([t.name for t in request.tools])
        params: dict[str, Any] = {
            "model": request.model,
            "messages": to_openai_messages(request.messages, names, images=self._image_input),
        }
        if request.tools:
            params["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": names.model_name(t.name),
                        "description": t.description,
                        "parameters": t.parameters,
                    },
                }
                for t in request.tools
            ]
            if request.forced_tool:
                params["tool_choice"] = {
                    "type": "function",
                    "function": {"name": names.model_name(request.forced_tool)},
                }
            elif request.tool_choice != "auto":
                params["tool_choice"] = request.tool_choice
            if request.parallel_tool_calls is not None:  # only valid beside tools
                params["parallel_tool_calls"] = request.parallel_tool_calls
        if request.temperature is not None:
            params["temperature"] = request.temperature
        try:
            if request.stream:
                async for item in self._stream(params, names):
                    yield _checked(item)
            else:
                yield _checked(await self._complete(params, names))
        except ProviderError:
            raise
        except openai.APITimeoutError:
            raise ProviderError(
                "timeout", f"provider 'openai' did not answer within {self._timeout_s:g}s"
            ) from None
        except openai.APIConnectionError as exc:
            raise ProviderError(
                "unavailable", f"provider 'openai' is unreachable: {exc.__cause__ or exc}"
            ) from None
        except openai.APIStatusError as exc:
            raise http_error("openai", exc.status_code, _status_detail(exc)) from None
        except Exception as exc:  # pydantic/JSON errors from a garbled answer
            raise ProviderError(
                "unavailable",
                f"provider 'openai' returned an unreadable response: {type(exc).__name__}: {exc}",
            ) from None

    async def _complete(self, params: dict[str, Any], names: NameMap) -> ModelTurn:
        resp = await self._client.chat.completions.create(**params)
        if not resp.choices:
            raise ProviderError("unavailable", "provider 'openai' returned no choices")
        msg = resp.choices[0].message
        turn = ModelTurn(text=msg.content or "")
        for c in msg.tool_calls or []:
            function = getattr(c, "function", None)
            if function is None:  # custom (non-function) tool calls are not offered
                continue
            arguments = function.arguments
            if isinstance(arguments, dict | list):  # some compatible servers send objects
                arguments = json.dumps(arguments)
            turn.tool_calls.append(
                ToolCall(c.id or new_call_id(), names.tool_name(function.name), arguments or "")
            )
        if resp.usage:
            turn.prompt_tokens = resp.usage.prompt_tokens
            turn.completion_tokens = resp.usage.completion_tokens
        return turn

    async def _stream(
        self, params: dict[str, Any], names: NameMap
    ) -> AsyncIterator[TextChunk | ModelTurn]:
        stream = await self._client.chat.completions.create(
            **params, stream=True, stream_options={"include_usage": True}
        )
        text: list[str] = []
        # index -> [call id, name, argument pieces]
        calls: dict[int, list[Any]] = {}
        turn = ModelTurn()
        async with stream:
            async for chunk in stream:
                if chunk.usage:
                    turn.prompt_tokens = chunk.usage.prompt_tokens
                    turn.completion_tokens = chunk.usage.completion_tokens
                if not chunk.choices:
                    continue
                delta = chunk.choices[0].delta
                if delta.content:
                    text.append(delta.content)
                    yield TextChunk(delta.content)
                for i, tc in enumerate(delta.tool_calls or []):
                    slot = calls.setdefault(tc.index if tc.index is not None else i, ["", "", []])
                    if tc.id:
                        slot[0] = tc.id
                    if tc.function and tc.function.name:
                        slot[1] += tc.function.name
                    if tc.function and tc.function.arguments:
                        slot[2].append(tc.function.arguments)
        turn.text = "".join(text)
        for _, (call_id, name, pieces) in sorted(calls.items()):
            if not name:
                raise ProviderError(
                    "unavailable", "provider 'openai' streamed a nameless tool call"
                )
            turn.tool_calls.append(
                ToolCall(call_id or new_call_id(), names.tool_name(name), "".join(pieces))
            )
        yield turn


def _checked(item: TextChunk | ModelTurn) -> TextChunk | ModelTurn:
    """``item`` if its text fields are strings: the SDK does not check a garbled answer.

    Token counts that are not integers are read as 0 (they only feed Usage).
    """
    if isinstance(item, TextChunk):
        strings: list[Any] = [item.text]
    else:
        strings = [item.text, *(v for c in item.tool_calls for v in (c.call_id, c.name))]
        strings += [c.raw_arguments for c in item.tool_calls]
        if type(item.prompt_tokens) is not int:
            item.prompt_tokens = 0
        if type(item.completion_tokens) is not int:
            item.completion_tokens = 0
    if all(type(v) is str for v in strings):
        return item
    raise ProviderError(
        "unavailable",
        "provider 'openai' returned an unreadable response: a field has the wrong type",
    )


def _status_detail(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        return json.dumps(body)[:500]
    return exc.message
