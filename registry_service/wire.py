"""Registry domain objects -> protobuf messages."""

from __future__ import annotations

from registry_service.stats import ToolStats
from registry_service.store import Change, Entry
from toolcall.v1 import registry_pb2

UPSERTED = registry_pb2.EVENT_TYPE_UPSERTED
REMOVED = registry_pb2.EVENT_TYPE_REMOVED


def fill_registered_tool(
    out: registry_pb2.RegisteredTool, entry: Entry, stats: ToolStats | None
) -> None:
    """Fills ``out`` in place: building a List reply this way copies each definition once."""
    out.tool.CopyFrom(entry.definition)
    out.role = entry.role
    out.lease_id = entry.lease_id
    out.registered_at.FromNanoseconds(int(entry.registered_at * 1e9))
    if stats is not None:
        s = out.stats
        s.calls = stats.calls
        s.errors = stats.errors
        s.mean_latency_ms = stats.mean_ms
        s.max_latency_ms = stats.max_ms
        s.last_error = stats.last_error
    else:
        out.stats.SetInParent()


def registered_tool(entry: Entry, stats: ToolStats | None) -> registry_pb2.RegisteredTool:
    out = registry_pb2.RegisteredTool()
    fill_registered_tool(out, entry, stats)
    return out


def watch_event(
    change: Change, stats: ToolStats | None, instance_id: str
) -> registry_pb2.WatchResponse:
    event = registry_pb2.WatchResponse(
        type=REMOVED if change.removed else UPSERTED,
        reason=change.reason,
        revision=change.revision,
        instance_id=instance_id,
    )
    fill_registered_tool(event.tool, change.entry, stats)
    return event
