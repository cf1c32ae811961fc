"""Conversation messages as plain values, shared by history, providers and the loop."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant", "tool"]


@dataclass(slots=True)
class ToolCall:
    call_id: str
    name: str
    # Exactly what the model produced; may be invalid JSON.
    raw_arguments: str
    # Provider-private data that must be sent back with the call (e.g. Gemini's
    # thought signature), stored with the history but never shown to clients.
    extra: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.call_id, "name": self.name, "args": self.raw_arguments}
        if self.extra:
            out["extra"] = self.extra
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ToolCall:
        return cls(d["id"], d["name"], d.get("args", ""), dict(d.get("extra") or {}))


@dataclass(slots=True)
class Message:
    role: Role
    content: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    # Tool messages: the call answered and the tool's name.
    tool_call_id: str = ""
    name: str = ""
    created_at: float = field(default_factory=time.time)


def tool_result_content(output: Any, error: str | None) -> str:
    """A tool message's content: the output as JSON, or ``{"error": ...}`` on failure."""
    value = {"error": error} if error is not None else output
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def parse_tool_content(content: str) -> Any:
    """The JSON value of a tool message (the raw text when it is not JSON)."""
    try:
        return json.loads(content)
    except (json.JSONDecodeError, ValueError):
        return content


def trim_history(messages: list[Message], limit: int) -> list[Message]:
    """The newest ``limit`` messages (0: all), never starting inside a tool-call exchange."""
    kept = messages[-limit:] if limit > 0 else messages
    start = 0
    # A tool result or an assistant message whose results were cut off would
    # be rejected by providers; start at the first plain message instead.
    while start < len(kept) and (kept[start].role == "tool" or kept[start].tool_calls):
        start += 1
    return kept[start:] if start else kept
