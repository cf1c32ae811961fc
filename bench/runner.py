"""Runs the chosen scenarios side by side: all servers up, rounds interleaved.

Every timed scenario is opened once (its servers started and its reply
checked), then each round times every scenario in turn, starting from a
different one each round so none always runs first or last. A scenario's
figures are the medians over the rounds. G (registry at scale) runs on its own
after the others are stopped, so the idle servers do not share its CPU.
Around each timed round the CPU time of the client and of the scenario's own
server processes is read (bench/cpu.py): ``cpu`` holds the medians of their
µs per call and of the machine's busy and steal share during the scenario's
rounds; ``machine_during_run`` the same share over all rounds, and the load.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import shutil
import statistics
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, cast

from bench.cpu import CpuMeter, MachineTimes, machine_share
from bench.harness import Sample, calls_made, combine, measure
from bench.processes import LIVE, short_tmp_dir
from bench.scenarios.base import BenchEnv, Call

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ScenarioInfo:
    key: str
    title: str
    module: str
    opener: str = "open_scenario"


SCENARIOS: dict[str, ScenarioInfo] = {
    s.key: s
    for s in (
        ScenarioInfo("A", "bare grpc.aio unary (floor)", "bench.scenarios.grpc_floor"),
        ScenarioInfo("A-uds", "bare grpc.aio unary, UDS", "bench.scenarios.grpc_floor", "open_uds"),
        ScenarioInfo(
            "A-tuned", "A, server on toolcall's runtime", "bench.scenarios.grpc_floor", "open_tuned"
        ),
        ScenarioInfo("B", "Dispatcher.invoke → SDK plugin, TCP", "bench.scenarios.dispatch"),
        ScenarioInfo(
            "B-uds", "Dispatcher.invoke → SDK plugin, UDS", "bench.scenarios.dispatch", "open_uds"
        ),
        ScenarioInfo(
            "B-sync", "B, plain def tool (thread pool)", "bench.scenarios.dispatch", "open_sync"
        ),
        ScenarioInfo(
            "B-traced",
            "B, every call traced (no-op exporter)",
            "bench.scenarios.dispatch",
            "open_traced",
        ),
        ScenarioInfo(
            "B-metrics", "B, Prometheus metrics on", "bench.scenarios.dispatch", "open_metrics"
        ),
        ScenarioInfo(
            "B-img", "B, result with a 1 MiB image part", "bench.scenarios.dispatch", "open_image"
        ),
        ScenarioInfo(
            "B-go",
            "Dispatcher.invoke → Go example plugin",
            "bench.scenarios.example_plugins",
            "open_go",
        ),
        ScenarioInfo(
            "B-ts",
            "Dispatcher.invoke → TS example plugin",
            "bench.scenarios.example_plugins",
            "open_ts",
        ),
        ScenarioInfo("B-java", "B, to the Java example plugin", "bench.scenarios.java_plugin"),
        ScenarioInfo(
            "B-mtls", "B over mTLS (remote-plugin path)", "bench.scenarios.secure", "open_mtls"
        ),
        ScenarioInfo("C", "ToolRegistry.Invoke → plugin", "bench.scenarios.registry_invoke"),
        ScenarioInfo(
            "C-token", "C with principals: token checked", "bench.scenarios.secure", "open_token"
        ),
        ScenarioInfo("D", "FastAPI+uvicorn, httpx POST", "bench.scenarios.http_seed"),
        ScenarioInfo("E", "MCP tool call, streamable HTTP", "bench.scenarios.mcp_tool"),
        ScenarioInfo(
            "E-json",
            "E, answers as JSON, not SSE (H's mode)",
            "bench.scenarios.mcp_tool",
            "open_json",
        ),
        ScenarioInfo("F", "LLMService.Chat, one tool round", "bench.scenarios.chat_turn"),
        ScenarioInfo(
            "F-observed",
            "F, traces to OTLP and metrics on, every process",
            "bench.scenarios.chat_turn",
            "open_observed",
        ),
        ScenarioInfo("H", "MCP client → toolcall gateway → plugin", "bench.scenarios.mcp_gateway"),
        ScenarioInfo("I", "chat dispatch → mounted MCP server, stdio", "bench.scenarios.mcp_mount"),
        ScenarioInfo(
            "J",
            "Dispatcher.invoke → HTTP callback plugin",
            "bench.scenarios.http_gateway",
            "open_dispatch",
        ),
        ScenarioInfo(
            "K",
            "httpx → gateway /v1 Invoke → plugin",
            "bench.scenarios.http_gateway",
            "open_transcoded",
        ),
        ScenarioInfo("G", "registry at scale", "bench.scenarios.registry_scale", "run"),
    )
}
UNTIMED = frozenset({"G"})  # runs its own measurements instead of the common call timing

Opener = Callable[[BenchEnv], AbstractAsyncContextManager[Call]]


@dataclass(frozen=True, slots=True)
class Settings:
    calls: int
    rounds: int
    warmup: int
    quick: bool


def _load(info: ScenarioInfo) -> Any:
    return getattr(importlib.import_module(info.module), info.opener)


@contextlib.asynccontextmanager
async def bench_env() -> AsyncIterator[BenchEnv]:
    tmp = short_tmp_dir("tcbench-")
    (tmp / "logs").mkdir()
    try:
        yield BenchEnv(log_dir=tmp / "logs", tmp_dir=tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@dataclass(slots=True)
class Outcome:
    """What a run produced: figures per scenario (medians), every round, and failures."""

    figures: dict[str, dict[str, float]] = field(default_factory=dict)
    rounds: dict[str, list[dict[str, float]]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    # Per timed scenario: µs of CPU per call of the client and each server, and the
    # machine's busy/steal % while it ran (medians over the rounds).
    cpu: dict[str, dict[str, float]] = field(default_factory=dict)
    # Busy and steal share of all cores over the timed rounds, load before and after.
    machine_during_run: dict[str, float] = field(default_factory=dict)


async def run(keys: Sequence[str], settings: Settings) -> Outcome:
    """Runs ``keys``; figures come in the order of ``keys``."""
    timed = [k for k in keys if k not in UNTIMED]
    out = Outcome()
    async with bench_env() as env:
        if timed:
            await _run_timed(timed, env, settings, out)
        if "G" in keys:
            log.info("G: registry at scale")
            try:
                run_g = _load(SCENARIOS["G"])
                out.figures["G"] = await run_g(env, quick=settings.quick, rounds=settings.rounds)
            except Exception as exc:
                log.error("scenario G failed: %s", exc)
                out.failed["G"] = f"{type(exc).__name__}: {exc}"
    out.figures = {k: out.figures[k] for k in keys if k in out.figures}
    return out


async def _run_timed(keys: Sequence[str], env: BenchEnv, settings: Settings, out: Outcome) -> None:
    samples: dict[str, list[Sample]] = {k: [] for k in keys}
    extras: dict[str, list[dict[str, float]]] = {k: [] for k in keys}
    async with contextlib.AsyncExitStack() as stack:
        calls: dict[str, Call] = {}
        servers: dict[str, dict[str, int]] = {}
        for key in keys:
            log.info("starting %s", key)
            before = set(LIVE)
            try:
                opener = cast(Opener, _load(SCENARIOS[key]))
                calls[key] = await stack.enter_async_context(opener(env))
            except Exception as exc:  # one broken scenario must not cost the others
                log.error("scenario %s could not start: %s", key, exc)
                out.failed[key] = f"{type(exc).__name__}: {exc}"
            # The servers this scenario started: the processes on its call path.
            servers[key] = {LIVE[pid]: pid for pid in set(LIVE) - before}
        keys = [k for k in keys if k in calls]
        cpu: dict[str, list[dict[str, float]]] = {k: [] for k in keys}
        machine_before, load_before = MachineTimes.now(), os.getloadavg()[0]
        for round_no in range(settings.rounds):
            order = [*keys[round_no % len(keys) :], *keys[: round_no % len(keys)]]
            for key in order:
                meter = CpuMeter(servers[key])
                meter.start()
                sample = await measure(calls[key], calls=settings.calls, warmup=settings.warmup)
                cpu[key].append(meter.per_call_us(calls_made(settings.calls, settings.warmup)))
                samples[key].append(sample)
                extra = getattr(calls[key], "extra_figures", None)
                if extra is not None:
                    extras[key].append(await extra())
                log.info("round %d %s: %s", round_no + 1, key, sample.as_dict())
        out.machine_during_run = {
            **machine_share(machine_before, MachineTimes.now()),
            "load_1m_before": round(load_before, 2),
            "load_1m_after": round(os.getloadavg()[0], 2),
        }
    for key in keys:
        names = {name for figures in cpu[key] for name in figures}
        out.cpu[key] = {
            name: round(statistics.median(f[name] for f in cpu[key] if name in f), 1)
            for name in sorted(names, key=lambda n: (n != "client_us", n))  # client first
        }
        out.rounds[key] = [s.as_dict() for s in samples[key]]
        figures = out.figures[key] = combine(samples[key]).as_dict()
        for name in extras[key][0] if extras[key] else ():
            values = sorted(e[name] for e in extras[key])
            figures[name] = round(values[len(values) // 2], 1)
