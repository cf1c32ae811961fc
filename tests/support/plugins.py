"""Helpers shared by the plugin end-to-end tests: registries and plugin processes."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from toolcall.clients import list_all_tools, wait_healthy
from toolcall.v1 import registry_pb2, registry_pb2_grpc

REPO_ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


def free_port() -> int:
    """A TCP port that was free a moment ago (for restarting a server on the same port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def reap(proc: subprocess.Popen[Any], timeout_s: float) -> int:
    """Waits for ``proc`` to exit, killing it after ``timeout_s``; its exit status."""
    try:
        return proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def terminate(proc: subprocess.Popen[Any], timeout_s: float) -> int:
    """SIGTERM (if still running), then ``reap``."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    return reap(proc, timeout_s)


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


async def wait_for(
    fetch: Callable[[], Awaitable[T]], predicate: Callable[[T], Any], timeout_s: float
) -> T:
    """Polls ``fetch()`` until ``predicate`` holds; AssertionError with the last value if not."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await fetch()
        if predicate(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s; last value: {value!r}")
        await asyncio.sleep(0.05)


async def list_tools(
    stub: registry_pb2_grpc.ToolRegistryAsyncStub, *, source: str = ""
) -> list[registry_pb2.RegisteredTool]:
    tools, _ = await list_all_tools(stub, registry_pb2.ListRequest(source=source), timeout_s=5)
    return tools


@contextlib.asynccontextmanager
async def registry_in_process(tmp_path: Path, *, token: str = "") -> AsyncIterator[str]:
    """A registry on an ephemeral loopback port in this process; yields its address."""
    from registry_service import RegistrySettings, start_registry

    settings = dataclasses.replace(
        RegistrySettings.from_env(),
        address="127.0.0.1:0",
        token=token,
        data_path=tmp_path / "registry.sqlite3",
        lease_sweep_interval_s=0.1,
    )
    host = await start_registry(settings)
    try:
        yield host.target
    finally:
        await host.stop()


class ChildProcess:
    """A child process whose output goes to a log file, stopped on exit."""

    name = "process"

    def __init__(self, argv: list[str], log_path: Path, env: dict[str, str]) -> None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                argv,
                cwd=REPO_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout_s: float = 10.0) -> int:
        return terminate(self.proc, timeout_s)

    def __enter__(self: T) -> T:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        if exc_type is not None:
            # Shown by pytest with the failure.
            print(f"--- {self.name} log ({self.log_path}) ---\n{self.log()}", file=sys.stderr)


class PluginProcess(ChildProcess):
    """``python -m <module>`` pointed at ``registry``."""

    def __init__(
        self,
        module: str,
        registry: str,
        tmp_path: Path,
        *,
        lease_ttl: str = "6",
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.name = module
        env = child_env(
            TOOLCALL_REGISTRY_ADDRESS=registry,
            TOOLCALL_PLUGIN_LEASE_TTL=lease_ttl,
            TOOLCALL_LOG_LEVEL="INFO",
            **(extra_env or {}),
        )
        super().__init__([sys.executable, "-m", module], tmp_path / f"{module}.log", env)


class RegistryProcess(ChildProcess):
    """``toolcall registry`` on a fixed address, as a separate process."""

    name = "registry"

    def __init__(self, address: str, data_dir: Path, *, token: str = "") -> None:
        self.address = address
        argv = [sys.executable, "-m", "toolcall.cli", "registry", "--address", address]
        argv += ["--data-dir", str(data_dir)]
        if token:
            argv += ["--token", token]
        super().__init__(argv, data_dir / "registry.log", child_env())

    async def healthy(self, timeout_s: float = 15.0) -> None:
        await wait_healthy(self.address, timeout_s=timeout_s)
