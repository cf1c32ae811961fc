"""What every provider implements, and the errors they raise.

A provider turns a request (messages + tools) into one model round: text
chunks as they come (when streaming), then exactly one ``ModelTurn``. It never
runs tools; the orchestrator does.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Literal, Protocol

from llm_service.messages import Message, ToolCall
from toolcall.tools import ToolSpec

ToolChoice = Literal["auto", "none", "required"]

# How a provider failure is reported to the caller (the servicer maps these to
# gRPC status codes; see docs/llm.md).
ErrorKind = Literal[
    "not_configured",  # FAILED_PRECONDITION: a key or setting is missing
    "unknown_provider",  # INVALID_ARGUMENT
    "rejected",  # INVALID_ARGUMENT: the provider refused the request (HTTP 400/404/422)
    "unauthenticated",  # UNAUTHENTICATED: the provider refused the key (HTTP 401/403)
    "rate_limited",  # RESOURCE_EXHAUSTED: HTTP 429
    "unavailable",  # UNAVAILABLE: connection errors, HTTP 5xx, unreadable answers
    "timeout",  # DEADLINE_EXCEEDED
]


class ProviderError(Exception):
    """A provider could not produce a model round; ``kind`` decides the status code."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind
        self.message = message


@dataclass(slots=True)
class ProviderRequest:
    model: str
    messages: list[Message]
    tools: list[ToolSpec]
    temperature: float | None = None
    stream: bool = False
    # This round: "auto", "none" (call no tool) or "required" (call at least
    # one); ``forced_tool`` (one of ``tools``) wins over it.
    tool_choice: ToolChoice = "auto"
    forced_tool: str = ""
    # False: at most one tool call per answer; None: the provider's default.
    parallel_tool_calls: bool | None = None


@dataclass(slots=True)
class TextChunk:
    """A piece of the model's text, as it streams."""

    text: str


@dataclass(slots=True)
class ModelTurn:
    """One complete model answer: text and/or tool calls, with token counts."""

    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Provider(Protocol):
    name: str
    default_model: str

    def generate(self, request: ProviderRequest) -> AsyncGenerator[TextChunk | ModelTurn, None]:
        """Yields ``TextChunk``s (only when ``request.stream``) then one ``ModelTurn``.

        Raises ``ProviderError`` for every failure.
        """
        ...

    async def close(self) -> None: ...


def http_error_kind(status: int) -> ErrorKind:
    """How a provider's HTTP error status is reported (see ``ErrorKind``)."""
    if status in (401, 403):
        return "unauthenticated"
    if status == 429:
        return "rate_limited"
    if status in (400, 404, 409, 413, 422):
        return "rejected"
    if status in (408, 504):
        return "timeout"
    return "unavailable"


def http_error(provider: str, status: int, detail: str) -> ProviderError:
    detail = " ".join(detail.split())[:500] or "no details"
    return ProviderError(
        http_error_kind(status), f"provider '{provider}' answered HTTP {status}: {detail}"
    )
