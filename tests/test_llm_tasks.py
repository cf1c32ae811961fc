"""Async tools: acknowledgement, background run, Subscribe, AckTasks, restarts, history."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

import llm_service.tasks as tasks_module
from llm_service.history import HistoryStore, StoreError, TaskRecord
from llm_service.tasks import RESTARTED_ERROR, STOPPED_ERROR
from tests.support.fake_providers import FakeOpenAI, Reply
from tests.support.images import png
from tests.support.llm_env import LLMEnv, fake_openai, history_with_note, llm_env, tool_plugin
from toolcall.jsonvalue import from_value
from toolcall.v1 import llm_pb2, llm_pb2_grpc, tools_pb2

__all__ = ["fake_openai", "tool_plugin"]

pytestmark = pytest.mark.anyio

ASYNC = tools_pb2.TOOL_MODE_ASYNC
ACK = "Sleeping; the result will follow."


@pytest.fixture
async def env(tmp_path: Path, tool_plugin: str, fake_openai: FakeOpenAI) -> AsyncIterator[LLMEnv]:
    async with llm_env(tmp_path, tool_plugin, openai=fake_openai, default_provider="openai") as e:
        await e.register("sleep_bg", mode=ASYNC, ack_message=ACK)
        yield e


async def start_sleep(
    env: LLMEnv, fake: FakeOpenAI, session: str, seconds: float, call_id: str = "c1"
) -> llm_pb2.ChatResponse:
    fake.add(
        Reply(tool_calls=[(call_id, "sleep_bg", f'{{"seconds": {seconds}}}')]),
        Reply(text="Started."),
    )
    return await env.chat(session, "sleep in the background")


async def next_task(stream: grpc.aio.UnaryStreamCall, wait_s: float = 5) -> llm_pb2.Task:
    item = await asyncio.wait_for(stream.read(), wait_s)
    assert isinstance(item, llm_pb2.SubscribeResponse), item
    return item.task


async def wait_finished(env: LLMEnv, task_id: str) -> None:
    for _ in range(400):
        got = await env.stub.GetTask(llm_pb2.GetTaskRequest(task_id=task_id))
        if got.task.status != llm_pb2.TASK_STATUS_RUNNING:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"task {task_id} still running")


async def test_ack_then_result_pushed_and_stored(env: LLMEnv, fake_openai: FakeOpenAI) -> None:
    subscription = env.stub.Subscribe(llm_pb2.SubscribeRequest(session_id="a1"))
    started = time.monotonic()
    reply = await start_sleep(env, fake_openai, "a1", 0.8)
    # The turn did not wait for the tool.
    assert time.monotonic() - started < 0.7
    [record] = reply.tool_calls
    assert record.latency_ms < 300
    assert record.task_id.startswith("task_")
    ack = from_value(record.result.output)
    assert ack == {"status": "accepted", "task_id": record.task_id, "message": ACK}
    # The model got the acknowledgement as the tool result.
    fed = fake_openai.requests[1].body["messages"][-1]
    assert fed["role"] == "tool" and record.task_id in fed["content"]

    running = await env.stub.GetTask(llm_pb2.GetTaskRequest(task_id=record.task_id))
    assert running.task.status == llm_pb2.TASK_STATUS_RUNNING
    assert not running.task.HasField("finished_at")
    assert from_value(running.task.result.output) is None

    task = await next_task(subscription)
    subscription.cancel()
    assert task.task_id == record.task_id and task.session_id == "a1"
    assert task.tool_name == "sleep_bg" and task.call_id == "c1"
    assert task.status == llm_pb2.TASK_STATUS_SUCCEEDED
    assert from_value(task.result.output)["slept"] == 0.8
    assert task.arguments["seconds"] == 0.8
    assert task.finished_at.ToNanoseconds() > task.created_at.ToNanoseconds()

    done = await env.stub.GetTask(llm_pb2.GetTaskRequest(task_id=record.task_id))
    assert done.task.status == llm_pb2.TASK_STATUS_SUCCEEDED
    # The result is in the history, so the next turn's model sees it.
    history = await history_with_note(env, "a1", record.task_id)
    assert history[-1].role == llm_pb2.MESSAGE_ROLE_SYSTEM
    assert history[-1].content.startswith(f"Result of async task {record.task_id} (sleep_bg):")
    fake_openai.add(Reply(text="It slept."))
    await env.chat("a1", "how did it go?")
    sent = fake_openai.requests[2].body["messages"]
    assert sent[-2]["role"] == "system" and record.task_id in sent[-2]["content"]


async def test_late_subscriber_gets_stored_results_until_acked(
    env: LLMEnv, fake_openai: FakeOpenAI
) -> None:
    reply = await start_sleep(env, fake_openai, "a2", 0.05)
    task_id = reply.tool_calls[0].task_id
    for _ in range(100):
        got = await env.stub.GetTask(llm_pb2.GetTaskRequest(task_id=task_id))
        if got.task.status != llm_pb2.TASK_STATUS_RUNNING:
            break
        await asyncio.sleep(0.05)

    # Nobody listened while it finished: each new subscriber gets it until acked.
    for _ in range(2):
        sub = env.stub.Subscribe(llm_pb2.SubscribeRequest(session_id="a2"))
        assert (await next_task(sub)).task_id == task_id
        sub.cancel()
    acked = await env.stub.AckTasks(llm_pb2.AckTasksRequest(session_id="a2", task_ids=[task_id]))
    assert acked.acknowledged == 1
    again = await env.stub.AckTasks(llm_pb2.AckTasksRequest(session_id="a2", task_ids=[task_id]))
    assert again.acknowledged == 0
    wrong = await env.stub.AckTasks(llm_pb2.AckTasksRequest(session_id="zz", task_ids=[task_id]))
    assert wrong.acknowledged == 0

    # After the ack it is never re-sent: the first thing a new subscriber sees
    # is the next task.
    sub = env.stub.Subscribe(llm_pb2.SubscribeRequest(session_id="a2"))
    second = await start_sleep(env, fake_openai, "a2", 0.05, call_id="c2")
    task = await next_task(sub)
    sub.cancel()
    assert task.task_id == second.tool_calls[0].task_id != task_id


async def test_auto_ack_and_several_subscribers(env: LLMEnv, fake_openai: FakeOpenAI) -> None:
    auto = env.stub.Subscribe(llm_pb2.SubscribeRequest(session_id="a3", auto_ack=True))
    plain = env.stub.Subscribe(llm_pb2.SubscribeRequest(session_id="a3"))
    other = env.stub.Subscribe(llm_pb2.SubscribeRequest(session_id="other"))
    reply = await start_sleep(env, fake_openai, "a3", 0.1)
    task_id = reply.tool_calls[0].task_id
    assert (await next_task(auto)).task_id == task_id
    assert (await next_task(plain)).task_id == task_id
    auto.cancel()
    plain.cancel()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(other.read(), 0.3)
    other.cancel()
    # auto_ack acknowledged it: a new subscriber does not get it again.
    acked = await env.stub.AckTasks(llm_pb2.AckTasksRequest(session_id="a3", task_ids=[task_id]))
    assert acked.acknowledged == 0


async def test_async_arguments_are_checked_before_acknowledging(
    env: LLMEnv, fake_openai: FakeOpenAI
) -> None:
    await env.register(
        "sleep_typed",
        mode=ASYNC,
        parameters={
            "type": "object",
            "properties": {"seconds": {"type": "number"}},
            "required": ["seconds"],
        },
    )
    fake_openai.add(
        Reply(tool_calls=[("c1", "sleep_typed", '{"seconds": "x"}'), ("c2", "sleep_typed", "{")]),
        Reply(text="fix it"),
    )
    reply = await env.chat("a4", "go")
    bad_type, bad_json = reply.tool_calls
    assert bad_type.result.is_error and not bad_type.task_id
    assert "arguments.seconds" in bad_type.result.error
    assert bad_json.result.is_error and "not valid JSON" in bad_json.result.error


async def test_failed_async_tool_is_delivered_as_failed(
    env: LLMEnv, fake_openai: FakeOpenAI
) -> None:
    await env.register("fail_bg", mode=ASYNC)
    sub = env.stub.Subscribe(llm_pb2.SubscribeRequest(session_id="a5"))
    fake_openai.add(Reply(tool_calls=[("c1", "fail_bg", "{}")]), Reply(text="ok"))
    reply = await env.chat("a5", "go")
    ack = from_value(reply.tool_calls[0].result.output)
    assert ack["message"].startswith("The task was started")  # the generic acknowledgement
    task = await next_task(sub)
    sub.cancel()
    assert task.status == llm_pb2.TASK_STATUS_FAILED
    assert task.result.is_error and task.result.error == "boom"
    history = await history_with_note(env, "a5", task.task_id)
    assert history[-1].content == f"Async task {task.task_id} (fail_bg) failed: boom"


async def test_get_task_unknown_is_not_found(env: LLMEnv) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await env.stub.GetTask(llm_pb2.GetTaskRequest(task_id="task_nope"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_stop_marks_unfinished_tasks_failed_and_keeps_them(
    tmp_path: Path, tool_plugin: str, fake_openai: FakeOpenAI
) -> None:
    async with llm_env(
        tmp_path, tool_plugin, openai=fake_openai, default_provider="openai", task_grace_s=0.2
    ) as env:
        await env.register("sleep_bg", mode=ASYNC)
        reply = await start_sleep(env, fake_openai, "a6", 30)
        task_id = reply.tool_calls[0].task_id
        sub = env.stub.Subscribe(llm_pb2.SubscribeRequest(session_id="a6"))
        await asyncio.sleep(0.1)
        started = time.monotonic()
        await env.llm.stop()
        assert time.monotonic() - started < 3
        # The service ended the subscription instead of hanging on it.
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for _ in sub:
                pass
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE

    # The next run delivers the failure to a subscriber.
    async with llm_env(tmp_path, tool_plugin) as env2:
        sub = env2.stub.Subscribe(llm_pb2.SubscribeRequest(session_id="a6"))
        task = await next_task(sub)
        sub.cancel()
        assert task.task_id == task_id
        assert task.status == llm_pb2.TASK_STATUS_FAILED and task.result.error == STOPPED_ERROR
        history = await env2.history("a6")
        assert history[-1].content.endswith(f"failed: {STOPPED_ERROR}")


@pytest.mark.sqlite_store  # with replicas: tests/test_llm_replicas.py
async def test_tasks_left_running_by_a_dead_process_fail_at_startup(
    tmp_path: Path, tool_plugin: str
) -> None:
    # What a killed process leaves behind: a task row still marked running.
    store = HistoryStore(tmp_path / "llm.sqlite3")
    await store.open()
    await store.insert_task(
        TaskRecord("task_orphan", "a7", "sleep_bg", "c1", "default", {"seconds": 9}, created_at=1.0)
    )
    await store.close()

    async with llm_env(tmp_path, tool_plugin) as env:
        got = await env.stub.GetTask(llm_pb2.GetTaskRequest(task_id="task_orphan"))
        assert got.task.status == llm_pb2.TASK_STATUS_FAILED
        assert got.task.result.error == RESTARTED_ERROR
        sub = env.stub.Subscribe(llm_pb2.SubscribeRequest(session_id="a7", auto_ack=True))
        assert (await next_task(sub)).task_id == "task_orphan"
        sub.cancel()
        assert (await env.history("a7"))[-1].content.endswith(RESTARTED_ERROR)


async def test_history_survives_a_restart(
    tmp_path: Path, tool_plugin: str, fake_openai: FakeOpenAI
) -> None:
    async with llm_env(tmp_path, tool_plugin, openai=fake_openai, default_provider="openai") as env:
        await env.register("echo_x")
        fake_openai.add(Reply(tool_calls=[("c1", "echo_x", "{}")]), Reply(text="first answer"))
        await env.chat("keep", "remember me")
        before = await env.history("keep")

    async with llm_env(tmp_path, tool_plugin, openai=fake_openai, default_provider="openai") as env:
        after = await env.history("keep")
        assert after == before and len(after) == 4
        assert after[1].tool_calls[0].call_id == "c1"
        fake_openai.add(Reply(text="still here"))
        await env.chat("keep", "again")
        sent = fake_openai.requests[-1].body["messages"]
        assert [m["role"] for m in sent] == [
            "system",
            "user",
            "assistant",
            "tool",
            "assistant",
            "user",
        ]
        limited = await env.stub.GetHistory(llm_pb2.GetHistoryRequest(session_id="keep", limit=2))
        assert [m.content for m in limited.messages] == ["again", "still here"]


async def test_stub_type_is_async(env: LLMEnv) -> None:
    stub: llm_pb2_grpc.LLMServiceAsyncStub = env.stub
    reply = await stub.GetHistory(llm_pb2.GetHistoryRequest(session_id="empty"))
    assert list(reply.messages) == []


async def test_a_subscriber_that_stops_reading_is_dropped_and_loses_nothing(
    tmp_path: Path, tool_plugin: str, fake_openai: FakeOpenAI
) -> None:
    async with llm_env(
        tmp_path,
        tool_plugin,
        openai=fake_openai,
        default_provider="openai",
        subscribe_buffer=8,
    ) as env:
        await env.register("big_bg", mode=ASYNC)
        stalled = env.stub.Subscribe(llm_pb2.SubscribeRequest(session_id="slow"))
        n = 60  # 60 x 300 kB: far more than gRPC and TCP buffer for a stream
        calls = [(f"c{i}", "big_bg", '{"bytes": 300000}') for i in range(n)]
        fake_openai.add(Reply(tool_calls=calls), Reply(text="started"))
        reply = await env.chat("slow", "go")
        task_ids = {r.task_id for r in reply.tool_calls}
        assert len(task_ids) == n and "" not in task_ids
        for task_id in task_ids:  # all finished (and pushed to the stalled stream)
            await wait_finished(env, task_id)

        # The stalled stream got what the transport buffered, then a status.
        got = 0
        with pytest.raises(grpc.aio.AioRpcError) as err:
            while True:
                await next_task(stalled)
                got += 1
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "fell behind" in err.value.details() and "subscribe again" in err.value.details()
        assert got < n

        # A new Subscribe gets every result: none was acknowledged.
        again = env.stub.Subscribe(llm_pb2.SubscribeRequest(session_id="slow", auto_ack=True))
        delivered = {(await next_task(again)).task_id for _ in range(n)}
        again.cancel()
        assert delivered == task_ids


async def test_async_calls_count_against_the_caps_and_over_them_are_error_results(
    tmp_path: Path, tool_plugin: str, fake_openai: FakeOpenAI
) -> None:
    async with llm_env(
        tmp_path,
        tool_plugin,
        openai=fake_openai,
        default_provider="openai",
        max_parallel_tools=4,
        max_async_tasks_per_session=10,
        max_async_tasks=12,
    ) as env:
        await env.register("sleep_bg", mode=ASYNC)
        store = env.llm.store
        inserting, peak = 0, 0
        insert_task = store.insert_task

        async def counted_insert(task: TaskRecord) -> None:
            nonlocal inserting, peak
            inserting += 1
            peak = max(peak, inserting)
            try:
                await insert_task(task)
            finally:
                inserting -= 1

        store.insert_task = counted_insert  # type: ignore[method-assign]
        # One model answer with 200 async calls.
        calls = [(f"c{i}", "sleep_bg", '{"seconds": 3}') for i in range(200)]
        fake_openai.add(Reply(tool_calls=calls), Reply(text="started"))
        reply = await env.chat("many", "go")
        started = [r for r in reply.tool_calls if r.task_id]
        refused = [r for r in reply.tool_calls if r.result.is_error]
        assert len(started) == 10 and len(refused) == 190
        assert "TOOLCALL_MAX_ASYNC_TASKS_PER_SESSION" in refused[0].result.error
        assert refused[0].result.error.startswith("RESOURCE_EXHAUSTED: ")
        assert peak <= 4  # starts ran under the per-chat cap
        assert env.llm.tasks.running("many") == 10

        # The total cap: 2 more fit, then the service is full for every session.
        fake_openai.add(Reply(tool_calls=calls[:5]), Reply(text="started"))
        reply = await env.chat("other", "go")
        assert sum(1 for r in reply.tool_calls if r.task_id) == 2
        errors = [r.result.error for r in reply.tool_calls if r.result.is_error]
        assert len(errors) == 3 and "TOOLCALL_MAX_ASYNC_TASKS)" in errors[0]
        assert env.llm.tasks.running() == 12


async def subscribe_once_a_place_is_free(env: LLMEnv, session: str) -> grpc.aio.UnaryStreamCall:
    """A Subscribe stream that stays open once a cancelled one's place is free (5 s at most)."""
    for _ in range(100):
        call = env.stub.Subscribe(llm_pb2.SubscribeRequest(session_id=session))
        try:
            await asyncio.wait_for(call.read(), 0.2)
        except TimeoutError:
            return call  # open and waiting for results
        except grpc.aio.AioRpcError:
            await asyncio.sleep(0.05)
    raise AssertionError("the cancelled stream's place was never freed")


async def test_subscribe_streams_over_all_sessions_are_bounded(
    env: LLMEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tasks_module, "MAX_SUBSCRIBERS", 3)
    streams = [env.stub.Subscribe(llm_pb2.SubscribeRequest(session_id=f"s{i}")) for i in range(3)]
    for s in streams:
        await s.wait_for_connection()
    extra = env.stub.Subscribe(llm_pb2.SubscribeRequest(session_id="s3"))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await next_task(extra)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "already serves 3 Subscribe streams" in err.value.details()
    streams.pop().cancel()
    (await subscribe_once_a_place_is_free(env, "s3")).cancel()
    for s in streams:
        s.cancel()


async def test_subscribe_streams_per_session_are_bounded(env: LLMEnv) -> None:
    streams = [env.stub.Subscribe(llm_pb2.SubscribeRequest(session_id="many")) for _ in range(16)]
    for s in streams:
        await s.wait_for_connection()
    extra = env.stub.Subscribe(llm_pb2.SubscribeRequest(session_id="many"))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await next_task(extra)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "16 Subscribe streams" in err.value.details()
    streams.pop().cancel()
    (await subscribe_once_a_place_is_free(env, "many")).cancel()
    for s in streams:
        s.cancel()


async def test_an_async_result_keeps_its_content_parts_on_subscribe_and_get_task(
    env: LLMEnv, fake_openai: FakeOpenAI
) -> None:
    # Before: the task stored its output only; the image was lost.
    await env.register("image_bg", mode=ASYNC)
    sub = env.stub.Subscribe(llm_pb2.SubscribeRequest(session_id="a_img"))
    fake_openai.add(Reply(tool_calls=[("c1", "image_bg", "{}")]), Reply(text="ok"))
    await env.chat("a_img", "draw")
    task = await next_task(sub)
    sub.cancel()
    assert [p.WhichOneof("kind") for p in task.result.parts] == ["text", "image", "resource"]
    assert task.result.parts[1].image.data == png(2, 2)
    stored = await env.stub.GetTask(llm_pb2.GetTaskRequest(task_id=task.task_id))
    assert list(stored.task.result.parts) == list(task.result.parts)
    # The history's note names them (a note is text).
    history = await history_with_note(env, "a_img", task.task_id)
    assert history[-1].content == (
        f'Result of async task {task.task_id} (image_bg): {{"chart":"weekly"}} with a weekly '
        f"chart, [image: image/png, {len(png(2, 2))} bytes, not shown], "
        "[file: chart.csv, file:///tmp/chart.csv, text/csv]"
    )


async def test_cancel_task_cancels_the_plugin_call_and_delivers_cancelled(
    env: LLMEnv, fake_openai: FakeOpenAI
) -> None:
    sub = env.stub.Subscribe(llm_pb2.SubscribeRequest(session_id="cancel"))
    reply = await start_sleep(env, fake_openai, "cancel", 30)
    task_id = reply.tool_calls[0].task_id
    started = time.monotonic()
    cancelled = await env.stub.CancelTask(
        llm_pb2.CancelTaskRequest(task_id=task_id, reason="the user\x1b changed\ntheir mind"),
        timeout=10,
    )
    assert time.monotonic() - started < 5  # not the 30 s the call would have taken
    assert cancelled.task.status == llm_pb2.TASK_STATUS_CANCELLED
    error = "CANCELLED: the task was cancelled (CancelTask): the user changed their mind"
    assert cancelled.task.result.is_error and cancelled.task.result.error == error
    pushed = await next_task(sub)
    sub.cancel()
    assert pushed.task_id == task_id and pushed.status == llm_pb2.TASK_STATUS_CANCELLED
    assert env.llm.tasks.running() == 0  # its place is free again
    history = await history_with_note(env, "cancel", task_id)
    assert history[-1].content == f"Async task {task_id} (sleep_bg) was cancelled: {error}"

    # Cancelling it again, an unknown task or none at all: clear statuses.
    for request, code, words in (
        (
            llm_pb2.CancelTaskRequest(task_id=task_id),
            grpc.StatusCode.FAILED_PRECONDITION,
            "CANCELLED",
        ),
        (llm_pb2.CancelTaskRequest(task_id="nope"), grpc.StatusCode.NOT_FOUND, "no task 'nope'"),
        (llm_pb2.CancelTaskRequest(), grpc.StatusCode.INVALID_ARGUMENT, "task_id"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await env.stub.CancelTask(request, timeout=5)
        assert err.value.code() == code and words in (err.value.details() or ""), err.value


async def test_cancelling_a_task_that_finished_is_failed_precondition_naming_its_status(
    env: LLMEnv, fake_openai: FakeOpenAI
) -> None:
    reply = await start_sleep(env, fake_openai, "done", 0.01)
    task_id = reply.tool_calls[0].task_id
    await wait_finished(env, task_id)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await env.stub.CancelTask(llm_pb2.CancelTaskRequest(task_id=task_id), timeout=5)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert err.value.details() == f"task '{task_id}' has already ended (TASK_STATUS_SUCCEEDED)"


async def test_an_async_start_the_database_cannot_take_fails_the_turn_unavailable(
    env: LLMEnv, fake_openai: FakeOpenAI
) -> None:
    # PostgreSQL restarting while a turn starts its task (found by the fault
    # drill): before, the turn went on and stored a tool error "INTERNAL:
    # StoreError" in the history; the client saw a good Chat with a broken call.
    store = env.llm.store
    insert_task = store.insert_task

    async def unavailable(task: TaskRecord) -> None:
        raise StoreError("unavailable", "PostgreSQL: the database system is starting up")

    store.insert_task = unavailable  # type: ignore[method-assign]
    fake_openai.add(Reply(tool_calls=[("c1", "sleep_bg", '{"seconds": 0.1}')]))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await env.chat("down", "sleep in the background")
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "starting up" in err.value.details()
    assert await env.history("down") == []  # nothing of the turn: the client resends it

    store.insert_task = insert_task  # type: ignore[method-assign]
    reply = await start_sleep(env, fake_openai, "down", 0.1)
    assert reply.tool_calls[0].task_id and not reply.tool_calls[0].result.is_error
