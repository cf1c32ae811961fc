"""Long jobs (issue 14 section 4): accepted async calls, progress, completion, cancel, expiry.

Real parts: a registry and LLMServices in-process on loopback, the plugin a
separate process written with the SDK (tests/support/long_job_plugin.py),
and this test process playing the job's worker (another process holding the
serialized handle) through the SDK's ``Job``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import pickle
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

import llm_service.tasks as tasks_module
from llm_service import LLMServiceHost, LLMSettings
from llm_service.history import TaskRecord
from llm_service.tasks import Subscription
from plugin_stub import Job, JobEnded, JobError
from tests.support.fake_providers import FakeOpenAI, Reply
from tests.support.llm_env import (
    fake_openai,
    llm_env,
    llm_settings,
    running_llm,
    start_test_registry,
    tool_plugin,
    user,
)
from tests.support.plugins import PluginProcess, free_port, wait_for
from tests.support.tls import PRINCIPALS, principals_file
from toolcall.clients import channel
from toolcall.jsonvalue import from_value
from toolcall.v1 import llm_pb2, llm_pb2_grpc, tools_pb2

__all__ = ["fake_openai", "tool_plugin"]

pytestmark = pytest.mark.anyio

SESSION = "jobs"


@dataclasses.dataclass
class Stack:
    settings: LLMSettings
    jobs_dir: Path
    fake: FakeOpenAI


@contextlib.asynccontextmanager
async def stack(tmp_path: Path, fake: FakeOpenAI, **overrides: object) -> AsyncIterator[Stack]:
    """A registry and the SDK plugin process; the LLMService is started by each test."""
    registry = await start_test_registry(tmp_path / "registry.sqlite3")
    jobs_dir = tmp_path / "jobs"
    jobs_dir.mkdir()
    try:
        with PluginProcess(
            "tests.support.long_job_plugin",
            registry.target,
            tmp_path,
            extra_env={"LONG_JOB_DIR": str(jobs_dir)},
        ):
            settings = llm_settings(
                tmp_path,
                registry.target,
                # A fixed port: the job's handle names it, across the restart.
                address=f"127.0.0.1:{free_port()}",
                openai_base_url=fake.base_url,
                default_provider="openai",
                **overrides,
            )
            yield Stack(settings, jobs_dir, fake)
    finally:
        await registry.stop()


@contextlib.asynccontextmanager
async def llm(s: Stack) -> AsyncIterator[tuple[LLMServiceHost, llm_pb2_grpc.LLMServiceAsyncStub]]:
    async with running_llm(s.settings) as host, channel(host.target) as ch:
        for name in ("hold_job", "brief_job", "steps_job"):
            assert await host.view.wait_for("default", name, timeout_s=20), f"{name} not visible"
        yield host, llm_pb2_grpc.LLMServiceStub(ch)


async def call_tool(
    stub: llm_pb2_grpc.LLMServiceAsyncStub,
    fake: FakeOpenAI,
    tool: str,
    arguments: dict[str, object],
    session: str = SESSION,
    metadata: tuple[tuple[str, str], ...] = (),
) -> tools_pb2.ToolResult | str:
    """One turn in which the model calls ``tool``: the task id, or the error result."""
    fake.add(Reply(tool_calls=[("c1", tool, json.dumps(arguments))]), Reply(text="Started."))
    reply = await stub.Chat(
        llm_pb2.ChatRequest(session_id=session, messages=[user("go")]),
        timeout=20,
        metadata=metadata,
    )
    [record] = reply.tool_calls
    return record.task_id or record.result


async def handle(s: Stack, tag: str) -> Job:
    path = s.jobs_dir / f"{tag}.json"
    await wait_for(lambda: asyncio.sleep(0, path.exists()), bool, 15)
    return Job.from_json(path.read_text())


async def report(job: Job, fraction: float, message: str) -> None:
    """One stored report (a report within 50 ms of the last is dropped: try again)."""
    for _ in range(100):
        if await asyncio.to_thread(job.report_progress, fraction, message):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("every report was dropped")


async def next_item(
    stream: grpc.aio.UnaryStreamCall, wait_s: float = 10
) -> llm_pb2.SubscribeResponse:
    item = await asyncio.wait_for(stream.read(), wait_s)
    assert isinstance(item, llm_pb2.SubscribeResponse), item
    return item


async def nothing_more(stream: grpc.aio.UnaryStreamCall, wait_s: float = 1.0) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(stream.read(), wait_s)


async def notes(stub: llm_pb2_grpc.LLMServiceAsyncStub, task_id: str) -> list[str]:
    history = await stub.GetHistory(llm_pb2.GetHistoryRequest(session_id=SESSION))
    return [
        m.content
        for m in history.messages
        if m.role == llm_pb2.MESSAGE_ROLE_SYSTEM and task_id in m.content
    ]


async def test_a_long_job_reports_progress_three_times_survives_a_restart_and_is_delivered_once(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    async with stack(tmp_path, fake_openai) as s:
        async with llm(s) as (host, stub):
            watch = stub.Subscribe(llm_pb2.SubscribeRequest(session_id=SESSION, progress=True))
            plain = stub.Subscribe(llm_pb2.SubscribeRequest(session_id=SESSION))
            task_id = await call_tool(stub, s.fake, "hold_job", {"tag": "r1"})
            assert isinstance(task_id, str) and task_id.startswith("task_")
            job = await handle(s, "r1")
            assert job.task_id == task_id and job.llm_address == s.settings.address
            assert job.max_age_s == 24 * 3600  # the default maximum age

            accepted = (await next_item(watch)).progress
            assert accepted.task_id == task_id and accepted.job_id == "hold-r1"
            assert accepted.status == llm_pb2.TASK_STATUS_RUNNING
            assert accepted.expires_at.seconds > accepted.created_at.seconds + 23 * 3600
            await report(job, 0.25, "first\nthird")
            first = (await next_item(watch)).progress
            assert (first.progress.fraction, first.progress.message) == (0.25, "first third")
            await report(job, 0.5, "second")
            assert (await next_item(watch)).progress.progress.message == "second"
            # The call's 300 s cap is not the job's: it holds its place meanwhile.
            assert host.tasks.running(SESSION) == 1
            watch.cancel()
            await nothing_more(plain, 0.3)  # no progress for a subscriber that did not ask
            plain.cancel()

        # A new process on the same database: the job is still running, with its progress.
        async with llm(s) as (host, stub):
            got = (await stub.GetTask(llm_pb2.GetTaskRequest(task_id=task_id))).task
            assert got.status == llm_pb2.TASK_STATUS_RUNNING and got.job_id == "hold-r1"
            assert (got.progress.fraction, got.progress.message) == (0.5, "second")
            assert host.tasks.running(SESSION) == 1
            watch = stub.Subscribe(
                llm_pb2.SubscribeRequest(session_id=SESSION, progress=True, auto_ack=True)
            )
            # A new progress subscriber first hears where the job stands.
            now = (await next_item(watch)).progress
            assert (now.task_id, now.progress.message) == (task_id, "second")
            await report(job, 0.75, "third")
            assert (await next_item(watch)).progress.progress.fraction == 0.75
            await asyncio.to_thread(job.complete, {"pages": 3})
            done = (await next_item(watch)).task
            assert done.task_id == task_id and done.status == llm_pb2.TASK_STATUS_SUCCEEDED
            assert from_value(done.result.output) == {"pages": 3}
            assert done.progress.message == "third"  # the last progress stays with the task

            # Once: a second completion is refused, nothing more is pushed or noted.
            with pytest.raises(JobEnded) as ended:
                await asyncio.to_thread(job.complete, {"pages": 4})
            assert "TASK_STATUS_SUCCEEDED" in ended.value.message
            await nothing_more(watch)
            watch.cancel()
            again = stub.Subscribe(llm_pb2.SubscribeRequest(session_id=SESSION))
            await nothing_more(again)  # acknowledged: not sent again
            again.cancel()
            assert await notes(stub, task_id) == [
                f'Result of async task {task_id} (hold_job): {{"pages":3}}'
            ]
            assert host.tasks.running() == 0


async def test_a_forged_or_malformed_report_is_refused_and_changes_nothing(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    async with stack(tmp_path, fake_openai) as s, llm(s) as (_, stub):
        task_id = await call_tool(stub, s.fake, "hold_job", {"tag": "f1"})
        job = await handle(s, "f1")
        forged = Job(job.task_id, "not-the-token", job.llm_address)
        unknown = Job("task_nope", job.token, job.llm_address)
        # compare_digest refuses str that is not ASCII: this was UNKNOWN with a traceback.
        accented = Job(job.task_id, "é" * 43, job.llm_address)
        for worker in (forged, unknown, accented):
            for report in (
                lambda w=worker: w.report_progress(0.9, "forged"),
                lambda w=worker: w.complete({"forged": True}),
            ):
                with pytest.raises(JobError) as refused:
                    await asyncio.to_thread(report)
                assert refused.value.code == "PERMISSION_DENIED", refused.value
                assert "with this token" in refused.value.message
        for request, field in (
            (
                llm_pb2.ReportProgressRequest(task_id=task_id, token=job.token, fraction=1.5),
                "fraction",
            ),
            (llm_pb2.ReportProgressRequest(task_id=task_id), "token"),
            (
                llm_pb2.CompleteTaskRequest(
                    task_id=task_id,
                    token=job.token,
                    result=tools_pb2.ToolResult(accepted=tools_pb2.JobAccepted()),
                ),
                "result.accepted",
            ),
        ):
            method = (
                stub.ReportProgress
                if isinstance(request, llm_pb2.ReportProgressRequest)
                else stub.CompleteTask
            )
            with pytest.raises(grpc.aio.AioRpcError) as bad:
                await method(request, timeout=5)  # type: ignore[operator]
            assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert field in (bad.value.details() or "")
        got = (await stub.GetTask(llm_pb2.GetTaskRequest(task_id=task_id))).task
        assert got.status == llm_pb2.TASK_STATUS_RUNNING and not got.HasField("progress")
        # The real token still works.
        await asyncio.to_thread(job.fail, "the disk was full", {"written": 10})
        got = (await stub.GetTask(llm_pb2.GetTaskRequest(task_id=task_id))).task
        assert got.status == llm_pb2.TASK_STATUS_FAILED
        assert got.result.error == "the disk was full"
        assert from_value(got.result.output) == {"written": 10}


async def test_cancelling_an_accepted_job_tells_its_plugin_and_ends_it_cancelled(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    async with stack(tmp_path, fake_openai) as s, llm(s) as (host, stub):
        task_id = await call_tool(stub, s.fake, "hold_job", {"tag": "c1"})
        job = await handle(s, "c1")
        await wait_for(
            lambda: stub.GetTask(llm_pb2.GetTaskRequest(task_id=task_id)),
            lambda r: r.task.job_id == "hold-c1",
            10,
        )
        cancelled = await stub.CancelTask(
            llm_pb2.CancelTaskRequest(task_id=task_id, reason="not needed"), timeout=10
        )
        assert cancelled.task.status == llm_pb2.TASK_STATUS_CANCELLED
        assert cancelled.task.result.error.endswith(": not needed")
        # The plugin process that accepted it heard, through ToolCallback.CancelJob.
        told = s.jobs_dir / "c1.cancelled"
        await wait_for(lambda: asyncio.sleep(0, told.exists()), bool, 10)
        assert told.read_text() == "cancelled: not needed"
        # The worker learns at its next report; the place under the cap is free.
        with pytest.raises(JobEnded):
            await asyncio.to_thread(job.report_progress, 0.5, "still going")
        assert host.tasks.running() == 0
        [note] = await notes(stub, task_id)
        assert note.startswith(f"Async task {task_id} (hold_job) was cancelled:")


async def test_a_job_past_its_maximum_age_fails_saying_so_and_its_plugin_is_told(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    async with stack(tmp_path, fake_openai) as s, llm(s) as (host, stub):
        sub = stub.Subscribe(llm_pb2.SubscribeRequest(session_id=SESSION))
        task_id = await call_tool(stub, s.fake, "brief_job", {"tag": "e1"})
        task = (await next_item(sub)).task  # max_job_seconds=1
        sub.cancel()
        assert task.task_id == task_id and task.status == llm_pb2.TASK_STATUS_FAILED
        assert task.result.error.startswith("DEADLINE_EXCEEDED: the long job did not complete")
        assert "max_job_seconds" in task.result.error
        told = s.jobs_dir / "e1.cancelled"
        await wait_for(lambda: asyncio.sleep(0, told.exists()), bool, 10)
        assert told.read_text().startswith("expired: DEADLINE_EXCEEDED")
        assert host.tasks.running() == 0


async def test_accepted_jobs_count_against_the_session_cap_until_they_end(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    async with (
        stack(tmp_path, fake_openai, max_async_tasks_per_session=2) as s,
        llm(s) as (
            host,
            stub,
        ),
    ):
        first = await call_tool(stub, s.fake, "hold_job", {"tag": "k1"})
        await call_tool(stub, s.fake, "hold_job", {"tag": "k2"})
        job = await handle(s, "k1")
        await handle(s, "k2")  # both accepted: their calls have ended
        refused = await call_tool(stub, s.fake, "hold_job", {"tag": "k3"})
        assert isinstance(refused, tools_pb2.ToolResult) and refused.is_error
        assert "TOOLCALL_MAX_ASYNC_TASKS_PER_SESSION" in refused.error
        # Another session has room; once a job completes, this one has too.
        assert isinstance(await call_tool(stub, s.fake, "hold_job", {"tag": "o1"}, "other"), str)
        await asyncio.to_thread(job.complete, "done")
        assert isinstance(first, str)
        assert isinstance(await call_tool(stub, s.fake, "hold_job", {"tag": "k4"}), str)
        assert host.tasks.running(SESSION) == 2


async def test_chat_stream_carries_a_jobs_progress_and_result_while_the_turn_runs(
    tmp_path: Path, fake_openai: FakeOpenAI, tool_plugin: str
) -> None:
    async with llm_env(tmp_path, tool_plugin, openai=fake_openai, default_provider="openai") as env:
        await env.register("sleep_x")  # a sync tool that keeps the turn open
        with PluginProcess(
            "tests.support.long_job_plugin",
            env.registry.target,
            tmp_path,
            extra_env={"LONG_JOB_DIR": str(tmp_path)},
        ):
            assert await env.llm.view.wait_for("default", "steps_job", timeout_s=20)
            fake_openai.add(
                Reply(
                    tool_calls=[
                        ("c1", "steps_job", '{"steps": 3}'),
                        ("c2", "sleep_x", '{"seconds": 2.5}'),
                    ]
                ),
                Reply(text="Both done."),
            )
            call = env.stub.ChatStream(
                llm_pb2.ChatStreamRequest(request=env.request("cs", "go"), task_updates=True),
                timeout=30,
            )
            events = [e async for e in call]
    updates = [e.task_update for e in events if e.HasField("task_update")]
    running = [u for u in updates if u.status == llm_pb2.TASK_STATUS_RUNNING]
    assert running[0].job_id == "steps" and not running[0].HasField("progress")  # accepted
    fractions = [u.progress.fraction for u in running[1:]]
    assert fractions == pytest.approx([1 / 3, 2 / 3, 1.0])
    final = updates[-1]
    assert final.status == llm_pb2.TASK_STATUS_SUCCEEDED
    assert from_value(final.result.output) == {"steps": 3}
    assert final.result.parts[0].image.mime_type == "image/png"
    assert events[-2].HasField("final") and events[-1].HasField("usage")


async def test_an_accepted_answer_to_a_call_that_offered_no_job_is_an_error_result(
    tmp_path: Path, fake_openai: FakeOpenAI, tool_plugin: str
) -> None:
    async with llm_env(tmp_path, tool_plugin, openai=fake_openai, default_provider="openai") as env:
        await env.register("accept_sync")
        fake_openai.add(Reply(tool_calls=[("c1", "accept_sync", "{}")]), Reply(text="ok"))
        [record] = (await env.chat("s", "go")).tool_calls
        assert record.result.is_error
        assert record.result.error.startswith("FAILED_PRECONDITION:")
        assert "only async calls of the LLMService can become long jobs" in record.result.error


async def test_progress_reported_too_often_is_dropped_and_the_stored_one_stays(
    tmp_path: Path, fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each stored report is a database write: at most one per interval per task.
    monkeypatch.setattr(tasks_module, "MIN_PROGRESS_INTERVAL_S", 60.0)
    async with stack(tmp_path, fake_openai) as s, llm(s) as (_, stub):
        task_id = await call_tool(stub, s.fake, "hold_job", {"tag": "p1"})
        job = await handle(s, "p1")
        assert await asyncio.to_thread(job.report_progress, 0.1, "kept") is True
        assert await asyncio.to_thread(job.report_progress, 0.2, "dropped") is False
        got = (await stub.GetTask(llm_pb2.GetTaskRequest(task_id=task_id))).task
        assert (got.progress.fraction, got.progress.message) == (0.1, "kept")
        await asyncio.to_thread(job.complete, "done")  # completion is never rate limited


def test_a_slow_readers_queue_keeps_only_the_latest_progress_of_a_task() -> None:
    subscription = Subscription(None, SESSION, max_items=2, max_bytes=1 << 20)  # type: ignore[arg-type]
    for i in range(10):  # a chatty job: more reports than the queue has places
        running = TaskRecord("task_a", SESSION, "hold_job", "c1", "default", {})
        running.progress_message = f"step {i}"
        subscription.push(running, 100)
    subscription.push(TaskRecord("task_b", SESSION, "hold_job", "c2", "default", {}), 100)
    # The queue is full: a third task's progress is dropped, the reader is not.
    subscription.push(TaskRecord("task_c", SESSION, "hold_job", "c3", "default", {}), 100)
    assert not subscription.overflowed.is_set()
    queued = [task for task, _ in subscription._queue]
    assert [(t.task_id, t.progress_message) for t in queued] == [
        ("task_a", "step 9"),
        ("task_b", ""),
    ]
    # A result is never replaced: one more entry goes over the bound.
    finished = TaskRecord("task_a", SESSION, "hold_job", "c1", "default", {}, status="succeeded")
    subscription.push(finished, 100)
    assert subscription.overflowed.is_set()


async def test_a_follow_up_turn_tells_the_user_about_an_async_result_when_asked(
    tmp_path: Path, fake_openai: FakeOpenAI
) -> None:
    async with stack(tmp_path, fake_openai) as s, llm(s) as (_, stub):
        sub = stub.Subscribe(llm_pb2.SubscribeRequest(session_id=SESSION, auto_ack=True))
        asked = await stub.Chat(
            llm_pb2.ChatRequest(
                session_id=SESSION,
                messages=[user("hold job r9")],
                provider="offline",
                follow_up_async_results=True,
            ),
            timeout=20,
        )
        task_id = asked.tool_calls[0].task_id
        job = await handle(s, "r9")
        await asyncio.to_thread(job.complete, {"pages": 3})
        task = (await next_item(sub)).task
        assert task.task_id == task_id and task.status == llm_pb2.TASK_STATUS_SUCCEEDED
        sentence = 'Your async task hold_job finished: {"pages":3}'  # the offline rule 0
        assert task.follow_up.role == llm_pb2.MESSAGE_ROLE_ASSISTANT
        assert task.follow_up.content == sentence
        history = await stub.GetHistory(llm_pb2.GetHistoryRequest(session_id=SESSION))
        assert history.messages[-1].content == sentence
        assert history.messages[-3].content.startswith(f"Result of async task {task_id}")

        # Off by default (TOOLCALL_ASYNC_FOLLOW_UP): no model turn, no sentence.
        plain = await call_tool(stub, s.fake, "hold_job", {"tag": "r10"})
        requests = len(s.fake.requests)
        await asyncio.to_thread((await handle(s, "r10")).complete, "done")
        task = (await next_item(sub)).task
        sub.cancel()
        assert task.task_id == plain and not task.HasField("follow_up")
        assert len(s.fake.requests) == requests


def test_a_job_handle_moves_between_processes_and_never_prints_its_token() -> None:
    job = Job("task_1", "s3cret-token", "127.0.0.1:48912", 600.0, "scan-1")
    for moved in (Job.from_json(job.to_json()), pickle.loads(pickle.dumps(job))):
        assert (moved.task_id, moved.token, moved.llm_address) == (
            "task_1",
            "s3cret-token",
            "127.0.0.1:48912",
        )
        assert (moved.max_age_s, moved.job_id, moved.cancelled) == (600.0, "scan-1", False)
    assert "s3cret" not in repr(job) and "s3cret" not in str(job)


async def test_under_authentication_a_worker_reports_with_any_identity_and_the_task_token(
    tmp_path: Path, fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = principals_file(tmp_path / "p.toml", PRINCIPALS)
    alice = (("authorization", "Bearer alice-token"),)
    monkeypatch.delenv("TOOLCALL_TOKEN", raising=False)
    async with stack(tmp_path, fake_openai, principals_file=str(path)) as s, llm(s) as (_, stub):
        task_id = await call_tool(stub, s.fake, "hold_job", {"tag": "a1"}, metadata=alice)
        job = await handle(s, "a1")
        with pytest.raises(JobError) as anonymous:  # the gate still wants an identity
            await asyncio.to_thread(job.report_progress, 0.5, "half")
        assert anonymous.value.code == "UNAUTHENTICATED"
        # Bob does not own alice's session: the task token is the authority here.
        # The token goes only to the LLMService the worker is configured with.
        monkeypatch.setenv("TOOLCALL_TOKEN", "bob-token")
        with pytest.raises(JobError) as unconfigured:
            await asyncio.to_thread(job.report_progress, 0.5, "half")
        assert unconfigured.value.code == "UNAUTHENTICATED"
        monkeypatch.setenv("TOOLCALL_LLM_ADDRESS", job.llm_address)
        assert await asyncio.to_thread(job.report_progress, 0.5, "half") is True
        await asyncio.to_thread(job.complete, "done")
        got = await stub.GetTask(llm_pb2.GetTaskRequest(task_id=task_id), metadata=alice)
        assert got.task.status == llm_pb2.TASK_STATUS_SUCCEEDED, got.task.result.error


def test_a_tool_returning_accepted_declares_no_output_schema() -> None:
    # Accepted is a dataclass, but the job's result (Job.complete) has its own shape.
    from plugin_stub import tool_meta
    from tests.support.long_job_plugin import LongJobs

    meta = tool_meta(LongJobs.hold_job)
    assert meta is not None and meta.output_schema is None


async def test_a_forged_job_offer_never_receives_the_workers_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Anyone on loopback may call a plugin; an offer naming the caller's own
    server must not collect TOOLCALL_TOKEN (it is the registry's admin token)."""
    seen: list[tuple[tuple[str, str], ...]] = []

    class Catcher(llm_pb2_grpc.LLMServiceServicer):
        async def ReportProgress(
            self, request: llm_pb2.ReportProgressRequest, context: grpc.aio.ServicerContext
        ) -> llm_pb2.ReportProgressResponse:
            seen.append(tuple((k, str(v)) for k, v in context.invocation_metadata() or ()))
            return llm_pb2.ReportProgressResponse()

    server = grpc.aio.server()
    llm_pb2_grpc.add_LLMServiceServicer_to_server(Catcher(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        monkeypatch.setenv("TOOLCALL_TOKEN", "admin-secret")
        monkeypatch.setenv("TOOLCALL_LLM_ADDRESS", "127.0.0.1:48912")
        forged = Job("task_x", "any", f"127.0.0.1:{port}", 60.0)
        await asyncio.to_thread(forged.report_progress, 0.1, "hi")
        assert seen and all("admin-secret" not in value for _, value in seen[0]), seen
        monkeypatch.setenv("TOOLCALL_LLM_ADDRESS", f"127.0.0.1:{port}")  # the configured one
        configured = Job("task_y", "any", f"127.0.0.1:{port}", 60.0)
        await asyncio.to_thread(configured.report_progress, 0.2, "hi")
        assert ("authorization", "Bearer admin-secret") in seen[1]
    finally:
        await server.stop(0)
