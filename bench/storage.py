"""S. The storage backends side by side: ``python -m bench.storage [--quick]``.

Every server is a real process (``toolcall registry`` / ``toolcall llm``); etcd
is a three-member cluster and PostgreSQL one server, both on loopback, started
from the Debian packages by tests/support (``make engines`` installs them).

- S1: Register / List / Invoke / KeepAlive p50 on a registry on SQLite vs on
  etcd (sequential calls; the ratios are what the backend costs).
- S2: a chat turn (F: one tool round, offline provider) with the registry on
  SQLite vs etcd: the chat's dispatch reads the Watch-fed view either way.
- S3: chat turns per second at 64 in flight, one vs two LLMService replicas
  on PostgreSQL (the client spreads turns over the replicas).
- S4: a registry replica starting on 100,000 stored tools: time until a
  Watch is SYNCED, and its RSS, on SQLite vs etcd.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from toolcall import grpc_env

grpc_env.apply()

from bench.harness import concurrent, sequential  # noqa: E402
from bench.payload import RAW_ARGUMENTS, TOOL_NAME  # noqa: E402
from bench.processes import free_port, running  # noqa: E402
from bench.scenarios import stack  # noqa: E402
from bench.scenarios.base import BenchEnv  # noqa: E402
from bench.scenarios.chat_turn import ChatCall, _wait_tool_visible  # noqa: E402
from toolcall.clients import channel  # noqa: E402
from toolcall.v1 import llm_pb2_grpc, registry_pb2, registry_pb2_grpc, tools_pb2  # noqa: E402

CLI = ["-m", "toolcall.cli"]
REPO = Path(__file__).resolve().parents[1]


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _p50(latencies: list[float]) -> float:
    return statistics.median(latencies)


@contextlib.asynccontextmanager
async def registry(
    env: BenchEnv, name: str, store: str, etcd: list[str], prefix: str, *extra: str
) -> AsyncIterator[Any]:
    address = f"127.0.0.1:{free_port()}"
    args = [*CLI, "registry", "--address", address, "--store", store]
    args += ["--data-dir", str(env.tmp_dir / f"{name}-data"), *extra]
    variables = {"TOOLCALL_ETCD_ENDPOINTS": ",".join(etcd), "TOOLCALL_ETCD_PREFIX": prefix}
    async with running(name, args, log_dir=env.log_dir, env=variables, healthy_at=address) as p:
        yield p


async def s1_registry_ops(target: str, calls: int) -> dict[str, float]:
    async with channel(target) as ch:
        stub: Any = registry_pb2_grpc.ToolRegistryStub(ch)
        lease = await stub.CreateLease(registry_pb2.CreateLeaseRequest(ttl_seconds=60))
        counter = iter(range(10**9))

        async def register() -> None:
            definition = tools_pb2.ToolDefinition(
                name=f"s1_{next(counter) % 50}", callback_address="127.0.0.1:9"
            )
            await stub.Register(
                registry_pb2.RegisterRequest(tool=definition, lease_id=lease.lease_id), timeout=10
            )

        async def list_() -> None:
            await stub.List(registry_pb2.ListRequest(), timeout=10)

        async def invoke() -> None:
            request = registry_pb2.InvokeRequest(name=TOOL_NAME, raw_arguments=RAW_ARGUMENTS)
            reply = await stub.Invoke(request, timeout=10)
            assert not reply.result.is_error, reply.result.error

        async def keep_alive() -> None:
            await stub.KeepAlive(registry_pb2.KeepAliveRequest(lease_id=lease.lease_id))

        out: dict[str, float] = {}
        ops: dict[str, Callable[[], Awaitable[None]]] = {
            "register": register,
            "list": list_,
            "invoke": invoke,
            "keep_alive": keep_alive,
        }
        for op, call in ops.items():
            await sequential(call, 20)  # warm up
            latencies, _ = await sequential(call, calls)
            out[f"{op}_p50_us"] = _p50(latencies)
        return out


async def s2_chat(env: BenchEnv, registry_target: str, name: str, calls: int) -> float:
    async with (
        stack.plugin(env, f"{name}-plugin", registry_target),
        stack.llm(env, f"{name}-llm", registry_target) as llm,
        channel(llm.target) as ch,
    ):
        stub: Any = llm_pb2_grpc.LLMServiceStub(ch)
        await _wait_tool_visible(stub)
        call = ChatCall(stub)
        await sequential(call, 50)
        latencies, _ = await sequential(call, calls)
        return _p50(latencies)


@contextlib.asynccontextmanager
async def pg_llm(env: BenchEnv, name: str, registry_target: str, dsn: str) -> AsyncIterator[Any]:
    address = f"127.0.0.1:{free_port()}"
    args = [*CLI, "llm", "--address", address, "--registry", registry_target]
    args += ["--provider", "offline", "--store", "postgres"]
    variables = {"TOOLCALL_PG_DSN": dsn, "TOOLCALL_PG_POOL_SIZE": "80"}
    async with running(name, args, log_dir=env.log_dir, env=variables, healthy_at=address) as p:
        yield p


async def s3_replicas(
    env: BenchEnv, registry_target: str, dsn: str, turns: int
) -> dict[str, float]:
    out: dict[str, float] = {}
    async with (
        stack.plugin(env, "S3-plugin", registry_target),
        pg_llm(env, "S3-llm-a", registry_target, dsn) as a,
        pg_llm(env, "S3-llm-b", registry_target, dsn) as b,
        channel(a.target) as cha,
        channel(b.target) as chb,
    ):
        stubs: list[Any] = [llm_pb2_grpc.LLMServiceStub(cha), llm_pb2_grpc.LLMServiceStub(chb)]
        for stub in stubs:
            await _wait_tool_visible(stub)
        one = ChatCall(stubs[0])
        await concurrent(one, 200)
        out["one_replica_turns_per_s"] = await concurrent(one, turns)
        calls = [ChatCall(stubs[0]), ChatCall(stubs[1])]
        # Distinct sessions per replica (ChatCall names them alike): prefix them.
        for i, call in enumerate(calls):
            call._sessions = type(call._sessions)(f"s3-{i}-{j}" for j in range(64))
        turn = iter(range(10**9))

        async def spread() -> Any:
            return await calls[next(turn) % 2]()

        await concurrent(spread, 200)
        out["two_replicas_turns_per_s"] = await concurrent(spread, turns)
        out["ratio"] = out["two_replicas_turns_per_s"] / out["one_replica_turns_per_s"]
    return out


async def _fill_etcd(endpoints: list[str], prefix: str, count: int) -> float:
    from registry_service.etcd_storage import EtcdOptions, EtcdStorage
    from registry_service.store import Entry, ToolStore
    from toolcall.tools import ToolSpec

    storage = EtcdStorage(EtcdOptions(endpoints=endpoints, prefix=prefix, timeout_s=60))
    await storage.open(ToolStore(["default"]))
    started = time.perf_counter()
    batch = 2_400
    for first in range(0, count, batch):
        entries = [
            Entry.create(
                ToolSpec.from_definition(
                    tools_pb2.ToolDefinition(
                        name=f"scale_{i:06d}", description="d" * 100, callback_address="127.0.0.1:9"
                    )
                ),
                "default",
            )
            for i in range(first, min(first + batch, count))
        ]
        await storage.put(entries, "")
    took = time.perf_counter() - started
    await storage.close()
    return took


async def _fill_sqlite(path: Path, count: int) -> None:
    from registry_service.archive import ToolArchive
    from registry_service.store import Entry
    from toolcall.tools import ToolSpec

    archive = ToolArchive(path)
    await archive.open()
    entries = [
        Entry.create(
            ToolSpec.from_definition(
                tools_pb2.ToolDefinition(
                    name=f"scale_{i:06d}", description="d" * 100, callback_address="127.0.0.1:9"
                )
            ),
            "default",
        )
        for i in range(count)
    ]
    await archive.write(entries, [])
    await archive.close()


async def _snapshot(
    env: BenchEnv, name: str, store: str, etcd: list[str], count: int
) -> dict[str, float]:
    extra = ["--max-tools", str(count * 2)]
    started = time.perf_counter()
    async with registry(env, name, store, etcd, "/bench-s4/", *extra) as reg:
        ready = time.perf_counter() - started
        async with channel(reg.target) as ch:
            stub: Any = registry_pb2_grpc.ToolRegistryStub(ch)
            t0 = time.perf_counter()
            seen = 0
            async for event in stub.Watch(registry_pb2.WatchRequest(), timeout=300):
                if event.type == registry_pb2.EVENT_TYPE_SYNCED:
                    break
                seen += 1
            watch_s = time.perf_counter() - t0
        assert seen == count, (seen, count)
        return {"start_s": ready, "watch_snapshot_s": watch_s, "rss_mib": _rss_mib(reg.pid)}


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.storage", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small counts (a smoke test)")
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--scale", type=int, default=100_000)
    parser.add_argument(
        "--output", type=Path, default=Path(__file__).parent / "results" / "storage.json"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.calls, args.scale = 50, 2_000
    sys.path.insert(0, str(REPO))
    from tests.support.etcd import start_cluster, stop_cluster
    from tests.support.postgres import start_server, stop_server

    tmp = Path(tempfile.mkdtemp(prefix="bench-storage-", dir="/tmp"))
    env = BenchEnv(log_dir=tmp / "logs", tmp_dir=tmp)
    env.log_dir.mkdir()
    results: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    }
    cluster = start_cluster(3)
    pg = start_server()
    try:
        dsn = await pg.create_database()
        for store in ("sqlite", "etcd"):
            async with registry(
                env, f"S1-{store}", store, cluster.endpoints, f"/bench-s1-{store}/"
            ) as reg:
                async with stack.plugin(env, f"S1-{store}-plugin", reg.target):
                    results[f"S1_{store}"] = await s1_registry_ops(reg.target, args.calls)
                results[f"S2_{store}_chat_p50_us"] = await s2_chat(
                    env, reg.target, f"S2-{store}", args.calls
                )
        results["S1_ratios_etcd_over_sqlite"] = {
            k: results["S1_etcd"][k] / results["S1_sqlite"][k] for k in results["S1_sqlite"]
        }
        results["S2_ratio_etcd_over_sqlite"] = (
            results["S2_etcd_chat_p50_us"] / results["S2_sqlite_chat_p50_us"]
        )
        async with registry(env, "S3-registry", "sqlite", [], "/") as reg:
            results["S3_postgres"] = await s3_replicas(env, reg.target, dsn, args.calls * 2)
        results["S4_fill_etcd_s"] = await _fill_etcd(cluster.endpoints, "/bench-s4/", args.scale)
        results["S4_etcd"] = await _snapshot(env, "S4-etcd", "etcd", cluster.endpoints, args.scale)
        await _fill_sqlite(env.tmp_dir / "S4-sqlite-data" / "registry.sqlite3", args.scale)
        results["S4_sqlite"] = await _snapshot(env, "S4-sqlite", "sqlite", [], args.scale)
        results["scale_tools"] = args.scale
    finally:
        stop_server(pg)
        stop_cluster(cluster)
    text = json.dumps(results, indent=2)
    print(text)
    if not args.quick:
        args.output.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
