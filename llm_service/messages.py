"""Conversation messages as plain values, shared by history, providers and the loop."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from toolcall.parts import part_size, placeholder
from toolcall.v1 import tools_pb2

Role = Literal["system", "user", "assistant", "tool"]

# The instruction of a follow-up turn (ChatRequest.follow_up_async_results),
# which follows the system note of an async result in the history.
FOLLOW_UP_PROMPT = (
    "An async tool result has just arrived (the note above). Tell the user about it "
    "in one or two sentences, without raw JSON."
)


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
    # Tool messages: the result's content parts (images, audio, files, text).
    parts: list[tools_pb2.ContentPart] = field(default_factory=list)
    # message_bytes() once measured (0: not yet). A message is never changed
    # once made, and every model round weighs the whole history again.
    weight: int = field(default=0, compare=False, repr=False)


# Bytes a message is counted as beyond its text (role, ids, framing): keeps
# many tiny messages from slipping under a byte bound.
MESSAGE_OVERHEAD_BYTES = 64


def message_bytes(m: Message) -> int:
    """What a message weighs against byte bounds: its UTF-8 text plus a fixed overhead."""
    if m.weight:
        return m.weight
    n = MESSAGE_OVERHEAD_BYTES + len(m.content.encode()) + len(m.tool_call_id) + len(m.name)
    for c in m.tool_calls:
        n += 16 + len(c.call_id) + len(c.name) + len(c.raw_arguments.encode())
        n += sum(len(k) + len(v) for k, v in c.extra.items())
    for p in m.parts:
        n += MESSAGE_OVERHEAD_BYTES + part_size(p)
    m.weight = n
    return n


def capped_parts(parts: list[tools_pb2.ContentPart], max_bytes: int) -> list[tools_pb2.ContentPart]:
    """``parts`` as the history keeps them: in order while they fit in ``max_bytes``
    together; each part past that becomes a text part saying what it was."""
    kept: list[tools_pb2.ContentPart] = []
    total = 0
    for p in parts:
        size = part_size(p)
        if total + size <= max_bytes or (p.HasField("text") and size <= 1024):
            kept.append(p)
            total += size
        else:
            kept.append(tools_pb2.ContentPart(text=f"{placeholder(p)} (not kept in the history)"))
    return kept


def tool_result_content(output: Any, error: str | None) -> str:
    """A tool message's content: the output as JSON; on failure ``{"error": ...}``,
    with ``"output"`` beside it when the tool gave one (its detail of the failure:
    what was tried, what is valid). Gemini's function responses use these two keys."""
    if error is None:
        value = output
    elif output is None:
        value = {"error": error}
    else:
        value = {"error": error, "output": output}
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def parse_tool_content(content: str) -> Any:
    """The JSON value of a tool message (the raw text when it is not JSON)."""
    try:
        return json.loads(content)
    except (json.JSONDecodeError, ValueError):
        return content


def trim_history(messages: list[Message], limit: int, max_bytes: int = 0) -> list[Message]:
    """The newest ``limit`` messages (0: all) weighing at most ``max_bytes`` (0: any).

    Oldest messages go first; the result never starts inside a tool-call exchange.
    """
    kept = messages[-limit:] if limit > 0 else messages
    if max_bytes > 0:
        total, first = 0, len(kept)
        while first > 0 and total + (size := message_bytes(kept[first - 1])) <= max_bytes:
            total, first = total + size, first - 1
        kept = kept[first:]
    start = 0
    # A tool result or an assistant message whose results were cut off would
    # be rejected by providers; start at the first plain message instead.
    while start < len(kept) and (kept[start].role == "tool" or kept[start].tool_calls):
        start += 1
    return kept[start:] if start else kept
