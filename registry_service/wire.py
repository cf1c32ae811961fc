"""Registry domain objects -> protobuf messages."""

from __future__ import annotations

from google.protobuf import timestamp_pb2

from registry_service.store import Change, Entry
from toolcall.dispatch import ToolStats
from toolcall.v1 import registry_pb2

UPSERTED = registry_pb2.EVENT_TYPE_UPSERTED
REMOVED = registry_pb2.EVENT_TYPE_REMOVED


def tool_stats(stats: ToolStats | None) -> registry_pb2.ToolStats:
    if stats is None:
        return registry_pb2.ToolStats()
    return registry_pb2.ToolStats(
        calls=stats.calls,
        errors=stats.errors,
        mean_latency_ms=stats.mean_ms,
        max_latency_ms=stats.max_ms,
        last_error=stats.last_error,
    )


def registered_tool(entry: Entry, stats: ToolStats | None) -> registry_pb2.RegisteredTool:
    at = timestamp_pb2.Timestamp()
    at.FromNanoseconds(int(entry.registered_at * 1e9))
    return registry_pb2.RegisteredTool(
        tool=entry.definition,
        role=entry.role,
        lease_id=entry.lease_id,
        registered_at=at,
        stats=tool_stats(stats),
    )


def watch_event(
    change: Change, stats: ToolStats | None, instance_id: str
) -> registry_pb2.WatchResponse:
    return registry_pb2.WatchResponse(
        type=REMOVED if change.removed else UPSERTED,
        tool=registered_tool(change.entry, stats),
        reason=change.reason,
        revision=change.revision,
        instance_id=instance_id,
    )
