"""S. The storage backends side by side: ``python -m bench.storage [--quick]``.

Every server is a real process (``toolcall registry`` / ``toolcall llm``); etcd
is a three-member cluster and PostgreSQL one server, both on loopback, started
from the Debian packages by tests/support (``make engines`` installs them).

- S1: Register / List / Invoke / KeepAlive p50 on a registry on SQLite vs on
  etcd (sequential calls; the ratios are what the backend costs).
- S2: a chat turn (F: one tool round, offline provider) with the registry on
  SQLite vs etcd: the chat's dispatch reads the Watch-fed view either way.
- S3: chat turns per second at 64 in flight, one vs two LLMService replicas
  on PostgreSQL (the client spreads turns over the replicas), alternated in
  rounds, with the CPU µs per turn of every process and the ceiling they
  set on two cores (docs/scaling.md). ``--client go`` drives the turns from
  bench/go_load, ``--plugin go`` serves the tool from the Go example plugin;
  ``--only S3`` runs it alone.
- S4: a registry replica starting on 100,000 stored tools: time until a
  Watch is SYNCED, and its RSS, on SQLite vs etcd.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import datetime
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from toolcall import grpc_env

grpc_env.apply()

from bench.cpu import CpuMeter  # noqa: E402
from bench.harness import CONCURRENCY, concurrent, sequential  # noqa: E402
from bench.payload import RAW_ARGUMENTS, TOOL_NAME  # noqa: E402
from bench.processes import free_port, running  # noqa: E402
from bench.scenarios import stack  # noqa: E402
from bench.scenarios.base import BenchEnv  # noqa: E402
from bench.scenarios.chat_turn import QUESTION, ChatCall, _wait_tool_visible  # noqa: E402
from toolcall.clients import channel  # noqa: E402
from toolcall.v1 import llm_pb2, llm_pb2_grpc, registry_pb2, registry_pb2_grpc, tools_pb2  # noqa: E402

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


def _postmaster_pid(data_dir: Path) -> int:
    return int((data_dir / "postmaster.pid").read_text().split()[0])


def _main_thread_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process's main thread (its event loop)."""
    text = Path(f"/proc/{pid}/task/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


GO_LOAD = REPO / ".cache" / "bench" / "go_load"
GO_PLUGIN = REPO / ".cache" / "examples" / "go_plugin"
# The F-type question each plugin's tool answers (the offline provider picks the tool
# by the words of the question and fills its argument from it).
QUESTIONS = {"sdk": QUESTION, "go": 'What weekday is "2026-12-03"?'}
# 4 messages a turn: 60 turns take every session past the 200-message history cap.
S3_WARM_TURNS_PER_SESSION = 60
# One scheduler thread for the Go client and plugin: a few hundred calls a second
# need no more, and idle Go threads spinning for work cost CPU the replicas need.
GO_RUNTIME = {"GOMAXPROCS": os.environ.get("S3_GOMAXPROCS", "1")}


class PythonLoad:
    """S3's load in this process: ``concurrent`` over grpc.aio stubs."""

    name = "python"
    pid: int | None = None

    def __init__(self, stubs: dict[str, Any], question: str) -> None:
        self._stubs = stubs
        self._question = question

    async def run(self, targets: list[str], prefix: str, turns: int) -> float:
        pools = [
            collections.deque(f"{prefix}-{i}-{j}" for j in range(CONCURRENCY))
            for i in range(len(targets))
        ]
        counter = iter(range(10**12))

        async def turn() -> None:
            i = next(counter) % len(targets)
            session = pools[i].popleft()
            try:
                reply = await self._stubs[targets[i]].Chat(
                    llm_pb2.ChatRequest(
                        session_id=session,
                        provider="offline",
                        messages=[
                            llm_pb2.ChatMessage(
                                role=llm_pb2.MESSAGE_ROLE_USER, content=self._question
                            )
                        ],
                    ),
                    timeout=30,
                )
            finally:
                pools[i].append(session)
            if len(reply.tool_calls) != 1 or reply.tool_calls[0].result.is_error:
                raise RuntimeError(f"not an F-type turn: {reply.tool_calls}")

        return await concurrent(turn, turns)


class GoLoad:
    """S3's load from bench/go_load (a compiled client: its CPU is not the replicas')."""

    name = "go"

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self._proc = proc
        self.pid: int | None = proc.pid

    @classmethod
    @contextlib.asynccontextmanager
    async def started(cls, question: str) -> AsyncIterator[GoLoad]:
        if not GO_LOAD.exists():
            raise RuntimeError(f"{GO_LOAD} is not built: run 'make bench-go-load'")
        proc = await asyncio.create_subprocess_exec(
            str(GO_LOAD),
            "-question",
            question,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, **GO_RUNTIME},
        )
        try:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), 10)
            if not line.startswith(b"READY"):
                raise RuntimeError(f"go_load did not start: {line!r}")
            yield cls(proc)
        finally:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()

    async def run(self, targets: list[str], prefix: str, turns: int) -> float:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(f"run {','.join(targets)} {prefix} {turns}\n".encode())
        await self._proc.stdin.drain()
        line = await asyncio.wait_for(self._proc.stdout.readline(), 600)
        if not line:
            raise RuntimeError("go_load stopped")
        result = json.loads(line)
        if result["failed"]:
            raise RuntimeError(f"go_load: {result['failed']} turns failed: {result['first_error']}")
        return float(result["turns_per_s"])


@contextlib.asynccontextmanager
async def s3_plugin(env: BenchEnv, kind: str, registry_target: str) -> AsyncIterator[Any]:
    if kind == "sdk":
        async with stack.plugin(env, "S3-plugin", registry_target) as proc:
            yield proc
        return
    if not GO_PLUGIN.exists():
        raise RuntimeError(f"{GO_PLUGIN} is not built: run 'make example-plugins'")
    address = f"127.0.0.1:{free_port()}"
    variables = {
        "TOOLCALL_REGISTRY_ADDRESS": registry_target,
        "TOOLCALL_PLUGIN_ADDRESS": address,
        "TOOLCALL_LOG_LEVEL": "WARNING",
        **GO_RUNTIME,
    }
    async with running(
        "S3-go-plugin",
        [],
        executable=str(GO_PLUGIN),
        log_dir=env.log_dir,
        env=variables,
        connectable_at=address,
    ) as proc:
        await stack.wait_listed(registry_target, "weekday", timeout_s=15)
        yield proc


async def s3_replicas(
    env: BenchEnv,
    registry: Any,
    dsn: str,
    turns: int,
    postmaster: int,
    *,
    rounds: int = 1,
    client: str = "python",
    plugin: str = "sdk",
    warm_turns: int = S3_WARM_TURNS_PER_SESSION,
) -> dict[str, Any]:
    """Turns per second with one replica, then two, in the same run, ``rounds`` times;
    and the CPU time each process spends per turn (robust to the noise of other work
    on the machine). Every session is first filled past the history cap."""
    out: dict[str, Any] = {"client": client, "plugin": plugin, "turns": turns}
    question = QUESTIONS[plugin]
    async with (
        s3_plugin(env, plugin, registry.target) as plug,
        pg_llm(env, "S3-llm-a", registry.target, dsn) as a,
        pg_llm(env, "S3-llm-b", registry.target, dsn) as b,
        channel(a.target) as cha,
        channel(b.target) as chb,
        contextlib.AsyncExitStack() as stack_,
    ):
        stubs: dict[str, Any] = {
            a.target: llm_pb2_grpc.LLMServiceStub(cha),
            b.target: llm_pb2_grpc.LLMServiceStub(chb),
        }
        warm = PythonLoad(stubs, question)
        for target in stubs:  # until each replica's Watch-fed view offers the tool
            deadline = time.monotonic() + 15
            while True:
                try:
                    await warm.run([target], "s3-ready", 1)
                    break
                except RuntimeError:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.05)
        load: PythonLoad | GoLoad = PythonLoad(stubs, question)
        if client == "go":
            load = await stack_.enter_async_context(GoLoad.started(question))
        servers = {
            "llm_a": a.pid,
            "llm_b": b.pid,
            "registry": registry.pid,
            "plugin": plug.pid,
            "postgres": postmaster,
        }
        if load.pid is not None:
            servers["go_client"] = load.pid
        one, two = [a.target], [a.target, b.target]
        await load.run(one, "s3-one", CONCURRENCY * warm_turns)
        await load.run(two, "s3-two", 2 * CONCURRENCY * warm_turns)
        rates: dict[str, list[float]] = {"one": [], "two": []}
        cpu: dict[str, list[dict[str, float]]] = {"one": [], "two": []}
        for _ in range(rounds):
            for label, targets in (("one", one), ("two", two)):
                meter = CpuMeter(servers)
                gc.collect()
                loop_before, started = _main_thread_cpu_s(a.pid), time.perf_counter()
                meter.start()
                rates[label].append(await load.run(targets, f"s3-{label}", turns))
                figures = meter.per_call_us(turns)
                # How busy replica A's event-loop thread was: near 100 % when it is what
                # bounds the turns (its gRPC threads run beside it).
                loop_s = _main_thread_cpu_s(a.pid) - loop_before
                busy = 100 * loop_s / (time.perf_counter() - started)
                figures["llm_a_loop_busy_pct"] = round(busy, 1)
                figures["llm_a_loop_us"] = round(loop_s * 1e6 / turns, 1)
                cpu[label].append(figures)
        out["one_replica_turns_per_s"] = [round(r, 1) for r in rates["one"]]
        out["two_replicas_turns_per_s"] = [round(r, 1) for r in rates["two"]]
        out["ratios"] = [round(t / o, 3) for o, t in zip(rates["one"], rates["two"], strict=True)]
        out["ratio"] = statistics.median(out["ratios"])
        for label in ("one", "two"):
            # The median of each process's CPU µs per turn over the rounds.
            out[f"cpu_us_per_turn_{label}"] = {
                k: statistics.median(c[k] for c in cpu[label]) for k in cpu[label][0]
            }
        one_cpu, two_cpu = out["cpu_us_per_turn_one"], out["cpu_us_per_turn_two"]

        def stack_us(figures: dict[str, float]) -> float:
            """CPU µs per turn of every process of the stack."""
            return sum(v for k, v in figures.items() if k.endswith("_us") and "loop" not in k)

        llm = one_cpu["llm_a_us"]
        rest = stack_us(one_cpu) - llm
        # The rough bound: one replica is held by its own core (1/L turns per
        # second); two by both cores shared by everything (2/(L + rest)).
        out["ceiling_ratio"] = round(2 * llm / (llm + rest), 3)
        # The same from this run's figures alone, on an otherwise idle machine: one
        # replica reaches the lesser of its event loop's core and the two cores its
        # stack shares; two replicas, the two cores their (costlier) stack shares.
        one_max = min(1e6 / one_cpu["llm_a_loop_us"], 2e6 / stack_us(one_cpu))
        out["quiet_machine_ratio_bound"] = round(2e6 / stack_us(two_cpu) / one_max, 3)
        # What the whole stack of one replica used: cores busy at the rate it reached.
        out["one_replica_stack_cores"] = round(
            statistics.median(rates["one"]) * stack_us(one_cpu) / 1e6, 2
        )
    return out


def _scale_entry(i: int) -> Any:
    """The i-th of S4's stored tools (the same in etcd and SQLite)."""
    from registry_service.store import Entry
    from toolcall.tools import ToolSpec

    definition = tools_pb2.ToolDefinition(
        name=f"scale_{i:06d}", description="d" * 100, callback_address="127.0.0.1:9"
    )
    return Entry.create(ToolSpec.from_definition(definition), "default")


async def _fill_etcd(endpoints: list[str], prefix: str, count: int) -> float:
    from registry_service.etcd_storage import EtcdOptions, EtcdStorage
    from registry_service.store import ToolStore

    storage = EtcdStorage(EtcdOptions(endpoints=endpoints, prefix=prefix, timeout_s=60))
    await storage.open(ToolStore(["default"]))
    started = time.perf_counter()
    batch = 2_400
    for first in range(0, count, batch):
        entries = [_scale_entry(i) for i in range(first, min(first + batch, count))]
        await storage.put(entries, "")
    took = time.perf_counter() - started
    await storage.close()
    return took


async def _fill_sqlite(path: Path, count: int) -> None:
    from registry_service.archive import ToolArchive

    archive = ToolArchive(path)
    await archive.open()
    entries = [_scale_entry(i) for i in range(count)]
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
    parser.add_argument(
        "--only", choices=["S3"], help="run only this scenario (and print, not save, it)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="S3: rounds of one vs two")
    parser.add_argument(
        "--client",
        choices=["python", "go"],
        default="python",
        help="S3's load generator: this process, or bench/go_load (built by make bench-go-load)",
    )
    parser.add_argument(
        "--plugin",
        choices=["sdk", "go"],
        default="sdk",
        help="S3's plugin: the Python SDK one, or the Go example (make example-plugins)",
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
    cluster = None if args.only else start_cluster(3)
    pg = start_server()
    try:
        dsn = await pg.create_database()
        postmaster = _postmaster_pid(pg.data)

        async def run_s3() -> Any:
            async with registry(env, "S3-registry", "sqlite", [], "/") as reg:
                return await s3_replicas(
                    env,
                    reg,
                    dsn,
                    args.calls * 2,
                    postmaster,
                    rounds=args.rounds,
                    client=args.client,
                    plugin=args.plugin,
                    warm_turns=2 if args.quick else S3_WARM_TURNS_PER_SESSION,
                )

        if args.only == "S3":
            results["S3_postgres"] = await run_s3()
            print(json.dumps(results, indent=2))
            return 0
        assert cluster is not None
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
        results["S3_postgres"] = await run_s3()
        results["S4_fill_etcd_s"] = await _fill_etcd(cluster.endpoints, "/bench-s4/", args.scale)
        results["S4_etcd"] = await _snapshot(env, "S4-etcd", "etcd", cluster.endpoints, args.scale)
        await _fill_sqlite(env.tmp_dir / "S4-sqlite-data" / "registry.sqlite3", args.scale)
        results["S4_sqlite"] = await _snapshot(env, "S4-sqlite", "sqlite", [], args.scale)
        results["scale_tools"] = args.scale
    finally:
        stop_server(pg)
        if cluster is not None:
            stop_cluster(cluster)
    text = json.dumps(results, indent=2)
    print(text)
    if not args.quick:
        args.output.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
