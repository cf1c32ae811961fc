"""LLMService bounds and failures: the history cache, provider request size,
the model allow-list, a corrupt or unwritable database."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from llm_service.history import HistoryStore
from llm_service.messages import Message, message_bytes
from tests.support.fake_providers import FakeOpenAI, Reply
from tests.support.llm_env import LLMEnv, fake_openai, llm_env, tool_plugin
from toolcall.errors import bad_request_violations
from toolcall.v1 import llm_pb2

__all__ = ["fake_openai", "tool_plugin"]

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
async def env(tmp_path: Path, tool_plugin: str) -> AsyncIterator[LLMEnv]:
    async with llm_env(tmp_path, tool_plugin) as e:
        yield e


async def status_of(call) -> grpc.aio.AioRpcError:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    return err.value


# -- the history cache ----------------------------------------------------


async def test_history_reads_stop_at_their_bound_and_the_cache_stays_bounded(
    tmp_path: Path,
) -> None:
    store = HistoryStore(
        tmp_path / "h.sqlite3",
        tail_messages=50,
        tail_bytes=100_000,
        cache_sessions=4,
        cache_bytes=300_000,
    )
    await store.open()
    try:
        big = [Message("user", f"{i:04d}" + "x" * 10_000) for i in range(300)]  # ~3 MB
        await store.append("big", big)
        # A read of one message reads one message; it does not fill the cache.
        page, truncated = await store.page("big", 1)
        assert [m.content[:4] for m in page] == ["0299"] and not truncated
        assert store.cached_bytes == 0
        # All of it, under a byte bound: the newest that fit, and the cut is said.
        page, truncated = await store.page("big", 0, 50_000)
        assert truncated and page[-1].content.startswith("0299")
        assert sum(message_bytes(m) for m in page) <= 50_000 < sum(map(message_bytes, big))
        # What a turn reads is the bounded tail, cached.
        recent = await store.recent("big")
        assert recent[-1].content.startswith("0299")
        assert sum(map(message_bytes, recent)) <= 100_000
        for i in range(10):
            await store.append(f"s{i}", [Message("user", "y" * 40_000) for _ in range(5)])
            await store.recent(f"s{i}")
            assert store.cached_sessions <= 4 and store.cached_bytes <= 300_000
        # Appends keep a cached tail inside its bounds.
        await store.append("s9", [Message("user", "z" * 40_000) for _ in range(5)])
        assert store.cached_bytes <= 300_000
        assert sum(map(message_bytes, await store.recent("s9"))) <= 100_000
        # Every message is still stored.
        assert len(await store.messages("s9")) == 10
    finally:
        await store.close()


async def test_get_history_of_a_huge_session_is_bounded_and_says_it_was_cut(env: LLMEnv) -> None:
    await env.llm.store.append("huge", [Message("user", "x" * 100_000) for _ in range(50)])
    reply = await env.stub.GetHistory(llm_pb2.GetHistoryRequest(session_id="huge"))
    assert reply.truncated and 0 < len(reply.messages) < 50
    assert reply.ByteSize() <= 4 * 1024 * 1024
    one = await env.stub.GetHistory(llm_pb2.GetHistoryRequest(session_id="huge", limit=1))
    assert len(one.messages) == 1 and not one.truncated


# -- provider requests ----------------------------------------------------


async def test_provider_requests_are_bounded_in_bytes_oldest_history_first(
    tmp_path: Path, tool_plugin: str, fake_openai: FakeOpenAI
) -> None:
    async with llm_env(
        tmp_path,
        tool_plugin,
        openai=fake_openai,
        default_provider="openai",
        max_request_bytes=20_000,
    ) as env:
        for i in range(10):
            fake_openai.add(Reply(text=f"a{i}"))
            await env.chat("long", f"u{i} " + "x" * 3_000)
        sent = fake_openai.requests[-1].body["messages"]
        assert sum(len(m["content"]) for m in sent) <= 20_000
        assert sent[0]["role"] == "system" and sent[-1]["content"].startswith("u9 ")
        assert not any(m["content"].startswith("u0 ") for m in sent)  # the oldest went
        assert len(await env.history("long")) == 20  # the store keeps everything

        err = await status_of(env.chat("long", "x" * 25_000))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        [(field, reason)] = bad_request_violations(err)
        assert field == "messages" and "TOOLCALL_MAX_REQUEST_BYTES" in reason
        assert "20000" in reason
        assert len(await env.history("long")) == 20


async def test_turns_past_the_in_flight_bound_are_refused_at_once_and_the_slots_come_back(
    tmp_path: Path, tool_plugin: str, fake_openai: FakeOpenAI
) -> None:
    async with llm_env(
        tmp_path, tool_plugin, openai=fake_openai, default_provider="openai", max_turns=2
    ) as env:
        fake_openai.add(Reply(text="slow 1", delay_s=2), Reply(text="slow 2", delay_s=2))
        slow = [asyncio.create_task(env.chat(f"s{i}", "take your time")) for i in range(2)]
        for _ in range(500):  # until both turns are at the model (10 s at most)
            if len(fake_openai.requests) >= 2:
                break
            await asyncio.sleep(0.02)
        started = asyncio.get_running_loop().time()
        err = await status_of(env.chat("s3", "me too"))
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "TOOLCALL_MAX_TURNS" in (err.details() or "")
        assert asyncio.get_running_loop().time() - started < 1.5  # refused, not queued
        err = await status_of(
            env.stub.ChatStream(
                llm_pb2.ChatStreamRequest(request=env.request("s4", "and me"))
            ).read()
        )
        assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        replies = await asyncio.gather(*slow)
        assert sorted(r.message.content for r in replies) == ["slow 1", "slow 2"]
        fake_openai.add(Reply(text="your turn"))
        assert (await env.chat("s3", "me too")).message.content == "your turn"
        assert not await env.history("s4")  # the refused turn stored nothing


async def test_models_outside_the_allow_list_are_refused_naming_the_allowed(
    tmp_path: Path, tool_plugin: str, fake_openai: FakeOpenAI
) -> None:
    async with llm_env(
        tmp_path,
        tool_plugin,
        openai=fake_openai,
        default_provider="openai",
        allowed_models=("fake-*", "gpt-4o-mini"),
    ) as env:
        err = await status_of(env.chat("m", "hi", model="o1-pro-expensive"))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        [(field, reason)] = bad_request_violations(err)
        assert field == "model" and "allowed models: fake-*, gpt-4o-mini" in reason
        assert fake_openai.requests == []
        fake_openai.add(Reply(text="ok"), Reply(text="ok"))
        assert (await env.chat("m", "hi", model="fake-1")).message.content == "ok"
        assert fake_openai.requests[-1].body["model"] == "fake-1"
        assert (await env.chat("m", "hi")).model == "gpt-4o-mini"  # none named: the default


# -- the database ---------------------------------------------------------


async def damaged_database(tmp_path: Path, how: str) -> Path:
    db = tmp_path / "llm.sqlite3"
    if how == "not a database":
        db.write_bytes(b"this is not a sqlite database " * 200)
        return db
    store = HistoryStore(db)
    await store.open()
    for i in range(40):
        await store.append(f"s{i}", [Message("user", f"{i} " + "x" * 20_000)])
    await store._run(lambda: store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)"))
    await store.close()
    data = bytearray(db.read_bytes())
    if how == "truncated":
        data = data[: len(data) // 2]
    else:  # a garbage page among the messages' (the header, schema and tasks intact)
        page = (len(data) * 3 // 4) // 4096 * 4096
        data[page : page + 4096] = b"\xa5" * 4096
    db.write_bytes(bytes(data))
    return db


@pytest.mark.parametrize("how", ["not a database", "truncated", "garbage pages"])
async def test_a_corrupt_database_at_start_is_one_line_and_a_nonzero_exit(
    tmp_path: Path, how: str
) -> None:
    db = await damaged_database(tmp_path, how)
    env = {**os.environ, "PYTHONPATH": str(REPO), "TOOLCALL_LOG_LEVEL": "WARNING"}
    argv = [sys.executable, "-m", "toolcall.cli", "llm", "--address", "127.0.0.1:0"]
    argv += ["--registry", "127.0.0.1:1", "--data-dir", str(tmp_path)]
    proc = await asyncio.to_thread(
        subprocess.run,
        argv,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 1, proc
    assert "Traceback" not in proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("error: cannot open database ") and str(db) in line
    assert "move it aside" in line


def delete_database(db: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)


@pytest.mark.sqlite_store
async def test_database_write_failures_are_statuses_and_change_nothing(env: LLMEnv) -> None:
    await env.chat("w", "first")
    before = await env.history("w")
    db = env.llm.store.path

    db.chmod(0o444)  # read-only (root too: the service checks the mode)
    try:
        err = await status_of(env.chat("w", "second"))
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "read-only" in err.details() and str(db) in err.details()
        assert "not stored" in err.details()
        ack = env.stub.AckTasks(llm_pb2.AckTasksRequest(session_id="w", task_ids=["t"]))
        assert (await status_of(ack)).code() == grpc.StatusCode.FAILED_PRECONDITION
        assert await env.history("w") == before  # neither the file nor the cache changed
    finally:
        db.chmod(0o644)
    await env.chat("w", "third")
    assert len(await env.history("w")) == len(before) + 2

    # Disk full: SQLite's own SQLITE_FULL (the database may not grow).
    store = env.llm.store
    pages = await store._run(lambda: store.db.execute("PRAGMA page_count").fetchone()[0])
    await store._run(lambda: store.db.execute(f"PRAGMA max_page_count = {pages}"))
    full_before = await env.history("w")
    err = await status_of(env.chat("w", "y" * 200_000))
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "full" in err.details()
    assert await env.history("w") == full_before

    # Deleted under the running service: SQLite would write into the unlinked
    # file (lost at the next start); the service says so instead.
    delete_database(db)
    err = await status_of(env.chat("w", "fourth"))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "deleted" in err.details()


async def test_tool_results_that_push_a_turn_over_the_request_bound_end_it_clearly(
    tmp_path: Path, tool_plugin: str, fake_openai: FakeOpenAI
) -> None:
    async with llm_env(
        tmp_path,
        tool_plugin,
        openai=fake_openai,
        default_provider="openai",
        max_request_bytes=50_000,
    ) as env:
        await env.register("big_out")
        fake_openai.add(Reply(tool_calls=[("c1", "big_out", '{"bytes": 60000}')]))
        err = await status_of(env.chat("grow", "go"))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "tool results weigh" in err.details()
        assert "TOOLCALL_MAX_REQUEST_BYTES" in err.details()
        assert len(fake_openai.requests) == 1  # the oversized request was never sent
        assert await env.history("grow") == []
