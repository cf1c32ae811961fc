"""The SQLite history/task store and history trimming."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from llm_service import orchestrator as o
from llm_service import wire
from llm_service.history import HistoryStore, TaskRecord
from llm_service.messages import Message, ToolCall, trim_history
from tests.support.images import png
from toolcall.v1 import tools_pb2

pytestmark = pytest.mark.anyio


async def open_store(tmp_path: Path) -> HistoryStore:
    store = HistoryStore(tmp_path / "h.sqlite3")
    await store.open()
    return store


async def test_messages_round_trip_and_reopen(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    call = ToolCall("c1", "t", '{"a": 1}', {"sig": "eA=="})
    await store.append(
        "s",
        [
            Message("user", "hi"),
            Message("assistant", "", tool_calls=[call]),
            Message("tool", '{"ok":true}', tool_call_id="c1", name="t"),
        ],
    )
    await store.close()
    store = await open_store(tmp_path)
    got = await store.messages("s")
    assert [m.role for m in got] == ["user", "assistant", "tool"]
    assert got[1].tool_calls == [call]
    assert got[2].tool_call_id == "c1" and got[2].name == "t"
    assert await store.messages("other") == []
    await store.close()


async def test_append_during_a_load_is_not_lost(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    await store.append("s", [Message("user", "one")])
    store._cache.clear()
    for _ in range(20):
        loading = asyncio.create_task(store.recent("s"))
        await asyncio.sleep(0)  # the load is queued on the database thread first
        await store.append("s", [Message("user", "more")])
        await loading
        n = len(await store.recent("s"))
        store._cache.clear()
        assert n == len(await store.messages("s"))  # the cache matches the database
    await store.close()


async def test_task_lifecycle_and_acks(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    t = TaskRecord("t1", "s", "ping", "c1", "default", {"host": "x"}, created_at=1.0)
    await store.insert_task(t)
    assert await store.unacked_results("s") == []  # running: nothing to deliver
    assert await store.ack_tasks("s", ["t1"]) == 0  # running tasks cannot be acked
    t.status, t.output, t.finished_at = "succeeded", {"rtt": [1, 2]}, 2.0
    await store.finish_task(t)
    [pending] = await store.unacked_results("s")
    assert pending.output == {"rtt": [1, 2]} and pending.finished
    assert await store.ack_tasks("s", ["t1", "t1", "nope"]) == 1
    assert await store.unacked_results("s") == []
    got = await store.get_task("t1")
    assert got is not None and got.acked and got.arguments == {"host": "x"}
    assert await store.get_task("nope") is None
    await store.close()


async def test_fail_running_tasks(tmp_path: Path) -> None:
    store = await open_store(tmp_path)
    await store.insert_task(TaskRecord("a", "s", "ping", "c", "r", {}, created_at=1.0))
    done = TaskRecord("b", "s", "ping", "c", "r", {}, created_at=1.0)
    await store.insert_task(done)
    done.status, done.finished_at = "succeeded", 2.0
    await store.finish_task(done)
    [failed] = await store.fail_running_tasks("gone")
    assert failed.task_id == "a" and failed.status == "failed" and failed.error == "gone"
    assert (await store.get_task("b")).status == "succeeded"  # type: ignore[union-attr]
    assert await store.fail_running_tasks("gone") == []
    await store.close()


def test_trim_history_never_starts_inside_a_tool_exchange() -> None:
    msgs = [
        Message("user", "u1"),
        Message("assistant", "", tool_calls=[ToolCall("c", "t", "{}")]),
        Message("tool", "{}", tool_call_id="c", name="t"),
        Message("assistant", "a1"),
        Message("user", "u2"),
    ]
    assert trim_history(msgs, 0) == msgs
    assert trim_history(msgs, 10) == msgs
    assert [m.content for m in trim_history(msgs, 4)] == ["a1", "u2"]
    assert [m.content for m in trim_history(msgs, 3)] == ["a1", "u2"]
    assert [m.content for m in trim_history(msgs, 2)] == ["a1", "u2"]


def image_part(data: bytes) -> tools_pb2.ContentPart:
    return tools_pb2.ContentPart(image=tools_pb2.ImagePart(mime_type="image/png", data=data))


async def test_content_parts_are_stored_capped_per_message_and_reopened(tmp_path: Path) -> None:
    store = HistoryStore(tmp_path / "h.sqlite3", part_bytes=len(png(2, 2)) + 10)
    await store.open()
    small, big = image_part(png(2, 2)), image_part(png(40, 40, noise=True))
    await store.append(
        "s", [Message("tool", "{}", tool_call_id="c1", name="t", parts=[small, big])]
    )
    expected = [
        small,
        tools_pb2.ContentPart(
            text=f"[image: image/png, {len(big.image.data)} bytes, not shown] "
            "(not kept in the history)"
        ),
    ]
    assert (await store.messages("s"))[0].parts == expected  # the cached copy
    await store.close()
    store = await open_store(tmp_path)
    assert (await store.messages("s"))[0].parts == expected  # the file
    await store.close()


async def test_a_database_from_before_content_parts_gains_the_column(tmp_path: Path) -> None:
    path = tmp_path / "h.sqlite3"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT, session_id TEXT NOT NULL,"
        " role TEXT NOT NULL, content TEXT NOT NULL, tool_calls TEXT, tool_call_id TEXT NOT NULL"
        " DEFAULT '', name TEXT NOT NULL DEFAULT '', created_at REAL NOT NULL);"
        "INSERT INTO messages (session_id, role, content, created_at)"
        " VALUES ('s', 'user', 'hi', 1);"
    )
    old.close()
    store = await open_store(tmp_path)
    await store.append(
        "s", [Message("tool", "{}", tool_call_id="c", name="t", parts=[image_part(png())])]
    )
    got = await store.messages("s")
    assert [m.content for m in got] == ["hi", "{}"] and got[0].parts == []
    assert got[1].parts[0].image.data == png()
    await store.close()


def test_a_chat_reply_too_big_for_the_message_limit_names_its_parts_instead() -> None:
    # Two tool results with 3 MB images each: as they are, the ChatResponse
    # would pass the 4 MiB message limit and the whole reply would fail.
    image = image_part(b"\x89PNG\r\n\x1a\n" + bytes(3_000_000))
    records = [
        o.ToolCallRecord(ToolCall(f"c{i}", "shot", "{}"), tools_pb2.ToolResult(parts=[image]))
        for i in range(2)
    ]
    turn = o.TurnResult("s", Message("assistant", "two shots"), records, o.Usage(), False, "p", "m")
    reply = wire.turn_to_proto(turn)
    assert reply.ByteSize() < wire.MAX_REPLY_BYTES
    for record in reply.tool_calls:
        [said] = record.result.parts
        assert said.text == (
            "[image: image/png, 3000008 bytes, not shown] (left out of this reply: too big)"
        )
    # A reply that fits keeps its parts as they are.
    small = o.TurnResult("s", Message("assistant", "one"), records[:1], o.Usage(), False, "p", "m")
    assert wire.turn_to_proto(small).tool_calls[0].result.parts[0] == image
