"""Translation between protobuf messages and the service's plain values."""

from __future__ import annotations

from typing import Any

from google.protobuf import timestamp_pb2

from llm_service import orchestrator as o
from llm_service.history import TaskRecord
from llm_service.messages import Message, Role, ToolCall
from toolcall import config
from toolcall.jsonvalue import to_struct, to_value
from toolcall.parts import placeholder
from toolcall.v1 import llm_pb2, tools_pb2

ROLE_TO_PROTO: dict[Role, llm_pb2.MessageRole.ValueType] = {
    "system": llm_pb2.MESSAGE_ROLE_SYSTEM,
    "user": llm_pb2.MESSAGE_ROLE_USER,
    "assistant": llm_pb2.MESSAGE_ROLE_ASSISTANT,
    "tool": llm_pb2.MESSAGE_ROLE_TOOL,
}
ROLE_FROM_PROTO: dict[int, Role] = {v: k for k, v in ROLE_TO_PROTO.items()}
ROLE_FROM_PROTO[llm_pb2.MESSAGE_ROLE_UNSPECIFIED] = "user"

TASK_STATUS = {
    "running": llm_pb2.TASK_STATUS_RUNNING,
    "succeeded": llm_pb2.TASK_STATUS_SUCCEEDED,
    "failed": llm_pb2.TASK_STATUS_FAILED,
    "cancelled": llm_pb2.TASK_STATUS_CANCELLED,
}


def timestamp(seconds: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def message_from_proto(m: llm_pb2.ChatMessage) -> Message:
    return Message(role=ROLE_FROM_PROTO[m.role], content=m.content)


def call_to_proto(c: ToolCall) -> llm_pb2.ToolCall:
    return llm_pb2.ToolCall(call_id=c.call_id, name=c.name, raw_arguments=c.raw_arguments)


def message_to_proto(m: Message) -> llm_pb2.ChatMessage:
    return llm_pb2.ChatMessage(
        role=ROLE_TO_PROTO[m.role],
        content=m.content,
        tool_calls=[call_to_proto(c) for c in m.tool_calls],
        tool_call_id=m.tool_call_id,
        name=m.name,
        created_at=timestamp(m.created_at),
        parts=m.parts,
    )


# A reply carrying tool records (ChatResponse, a ToolCallFinished event) stays
# under the message limit: past it, the records' content parts are replaced
# by text parts saying what they were (the history keeps them; GetHistory).
MAX_REPLY_BYTES = config.MAX_MESSAGE_BYTES - 64 * 1024


def _fit(reply: Any, records: Any) -> Any:
    if reply.ByteSize() <= MAX_REPLY_BYTES:
        return reply
    for record in records:
        if record.result.parts:
            said = [
                tools_pb2.ContentPart(text=f"{placeholder(p)} (left out of this reply: too big)")
                for p in record.result.parts
            ]
            del record.result.parts[:]
            record.result.parts.extend(said)
    return reply


def record_to_proto(r: o.ToolCallRecord) -> llm_pb2.ToolCallRecord:
    return llm_pb2.ToolCallRecord(
        call=call_to_proto(r.call), result=r.result, task_id=r.task_id, latency_ms=r.latency_ms
    )


def usage_to_proto(u: o.Usage) -> llm_pb2.Usage:
    return llm_pb2.Usage(
        prompt_tokens=u.prompt_tokens, completion_tokens=u.completion_tokens, rounds=u.rounds
    )


def turn_to_proto(t: o.TurnResult) -> llm_pb2.ChatResponse:
    reply = llm_pb2.ChatResponse(
        session_id=t.session_id,
        message=message_to_proto(t.message),
        tool_calls=[record_to_proto(r) for r in t.records],
        usage=usage_to_proto(t.usage),
        round_limit_reached=t.round_limit_reached,
        provider=t.provider,
        model=t.model,
    )
    return _fit(reply, reply.tool_calls)


def event_to_proto(e: o.Event) -> llm_pb2.ChatStreamResponse:
    if isinstance(e, o.TextDelta):
        return llm_pb2.ChatStreamResponse(text_delta=llm_pb2.TextDelta(text=e.text))
    if isinstance(e, o.ToolCallStarted):
        return llm_pb2.ChatStreamResponse(
            tool_call_started=llm_pb2.ToolCallStarted(call=call_to_proto(e.call))
        )
    if isinstance(e, o.ToolCallFinished):
        event = llm_pb2.ChatStreamResponse(
            tool_call_finished=llm_pb2.ToolCallFinished(record=record_to_proto(e.record))
        )
        return _fit(event, [event.tool_call_finished.record])
    if isinstance(e, o.TurnResult):
        return llm_pb2.ChatStreamResponse(final=turn_to_proto(e))
    return llm_pb2.ChatStreamResponse(usage=usage_to_proto(e))


def task_to_proto(t: TaskRecord) -> llm_pb2.Task:
    task = llm_pb2.Task(
        task_id=t.task_id,
        session_id=t.session_id,
        tool_name=t.tool_name,
        call_id=t.call_id,
        status=TASK_STATUS[t.status],
        created_at=timestamp(t.created_at),
        arguments=to_struct(t.arguments),
    )
    if t.finished:
        task.result.CopyFrom(
            tools_pb2.ToolResult(
                output=to_value(t.output),
                is_error=t.status in ("failed", "cancelled"),
                error=t.error,
                parts=t.parts,
            )
        )
    if t.finished_at is not None:
        task.finished_at.CopyFrom(timestamp(t.finished_at))
    # The token never leaves the service but to the plugin's call.
    task.job_id = t.job_id
    if t.expires_at is not None:
        task.expires_at.CopyFrom(timestamp(t.expires_at))
    if t.follow_up_text:
        task.follow_up.CopyFrom(
            llm_pb2.ChatMessage(role=llm_pb2.MESSAGE_ROLE_ASSISTANT, content=t.follow_up_text)
        )
    if t.progress_at is not None:
        task.progress.message = t.progress_message
        task.progress.updated_at.CopyFrom(timestamp(t.progress_at))
        if t.progress_fraction is not None:
            task.progress.fraction = t.progress_fraction
    return task
