"""``toolcall up``: the whole stack as separate processes, supervised.

Starts the registry, waits for it to be healthy, starts the LLMService, then
the example plugins and the example MCP server (mounted with ``toolcall mcp
mount``), and waits until their tools are registered. Ctrl-C (or
SIGTERM) stops everything in reverse order: plugins first (they clear their
tools), then the LLMService, then the registry. The children run in their own
process group, so a terminal's Ctrl-C (SIGINT to the whole foreground group)
reaches only this supervisor; otherwise the registry would stop while the
plugins still clear their tools.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import httpx2 as httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from toolcall import config
from toolcall.clients import channel, list_all_tools, wait_healthy
from toolcall.v1 import registry_pb2_grpc

EXAMPLE_PLUGINS = ("toolcall_examples.weather_plugin", "toolcall_examples.network_plugin")
# MCP servers mounted with ``toolcall mcp mount`` (name, module): their tools get source mcp:NAME.
EXAMPLE_MCP_SERVERS = (("notes", "toolcall_examples.mcp_notes_server"),)
# Prometheus /metrics of each process (docs/observability.md): the registry,
# the LLMService, then the plugins in start order. The HTTP gateway serves its
# own at /metrics on its address.
METRICS_HOST = "127.0.0.1"
REGISTRY_METRICS_PORT, LLM_METRICS_PORT, FIRST_PLUGIN_METRICS_PORT = 48921, 48922, 48924
METRICS_ENV = {
    "registry": "TOOLCALL_REGISTRY_METRICS_ADDRESS",
    "llm": "TOOLCALL_LLM_METRICS_ADDRESS",
}
PLUGIN_METRICS_ENV = "TOOLCALL_PLUGIN_METRICS_ADDRESS"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--registry-address",
        default=config.registry_address(),
        help="registry listen address (default: $TOOLCALL_REGISTRY_ADDRESS or %(default)s)",
    )
    parser.add_argument(
        "--llm-address",
        default=config.llm_address(),
        help="LLMService listen address (default: $TOOLCALL_LLM_ADDRESS or %(default)s)",
    )
    parser.add_argument(
        "--gateway-address",
        default=config.gateway_address(),
        help="HTTP gateway (MCP at /mcp) listen address; 'off' starts none "
        "(default: $TOOLCALL_GATEWAY_ADDRESS or %(default)s)",
    )
    parser.add_argument(
        "--data-dir",
        default=str(config.data_dir()),
        help="SQLite files and process logs (default: $TOOLCALL_DATA_DIR or %(default)s)",
    )
    parser.add_argument(
        "--no-plugins",
        action="store_true",
        help="do not start the example plugins and MCP server",
    )
    parser.add_argument(
        "--metrics",
        choices=("on", "off"),
        default="on",
        help=f"serve Prometheus /metrics of each process on {METRICS_HOST}: registry "
        f"{REGISTRY_METRICS_PORT}, llm {LLM_METRICS_PORT}, plugins from "
        f"{FIRST_PLUGIN_METRICS_PORT} (default: %(default)s; a port in use is skipped)",
    )


@dataclass
class Stack:
    """The stack's processes; logs go to ``<data_dir>/logs/<name>.log``."""

    registry_address: str
    llm_address: str
    data_dir: Path
    plugins: tuple[str, ...] = EXAMPLE_PLUGINS
    gateway_address: str = ""  # empty: no gateway
    mcp_servers: tuple[tuple[str, str], ...] = EXAMPLE_MCP_SERVERS
    # Process name -> its /metrics address (see METRICS_ENV); empty: none.
    metrics: dict[str, str] = field(default_factory=dict)
    # Of those, the ones that did not answer once started (their log says why).
    metrics_down: set[str] = field(default_factory=set)
    procs: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            TOOLCALL_REGISTRY_ADDRESS=self.registry_address,
            TOOLCALL_LLM_ADDRESS=self.llm_address,
            TOOLCALL_DATA_DIR=str(self.data_dir),
            PYTHONUNBUFFERED="1",
        )
        if self.gateway_address:
            env["TOOLCALL_GATEWAY_ADDRESS"] = self.gateway_address
        return env

    def _spawn(self, name: str, argv: list[str]) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = self._env()
        for variable in (*METRICS_ENV.values(), PLUGIN_METRICS_ENV):
            env.pop(variable, None)  # one address per process, never an inherited shared one
        if address := self.metrics.get(name):
            env[METRICS_ENV.get(name, PLUGIN_METRICS_ENV)] = address
        with open(self.log_dir / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, *argv],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                process_group=0,  # see the module docstring: stop order is ours
            )
        self.procs.append((name, proc))

    def _check_alive(self) -> None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with code {proc.returncode}; see {self.log_dir / name}.log"
                )

    async def _healthy(self, name: str, address: str) -> None:
        deadline = time.monotonic() + 20
        while True:
            self._check_alive()
            try:
                await wait_healthy(address, timeout_s=1)
                return
            except TimeoutError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{name} at {address} did not become healthy") from None

    async def start(self) -> None:
        # Another stack on these addresses would pass our health checks, and our
        # plugins would join it (and clear its tools of the same source on stop).
        if self.gateway_address and await port_taken(self.gateway_address):
            raise RuntimeError(
                f"{self.gateway_address} is already in use (another `toolcall up`?); stop it, "
                "or choose another address with --gateway-address (or 'off')"
            )
        for address in (self.registry_address, self.llm_address):
            if await something_serves(address):
                raise RuntimeError(
                    f"{address} is already in use (another `toolcall up` or `make run`?); "
                    "stop it, or choose other addresses with --registry-address and "
                    "--llm-address (or TOOLCALL_REGISTRY_ADDRESS, TOOLCALL_LLM_ADDRESS)"
                )
        for name, address in list(self.metrics.items()):
            if await port_taken(address):  # metrics are a convenience, not a reason to fail
                print(f"warning: {address} is in use: no metrics for {name}", file=sys.stderr)
                del self.metrics[name]
        self._spawn("registry", ["-m", "toolcall.cli", "registry"])
        await self._healthy("registry", self.registry_address)
        self._spawn("llm", ["-m", "toolcall.cli", "llm"])
        await self._healthy("llm", self.llm_address)
        if self.gateway_address:
            self._spawn("gateway", ["-m", "toolcall.cli", "gateway"])
        for module in self.plugins:
            self._spawn(plugin_name(module), ["-m", module])
        for name, module in self.mcp_servers:
            mount = ["-m", "toolcall.cli", "mcp", "mount", "--name", name, "--"]
            self._spawn(f"mcp-{name}", [*mount, sys.executable, "-m", module])
        await self._wait_for_plugins()
        if self.gateway_address:
            await self._http_healthy("gateway", f"http://{self.gateway_address}/healthz")
        await self._check_metrics()

    async def _check_metrics(self) -> None:
        """Notes the /metrics endpoints that do not answer (a port taken since the check)."""
        for name, address in self.metrics.items():
            if not await metrics_answer(address):
                self.metrics_down.add(name)

    async def _http_healthy(self, name: str, url: str) -> None:
        deadline = time.monotonic() + 20
        async with httpx.AsyncClient(timeout=1) as http:
            while True:
                self._check_alive()
                with contextlib.suppress(httpx.TransportError):
                    if (await http.get(url)).status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{name} at {url} did not become healthy")
                await asyncio.sleep(0.1)

    async def _wait_for_plugins(self) -> None:
        """Waits until every plugin process and MCP mount has registered at least one tool."""
        expected = len(self.plugins) + len(self.mcp_servers)
        deadline = time.monotonic() + 20
        async with channel(self.registry_address) as ch:
            stub = registry_pb2_grpc.ToolRegistryStub(ch)
            while True:
                self._check_alive()
                tools, _ = await list_all_tools(stub)
                if len({t.tool.source for t in tools}) >= expected:
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError("plugins did not register their tools within 20s")
                await asyncio.sleep(0.1)

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM in reverse start order; SIGKILL whatever outlives ``timeout_s``."""
        for _name, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout_s)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.procs.clear()


async def something_serves(address: str) -> bool:
    """Whether a gRPC server answers at ``address``: any reply to a health check
    but UNAVAILABLE (nothing listening) means one does."""
    async with channel(address) as ch:
        # types-grpcio-health-checking declares no methods on HealthStub.
        stub: Any = health_pb2_grpc.HealthStub(ch)
        try:
            await stub.Check(health_pb2.HealthCheckRequest(), timeout=2)
        except grpc.aio.AioRpcError as exc:
            return exc.code() != grpc.StatusCode.UNAVAILABLE
    return True


async def metrics_answer(address: str) -> bool:
    """Whether ``http://address/metrics`` answers 200 (a bare request: no client's log lines)."""
    host, _, port = address.rpartition(":")
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 2)
    except (OSError, TimeoutError):
        return False
    try:
        writer.write(f"OPTIONS /metrics HTTP/1.0\r\nHost: {address}\r\n\r\n".encode())
        status = await asyncio.wait_for(reader.readline(), 2)
        return status.split(b" ")[1:2] == [b"200"]
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()


async def port_taken(address: str) -> bool:
    """Whether something accepts TCP connections at ``host:port``."""
    host, _, port = address.rpartition(":")
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host.strip("[]"), port), 2)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


def stack_from_args(args: argparse.Namespace) -> Stack:
    gateway = "" if args.gateway_address.strip().lower() == "off" else args.gateway_address
    plugins = () if args.no_plugins else EXAMPLE_PLUGINS
    metrics: dict[str, str] = {}
    if args.metrics == "on":
        metrics = {
            "registry": f"{METRICS_HOST}:{REGISTRY_METRICS_PORT}",
            "llm": f"{METRICS_HOST}:{LLM_METRICS_PORT}",
        }
        for i, module in enumerate(plugins):
            metrics[plugin_name(module)] = f"{METRICS_HOST}:{FIRST_PLUGIN_METRICS_PORT + i}"
    return Stack(
        registry_address=args.registry_address,
        llm_address=args.llm_address,
        data_dir=Path(args.data_dir),
        plugins=plugins,
        gateway_address=gateway,
        mcp_servers=() if args.no_plugins else EXAMPLE_MCP_SERVERS,
        metrics=metrics,
    )


def plugin_name(module: str) -> str:
    """A plugin's process name (its log file, its metrics entry)."""
    return module.rpartition(".")[2]


def metrics_lines(stack: Stack) -> list[str]:
    """Where each process serves /metrics, for the start-up summary."""
    lines = [
        f"  {name:<16} http://{address}/metrics"
        + (f"  (not served: see {stack.log_dir / name}.log)" if name in stack.metrics_down else "")
        for name, address in stack.metrics.items()
    ]
    if stack.metrics and stack.gateway_address:
        lines.append(f"  {'gateway':<16} http://{stack.gateway_address}/metrics")
    return lines


def stop_requested() -> asyncio.Event:
    """An event SIGTERM/SIGINT set; the handlers are in place when this returns.

    Install it before telling the user Ctrl-C works: a signal in between would
    interrupt instead of stopping the stack in order.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def main(args: argparse.Namespace) -> int:
    stack = stack_from_args(args)
    try:
        await stack.start()
        stop = stop_requested()
        print(f"registry   {stack.registry_address}")
        print(f"llm        {stack.llm_address}")
        if stack.gateway_address:
            print(f"console    http://{stack.gateway_address}/")
            print(f"mcp        http://{stack.gateway_address}/mcp")
            print(f"http       http://{stack.gateway_address}/api/tools, /v1/<service>/<method>")
        print(f"plugins    {', '.join(stack.plugins) or '(none)'}")
        print(f"mounted    {', '.join(f'mcp:{n}' for n, _ in stack.mcp_servers) or '(none)'}")
        print(f"logs       {stack.log_dir}")
        if stack.metrics:
            print("metrics")
            print("\n".join(metrics_lines(stack)))
        print("stack is up; Ctrl-C stops it", flush=True)
        await stop.wait()
    except (RuntimeError, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        stack.stop()
    return 0
